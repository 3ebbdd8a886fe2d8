"""The opt-in C++ loops (gated.run(impl="native"), gated.native): against the reference path, and what they refuse.

The kernels are built from source into a fresh folder for this test session with the machine's C++ compiler. Where
they cannot be built these tests skip, naming the reason, unless GATED_REQUIRE_NATIVE=1 (set by .ci/run): then they
fail.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gated
from gated import native
from tests.conftest import random_carry, record_error

D = 3
F32 = 1e-5  # float32: the kernels' own exp and FMA order against XLA's


@pytest.fixture(scope="session")
def kernel(tmp_path_factory):
    native.configure(cache_dir=tmp_path_factory.mktemp("native"))
    reason = native.unavailable_reason()
    if reason is not None:
        if os.environ.get("GATED_REQUIRE_NATIVE") == "1":
            pytest.fail(f"the native kernels are required here (GATED_REQUIRE_NATIVE=1) but unavailable: {reason}")
        pytest.skip(f"native kernels unavailable: {reason}")


def _case(cell, batch=5, steps=7):
    params = cell.init(jax.random.key(0), D)
    carry = random_carry(cell, jax.random.key(1), (batch,), jnp.float32)
    xs = jnp.asarray(np.random.default_rng(2).standard_normal((steps, batch, D)), jnp.float32)
    weights = jnp.asarray(np.random.default_rng(3).standard_normal((steps, batch, cell.hidden_size)), jnp.float32)
    return params, carry, xs, weights


@functools.partial(jax.jit, static_argnames=("cell", "reverse", "remat"))
def _values_and_grads(cell, params, carry, xs, weights, lengths, reverse, remat):
    def loss(impl, p, c, x):
        final, ys = gated.run(cell, p, x, carry=c, lengths=lengths, reverse=reverse, remat=remat, impl=impl)
        return jnp.sum(weights * ys) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final)), (final, ys)

    return {
        impl: jax.value_and_grad(functools.partial(loss, impl), argnums=(0, 1, 2), has_aux=True)(params, carry, xs)
        for impl in ("native", "reference")
    }


# H = 16 and 48 (one and three 16-unit panels), batches with every remainder of the kernels' 4-row tiles.
CELLS = [gated.cells.LSTM(16), gated.cells.LSTM(48), gated.cells.GRU(16), gated.cells.GRU(48, update="write")]


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: f"{c.name}-{c.hidden_size}")
@pytest.mark.parametrize("batch", [1, 6, 9])
@pytest.mark.slow
def test_native_equals_reference(kernel, cell, batch):
    """Values and gradients (params, carry, inputs), with padded sequences, in both directions, with the gates kept
    and (remat) recomputed."""
    params, carry, xs, weights = _case(cell, batch)
    lengths = jnp.asarray(np.random.default_rng(batch).integers(0, 8, batch))
    for reverse, remat in ((False, False), (True, True)):
        out = _values_and_grads(cell, params, carry, xs, weights, lengths, reverse, remat)
        case = f"{cell.name} H={cell.hidden_size} B={batch} reverse={reverse} remat={remat}"
        for got, want in zip(jax.tree.leaves(out["native"]), jax.tree.leaves(out["reference"]), strict=True):
            record_error("native vs reference", case, jnp.float32, got, want)
            np.testing.assert_allclose(got, want, rtol=F32, atol=F32, err_msg=case)


@pytest.mark.slow
def test_nan_in_padded_steps_reaches_no_native_gradient(kernel):
    """As on the other paths (tests/test_inputs.py): NaN in the padding gives the values and gradients of zeros."""
    cell = gated.cells.GRU(16)
    params, carry, xs, weights = _case(cell, batch=3)
    lengths = jnp.array([7, 3, 0])
    padded = (jnp.arange(7)[:, None] >= lengths[None, :])[..., None]
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(weights * gated.run(cell, p, x, lengths=lengths, impl="native")[1])))
    with_nan, with_zeros = grad(params, jnp.where(padded, jnp.nan, xs)), grad(params, jnp.where(padded, 0.0, xs))
    for a, b in zip(jax.tree.leaves(with_nan), jax.tree.leaves(with_zeros), strict=True):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, b)


def test_native_threads_give_the_same_numbers(kernel):
    cell = gated.cells.LSTM(16)
    params, carry, xs, weights = _case(cell, batch=9)
    fn = jax.jit(jax.grad(lambda p: jnp.sum(weights * gated.run(cell, p, xs, carry=carry, impl="native")[1])))
    one = fn(params)
    native.configure(threads=3)
    try:
        three = jax.jit(fn.__wrapped__)(params)  # traced anew: the thread count is an attribute of the call
    finally:
        native._SETTINGS["threads"] = None
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(three), strict=True):
        np.testing.assert_array_equal(a, b)


def test_native_is_opt_in_and_vmaps_run_by_run(kernel):
    cell = gated.cells.GRU(16)
    params, carry, xs, _ = _case(cell)
    text = jax.jit(lambda p: gated.run(cell, p, xs)[1]).lower(params).as_text()
    assert "custom_call" not in text  # the default path never takes the kernels
    sweep = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
    got = jax.jit(jax.vmap(lambda p: gated.run(cell, p, xs, impl="native")[1]))(sweep)
    want = jax.jit(jax.vmap(lambda p: gated.run(cell, p, xs, impl="reference")[1]))(sweep)
    np.testing.assert_allclose(got, want, rtol=F32, atol=F32)


def test_forward_mode_names_the_option_to_change(kernel):
    cell = gated.cells.LSTM(16)
    params, _, xs, _ = _case(cell)

    def loss(p):
        return jnp.sum(gated.run(cell, p, xs, impl="native")[1] ** 2)

    with pytest.raises(TypeError, match="impl='native' serves reverse mode only.*impl='auto'"):
        jax.jvp(loss, (params,), (params,))
    with pytest.raises(TypeError, match="impl='native' serves reverse mode only.*impl='auto'"):
        jax.hessian(lambda w: loss(params._replace(bias=w)))(params.bias)


def test_nan_in_the_weights_comes_out_as_nan(kernel):
    """The kernels' exp clamps its input to the float range; a NaN must still propagate (divergence detection)."""
    for cell in (gated.cells.LSTM(16), gated.cells.GRU(16)):
        params, carry, xs, _ = _case(cell)
        params = params._replace(recurrent_kernel=params.recurrent_kernel.at[0, 0].set(jnp.nan))
        _, ys = jax.jit(lambda p, c, x, cell=cell: gated.run(cell, p, x, carry=c, impl="native"))(params, carry, xs)
        assert np.isnan(np.asarray(ys[1:, :, 0])).all()  # unit 0 of every step after the first reads the NaN weight
        run = jax.jit(lambda x, cell=cell: gated.run(cell, cell.init(jax.random.key(0), D), x, impl="native"))
        assert np.isfinite(np.asarray(run(xs.at[2, 1, 0].set(jnp.inf))[1])).all()  # infinite inputs saturate


def test_native_refuses_what_it_does_not_cover():
    xs = jnp.zeros((4, 2, D))
    for cell, dtype, match in (
        (gated.cells.RNN(16), jnp.float32, "the native loops have no kernel for RNN"),
        (gated.cells.LSTM(16, peepholes=True), jnp.float32, "without peepholes"),
        (gated.cells.GRU(16, reset="before"), jnp.float32, "reset='after' only"),
        (gated.cells.LSTM(24), jnp.float32, "H a multiple of 16, got H = 24"),
        (gated.cells.LSTM(16), jnp.float64, "float32 only, got float64"),
    ):
        params = cell.init(jax.random.key(0), D, dtype)
        with pytest.raises(ValueError, match=f"impl: 'native' is not available here: .*{match}"):
            gated.run(cell, params, xs.astype(dtype), impl="native")


def test_failed_build_says_why_and_leaves_nothing(tmp_path):
    saved = dict(native._SETTINGS)
    native.configure(cache_dir=tmp_path, compiler="false")  # a compiler that always fails
    try:
        with pytest.raises(RuntimeError, match="false .* failed"):
            native._build()
    finally:
        native._SETTINGS.update(saved)
    assert not list(tmp_path.glob("*.so"))
