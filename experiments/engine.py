"""From a config to a finished workdir: validation, groups of runs as one program, checkpoints, resume, results.

A run is ``config -> workdir``:

- ``config.json``: the config and a hash of everything that changes the result, written first. The workdir is bound
  to it (:mod:`experiments.workdir`): a rerun with another config is refused, naming the keys that differ, unless
  ``overwrite=True`` (``--overwrite``); and a lock refuses a second process.
- ``checkpoint.msgpack``: the one file a resume reads, holding the training state AND the metrics so far, written
  atomically every ``train.checkpoint_every`` steps and at the end. Everything else is derived from it, so a run
  killed at any point resumes to exactly the files of an uninterrupted run.
- ``metrics.jsonl`` (one strict-JSON line per logged step; test metrics every ``train.eval_every`` steps and at the
  end), TensorBoard event files beside it, ``final.npz`` (parameters and curves), ``loss.png`` (train and test
  loss, gradient norm), ``report.md``, and last ``result.json``: status, the step it diverged at, the final and
  the best test metrics with their steps, the chance levels.

A sweep (a config's ``sweep()``) puts one such folder per run under ``workdir/runs/``, and a ``report.md`` and
``results.json`` over all of them. Runs that differ only in numbers that keep shapes equal (seed, learning rate,
clip threshold, forget bias, recurrent scale) form a group trained as ONE compiled program
(:func:`experiments.loop.over_runs`); with several devices the run axis is sharded over them, or, when the runs do
not divide over the devices, each run's batch is (data parallelism). A run gives the same numbers alone and inside
a group. A run that diverges inside a group is frozen and recorded, and the others go on.

Checkpoints use ``flax.serialization`` (msgpack): the state is a small pytree, and a file that restores bit for bit
is all resuming needs.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import math
import os
import pathlib
import sys
import tempfile
import time
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import serialization
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ml_collections import config_dict

import gated

from . import loop
from . import report as report_lib
from . import tasks as tasks_lib
from . import train as train_lib
from . import workdir as workdir_lib

# Keys whose values may differ between the runs of one compiled program.
VMAPPABLE = ("seed", "optimizer.learning_rate", "optimizer.clip_threshold", "model.options.forget_bias",
             "model.options.recurrent_scale")  # fmt: skip

# Every option of every cell with its type, from the cells' own fields; unset (None) in a config: the cell's
# default. Setting one the chosen cell lacks is refused.
CELL_OPTIONS = gated.cells.option_types()


def base_config() -> ml_collections.ConfigDict:
    """Every known key with its default: the schema a config is checked against."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    options = {k: config_dict.placeholder(t) for k, t in CELL_OPTIONS.items()}
    c.model = ml_collections.ConfigDict(
        dict(
            cell="lstm", hidden_size=64, num_layers=1, bidirectional=False, residual=False, impl="auto", options=options
        )  # fmt: skip
    )
    c.task = ml_collections.ConfigDict(dict(name="adding", length=100))
    c.optimizer = ml_collections.ConfigDict(
        dict(
            name="adam",
            learning_rate=1e-3,
            momentum=0.9,
            weight_decay=1e-4,
            clip="global_norm",
            clip_threshold=1.0,
            schedule="constant",
            warmup_steps=0,
        )
    )
    c.train = ml_collections.ConfigDict(
        dict(steps=1000, batch_size=64, log_every=50, eval_every=0, eval_batch_size=512, checkpoint_every=500)
    )
    return c


class RunSpec(NamedTuple):
    """What a validated config builds: the objects of one run."""

    cell: Any
    model: train_lib.SequenceModel
    task: tasks_lib.Task
    optimizer: train_lib.OptimizerSpec
    learning_rate: float
    clip_threshold: float


class ConfigError(ValueError):
    """A config that can't run; the message names the key, what it got and what was expected."""


def _check_keys(section: Any, schema: Any, path: str) -> None:
    unknown = sorted(set(section.keys()) - set(schema.keys()))
    if unknown:
        raise ConfigError(f"config.{path}{unknown[0]}: unknown key; valid keys here are {sorted(schema.keys())}")
    missing = sorted(set(schema.keys()) - set(section.keys()))
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
    _check_keys(config.model.options, schema.model.options, "model.options.")
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
    model = train_lib.SequenceModel(layer, task.output_size, task.readout)
    return RunSpec(cell, model, task, optimizer, float(o.learning_rate), float(o.clip_threshold))


def load_config_module(path: str | os.PathLike):
    """Imports a config file (``configs/NAME.py``) by path, for its ``get_config()`` and ``sweep()``."""
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(f"configs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def override(config: ml_collections.ConfigDict, updates: dict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with dotted keys (``"model.cell"``) set; unknown keys are refused. A dict value sets
    each of its keys (``{"model.options": {"forget_bias": 2.0}}``), not the whole section."""
    config = copy.deepcopy(config)
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
    """A folder name for a sweep entry: ``{"model.cell": "lstm", "seed": 0}`` -> ``cell-lstm_seed-0``."""
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


class Reporter:
    """Progress of a group: a status line on a terminal; otherwise (a batch job) an absl log line at every logged
    step, with the step, loss, gradient norm and speed."""

    def __init__(self, label: str, total: int, start: int = 0):
        self.label, self.total = label, total
        self.last_step, self.last_time = start, time.perf_counter()
        self.tty = sys.stderr.isatty()

    def __call__(self, step: int, values: dict[str, np.ndarray]) -> None:
        if not _is_writer():
            return  # one log for a multi-process run: process 0's
        now = time.perf_counter()
        speed = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        finite = np.asarray(values["finite"])
        # over the runs still finite: a diverged run's NaN would hide the others
        number = lambda reduce, key: f"{float(reduce(values[key][finite])):.4g}" if finite.any() else "-"
        loss, grad_norm = number(np.mean, "loss"), number(np.median, "grad_norm")
        eta = (self.total - step) / max(speed, 1e-9)
        text = f"{self.label} step {step}/{self.total}  loss {loss}  grad norm {grad_norm}  {speed:.1f} steps/s"
        diverged = np.asarray(values.get("diverged_at", -1)).reshape(-1)
        diverged = diverged[diverged >= 0]
        if diverged.size:
            runs = f"{diverged.size} of {finite.size} runs " if finite.size > 1 else ""
            text += f"  {runs}diverged at step {int(diverged.min())}" + ("" if diverged.size == 1 else " (first)")
        if self.tty:
            width = 20
            done = int(width * step / self.total)
            sys.stderr.write(f"\r{text}  [{'#' * done}{'.' * (width - done)}] ETA {eta:4.0f} s ")
            sys.stderr.flush()
        else:
            logging.info("%s", text)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _parallelism(num_runs: int, batch_size: int):
    """With several devices: shard the run axis when the runs divide over them, else the batch
    axis of each run (data parallelism) when the batch does. Returns (run sharding, data mesh)."""
    devices = jax.devices()
    if len(devices) < 2:
        return None, None
    if num_runs % len(devices) == 0:
        return NamedSharding(Mesh(np.array(devices), ("runs",)), PartitionSpec("runs")), None
    if batch_size % len(devices) == 0:
        return None, Mesh(np.array(devices), ("data",))
    return None, None


def _is_writer() -> bool:
    return jax.process_index() == 0


def _save(path: pathlib.Path, progress: loop.Progress) -> None:
    """The checkpoint: state and metrics in one file, so that no crash can leave them out of step. The one before
    it is kept (:func:`experiments.workdir.write_keeping_previous`) until this one is whole."""
    state = serialization.to_state_dict(loop.fetch(progress.states))
    data = serialization.msgpack_serialize(
        {"state": state, "history": progress.history, "evaluations": progress.evaluations}
    )
    if _is_writer():
        workdir_lib.write_keeping_previous(path, data)


def _restore(path: pathlib.Path, template: loop.Progress, sharding) -> loop.Progress:
    data = serialization.msgpack_restore(workdir_lib.read_checkpoint(path))
    states = serialization.from_state_dict(loop.fetch(template.states), data["state"])
    states = loop.to_global(states, sharding) if sharding is not None else jax.tree.map(jax.numpy.asarray, states)
    as_arrays = lambda table: {k: np.asarray(v) for k, v in table.items()}
    return loop.Progress(states, as_arrays(data["history"]), as_arrays(data["evaluations"]))


def train_group(
    configs: list, specs: list[RunSpec], run_dirs: list[pathlib.Path], checkpoint: pathlib.Path, label: str = ""
) -> list[dict]:
    """Trains runs that share one program (``specs``: each config's :func:`validate`) from their initial state or
    from ``checkpoint``, and writes each run's outputs into ``run_dirs``; returns each run's result."""
    spec, t = specs[0], configs[0].train
    num = len(specs)
    sharding, data_mesh = _parallelism(num, t.batch_size)
    states, data_keys, eval_keys = loop.init_states(
        [s.model for s in specs], spec.task, spec.optimizer, [c.seed for c in configs],
        [s.learning_rate for s in specs], [s.clip_threshold for s in specs],
    )  # fmt: skip
    if data_mesh is not None:  # every run whole on every device; its batch is split
        sharding = NamedSharding(data_mesh, PartitionSpec())
    if sharding is not None:
        states, data_keys, eval_keys = loop.to_global((states, data_keys, eval_keys), sharding)
    progress = loop.Progress(states, {}, {})
    if workdir_lib.has_checkpoint(checkpoint):
        progress = _restore(checkpoint, progress, sharding)
    programs = loop.programs(spec.model, spec.task, spec.optimizer, t.batch_size, t.eval_batch_size, data_mesh)

    def save(p: loop.Progress) -> None:
        _save(checkpoint, p)
        if _is_writer():
            for i, d in enumerate(run_dirs):
                rows = metric_rows(p, i)
                workdir_lib.write(d / "metrics.jsonl", "".join(workdir_lib.to_json(r, None) + "\n" for r in rows))
                _write_events(d, rows)  # TensorBoard follows a run at its checkpoints

    reporter = Reporter(label, t.steps, int(loop.fetch(progress.states.step)[0]))
    progress = loop.train(
        programs, progress, data_keys, eval_keys, steps=t.steps, log_every=t.log_every, eval_every=t.eval_every,
        checkpoint_every=t.checkpoint_every, save=save, on_log=reporter, stop_when_all_diverged=True,
    )  # fmt: skip
    reporter.close()
    final = loop.fetch(progress.states)
    results = []
    for i, (d, c) in enumerate(zip(run_dirs, configs, strict=True)):
        rows = metric_rows(progress, i)
        result = run_result(final, progress, i, spec.task, c)
        if _is_writer():
            _write_run(d, c, rows, result, jax.tree.map(lambda a, i=i: np.asarray(a[i]), final.params), spec.task)
        results.append(result)
    return results


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


def _write_run(d: pathlib.Path, config, rows: list[dict], result: dict, params: Any, task) -> None:
    """A finished run's files, result.json last (its presence says the run's outputs are complete)."""
    workdir_lib.write(d / "metrics.jsonl", "".join(workdir_lib.to_json(r, None) + "\n" for r in rows))
    _write_events(d, rows)
    arrays = {jax.tree_util.keystr(p): a for p, a in jax.tree_util.tree_leaves_with_path(params)}
    curve = lambda key: np.array([np.nan if r.get(key) is None else r[key] for r in rows if key in r], float)
    arrays.update({f"curve/{k}": curve(k) for k in ("loss", "grad_norm", "test_loss")})
    arrays["curve/step"] = np.array([r["step"] for r in rows if "loss" in r])
    arrays["curve/test_step"] = np.array([r["step"] for r in rows if "test_loss" in r])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    workdir_lib.write(d / "final.npz", buffer.getvalue())
    _plot_curves(d, rows, task, result)
    workdir_lib.write(d / "report.md", report_lib.run_report(d.name or "run", result))
    workdir_lib.write(d / "result.json", workdir_lib.to_json(result))


EVENTS_FILE = "events.out.tfevents.gated"


def _write_events(d: pathlib.Path, rows: list[dict]) -> None:
    """TensorBoard event files (``tensorboard --logdir WORKDIR`` shows every run of a sweep), written by
    tensorboardX into a temporary folder, then moved beside metrics.jsonl in one atomic write."""
    from tensorboardX import SummaryWriter

    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(tmp, flush_secs=3600)
        for r in rows:
            for k, v in r.items():
                if k != "step" and isinstance(v, float):
                    writer.add_scalar(k.replace("test_", "test/") if k.startswith("test_") else f"train/{k}", v,
                                      r["step"])  # fmt: skip
        writer.close()
        (event_file,) = pathlib.Path(tmp).glob("events.out.tfevents.*")
        workdir_lib.write(d / EVENTS_FILE, event_file.read_bytes())


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

    train = [(r["step"], r["loss"], r["grad_norm"]) for r in rows if r.get("loss") is not None]
    test = [(r["step"], r["test_loss"]) for r in rows if r.get("test_loss") is not None]
    fig, (ax_loss, ax_grad) = plt.subplots(1, 2, figsize=(10, 3.8))
    if result["diverged_at"] is not None:  # marked even when no finite point was logged before it
        for ax in (ax_loss, ax_grad):
            ax.axvline(
                result["diverged_at"], color="red", linestyle=":", label=f"diverged at step {result['diverged_at']}"
            )
        if not train:
            ax_loss.text(0.5, 0.5, f"no finite loss logged:\ndiverged at step {result['diverged_at']}",
                         transform=ax_loss.transAxes, ha="center", va="center", color="red")  # fmt: skip
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
    fig.tight_layout()
    return fig


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    sweep: list[dict] | None = None,
    overwrite: bool = False,
) -> dict[str, dict]:
    """Runs ``config`` (or each entry of ``sweep`` applied to it) to a finished workdir.

    Every config is validated before anything is written or compiled. The workdir is bound to the config (and
    sweep) and locked while this runs (:class:`experiments.workdir.Workdir`); ``overwrite`` deletes what it held.
    A group whose runs all have their ``result.json`` is skipped; any other resumes from its checkpoint.
    Returns ``{run name: result}``.
    """
    workdir = pathlib.Path(workdir)
    if sweep is None:
        entries = [("", config, workdir)]
    else:
        entries = [(run_name(u), override(config, u), workdir / "runs" / run_name(u)) for u in sweep]
        if len({n for n, _, _ in entries}) != len(entries):
            raise ConfigError("sweep: two entries give the same run name; make the entries distinct")
    specs = {}
    for name, c, _ in entries:
        try:
            specs[name] = validate(c)
        except ConfigError as err:
            raise ConfigError(f"{name}: {err}" if name else str(err)) from None

    bound = workdir_lib.binding(json.loads(config.to_json()), {"sweep": sweep} if sweep is not None else None)
    groups: dict[str, list] = {}
    for entry in entries:
        groups.setdefault(group_key(entry[1]), []).append(entry)
    results = {}
    with workdir_lib.Workdir(workdir, bound, overwrite, writer=_is_writer()):
        for g, members in enumerate(groups.values()):
            if all((d / "result.json").exists() for _, _, d in members):
                results.update({name: json.loads((d / "result.json").read_text()) for name, _, d in members})
                continue
            checkpoint = workdir / ("checkpoint.msgpack" if sweep is None else f"groups/group-{g}.msgpack")
            label = f"[group {g + 1}/{len(groups)}, {len(members)} run(s)]" if sweep is not None else "[run]"
            if _is_writer() and sweep is not None:
                for _, c, d in members:
                    workdir_lib.write(d / "config.json", c.to_json(indent=2))
            configs, dirs = [c for _, c, _ in members], [d for _, _, d in members]
            start = time.perf_counter()
            out = train_group(configs, [specs[name] for name, _, _ in members], dirs, checkpoint, label)
            logging.info("%s done in %.0f s", label, time.perf_counter() - start)
            results.update({name: r for (name, _, _), r in zip(members, out, strict=True)})
        if sweep is not None and _is_writer():
            workdir_lib.write(workdir / "results.json", workdir_lib.to_json(results))
            workdir_lib.write(workdir / "report.md", report_lib.sweep_report(results))
    return results
