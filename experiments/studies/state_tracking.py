"""Study 14 (Merrill, Petty & Sabharwal 2024; Grazzi et al. 2025): state tracking. Parity and addition mod m, the
label at every step the running sum so far, trained at one length and tested at 2x to 8x, for nonlinear recurrences
(the tanh RNN, the LSTM, the sLSTM) and linear ones (the minGRU, the selective SSM, the LRU, the mLSTM), each linear
cell that has the option with eigenvalues in [0, 1] and in [-1, 1]."""

from __future__ import annotations

import numpy as np

from .. import config as config_lib
from . import modern
from .base import claim_over_seeds, plt_grid

TITLE = "14. State tracking: parity and modular addition"


def _task(config, name: str, length: int) -> dict:
    task = {"name": name, "length": length}
    return {**task, "modulus": config.modulus} if name == "modular_addition" else task


def _entries(config, model: str, task: str) -> list[dict]:
    options = {"state_size": config.ssm_state_size} if model.removesuffix(modern.NEGATIVE) == "mamba" else {}
    keys = {
        **modern.model_keys(model, config.width, **options),
        **{f"task.{k}": v for k, v in _task(config, task, config.length).items()},
    }
    return [{**keys, "seed": s} for s in range(config.seeds)]


def compute(config, workdir) -> dict:
    """Trains every (model, task, seed) through the engine at ``length``, then evaluates each run at ``test_factors``
    times it. Returns the runs and, per task, model and length factor (1 the training length), the test accuracy
    over every step (one per seed)."""
    modern.check_models(config.models)
    for t in config.tasks:
        if t not in ("parity", "modular_addition"):
            raise ValueError(f"config.tasks: expected entries of ('parity', 'modular_addition'), got {t!r}")
    entries = [e for m in config.models for t in config.tasks for e in _entries(config, m, t)]
    runs = modern.train(config, workdir, entries)
    accuracy = {}
    for t in config.tasks:
        accuracy[t] = {}
        for m in config.models:
            trained = _entries(config, m, t)
            accuracy[t][m] = {"1": [modern.accuracy(runs[config_lib.run_name(e)]) for e in trained]}
            for f in config.test_factors:
                task = _task(config, t, f * config.length)
                accuracy[t][m][str(f)] = modern.evaluate_at(config, workdir, trained, task, config.eval_batch_size)
    return {"runs": runs, "accuracy": accuracy}


def plot(results, config, report) -> None:
    acc, n = results["accuracy"], config.seeds
    factors = [1, *config.test_factors]
    lengths = [f * config.length for f in factors]
    fig, grid = plt_grid(1, len(config.tasks), width=6.5)
    for ax, t in zip(grid[0], config.tasks, strict=True):
        for i, m in enumerate(config.models):
            counts = [modern.solved(acc[t][m][str(f)], config) for f in factors]
            style = {"ls": "--" if m.endswith(modern.NEGATIVE) else ("-" if modern.nonlinear(m) else ":")}
            base = m.removesuffix(modern.NEGATIVE)
            color = f"C{[b.removesuffix(modern.NEGATIVE) for b in config.models].index(base) % 10}"
            x = np.asarray(lengths, float) * (1 + 0.03 * (i - len(config.models) / 2))
            modern.rate_bars(ax, x, counts, n, modern.display(m), color=color, **style)
        name = "parity" if t == "parity" else f"addition mod {config.modulus}"
        ax.set_xscale("log")
        ax.set_xticks(lengths, [str(x) for x in lengths])
        ax.set_xticks([], minor=True)
        ylabel = f"fraction of {n} seeds with accuracy\nover every step >= {config.success_accuracy:g}"
        ax.set(xlabel=f"test length (trained at T = {config.length})", ylim=(-0.05, 1.05), title=name, ylabel=ylabel)
        ax.grid(True, alpha=0.3)
    grid[0][-1].legend(fontsize=8, loc="center right")
    report.figure(
        fig,
        "state_tracking",
        f"Fraction of {n} seeds that track the running sum (accuracy over every step at least "
        f"{config.success_accuracy:g}) at the training length and at "
        f"{', '.join(f'{f}x' for f in config.test_factors)}, with 95% Wilson intervals. Solid: nonlinear recurrences; "
        "dotted: linear ones with eigenvalues in [0, 1]; "
        f"dashed: the same cells with eigenvalues in [-1, 1]. {config.num_layers} block(s) of width {config.width}, "
        f"{config.steps} Adam steps of {config.batch_size}.",
    )
    header = ["model", *[f"{t} {f}x" for t in config.tasks for f in factors]]
    rows = [
        [
            modern.display(m),
            *[
                f"{np.median(acc[t][m][str(f)]):.3f} ({modern.solved(acc[t][m][str(f)], config)}/{n})"
                for t in config.tasks
                for f in factors
            ],
        ]
        for m in config.models
    ]
    report.text(f"Test accuracy over every step, median of {n} seeds (seeds solved):")
    report.table(header, rows)


def claims(results, config, report) -> None:
    acc, n = results["accuracy"], config.seeds
    for t in config.tasks:
        for m in config.models:
            for f in [1, *config.test_factors]:
                report.headline[f"{t}_{m}_{f}x_solved"] = f"{modern.solved(acc[t][m][str(f)], config)}/{n}"
    if "parity" not in config.tasks:
        return
    parity = acc["parity"]
    solved = lambda m: [a >= config.success_accuracy for a in parity[m]["1"]]
    groups = {
        "nonlinear": [m for m in config.models if modern.nonlinear(m)],
        "negative": [m for m in config.models if m.endswith(modern.NEGATIVE)],
        "positive": [m for m in config.models if not modern.nonlinear(m) and not m.endswith(modern.NEGATIVE)],
    }
    detail = lambda ms: ", ".join(f"{m} {sum(solved(m))}/{n}" for m in ms)
    if groups["nonlinear"]:
        claim_over_seeds(
            report,
            "The nonlinear recurrences solve parity at the training length (Merrill et al. 2024)",
            [o for m in groups["nonlinear"] for o in solved(m)],
            detail(groups["nonlinear"]),
            unit="(model, seed) pairs",
        )
    negative, positive = groups["negative"], groups["positive"]
    if negative:
        claim_over_seeds(
            report,
            "The linear recurrences with eigenvalues in [-1, 1] solve parity at the training "
            "length (Grazzi et al. 2025)",
            [o for m in negative for o in solved(m)],
            detail(negative),
            unit="(model, seed) pairs",
        )
    if positive:
        outcomes = [not o for m in positive for o in solved(m)]
        claim_over_seeds(
            report,
            "The linear recurrences with eigenvalues in [0, 1] do not solve parity at the "
            "training length (Grazzi et al. 2025, Theorem 1)",
            outcomes,
            detail(positive),
            unit="(model, seed) pairs",
        )
