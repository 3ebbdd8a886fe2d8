"""Training-step and forward speed, peak memory and compile time of the gated linear recurrences and the
matrix-state cells in each form, side by side with their authors' code and the LSTM, over sequence lengths.

    python -m benchmarks.linear_forms                      # T = 256 to 16384, B 8, D = H = 64
    python -m benchmarks.linear_forms --lengths 256 1024 --cells mingru mlstm --steps 3 --no-torch

For each cell (minGRU in log space, minLSTM, LRU, RG-LRU, the selective SSM with N = 16, xLSTM's mLSTM with 4 heads,
Mamba-2's SSD with 4 heads and N = 16, Gated DeltaNet, GLA and HGRN2 with 4 heads, and the sLSTM) and each form that
runs it (``reference``: the sequential ``lax.scan`` of ``cell.step``; ``sequential``: chunks of 64 steps, each chunk's
coefficients at once, then a ``lax.scan`` of the update alone; ``recomputed``: the reference path storing the carry
every 64 steps only; ``associative``: one ``lax.associative_scan``; ``chunked``: associative inside chunks of 64 steps
(``--forms``); ``chunkwise``: the matrix-state cells' chunkwise form, chunks of 64), and for the LSTM on its default
path: one jitted training step (a readout to 10 classes at every step, cross-entropy,
``clip_by_global_norm(1)``, Adam), median over steps after a warm-up, and the forward pass alone. Tokens/s is B*T
over the step time; peak memory is XLA's buffer assignment (arguments, outputs and temporaries of the compiled
step); compile time is the training step's ``lower().compile()``. The associative and chunked forms run up to
``--max-parallel-length`` (their memory grows with the state). Peers: ``recurrentgemma``'s RG-LRU layer (JAX, in
this process, its linear and associative scans) behind a dense projection, and in their own process
(:mod:`benchmarks.torch_peers`) ``minGRU-pytorch``, ``torch.nn.GRU`` and ``torch.nn.LSTM``, and the ``xlstm``
package's mLSTM (chunkwise and parallel) and sLSTM (vanilla) forms, where installed. Writes
``benchmarks/results/linear_forms.{jsonl,md}``, with what ``impl="auto"`` runs for each cell.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp

import gated
from benchmarks.timing import median_seconds
from benchmarks.training_step import compile_programs, cpu_name, readout_init, write_results
from gated.options import Call

CELLS = {
    "mingru": {"log_space": True},
    "minlstm": {},
    "lru": {},
    "rglru": {},
    "ssm": {"state_size": 16},
    "mlstm": {"num_heads": 4},
    "ssd": {"num_heads": 4, "state_size": 16},
    "gated_deltanet": {"num_heads": 4},
    "gla": {"num_heads": 4},
    "hgrn2": {"num_heads": 4},
    "slstm": {},
}
FORMS = ("reference", "sequential", "recomputed", "associative", "chunked", "chunkwise")


def model(cell, impl: str, chunk: int = 64):
    def init(key, d):
        k1, k2 = jax.random.split(key)
        return {"rnn": cell.init(k1, d), **readout_init(k2, cell.hidden_size)}

    def apply(params, xs):  # (B, T, D)
        _, ys = gated.run(cell, params["rnn"], xs, time_axis=1, impl=impl, chunk=chunk)
        return ys @ params["w"] + params["b"][None, None, :]

    return init, apply


def recurrentgemma_model(hidden: int, scan_type: str):
    """recurrentgemma's RG-LRU layer (JAX) behind a dense input projection, as gated's rglru (dense gates from the
    input, num_heads=1): the same parameters and arithmetic, its own scan."""
    import flax.linen as nn
    import recurrentgemma.jax as rg
    from recurrentgemma import common

    class Layer(nn.Module):
        @nn.compact
        def __call__(self, xs):
            segment_pos = jnp.broadcast_to(jnp.arange(xs.shape[1]), xs.shape[:2])
            lru = rg.RGLRU(width=hidden, num_heads=1, scan_type=common.ScanType[scan_type])
            return lru(nn.Dense(hidden)(xs), segment_pos)[0]

    layer = Layer()

    def init(key, d):
        k1, k2 = jax.random.split(key)
        return {"rnn": layer.init(k1, jnp.zeros((1, 2, d))), **readout_init(k2, hidden)}

    def apply(params, xs):
        with jax.numpy_rank_promotion("allow"):
            return layer.apply(params["rnn"], xs) @ params["w"] + params["b"][None, None, :]

    return init, apply


def variants(cells: list[str], hidden: int, forms: list[str], t: int, max_parallel: int) -> dict:
    out = {}
    for name in cells:
        cell = gated.cells.get(name, hidden, **CELLS[name])
        for form in forms:
            if gated.backends.reason(form, cell, Call(form)) is not None:
                continue
            if form in ("associative", "chunked") and t > max_parallel:
                continue
            out[f"{name}/{form}"] = model(cell, form)
        if name == "rglru" and importlib.util.find_spec("recurrentgemma") is not None:
            for scan_type in ("LINEAR_NATIVE", "ASSOCIATIVE_NATIVE"):
                if scan_type == "LINEAR_NATIVE" or t <= max_parallel:
                    out[f"recurrentgemma RG-LRU/{scan_type.lower()}"] = recurrentgemma_model(hidden, scan_type)
    out["lstm/default"] = model(gated.cells.LSTM(hidden), "auto")
    return out


def auto_picks(cells: list[str], hidden: int, lengths: list[int]) -> dict[str, list[str]]:
    """What ``impl="auto"`` runs for each cell and length on this platform (:data:`gated.backends.AUTO`)."""
    picks = {}
    for name in cells:
        cell = gated.cells.get(name, hidden, **CELLS[name])
        picks[name] = [gated.backends.choose(cell, Call("auto", num_steps=t)) for t in lengths]
    return picks


def torch_rows(lengths: list[int], batch: int, hidden: int, steps: int) -> list[dict]:
    args = [
        sys.executable,
        "-m",
        "benchmarks.torch_peers",
        "--lengths",
        *map(str, lengths),
        "--batch",
        str(batch),
        "--hidden",
        str(hidden),
        "--steps",
        str(steps),
        "--threads",
        str(os.cpu_count() or 1),
    ]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"PyTorch peers not measured: {out.stderr.strip().splitlines()[-1:]}", flush=True)
        return []
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        if "error" in row:
            print(f"{row['impl']} at T={row['T']} not measured: {row['error']}", flush=True)
    return [r for r in rows if "error" not in r]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--cells", nargs="+", default=list(CELLS))
    parser.add_argument("--forms", nargs="+", default=[f for f in FORMS if f != "chunked"], choices=FORMS)
    parser.add_argument(
        "--max-parallel-length",
        type=int,
        default=4096,
        help="the associative and chunked forms only up to this length (their memory)",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="leave out the PyTorch peers")
    parser.add_argument("--out", default="benchmarks/results/linear_forms")
    parser.add_argument(
        "--render",
        nargs="+",
        metavar="JSONL",
        help="measure nothing: merge these runs' result files (one machine) into --out",
    )
    args = parser.parse_args(argv)
    if args.render:
        return render(args.render, args.out, args.hidden)
    b, h = args.batch, args.hidden
    meta = {
        "date": datetime.date.today().isoformat(),
        "jax": jax.__version__,
        "cpu": cpu_name(),
        "devices": f"{jax.device_count()} {jax.default_backend()}",
        "B": b,
        "D": h,
        "H": h,
    }
    rows = []
    for t in args.lengths:
        for name, (init, apply) in variants(args.cells, h, args.forms, t, args.max_parallel_length).items():
            run_train, run_forward, compile_s, peak = compile_programs(init, apply, b, t, h)
            step_s, forward_s = median_seconds(run_train, args.steps), median_seconds(run_forward, args.steps)
            rows.append(
                {
                    **meta,
                    "T": t,
                    "impl": name,
                    "step_s": step_s,
                    "tokens_per_s": b * t / step_s,
                    "forward_tokens_per_s": b * t / forward_s,
                    "peak_bytes": peak,
                    "compile_s": compile_s,
                }
            )
            print(
                f"T={t} {name}: {b * t / step_s:,.0f} tokens/s, forward {b * t / forward_s:,.0f}, peak "
                f"{peak / 2**20:.1f} MB, compile {compile_s:.1f} s",
                flush=True,
            )
    if not args.no_torch:
        rows += [{**meta, **r, "peak_bytes": None} for r in torch_rows(args.lengths, b, h, args.steps)]
    picks = auto_picks([c for c in args.cells if c in CELLS], h, args.lengths)
    write_results(args.out, rows, markdown(rows, meta, args.lengths, picks))


def render(files: list[str], out: str, hidden: int) -> None:
    """Merges the rows of several runs' JSONL files (the first row's machine and date head the table)."""
    rows = [json.loads(line) for file in files for line in open(file) if line.strip()]
    meta = next(r for r in rows if "cpu" in r)
    lengths = sorted({r["T"] for r in rows})
    picks = auto_picks(list(CELLS), hidden, lengths)
    write_results(out, rows, markdown(rows, meta, lengths, picks))


def _cell(rows: list[dict], impl: str, t: int, text) -> str:
    r = next((r for r in rows if r["impl"] == impl and r["T"] == t), None)
    return "-" if r is None else text(r)


def markdown(rows: list[dict], meta: dict, lengths: list[int], picks: dict | None = None) -> str:
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    header = ["| form | " + " | ".join(f"T = {t}" for t in lengths) + " |", "| --- |" + " --- |" * len(lengths)]
    memory = lambda r: "" if r.get("peak_bytes") is None else f", {r['peak_bytes'] / 2**20:.0f} MB"
    compiled = lambda r: "" if r.get("compile_s") is None else f", {r['compile_s']:.1f} s"
    lines = [
        f"{meta['date']}, jax {meta['jax']}, {meta['cpu']}, {meta['devices']} device(s); B {meta['B']}, "
        f"D = H = {meta['H']}.",
        "",
        "Training step: tokens/s (thousands) and XLA's peak buffer MB of the compiled step.",
        "",
        *header,
        *(
            f"| {i} | "
            + " | ".join(_cell(rows, i, t, lambda r: f"{r['tokens_per_s'] / 1e3:.0f}k{memory(r)}") for t in lengths)
            + " |"
            for i in impls
        ),
        "",
        "Forward pass: tokens/s (thousands); the training step's compile time (seconds, JAX only).",
        "",
        *header,
        *(
            f"| {i} | "
            + " | ".join(
                _cell(rows, i, t, lambda r: f"{r['forward_tokens_per_s'] / 1e3:.0f}k{compiled(r)}") for t in lengths
            )
            + " |"
            for i in impls
        ),
    ]
    if picks:
        lines += [
            "",
            'What impl="auto" runs on this platform (gated.backends.AUTO):',
            "",
            *header,
            *(f"| {name} | " + " | ".join(p) + " |" for name, p in picks.items()),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
