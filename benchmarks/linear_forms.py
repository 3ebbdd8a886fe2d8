"""Training-step speed and peak memory of the gated linear recurrences in each form, against the LSTM and against
``minGRU-pytorch``, over sequence lengths.

    python -m benchmarks.linear_forms                      # T = 256 to 16384, B 8, D = H = 64
    python -m benchmarks.linear_forms --lengths 256 1024 --cells mingru --steps 3

For each cell (minGRU in log space, minLSTM, LRU, RG-LRU, the selective SSM with N = 16, xLSTM's mLSTM with 4
heads and sLSTM, the last sequential only) and each form
(``reference``: the sequential ``lax.scan`` of ``cell.step``; ``associative``: one ``lax.associative_scan``;
``chunked``: associative inside chunks of 64 (and 256) steps, sequential across them), and for the LSTM on its
default path: one jitted training step (a readout to 10 classes at every step, cross-entropy,
``clip_by_global_norm(1)``, Adam), median over steps after a warm-up. Tokens/s is B*T over the step time; peak
memory is XLA's buffer assignment (arguments, outputs and temporaries of the compiled step). ``minGRU-pytorch``
runs the same step in its own process (``benchmarks.torch_mingru``) when PyTorch and it are installed. Writes
``benchmarks/results/linear_forms.{jsonl,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys

import jax

import gated
from benchmarks.training_step import compile_programs, cpu_name, median_seconds, readout_init, write_results

CELLS = {"mingru": {"log_space": True}, "minlstm": {}, "lru": {}, "rglru": {}, "ssm": {"state_size": 16},
         "mlstm": {"num_heads": 4}, "slstm": {}}  # fmt: skip


def model(cell, impl: str, chunk: int = 64):
    def init(key, d):
        k1, k2 = jax.random.split(key)
        return {"rnn": cell.init(k1, d), **readout_init(k2, cell.hidden_size)}

    def apply(params, xs):  # (B, T, D)
        _, ys = gated.run(cell, params["rnn"], xs, time_axis=1, impl=impl, chunk=chunk)
        return ys @ params["w"] + params["b"][None, None, :]

    return init, apply


def variants(cells: list[str], hidden: int) -> dict:
    out = {}
    for name in cells:
        cell = gated.cells.get(name, hidden, **CELLS[name])
        out[f"{name}/reference"] = model(cell, "reference")
        if not isinstance(cell, gated.cells.LinearCell):  # the sLSTM: sequential only
            continue
        out[f"{name}/associative"] = model(cell, "associative")
        out[f"{name}/chunked-64"] = model(cell, "chunked", 64)
        out[f"{name}/chunked-256"] = model(cell, "chunked", 256)
    out["lstm/default"] = model(gated.cells.lstm(hidden), "auto")
    return out


def torch_rows(lengths: list[int], batch: int, hidden: int, steps: int) -> list[dict]:
    args = [sys.executable, "-m", "benchmarks.torch_mingru", "--lengths", *map(str, lengths), "--batch", str(batch),
            "--hidden", str(hidden), "--steps", str(steps), "--threads", str(os.cpu_count() or 1)]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"minGRU-pytorch not measured: {out.stderr.strip().splitlines()[-1:]}", flush=True)
        return []
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--cells", nargs="+", default=list(CELLS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/linear_forms")
    args = parser.parse_args(argv)
    b, h = args.batch, args.hidden
    meta = {"date": datetime.date.today().isoformat(), "jax": jax.__version__, "cpu": cpu_name(),
            "devices": f"{jax.device_count()} {jax.default_backend()}", "B": b, "D": h, "H": h}  # fmt: skip
    rows = []
    for t in args.lengths:
        for name, (init, apply) in variants(args.cells, h).items():
            run_train, _, compile_s, peak = compile_programs(init, apply, b, t, h)
            step_s = median_seconds(run_train, args.steps)
            rows.append({**meta, "T": t, "impl": name, "step_s": step_s, "tokens_per_s": b * t / step_s,
                         "peak_bytes": peak, "compile_s": compile_s})  # fmt: skip
            print(f"T={t} {name}: {b * t / step_s:,.0f} tokens/s, peak {peak / 2**20:.1f} MB", flush=True)
    rows += [{**meta, **r, "peak_bytes": None} for r in torch_rows(args.lengths, b, h, args.steps)]
    write_results(args.out, rows, markdown(rows, meta, args.lengths))


def markdown(rows: list[dict], meta: dict, lengths: list[int]) -> str:
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    lines = [
        f"{meta['date']}, jax {meta['jax']}, {meta['cpu']}, {meta['devices']} device(s); B {meta['B']}, "
        f"D = H = {meta['H']}. Training-step tokens/s (thousands) and XLA's peak buffer MB.",
        "",
        "| form | " + " | ".join(f"T = {t}" for t in lengths) + " |",
        "| --- |" + " --- |" * len(lengths),
    ]
    for impl in impls:
        cells = []
        for t in lengths:
            r = next((r for r in rows if r["impl"] == impl and r["T"] == t), None)
            if r is None:
                cells.append("-")
                continue
            memory = "" if r.get("peak_bytes") is None else f", {r['peak_bytes'] / 2**20:.0f} MB"
            cells.append(f"{r['tokens_per_s'] / 1e3:.0f}k{memory}")
        lines.append(f"| {impl} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
