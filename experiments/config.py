"""A run's config: the schema every config is checked against, validation into the run's objects, overrides
and sweeps, and loading config files.

The cell options are not written out anywhere: :data:`CELL_OPTIONS` comes from the cells' own fields, a config
gives only the options it sets (``model.options``), and :func:`complete` adds the others unset (None: the cell's
default) before a config is bound to a workdir or takes command-line overrides.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import pathlib
from typing import Any, NamedTuple

import ml_collections
from ml_collections import config_dict

import gated

from . import make_configs_importable
from . import tasks as tasks_lib
from . import train as train_lib

VMAPPABLE = ("seed", "optimizer.learning_rate", "optimizer.clip_threshold", "model.options.forget_bias",
             "model.options.recurrent_scale")  # fmt: skip

# Every option of every cell with its type, from the cells' own fields; unset (None) in a config: the cell's
# default. Setting one the chosen cell lacks is refused.
CELL_OPTIONS = gated.cells.option_types()


def base_config() -> ml_collections.ConfigDict:
    """Every known key with its default, every cell option unset: the schema a config is checked against
    (:func:`configs.base.get_config`, :func:`complete`)."""
    make_configs_importable()
    from configs import base

    return complete(base.get_config())


class RunSpec(NamedTuple):
    """What a validated config builds: the objects of one run."""

    cell: Any
    model: gated.models.Model
    task: tasks_lib.Task
    optimizer: train_lib.OptimizerSpec
    learning_rate: float
    clip_threshold: float


class ConfigError(ValueError):
    """A config that can't run; the message names the key, what it got and what was expected."""


def _check_keys(section: Any, schema: Any, path: str, partial: bool = False) -> None:
    unknown = sorted(set(section.keys()) - set(schema.keys()))
    if unknown:
        raise ConfigError(f"config.{path}{unknown[0]}: unknown key; valid keys here are {sorted(schema.keys())}")
    missing = [] if partial else sorted(set(schema.keys()) - set(section.keys()))
    if missing:
        raise ConfigError(f"config.{path}{missing[0]}: missing; every config gives {sorted(schema.keys())}")


def require(condition: bool, key: str, expected: str, got: Any) -> None:
    """Raises :class:`ConfigError` ``config.KEY: expected EXPECTED, got GOT`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"config.{key}: expected {expected}, got {got!r}")


def is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_number(value: Any, minimum: float, strict: bool = True, maximum: float = math.inf) -> bool:
    """A finite real number above ``minimum`` (or at it, unless ``strict``) and below ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return (value > minimum if strict else value >= minimum) and value < maximum


def validate(config: ml_collections.ConfigDict) -> RunSpec:
    """Checks every key and value and builds the run's objects, before anything is compiled.

    Raises:
      ConfigError: an unknown or missing key, an impossible value (negative, zero, infinite or NaN where that is
        meaningless), or an unknown cell, task or optimiser name; the message names the key.
    """
    schema = base_config()
    _check_keys(config, schema, "")
    for section in ("model", "optimizer", "train"):
        _check_keys(config[section], schema[section], f"{section}.")
    _check_keys(config.model.options, schema.model.options, "model.options.", partial=True)
    m, o, t = config.model, config.optimizer, config.train
    require(is_int(config.seed, 0), "seed", "an int >= 0", config.seed)
    for key in ("hidden_size", "num_layers"):
        require(is_int(m[key], 1), f"model.{key}", "a positive int", m[key])
    for key in ("steps", "batch_size", "log_every", "eval_batch_size", "checkpoint_every"):
        require(is_int(t[key], 1), f"train.{key}", "a positive int", t[key])
    require(is_int(t.eval_every, 0), "train.eval_every", "an int >= 0 (0: only at the end)", t.eval_every)
    require(m.impl in gated.scan.IMPLS, "model.impl", f"one of {gated.scan.IMPLS} (see gated.run)", m.impl)
    require(is_number(o.learning_rate, 0), "optimizer.learning_rate", "a finite number > 0", o.learning_rate)
    require(is_number(o.clip_threshold, 0), "optimizer.clip_threshold", "a finite number > 0", o.clip_threshold)
    require(is_number(o.momentum, 0, False, 1), "optimizer.momentum", "a number in [0, 1)", o.momentum)
    require(is_number(o.weight_decay, 0, False), "optimizer.weight_decay", "a finite number >= 0", o.weight_decay)
    require(is_int(o.warmup_steps, 0), "optimizer.warmup_steps", "an int >= 0", o.warmup_steps)
    if o.schedule == "warmup_cosine":
        require(o.warmup_steps <= t.steps, "optimizer.warmup_steps",
                f"at most train.steps = {t.steps} (the warm-up is part of the run)", o.warmup_steps)  # fmt: skip
    else:
        require(o.warmup_steps == 0, "optimizer.warmup_steps",
                f"0: schedule {o.schedule!r} has no warm-up (use 'warmup_cosine')", o.warmup_steps)  # fmt: skip
    options = {k: v for k, v in m.options.items() if v is not None}
    try:
        cell = gated.cells.get(m.cell, m.hidden_size, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config.model: {err}") from None
    task_options = {k: v for k, v in config.task.items() if k != "name"}
    try:
        task = tasks_lib.get(config.task.get("name"), **task_options)
        optimizer = train_lib.OptimizerSpec(
            o.name, o.momentum, o.weight_decay, o.clip, o.schedule, o.warmup_steps, t.steps
        )
        layer = train_lib.build_layer(cell, m.num_layers, m.bidirectional, m.residual, m.impl)
    except ValueError as err:
        prefix = "config." if str(err).startswith(("task", "optimizer")) else "config.model: "
        raise ConfigError(f"{prefix}{err}") from None
    require(m.dtype in train_lib.DTYPES, "model.dtype", f"one of {tuple(train_lib.DTYPES)}", m.dtype)
    if m.architecture == "layers":
        block_keys = ("mixer", "width", "mlp", "mlp_expansion", "norm", "conv_width", "heads", "dropout",
                      "tie_embeddings")  # fmt: skip
        for key in block_keys:
            require(m[key] == schema.model[key], f"model.{key}",
                    f"{schema.model[key]!r} (it sets a block model: model.architecture 'blocks')", m[key])  # fmt: skip
        model = train_lib.layer_model(layer, task, m.dtype)
    else:
        require(m.architecture == "blocks", "model.architecture", "'layers' or 'blocks'", m.architecture)
        model = build_blocks(m, cell, task)
    return RunSpec(cell, model, task, optimizer, float(o.learning_rate), float(o.clip_threshold))


MIXERS = tuple(gated.mixers.MIXERS)  # the registered mixers (gated.mixers.get)
# The config keys of a block model's mixer, by the option each sets where the mixer has it (its fields).
MIXER_KEYS = {"conv_width": "conv_width", "heads": "num_heads", "impl": "impl"}
MLPS = ("none", "mlp", *gated.blocks.GLU_GATES)
NORMS = {"rmsnorm": gated.blocks.RMSNorm, "layernorm": gated.blocks.LayerNorm, "none": lambda: None}


def build_blocks(m: ml_collections.ConfigDict, cell: gated.cells.Cell, task: tasks_lib.Task) -> gated.models.Model:
    """The :class:`gated.models.Model` of a ``model.architecture = "blocks"`` config: ``num_layers`` times the mixer
    (in a pre-norm residual block, then a residual MLP, when ``model.residual``; else dropout then the mixer, and
    dropout before the head, as Zaremba et al. 2014), a final norm, and an embedding (token tasks) or an input
    projection (feature tasks)."""
    require(m.mixer in MIXERS, "model.mixer", f"one of {MIXERS}", m.mixer)
    require(m.mlp in MLPS, "model.mlp", f"one of {MLPS}", m.mlp)
    require(m.norm in NORMS, "model.norm", f"one of {tuple(NORMS)}", m.norm)
    require(is_int(m.width, 1), "model.width", "a positive int", m.width)
    require(is_number(m.mlp_expansion, 0), "model.mlp_expansion", "a number > 0", m.mlp_expansion)
    require(is_number(m.dropout, 0, False, 1), "model.dropout", "a number in [0, 1)", m.dropout)
    require(not m.bidirectional, "model.bidirectional", "False (a block model is causal)", m.bidirectional)
    require(m.tie_embeddings in (True, False), "model.tie_embeddings", "a bool", m.tie_embeddings)
    require(not m.tie_embeddings or task.tokens, "model.tie_embeddings",
            f"False: task {task.name!r} reads features, not tokens", m.tie_embeddings)  # fmt: skip
    require(not m.tie_embeddings or task.input_size == task.output_size, "model.tie_embeddings",
            f"False: task {task.name!r} reads {task.input_size} tokens and outputs {task.output_size}",
            m.tie_embeddings)  # fmt: skip
    defaults = base_config().model
    fields = _mixer_fields(m.mixer)
    unused = {key: option not in fields for key, option in MIXER_KEYS.items() if key != "impl"}
    unused["mlp_expansion"] = m.mlp == "none"
    for key, is_unused in unused.items():
        require(not is_unused or m[key] == defaults[key], f"model.{key}",
                f"{defaults[key]!r}: mixer {m.mixer!r} with mlp {m.mlp!r} does not use it", m[key])  # fmt: skip
    width = m.width
    if gated.mixers.MIXERS[m.mixer].cell_sets_width and m.residual:
        expected = f"model.width = {width}: a residual {m.mixer!r} mixer's cell has the model's width"
        require(m.hidden_size == width, "model.hidden_size", expected, m.hidden_size)
    require(m.residual or (m.mlp == "none" and m.norm == "none"), "model.residual",
            "True to have an MLP or a norm (they come in residual blocks)", m.residual)  # fmt: skip
    mixer = _mixer(m, cell)
    norm = NORMS[m.norm]()
    hidden = max(1, round(m.mlp_expansion * width))
    mlp = None
    if m.mlp != "none":
        mlp = gated.blocks.MLP(hidden) if m.mlp == "mlp" else gated.blocks.GatedMLP(hidden, m.mlp)
    layers = []
    for _ in range(m.num_layers):
        if m.residual:
            layers.append(gated.models.Residual(mixer, norm, m.dropout))
            if mlp is not None:
                layers.append(gated.models.Residual(mlp, norm, m.dropout))
        else:
            layers += [gated.blocks.Dropout(m.dropout), mixer]
    if not m.residual:
        layers.append(gated.blocks.Dropout(m.dropout))
    try:
        return gated.models.Model(
            vocab_size=task.output_size, width=width, layers=tuple(layers), final_norm=norm,
            tie_embeddings=bool(m.tie_embeddings), input_size=None if task.tokens else task.input_size,
            input_vocab_size=task.input_size if task.tokens and task.input_size != task.output_size else None,
            readout=task.readout, dtype=None if m.dtype == "float32" else m.dtype,
        )  # fmt: skip
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config.model: {err}") from None


def _mixer_fields(name: str) -> set[str]:
    """The options of the registered mixer ``name`` (its dataclass fields): which of :data:`MIXER_KEYS` it reads."""
    return {f.name for f in dataclasses.fields(gated.mixers.MIXERS[name])}


def _mixer(m: ml_collections.ConfigDict, cell: gated.cells.Cell):
    """The sequence mixer of a block config's ``model.mixer`` (:func:`gated.mixers.get`), given the config's keys it
    has options for; a narrower compute type keeps its recurrence (its states and sums) in float32."""
    fields = _mixer_fields(m.mixer)
    options = {option: m[key] for key, option in MIXER_KEYS.items() if option in fields}
    if "state_dtype" in fields:
        options["state_dtype"] = None if m.dtype == "float32" else "float32"
    try:
        return gated.mixers.get(m.mixer, cell, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config.model.mixer {m.mixer!r}: {err}") from None


def complete(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose ``model.options`` holds every cell option (:func:`fill_options`). A workdir is
    bound to this form."""
    config = copy.deepcopy(config)
    fill_options(config)
    return config


def fill_options(config: ml_collections.ConfigDict) -> None:
    """Gives ``config.model.options``, in place, every cell option: those it sets, then the others unset (typed
    placeholders, so that an override is parsed as the option's type). An unknown option is refused."""
    given = config.model.options
    _check_keys(given, CELL_OPTIONS, "model.options.", partial=True)
    options = {k: given.get_ref(k) if k in given else config_dict.placeholder(t) for k, t in CELL_OPTIONS.items()}
    with config.unlocked():
        config.model.options = ml_collections.ConfigDict(options)


def load_config_module(path: str | os.PathLike):
    """Imports a config file (``configs/NAME.py``) by path, for its ``get_config()`` and ``sweep()``."""
    make_configs_importable()
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(f"configs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def override(config: ml_collections.ConfigDict, updates: dict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with dotted keys (``"model.cell"``) set; unknown keys are refused. A dict value sets
    each of its keys (``{"model.options": {"forget_bias": 2.0}}``), not the whole section."""
    config = complete(config)
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        node = config
        for p in parents:
            if p not in node:
                raise ConfigError(f"sweep key {dotted!r}: config has no section {p!r}")
            node = node[p]
        if isinstance(value, dict) and isinstance(node.get(leaf), ml_collections.ConfigDict):
            config = override(config, {f"{dotted}.{k}": v for k, v in value.items()})
            continue
        if leaf not in node and not (parents and parents[-1] == "task"):
            raise ConfigError(f"sweep key {dotted!r}: unknown key {leaf!r}")
        with node.unlocked():
            node[leaf] = value
    return config


def run_name(updates: dict) -> str:
    """A folder name for a sweep entry: ``{"model.hidden_size": 64, "seed": 0}`` -> ``hidden_size-64_seed-0``."""
    return "_".join(f"{k.split('.')[-1]}-{v}" for k, v in updates.items()) or "run"


def group_key(config: ml_collections.ConfigDict) -> str:
    """Configs with equal keys compile to the same program and are trained together."""
    flat = json.loads(config.to_json())
    for dotted in VMAPPABLE:
        *parents, leaf = dotted.split(".")
        node = flat
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return json.dumps(flat, sort_keys=True)
