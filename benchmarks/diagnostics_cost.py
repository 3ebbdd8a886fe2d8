"""What the gradient-flow diagnostics cost: ||dL/dh_t|| for every step t against one training step.

    python -m benchmarks.diagnostics_cost
    python -m benchmarks.diagnostics_cost --sizes 32,100,32,128 --steps 20

For each cell and size, times (interleaved, median) one training step of
``benchmarks.training_step`` (gated's default path) and
``diagnostics.gradient_norms`` vmapped over the same batch with the same
loss (per-step readout, mean cross-entropy): one forward and one backward pass
that returns dL/dh_t (and dL/dc_t) for all T steps. Writes
benchmarks/results/diagnostics_cost.jsonl and .md with the ratio.
"""

from __future__ import annotations

import argparse
import datetime
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gated
from benchmarks.training_step import CLASSES, compile_programs, gated_model, write_results
from gated import diagnostics

SIZES = ["32,100,32,128", "16,1000,32,128"]


def diagnostics_program(kind: str, b: int, t: int, d: int, h: int):
    init, _ = gated_model(kind, h, "auto")
    params = init(jax.random.key(0), d)
    cell = gated.cells.get(kind, h)
    xs = jax.random.normal(jax.random.key(1), (b, t, d), jnp.float32)
    labels = jax.random.randint(jax.random.key(2), (b, t), 0, CLASSES)

    def norms(params, x, y):
        def loss_fn(ys, _final):
            logits = ys @ params["w"] + params["b"][None, :]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        return diagnostics.gradient_norms(cell, params["rnn"], x, loss_fn)

    program = jax.jit(jax.vmap(norms, in_axes=(None, 0, 0))).lower(params, xs, labels).compile()
    return lambda: jax.block_until_ready(program(params, xs, labels))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=SIZES, help="B,T,D,H")
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/diagnostics_cost")
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        b, t, d, h = map(int, size.split(","))
        for kind in args.cells:
            train, _, _, _ = compile_programs(*gated_model(kind, h, "auto"), b, t, d)
            diag = diagnostics_program(kind, b, t, d, h)
            times = {"train": [], "diagnostics": []}
            for i in range(args.steps + 2):
                for what, fn in (("train", train), ("diagnostics", diag)):
                    start = time.perf_counter()
                    fn()
                    if i >= 2:
                        times[what].append(time.perf_counter() - start)
            train_s, diag_s = np.median(times["train"]), np.median(times["diagnostics"])
            rows.append(
                {
                    "date": datetime.date.today().isoformat(),
                    "jax": jax.__version__,
                    "cell": kind,
                    "size": {"B": b, "T": t, "D": d, "H": h},
                    "train_s": float(train_s),
                    "diagnostics_s": float(diag_s),
                    "ratio": float(diag_s / train_s),
                }
            )
            print(
                f"{size} {kind}: train {train_s * 1e3:.1f} ms, norms {diag_s * 1e3:.1f} ms, "
                f"ratio {diag_s / train_s:.2f}",
                flush=True,
            )
    lines = [
        f"{rows[0]['date']}, jax {rows[0]['jax']}: per-step gradient norms for all T steps (vmapped over the "
        "batch) against one training step of the same model.",
        "",
        "| B, T, D, H | cell | training step ms | all-step gradient norms ms | ratio |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        s = r["size"]
        lines.append(
            f"| {s['B']}, {s['T']}, {s['D']}, {s['H']} | {r['cell']} | {r['train_s'] * 1e3:.1f} "
            f"| {r['diagnostics_s'] * 1e3:.1f} | {r['ratio']:.2f}x |"
        )
    table = "\n".join(lines) + "\n"
    write_results(args.out, rows, table)


if __name__ == "__main__":
    main()
