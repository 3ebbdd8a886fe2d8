"""Every bad input gets an error that names the argument, what it got and what was expected."""

import jax
import jax.numpy as jnp
import pytest

import gated

LSTM = gated.cells.LSTM(4)
PARAMS = LSTM.init(jax.random.key(0), 3)
XS = jnp.zeros((5, 2, 3), jnp.float32)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: gated.cells.LSTM(4, forget_bais=1.0), TypeError, r"unknown option\(s\) \['forget_bais'\]"),
        (lambda: gated.cells.get("lstm", 4, activation="relu"), TypeError, r"unknown option\(s\) \['activation'\]"),
        (lambda: gated.cells.get("transformer", 4), ValueError, r"cell name: expected one of \('rnn', 'lstm'"),
        (lambda: gated.cells.RNN(0), ValueError, r"hidden_size: expected a positive int, got 0"),
        (lambda: gated.cells.RNN(4.0), ValueError, r"hidden_size: expected a positive int, got 4.0"),
        (lambda: gated.cells.RNN(4, activation="gelu"), ValueError, r"activation: expected one of .* got 'gelu'"),
        (lambda: gated.cells.GRU(4, update="add"), ValueError, r"update: expected 'keep' or 'write', got 'add'"),
        (lambda: gated.cells.GRU(4, reset="never"), ValueError, r"reset: expected 'before' or 'after'"),
        (lambda: gated.cells.LSTM(4, recurrent_init="xavier"), ValueError, r"recurrent_init: expected one of"),
        (lambda: gated.cells.LSTM(4, coupled=True, forget_gate=False), ValueError, r"needs forget_gate=True"),
        (lambda: gated.cells.LSTM(4, chrono_init=2), ValueError, r"chrono_init: expected an int T_max > 2"),
        (lambda: gated.cells.LSTM(4, peepholes=1), TypeError, r"peepholes: expected a bool, got 1"),
        (lambda: LSTM.init(jax.random.key(0), -3), ValueError, r"input_size: expected a positive int, got -3"),
        (lambda: gated.Bidirectional(LSTM, gated.cells.GRU(3), merge="sum"), ValueError, r"merge='sum'.* 4 .* 3"),
        (lambda: gated.Bidirectional(LSTM, merge="max"), ValueError, r"merge: expected one of \('concat', 'sum'\)"),
    ],
)
def test_bad_cell_and_layer_options(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(xs=jnp.zeros((5, 2, 4))), ValueError, r"xs: expected input size D = 3 on the last axis, got shape"),
        (
            dict(xs=jnp.zeros((5,))),
            ValueError,
            r"xs: expected shape \(T, \*batch, D\) with rank >= 2, got shape \(5,\)",
        ),
        (dict(xs=jnp.zeros((5, 2, 3), jnp.int32)), TypeError, r"xs: expected a floating-point array, got dtype int32"),
        (dict(time_axis=2), ValueError, r"time_axis: expected an axis of xs other than the last .* got 2"),
        (dict(time_axis=3), ValueError, r"time_axis: .* \[-3, 1\] for xs of rank 3, got 3"),
        (
            dict(lengths=jnp.array([5, 6])),
            ValueError,
            r"lengths: expected values in \[0, T\] = \[0, 5\], got .*\[5, 6\]",
        ),
        (dict(lengths=jnp.array([-1, 2])), ValueError, r"lengths: expected values in \[0, T\]"),
        (dict(lengths=jnp.array([1.0, 2.0])), TypeError, r"lengths: expected an integer array, got dtype float"),
        (dict(lengths=jnp.array([1, 2, 3])), ValueError, r"lengths: expected shape \(2,\) .* got \(3,\)"),
        (
            dict(carry=LSTM.initial_carry((3,))),
            ValueError,
            r"carry: expected leaves of shape \(\*batch, H\) = \(2, 4\)",
        ),
        (dict(carry=jnp.zeros((2, 4))), ValueError, r"carry: expected a pytree of structure"),
        (
            dict(carry=LSTM.initial_carry((2,), jnp.float64)),
            TypeError,
            r"carry: expected dtype float32 \(that of the projected inputs\), got float64",
        ),
    ],
)
def test_bad_run_arguments(kwargs, error, message):
    kwargs = {"xs": XS, **kwargs}
    xs = kwargs.pop("xs")
    with pytest.raises(error, match=message):
        gated.run(LSTM, PARAMS, xs, **kwargs)


def test_bad_inputs_to_one_step():
    carry = LSTM.initial_carry()
    with pytest.raises(ValueError, match=r"x: expected shape \(3,\) \(one example of input_size D"):
        LSTM(PARAMS, carry, jnp.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"x: expected a floating-point array, got dtype int32"):
        LSTM(PARAMS, carry, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"carry \(leaf 0\): expected shape \(4,\)"):
        LSTM(PARAMS, LSTM.initial_carry((2,)), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"u: expected shape \(16,\)"):
        LSTM.step(PARAMS, carry, jnp.zeros(12))
    with pytest.raises(ValueError, match=r"params.peepholes: expected shape \(12,\), got None"):
        gated.cells.LSTM(4, peepholes=True)(PARAMS, carry, jnp.zeros(3))
    gru = gated.cells.GRU(4)
    with pytest.raises(ValueError, match=r"params.candidate_bias: expected None for reset='before'"):
        gated.cells.GRU(4, reset="before")(gru.init(jax.random.key(0), 3), jnp.zeros(4), jnp.zeros(3))


def test_lengths_are_checked_by_shape_under_jit():
    run = jax.jit(lambda xs, lengths: gated.run(LSTM, PARAMS, xs, lengths=lengths))
    with pytest.raises(ValueError, match=r"lengths: expected shape \(2,\)"):
        run(XS, jnp.array([1, 2, 3]))
    assert run(XS, jnp.array([1, 2]))[1].shape == (5, 2, 4)
