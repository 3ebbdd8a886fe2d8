"""PyTorch's nn.LSTM / nn.GRU / nn.RNN on the CPU: the same training step and forward pass as training_step.py.

    python -m benchmarks.torch_step --sizes 32,100,32,128 --steps 30 --threads 2

Run by ``benchmarks.training_step`` in its own process (PyTorch and XLA each
start thread pools; one process per framework keeps them from competing).
Prints one JSON object per implementation and size on stdout. A training step
is: forward over the sequence (batch-first), a linear readout to 10 classes at
every step, mean cross-entropy, backward, ``clip_grad_norm_(1.0)`` and Adam;
float32. Timed interleaved, median over steps after 3 warm-up rounds.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

CLASSES = 10
KINDS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def programs(kind: str, b: int, t: int, d: int, h: int):
    torch.manual_seed(0)
    rnn = getattr(torch.nn, KINDS[kind])(d, h, batch_first=True)
    readout = torch.nn.Linear(h, CLASSES)
    params = [*rnn.parameters(), *readout.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    xs = torch.randn(b, t, d)
    labels = torch.randint(0, CLASSES, (b * t,))

    def train():
        opt.zero_grad(set_to_none=True)
        logits = readout(rnn(xs)[0])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, CLASSES), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    def forward():
        with torch.no_grad():
            readout(rnn(xs)[0])

    return train, forward


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", required=True, help="B,T,D,H")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for size in args.sizes:
        b, t, d, h = map(int, size.split(","))
        progs = {kind: programs(kind, b, t, d, h) for kind in KINDS}
        times = {kind: {"train": [], "forward": []} for kind in progs}
        for i in range(args.steps + 3):
            for kind, (train, forward) in progs.items():
                for what, fn in (("train", train), ("forward", forward)):
                    start = time.perf_counter()
                    fn()
                    if i >= 3:
                        times[kind][what].append(time.perf_counter() - start)
        for kind in progs:
            train_s, fwd_s = np.median(times[kind]["train"]), np.median(times[kind]["forward"])
            row = {
                "size": {"B": b, "T": t, "D": d, "H": h},
                "impl": f"torch nn.{KINDS[kind]}",
                "cell": kind,
                "train_tokens_per_s": b * t / train_s,
                "forward_tokens_per_s": b * t / fwd_s,
                "compile_s": None,
                "peak_bytes": None,
                "torch": torch.__version__,
                "threads": args.threads,
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
