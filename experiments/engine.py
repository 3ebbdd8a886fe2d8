"""From a config to a finished workdir: validation, groups of runs as one program, checkpoints, resume, results.

A run is ``config -> workdir``:

- ``config.json``: the config and a hash of everything that changes the result, written first. The workdir is bound
  to it (:mod:`experiments.workdir`): a rerun with another config is refused, naming the keys that differ, unless
  ``overwrite=True`` (``--overwrite``); and a lock refuses a second process.
- ``checkpoint.msgpack``: the one file a resume reads, holding the training state AND the metrics so far, written
  atomically every ``train.checkpoint_every`` steps and at the end. Everything else is derived from it, so a run
  killed at any point resumes to exactly the files of an uninterrupted run (TensorBoard's: to the same curves).
- ``metrics.jsonl`` (one strict-JSON line per logged step; test metrics every ``train.eval_every`` steps and at the
  end), TensorBoard event files beside it (appended as the run goes: :class:`experiments.writers.Events`),
  ``final.npz`` (parameters and curves), ``loss.png`` (train and test loss, gradient norm), ``report.md``, and last
  ``result.json``: status, the step it diverged at, the final and the best test metrics with their steps, the
  chance levels.

A sweep (a config's ``sweep()``) puts one such folder per run under ``workdir/runs/``, and a ``report.md`` and
``results.json`` over all of them. Runs that differ only in numbers that keep shapes equal (seed, learning rate,
clip threshold, forget bias, recurrent scale) form a group trained as ONE compiled program
(:func:`experiments.loop.over_runs`); with several devices the run axis is sharded over them, or, when the runs do
not divide over the devices, each run's batch is (data parallelism). A run gives the same numbers alone and inside
a group. A run that diverges inside a group is frozen and recorded, and the others go on.

The layers below: :mod:`experiments.config` (schema, validation, overrides, loading), :mod:`experiments.loop`
(the compiled training programs), :mod:`experiments.checkpoints` and :mod:`experiments.workdir`, and
:mod:`experiments.writers` (the files and plots a run leaves).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import checkpoints, loop, writers
from . import config as config_lib
from . import workdir as workdir_lib
from .checkpoints import is_writer


class Reporter:
    """Progress of a group: a tqdm bar on a terminal; otherwise (a batch job) an absl log line at every logged step.
    Both give the step, loss, gradient norm, speed and any divergence."""

    def __init__(self, label: str, total: int, start: int = 0):
        self.label, self.total = label, total
        self.last_step, self.last_time = start, time.perf_counter()
        self.bar = None
        if sys.stderr.isatty() and is_writer():
            self.bar = tqdm.tqdm(total=total, initial=start, desc=label, unit="step", file=sys.stderr, ascii=True)

    def __call__(self, step: int, values: dict[str, np.ndarray]) -> None:
        if not is_writer():
            return  # one log for a multi-process run: process 0's
        now = time.perf_counter()
        speed = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        finite = np.asarray(values["finite"])
        # over the runs still finite: a diverged run's NaN would hide the others
        number = lambda reduce, key: f"{float(reduce(values[key][finite])):.4g}" if finite.any() else "-"
        text = f"loss {number(np.mean, 'loss')}  grad norm {number(np.median, 'grad_norm')}"
        line = f"{self.label} step {step}/{self.total}  {text}  {speed:.1f} steps/s"
        diverged = np.asarray(values.get("diverged_at", -1)).reshape(-1)
        diverged = diverged[diverged >= 0]
        if diverged.size:
            runs = f"{diverged.size} of {finite.size} runs " if finite.size > 1 else ""
            at = f"  {runs}diverged at step {int(diverged.min())}" + ("" if diverged.size == 1 else " (first)")
            text, line = text + at, line + at
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(step - self.bar.n)
        else:
            logging.info("%s", line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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


def train_group(
    configs: list,
    specs: list[config_lib.RunSpec],
    run_dirs: list[pathlib.Path],
    checkpoint: pathlib.Path,
    label: str = "",
) -> list[dict]:
    """Trains runs that share one program (``specs``: each config's :func:`validate`) from their initial state or
    from ``checkpoint``, and writes each run's outputs into ``run_dirs``; returns each run's result."""
    spec, t = specs[0], configs[0].train
    num = len(specs)
    sharding, data_mesh = _parallelism(num, t.batch_size)
    states, data_keys, eval_keys = loop.init_states(
        [s.model for s in specs],
        spec.task,
        spec.optimizer,
        [c.seed for c in configs],
        [s.learning_rate for s in specs],
        [s.clip_threshold for s in specs],
    )
    if data_mesh is not None:  # every run whole on every device; its batch is split
        sharding = NamedSharding(data_mesh, PartitionSpec())
    if sharding is not None:
        states, data_keys, eval_keys = loop.to_global((states, data_keys, eval_keys), sharding)
    progress = loop.Progress(states, {}, {})
    if workdir_lib.has_checkpoint(checkpoint):
        progress = checkpoints.restore(checkpoint, progress, sharding)
    programs = loop.programs(spec.model, spec.task, spec.optimizer, t.batch_size, t.eval_batch_size, data_mesh)
    start = int(loop.fetch(progress.states.step)[0])
    events = [writers.Events(d, start) for d in run_dirs] if is_writer() else []
    reporter = Reporter(label, t.steps, start)
    try:
        progress = loop.train(
            programs,
            progress,
            data_keys,
            eval_keys,
            steps=t.steps,
            log_every=t.log_every,
            eval_every=t.eval_every,
            checkpoint_every=t.checkpoint_every,
            save=_saver(checkpoint, run_dirs, events),
            on_log=reporter,
            stop_when_all_diverged=True,
        )
    finally:
        reporter.close()
        for e in events:
            e.close()
    final = loop.fetch(progress.states)
    results = []
    for i, (d, c) in enumerate(zip(run_dirs, configs, strict=True)):
        rows = writers.metric_rows(progress, i)
        result = writers.run_result(final, progress, i, spec.task, c)
        if is_writer():
            params = jax.tree.map(lambda a, i=i: np.asarray(a[i]), final.params)
            writers.write_run(d, c, rows, result, params, spec.task)
        results.append(result)
    return results


def _saver(checkpoint: pathlib.Path, run_dirs: list[pathlib.Path], events: list[writers.Events]):
    """What a group does at each checkpoint: TensorBoard's new rows appended first, then the checkpoint, then each
    run's metrics.jsonl (derived from it, so a resume rewrites it)."""

    def save(p: loop.Progress) -> None:
        if not is_writer():
            checkpoints.save(checkpoint, p)  # every process takes part in gathering the state; process 0 writes
            return
        rows = [writers.metric_rows(p, i) for i in range(len(run_dirs))]
        for e, r in zip(events, rows, strict=True):
            e.add(r)
        checkpoints.save(checkpoint, p)
        for d, r in zip(run_dirs, rows, strict=True):
            workdir_lib.write(d / "metrics.jsonl", "".join(workdir_lib.to_json(x, None) + "\n" for x in r))

    return save


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
    workdir, config = pathlib.Path(workdir), config_lib.complete(config)
    if sweep is None:
        entries = [("", config, workdir)]
    else:
        names = [config_lib.run_name(u) for u in sweep]
        entries = [(n, config_lib.override(config, u), workdir / "runs" / n) for n, u in zip(names, sweep, strict=True)]
        if len({n for n, _, _ in entries}) != len(entries):
            raise config_lib.ConfigError("sweep: two entries give the same run name; make the entries distinct")
    specs = {}
    for name, c, _ in entries:
        try:
            specs[name] = config_lib.validate(c)
        except config_lib.ConfigError as err:
            raise config_lib.ConfigError(f"{name}: {err}" if name else str(err)) from None

    bound = workdir_lib.binding(json.loads(config.to_json()), {"sweep": sweep} if sweep is not None else None)
    groups: dict[str, list] = {}
    for entry in entries:
        groups.setdefault(config_lib.group_key(entry[1]), []).append(entry)
    results = {}
    with workdir_lib.Workdir(workdir, bound, overwrite, writer=is_writer()):
        for g, members in enumerate(groups.values()):
            if all((d / "result.json").exists() for _, _, d in members):
                results.update({name: json.loads((d / "result.json").read_text()) for name, _, d in members})
                continue
            checkpoint = workdir / ("checkpoint.msgpack" if sweep is None else f"groups/group-{g}.msgpack")
            label = f"[group {g + 1}/{len(groups)}, {len(members)} run(s)]" if sweep is not None else "[run]"
            if is_writer() and sweep is not None:
                for _, c, d in members:
                    workdir_lib.write(d / "config.json", c.to_json(indent=2))
            configs, dirs = [c for _, c, _ in members], [d for _, _, d in members]
            start = time.perf_counter()
            out = train_group(configs, [specs[name] for name, _, _ in members], dirs, checkpoint, label)
            logging.info("%s done in %.0f s", label, time.perf_counter() - start)
            results.update({name: r for (name, _, _), r in zip(members, out, strict=True)})
        if sweep is not None and is_writer():
            workdir_lib.write(workdir / "results.json", workdir_lib.to_json(results))
            workdir_lib.write(workdir / "report.md", writers.sweep_report(results))
    return results
