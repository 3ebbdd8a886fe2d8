"""The native CPU loop kernels (gated.native, csrc/loops_cpu.cc): against their XLA contracts and the reference path.

The kernel is built on first use with the machine's C++ compiler. Where it cannot be built these tests skip, naming
the reason, unless GATED_REQUIRE_NATIVE=1 (set by .ci/run), where they fail.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gated
from gated import fused, native
from tests.conftest import random_carry, record_error
from tests.test_fused import _fresh, _values_and_grads

D = 3
F32 = 1e-5  # the float32 bar


@pytest.fixture
def kernel():
    reason = native.unavailable_reason()
    if reason is not None:
        if os.environ.get("GATED_REQUIRE_NATIVE") == "1":
            pytest.fail(f"the native kernel is required here (GATED_REQUIRE_NATIVE=1) but unavailable: {reason}")
        pytest.skip(f"native kernel unavailable: {reason}")


def _rand(rng, *shape, scale=0.5):
    return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)


def _mask(rng, steps, batch):
    return jnp.asarray(rng.random((steps, batch, 1)) > 0.3, jnp.float32)


def _close(got, want, case, tol=F32):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        record_error("native vs XLA", case, jnp.float32, g, w)
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=case)


# Batch sizes with every remainder of the kernel's 4-row tiles; H = 16 and 48 (one and three 16-unit panels).
SHAPES = [(1, 16), (6, 48), (9, 16)]


@pytest.mark.parametrize(("batch", "hidden"), SHAPES)
@pytest.mark.parametrize("threads", ["1", "3"])
def test_lstm_loops_equal_their_xla_contract(kernel, batch, hidden, threads, monkeypatch):
    monkeypatch.setenv("GATED_NATIVE_THREADS", threads)
    rng = np.random.default_rng(batch + hidden)
    steps = 7
    w_x, w_h, b = _rand(rng, D, 4 * hidden), _rand(rng, hidden, 4 * hidden, scale=0.2), _rand(rng, 4 * hidden)
    xs, h0, c0 = _rand(rng, steps, batch, D), _rand(rng, batch, hidden), _rand(rng, batch, hidden)
    for m in (None, _mask(rng, steps, batch)):
        case = f"lstm B={batch} H={hidden} threads={threads} mask={m is not None}"
        got = jax.jit(functools.partial(native.lstm_forward, True))(w_x, w_h, b, xs, h0, c0, m)
        want = jax.jit(functools.partial(fused._lstm_gates_forward, True, 1))(w_x, w_h, b, xs, h0, c0, m)
        _close(got, want, case + " forward")
        hs, cs = jax.jit(functools.partial(native.lstm_forward, False))(w_x, w_h, b, xs, h0, c0, m)[:2]
        _close((hs, cs), want[:2], case + " forward without gates")

        _, cs, acts = want
        dh, dc, dys = _rand(rng, batch, hidden), _rand(rng, batch, hidden), _rand(rng, steps, batch, hidden)
        args = (w_h, dh, dc, dys, acts, cs, fused._previous(c0, cs), m)
        got = jax.jit(native.lstm_backward)(*args)
        want = jax.jit(functools.partial(fused._lstm_gates_backward, 1))(*args)
        _close(got, want, case + " backward")


@pytest.mark.parametrize(("batch", "hidden"), SHAPES)
@pytest.mark.parametrize("update", ["keep", "write"])
def test_gru_loops_equal_their_xla_contract(kernel, batch, hidden, update, monkeypatch):
    monkeypatch.setenv("GATED_NATIVE_THREADS", "3")
    rng = np.random.default_rng(batch * hidden)
    steps, keep_z = 7, update == "keep"
    w_x, w_h = _rand(rng, D, 3 * hidden), _rand(rng, hidden, 3 * hidden, scale=0.2)
    b, b_hn = _rand(rng, 3 * hidden), _rand(rng, hidden)
    xs, h0 = _rand(rng, steps, batch, D), _rand(rng, batch, hidden)
    for m in (None, _mask(rng, steps, batch)):
        case = f"gru B={batch} H={hidden} update={update} mask={m is not None}"
        args = (w_x, w_h, b, b_hn, xs, h0, m)
        got = jax.jit(functools.partial(native.gru_forward, True, keep_z))(*args)
        want = jax.jit(functools.partial(fused._gru_gates_forward, True, keep_z, 1))(*args)
        _close(got, want, case + " forward")
        _close(jax.jit(functools.partial(native.gru_forward, False, keep_z))(*args)[0], want[0], case + " no gates")
        recomputed = fused._gru_recompute(w_x, w_h, b, b_hn, xs, fused._previous(h0, want[0]))
        if m is None:  # with a mask the kept gates of padded steps come from the held carry; unused either way
            _close(recomputed, want[1], case + " recomputed gates")

        hs, gates = want
        dh, dys = _rand(rng, batch, hidden), _rand(rng, steps, batch, hidden)
        args = (w_h, dh, dys, gates, fused._previous(h0, hs), m)
        got = jax.jit(functools.partial(native.gru_backward, keep_z))(*args)
        want = jax.jit(functools.partial(fused._gru_gates_backward, keep_z, 1))(*args)
        _close(got, want, case + " backward")


NATIVE_CELLS = [gated.cells.lstm(16), gated.cells.gru(16), gated.cells.gru(16, update="write")]


def _case(cell, dtype, batch=5, steps=6):
    params = cell.init(jax.random.key(0), D, dtype)
    carry = random_carry(cell, jax.random.key(1), (batch,), dtype)
    xs = jnp.asarray(np.random.default_rng(2).standard_normal((steps, batch, D)), dtype)
    weights = jnp.asarray(np.random.default_rng(3).standard_normal((steps, batch, cell.hidden_size)), dtype)
    return params, carry, xs, weights


@pytest.mark.parametrize("cell", NATIVE_CELLS, ids=lambda c: c.name)
def test_native_path_equals_reference(kernel, cell):
    """gated.run's fused path on the CPU (the default's), float32: values and gradients (params, carry, inputs)
    against the reference path, with padded sequences, both directions, with and without remat (gates recomputed)."""
    params, carry, xs, weights = _case(cell, jnp.float32)
    lengths = jnp.asarray([6, 2, 0, 4, 6])
    for reverse, remat in ((False, False), (True, True)):
        out = _values_and_grads(cell, params, carry, xs, weights, lengths, reverse, remat)
        _close(out["fused"], out["reference"], f"{cell.name} reverse={reverse} remat={remat}")


@pytest.mark.parametrize("cell", NATIVE_CELLS[:2], ids=lambda c: c.name)
def test_off_cpu_contract_equals_reference_in_float64(cell, monkeypatch):
    """Off the CPU the native path runs its XLA contracts (the default of platform_dependent). Forced here, in
    float64, they give the reference's values and gradients to 1e-10, for every chunk length."""
    monkeypatch.setattr(native, "covers", lambda dtype, hidden: True)
    monkeypatch.setattr(jax.lax, "platform_dependent", lambda *args, default, **per_platform: default(*args))
    params, carry, xs, weights = _case(cell, jnp.float64)
    lengths = jnp.asarray([6, 2, 0, 4, 6])
    for chunk, remat in ((6, False), (2, True)):
        monkeypatch.setattr(fused, "_chunk_length", lambda num_steps, rows, chunk=chunk: chunk)
        out = _fresh()(cell, params, carry, xs, weights, lengths, False, remat)
        for got, want in zip(jax.tree.leaves(out["fused"]), jax.tree.leaves(out["reference"]), strict=True):
            record_error("native contract vs reference", f"{cell.name} chunk={chunk}", jnp.float64, got, want)
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cell", NATIVE_CELLS[:2], ids=lambda c: c.name)
def test_nan_in_the_weights_comes_out_as_nan(kernel, cell):
    """The kernels' exp clamps its input to the float range; a NaN must still propagate (divergence detection)."""
    params, carry, xs, _ = _case(cell, jnp.float32)
    params = params._replace(recurrent_kernel=params.recurrent_kernel.at[0, 0].set(jnp.nan))
    _, ys = jax.jit(lambda p: gated.run(cell, p, xs, carry=carry))(params)
    assert np.isnan(np.asarray(ys[1:, :, 0])).all()  # unit 0 of every step after the first reads the NaN weight
    _, ys = jax.jit(lambda x: gated.run(cell, cell.init(jax.random.key(0), D), x))(xs.at[2, 1, 0].set(jnp.inf))
    assert np.isfinite(np.asarray(ys)).all()  # an infinite pre-activation saturates the gates


def _lowered(cell, dtype, batch):
    params = cell.init(jax.random.key(0), D, dtype)
    xs = jnp.zeros((4, batch, D), dtype)
    return jax.jit(jax.grad(lambda p: jnp.sum(gated.run(cell, p, xs)[1]))).lower(params).as_text()


def test_native_kernel_is_taken_exactly_where_it_applies(kernel):
    assert "gated_lstm_forward" in _lowered(gated.cells.lstm(16), jnp.float32, 2)
    assert "gated_lstm_backward" in _lowered(gated.cells.lstm(16), jnp.float32, 2)
    assert "gated_gru_backward" in _lowered(gated.cells.gru(32), jnp.float32, 2)
    assert "gated_" not in _lowered(gated.cells.lstm(16), jnp.float64, 2)  # float32 only
    assert "gated_" not in _lowered(gated.cells.lstm(24), jnp.float32, 2)  # H a multiple of 16
    assert "gated_" not in _lowered(gated.cells.lstm(32), jnp.float32, 1)  # H >= 32 B: XLA's feature-major loop
    assert "gated_" not in _lowered(gated.cells.rnn(16), jnp.float32, 2)


def test_unavailable_kernel_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("GATED_NATIVE", "0")
    assert native._load() == "disabled by GATED_NATIVE=0"
    monkeypatch.delenv("GATED_NATIVE")
    monkeypatch.setenv("GATED_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a compiler that always fails
    if native.platform.machine().lower() in ("x86_64", "amd64"):
        assert native._load().startswith("could not build the CPU kernel: false ")
    assert not list(tmp_path.glob("*.so"))
