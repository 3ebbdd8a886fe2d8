"""Dropout through time (gated.cells.RecurrentDropout): variational recurrent dropout and zoneout against a float64
NumPy loop with the same masks, their statistics, the plain cell at rate 0 and at evaluation, and the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import gated
from gated import models
from tests import reference
from tests.conftest import random_params

T, B, D, H = 6, 3, 4, 5
F64 = {"rtol": 1e-10, "atol": 1e-12}


def _numpy_run(wrapper, params, xs, masks):
    """One example: h_{t-1} * m feeds the step, then each carry leaf is zoned: d s_{t-1} + (1 - d) s_t."""
    cell, p = wrapper.cell, wrapper.cell.projection_size
    del p
    lstm = cell.name == "lstm"
    carry = (np.zeros(H), np.zeros(H)) if lstm else np.zeros(H)
    ys = []
    for x, mask in zip(np.asarray(xs), np.asarray(masks), strict=True):
        m, d = mask[:H], mask[H:]
        read = (carry[0] * m, carry[1]) if lstm else carry * m
        new, _ = reference.step(cell, params, read, x)
        if lstm:
            carry = (d[:H] * carry[0] + (1 - d[:H]) * new[0], d[H:] * carry[1] + (1 - d[H:]) * new[1])
            ys.append(carry[0])
        else:
            carry = d * carry + (1 - d) * new
            ys.append(carry)
    return np.stack(ys)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_equals_the_numpy_loop_with_the_same_masks(name):
    wrapper = gated.cells.RecurrentDropout(cell=gated.cells.get(name, H), dropout=0.4, zoneout=0.3)
    params = random_params(wrapper.cell, jax.random.key(0), D, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float64)
    layer = gated.Recurrent(wrapper)
    for key in (jax.random.key(2), None):  # training, then evaluation (ones, and the zoneout expectation p_z)
        _, ys = jax.jit(lambda p, x, k: layer(gated.RecurrentParams(p), x, key=k))(params, xs, key)
        masks = wrapper.masks(key, (B,), T, jnp.float64)
        for b in range(B):
            np.testing.assert_allclose(ys[:, b], _numpy_run(wrapper, params, xs[:, b], masks[:, b]), **F64)


def test_masks_statistics():
    """The variational mask is one per sequence (the same at every step), kept with probability 1 - p and scaled
    by 1/(1 - p); zoneout keeps each unit with probability p_z, step by step; 4 standard errors."""
    wrapper = gated.cells.RecurrentDropout(cell=gated.cells.LSTM(50), dropout=0.3, zoneout=0.2)
    masks = np.asarray(wrapper.masks(jax.random.key(0), (40,), 30))
    drop, zone = masks[..., :50], masks[..., 50:]
    np.testing.assert_array_equal(drop, np.broadcast_to(drop[0], drop.shape))
    assert set(np.unique(drop)) == {0.0, np.float32(1 / 0.7)}
    assert abs((drop[0] > 0).mean() - 0.7) < 4 * np.sqrt(0.21 / drop[0].size)
    assert set(np.unique(zone)) == {0.0, 1.0} and zone.shape == (30, 40, 100)
    assert abs(zone.mean() - 0.2) < 4 * np.sqrt(0.16 / zone.size)
    assert (zone[0] != zone[1]).any()  # a new zoneout mask at every step


def test_rate_zero_and_evaluation_are_the_plain_cell():
    cell = gated.cells.LSTM(H)
    params = gated.RecurrentParams(random_params(cell, jax.random.key(3), D, jnp.float64))
    xs = jax.random.normal(jax.random.key(4), (T, B, D), jnp.float64)
    plain = gated.Recurrent(cell, impl="reference")(params, xs)  # the path the wrapper takes (no kernel)
    for wrapper, key in ((gated.cells.RecurrentDropout(cell=cell), jax.random.key(5)),
                         (gated.cells.RecurrentDropout(cell=cell, dropout=0.5), None)):  # fmt: skip
        got = gated.Recurrent(wrapper)(params, xs, key=key)
        # equal to float64 rounding: XLA fuses the masks' products (by 1 and by 0) into the step differently
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15), got, plain)


def test_transforms_lengths_and_models():
    """Gradients equal finite differences with fixed masks; lengths hold the carry at padding; a model with a
    dropout LSTM layer changes with its key and decodes from its carry at evaluation."""
    wrapper = gated.cells.RecurrentDropout(cell=gated.cells.GRU(H), dropout=0.3, zoneout=0.2)
    layer = gated.Recurrent(wrapper)
    params = gated.RecurrentParams(random_params(wrapper.cell, jax.random.key(6), D, jnp.float64))
    xs = jax.random.normal(jax.random.key(7), (T, B, D), jnp.float64)
    check_grads(lambda p, x: layer(p, x, key=jax.random.key(8))[1], (params, xs), order=1, modes=("rev",))
    lengths = jnp.array([T, 2, 0])
    final, ys = layer(params, xs, lengths=lengths, key=jax.random.key(8))
    short = layer(params, xs[:2], key=jax.random.key(8))
    np.testing.assert_allclose(final[1], short[0][1], **F64)
    assert not np.asarray(ys[2:, 1]).any() and not np.asarray(final[2]).any()
    model = models.Model(7, H, layers=[layer], final_norm=None)
    model_params = model.init(jax.random.key(9))
    tokens = jnp.zeros((T, B), jnp.int32)
    assert not np.allclose(model(model_params, tokens, key=jax.random.key(1))[1], model(model_params, tokens)[1])
    new, logits = models.generate(model, model_params, tokens[:3], 3)
    np.testing.assert_allclose(logits, model(model_params, jnp.concatenate([tokens[:3], new]))[1][2:-1],
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_errors():
    with pytest.raises(ValueError, match=r"cell: expected a classic cell \('rnn', 'lstm', 'gru'\).*got a mingru"):
        gated.cells.RecurrentDropout(cell=gated.cells.MinGRU(H))
    with pytest.raises(TypeError, match="cell: expected a gated.cells cell, got str"):
        gated.cells.RecurrentDropout(cell="lstm")
    with pytest.raises(ValueError, match=r"dropout: expected a finite number in \[0, 1\), got 1.5"):
        gated.cells.RecurrentDropout(cell=gated.cells.LSTM(H), dropout=1.5)
    wrapper = gated.cells.RecurrentDropout(cell=gated.cells.LSTM(H), zoneout=0.1)
    params = wrapper.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match=r"x: expected shape \(19,\) \(D = 4 features and 15 mask entries"):
        wrapper.project(params, jnp.zeros(D))
