"""Study 7 (seed 000; Pascanu, Mikolov & Bengio 2013): gradient clipping in the exploding regime. The one-unit cliff
of the same paper is study 10 (:mod:`experiments.studies.cliff`)."""

from __future__ import annotations

import numpy as np

import gated

from .. import tasks as tasks_lib
from .. import train as train_lib
from .base import legend_panel, plt_panels, rate_text, train_runs, wilson

TITLE = "7. Clipping: clip_by_global_norm rescues training when gradients explode"


def compute(config, workdir) -> dict:
    """The IRNN trained with SGD per (threshold, seed)."""
    return {"training": _training(config)}


def _name(t: float) -> str:
    return "no clipping" if np.isinf(t) else f"clipped at norm {t:g}"


def _training(config) -> dict:
    """An IRNN (ReLU, identity W_hh; Le et al. 2015) on the adding problem with SGD: one program over every
    (threshold, seed); no clipping is the threshold +inf, which clip_by_global_norm never reaches."""
    task = tasks_lib.get("adding", length=config.length)
    cell = gated.cells.RNN(config.hidden_size, activation="relu", recurrent_init="identity")
    thresholds = [float(t) for t in config.thresholds]
    n = config.seeds
    _, states, metrics, test = train_runs(
        cell,
        task,
        list(range(n)) * len(thresholds),
        steps=config.train_steps,
        batch_size=config.batch_size,
        optimizer=train_lib.OptimizerSpec("sgd", momentum=0.9, steps=config.train_steps),
        learning_rate=config.learning_rate,
        clip_thresholds=[t for t in thresholds for _ in range(n)],
    )
    return {
        "thresholds": thresholds,
        "diverged_at": np.asarray(states.diverged_at).reshape(len(thresholds), n),  # -1: never; else the step (from 1)
        "test_mse": np.asarray(test["loss"]).reshape(len(thresholds), n),
        "loss": metrics["loss"].reshape(config.train_steps, len(thresholds), n),
        "grad_norm": metrics["grad_norm"].reshape(config.train_steps, len(thresholds), n),
        "chance": task.chance_loss,
    }


def plot(results, config, report) -> None:
    t = results["training"]
    thresholds, n = t["thresholds"], config.seeds
    diverged_at, test_mse = np.asarray(t["diverged_at"]), np.asarray(t["test_mse"], float)
    loss, grad_norm = np.asarray(t["loss"], float), np.asarray(t["grad_norm"], float)
    fig, axes, spare = plt_panels(3)
    steps = np.arange(1, config.train_steps + 1)
    colors = [f"C{i}" for i in range(len(thresholds))]
    for i, th in enumerate(thresholds):
        for s in range(n):
            kw = {"label": _name(th)} if s == 0 else {}
            alive = steps < (diverged_at[i, s] if diverged_at[i, s] >= 0 else config.train_steps + 1)
            axes[0].plot(steps[alive], loss[alive, i, s], color=colors[i], alpha=0.5, **kw)
            axes[1].plot(steps[alive], grad_norm[alive, i, s], color=colors[i], alpha=0.5)
    axes[0].axhline(t["chance"], color="gray", linestyle="--", label="dashed: chance (predict the mean)")
    axes[0].set(
        xlabel="SGD step",
        ylabel="training loss (mean squared error)",
        yscale="log",
        title=f"IRNN, adding problem T = {config.length}",
    )
    axes[1].set(
        xlabel="SGD step",
        ylabel="gradient norm before clipping\n(global, all parameters)",
        yscale="log",
        title="the gradient's size",
    )
    counts = (diverged_at >= 0).sum(axis=1)
    axes[2].bar([_name(th) for th in thresholds], counts, color=colors)
    axes[2].set(ylabel=f"runs that diverged (NaN/Inf), of {n}", title="divergence", ylim=(0, n))
    axes[2].tick_params(axis="x", labelrotation=30)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    handles = axes[0].get_legend_handles_labels()[0]
    legend_panel(spare, handles, title=f"SGD lr {config.learning_rate:g}, momentum 0.9, {n} seeds each")
    report.figure(
        fig,
        "clipping_training",
        f"An IRNN (ReLU, W_hh = I) trained with SGD (lr {config.learning_rate:g}, momentum 0.9) on the adding problem "
        f"T = {config.length}, {n} seeds per threshold, all {n * len(thresholds)} runs one program. Curves end "
        "where a run diverged (its state is frozen and the step recorded). Bottom left: diverged runs per threshold.",
    )
    rows = []
    for i, th in enumerate(thresholds):
        steps_at = [int(d) for d in diverged_at[i] if d >= 0]
        finite = test_mse[i][diverged_at[i] < 0]
        rows.append(
            [
                _name(th),
                f"{counts[i]}/{n}",
                ", ".join(map(str, steps_at)) or "-",
                float(np.median(finite)) if finite.size else float("nan"),
            ]
        )
    report.table(["threshold", "diverged", "at steps", "median test MSE of the others"], rows)


def claims(results, config, report) -> None:
    t = results["training"]
    thresholds, n = t["thresholds"], config.seeds
    diverged_at, test_mse = np.asarray(t["diverged_at"]), np.asarray(t["test_mse"], float)
    counts = (diverged_at >= 0).sum(axis=1)
    unclipped = [i for i, th in enumerate(thresholds) if np.isinf(th)]
    clipped = [i for i, th in enumerate(thresholds) if not np.isinf(th)]
    if unclipped and clipped:
        k_plain, n_plain = int(counts[unclipped].sum()), n * len(unclipped)
        k_clip, n_clip = int(counts[clipped].sum()), n * len(clipped)
        report.claim(
            "Without clipping, training in the exploding regime diverges (NaN/Inf) on most seeds; "
            "with clip_by_global_norm it does so on few",
            wilson(k_plain, n_plain)[0] > 0.5 and wilson(k_clip, n_clip)[1] < 0.5,
            f"diverged without clipping: {rate_text(k_plain, n_plain)}; with clipping (all thresholds): "
            f"{rate_text(k_clip, n_clip).replace('seeds', 'runs')} ("
            + ", ".join(f"{counts[i]}/{n} at {thresholds[i]:g}" for i in clipped)
            + ")",
        )
        report.headline["diverged_without_clipping"] = f"{counts[unclipped].sum()}/{n}"
        report.headline["diverged_with_clipping"] = f"{counts[clipped].sum()}/{n * len(clipped)}"
        best = min(clipped, key=lambda i: np.nanmedian(np.where(diverged_at[i] < 0, test_mse[i], np.nan)))
        report.headline["best_clip_threshold"] = thresholds[best]
        report.headline["best_clip_median_test_mse"] = float(np.nanmedian(test_mse[best]))
