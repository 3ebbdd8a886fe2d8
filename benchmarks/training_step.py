"""gated against Flax, Equinox and PyTorch: one training step and a forward pass, side by side.

    python -m benchmarks.training_step                          # every size below
    python -m benchmarks.training_step --sizes 32,100,32,128 --steps 20

A training step is: forward over the sequence, a per-step readout to 10 classes,
mean cross-entropy, backward, ``optax.chain(clip_by_global_norm(1), adam)``;
float32, batch-major inputs converted to what each library expects outside the
timed region. Every implementation is compiled first (compile time recorded),
then timed interleaved (A B C ... A B C ...), so drift on the machine hits all
of them alike; the median over steps is reported as tokens/s (B*T per second).
Peak memory is XLA's buffer assignment for the compiled step (arguments, outputs
and temporaries). GFLOP/s counts the matmul FLOPs of the step (3x the forward's:
forward, and two matmuls backward) against a large float32 matmul timed in the
same run. Writes benchmarks/results/training_step.jsonl and .md.

gated's LSTM and GRU run three times: the default path (``impl="auto"``: the
fused kernels of :mod:`gated.fused`, pure JAX), the opt-in C++ loops of
:mod:`gated.native` ("native", when they can be built here), and the reference
path (``impl="reference"``). Equinox's
cells (``eqx.nn.LSTMCell``/``GRUCell`` vmapped over the batch under
``lax.scan``) are timed when equinox is installed (``pip install equinox``).
PyTorch's ``nn.LSTM``/``nn.GRU``/``nn.RNN`` run in a separate process
(:mod:`benchmarks.torch_step`, the same sizes, steps and thread count) when
torch is installed; their rows join the table. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import gated
from experiments.writers import cpu_name

CLASSES = 10
SIZES = ["32,100,32,128", "64,200,64,256", "16,1000,32,128", "16,100,32,1024"]
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def readout_init(key, hidden):
    return {
        "w": jax.random.normal(key, (hidden, CLASSES), jnp.float32) / np.sqrt(hidden),
        "b": jnp.zeros((CLASSES,), jnp.float32),
    }


def gated_model(kind: str, hidden: int, impl: str, remat: bool = False):
    cell = gated.cells.get(kind, hidden)

    def init(key, d):
        k1, k2 = jax.random.split(key)
        return {"rnn": cell.init(k1, d), **readout_init(k2, hidden)}

    def apply(params, xs):  # xs (B, T, D)
        _, ys = gated.run(cell, params["rnn"], xs, time_axis=1, impl=impl, remat=remat)
        return ys @ params["w"] + params["b"][None, None, :]

    return init, apply


def equinox_model(kind: str, hidden: int):
    import equinox as eqx

    cls = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[kind]

    def init(key, d):
        k1, k2 = jax.random.split(key)
        return {"rnn": cls(d, hidden, key=k1), **readout_init(k2, hidden)}

    def apply(params, xs):
        cell = params["rnn"]
        zeros = jnp.zeros((xs.shape[0], hidden), jnp.float32)
        carry = (zeros, zeros) if kind == "lstm" else zeros

        def body(carry, x):
            carry = jax.vmap(cell)(x, carry)
            return carry, carry[0] if kind == "lstm" else carry

        _, ys = jax.lax.scan(body, carry, jnp.swapaxes(xs, 0, 1))
        return jnp.swapaxes(ys, 0, 1) @ params["w"] + params["b"][None, None, :]

    return init, apply


def flax_model(cell_cls, hidden: int):
    class Model(nn.Module):
        @nn.compact
        def __call__(self, xs):
            return nn.Dense(CLASSES)(nn.RNN(cell_cls(hidden))(xs))

    model = Model()
    return (lambda key, d: model.init(key, jnp.zeros((1, 1, d), jnp.float32))), model.apply


def implementations(hidden: int, native: bool) -> dict:
    impls = {
        "gated LSTM": ("lstm", gated_model("lstm", hidden, "auto")),
        "gated LSTM (reference)": ("lstm", gated_model("lstm", hidden, "reference")),
        "flax LSTMCell": ("lstm", flax_model(nn.LSTMCell, hidden)),
        "flax OptimizedLSTMCell": ("lstm", flax_model(nn.OptimizedLSTMCell, hidden)),
        "gated GRU": ("gru", gated_model("gru", hidden, "auto")),
        "gated GRU (reference)": ("gru", gated_model("gru", hidden, "reference")),
        "flax GRUCell": ("gru", flax_model(nn.GRUCell, hidden)),
        "gated RNN": ("rnn", gated_model("rnn", hidden, "auto")),
        "flax SimpleCell": ("rnn", flax_model(nn.SimpleCell, hidden)),
    }
    if native and hidden % 16 == 0:
        impls["gated LSTM (native)"] = ("lstm", gated_model("lstm", hidden, "native"))
        impls["gated GRU (native)"] = ("gru", gated_model("gru", hidden, "native"))
    if importlib.util.find_spec("equinox") is not None:
        impls["equinox LSTMCell"] = ("lstm", equinox_model("lstm", hidden))
        impls["equinox GRUCell"] = ("gru", equinox_model("gru", hidden))
    return impls


def compile_programs(init, apply, b, t, d):
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    params = init(jax.random.key(0), d)
    opt_state = tx.init(params)
    xs = jax.random.normal(jax.random.key(1), (b, t, d), jnp.float32)
    labels = jax.random.randint(jax.random.key(2), (b, t), 0, CLASSES)

    def loss_fn(p):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, xs), labels).mean()

    def train_step(p, s):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    def forward(p):
        return apply(p, xs)

    start = time.perf_counter()
    train = jax.jit(train_step).lower(params, opt_state).compile()
    compile_seconds = time.perf_counter() - start
    fwd = jax.jit(forward).lower(params).compile()
    memory = train.memory_analysis()
    peak = None
    if memory is not None:
        peak = sum(
            getattr(memory, f, 0) for f in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")
        )
    state = {"params": params, "opt": opt_state}

    def run_train():
        state["params"], state["opt"], loss = train(state["params"], state["opt"])
        loss.block_until_ready()

    def run_forward():
        fwd(state["params"]).block_until_ready()

    return run_train, run_forward, compile_seconds, peak


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / np.median(times) / 1e9


def step_flops(kind: str, b: int, t: int, d: int, h: int) -> float:
    forward = 2 * b * t * (d + h) * GATES[kind] * h + 2 * b * t * h * CLASSES
    return 3 * forward


def torch_rows(sizes: list[str], steps: int) -> tuple[list[dict], str]:
    """PyTorch's rows from :mod:`benchmarks.torch_step` in a separate process; none if torch is missing."""
    if importlib.util.find_spec("torch") is None:
        return [], "torch is not installed (pip install torch==2.13.0 gives the CPU build): no PyTorch rows"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.torch_step",
        "--sizes",
        *sizes,
        "--steps",
        str(steps),
        "--threads",
        str(os.cpu_count()),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return rows, f"PyTorch {rows[0]['torch'] if rows else '?'} in its own process, {os.cpu_count()} threads"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=SIZES, help="B,T,D,H")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per implementation (after 3 warm-up)")
    parser.add_argument("--out", default="benchmarks/results/training_step")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch process")
    args = parser.parse_args(argv)
    native = gated.native.unavailable_reason()  # builds the opt-in C++ loops now, outside any compile time
    peak_gflops = matmul_gflops()
    meta = {
        "date": datetime.date.today().isoformat(),
        "device": jax.devices()[0].device_kind,
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "jax": jax.__version__,
        "matmul_gflops": peak_gflops,
        "native_loops": "timed" if native is None else f"not timed: {native}",
    }
    rows = []
    for size in args.sizes:
        b, t, d, h = map(int, size.split(","))
        programs = {}
        for name, (kind, (init, apply)) in implementations(h, native is None).items():
            programs[name] = (kind, *compile_programs(init, apply, b, t, d))
        times = {name: {"train": [], "forward": []} for name in programs}
        for i in range(args.steps + 3):  # interleaved: every implementation once per round
            for name, (_, run_train, run_forward, _, _) in programs.items():
                for what, fn in (("train", run_train), ("forward", run_forward)):
                    start = time.perf_counter()
                    fn()
                    if i >= 3:
                        times[name][what].append(time.perf_counter() - start)
        for name, (kind, _, _, compile_seconds, peak) in programs.items():
            train_s, fwd_s = np.median(times[name]["train"]), np.median(times[name]["forward"])
            rows.append(
                {
                    **meta,
                    "size": {"B": b, "T": t, "D": d, "H": h},
                    "impl": name,
                    "cell": kind,
                    "train_tokens_per_s": b * t / train_s,
                    "forward_tokens_per_s": b * t / fwd_s,
                    "compile_s": compile_seconds,
                    "peak_bytes": peak,
                }
            )
    torch_note = "PyTorch skipped (--no-torch)"
    if not args.no_torch:
        extra, torch_note = torch_rows(args.sizes, args.steps)
        rows += [{**meta, **r} for r in extra]
    for r in rows:
        s = r["size"]
        steps_per_s = r["train_tokens_per_s"] / (s["B"] * s["T"])
        r["gflops"] = step_flops(r["cell"], s["B"], s["T"], s["D"], s["H"]) * steps_per_s / 1e9
        r["matmul_fraction"] = r["gflops"] / peak_gflops
    write_results(args.out, rows, markdown(rows, meta, torch_note))


def write_results(out: str, rows: list[dict], table: str) -> None:
    """Writes ``out``.jsonl (one row per line) and ``out``.md (the table), and prints the table."""
    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path.with_suffix(".md").write_text(table)
    print(table)


def _best(rows: list[dict], size: dict, cell: str, prefix: str, key: str) -> float | None:
    values = [r[key] for r in rows if r["size"] == size and r["cell"] == cell and r["impl"].startswith(prefix)]
    return max(values) if values else None


def _ratio(value: float, other: float | None) -> str:
    return f"{value / other:.2f}x" if other else "-"


def markdown(rows: list[dict], meta: dict, torch_note: str = "") -> str:
    """The full table (every implementation) and the summary of gated's ratios against each peer."""
    lines = [
        f"{meta['date']}, {meta['machine']}, {meta['device']}, jax {meta['jax']}; a 2048^3 float32 matmul runs at "
        f"{meta['matmul_gflops']:.0f} GFLOP/s. {torch_note}. gated's opt-in C++ loops (native): "
        f"{meta.get('native_loops', '?')}.",
        "",
        "| B, T, D, H | implementation | train tokens/s | vs best flax | vs torch | forward tokens/s "
        "| fwd vs best flax | compile s | peak MB | % of matmul |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        s, cell = r["size"], r["cell"]
        flax_train = _best(rows, s, cell, "flax", "train_tokens_per_s")
        flax_fwd = _best(rows, s, cell, "flax", "forward_tokens_per_s")
        torch_train = _best(rows, s, cell, "torch", "train_tokens_per_s")
        peak = f"{r['peak_bytes'] / 2**20:.0f}" if r["peak_bytes"] else "-"
        compile_s = f"{r['compile_s']:.2f}" if r["compile_s"] is not None else "-"
        lines.append(
            f"| {s['B']}, {s['T']}, {s['D']}, {s['H']} | {r['impl']} | {r['train_tokens_per_s']:,.0f} "
            f"| {_ratio(r['train_tokens_per_s'], flax_train)} | {_ratio(r['train_tokens_per_s'], torch_train)} "
            f"| {r['forward_tokens_per_s']:,.0f} | {_ratio(r['forward_tokens_per_s'], flax_fwd)} | {compile_s} "
            f"| {peak} | {100 * r['matmul_fraction']:.0f}% |"
        )
    lines += [
        "",
        "gated's default path against each peer (training step unless marked), its share of the matmul rate, "
        "and the opt-in native loops against it:",
        "",
        "| B, T, D, H | LSTM vs fastest flax | LSTM vs torch | GRU vs flax | GRU vs torch | RNN vs flax "
        "| RNN vs torch | forward LSTM / GRU vs fastest flax | % of matmul LSTM / GRU | native vs default "
        "LSTM / GRU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    sizes = []
    for r in rows:
        if r["size"] not in sizes:
            sizes.append(r["size"])
    train, fwd = "train_tokens_per_s", "forward_tokens_per_s"
    for s in sizes:
        get = {r["impl"]: r for r in rows if r["size"] == s}

        def versus(cell, peer, key=train, get=get, s=s):
            mine = get.get(f"gated {cell.upper()}")
            return _ratio(mine[key], _best(rows, s, cell, peer, key)) if mine else "-"

        def native(cell, get=get):
            a, b = get.get(f"gated {cell.upper()} (native)"), get.get(f"gated {cell.upper()}")
            return _ratio(a[train], b[train]) if a and b else "-"

        share = " / ".join(f"{100 * get[f'gated {c}']['matmul_fraction']:.0f}%" for c in ("LSTM", "GRU"))
        lines.append(
            f"| {s['B']}, {s['T']}, {s['D']}, {s['H']} | {versus('lstm', 'flax')} | {versus('lstm', 'torch')} "
            f"| {versus('gru', 'flax')} | {versus('gru', 'torch')} | {versus('rnn', 'flax')} "
            f"| {versus('rnn', 'torch')} "
            f"| {versus('lstm', 'flax', fwd)} / {versus('gru', 'flax', fwd)} | {share} "
            f"| {native('lstm')} / {native('gru')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
