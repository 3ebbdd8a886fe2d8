"""The default path under transforms: a vmapped sweep against single runs, and Hessian-vector products against a
gradient, side by side in one process.

    python -m benchmarks.transforms                      # the sizes below
    python -m benchmarks.transforms --runs 16 --steps 20

Sweep: R runs (R parameter sets) trained as one vmapped training step, as one ``jax.lax.map`` over the runs (one
program that runs them one after another), and as R single-run steps one after another (each a call of the single
run's compiled step), for the LSTM, GRU and RNN on the default path
(``gated.run``, ``impl="auto"``). A step is the benchmark's training step (:mod:`benchmarks.training_step`):
forward, readout, cross-entropy, backward, ``clip_by_global_norm`` and Adam. Reported as the throughput ratio
``R * t_single / t_vmapped`` (and likewise for ``lax.map``): above 1, the sweep is faster than single runs.

Hessian-vector product: forward-over-reverse (``jax.jvp`` of ``jax.grad``) of the same loss with respect to all
parameters, against one gradient. Timed interleaved, median of the timed calls; writes
``benchmarks/results/transforms.jsonl`` and ``.md`` and prints the table. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.timing import table
from benchmarks.training_step import CLASSES, cpu_name, gated_model, write_results

SWEEP_SIZES = ["32,100,32,64", "32,100,32,128", "16,200,32,256"]
HVP_SIZES = ["32,100,32,128"]


def _timed(fns: dict, steps: int) -> dict:
    times = {name: [] for name in fns}
    for i in range(steps + 2):  # interleaved, two warm-up rounds
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def sweep_row(kind: str, runs: int, b: int, t: int, d: int, h: int, steps: int) -> dict:
    init, apply = gated_model(kind, h, "auto")
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    xs = jax.random.normal(jax.random.key(1), (b, t, d), jnp.float32)
    labels = jax.random.randint(jax.random.key(2), (b, t), 0, CLASSES)

    def step(params, opt_state):
        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(apply(p, xs), labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = jax.vmap(lambda k: init(k, d))(jax.random.split(jax.random.key(0), runs))
    opt_state = jax.vmap(tx.init)(params)
    single = jax.jit(step).lower(*jax.tree.map(lambda a: a[0], (params, opt_state))).compile()
    vmapped = jax.jit(jax.vmap(step)).lower(params, opt_state).compile()
    mapped = jax.jit(lambda *a: jax.lax.map(lambda b: step(*b), a)).lower(params, opt_state).compile()
    firsts = [jax.tree.map(lambda a, r=r: a[r], (params, opt_state)) for r in range(runs)]

    def one_by_one():
        return [single(*state)[2] for state in firsts]

    timed = _timed(
        {
            "vmapped": lambda: vmapped(params, opt_state)[2],
            "lax.map": lambda: mapped(params, opt_state)[2],
            "single runs": one_by_one,
        },
        steps,
    )
    return {
        "what": "sweep",
        "cell": kind,
        "runs": runs,
        "size": {"B": b, "T": t, "D": d, "H": h},
        "vmapped_s": timed["vmapped"],
        "lax_map_s": timed["lax.map"],
        "single_runs_s": timed["single runs"],
        "throughput_ratio": timed["single runs"] / timed["vmapped"],
        "lax_map_ratio": timed["single runs"] / timed["lax.map"],
    }


def hvp_row(kind: str, b: int, t: int, d: int, h: int, steps: int) -> dict:
    init, apply = gated_model(kind, h, "auto")
    params = init(jax.random.key(0), d)
    xs = jax.random.normal(jax.random.key(1), (b, t, d), jnp.float32)
    labels = jax.random.randint(jax.random.key(2), (b, t), 0, CLASSES)

    def loss_fn(p):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, xs), labels).mean()

    v = jax.tree.map(jnp.ones_like, params)
    grad = jax.jit(jax.grad(loss_fn)).lower(params).compile()
    hvp = jax.jit(lambda p, v: jax.jvp(jax.grad(loss_fn), (p,), (v,))[1]).lower(params, v).compile()
    timed = _timed({"grad": lambda: grad(params), "hvp": lambda: hvp(params, v)}, steps)
    return {
        "what": "hvp",
        "cell": kind,
        "size": {"B": b, "T": t, "D": d, "H": h},
        "grad_s": timed["grad"],
        "hvp_s": timed["hvp"],
        "hvp_over_grad": timed["hvp"] / timed["grad"],
    }


def markdown(rows: list[dict], meta: dict) -> str:
    size = lambda r: ", ".join(str(r["size"][k]) for k in "BTDH")
    ms = lambda seconds: f"{1e3 * seconds:.1f}"
    sweep = [
        [
            r["cell"],
            size(r),
            str(r["runs"]),
            ms(r["vmapped_s"]),
            ms(r["lax_map_s"]),
            ms(r["single_runs_s"]),
            f"{r['throughput_ratio']:.2f}x",
            f"{r['lax_map_ratio']:.2f}x",
        ]
        for r in rows
        if r["what"] == "sweep"
    ]
    hvp = [
        [r["cell"], size(r), ms(r["grad_s"]), ms(r["hvp_s"]), f"{r['hvp_over_grad']:.2f}x"]
        for r in rows
        if r["what"] == "hvp"
    ]
    lines = [
        f"{meta['date']}, {meta['machine']}, jax {meta['jax']}.",
        "",
        *table(
            [
                "cell",
                "B, T, D, H",
                "runs",
                "vmapped step ms",
                "lax.map step ms",
                "single runs ms (sum)",
                "vmap throughput / single",
                "lax.map throughput / single",
            ],
            sweep,
        ),
        "",
        *table(["cell", "B, T, D, H", "gradient ms", "Hessian-vector product ms", "HVP / gradient"], hvp),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep-sizes", nargs="+", default=SWEEP_SIZES, help="B,T,D,H")
    parser.add_argument("--hvp-sizes", nargs="+", default=HVP_SIZES, help="B,T,D,H")
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed calls per side (after 2 warm-up)")
    parser.add_argument("--out", default="benchmarks/results/transforms")
    args = parser.parse_args(argv)
    meta = {
        "date": datetime.date.today().isoformat(),
        "jax": jax.__version__,
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.machine()}",
    }
    rows = []
    for size in args.sweep_sizes:
        for kind in ("lstm", "gru", "rnn"):
            rows.append({**meta, **sweep_row(kind, args.runs, *map(int, size.split(",")), args.steps)})
    for size in args.hvp_sizes:
        for kind in ("lstm", "gru"):
            rows.append({**meta, **hvp_row(kind, *map(int, size.split(",")), args.steps)})
    write_results(args.out, rows, markdown(rows, meta))


if __name__ == "__main__":
    main()
