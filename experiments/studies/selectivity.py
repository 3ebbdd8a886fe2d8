"""Study 12 (Gu & Dao 2023, section 4.1, Tables 1 and 2): what selectivity buys. Selective copying and induction
heads for time-invariant recurrences (the LRU, and the Mamba block with its SSM made time-invariant, S4D-style)
against input-dependent ones (the selective SSM in Mamba's block, the RG-LRU in Hawk's, the minGRU, the LSTM), each
inside its paper's block; induction heads also at 4x to 64x the training length."""

from __future__ import annotations

import numpy as np

from .. import config as config_lib
from . import modern
from .base import claim_over_seeds, plt_figure, rate_text, wilson

TITLE = "12. Selectivity: selective copying and induction heads"
TASKS = ("selective_copying", "induction_heads")


def _tasks(config) -> dict[str, dict]:
    """Each task's engine keys (name and options) at the training length."""
    return {
        "selective_copying": {
            "task.name": "selective_copying",
            "task.length": config.copy_length,
            "task.count": config.copy_count,
            "task.classes": config.classes,
        },
        "induction_heads": {
            "task.name": "induction_heads",
            "task.length": config.induction_length,
            "task.classes": config.classes,
        },
    }


def _entries(config, model: str, task: str) -> list[dict]:
    keys = {**modern.model_keys(model, config.width), **_tasks(config)[task]}
    return [{**keys, "seed": s} for s in range(config.seeds)]


def compute(config, workdir) -> dict:
    """Trains every (model, task, seed) through the engine, then evaluates each induction-heads run at
    ``extrapolation`` times its training length. Returns the runs, the final test accuracies by task and model
    (one per seed), and the extrapolated ones by model and factor."""
    modern.check_models(config.models)
    entries = [e for m in config.models for t in TASKS for e in _entries(config, m, t)]
    runs = modern.train(config, workdir, entries)
    name = config_lib.run_name
    accuracy = {
        t: {m: [modern.accuracy(runs[name(e)]) for e in _entries(config, m, t)] for m in config.models} for t in TASKS
    }
    longer = {}
    for m in config.models:
        longer[m] = {}
        for factor in config.extrapolation:
            task = {"name": "induction_heads", "length": factor * config.induction_length, "classes": config.classes}
            longer[m][str(factor)] = modern.evaluate_at(
                config, workdir, _entries(config, m, "induction_heads"), task, config.extrapolation_batch_size
            )
    return {"runs": runs, "accuracy": accuracy, "extrapolation": longer}


def plot(results, config, report) -> None:
    acc, n = results["accuracy"], config.seeds
    fig, (left, right) = plt_figure(2, width=6.5)
    models = list(config.models)
    for j, t in enumerate(TASKS):
        for i, m in enumerate(models):
            x = i + (j - 0.5) * 0.36
            values = np.asarray(acc[t][m])
            left.bar(
                x, np.median(values), 0.34, color=f"C{j}", alpha=0.5, label=t.replace("_", " ") if i == 0 else None
            )
            left.plot(np.full(n, x), values, "k.", ms=4)
    chance = 1 / config.classes
    left.axhline(chance, color="0.5", ls=":", label=f"chance (1/{config.classes})")
    left.set_xticks(
        range(len(models)),
        [modern.display(m).replace(" (", "\n(").replace(", ", ",\n") for m in models],
        rotation=0,
        fontsize=8,
    )
    left.set(
        ylabel=f"test accuracy (bars: median of {n} seeds,\ndots: seeds)",
        ylim=(0, 1.02),
        title=f"at the training length (T = {config.copy_length} + {config.copy_count}; {config.induction_length})",
    )
    left.legend(loc="upper left", fontsize=9)
    lengths = [config.induction_length] + [f * config.induction_length for f in config.extrapolation]
    for i, m in enumerate(models):
        counts = [modern.solved(acc["induction_heads"][m], config)]
        counts += [modern.solved(results["extrapolation"][m][str(f)], config) for f in config.extrapolation]
        ls = "--" if modern.time_invariant(m) else "-"
        x = np.asarray(lengths, float) * (1 + 0.04 * (i - (len(models) - 1) / 2))  # dodged
        modern.rate_bars(right, x, counts, n, modern.display(m), ls=ls)
    right.set_xscale("log")
    right.set(
        xlabel="test length T (trained at the first)",
        ylim=(-0.05, 1.05),
        title="induction heads: extrapolation",
        ylabel=f"fraction of {n} seeds with accuracy >= {config.success_accuracy:g}",
    )
    right.legend(fontsize=8, loc="center left")
    right.grid(True, alpha=0.3)
    report.figure(
        fig,
        "selectivity",
        f"Left: final test accuracy on selective copying ({config.copy_count} tokens of {config.classes} kinds among "
        f"{config.copy_length} noise tokens) and induction heads (T = {config.induction_length}, {config.classes} "
        f"kinds), {n} seeds each; right: induction heads at the training length and at "
        f"{', '.join(f'{f}x' for f in config.extrapolation)}, fraction of seeds solved with 95% Wilson intervals "
        f"(dashed: time-invariant). {config.num_layers} blocks of width {config.width}, {config.steps} Adam steps of "
        f"{config.batch_size}.",
    )
    header = ["model", *[f"{t} (median, solved)" for t in TASKS], *[f"induction {f}x" for f in config.extrapolation]]
    rows = []
    for m in models:
        row = [modern.display(m)]
        row += [f"{np.median(acc[t][m]):.3f}, {modern.solved(acc[t][m], config)}/{n}" for t in TASKS]
        row += [f"{np.median(results['extrapolation'][m][str(f)]):.3f}" for f in config.extrapolation]
        rows.append(row)
    report.text(f"Test accuracy (median of {n} seeds) and seeds solved (accuracy >= {config.success_accuracy:g}):")
    report.table(header, rows)


def claims(results, config, report) -> None:
    acc, n = results["accuracy"], config.seeds
    invariant = [m for m in config.models if modern.time_invariant(m)]
    selective = [m for m in config.models if not modern.time_invariant(m)]
    copying = acc["selective_copying"]
    if invariant and selective:
        best_invariant = [max(copying[m][s] for m in invariant) for s in range(n)]
        outcomes = [copying[m][s] > best_invariant[s] for m in selective for s in range(n)]
        claim_over_seeds(
            report,
            "Selective copying: every input-dependent recurrence beats the best time-invariant "
            "one of the same seed (Gu & Dao 2023, Table 1)",
            outcomes,
            ", ".join(f"{m} {np.median(copying[m]):.2f}" for m in config.models) + " (median accuracy)",
            unit="(model, seed) pairs",
        )
    for m in config.models:
        for t in TASKS:
            report.headline[f"{t}_{m}_median_accuracy"] = float(np.median(acc[t][m]))
        for f in config.extrapolation:
            report.headline[f"induction_{f}x_{m}_median_accuracy"] = float(
                np.median(results["extrapolation"][m][str(f)])
            )
    if "mamba" in config.models:
        k = modern.solved(acc["induction_heads"]["mamba"], config)
        report.claim(
            "The selective SSM (Mamba's block) solves induction heads at the training length on most seeds "
            "(Gu & Dao 2023, Table 2)",
            wilson(k, n)[0] > 0.5,
            rate_text(k, n),
        )
        for f in config.extrapolation:
            k = modern.solved(results["extrapolation"]["mamba"][str(f)], config)
            report.claim(
                f"... and at {f}x its training length (Gu & Dao: to 4000x)", wilson(k, n)[0] > 0.5, rate_text(k, n)
            )
    for m in invariant:
        k = modern.solved(acc["induction_heads"][m], config)
        report.claim(
            f"A time-invariant recurrence ({modern.display(m)}) does not solve induction heads on most seeds",
            wilson(k, n)[1] < 0.5,
            rate_text(k, n),
        )
