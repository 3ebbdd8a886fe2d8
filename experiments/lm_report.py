"""The language-model table and figure from a finished sweep of ``configs/language_model.py``.

    python -m experiments.main --config=configs/language_model.py --workdir=runs/lm --sweep
    python -m experiments.lm_report --workdir=runs/lm --out=docs/language_model

Reads each run's ``result.json`` and ``metrics.jsonl`` (nothing is trained again), names each run's architecture
(:data:`configs.language_model.ARCHITECTURES`), counts its parameters (``final.npz``) and times its training step
here, each architecture one after another in this one process (one run, after compiling; the median of
``--time_steps`` steps), so that the figure's wall-time axis is ``step x seconds per step`` of this machine. Writes
``language_model.png`` (validation bits per byte against steps and against wall time, the mean over seeds and
each seed), ``report.md`` (the table: the mean final validation bits per byte with its 95% t-interval over the
seeds, the best seed, the parameters, tokens per second) and ``results.json``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
import statistics
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags

from . import config as config_lib
from . import make_configs_importable, tasks
from . import train as train_lib
from . import workdir as workdir_lib
from .writers import cpu_name


def define_flags() -> None:
    """The command line's flags, defined only when it runs (so that importing this module beside
    :mod:`experiments.main`, whose ``--workdir`` is another flag, defines nothing)."""
    flags.DEFINE_string("workdir", None, "A finished sweep of configs/language_model.py.")
    flags.DEFINE_string("out", None, "Folder for language_model.png, report.md and results.json.")
    flags.DEFINE_integer("time_steps", 5, "Training steps timed per architecture (0: no timing).")
    flags.DEFINE_string(
        "compare",
        None,
        "A second sweep (e.g. bfloat16) whose final validation bits per byte are put beside each architecture's.",
    )
    flags.mark_flags_as_required(["workdir", "out"])


def architecture(config: dict) -> str:
    """The name in ARCHITECTURES whose mixer and cell a run's config has (its sizes may differ)."""
    make_configs_importable()
    from configs import language_model

    model = config["model"]
    for name, keys in language_model.ARCHITECTURES.items():
        if all(model.get(k) == keys[k] for k in ("architecture", "mixer", "cell")):
            return name
    raise ValueError(f"workdir: a run of no architecture of configs/language_model.py (model {model})")


def load(workdir: pathlib.Path) -> dict[str, list[dict]]:
    """Each architecture's runs: config, result, the validation curve ``(steps, bits per byte)``, parameters."""
    results = json.loads((workdir / "results.json").read_text())
    runs: dict[str, list[dict]] = {}
    for name, result in results.items():
        folder = workdir / "runs" / name
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        curve = [(r["step"], r["test_bits_per_byte"]) for r in rows if r.get("test_bits_per_byte") is not None]
        with np.load(folder / "final.npz") as arrays:
            params = sum(arrays[k].size for k in arrays.files if not k.startswith("curve/"))
        config = result["config"]
        runs.setdefault(architecture(config), []).append(
            {"config": config, "result": result, "curve": np.asarray(curve, float), "params": int(params)}
        )
    return runs


def seconds_per_step(config: dict, steps: int) -> float:
    """The median wall time of one training step of ``config`` (one run), after compiling."""
    c = ml_collections.ConfigDict(config)
    spec = config_lib.validate(c)
    state = train_lib.init_state(
        spec.model.init(jax.random.key(0)),
        spec.optimizer,
        spec.learning_rate,
        spec.clip_threshold,
    )
    step = jax.jit(train_lib.make_train_step(spec.model, spec.task, spec.optimizer, c.train.batch_size))
    key = jax.random.key(1)
    jax.block_until_ready(step(state, key))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interval(values: list[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95% Student t-interval (0 for one value)."""
    import scipy.stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, 0.0
    half = scipy.stats.t.ppf(0.975, len(values) - 1) * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean, float(half)


def summarise(runs: dict, other: dict, time_steps: int) -> dict:
    """Per architecture: its seeds' final validation bits per byte, their mean and t-interval, the parameters, the
    step time measured here, and the compared sweep's final values."""
    summary = {}
    for name, rs in runs.items():
        finals = [r["result"]["final"]["bits_per_byte"] for r in rs]
        config = rs[0]["config"]
        tokens = config["train"]["batch_size"] * config["task"]["length"]
        step_s = seconds_per_step(config, time_steps) if time_steps else None
        mean, half = interval(finals)
        compared = other.get(name, [])
        summary[name] = {
            "seeds": len(rs),
            "params": rs[0]["params"],
            "final_bits_per_byte": finals,
            "mean": mean,
            "half_width": half,
            "best": min(finals),
            "seconds_per_step": step_s,
            "tokens_per_second": tokens / step_s if step_s else None,
            "steps": rs[0]["result"]["steps"],
            "compare": [r["result"]["final"]["bits_per_byte"] for r in compared],
            "same_seeds": [
                next(
                    (x["result"]["final"]["bits_per_byte"] for x in rs if x["config"]["seed"] == r["config"]["seed"]),
                    None,
                )
                for r in compared
            ],
            "compare_dtype": compared[0]["config"]["model"]["dtype"] if compared else None,
        }
    return summary


def figure(runs: dict, summary: dict, path: pathlib.Path) -> None:
    """Validation bits per byte against steps and against wall time (step x seconds per step): each seed thin,
    the mean thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for k, (name, rs) in enumerate(runs.items()):
        s, steps = summary[name], rs[0]["curve"][:, 0]
        curves = np.stack([r["curve"][:, 1] for r in rs])
        for ax, x in ((axes[0], steps), (axes[1], steps * (s["seconds_per_step"] or np.nan))):
            for c in curves:
                ax.plot(x, c, color=f"C{k}", alpha=0.25, lw=1)
            ax.plot(
                x,
                curves.mean(0),
                color=f"C{k}",
                lw=2,
                marker="o",
                ms=3,
                label=f"{name} ({s['params'] / 1e6:.2f}M): {s['mean']:.3f}",
            )
    axes[0].set(xlabel="training step", ylabel="validation bits per byte", title="against steps")
    axes[1].set(xlabel="wall time on this machine (s): step x seconds per step", title="against wall time")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(title="architecture (parameters): final mean")
    seeds = max(s["seeds"] for s in summary.values())
    fig.suptitle(
        f"Byte-level language models of the standard library's sources ({seeds} seeds each; thin lines: each seed)"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(summary: dict) -> list[str]:
    """The markdown table, best mean first."""
    compared = next((s["compare_dtype"] for s in summary.values() if s["compare_dtype"]), None)
    lines = [
        "| architecture | parameters | validation bits/byte (mean, 95% t-interval) | best seed | tokens/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    if compared:
        lines[0] += f" {compared} (float32 of the same seed) |"
        lines[1] += " --- |"
    for name, s in sorted(summary.items(), key=lambda kv: kv[1]["mean"]):
        speed = f"{s['tokens_per_second']:,.0f}" if s["tokens_per_second"] else "-"
        row = f"| {name} | {s['params']:,} | {s['mean']:.3f} ± {s['half_width']:.3f} | {s['best']:.3f} | {speed} |"
        if compared:
            pairs = [
                f"{v:.3f} ({w:.3f})" if w is not None else f"{v:.3f}"
                for v, w in zip(s["compare"], s["same_seeds"], strict=True)
            ]
            row += f" {', '.join(pairs) or '-'} |"
        lines.append(row)
    return lines


def report(workdir: pathlib.Path, out: pathlib.Path, time_steps: int, compare: pathlib.Path | None = None) -> dict:
    """Writes ``language_model.png``, ``report.md`` and ``results.json`` into ``out``; returns the results."""
    runs = load(workdir)
    summary = summarise(runs, load(compare) if compare is not None else {}, time_steps)
    out.mkdir(parents=True, exist_ok=True)
    figure(runs, summary, out / "language_model.png")
    task = runs[next(iter(runs))][0]["config"]["task"]
    corpus = tasks.get("text", **{k: v for k, v in task.items() if k != "name"}).description
    lines = table(summary)
    machine = f"{cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__}, {datetime.date.today().isoformat()}"
    about = (
        f"The text: {corpus['files']} files of {corpus['path']}, {corpus['train_bytes']:,} training and "
        f"{corpus['validation_bytes']:,} validation bytes (SHA-256 {corpus['sha256'][:16]}...)."
    )
    text = "\n".join(
        [
            "# Byte-level language models",
            "",
            f"Measured on {machine}.",
            "",
            about,
            "",
            *lines,
            "",
            "![language_model](language_model.png)",
            "",
        ]
    )
    workdir_lib.write(out / "report.md", text)
    result = {"machine": machine, "corpus": corpus, "architectures": summary}
    workdir_lib.write(out / "results.json", workdir_lib.to_json(result))
    print("\n".join(lines))
    return result


def main(argv):
    del argv
    f = flags.FLAGS
    report(pathlib.Path(f.workdir), pathlib.Path(f.out), f.time_steps, pathlib.Path(f.compare) if f.compare else None)


if __name__ == "__main__":
    define_flags()
    app.run(main)
