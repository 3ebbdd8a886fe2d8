"""Study 8 (Hochreiter & Schmidhuber 1997; Feng et al. 2024; De et al. 2024; Orvieto et al. 2023): success rate
against sequence length, over seeds with Wilson intervals, for the classic cells (tanh RNN, LSTM, GRU) and the gated
linear recurrences (minGRU, RG-LRU, LRU), the linear ones on to long T; and the LSTM variants. Every run goes through
the experiments engine (one workdir per run, resumable)."""

from __future__ import annotations

import dataclasses

import numpy as np

from gated import cells, forms

from .. import config as config_lib
from .. import engine
from .base import engine_config, plt_grid, rate_text, wilson
from .modern import label, tables

TITLE = "8. Long lags: success rate against sequence length"
TASKS = ("adding", "temporal_order")
MOST = 0.5  # "most seeds": the interval's lower end above one half; "does not": its upper end below


def _base(config):
    c = engine_config(config)
    c.model.hidden_size = config.hidden_size
    return c


def _cell(name: str, config) -> cells.Cell:
    return cells.get(name, config.hidden_size)


def gated_nonlinear(name: str, config) -> bool:
    """A nonlinear cell with gates (the LSTM's, the GRU's): more blocks than its candidate's."""
    cell = _cell(name, config)
    return isinstance(cell, forms.Nonlinear) and len(cell.gates) > 1


def ungated_nonlinear(name: str, config) -> bool:
    """A nonlinear cell without gates (the tanh RNN): one block, its candidate."""
    cell = _cell(name, config)
    return isinstance(cell, forms.Nonlinear) and len(cell.gates) == 1


def linear(name: str) -> bool:
    """A gated linear recurrence (:class:`gated.forms.Diagonal`): the figure's right-hand family."""
    return issubclass(cells.CELLS[name], forms.Diagonal)


def input_gated(name: str, config) -> bool:
    """A linear recurrence whose decay reads the input (minGRU, RG-LRU, mLSTM), not a time-invariant one (LRU)."""
    return linear(name) and not _cell(name, config).time_invariant


def stacks(config) -> tuple[str, ...]:
    """The config's stacks; none in a study computed before they were added (its stored config has no key)."""
    return tuple(config.get("stacks", ()))


def lengths(config) -> dict[tuple[str, str], tuple[int, ...]]:
    """The lengths each (task, cell) runs at: the task's lengths, and for ``long_cells`` on the adding problem
    the ``long_lengths`` after them."""
    out = {}
    for t in config.tasks:
        for cell in config.cells:
            base = tuple(config.adding_lengths if t == "adding" else config.temporal_order_lengths)
            extra = tuple(config.long_lengths) if t == "adding" and cell in config.long_cells else ()
            out[(t, cell)] = base + tuple(x for x in extra if x not in base)
        if t == "adding":  # the stacks: on the adding problem, at stack_lengths
            out.update({(t, stack): tuple(config.stack_lengths) for stack in stacks(config)})
    return out


def success(config, result: dict) -> bool:
    """Regression: test MSE below ``success_mse_fraction`` of chance; classification: test accuracy at least
    ``success_accuracy``. A diverged run fails."""
    if result["status"] != "finished":
        return False
    if "accuracy" in result["final"]:
        return result["final"]["accuracy"] >= config.success_accuracy
    return result["final"]["loss"] < config.success_mse_fraction * result["chance_loss"]


def _entry(cell, t, length, seed, **options):
    return {"model.cell": cell, "task.name": t, "task.length": length, **options, "seed": seed}


def _run(config, cell, t, length, seed):
    """The engine entry of one run; a cell of ``chrono_cells`` gets the chrono initialisation for T_max = T; a stack
    of ``configs/studies/_models.py``'s ``STACKS`` its model keys at width ``hidden_size``."""
    if cell in tables().STACKS:
        keys = {**tables().STACKS[cell], "model.width": config.hidden_size}
        return {**keys, "task.name": t, "task.length": length, "seed": seed}
    options = {"model.options.chrono_init": length} if cell in config.chrono_cells else {}
    return _entry(cell, t, length, seed, **options)


def compute(config, workdir) -> dict:
    """Every (task, length, cell, seed) run and every LSTM variant, through the experiments engine into
    ``workdir/training`` (resumable); returns each run's status and final test metrics by run name."""
    for t in (*config.tasks, config.variant_task):
        if t not in TASKS:
            raise ValueError(f"config.tasks: expected entries of {TASKS}, got {t!r}")
    variants = tables().LSTM_VARIANTS
    for v in config.variants:
        if v not in variants["options"]:
            raise ValueError(f"config.variants: expected entries of {sorted(variants['options'])}, got {v!r}")
    for c in config.long_cells:
        if c not in config.cells:
            raise ValueError(f"config.long_cells: expected entries of config.cells {tuple(config.cells)}, got {c!r}")
    for c in config.stacks:
        if c not in tables().STACKS:
            raise ValueError(f"config.stacks: expected entries of {tuple(tables().STACKS)}, got {c!r}")
    chrono = tuple(n for n, cls in cells.CELLS.items() if "chrono_init" in {f.name for f in dataclasses.fields(cls)})
    for c in config.chrono_cells:
        if c not in chrono:
            raise ValueError(f"config.chrono_cells: expected cells with a chrono_init option {chrono}, got {c!r}")
    sweep = [
        _run(config, cell, t, length, s)
        for (t, cell), ts in lengths(config).items()
        for length in ts
        for s in range(config.seeds)
    ]
    variant_runs = {
        v: [
            _entry(variants["cell"], config.variant_task, config.variant_length, s, **variants["options"][v])
            for s in range(config.seeds)
        ]
        for v in config.variants
    }
    all_entries = sweep + [e for entries in variant_runs.values() for e in entries if e not in sweep]
    results = engine.train_and_evaluate(_base(config), workdir / "training", all_entries)
    keep = ("status", "final", "chance_loss")
    return {
        "runs": {n: {k: r[k] for k in keep} for n, r in results.items()},
        "variants": {v: [config_lib.run_name(e) for e in entries] for v, entries in variant_runs.items()},
    }


def _counts(results, config) -> dict[tuple[str, str], list[int]]:
    """Seeds that succeed per (task, cell), one count per length of :func:`lengths`."""
    runs = results["runs"]
    return {
        key: [
            sum(
                success(config, runs[config_lib.run_name(_run(config, key[1], key[0], length, s))])
                for s in range(config.seeds)
            )
            for length in ts
        ]
        for key, ts in lengths(config).items()
    }


def plot(results, config, report) -> None:
    counts, ts, n = _counts(results, config), lengths(config), config.seeds
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    linear_family = [c for c in config.cells if linear(c)] + list(stacks(config))
    classic = [c for c in config.cells if not linear(c)]
    families = [("classic cells", classic), ("gated linear recurrences", linear_family)]
    families = [(name, members) for name, members in families if members]
    fig, grid = plt_grid(len(config.tasks), len(families))
    for row, t in zip(grid, config.tasks, strict=True):
        criterion = (
            f"test MSE < {config.success_mse_fraction:g} x chance"
            if t == "adding"
            else f"test accuracy >= {config.success_accuracy:g}"
        )
        for ax, (family, members) in zip(row, families, strict=True):
            members = [c for c in members if (t, c) in ts]  # the stacks run the adding problem only
            for k, cell in enumerate(members):
                x = np.asarray(ts[(t, cell)], float) * (1.0 + 0.04 * (k - (len(members) - 1) / 2))  # dodge the bars
                rate = np.asarray(counts[(t, cell)]) / n
                low, high = np.asarray([wilson(c, n) for c in counts[(t, cell)]]).T
                name = label(cell) + (" (chrono init)" if cell in config.chrono_cells else "")
                ax.errorbar(x, rate, yerr=[rate - low, high - rate], fmt="o-", capsize=4, lw=1.5, label=name)
            ticks = sorted({x for c in members for x in ts[(t, c)]})
            ax.set_xscale("log")
            ax.set_xticks(ticks)
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set(
                xlabel="sequence length T (steps)",
                ylabel=f"fraction of {n} seeds solved\n({criterion})",
                title=f"{t.replace('_', ' ')}: {family}",
                ylim=(-0.05, 1.05),
            )
            ax.legend(loc="lower left")
            ax.grid(True, alpha=0.3)
    report.figure(
        fig,
        "long_lags",
        f"Fraction of {n} seeds that solve each task against its length, with 95% Wilson intervals (H = "
        f"{config.hidden_size}, {config.steps} Adam steps, peak lr {config.learning_rate:g} with {config.warmup_steps} "
        "warm-up steps and a cosine decay, clip_by_global_norm(1)). Left: the classic cells; right: the gated linear "
        "recurrences. Chrono init: the gate biases of Tallec & Ollivier 2018 for T_max = T. Each run's loss curve and "
        "result are in training/runs/.",
    )
    all_lengths = sorted({x for v in ts.values() for x in v})
    header = ["task", "cell", *[f"T = {length}" for length in all_lengths]]
    rows = []
    for (t, cell), cs in counts.items():
        by_length = dict(zip(ts[(t, cell)], cs, strict=True))
        rows.append([t, cell, *[f"{by_length[x]}/{n}" if x in by_length else "-" for x in all_lengths]])
    report.text(f"Seeds (of {n}) that solve each task:")
    report.table(header, rows)
    variant_rows = []
    for v, names in results["variants"].items():
        runs = [results["runs"][name] for name in names]
        metric = [r["final"].get("accuracy", r["final"]["loss"]) for r in runs]
        solved = sum(success(config, r) for r in runs)
        variant_rows.append([v, rate_text(solved, len(runs)), float(np.median(metric))])
    if variant_rows:
        metric_name = "accuracy" if config.variant_task == "temporal_order" else "MSE"
        report.text(f"LSTM variants on {config.variant_task}, T = {config.variant_length}, {n} seeds:")
        report.table(["variant", "solved", f"median test {metric_name}"], variant_rows)


def claims(results, config, report) -> None:
    counts, ts, n = _counts(results, config), lengths(config), config.seeds
    at = lambda t, cell, length: counts[(t, cell)][ts[(t, cell)].index(length)]
    for t in config.tasks:
        common = sorted(set.intersection(*(set(ts[(t, c)]) for c in config.cells)))
        length = 100 if 100 in common else common[-1]
        for cell in [c for c in config.cells if gated_nonlinear(c, config)]:
            k = at(t, cell, length)
            report.claim(
                f"The {cell.upper()} solves {t} at T = {length} on most seeds",
                wilson(k, n)[0] > MOST,
                rate_text(k, n),
            )
        for cell in [c for c in config.cells if ungated_nonlinear(c, config)]:
            k = at(t, cell, length)
            report.claim(
                f"The {label(cell)} does not solve {t} at T = {length} on most seeds",
                wilson(k, n)[1] < MOST,
                rate_text(k, n),
            )
        for cell in [*config.cells, *(stacks(config) if t == "adding" else ())]:
            for x, k in zip(ts[(t, cell)], counts[(t, cell)], strict=True):
                report.headline[f"{t}_T{x}_{cell}_solved"] = f"{k}/{n}"
    for cell in config.long_cells:
        if "adding" in config.tasks and input_gated(cell, config):
            longest = ts[("adding", cell)][-1]
            k = at("adding", cell, longest)
            report.claim(
                f"The input-gated linear recurrence {cell} solves adding at T = {longest} on most seeds",
                wilson(k, n)[0] > MOST,
                rate_text(k, n),
            )
    for stack in stacks(config) if "adding" in config.tasks else ():
        # Feng et al. 2024 (section 4) and De et al. 2024 stack their recurrences with MLPs: the stack solves the
        # adding problem where the lone layer fails. Judged at the longest adding length the single minGRU ran.
        longest = ts[("adding", stack)][-1]
        k = at("adding", stack, longest)
        single = tables().STACKS[stack]["model.cell"]
        alone = f"; the lone {single}: {at('adding', single, longest)}/{n}" if single in config.cells else ""
        report.claim(
            f"The stack {label(stack)} (width {config.hidden_size}) solves adding at T = {longest} on most seeds",
            wilson(k, n)[0] > MOST,
            rate_text(k, n) + alone,
        )
    invariant = [c for c in config.cells if linear(c) and not input_gated(c, config)]
    for cell in invariant if "adding" in config.tasks else ():
        ks = counts[("adding", cell)]
        report.claim(
            f"The {label(cell)}, linear and time-invariant (no input-dependent gate), does not solve the adding "
            "problem at any length on most seeds: the product of marker and value is not a linear function of the "
            "inputs",
            all(wilson(k, n)[1] < MOST for k in ks),
            ", ".join(f"T = {x}: {k}/{n}" for x, k in zip(ts[("adding", cell)], ks, strict=True)),
        )
