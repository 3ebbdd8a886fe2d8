"""The PyTorch peer of benchmarks/linear_forms.py: ``minGRU-pytorch`` (lucidrains; the log-space minGRU of Feng et
al. 2024, its parallel form Heinsen's cumulative-sum scan) on the CPU, the same training step.

    python -m benchmarks.torch_mingru --lengths 256 1024 --batch 8 --hidden 64 --steps 5 --threads 2

Run by ``benchmarks.linear_forms`` in its own process (PyTorch and XLA each start thread pools). Prints one JSON
object per length. A training step: minGRU(dim=H) over (B, T, H) inputs, a linear readout to 10 classes at every
step, mean cross-entropy, backward, ``clip_grad_norm_(1.0)`` and Adam; float32; median over steps after warm-up.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

CLASSES = 10


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from minGRU_pytorch import minGRU

    torch.set_num_threads(args.threads)
    for t in args.lengths:
        torch.manual_seed(0)
        rnn = minGRU(args.hidden)
        readout = torch.nn.Linear(args.hidden, CLASSES)
        params = [*rnn.parameters(), *readout.parameters()]
        optimizer = torch.optim.Adam(params, lr=1e-3)
        xs = torch.randn(args.batch, t, args.hidden)
        labels = torch.randint(0, CLASSES, (args.batch, t))

        def step():
            optimizer.zero_grad(set_to_none=True)  # noqa: B023
            logits = readout(rnn(xs))  # noqa: B023
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, CLASSES), labels.reshape(-1))  # noqa: B023
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # noqa: B023
            optimizer.step()  # noqa: B023

        for _ in range(2):
            step()
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        step_s = float(np.median(times))
        row = {"impl": "minGRU-pytorch", "T": t, "step_s": step_s, "tokens_per_s": args.batch * t / step_s,
               "torch": torch.__version__}  # fmt: skip
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
