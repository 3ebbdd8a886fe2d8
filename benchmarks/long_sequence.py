"""Peak memory of an LSTM training step against the sequence length T, with and without remat.

The default path (``impl="auto"``) keeps only the carries for the backward pass, so ``remat`` changes nothing for
it; the opt-in native loops keep every step's gates unless ``remat`` (timed when they can be built here).

    python -m benchmarks.long_sequence                       # T = 1000, 3000, 10000
    python -m benchmarks.long_sequence --lengths 1000 10000 --batch 16

The step is the one of ``benchmarks.training_step`` (per-step readout, mean
cross-entropy, backward, clipping and Adam; float32; B 16, D 32, H 128 by
default). Peak memory is XLA's buffer assignment of the compiled step
(arguments, outputs and temporaries), so it needs no run; each program is also
run for ``--steps`` timed steps (median reported). Writes
benchmarks/results/long_sequence.jsonl and .md.
"""

from __future__ import annotations

import argparse
import datetime

import flax.linen as nn
import jax

import gated
from benchmarks.timing import median_seconds
from benchmarks.training_step import compile_programs, flax_model, gated_model, write_results


def variants(hidden: int) -> dict:
    out = {"gated LSTM": gated_model("lstm", hidden, "auto")}
    if gated.native.unavailable_reason() is None:
        out["gated LSTM (native)"] = gated_model("lstm", hidden, "native")
        out["gated LSTM (native), remat"] = gated_model("lstm", hidden, "native", remat=True)
    out["gated LSTM (reference)"] = gated_model("lstm", hidden, "reference")
    out["gated LSTM (reference), remat"] = gated_model("lstm", hidden, "reference", remat=True)
    out["flax OptimizedLSTMCell"] = flax_model(nn.OptimizedLSTMCell, hidden)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--input", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/long_sequence")
    args = parser.parse_args(argv)
    b, d, h = args.batch, args.input, args.hidden
    rows = []
    for t in args.lengths:
        for name, (init, apply) in variants(h).items():
            run_train, _, compile_s, peak = compile_programs(init, apply, b, t, d)
            step_s = median_seconds(run_train, args.steps)
            rows.append(
                {
                    "date": datetime.date.today().isoformat(),
                    "jax": jax.__version__,
                    "B": b,
                    "T": t,
                    "D": d,
                    "H": h,
                    "impl": name,
                    "peak_bytes": peak,
                    "compile_s": compile_s,
                    "step_s": step_s,
                }
            )
            print(f"T={t} {name}: peak {peak / 2**20:.1f} MB, step {step_s:.3f} s", flush=True)
    lines = [
        f"{rows[0]['date']}, jax {rows[0]['jax']}, B {b}, D {d}, H {h}; peak MB (XLA buffer assignment) "
        "and step time in seconds.",
        "",
        "| T | " + " | ".join(variants(h)) + " |",
        "| --- |" + " --- |" * len(variants(h)),
    ]
    for t in args.lengths:
        cells = [f"{r['peak_bytes'] / 2**20:.0f} MB, {r['step_s']:.2f} s" for r in rows if r["T"] == t]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    write_results(args.out, rows, table)


if __name__ == "__main__":
    main()
