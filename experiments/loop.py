"""The one training loop, shared by the engine (``experiments.engine``) and the studies.

``init or restore -> a pure step (over the runs of a group) -> periodic evaluation and checkpoints -> outputs``:

- :func:`programs` compiles a group's step and evaluation once (cached per model, task, optimiser and sizes),
  over the leading run axis (:func:`over_runs`).
- :func:`init_states` gives each run's initial state, its hyperparameters (peak learning rate, clip threshold) in
  its optimiser state, stacked over the runs.
- :func:`train` steps the stacked states, records the metrics every ``log_every`` steps and the test metrics every
  ``eval_every`` steps and at the last step, and hands a :class:`Progress` (state, history, evaluations) to
  ``save`` every ``checkpoint_every`` steps and at the end. Started again from a saved :class:`Progress` it goes on
  to exactly the numbers of an uninterrupted run: the data of step ``s`` are drawn from ``fold_in(key, s)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from gated import models as models_lib

from . import tasks as tasks_lib
from . import train as train_lib


def over_runs(fn, donate_first: bool = False) -> Callable:
    """A compiled program that applies ``fn`` to each run, over the leading run axis of every argument.

    On one CPU device, run by run: ``fn`` compiled for ONE run and called once per run, so a run gives the same
    numbers, to the bit, alone and inside a group (a ``lax.map`` over the runs compiles differently for one run than
    for several, and its float32 results drift apart in the last bits), and as fast: on XLA:CPU a vmapped group
    trains slower than its runs one by one (``benchmarks/results/transforms.md``). Elsewhere (an accelerator, or
    runs sharded over several devices), ``jax.jit(jax.vmap(fn))``.
    """
    donate = (0,) if donate_first else ()
    if not (jax.default_backend() == "cpu" and jax.device_count() == 1):
        return jax.jit(jax.vmap(fn), donate_argnums=donate)
    single = jax.jit(fn, donate_argnums=donate)

    @jax.jit
    def unstack(args):
        runs = jax.tree.leaves(args)[0].shape[0]
        return [jax.tree.map(lambda a, i=i: a[i], args) for i in range(runs)]

    stack = jax.jit(lambda outs: jax.tree.map(lambda *a: jnp.stack(a), *outs))
    return lambda *args: stack([single(*a) for a in unstack(args)])


class Programs(NamedTuple):
    """A group's compiled programs: ``step(states, data_keys) -> (states, metrics)`` and
    ``evaluate(params, eval_keys) -> metrics``, both over the leading run axis."""

    step: Callable
    evaluate: Callable


@functools.lru_cache(maxsize=16)
def _programs(model, task, optimizer, batch_size, eval_batch_size, mesh) -> Programs:
    step = train_lib.make_train_step(model, task, optimizer, batch_size, mesh)
    evaluate = train_lib.make_eval_step(model, task, eval_batch_size)
    return Programs(over_runs(step, donate_first=True), over_runs(evaluate))


def programs(
    model: models_lib.Model,
    task: tasks_lib.Task,
    optimizer: train_lib.OptimizerSpec,
    batch_size: int,
    eval_batch_size: int,
    mesh: jax.sharding.Mesh | None = None,
) -> Programs:
    """The jitted step and evaluation of a group, built once per distinct (hashable) set of arguments, so a rerun or
    a second group of the same shapes reuses the compiled programs."""
    try:
        return _programs(model, task, optimizer, batch_size, eval_batch_size, mesh)
    except TypeError:  # an unhashable field: build without the cache
        return _programs.__wrapped__(model, task, optimizer, batch_size, eval_batch_size, mesh)


def init_states(
    models: Sequence[models_lib.Model],
    task: tasks_lib.Task,
    optimizer: train_lib.OptimizerSpec,
    seeds: Sequence[int],
    learning_rates: Sequence[float],
    clip_thresholds: Sequence[float],
    init_transform: Callable[[Any], Any] | None = None,
    dtype=jnp.float32,
) -> tuple[train_lib.TrainState, jax.Array, jax.Array]:
    """Each run's initial state (from ``key(seed)``), stacked over the runs, with its data and test keys.

    ``models`` may differ in what changes only the initial parameters (e.g. the LSTM's forget bias).
    ``init_transform`` edits each run's initial :class:`gated.models.ModelParams`.
    Returns ``(states, data keys, test keys)``, each with a leading run axis.
    """
    states, data_keys, eval_keys = [], [], []
    for model, seed, lr, clip in zip(models, seeds, learning_rates, clip_thresholds, strict=True):
        k_init, k_data, k_eval = jax.random.split(jax.random.key(seed), 3)
        params = model.init(k_init, dtype)
        if init_transform is not None:
            params = init_transform(params)
        states.append(train_lib.init_state(params, optimizer, lr, clip))
        data_keys.append(k_data)
        eval_keys.append(k_eval)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *states)
    return stacked, jnp.stack(data_keys), jnp.stack(eval_keys)


def fetch(tree: Any) -> Any:
    """The values of ``tree`` as NumPy arrays on this host, also where they are sharded over several processes."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def to_global(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """``tree`` (the same values on every process) placed with ``sharding``, which may span several processes'
    devices (``jax.distributed``): each process gives its devices their part."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def place(a):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(place(jax.random.key_data(a)), impl=jax.random.key_impl(a))
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)


class Progress(NamedTuple):
    """Where a group of runs stands: the stacked state, the metrics recorded so far (``history``: name ->
    ``(records, runs)``, with ``"step"``) and the test metrics (``evaluations``, likewise)."""

    states: train_lib.TrainState
    history: dict[str, np.ndarray]
    evaluations: dict[str, np.ndarray]


def _append(table: dict[str, np.ndarray], step: int, values: dict[str, Any], runs: int) -> dict[str, np.ndarray]:
    row = {"step": np.full((runs,), step, np.int64), **{k: np.asarray(v) for k, v in values.items()}}
    if not table:
        return {k: v[None] for k, v in row.items()}
    return {k: np.concatenate([table[k], row[k][None]]) for k in row}


def train(
    programs: Programs,
    progress: Progress,
    data_keys: jax.Array,
    eval_keys: jax.Array,
    *,
    steps: int,
    log_every: int = 1,
    eval_every: int = 0,
    checkpoint_every: int = 0,
    save: Callable[[Progress], None] | None = None,
    on_log: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    stop_when_all_diverged: bool = False,
) -> Progress:
    """Trains the stacked runs of ``progress`` up to ``steps`` and returns where they stand.

    Metrics are recorded at every multiple of ``log_every``, test metrics at every multiple of ``eval_every``
    (0: never) and both at the last step. ``save(progress)`` is called every ``checkpoint_every`` steps (0: never)
    and at the end. With ``stop_when_all_diverged``, training stops (and is recorded) at the first logged step at
    which every run has diverged.
    """
    states, history, evaluations = progress
    runs = int(np.shape(data_keys)[0])
    start = int(fetch(states.step)[0])

    def all_diverged(states) -> bool:
        return stop_when_all_diverged and bool(np.all(fetch(states.diverged_at) >= 0))

    if start >= steps or (start > 0 and all_diverged(states)):
        return progress
    for step in range(start + 1, steps + 1):
        states, metrics = programs.step(states, data_keys)
        stop = step % log_every == 0 and all_diverged(states)
        last = step == steps or stop
        if step % log_every == 0 or last:
            values = fetch(metrics)
            values["diverged"] = fetch(states.diverged_at) >= 0
            history = _append(history, step, values, runs)
            if on_log is not None:
                on_log(step, {**values, "diverged_at": fetch(states.diverged_at)})
        if (eval_every and step % eval_every == 0) or last:
            evaluations = _append(evaluations, step, fetch(programs.evaluate(states.params, eval_keys)), runs)
        if save is not None and ((checkpoint_every and step % checkpoint_every == 0) or last):
            save(Progress(states, history, evaluations))
        if last:
            break
    return Progress(states, history, evaluations)
