"""What the modern chapter's studies share (12 selectivity, 13 recall and state size, 14 state tracking): the models,
each cell inside its paper's block as engine block configs; training every (model, setting, seed) through the
experiments engine (one resumable workdir per run, the seeds of a setting as one program); and evaluating the trained
parameters on the task at other lengths (extrapolation), from each run's ``final.npz``."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from gated import cells, forms

from .. import config as config_lib
from .. import engine, make_configs_importable
from .. import tasks as tasks_lib
from .. import train as train_lib
from .base import engine_config, wilson

NEGATIVE = "_negative"  # a model name's suffix: the cell with eigenvalues in [-1, 1] (Grazzi et al. 2025)


@functools.cache
def tables():
    """The studies' model tables, data only: ``configs/studies/_models.py`` (each cell in its paper's block, the
    labels)."""
    make_configs_importable()
    return importlib.import_module("configs.studies._models")


def label(name: str) -> str:
    """What a figure or report prints for a cell, block or stack ``name`` (itself where the tables have none)."""
    return tables().LABELS.get(name, name)


@functools.cache
def cell_of(name: str):
    """The cell of model ``name`` with its block's options (at a small width): what the study asks of its form."""
    keys = model_keys(name, 4)
    options = {k.removeprefix("model.options."): v for k, v in keys.items() if k.startswith("model.options.")}
    return cells.get(keys["model.cell"], keys["model.hidden_size"], **options)


def time_invariant(name: str) -> bool:
    """Whether model ``name``'s recurrence has no input-dependent decay (its cell's ``time_invariant``)."""
    cell = cell_of(name)
    return isinstance(cell, forms.Diagonal) and cell.time_invariant


def nonlinear(name: str) -> bool:
    """Whether model ``name``'s cell is a nonlinear recurrence (:class:`gated.forms.Nonlinear`)."""
    return isinstance(cell_of(name), forms.Nonlinear)


def has_negative(base: str) -> bool:
    """Whether model ``base``'s cell has the ``eigenvalues`` option (``"[-1, 1]"``: the ``_negative`` models)."""
    cell = cells.CELLS[tables().BLOCKS[base]["model.cell"]]
    return "eigenvalues" in {f.name for f in dataclasses.fields(cell)}


def display(name: str) -> str:
    return label(name.removesuffix(NEGATIVE)) + (", eigenvalues in [-1, 1]" if name.endswith(NEGATIVE) else "")


def check_models(names, key: str = "models") -> None:
    for name in names:
        base = name.removesuffix(NEGATIVE)
        blocks = tables().BLOCKS
        if base not in blocks or (name.endswith(NEGATIVE) and not has_negative(base)):
            valid = (*blocks, *(m + NEGATIVE for m in blocks if has_negative(m)))
            raise ValueError(f"config.{key}: expected entries of {valid}, got {name!r}")


def model_keys(name: str, width: int, **options) -> dict:
    """The engine keys of model ``name`` at width ``width`` (``options``: more cell options)."""
    base = name.removesuffix(NEGATIVE)
    hidden = 2 * width if base in tables().EXPANDED else width
    keys = {"model.architecture": "blocks", **tables().BLOCKS[base], "model.width": width, "model.hidden_size": hidden}
    if name.endswith(NEGATIVE):
        keys["model.options.eigenvalues"] = "[-1, 1]"
    return {**keys, **{f"model.options.{k}": v for k, v in options.items()}}


def base_config(config):
    """The engine config every run of a study starts from: ``num_layers``, Adam with a warm-up and a cosine decay,
    ``steps`` of ``batch_size``, one test evaluation at the end."""
    c = engine_config(config, eval_every=0, eval_batch_size=config.eval_batch_size)
    c.model.num_layers = config.num_layers
    return c


def train(config, workdir: pathlib.Path, entries: list[dict]) -> dict[str, dict]:
    """Every entry through the engine into ``workdir/training`` (resumable): ``{run name: status, final test metrics
    and chance}``."""
    results = engine.train_and_evaluate(base_config(config), workdir / "training", entries)
    return {
        n: {k: r[k] for k in ("status", "final", "chance_loss", "chance_accuracy") if k in r}
        for n, r in results.items()
    }


def accuracy(run: dict) -> float:
    """A run's final test accuracy; a diverged run's is 0 (it failed)."""
    return float(run["final"]["accuracy"]) if run["status"] == "finished" else 0.0


def evaluate_at(config, workdir: pathlib.Path, entries: list[dict], task: dict, batch_size: int) -> list[float]:
    """The test accuracy of each trained run of ``entries`` (runs of one model, differing only in their seed) on the
    task ``task`` (its name and options, e.g. a longer length), ``batch_size`` fresh test sequences drawn from key
    ``seed + 10_000``; all runs as one vmapped program."""
    base = base_config(config)
    specs = [config_lib.validate(config_lib.override(config_lib.complete(base), e)) for e in entries]
    model = specs[0].model
    template = model.init(jax.random.key(0))
    stacked = []
    for e in entries:
        with np.load(workdir / "training" / "runs" / config_lib.run_name(e) / "final.npz") as arrays:
            leaves = [arrays[jax.tree_util.keystr(p)] for p, _ in jax.tree_util.tree_leaves_with_path(template)]
        stacked.append(jax.tree.unflatten(jax.tree.structure(template), leaves))
    params = jax.tree.map(lambda *a: jnp.stack(a), *stacked)
    name = task["name"]
    other = tasks_lib.get(name, **{k: v for k, v in task.items() if k != "name"})
    keys = jnp.stack([jax.random.key(e["seed"] + 10_000) for e in entries])
    return [float(a) for a in _evaluation(model, other, batch_size)(params, keys)]


@functools.cache
def _evaluation(model, task, batch_size):
    def one(params, key):
        batch = task.sample(key, batch_size, "test")
        return train_lib.loss_and_metrics(model, task.kind, params, batch)[1]["accuracy"]

    return jax.jit(jax.vmap(one))


def solved(accuracies, config) -> int:
    """Seeds whose accuracy reaches ``config.success_accuracy``."""
    return sum(a >= config.success_accuracy for a in accuracies)


def rate_bars(ax, xs, counts, n, label, **style):
    """Fraction of ``n`` seeds against ``xs`` with 95% Wilson intervals."""
    rate = np.asarray(counts, float) / n
    low, high = np.asarray([wilson(int(c), n) for c in counts]).T
    style = {"ls": "-", **style}
    return ax.errorbar(xs, rate, yerr=[rate - low, high - rate], fmt="o", capsize=4, lw=1.5, label=label, **style)
