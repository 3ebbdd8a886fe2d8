"""What the modern chapter's studies share (12 selectivity, 13 recall and state size, 14 state tracking): the models,
each cell inside its paper's block as engine block configs; training every (model, setting, seed) through the
experiments engine (one resumable workdir per run, the seeds of a setting as one program); and evaluating the trained
parameters on the task at other lengths (extrapolation), from each run's ``final.npz``."""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from .. import config as config_lib
from .. import engine
from .. import tasks as tasks_lib
from .. import train as train_lib
from .base import wilson

# Each cell in its paper's block (engine keys of ``model.architecture = "blocks"``), at the study's width D: residual
# pre-norm blocks, but the classic RNNs', which are Zaremba et al.'s plain stacks. ``hidden`` is the cell's width
# over D (the SSM's and mLSTM's blocks expand by 2); "time_invariant" marks the recurrences whose coefficients do not
# depend on the input.
MODELS = {
    "rnn": {
        "model.mixer": "cell",
        "model.cell": "rnn",
        "model.mlp": "none",
        "model.norm": "none",
        "model.residual": False,
    },
    "lstm": {
        "model.mixer": "cell",
        "model.cell": "lstm",
        "model.mlp": "none",
        "model.norm": "none",
        "model.residual": False,
    },
    "slstm": {
        "model.mixer": "slstm",
        "model.cell": "slstm",
        "model.mlp": "geglu",
        "model.mlp_expansion": 4 / 3,
        "model.norm": "layernorm",
        "model.residual": True,
        "model.heads": 2,
    },
    "mingru": {
        "model.mixer": "cell",
        "model.cell": "mingru",
        "model.mlp": "mlp",
        "model.norm": "layernorm",
        "model.residual": True,
    },
    "lru": {
        "model.mixer": "cell",
        "model.cell": "lru",
        "model.mlp": "glu",
        "model.mlp_expansion": 2.0,
        "model.norm": "layernorm",
        "model.residual": True,
    },
    "hawk": {
        "model.mixer": "griffin",
        "model.cell": "rglru",
        "model.mlp": "geglu",
        "model.mlp_expansion": 3.0,
        "model.norm": "rmsnorm",
        "model.residual": True,
    },
    "mamba": {
        "model.mixer": "mamba",
        "model.cell": "ssm",
        "model.mlp": "none",
        "model.norm": "rmsnorm",
        "model.residual": True,
        "model.options.state_size": 16,
    },
    "s4d": {
        "model.mixer": "mamba",
        "model.cell": "ssm",
        "model.mlp": "none",
        "model.norm": "rmsnorm",
        "model.residual": True,
        "model.options.state_size": 16,
        "model.options.selective": False,
    },
    "mlstm": {
        "model.mixer": "mlstm",
        "model.cell": "mlstm",
        "model.mlp": "none",
        "model.norm": "layernorm",
        "model.residual": True,
        "model.options.num_heads": 2,
        "model.options.output_gate": False,
    },
}
EXPANDED = ("mamba", "s4d", "mlstm")  # blocks whose cell has twice the model's width
TIME_INVARIANT = ("lru", "s4d")
NEGATIVE = "_negative"  # a model name's suffix: the cell with eigenvalues in [-1, 1] (Grazzi et al. 2025)
HAS_NEGATIVE = ("mingru", "hawk", "mamba")

DISPLAY = {
    "rnn": "tanh RNN",
    "lstm": "LSTM",
    "slstm": "sLSTM",
    "mingru": "minGRU",
    "lru": "LRU",
    "hawk": "Hawk (RG-LRU)",
    "mamba": "Mamba (selective SSM)",
    "s4d": "time-invariant SSM (Mamba block)",
    "mlstm": "mLSTM",
}


def display(name: str) -> str:
    base = name.removesuffix(NEGATIVE)
    return DISPLAY.get(base, base) + (", eigenvalues in [-1, 1]" if name.endswith(NEGATIVE) else "")


def check_models(names, key: str = "models") -> None:
    for name in names:
        base = name.removesuffix(NEGATIVE)
        if base not in MODELS or (name.endswith(NEGATIVE) and base not in HAS_NEGATIVE):
            valid = (*MODELS, *(m + NEGATIVE for m in HAS_NEGATIVE))
            raise ValueError(f"config.{key}: expected entries of {valid}, got {name!r}")


def model_keys(name: str, width: int, **options) -> dict:
    """The engine keys of model ``name`` at width ``width`` (``options``: more cell options)."""
    base = name.removesuffix(NEGATIVE)
    hidden = 2 * width if base in EXPANDED else width
    keys = {"model.architecture": "blocks", **MODELS[base], "model.width": width, "model.hidden_size": hidden}
    if name.endswith(NEGATIVE):
        keys["model.options.eigenvalues"] = "[-1, 1]"
    return {**keys, **{f"model.options.{k}": v for k, v in options.items()}}


def base_config(config):
    """The engine config every run of a study starts from: ``num_layers``, Adam with a warm-up and a cosine decay,
    ``steps`` of ``batch_size``, one test evaluation at the end."""
    c = config_lib.base_config()
    c.model.num_layers = config.num_layers
    c.optimizer.update(learning_rate=config.learning_rate, schedule="warmup_cosine", warmup_steps=config.warmup_steps)
    c.train.update(
        steps=config.steps,
        batch_size=config.batch_size,
        log_every=max(config.steps // 20, 1),
        eval_every=0,
        eval_batch_size=config.eval_batch_size,
        checkpoint_every=config.steps,
    )
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
    template = model.init(jax.random.key(0), specs[0].task.input_size)
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
