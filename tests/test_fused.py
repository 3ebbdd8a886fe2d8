"""The fused kernels (gated.fused, gated.run(impl="fused")) against the reference path: values and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import gated
from tests.conftest import random_carry, random_params, record_error

T, D, H = 6, 3, 4
LENGTHS = np.array([6, 2, 0, 4, 6])
FUSED_CELLS = [
    gated.cells.lstm(H),
    gated.cells.gru(H),
    gated.cells.gru(H, update="write"),
    gated.cells.rnn(H),
    gated.cells.rnn(H, activation="relu"),
    gated.cells.rnn(H, activation="sigmoid"),
    gated.cells.rnn(H, activation="identity"),
]
# (float64 tolerance, float32 tolerance): the bar, 1e-10 and 1e-5.
TOLERANCE = {jnp.float64: 1e-10, jnp.float32: 1e-5}


def _case(cell, dtype, batch=(5,)):
    params = random_params(cell, jax.random.key(0), D, dtype)
    carry = random_carry(cell, jax.random.key(1), batch, dtype)
    xs = jnp.asarray(np.random.default_rng(2).standard_normal((T, *batch, D)), dtype)
    # Cotangents for every output, so each gradient path is exercised.
    weights = jnp.asarray(np.random.default_rng(3).standard_normal((T, *batch, H)), dtype)
    return params, carry, xs, weights


@functools.partial(jax.jit, static_argnames=("cell", "reverse", "remat"))
def _values_and_grads(cell, params, carry, xs, weights, lengths, reverse, remat):
    """Outputs and gradients (params, carry, xs) of both paths, in one compiled program."""

    def loss(impl, params, carry, xs):
        final, ys = gated.run(cell, params, xs, carry=carry, lengths=lengths, reverse=reverse, remat=remat, impl=impl)
        value = jnp.sum(weights * ys) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final))
        return value, (final, ys)

    out = {}
    for impl in ("fused", "reference"):
        (_, aux), grads = jax.value_and_grad(functools.partial(loss, impl), argnums=(0, 1, 2), has_aux=True)(
            params, carry, xs
        )
        out[impl] = (aux, grads)
    return out


def _fresh():
    """``_values_and_grads`` with an empty compilation cache, for tests that patch what the kernels trace."""
    return jax.jit(_values_and_grads.__wrapped__, static_argnames=("cell", "reverse", "remat"))


def _compare(out, dtype, case):
    tol = TOLERANCE[dtype]
    fused, reference = jax.tree.leaves(out["fused"]), jax.tree.leaves(out["reference"])
    assert len(fused) == len(reference)
    for got, want in zip(fused, reference, strict=True):
        record_error("fused vs reference", case, dtype, got, want)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


CASES = [(cell, jnp.float64) for cell in FUSED_CELLS] + [(cell, jnp.float32) for cell in FUSED_CELLS[:4]]


@pytest.mark.parametrize(("cell", "dtype"), CASES, ids=lambda c: getattr(c, "name", None) or jnp.dtype(c).name)
def test_fused_equals_reference_with_lengths(cell, dtype):
    """Values and gradients, with padded sequences, read forwards and backwards."""
    params, carry, xs, weights = _case(cell, dtype)
    directions = (False, True) if dtype == jnp.float64 and cell in FUSED_CELLS[:3] else (False,)
    for reverse in directions:
        out = _values_and_grads(cell, params, carry, xs, weights, jnp.asarray(LENGTHS), reverse, False)
        _compare(out, dtype, f"{cell.name} lengths reverse={reverse}")


@pytest.mark.parametrize("chunk", [1, 2])  # and 6, one chunk, in the tests above
def test_fused_lstm_backward_in_chunks_equals_reference(chunk, monkeypatch):
    """The LSTM backward recomputes the gates chunk by chunk; every chunk length gives the reference's gradients."""
    monkeypatch.setattr(gated.fused, "_chunk_length", lambda num_steps, rows: chunk)
    cell = gated.cells.lstm(H)
    params, carry, xs, weights = _case(cell, jnp.float64)
    for lengths in (None, jnp.asarray(LENGTHS)):
        out = _fresh()(cell, params, carry, xs, weights, lengths, False, False)
        _compare(out, jnp.float64, f"lstm chunk={chunk}")


def test_chunk_length_divides_time():
    assert [gated.fused._chunk_length(t, b * 512) for t, b in ((100, 32), (1000, 16), (7, 32))] == [25, 50, 7]
    assert gated.fused._chunk_length(200, 64 * 1024) == 8


@pytest.mark.parametrize("remat", [False, True])
def test_fused_lstm_feature_major_equals_reference(remat, monkeypatch):
    """H >= 32 B: the LSTM kernel keeps activations (features, batch); same values and gradients."""
    monkeypatch.setattr(gated.fused, "_chunk_length", lambda num_steps, rows: 3)
    cell = gated.cells.lstm(32)
    assert gated.fused._feature_major(1, 32) and not gated.fused._feature_major(2, 32)
    params = random_params(cell, jax.random.key(0), D, jnp.float64)
    carry = random_carry(cell, jax.random.key(1), (1,), jnp.float64)
    xs = jnp.asarray(np.random.default_rng(2).standard_normal((T, 1, D)))
    weights = jnp.asarray(np.random.default_rng(3).standard_normal((T, 1, 32)))
    for lengths in (None, jnp.asarray([4])):
        out = _fresh()(cell, params, carry, xs, weights, lengths, True, remat)
        _compare(out, jnp.float64, f"lstm feature-major remat={remat}")


def test_fused_kernel_gradients_match_finite_differences():
    cell = gated.cells.lstm(H)
    params, carry, xs, _ = _case(cell, jnp.float64, batch=(2,))
    f = jax.jit(lambda p, c, x: gated.run(cell, p, x, carry=c, lengths=jnp.array([6, 3]), impl="fused"))
    check_grads(f, (params, carry, xs), order=1, modes=("rev",))

    def loss(p, impl):  # the parameters only: the kernel then skips the input gradient
        return jnp.sum(jnp.sin(gated.run(cell, p, xs, impl=impl)[1]))

    fused, reference = (jax.jit(jax.grad(loss), static_argnums=1)(params, impl) for impl in ("fused", "reference"))
    for got, want in zip(jax.tree.leaves(fused), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_auto_takes_the_fused_kernel_where_one_exists():
    xs = jnp.zeros((T, 2, D))

    def uses_fused(cell, **kwargs):
        params = cell.init(jax.random.key(0), D)
        text = str(jax.make_jaxpr(lambda p, x: gated.run(cell, p, x, **kwargs))(params, xs))
        return "custom_vjp_call" in text

    assert uses_fused(gated.cells.lstm(H))
    assert uses_fused(gated.cells.gru(H))
    assert not uses_fused(gated.cells.lstm(H, peepholes=True))
    assert not uses_fused(gated.cells.gru(H, reset="before"))
    assert not uses_fused(gated.cells.lstm(H), return_carries=True)
    assert not uses_fused(gated.cells.lstm(H), impl="reference")
    assert uses_fused(gated.cells.lstm(H), remat=True)  # the LSTM kernel always recomputes
    assert uses_fused(gated.cells.gru(H), remat=True)


def test_fused_refuses_what_it_does_not_cover():
    xs = jnp.zeros((T, 2, D))
    cell = gated.cells.lstm(H, coupled=True)
    with pytest.raises(ValueError, match="impl: 'fused' is not available here.*coupling"):
        gated.run(cell, cell.init(jax.random.key(0), D), xs, impl="fused")
    lstm = gated.cells.lstm(H)
    with pytest.raises(ValueError, match="return_carries"):
        gated.run(lstm, lstm.init(jax.random.key(0), D), xs, impl="fused", return_carries=True)
    with pytest.raises(ValueError, match="impl: expected one of"):
        gated.run(lstm, lstm.init(jax.random.key(0), D), xs, impl="fast")
    gru = gated.cells.gru(H)
    params = gru.init(jax.random.key(0), D)._replace(candidate_bias=None)
    with pytest.raises(ValueError, match=r"params.candidate_bias: expected shape \(4,\)"):
        gated.run(gru, params, xs, impl="fused")
