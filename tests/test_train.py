"""The train step: its measurements, clipping and the divergence freeze."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gated
from experiments import tasks
from experiments import train as train_lib

TASK = tasks.get("delayed_recall", length=8, delay=2, classes=3)


ADAM, LSTM = train_lib.OptimizerSpec(), gated.cells.LSTM(4)


def _setup(optimizer=ADAM, lr=1e-2, clip=1.0, cell=LSTM):
    model = train_lib.layer_model(gated.Recurrent(cell), TASK)
    params = model.init(jax.random.key(0))
    hp = (lr, clip)
    step = jax.jit(train_lib.make_train_step(model, TASK, optimizer, 5))
    return model, params, hp, step


def test_metrics_are_measured_before_clipping():
    optimizer = train_lib.OptimizerSpec(name="sgd", momentum=0.0, clip="global_norm")
    model, params, hp, step = _setup(optimizer, lr=1.0, clip=1e-3)
    state = train_lib.init_state(params, optimizer, *hp)
    key = jax.random.key(1)
    new, m = step(state, key)

    batch = TASK.sample(jax.random.fold_in(key, 0), 5)
    (loss, extra), grads = jax.jit(
        jax.value_and_grad(lambda p: train_lib.loss_and_metrics(model, TASK.kind, p, batch), has_aux=True)
    )(params)
    np.testing.assert_allclose(m["loss"], loss, rtol=1e-6)
    np.testing.assert_allclose(m["accuracy"], extra["accuracy"], rtol=1e-6)
    np.testing.assert_allclose(m["grad_norm"], optax.tree.norm(grads), rtol=1e-6)
    assert bool(m["clipped"]) and bool(m["finite"]) and int(new.step) == 1
    # sgd with lr 1 after clip_by_global_norm: the update has exactly the threshold norm
    np.testing.assert_allclose(m["update_norm"], 1e-3, rtol=1e-5)
    np.testing.assert_allclose(m["param_norm"], optax.tree.norm(new.params), rtol=1e-6)


def test_per_step_loss_excludes_unlabelled_steps():
    model, params, _, _ = _setup()
    batch = TASK.sample(jax.random.key(2), 5)
    loss, _ = train_lib.loss_and_metrics(model, TASK.kind, params, batch)
    logits = model(params, batch.xs)[1]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[2:], batch.targets[2:])
    np.testing.assert_allclose(loss, ce.mean(), rtol=1e-6)


def test_last_step_readout_reads_each_sequence_at_its_length():
    """The classic layer and readout is a gated.models.Model without an embedding: its "last" readout is the head
    at each sequence's last valid step, and a bidirectional layer reads each sequence back from it."""
    task = tasks.get("adding", length=6)  # features in, one output at the last step
    for layer in (gated.Recurrent(gated.cells.GRU(3)), gated.Bidirectional(gated.cells.GRU(3))):
        model = train_lib.layer_model(layer, task)
        assert isinstance(model, gated.models.Model) and model.readout == "last"
        params = model.init(jax.random.key(0))
        xs = jax.random.normal(jax.random.key(1), (6, 3, task.input_size))
        lengths = jnp.array([6, 2, 4])
        out = model(params, xs, lengths=lengths)[1]
        _, ys = layer(params.layers[0], xs, lengths=lengths)
        expected = jnp.stack([ys[5, 0], ys[1, 1], ys[3, 2]]) @ params.head.kernel + params.head.bias[None, :]
        np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_divergence_freezes_the_state_and_records_the_step():
    optimizer = train_lib.OptimizerSpec(name="sgd", momentum=0.0, clip="none")
    _, params, hp, step = _setup(optimizer, lr=1.0, cell=gated.cells.RNN(4, activation="identity"))
    params = params._replace(head=params.head._replace(kernel=params.head.kernel.at[0, 0].set(jnp.inf)))
    state = train_lib.init_state(params, optimizer, *hp)
    finite = []
    for _ in range(4):
        before = state
        state, m = step(state, jax.random.key(0))
        finite.append(bool(m["finite"]))
        if not finite[-1]:
            for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(state.params), strict=True):
                np.testing.assert_array_equal(a, b)
    assert not all(finite) and int(state.step) == 4
    assert int(state.diverged_at) == finite.index(False) + 1  # the step number, counting from 1 as the logs do


def test_hyperparameters_live_in_the_optimizer_state_and_the_schedule_ends_small():
    optimizer = train_lib.OptimizerSpec(name="sgd", momentum=0.0, clip="none", schedule="warmup_cosine",
                                        warmup_steps=2, steps=10)  # fmt: skip
    _, params, _, step = _setup(optimizer)
    state = train_lib.init_state(params, optimizer, 0.5, 1.0)
    assert float(state.opt_state.hyperparams["learning_rate"]) == 0.5
    lrs = []
    for _ in range(10):
        before = state.params
        state, m = step(state, jax.random.key(3))
        grads_norm = float(m["grad_norm"])
        lrs.append(float(m["update_norm"]) / grads_norm)  # sgd: |update| = lr |g|
        del before
    np.testing.assert_allclose(lrs[:3], [0.0, 0.25, 0.5], atol=1e-6)  # warm-up to the peak from the state
    assert lrs[-1] < 0.05 * 0.5  # the cosine ends near 0
