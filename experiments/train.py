"""Training pieces as pure functions: the engine's model (a :class:`gated.models.Model`), its loss, an optax
optimiser with gradient clipping, and a jittable ``train_step``.

The optimiser is built once (:meth:`OptimizerSpec.make`). Its numeric
hyperparameters (peak learning rate, clip threshold) live in its state
(``optax.inject_hyperparams``), not in the program, so that several runs that
differ only in them are ONE compiled program over stacked states.

Notation: T time, B batch, D input size, H hidden size, C outputs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gated import layers as layers_lib
from gated import models as models_lib

from . import tasks as tasks_lib

Array = jax.Array

OPTIMIZERS = ("sgd", "adam", "adamw")
CLIPS = ("global_norm", "value", "none")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


DTYPES = models_lib.COMPUTE_DTYPES  # config.model.dtype: the compute type (the parameters stay float32)


def layer_model(layer: Any, task: tasks_lib.Task, dtype: str = "float32") -> models_lib.Model:
    """The classic recurrent layer and its dense readout for ``task``, as the engine's one model type: a
    :class:`gated.models.Model` without an embedding (the layer reads the one-hot tokens or the features), a head
    with a bias, ``o_t = h_t W + b`` at every step or at each sequence's last valid step (``task.readout``; seed
    002's sequence element classification is the former)."""
    return models_lib.Model(
        vocab_size=task.output_size,
        width=layer.output_size,
        layers=(layer,),
        input_size=None if task.tokens else task.input_size,
        input_vocab_size=task.input_size if task.tokens and task.input_size != task.output_size else None,
        final_norm=None,
        tie_embeddings=False,
        embed=False,
        head_bias=True,
        readout=task.readout,
        dtype=None if dtype == "float32" else dtype,
    )


def loss_and_metrics(
    model: models_lib.Model,
    kind: str,
    params: Any,
    batch: tasks_lib.Batch,
    key: Array | None = None,
    bits: bool = False,
):
    """Mean loss over labelled steps (cross-entropy or squared error) and ``{"accuracy": ...}`` for classification,
    with ``bits`` its ``bits_per_byte`` (cross-entropy / log 2) too. The model runs in its ``dtype`` (parameters
    and float inputs cast to it); the loss is computed in float32. ``key``: the model's dropout masks."""
    outputs = model(params, batch.xs, lengths=batch.lengths, key=key)[1].astype(jnp.float32)
    if model.readout == "per_step":
        weights = batch.mask.astype(outputs.dtype) / jnp.maximum(jnp.sum(batch.mask), 1)
    else:
        weights = jnp.full(outputs.shape[:1], 1.0 / outputs.shape[0], outputs.dtype)
    if kind == "classification":
        ce = optax.softmax_cross_entropy_with_integer_labels(outputs, batch.targets)
        correct = (jnp.argmax(outputs, axis=-1) == batch.targets).astype(outputs.dtype)
        loss = jnp.sum(ce * weights)
        extra = {"bits_per_byte": loss / jnp.log(2.0)} if bits else {}
        return loss, {"accuracy": jnp.sum(correct * weights), **extra}
    if kind == "regression":
        squared = jnp.sum((outputs - batch.targets) ** 2, axis=-1)
        return jnp.sum(squared * weights), {}
    raise ValueError(f"kind: expected 'classification' or 'regression', got {kind!r}")


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """The static part of an optimiser; the peak learning rate and clip threshold are values in its state.

    Attributes:
      name: "sgd" (with ``momentum``), "adam" or "adamw" (with ``weight_decay``).
      clip: "global_norm" (``optax.clip_by_global_norm``, Pascanu et al. 2013),
        "value" (``optax.clip``, elementwise) or "none".
      schedule: "constant", "cosine" (decay to 0 over ``steps``) or
        "warmup_cosine" (linear warm-up over ``warmup_steps``, then cosine).
    """

    name: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip: str = "global_norm"
    schedule: str = "constant"
    warmup_steps: int = 0
    steps: int = 1

    def __post_init__(self):
        for field, valid in (("name", OPTIMIZERS), ("clip", CLIPS), ("schedule", SCHEDULES)):
            if getattr(self, field) not in valid:
                raise ValueError(f"optimizer.{field}: expected one of {valid}, got {getattr(self, field)!r}")

    def learning_rate(self, peak: Array) -> optax.Schedule:
        """The schedule: ``peak`` (which may be traced: it lives in the optimiser state) times its shape."""
        if self.schedule == "constant":
            return lambda count: peak
        if self.schedule == "cosine":
            shape = optax.cosine_decay_schedule(1.0, max(self.steps, 1))
        else:
            warmup = max(self.warmup_steps, 1)
            shape = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, max(self.steps, warmup + 1))
        return lambda count: peak * shape(count)

    def make(self) -> optax.GradientTransformation:
        """``optax.chain(clip, base optimiser)`` under ``optax.inject_hyperparams``: one transformation for every
        run; each run's ``learning_rate`` (the schedule's peak) and ``clip_threshold`` are in the state that
        :meth:`init` returns."""

        def build(learning_rate, clip_threshold):
            lr = self.learning_rate(learning_rate)
            if self.name == "sgd":
                base = optax.sgd(lr, momentum=self.momentum)
            elif self.name == "adam":
                base = optax.adam(lr)
            else:
                base = optax.adamw(lr, weight_decay=self.weight_decay)
            if self.clip == "global_norm":
                clip = optax.clip_by_global_norm(clip_threshold)
            elif self.clip == "value":
                clip = optax.clip(clip_threshold)
            else:
                clip = optax.identity()
            return optax.chain(clip, base)

        return optax.inject_hyperparams(build, hyperparam_dtype=jnp.float32)(learning_rate=1.0, clip_threshold=1.0)

    def init(self, params: Any, learning_rate: float | Array, clip_threshold: float | Array) -> Any:
        """The optimiser state of one run, holding its hyperparameters."""
        state = self.make().init(params)
        hyperparams = {"learning_rate": learning_rate, "clip_threshold": clip_threshold}
        return state._replace(hyperparams={k: jnp.asarray(v, jnp.float32) for k, v in hyperparams.items()})

    def is_clipped(self, grads: Any, grad_norm: Array, clip_threshold: Array) -> Array:
        if self.clip == "global_norm":
            return grad_norm > clip_threshold
        if self.clip == "value":
            return jnp.any(jnp.stack([jnp.any(jnp.abs(g) > clip_threshold) for g in jax.tree.leaves(grads)]))
        return jnp.array(False)


class TrainState(NamedTuple):
    """``step`` (steps done), ``params``, ``opt_state`` and ``diverged_at``: -1, or the number (counting from 1, as
    the logs do) of the first step whose loss, gradients or parameters were not finite; from then on the state is
    frozen."""

    step: Array
    params: Any
    opt_state: Any
    diverged_at: Array


def init_state(
    params: Any, optimizer: OptimizerSpec, learning_rate: float | Array = 1e-3, clip_threshold: float | Array = 1.0
) -> TrainState:
    opt_state = optimizer.init(params, learning_rate, clip_threshold)
    return TrainState(jnp.array(0, jnp.int32), params, opt_state, jnp.array(-1, jnp.int32))


def shard_batch(batch: tasks_lib.Batch, mesh: jax.sharding.Mesh | None, axis: str = "data") -> tasks_lib.Batch:
    """Constrains the batch axis B of every array of ``batch`` to be split over ``mesh``'s ``axis``
    (data parallelism: each device computes its share of the examples). No-op without a mesh."""
    if mesh is None:
        return batch
    P = jax.sharding.PartitionSpec
    spec = lambda a, b_axis: jax.sharding.NamedSharding(
        mesh, P(*([None] * b_axis), axis, *([None] * (a.ndim - b_axis - 1)))
    )
    targets_axis = 1 if batch.targets.shape[:2] == batch.mask.shape else 0
    shardings = tasks_lib.Batch(
        spec(batch.xs, 1), spec(batch.targets, targets_axis), spec(batch.mask, 1), spec(batch.lengths, 0)
    )
    return jax.lax.with_sharding_constraint(batch, shardings)


def make_train_step(
    model: models_lib.Model, task: tasks_lib.Task, optimizer: OptimizerSpec, batch_size: int, mesh=None
):
    """``train_step(state, data_key) -> (state, metrics)``, pure; jit it (over runs) once.

    The batch is ``task.sample(fold_in(data_key, state.step), batch_size)``, so a
    run's data depend only on its key and step. The metrics come from inside
    the step: loss, accuracy (classification), the global gradient norm BEFORE
    clipping, whether it was clipped, the update and parameter norms, and
    whether everything was finite. A non-finite step leaves the state as it
    was and records ``diverged_at``; later steps change nothing. With a
    ``mesh`` (axis "data"), the batch is split over its devices.
    """

    tx = optimizer.make()

    def train_step(state: TrainState, data_key: Array):
        step_key = jax.random.fold_in(data_key, state.step)
        batch = shard_batch(task.sample(step_key, batch_size), mesh)
        dropout_key = jax.random.fold_in(step_key, 1)  # the masks: another stream of the step's key

        def loss_fn(params):
            return loss_and_metrics(model, task.kind, params, batch, dropout_key, task.tokens)

        (loss, extra), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        param_norm = optax.tree.norm(params)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
        frozen = state.diverged_at >= 0
        keep = frozen | ~finite
        new = TrainState(
            state.step + 1,
            jax.tree.map(lambda old, n: jnp.where(keep, old, n), state.params, params),
            jax.tree.map(lambda old, n: jnp.where(keep, old, n), state.opt_state, opt_state),
            jnp.where(frozen | finite, state.diverged_at, state.step + 1),
        )
        metrics = {
            "loss": loss,
            **extra,
            "grad_norm": grad_norm,
            "clipped": optimizer.is_clipped(grads, grad_norm, state.opt_state.hyperparams["clip_threshold"]),
            "update_norm": optax.tree.norm(updates),
            "param_norm": param_norm,
            "finite": finite,
        }
        return new, metrics

    return train_step


def make_eval_step(model: models_lib.Model, task: tasks_lib.Task, batch_size: int):
    """``eval_step(params, key) -> metrics`` on one batch of ``batch_size`` from the test split."""

    def eval_step(params: Any, key: Array):
        loss, extra = loss_and_metrics(
            model, task.kind, params, task.sample(key, batch_size, "test"), None, task.tokens
        )
        return {"loss": loss, **extra}

    return eval_step


def build_layer(cell, num_layers: int = 1, bidirectional: bool = False, residual: bool = False, impl: str = "auto"):
    """A recurrent layer of ``num_layers`` cells, optionally bidirectional and residual, run by ``impl`` (see
    :func:`gated.run`)."""
    layer = layers_lib.Recurrent(cell, impl=impl)
    if bidirectional:
        layer = layers_lib.Bidirectional(layer)
    return layer if num_layers == 1 else layers_lib.Stack((layer,) * num_layers, residual=residual)
