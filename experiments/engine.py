"""From a config to a finished workdir: validation, vmapped sweeps, checkpoints, resume, results.

A run is ``config -> workdir``. The workdir holds ``config.json``, ``metrics.jsonl``
(one JSON line per logged step), ``final.npz`` (parameters and curves),
``result.json`` (status, diverged step, test metrics, chance level), a
``loss.png`` plot and ``report.md``. A sweep puts one such folder per run
under ``workdir/runs/``, and a ``report.md`` with a table of all of them.

Runs of a sweep that differ only in numbers that keep shapes equal (seed,
learning rate, clip threshold, forget bias, recurrent scale) form a group
trained as ONE compiled program: on one CPU device a ``jax.lax.map`` over the
runs, elsewhere ``jax.vmap`` (:func:`over_runs`); with several
devices the run axis is sharded over them (``jax.sharding``), or, when the
runs do not divide over the devices, each run's batch is (data parallelism). A run that
diverges inside a group is frozen and recorded, and the others go on.

Checkpoints use ``flax.serialization`` (one msgpack file per group, written
atomically): the state is a small pytree on one host, and a file that
restores bit for bit with no extra machinery is all resuming needs; orbax's
asynchronous, multi-host machinery would add weight without use here.
Every write is atomic (write to a temporary file, then rename).
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import os
import pathlib
import sys
import tempfile
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import serialization
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gated
from gated import tasks as tasks_lib
from gated import train as train_lib

# Keys whose values may differ between the runs of one compiled program.
VMAPPABLE = ("seed", "optimizer.learning_rate", "optimizer.clip_threshold", "model.options.forget_bias",
             "model.options.recurrent_scale")  # fmt: skip


def base_config() -> ml_collections.ConfigDict:
    """Every known key with its default. Configs in ``configs/`` start from this."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = ml_collections.ConfigDict(
        dict(cell="lstm", hidden_size=64, num_layers=1, bidirectional=False, residual=False, impl="auto", options={})
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
    hp: train_lib.Hyperparams


def _check_keys(section: Any, schema: Any, path: str) -> None:
    unknown = sorted(set(section.keys()) - set(schema.keys()))
    if unknown:
        raise ValueError(f"config.{path}{unknown[0]}: unknown key; valid keys here are {sorted(schema.keys())}")


def _require(condition: bool, key: str, expected: str, got: Any) -> None:
    if not condition:
        raise ValueError(f"config.{key}: expected {expected}, got {got!r}")


def validate(config: ml_collections.ConfigDict) -> RunSpec:
    """Checks every key and value and builds the run's objects, before anything is compiled.

    Raises:
      ValueError: an unknown key, an impossible value, or an unknown cell,
        task or optimiser name; the message names the key.
    """
    schema = base_config()
    _check_keys(config, schema, "")
    for section in ("model", "optimizer", "train"):
        _check_keys(config[section], schema[section], f"{section}.")
    m, o, t = config.model, config.optimizer, config.train
    _require(isinstance(config.seed, int) and config.seed >= 0, "seed", "an int >= 0", config.seed)
    for key in ("hidden_size", "num_layers"):
        _require(isinstance(m[key], int) and m[key] > 0, f"model.{key}", "a positive int", m[key])
    for key in ("steps", "batch_size", "log_every", "eval_batch_size", "checkpoint_every"):
        _require(isinstance(t[key], int) and t[key] > 0, f"train.{key}", "a positive int", t[key])
    _require(isinstance(t.eval_every, int) and t.eval_every >= 0, "train.eval_every", "an int >= 0", t.eval_every)
    _require(m.impl in gated.scan.IMPLS, "model.impl", f"one of {gated.scan.IMPLS} (see gated.run)", m.impl)
    _require(o.learning_rate > 0, "optimizer.learning_rate", "a positive number", o.learning_rate)
    _require(o.clip_threshold > 0, "optimizer.clip_threshold", "a positive number", o.clip_threshold)
    try:
        cell = gated.cells.get(m.cell, m.hidden_size, **m.options.to_dict())
    except (TypeError, ValueError) as err:
        raise ValueError(f"config.model: {err}") from None
    task_options = {k: v for k, v in config.task.items() if k != "name"}
    try:
        task = tasks_lib.get(config.task.get("name"), **task_options)
        optimizer = train_lib.OptimizerSpec(
            o.name, o.momentum, o.weight_decay, o.clip, o.schedule, o.warmup_steps, t.steps
        )
        layer = train_lib.build_layer(cell, m.num_layers, m.bidirectional, m.residual, m.impl)
    except ValueError as err:
        prefix = "config." if str(err).startswith(("task", "optimizer")) else "config.model: "
        raise ValueError(f"{prefix}{err}") from None
    model = train_lib.SequenceModel(layer, task.output_size, task.readout)
    hp = train_lib.Hyperparams(jnp.float32(o.learning_rate), jnp.float32(o.clip_threshold))
    return RunSpec(cell, model, task, optimizer, hp)


def load_config_module(path: str | os.PathLike):
    """Imports a config file (``configs/NAME.py``) by path, for its ``get_config()`` and ``sweep()``."""
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(f"configs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def override(config: ml_collections.ConfigDict, updates: dict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with dotted keys (``"model.cell"``) set; unknown keys are refused."""
    config = copy.deepcopy(config)
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        node = config
        for p in parents:
            if p not in node:
                raise ValueError(f"sweep key {dotted!r}: config has no section {p!r}")
            node = node[p]
        if leaf not in node and not (parents and parents[-1] in ("options", "task")):
            raise ValueError(f"sweep key {dotted!r}: unknown key {leaf!r}")
        with node.unlocked():
            node[leaf] = value
    return config


def run_name(updates: dict) -> str:
    """A folder name for a sweep entry: ``{"model.cell": "lstm", "seed": 0}`` -> ``cell-lstm_seed-0``."""
    return "_".join(f"{k.split('.')[-1]}-{v}" for k, v in updates.items()) or "run"


def group_key(config: ml_collections.ConfigDict) -> str:
    """Configs with equal keys compile to the same program and are vmapped together."""
    flat = json.loads(config.to_json())
    for dotted in VMAPPABLE:
        *parents, leaf = dotted.split(".")
        node = flat
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return json.dumps(flat, sort_keys=True)


def _atomic_write(path: pathlib.Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, mode) as f:
        f.write(data)
    os.replace(tmp, path)


class Progress:
    """One status line on stderr (step, loss, gradient norm, ETA); silent when stderr is not a terminal."""

    def __init__(self, label: str, total: int, start: int = 0):
        self.label, self.total, self.start, self.t0 = label, total, start, time.perf_counter()
        self.enabled = sys.stderr.isatty()

    def update(self, step: int, loss: float, grad_norm: float) -> None:
        if not self.enabled:
            return
        done = max(step - self.start, 1)
        eta = (time.perf_counter() - self.t0) / done * (self.total - step)
        sys.stderr.write(
            f"\r{self.label} step {step}/{self.total}  loss {loss:.4g}  grad norm {grad_norm:.3g}  ETA {eta:5.0f}s "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
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


def over_runs(fn):
    """``fn`` over the leading run axis of every argument, in the way that is faster on the platform at hand.

    On one CPU device, ``jax.lax.map``: the runs one after another inside one compiled program. Elsewhere (an
    accelerator, or runs sharded over several devices), ``jax.vmap``. On XLA:CPU a vmapped group trains slower than
    its runs one by one, and ``lax.map`` about as fast as them (``benchmarks/results/transforms.md``): a batched
    matmul per step runs no faster per FLOP than single ones, and the vmapped scans' stacked outputs are transposed
    for the weight gradients.
    """
    if jax.default_backend() == "cpu" and jax.device_count() == 1:
        return lambda *args: jax.lax.map(lambda a: fn(*a), args)
    return jax.vmap(fn)


def train_group(
    configs: list, specs: list[RunSpec], run_dirs: list[pathlib.Path], checkpoint: pathlib.Path, label: str = ""
) -> list[dict]:
    """Trains runs that share one program (``specs``: each config's :func:`validate`; see :func:`over_runs`);
    resumes from ``checkpoint``; returns each run's result."""
    spec, cfg = specs[0], configs[0]
    num = len(specs)
    task, model = spec.task, spec.model
    keys = [jax.random.split(jax.random.key(c.seed), 3) for c in configs]
    params = [s.model.init(k[0], task.input_size) for s, k in zip(specs, keys, strict=True)]
    states = [train_lib.init_state(p, s.optimizer, s.hp) for p, s in zip(params, specs, strict=True)]
    stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)
    states, hps = stack(states), stack([s.hp for s in specs])
    data_keys, eval_keys = jnp.stack([k[1] for k in keys]), jnp.stack([k[2] for k in keys])
    sharding, data_mesh = _parallelism(num, cfg.train.batch_size)
    if sharding is not None:
        states, hps, data_keys, eval_keys = jax.device_put((states, hps, data_keys, eval_keys), sharding)

    train_step = train_lib.make_train_step(model, task, spec.optimizer, cfg.train.batch_size, data_mesh)
    step_fn = jax.jit(over_runs(train_step))
    eval_fn = jax.jit(over_runs(train_lib.make_eval_step(model, task, cfg.train.eval_batch_size)))

    logs: list[list[dict]] = [[] for _ in range(num)]
    if checkpoint.exists():
        states = serialization.from_bytes(states, checkpoint.read_bytes())
        if sharding is not None:
            states = jax.device_put(states, sharding)
        done = int(states.step[0])
        for i, d in enumerate(run_dirs):
            path = d / "metrics.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            logs[i] = [r for r in map(json.loads, lines) if r["step"] <= done]
    for c, d in zip(configs, run_dirs, strict=True):
        _atomic_write(d / "config.json", c.to_json(indent=2))

    def save(states):
        for log, d in zip(logs, run_dirs, strict=True):
            _atomic_write(d / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        _atomic_write(checkpoint, serialization.to_bytes(jax.device_get(states)))

    t = cfg.train
    start = int(states.step[0])
    progress = Progress(label, t.steps, start)
    start_time = time.perf_counter()
    for step in range(start + 1, t.steps + 1):
        states, metrics = step_fn(states, hps, data_keys)
        last = step == t.steps
        if step % t.log_every == 0 or last or (t.eval_every and step % t.eval_every == 0):
            m = jax.device_get(metrics)
            diverged_at = np.asarray(states.diverged_at)
            evals = (
                jax.device_get(eval_fn(states.params, eval_keys)) if t.eval_every and step % t.eval_every == 0 else {}
            )
            for i in range(num):
                row = {"step": step, **{k: _scalar(v[i]) for k, v in m.items()}}
                row.update({f"test_{k}": _scalar(v[i]) for k, v in evals.items()})
                row["diverged"] = bool(diverged_at[i] >= 0)
                logs[i].append(row)
            finite_losses = np.asarray(m["loss"])[np.asarray(m["finite"])]
            mean_loss = float(finite_losses.mean()) if finite_losses.size else float("nan")
            progress.update(step, mean_loss, float(m["grad_norm"][0]))
            if bool(np.all(diverged_at >= 0)):
                break
        if step % t.checkpoint_every == 0 and not last:
            save(states)
    progress.close()
    seconds = time.perf_counter() - start_time
    save(states)
    final = jax.device_get(eval_fn(states.params, eval_keys))
    results = []
    for i, (d, c) in enumerate(zip(run_dirs, configs, strict=True)):
        diverged_at = int(states.diverged_at[i])
        result = {
            "status": "diverged" if diverged_at >= 0 else "finished",
            "diverged_at": diverged_at if diverged_at >= 0 else None,
            "steps": int(states.step[i]),
            "test": {k: _scalar(v[i]) for k, v in final.items()},
            "chance_loss": task.chance_loss,
            "chance_accuracy": task.chance_accuracy,
            "train_seconds_this_session": seconds,
            "config": json.loads(c.to_json()),
        }
        params_i = jax.tree.map(lambda a, i=i: np.asarray(a[i]), states.params)
        arrays = {jax.tree_util.keystr(p): a for p, a in jax.tree_util.tree_leaves_with_path(params_i)}
        arrays.update({f"curve/{k}": np.array([r[k] for r in logs[i]]) for k in ("step", "loss", "grad_norm")})
        buffer = _npz_bytes(arrays)
        _atomic_write(d / "final.npz", buffer)
        _plot_curves(d, logs[i], task, result)
        _atomic_write(d / "report.md", run_report(d.name, result))
        _atomic_write(d / "result.json", json.dumps(result, indent=2))
        results.append(result)
    return results


def _scalar(value: Any) -> Any:
    value = np.asarray(value)
    return bool(value) if value.dtype == bool else float(value)


def _npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _plot_curves(run_dir: pathlib.Path, log: list[dict], task: tasks_lib.Task, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in log]
    fig, (ax_loss, ax_grad) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(steps, [r["loss"] for r in log], label="train loss")
    ax_loss.axhline(task.chance_loss, color="gray", linestyle="--", label="chance")
    ax_loss.set(xlabel="step", ylabel="loss", yscale="log", title=f"{run_dir.name}: loss ({result['status']})")
    ax_loss.legend()
    ax_grad.plot(steps, [r["grad_norm"] for r in log])
    ax_grad.set(xlabel="step", ylabel="global gradient norm (before clipping)", yscale="log", title="gradient norm")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    _atomic_write(run_dir / "loss.png", buffer.getvalue())


def run_report(name: str, result: dict) -> str:
    test = ", ".join(f"{k} {v:.4g}" for k, v in result["test"].items())
    chance = f"chance loss {result['chance_loss']:.4g}"
    if result["chance_accuracy"] is not None:
        chance += f", chance accuracy {result['chance_accuracy']:.4g}"
    status = result["status"] + (f" at step {result['diverged_at']}" if result["diverged_at"] is not None else "")
    return (
        f"# {name}\n\n- status: {status} after {result['steps']} steps\n- test: {test}\n- {chance}\n\n"
        f"![loss and gradient norm](loss.png)\n"
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, sweep: list[dict] | None = None
) -> dict[str, dict]:
    """Runs ``config`` (or each entry of ``sweep`` applied to it) to a finished workdir.

    Every config is validated before anything compiles. Runs whose
    ``result.json`` exists are skipped; a group with a checkpoint resumes.
    Returns ``{run name: result}``.
    """
    workdir = pathlib.Path(workdir)
    if sweep is None:
        entries = [("", config, workdir)]
    else:
        entries = [(run_name(u), override(config, u), workdir / "runs" / run_name(u)) for u in sweep]
        if len({n for n, _, _ in entries}) != len(entries):
            raise ValueError("sweep: two entries give the same run name; make the entries distinct")
    specs = {}
    for name, c, _ in entries:
        try:
            specs[name] = validate(c)
        except ValueError as err:
            raise ValueError(f"{name or 'config'}: {err}") from None

    groups: dict[str, list] = {}
    for entry in entries:
        groups.setdefault(group_key(entry[1]), []).append(entry)
    results = {}
    for g, members in enumerate(groups.values()):
        todo = [e for e in members if not (e[2] / "result.json").exists()]
        for name, _, d in members:
            if (d / "result.json").exists():
                results[name] = json.loads((d / "result.json").read_text())
        if not todo:
            continue
        checkpoint = workdir / ("checkpoint.msgpack" if sweep is None else f"groups/group-{g}.msgpack")
        label = f"[group {g + 1}/{len(groups)}, {len(todo)} run(s)]" if sweep is not None else "[run]"
        configs, dirs = [c for _, c, _ in todo], [d for _, _, d in todo]
        out = train_group(configs, [specs[name] for name, _, _ in todo], dirs, checkpoint, label)
        results.update({name: r for (name, _, _), r in zip(todo, out, strict=True)})
    if sweep is not None:
        _atomic_write(workdir / "report.md", sweep_report(results))
        _atomic_write(workdir / "results.json", json.dumps(results, indent=2))
    return results


def sweep_report(results: dict[str, dict]) -> str:
    rows = [
        "| run | status | steps | test loss | test accuracy | chance loss |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        acc = r["test"].get("accuracy")
        status = r["status"] + (f" at {r['diverged_at']}" if r["diverged_at"] is not None else "")
        acc_text = "" if acc is None else f"{acc:.3f}"
        rows.append(
            f"| [{name}](runs/{name}/report.md) | {status} | {r['steps']} | {r['test']['loss']:.4g} | {acc_text} "
            f"| {r['chance_loss']:.4g} |"
        )
    return "# Sweep results\n\n" + "\n".join(rows) + "\n"
