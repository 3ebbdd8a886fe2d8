"""gated's reference path against Flax's recurrent cells: one training step and a forward pass, side by side.

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

Equinox is not a dependency and is left out; PyTorch needs a separate process
(not written yet).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import gated

CLASSES = 10
SIZES = ["32,100,32,128", "64,200,64,256", "16,1000,32,128", "16,100,32,1024"]
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def gated_model(kind: str, hidden: int):
    layer = gated.recurrent(gated.cells.get(kind, hidden))

    def init(key, d):
        k1, k2 = jax.random.split(key)
        readout = jax.random.normal(k2, (hidden, CLASSES), jnp.float32) / np.sqrt(hidden)
        return {"rnn": layer.init(k1, d), "w": readout, "b": jnp.zeros((CLASSES,), jnp.float32)}

    def apply(params, xs):  # xs (B, T, D)
        _, ys = layer(params["rnn"], xs, time_axis=1)
        return ys @ params["w"] + params["b"][None, None, :]

    return init, apply


def flax_model(cell_cls, hidden: int):
    class Model(nn.Module):
        @nn.compact
        def __call__(self, xs):
            return nn.Dense(CLASSES)(nn.RNN(cell_cls(hidden))(xs))

    model = Model()
    return (lambda key, d: model.init(key, jnp.zeros((1, 1, d), jnp.float32))), model.apply


def implementations(hidden: int) -> dict:
    return {
        "gated LSTM": ("lstm", gated_model("lstm", hidden)),
        "flax LSTMCell": ("lstm", flax_model(nn.LSTMCell, hidden)),
        "flax OptimizedLSTMCell": ("lstm", flax_model(nn.OptimizedLSTMCell, hidden)),
        "gated GRU": ("gru", gated_model("gru", hidden)),
        "flax GRUCell": ("gru", flax_model(nn.GRUCell, hidden)),
        "gated RNN": ("rnn", gated_model("rnn", hidden)),
        "flax SimpleCell": ("rnn", flax_model(nn.SimpleCell, hidden)),
    }


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
        peak = sum(getattr(memory, f, 0) for f in ("argument_size_in_bytes", "output_size_in_bytes",
                                                    "temp_size_in_bytes"))  # fmt: skip
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=SIZES, help="B,T,D,H")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per implementation (after 3 warm-up)")
    parser.add_argument("--out", default="benchmarks/results/training_step")
    args = parser.parse_args(argv)
    peak_gflops = matmul_gflops()
    meta = {
        "date": datetime.date.today().isoformat(),
        "device": jax.devices()[0].device_kind,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "jax": jax.__version__,
        "matmul_gflops": peak_gflops,
    }
    rows = []
    for size in args.sizes:
        b, t, d, h = map(int, size.split(","))
        programs = {}
        for name, (kind, (init, apply)) in implementations(h).items():
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
            gflops = step_flops(kind, b, t, d, h) / train_s / 1e9
            rows.append({**meta, "size": {"B": b, "T": t, "D": d, "H": h}, "impl": name, "cell": kind,
                         "train_tokens_per_s": b * t / train_s, "forward_tokens_per_s": b * t / fwd_s,
                         "compile_s": compile_seconds, "peak_bytes": peak, "gflops": gflops,
                         "matmul_fraction": gflops / peak_gflops})  # fmt: skip
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = markdown(rows, meta)
    out.with_suffix(".md").write_text(table)
    print(table)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"{meta['date']}, {meta['machine']}, {meta['device']}, jax {meta['jax']}; a 2048^3 float32 matmul runs at "
             f"{meta['matmul_gflops']:.0f} GFLOP/s.", "",
             "| B, T, D, H | implementation | train tokens/s | vs flax best | forward tokens/s | compile s | peak MB "
             "| % of matmul |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        s = r["size"]
        same = [x for x in rows if x["size"] == s and x["cell"] == r["cell"] and x["impl"].startswith("flax")]
        best = max(x["train_tokens_per_s"] for x in same)
        peak = f"{r['peak_bytes'] / 2**20:.0f}" if r["peak_bytes"] else "-"
        size, ratio = f"{s['B']}, {s['T']}, {s['D']}, {s['H']}", r["train_tokens_per_s"] / best
        percent = 100 * r["matmul_fraction"]
        lines.append(
            f"| {size} | {r['impl']} | {r['train_tokens_per_s']:,.0f} | {ratio:.2f}x "
            f"| {r['forward_tokens_per_s']:,.0f} | {r['compile_s']:.2f} | {peak} | {percent:.0f}% |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
