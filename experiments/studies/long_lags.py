"""Study 8 (seeds 000/002; Hochreiter & Schmidhuber 1997): RNN vs LSTM vs GRU success rate vs sequence length,
and the LSTM variants, trained through the experiments engine (seeds vmapped, one workdir per run, resumable)."""

from __future__ import annotations

import numpy as np

from experiments import engine
from experiments.studies.base import plt_figure

TITLE = "8. Long lags: success rate against sequence length"
FIELDS = {
    "cells": tuple,
    "tasks": tuple,
    "adding_lengths": tuple,
    "temporal_order_lengths": tuple,
    "seeds": int,
    "hidden_size": int,
    "steps": int,
    "batch_size": int,
    "learning_rate": float,
    "success_mse_fraction": float,
    "success_accuracy": float,
    "variants": tuple,
    "variant_task": str,
    "variant_length": int,
}
TASKS = ("adding", "temporal_order")
VARIANTS = {
    "lstm": {},
    "no_forget_gate": {"model.options.forget_gate": False},
    "cifg": {"model.options.coupled": True},
    "peepholes": {"model.options.peepholes": True},
    "forget_bias_0": {"model.options.forget_bias": 0.0},
    "forget_bias_3": {"model.options.forget_bias": 3.0},
}


def _base(config):
    c = engine.base_config()
    c.model.hidden_size = config.hidden_size
    c.optimizer.learning_rate = config.learning_rate
    c.train.update(
        steps=config.steps,
        batch_size=config.batch_size,
        log_every=max(config.steps // 20, 1),
        checkpoint_every=config.steps,
    )
    return c


def success(config, result: dict) -> bool:
    """Regression: test MSE below ``success_mse_fraction`` of chance; classification: test accuracy at least
    ``success_accuracy``."""
    if result["status"] != "finished":
        return False
    if "accuracy" in result["final"]:
        return result["final"]["accuracy"] >= config.success_accuracy
    return result["final"]["loss"] < config.success_mse_fraction * result["chance_loss"]


def compute(config, workdir) -> dict:
    """Every (task, length, cell, seed) run and every LSTM variant, through the experiments engine into
    ``workdir/training`` (resumable); returns each run's status and final test metrics by run name."""
    for t in (*config.tasks, config.variant_task):
        if t not in TASKS:
            raise ValueError(f"config.tasks: expected entries of {TASKS}, got {t!r}")
    for v in config.variants:
        if v not in VARIANTS:
            raise ValueError(f"config.variants: expected entries of {sorted(VARIANTS)}, got {v!r}")
    lengths = {"adding": config.adding_lengths, "temporal_order": config.temporal_order_lengths}
    sweep = [
        {"model.cell": cell, "task.name": t, "task.length": length, "seed": s}
        for t in config.tasks
        for length in lengths[t]
        for cell in config.cells
        for s in range(config.seeds)
    ]
    variant_runs = {
        v: [
            {
                "model.cell": "lstm",
                "task.name": config.variant_task,
                "task.length": config.variant_length,
                **VARIANTS[v],
                "seed": s,
                "variant": v,
            }
            for s in range(config.seeds)
        ]
        for v in config.variants
    }
    for entries in variant_runs.values():
        for e in entries:
            e.pop("variant")
    all_entries = sweep + [e for entries in variant_runs.values() for e in entries if e not in sweep]
    results = engine.train_and_evaluate(_base(config), workdir / "training", all_entries)
    keep = ("status", "final", "chance_loss")
    return {
        "runs": {n: {k: r[k] for k in keep} for n, r in results.items()},
        "variants": {v: [engine.run_name(e) for e in entries] for v, entries in variant_runs.items()},
    }


def _rates(results, config) -> dict[tuple[str, str], list[float]]:
    """Success rate per (task, cell), one per length."""
    lengths = {"adding": config.adding_lengths, "temporal_order": config.temporal_order_lengths}
    runs = results["runs"]
    return {
        (t, cell): [
            float(np.mean([success(config, runs[engine.run_name({"model.cell": cell, "task.name": t,
                                                                  "task.length": length, "seed": s})])
                           for s in range(config.seeds)]))
            for length in lengths[t]
        ]
        for t in config.tasks
        for cell in config.cells
    }  # fmt: skip


def plot(results, config, report) -> None:
    lengths = {"adding": config.adding_lengths, "temporal_order": config.temporal_order_lengths}
    rates = _rates(results, config)
    fig, axes = plt_figure(len(config.tasks), width=4.6)
    for ax, t in zip(axes, config.tasks, strict=True):
        for cell in config.cells:
            ax.plot(lengths[t], rates[(t, cell)], "o-", label=cell)
        criterion = (
            f"test MSE < {config.success_mse_fraction:g} x chance"
            if t == "adding"
            else f"test accuracy >= {config.success_accuracy:g}"
        )
        ax.set(
            xlabel="sequence length T", ylabel=f"success rate ({criterion})", title=t, ylim=(-0.05, 1.05), xscale="log"
        )
        ax.legend()
        ax.grid(True, alpha=0.3)
    report.figure(
        fig,
        "long_lags",
        f"Fraction of {config.seeds} seeds that solve each task against its length (H = {config.hidden_size}, "
        f"{config.steps} Adam steps, lr {config.learning_rate:g}, clip_by_global_norm(1)). Each run's loss curve and "
        "result are in training/runs/.",
    )
    header = ["task", "cell", *[f"T = {length}" for length in sorted({x for t in config.tasks for x in lengths[t]})]]
    all_lengths = header[2:]
    rows = []
    for (t, cell), rate in rates.items():
        by_length = dict(zip([f"T = {length}" for length in lengths[t]], rate, strict=True))
        rows.append([t, cell, *[f"{by_length[h]:.2f}" if h in by_length else "-" for h in all_lengths]])
    report.table(header, rows)
    variant_rows = []
    for v, names in results["variants"].items():
        runs = [results["runs"][n] for n in names]
        metric = [r["final"].get("accuracy", r["final"]["loss"]) for r in runs]
        variant_rows.append([v, float(np.mean([success(config, r) for r in runs])), float(np.median(metric))])
    if variant_rows:
        metric_name = "accuracy" if config.variant_task == "temporal_order" else "MSE"
        report.text(f"LSTM variants on {config.variant_task}, T = {config.variant_length}, {config.seeds} seeds:")
        report.table(["variant", "success rate", f"median test {metric_name}"], variant_rows)


def claims(results, config, report) -> None:
    lengths = {"adding": config.adding_lengths, "temporal_order": config.temporal_order_lengths}
    rates = _rates(results, config)
    longest = {t: lengths[t][-1] for t in config.tasks}
    for t in config.tasks:
        gated_best = max(rates.get((t, c), [0.0])[-1] for c in ("lstm", "gru") if c in config.cells)
        if "rnn" in config.cells:
            report.claim(
                f"At the longest {t} length (T = {longest[t]}), a gated cell succeeds more often than the vanilla RNN",
                gated_best > rates[(t, "rnn")][-1],
                "success rate: " + ", ".join(f"{c} {rates[(t, c)][-1]:.2f}" for c in config.cells),
            )
        for c in config.cells:
            report.headline[f"{t}_T{longest[t]}_{c}_success"] = rates[(t, c)][-1]
