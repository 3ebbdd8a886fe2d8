"""Bidirectional, stacked and learned-initial-carry layers against hand-built references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gated
from tests.test_scan import LENGTHS, _assert_close, _reference_batch

T, B, D = 7, 4, 3


def _xs(dtype=jnp.float64):
    return jnp.asarray(np.random.default_rng(5).standard_normal((T, B, D)), dtype)


def _zeros(cell):
    return cell.initial_carry((B,), jnp.float64)


def _perturbed(params, scale=0.3):
    """Layer parameters with every leaf perturbed (non-zero biases, peepholes and initial carries)."""
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(11)
    return jax.tree.unflatten(treedef, [a + scale * rng.standard_normal(a.shape) for a in leaves])


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional_equals_forward_and_backward_references(merge):
    fw, bw = gated.cells.LSTM(5, peepholes=True), gated.cells.GRU(5)
    layer = gated.Bidirectional(fw, bw, merge=merge)
    params = _perturbed(layer.init(jax.random.key(0), D, jnp.float64))
    xs, lengths = _xs(), jnp.asarray(LENGTHS)
    carry, ys = jax.jit(lambda p, x: layer(p, x, lengths=lengths))(params, xs)

    ref_f_final, ref_f, _ = _reference_batch(fw, params.forward.cell, xs, _zeros(fw), LENGTHS)
    ref_b_final, ref_b, _ = _reference_batch(bw, params.backward.cell, xs, _zeros(bw), LENGTHS, reverse=True)
    expected = np.concatenate([ref_f, ref_b], axis=-1) if merge == "concat" else ref_f + ref_b
    assert ys.shape == (T, B, layer.output_size) == expected.shape
    _assert_close(ys, expected)
    _assert_close(carry.forward, ref_f_final)
    _assert_close(carry.backward, ref_b_final)


def test_bidirectional_default_backward_cell_has_its_own_parameters():
    layer = gated.Bidirectional(gated.cells.RNN(4))
    params = layer.init(jax.random.key(0), D)
    assert layer.backward.cell == layer.forward.cell and layer.backward.reverse
    assert not np.allclose(params.forward.cell.input_kernel, params.backward.cell.input_kernel)


def test_stack_with_residual_equals_layer_by_layer_reference():
    cells = [gated.cells.LSTM(5), gated.cells.GRU(5, reset="before"), gated.cells.RNN(5)]
    layer = gated.Stack(cells, residual=True)
    params = _perturbed(layer.init(jax.random.key(0), D, jnp.float64))
    lengths = jnp.asarray(LENGTHS)
    carry, ys = jax.jit(lambda p, x: layer(p, x, lengths=lengths))(params, _xs())

    inputs = np.asarray(_xs())
    for i, (cell, p) in enumerate(zip(cells, params, strict=True)):
        final, out, _ = _reference_batch(cell, p.cell, inputs, _zeros(cell), LENGTHS)
        _assert_close(carry[i], final)
        inputs = out + inputs if i > 0 else out
    _assert_close(ys, inputs)
    assert float(jnp.abs(ys[3:, 1]).max()) == 0.0  # padding stays zero through the residual sums


def test_stack_of_bidirectional_layers_and_batch_major_inputs():
    layer = gated.Stack([gated.Bidirectional(gated.cells.LSTM(4)), gated.Bidirectional(gated.cells.GRU(3))])
    params = layer.init(jax.random.key(0), D, jnp.float64)
    xs = _xs()
    carry, ys = layer(params, xs)
    assert ys.shape == (T, B, 6)
    carry_bm, ys_bm = layer(params, jnp.swapaxes(xs, 0, 1), time_axis=1)
    _assert_close(jnp.swapaxes(ys_bm, 0, 1), ys, 0, 0)
    _assert_close(carry_bm, carry, 0, 0)
    _, first = layer.layers[0](params[0], xs)
    _, second = layer.layers[1](params[1], first)
    _assert_close(second, ys, 0, 0)


def test_learned_initial_carry_is_broadcast_and_trained():
    cell = gated.cells.LSTM(5)
    layer = gated.Recurrent(cell, learn_initial_carry=True)
    params = _perturbed(layer.init(jax.random.key(0), D, jnp.float64))
    assert jax.tree.map(jnp.shape, params.initial_carry) == gated.LSTMState((5,), (5,))
    xs = _xs()
    _, ys = layer(params, xs)
    broadcast = jax.tree.map(lambda a: jnp.broadcast_to(a, (B, 5)), params.initial_carry)
    _, ys_ref = gated.run(cell, params.cell, xs, carry=broadcast)
    _assert_close(ys, ys_ref, 0, 0)

    def loss(p):
        return jnp.sum(layer(p, xs)[1] ** 2)

    def loss_by_carry(carry):
        return jnp.sum(gated.run(cell, params.cell, xs, carry=carry)[1] ** 2)

    grad_initial = jax.grad(loss)(params).initial_carry
    grad_by_example = jax.grad(loss_by_carry)(broadcast)
    _assert_close(grad_initial, jax.tree.map(lambda a: a.sum(0), grad_by_example))
    assert float(jnp.abs(grad_initial.c).max()) > 0.0


def test_stack_residual_size_mismatch_is_refused():
    with pytest.raises(ValueError, match="residual=True: layer 1 maps size 5 to 4"):
        gated.Stack([gated.cells.LSTM(5), gated.cells.LSTM(4)], residual=True)


def _sequence_layers():
    """One of every sequence layer: the recurrent layers, the convolution, each mixer, a residual block, a model."""
    lstm = gated.cells.LSTM(4)
    return [
        gated.Recurrent(lstm),
        gated.Bidirectional(lstm),
        gated.Stack([lstm]),
        gated.blocks.CausalConv(),
        *(gated.mixers.get(name, gated.cells.get(cell, 4)) for name, cell in
          (("griffin", "rglru"), ("mamba", "ssm"), ("mlstm", "mlstm"), ("slstm", "slstm"))),
        gated.models.Residual(gated.blocks.CausalConv()),
        gated.models.Model(vocab_size=5, width=4, layers=(gated.blocks.CausalConv(),)),
    ]  # fmt: skip


def test_every_sequence_layer_has_one_call():
    import inspect

    want = inspect.signature(gated.blocks.Sequential.__call__)
    for layer in _sequence_layers():
        assert isinstance(layer, gated.blocks.Sequential), type(layer).__name__
        assert inspect.signature(type(layer).__call__) == want, type(layer).__name__
        assert gated.models.sequential(layer)


def test_a_layer_refuses_parameters_of_another_type_and_lengths_it_does_not_read():
    for layer in _sequence_layers():
        name = type(layer).__name__
        with pytest.raises(TypeError, match=rf"params: expected {layer.params_type.__name__} \({name}.init\), got"):
            layer(object(), jnp.zeros((3, 2, 4)))
    conv = gated.blocks.CausalConv()
    params = conv.init(jax.random.key(0), 4)
    with pytest.raises(ValueError, match=r"lengths: CausalConv reads no sequence lengths \(it is causal"):
        conv(params, jnp.zeros((3, 2, 4)), lengths=jnp.asarray([3, 2]))


@pytest.mark.parametrize("layer_type", ["stack", "bidirectional"])
def test_stack_and_bidirectional_pass_the_key_to_their_stochastic_layers(layer_type):
    cell = gated.cells.RecurrentDropout(cell=gated.cells.GRU(4), dropout=0.5)
    layer = gated.Stack([cell, cell]) if layer_type == "stack" else gated.Bidirectional(cell)
    assert layer.stochastic
    params, xs, key = layer.init(jax.random.key(0), D), _xs(jnp.float32), jax.random.key(3)
    _, ys = layer(params, xs, key=key)
    _, evaluated = layer(params, xs)
    assert not np.allclose(ys, evaluated)  # the masks were drawn
    inner = layer.layers if layer_type == "stack" else (layer.forward, layer.backward)
    keys = jax.random.split(key, 2)
    if layer_type == "stack":
        hidden = layer.layers[1](params[1], layer.layers[0](params[0], xs, key=keys[0])[1], key=keys[1])[1]
    else:
        outs = [sub(p, xs, key=k)[1] for sub, p, k in zip(inner, params, keys, strict=True)]
        hidden = jnp.concatenate(outs, axis=-1)
    np.testing.assert_array_equal(ys, hidden)
