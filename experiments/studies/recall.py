"""Study 13 (Arora et al. 2023, "Zoology", section 3 and Figure 2): recall against state size. Multi-query associative
recall (MQAR) accuracy against the number of key-value pairs, for recurrent states spanning a decade and more: the
minGRU's hidden size (its state per layer), the selective SSM's H x N (its state size N grown at a fixed width) and
the mLSTM's heads x d^2 (its heads grown at a fixed width, each head's memory d x d shrinking)."""

from __future__ import annotations

import numpy as np

from .. import config as config_lib
from . import modern
from .base import claim_over_seeds, plt_figure

TITLE = "13. Recall and state size: multi-query associative recall"


def settings(config) -> dict[str, list[tuple[int, dict, int]]]:
    """Per model, its ``(state size, model keys, setting)`` from the smallest state to the largest."""
    out = {}
    for m in config.models:
        scale = modern.tables().RECALL_SCALES[m]
        if scale == "widths":
            out[m] = [(w, modern.model_keys(m, w), w) for w in config.widths]
        elif scale == "state_sizes":
            out[m] = [
                (2 * config.width * n, modern.model_keys(m, config.width, state_size=n), n) for n in config.state_sizes
            ]
        else:
            d = 2 * config.width
            out[m] = [(d * d // h, modern.model_keys(m, config.width, num_heads=h), h) for h in config.heads]
        out[m].sort(key=lambda s: s[0])
    return out


def _entries(config, keys: dict, pairs: int) -> list[dict]:
    task = {
        "task.name": "mqar",
        "task.length": config.length,
        "task.pairs": pairs,
        "task.vocabulary": config.vocabulary,
    }
    return [{**keys, **task, "seed": s} for s in range(config.seeds)]


def compute(config, workdir) -> dict:
    """Trains every (model, state size, pairs, seed) through the engine; returns the runs and the final test accuracy
    per model, state size and number of pairs (one per seed)."""
    for m in config.models:
        if m not in modern.tables().RECALL_SCALES:
            raise ValueError(f"config.models: expected entries of {tuple(modern.tables().RECALL_SCALES)}, got {m!r}")
    grid = settings(config)
    entries = [
        e for m in config.models for _, keys, _ in grid[m] for p in config.pairs for e in _entries(config, keys, p)
    ]
    runs = modern.train(config, workdir, entries)
    final = lambda keys, p: [modern.accuracy(runs[config_lib.run_name(e)]) for e in _entries(config, keys, p)]
    accuracy = {
        m: {str(size): {str(p): final(keys, p) for p in config.pairs} for size, keys, _ in grid[m]}
        for m in config.models
    }
    return {"runs": runs, "accuracy": accuracy}


def plot(results, config, report) -> None:
    acc, n, grid = results["accuracy"], config.seeds, settings(config)
    fig, (left, right) = plt_figure(2, width=6.0)
    most = str(max(config.pairs))
    for i, m in enumerate(config.models):
        sizes = [s for s, _, _ in grid[m]]
        values = np.asarray([acc[m][str(s)][most] for s in sizes])  # (sizes, seeds)
        left.plot(sizes, np.median(values, axis=1), "o-", color=f"C{i}", label=modern.display(m))
        for s, v in zip(sizes, values, strict=True):
            left.plot(np.full(n, s), v, ".", color=f"C{i}", alpha=0.4, ms=4)
        for j, (s, _, _) in enumerate(grid[m]):
            ys = [np.median(acc[m][str(s)][str(p)]) for p in config.pairs]
            right.plot(
                config.pairs,
                ys,
                "o-",
                color=f"C{i}",
                alpha=0.35 + 0.65 * j / max(len(grid[m]) - 1, 1),
                label=f"{modern.display(m)}, state {s}",
            )
    chance = 2 / config.vocabulary
    for ax in (left, right):
        ax.axhline(chance, color="0.5", ls=":")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(0, 1.02)
    left.set_xscale("log")
    right.set_xticks(list(config.pairs))
    left.set(
        xlabel="recurrent state size per layer (numbers)",
        ylabel=f"MQAR test accuracy (median of {n} seeds)",
        title=f"{most} key-value pairs",
    )
    left.legend(fontsize=9)
    right.set(xlabel="key-value pairs", ylabel="MQAR test accuracy (median)", title="against the number of pairs")
    right.legend(fontsize=7)
    report.figure(
        fig,
        "recall",
        f"MQAR (T = {config.length}, vocabulary {config.vocabulary}; chance {chance:.3g}, dotted) after "
        f"{config.steps} Adam steps of {config.batch_size}, {config.num_layers} blocks of width {config.width} (the "
        f"minGRU's width is its state). Left: accuracy against the state size at {most} pairs, seeds as dots "
        "(Zoology's Figure 2); right: against the number of pairs, darker for larger states.",
    )
    header = ["model", "state size", "setting", *[f"{p} pairs" for p in config.pairs]]
    median = lambda m, s: [f"{np.median(acc[m][str(s)][str(p)]):.3f}" for p in config.pairs]
    scales = modern.tables().RECALL_SCALES
    rows = [[modern.display(m), s, f"{scales[m]} {v}", *median(m, s)] for m in config.models for s, _, v in grid[m]]
    report.text(f"MQAR test accuracy, median of {n} seeds:")
    report.table(header, rows)


def claims(results, config, report) -> None:
    acc, n, grid = results["accuracy"], config.seeds, settings(config)
    most, fewest = str(max(config.pairs)), str(min(config.pairs))
    rises = [
        acc[m][str(grid[m][-1][0])][most][s] > acc[m][str(grid[m][0][0])][most][s]
        for m in config.models
        for s in range(n)
    ]
    detail = "; ".join(
        f"{m}: {np.median(acc[m][str(grid[m][0][0])][most]):.2f} at state {grid[m][0][0]} to "
        f"{np.median(acc[m][str(grid[m][-1][0])][most]):.2f} at {grid[m][-1][0]}"
        for m in config.models
    )
    claim_over_seeds(
        report,
        f"At {most} pairs, accuracy rises with the state size: the largest state beats the "
        "smallest, same model and seed (Arora et al. 2023, Figure 2)",
        rises,
        detail,
        unit="(model, seed) pairs",
    )
    falls = [
        acc[m][str(size)][fewest][s] > acc[m][str(size)][most][s]
        for m in config.models
        for size, _, _ in grid[m]
        for s in range(n)
    ]
    claim_over_seeds(
        report,
        f"At a fixed state, accuracy falls with the number of pairs: {fewest} pairs beat {most}, "
        "same model, state and seed",
        falls,
        unit="(model, state, seed) triples",
    )
    for m in config.models:
        for size, _, _ in grid[m]:
            for p in config.pairs:
                report.headline[f"{m}_state{size}_pairs{p}_median_accuracy"] = float(
                    np.median(acc[m][str(size)][str(p)])
                )
