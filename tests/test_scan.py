"""gated.run against Python loops over the cell and the float64 NumPy reference."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import gated
from tests import reference
from tests.conftest import random_carry, random_params

RUN_CELLS = [
    gated.cells.RNN(5),
    gated.cells.LSTM(5, peepholes=True),
    gated.cells.GRU(5, reset="before", update="write"),
]
T, B, D = 7, 4, 3
LENGTHS = np.array([7, 3, 0, 5])


def _setup(cell, dtype=jnp.float64, batch=(B,)):
    params = random_params(cell, jax.random.key(0), D, dtype)
    carry = random_carry(cell, jax.random.key(1), batch, dtype)
    xs = jnp.asarray(np.random.default_rng(2).standard_normal((T, *batch, D)), dtype)
    return params, carry, xs


def _reference_batch(cell, params, xs, carry, lengths=None, reverse=False):
    """Loops the NumPy reference over the batch: final carries (B, H) per leaf, ys (T, B, H), carries."""
    finals, ys, carries = [], [], []
    for b in range(xs.shape[1]):
        c_b = jax.tree.map(lambda a, b=b: np.asarray(a[b]), carry)
        length = None if lengths is None else lengths[b]
        final, y, cs = reference.run(cell, params, np.asarray(xs[:, b]), c_b, length, reverse)
        finals.append(final if isinstance(final, tuple) else (final,))
        ys.append(y)
        carries.append(cs)
    final = [np.stack([f[k] for f in finals]) for k in range(len(finals[0]))]
    carries = [np.stack([c[k] for c in carries], axis=1) for k in range(len(carries[0]))]
    return final, np.stack(ys, axis=1), carries


def _assert_close(got, want, rtol=1e-10, atol=1e-12):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


@functools.partial(jax.jit, static_argnames=("cell", "reverse", "time_axis", "unroll", "remat", "return_carries"))
def _jit_run(cell, params, xs, carry=None, lengths=None, **kwargs):
    return gated.run(cell, params, xs, carry=carry, lengths=lengths, **kwargs)


@pytest.mark.parametrize("cell", RUN_CELLS, ids=lambda c: c.name)
class TestRun:
    def test_equals_python_loop_over_cell(self, cell):
        params, carry, xs = _setup(cell)
        final, ys = _jit_run(cell, params, xs, carry)
        step = jax.jit(jax.vmap(cell, in_axes=(None, 0, 0)))
        c = carry
        for t in range(T):
            c, y = step(params, c, xs[t])
            np.testing.assert_allclose(ys[t], y, rtol=1e-12, atol=1e-14)
        _assert_close(final, c, 1e-12, 1e-14)

    def test_equals_numpy_reference(self, cell):
        params, carry, xs = _setup(cell)
        final, ys = _jit_run(cell, params, xs, carry)
        ref_final, ref_ys, _ = _reference_batch(cell, params, xs, carry)
        _assert_close(ys, ref_ys)
        _assert_close(final, ref_final)

    def test_vmap_equals_loop_over_examples(self, cell):
        params, _, xs = _setup(cell)
        xs_bt = jnp.swapaxes(xs, 0, 1)  # (B, T, D): one unbatched (T, 1, D) sequence per example
        batched = jax.jit(jax.vmap(lambda x: gated.run(cell, params, x[:, None])[1][:, 0]))(xs_bt)
        for b in range(B):
            _, ys_b = _jit_run(cell, params, xs[:, b : b + 1])
            np.testing.assert_allclose(batched[b], ys_b[:, 0], rtol=1e-12, atol=1e-14)

    def test_lengths_mask_padding(self, cell):
        params, carry, xs = _setup(cell)
        final, ys = _jit_run(cell, params, xs, carry, jnp.asarray(LENGTHS))
        ref_final, ref_ys, _ = _reference_batch(cell, params, xs, carry, LENGTHS)
        _assert_close(ys, ref_ys)
        _assert_close(final, ref_final)
        assert float(jnp.abs(ys[3:, 1]).max()) == 0.0
        _assert_close(jax.tree.map(lambda a: a[2], final), jax.tree.map(lambda a: a[2], carry), 0, 0)

    def test_reverse_with_and_without_lengths(self, cell):
        params, carry, xs = _setup(cell)
        final, ys = _jit_run(cell, params, xs, carry, reverse=True)
        ref_final, ref_ys, _ = _reference_batch(cell, params, xs, carry, reverse=True)
        _assert_close(ys, ref_ys)
        _assert_close(final, ref_final)
        # without lengths, reverse is a flip of the whole sequence
        _, ys_flipped = _jit_run(cell, params, xs[::-1], carry)
        _assert_close(ys, ys_flipped[::-1])

        final, ys = _jit_run(cell, params, xs, carry, jnp.asarray(LENGTHS), reverse=True)
        ref_final, ref_ys, _ = _reference_batch(cell, params, xs, carry, LENGTHS, reverse=True)
        _assert_close(ys, ref_ys)
        _assert_close(final, ref_final)
        # example 1 (length 3) read backwards from its own step 2: the same as running x[2], x[1], x[0]
        _, ys_own = _jit_run(cell, params, xs[2::-1, 1:2], jax.tree.map(lambda a: a[1:2], carry))
        _assert_close(ys[:3, 1], ys_own[::-1, 0])

    def test_return_carries(self, cell):
        params, carry, xs = _setup(cell)
        final, carries = _jit_run(cell, params, xs, carry, jnp.asarray(LENGTHS), return_carries=True)
        _, ref_ys, ref_carries = _reference_batch(cell, params, xs, carry, LENGTHS)
        assert jax.tree.structure(carries) == jax.tree.structure(cell.initial_carry())
        _assert_close(carries, ref_carries)
        _assert_close(jax.tree.leaves(carries)[0], ref_ys)  # h_t is the output of every gated cell

    def test_time_axis_and_several_batch_axes(self, cell):
        params, carry, xs = _setup(cell, batch=(2, 3))
        final, ys = _jit_run(cell, params, xs, carry)
        flat_carry = jax.tree.map(lambda a: a.reshape(6, -1), carry)
        flat_final, flat_ys = _jit_run(cell, params, xs.reshape(T, 6, D), flat_carry)
        _assert_close(ys.reshape(T, 6, -1), flat_ys, 0, 0)
        _assert_close(jax.tree.map(lambda a: a.reshape(6, -1), final), flat_final, 0, 0)
        final_bm, ys_bm = _jit_run(cell, params, jnp.moveaxis(xs, 0, 1), carry, time_axis=1)
        assert ys_bm.shape == (2, T, 3, 5)
        _assert_close(jnp.moveaxis(ys_bm, 1, 0), ys, 0, 0)
        _assert_close(final_bm, final, 0, 0)

    def test_remat_and_unroll_give_the_same_values_and_gradients(self, cell):
        params, carry, xs = _setup(cell)
        lengths = jnp.asarray(LENGTHS)

        def loss(params, xs, **kwargs):
            final, ys = gated.run(cell, params, xs, lengths=lengths, **kwargs)
            return jnp.sum(ys**2) + sum(jnp.sum(jnp.sin(a)) for a in jax.tree.leaves(final))

        plain = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, xs)
        for kwargs in ({"remat": True}, {"unroll": 3}):
            other = jax.jit(jax.value_and_grad(functools.partial(loss, **kwargs), argnums=(0, 1)))(params, xs)
            _assert_close(other, plain, 1e-12, 1e-13)

    def test_gradient_of_run_matches_finite_differences(self, cell):
        params, carry, xs = _setup(cell, batch=(2,))
        lengths = jnp.array([4, 2])
        f = jax.jit(lambda p, c, x: gated.run(cell, p, x[:4], carry=c, lengths=lengths)[1])
        check_grads(f, (params, carry, xs), order=1, modes=("fwd", "rev"))

    def test_float32(self, cell):
        params, carry, xs = _setup(cell, dtype=jnp.float32)
        final, ys = _jit_run(cell, params, xs, carry, jnp.asarray(LENGTHS))
        assert ys.dtype == jnp.float32 and all(a.dtype == jnp.float32 for a in jax.tree.leaves(final))
        ref_final, ref_ys, _ = _reference_batch(cell, params, xs, carry, LENGTHS)
        _assert_close(ys, ref_ys, 1e-5, 1e-6)
        _assert_close(final, ref_final, 1e-5, 1e-6)
        _, ys_zero = _jit_run(cell, params, xs)  # default zero carry takes the dtype of the inputs
        assert ys_zero.dtype == jnp.float32


def test_run_with_zero_steps_returns_the_initial_carry():
    cell = gated.cells.LSTM(3)
    params = random_params(cell, jax.random.key(0), 2, jnp.float64)
    carry = random_carry(cell, jax.random.key(1), (4,), jnp.float64)
    final, ys = gated.run(cell, params, jnp.zeros((0, 4, 2)), carry=carry)
    assert ys.shape == (0, 4, 3)
    _assert_close(final, carry, 0, 0)


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_run_under_jit_compiles_once_across_lengths_and_initial_carries(impl):
    """chex.assert_max_traces: new lengths, a new initial carry or new parameters of the same shapes reuse the
    compiled program; and the shapes it checks are what it returns."""
    cell = gated.cells.LSTM(3)
    chex.clear_trace_counter()  # chex counts traces per code object, across the parametrized cases

    @jax.jit
    @chex.assert_max_traces(n=1)
    def final_and_outputs(params, xs, lengths, carry):
        return gated.run(cell, params, xs, lengths=lengths, carry=carry, impl=impl)

    xs = jax.random.normal(jax.random.key(0), (6, 2, 4), jnp.float32)
    for k, lengths in enumerate(([6, 2], [0, 6], [3, 3])):
        params = cell.init(jax.random.key(k), 4)
        carry = jax.tree.map(lambda a, k=k: a + k, cell.initial_carry((2,)))
        final, ys = final_and_outputs(params, xs, jnp.array(lengths), carry)
        chex.assert_shape(ys, (6, 2, 3))
        chex.assert_trees_all_equal_shapes(final, cell.initial_carry((2,)))
