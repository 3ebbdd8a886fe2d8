"""Time a sweep of N seeds trained as one program (the engine's group, :func:`experiments.loop.over_runs`) against
the same N runs one after another, in one process.

    python -m benchmarks.sweep_vs_sequential                  # N = 16, adding problem T = 100, 200 steps
    python -m benchmarks.sweep_vs_sequential --seeds 4 --steps 50

Both sides include compilation (each sequential run builds and compiles its own
step, as separate runs do). Writes benchmarks/results/sweep_vs_sequential.json
and prints a table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import tempfile
import time

import jax

from experiments import config as config_lib
from experiments import engine


def config(args):
    c = config_lib.base_config()
    c.model.hidden_size = args.hidden_size
    c.task.name, c.task.length = "adding", args.length
    c.train.steps, c.train.batch_size = args.steps, args.batch_size
    c.train.log_every = c.train.checkpoint_every = args.steps
    c.train.eval_batch_size = 256
    return c


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    base, sweep = config(args), [{"seed": s} for s in range(args.seeds)]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        engine.train_and_evaluate(base, pathlib.Path(tmp) / "vmapped", sweep)
        vmapped = time.perf_counter() - start
        start = time.perf_counter()
        for entry in sweep:
            engine.train_and_evaluate(config_lib.override(base, entry), pathlib.Path(tmp) / f"seq-{entry['seed']}")
        sequential = time.perf_counter() - start
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {jax.local_device_count()} {jax.default_backend()} device(s), "
        f"{__import__('os').cpu_count()} cores",
        **vars(args),
        "vmapped_seconds": round(vmapped, 2),
        "sequential_seconds": round(sequential, 2),
        "speedup": round(sequential / vmapped, 2),
    }
    out = pathlib.Path(__file__).with_name("results") / "sweep_vs_sequential.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    size = f"adding T={args.length}, H={args.hidden_size}, B={args.batch_size}, {args.steps} steps"
    print(f"| {args.seeds} seeds, {size} | seconds |\n| --- | --- |")
    print(f"| one program (loop.over_runs) | {vmapped:.1f} |")
    print(f"| {args.seeds} runs one after another | {sequential:.1f} |")
    print(f"| speed-up | {sequential / vmapped:.2f}x |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
