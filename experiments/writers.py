"""What a finished run writes beside its checkpoint: metrics.jsonl, TensorBoard events, final.npz, loss.png,
report.md and result.json; and a sweep's report table."""

from __future__ import annotations

import io
import json
import math
import pathlib
import platform
import re
from typing import Any

import jax
import numpy as np

from . import loop
from . import tasks as tasks_lib
from . import train as train_lib
from . import workdir as workdir_lib

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def escape(text: object) -> str:
    """``text`` as literal Markdown: every character Markdown would read as syntax (``|``, ``*``, ``_``, ``[``,
    ``#``, ...) backslash-escaped, and line breaks as spaces, so a name or title can't break a table or a heading."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _number(value, fmt: str = ".4g") -> str:
    return "-" if value is None else format(value, fmt)


def run_report(name: str, result: dict) -> str:
    """A run's report.md: status, final and best test metrics with their steps, chance levels, the loss plot."""
    final = result["final"]
    test = ", ".join(f"{k} {_number(v)}" for k, v in final.items() if k != "step")
    best = ", ".join(f"{k} {_number(b['value'])} (step {b['step']})" for k, b in result["best"].items())
    chance = f"chance loss {result['chance_loss']:.4g}"
    if result["chance_accuracy"] is not None:
        chance += f", chance accuracy {result['chance_accuracy']:.4g}"
    status = result["status"] + (f" at step {result['diverged_at']}" if result["diverged_at"] is not None else "")
    return (
        f"# {escape(name)}\n\n- status: {status} after {result['steps']} steps\n"
        f"- final test (step {final['step']}): {test}\n- best test: {best}\n- {chance}\n\n"
        f"![loss and gradient norm](loss.png)\n"
    )


def sweep_report(results: dict[str, dict]) -> str:
    """A sweep's report.md: one table row per run, linking its report."""
    rows = [
        "| run | status | steps | final test loss | best test loss (step) | final test accuracy | chance loss |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        status = r["status"] + (f" at {r['diverged_at']}" if r["diverged_at"] is not None else "")
        best = r["best"]["loss"]
        rows.append(
            f"| [{escape(name)}](runs/{name}/report.md) | {status} | {r['steps']} | {_number(r['final']['loss'])} "
            f"| {_number(best['value'])} ({best['step']}) | {_number(r['final'].get('accuracy'), '.3f')} "
            f"| {r['chance_loss']:.4g} |"
        )
    return "# Sweep results\n\n" + "\n".join(rows) + "\n"


def metric_rows(progress: loop.Progress, run: int) -> list[dict]:
    """Run ``run``'s rows for metrics.jsonl: ``{"step", metrics..., "test_<metric>"...}`` by step; a non-finite
    value is ``null`` and named in the row's ``"nonfinite"`` list."""
    by_step: dict[int, dict] = {}
    for table, prefix in ((progress.history, ""), (progress.evaluations, "test_")):
        for j, step in enumerate(table.get("step", np.zeros((0, run + 1)))[:, run]):
            row = by_step.setdefault(int(step), {"step": int(step)})
            row.update({prefix + k: _scalar(table[k][j, run]) for k in sorted(table) if k != "step"})
    rows = []
    for step in sorted(by_step):
        row = by_step[step]
        nonfinite = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
        row = {k: (None if k in nonfinite else v) for k, v in row.items()}
        rows.append({**row, "nonfinite": nonfinite} if nonfinite else row)
    return rows


def _scalar(value: Any) -> Any:
    value = np.asarray(value)
    return bool(value) if value.dtype == bool else float(value)


def run_result(final: train_lib.TrainState, progress: loop.Progress, run: int, task, config) -> dict:
    """A run's result.json: status, diverged step, final and best test metrics with their steps, chance levels."""
    diverged_at = int(final.diverged_at[run])
    evaluations = progress.evaluations
    steps = evaluations["step"][:, run]
    metrics = {k: v[:, run].astype(float) for k, v in evaluations.items() if k != "step"}
    best = {}
    for name, values in metrics.items():
        if not np.isfinite(values).any():
            best[name] = {"step": None, "value": None}
            continue
        pick = np.nanargmax if name == "accuracy" else np.nanargmin
        j = int(pick(np.where(np.isfinite(values), values, np.nan)))
        best[name] = {"step": int(steps[j]), "value": float(values[j])}
    return {
        "status": "diverged" if diverged_at >= 0 else "finished",
        "diverged_at": diverged_at if diverged_at >= 0 else None,
        "steps": int(final.step[run]),
        "final": {"step": int(steps[-1]), **{k: workdir_lib.finite_or_none(float(v[-1])) for k, v in metrics.items()}},
        "best": best,
        "chance_loss": task.chance_loss,
        "chance_accuracy": task.chance_accuracy,
        "config": json.loads(config.to_json()),
    }


def write_run(d: pathlib.Path, config, rows: list[dict], result: dict, params: Any, task) -> None:
    """A finished run's files, result.json last (its presence says the run's outputs are complete)."""
    workdir_lib.write(d / "metrics.jsonl", "".join(workdir_lib.to_json(r, None) + "\n" for r in rows))
    arrays = {jax.tree_util.keystr(p): a for p, a in jax.tree_util.tree_leaves_with_path(params)}
    curve = lambda key: np.array([np.nan if r.get(key) is None else r[key] for r in rows if key in r], float)
    arrays.update({f"curve/{k}": curve(k) for k in ("loss", "grad_norm", "test_loss")})
    arrays["curve/step"] = np.array([r["step"] for r in rows if "loss" in r])
    arrays["curve/test_step"] = np.array([r["step"] for r in rows if "test_loss" in r])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    workdir_lib.write(d / "final.npz", buffer.getvalue())
    _plot_curves(d, rows, task, result)
    workdir_lib.write(d / "report.md", run_report(d.name or "run", result))
    workdir_lib.write(d / "result.json", workdir_lib.to_json(result))


EVENTS_PREFIX = "events.out.tfevents."  # tensorboardX names a file events.out.tfevents.<time>.<host><suffix>


class Events:
    """A run's TensorBoard scalars (``tensorboard --logdir WORKDIR`` shows every run of a sweep), written by one
    tensorboardX ``SummaryWriter`` that stays open while the run trains and appends each checkpoint's new rows.

    Appended before the checkpoint they belong to is written (:func:`experiments.engine.train_group`), so the files
    always hold at least what the checkpoint holds. A run resumed from the checkpoint at step ``start`` opens a new
    file with ``purge_step = start + 1``: TensorBoard hides whatever a killed process appended after that
    checkpoint, and the resumed run appends those steps again, so the curves read as one uninterrupted run.
    """

    def __init__(self, run_dir: pathlib.Path, start: int):
        from tensorboardX import SummaryWriter

        self.run_dir, self.last = run_dir, start
        # tensorboardX names a file by the second it opens it, and reopens a same-named one empty: the start step in
        # the name keeps a file of earlier steps; one of the same start holds only steps this file purges anyway.
        suffix = f".from-{start:09d}.gated"
        self.writer = SummaryWriter(str(run_dir), purge_step=start + 1, flush_secs=3600, filename_suffix=suffix)

    def add(self, rows: list[dict]) -> None:
        """Appends the rows after the last one written, and flushes them to the file."""
        for r in rows:
            if r["step"] <= self.last:
                continue
            for k, v in r.items():
                if k != "step" and isinstance(v, float):
                    self.writer.add_scalar(
                        k.replace("test_", "test/") if k.startswith("test_") else f"train/{k}", v, r["step"]
                    )
            self.last = r["step"]
        self.writer.flush()
        workdir_lib.appended(self.run_dir)

    def close(self) -> None:
        self.writer.close()


def _plot_curves(run_dir: pathlib.Path, rows: list[dict], task: tasks_lib.Task, result: dict) -> None:
    import matplotlib.pyplot as plt

    fig = curves_figure(rows, task, result, run_dir.name or "run")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    workdir_lib.write(run_dir / "loss.png", buffer.getvalue())


def curves_figure(rows: list[dict], task: tasks_lib.Task, result: dict, title: str):
    """A run's loss.png: train and test loss against chance, and the gradient norm, with the step a run diverged
    at marked on both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    train = [(r["step"], r["loss"], r["grad_norm"]) for r in rows if r.get("loss") is not None]
    test = [(r["step"], r["test_loss"]) for r in rows if r.get("test_loss") is not None]
    fig, (ax_loss, ax_grad) = plt.subplots(1, 2, figsize=(10, 3.8))
    if result["diverged_at"] is not None:  # marked even when no finite point was logged before it
        for ax in (ax_loss, ax_grad):
            ax.axvline(
                result["diverged_at"], color="red", linestyle=":", label=f"diverged at step {result['diverged_at']}"
            )
        if not train:
            ax_loss.text(
                0.5,
                0.5,
                f"no finite loss logged:\ndiverged at step {result['diverged_at']}",
                transform=ax_loss.transAxes,
                ha="center",
                va="center",
                color="red",
            )
        ax_grad.legend()
    if train:
        ax_loss.plot([s for s, _, _ in train], [v for _, v, _ in train], label="train loss (one batch)")
        ax_grad.plot([s for s, _, _ in train], [g for _, _, g in train])
    if test:
        ax_loss.plot([s for s, _ in test], [v for _, v in test], "o-", label="test loss")
    ax_loss.axhline(task.chance_loss, color="gray", linestyle="--", label="chance")
    ax_loss.set(xlabel="step", ylabel="loss", yscale="log", title=f"{title}: loss ({result['status']})")
    ax_loss.legend()
    ax_grad.set(xlabel="step", ylabel="global gradient norm (before clipping)", yscale="log", title="gradient norm")
    # Fixed margins, room for log-scale tick labels down to 1e-10: tight_layout measured every label's extent and
    # took 40% of the plot's time, which every run pays at its end (and the fault tests at every rerun).
    fig.subplots_adjust(left=0.075, right=0.985, bottom=0.13, top=0.92, wspace=0.28)
    for ax in (ax_loss, ax_grad):  # labels as plain text ("1e-05"): the default 10^k labels parse as mathtext, slowly
        ax.yaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))  # fewer tick objects to build
        ax.yaxis.set_major_formatter(ticker.LogFormatter())
        ax.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    return fig


def cpu_name() -> str:
    """The CPU's model name and its widest vector extensions (from /proc/cpuinfo where there is one)."""
    try:
        info = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    vector = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{name} ({', '.join(vector) or 'no AVX2'})"
