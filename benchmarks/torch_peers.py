"""The PyTorch peers of benchmarks/linear_forms.py on the CPU, the same training step, in their own process:
``minGRU-pytorch`` (lucidrains; Feng et al.'s log-space minGRU, Heinsen's scan), ``torch.nn.GRU`` and
``torch.nn.LSTM``, and the ``xlstm`` package's pure-PyTorch mLSTM forms (``chunkwise_simple``, chunks of 64, and
``parallel_stabilized_simple``) and its sLSTM ``vanilla`` backend (``slstm_forward``, a Python loop over time).

    python -m benchmarks.torch_peers --lengths 256 1024 --batch 8 --hidden 64 --steps 3 --threads 2

Prints one JSON object per peer and length (PyTorch and XLA each start thread pools, hence the own process). A
training step: the peer over (B, T, H) inputs (the mLSTM and sLSTM with 4 heads and their input projections, the
mLSTM with an output gate as gated's ``mlstm``), a linear readout to 10 classes at every step, mean cross-entropy,
backward, ``clip_grad_norm_(1.0)`` and Adam; float32; median over steps after warm-up; the forward pass alone timed
too. A peer that is not installed, or that fails at a length, prints ``{"impl": ..., "error": ...}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys

import torch

from benchmarks.timing import median_seconds

CLASSES = 10
HEADS = 4


def _xlstm_file(path: str):
    spec = importlib.util.find_spec("xlstm")
    if spec is None:
        raise ImportError("xlstm is not installed")
    file = pathlib.Path(spec.submodule_search_locations[0]) / path
    name = "_xlstm_" + path.replace("/", "_").removesuffix(".py")
    # loaded on its own (the package's __init__ needs mlstm_kernels); a package folder as a package
    folder = [str(file.parent)] if file.name == "__init__.py" else None
    module_spec = importlib.util.spec_from_file_location(name, file, submodule_search_locations=folder)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


class MLSTM(torch.nn.Module):
    """q, k, v, the output gate and one input and forget gate per head from one projection; an xLSTM backend."""

    def __init__(self, hidden: int, form: str):
        super().__init__()
        self.hidden, self.form = hidden, form
        self.proj = torch.nn.Linear(hidden, 4 * hidden + 2 * HEADS)
        backends = _xlstm_file("blocks/mlstm/backends.py")
        self.backend = backends.chunkwise_simple if form == "chunkwise" else backends.parallel_stabilized_simple

    def forward(self, xs):
        b, t, h = xs.shape
        u = self.proj(xs)
        q, k, v, o = (u[..., j * h : (j + 1) * h].reshape(b, t, HEADS, -1).transpose(1, 2) for j in range(4))
        i, f = (u[..., 4 * h + j * HEADS : 4 * h + (j + 1) * HEADS].transpose(1, 2) for j in range(2))
        if self.form == "chunkwise":
            out = self.backend(q, k, v, i, f, chunk_size=64)
        else:
            out = self.backend(q, k, v, i[..., None], f[..., None])
        return torch.sigmoid(o).transpose(1, 2).reshape(b, t, h) * out.transpose(1, 2).reshape(b, t, h)


class SLSTM(torch.nn.Module):
    """xLSTM's sLSTM, vanilla backend: 4 heads of block-diagonal recurrent weights, the input projection outside."""

    def __init__(self, hidden: int):
        super().__init__()
        self.vanilla = _xlstm_file("blocks/slstm/src/vanilla/__init__.py")
        self.proj = torch.nn.Linear(hidden, 4 * hidden)
        d = hidden // HEADS
        self.recurrent = torch.nn.Parameter(torch.randn(HEADS, 4 * d, d) / d**0.5)
        self.bias = torch.nn.Parameter(torch.zeros(4 * hidden))

    def forward(self, xs):
        b, t, h = xs.shape
        wx = self.proj(xs).transpose(0, 1)  # (T, B, 4H)
        states = torch.zeros(4, b, h)
        pointwise = self.vanilla.slstm_pointwise_function_registry["slstm"]
        all_states, _, _ = self.vanilla.slstm_forward(wx, states, self.recurrent, self.bias, pointwise)
        return all_states[0, 1:].transpose(0, 1)


def peer(name: str, hidden: int) -> torch.nn.Module:
    if name == "minGRU-pytorch":
        from minGRU_pytorch import minGRU

        return minGRU(hidden)
    if name in ("torch.nn.GRU", "torch.nn.LSTM"):
        cls = torch.nn.GRU if name == "torch.nn.GRU" else torch.nn.LSTM
        rnn = cls(hidden, hidden, batch_first=True)
        return _First(rnn)
    if name.startswith("xlstm mLSTM"):
        return MLSTM(hidden, name.split()[-1])
    if name == "xlstm sLSTM vanilla":
        return SLSTM(hidden)
    raise ValueError(name)


class _First(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, xs):
        return self.rnn(xs)[0]


PEERS = (
    "minGRU-pytorch",
    "torch.nn.GRU",
    "torch.nn.LSTM",
    "xlstm mLSTM chunkwise",
    "xlstm mLSTM parallel",
    "xlstm sLSTM vanilla",
)


def measure(name: str, t: int, batch: int, hidden: int, steps: int) -> dict:
    torch.manual_seed(0)
    rnn = peer(name, hidden)
    readout = torch.nn.Linear(hidden, CLASSES)
    params = [*rnn.parameters(), *readout.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    xs = torch.randn(batch, t, hidden)
    labels = torch.randint(0, CLASSES, (batch, t))

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = readout(rnn(xs))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, CLASSES), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    def forward():
        with torch.no_grad():
            readout(rnn(xs))

    return {
        "impl": name,
        "T": t,
        "step_s": median_seconds(step, steps),
        "forward_s": median_seconds(forward, steps),
        "torch": torch.__version__,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--peers", nargs="+", default=list(PEERS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--max-sequential-length",
        type=int,
        default=4096,
        help="the Python-loop peers (the sLSTM) only up to this length",
    )
    parser.add_argument(
        "--max-quadratic-length",
        type=int,
        default=1024,
        help="the (T, T) parallel mLSTM only up to this length (its memory)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for t in args.lengths:
        for name in args.peers:
            if name == "xlstm sLSTM vanilla" and t > args.max_sequential_length:
                continue
            if name == "xlstm mLSTM parallel" and t > args.max_quadratic_length:
                continue
            try:
                row = measure(name, t, args.batch, args.hidden, args.steps)
                row["tokens_per_s"] = args.batch * t / row["step_s"]
                row["forward_tokens_per_s"] = args.batch * t / row["forward_s"]
            except Exception as err:  # noqa: BLE001 (a peer missing or failing is reported, not fatal)
                row = {"impl": name, "T": t, "error": f"{type(err).__name__}: {err}"[:200]}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
