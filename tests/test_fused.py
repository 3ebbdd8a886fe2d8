"""The default path (gated.run, impl="auto"): every JAX transform, for every cell and variant, against the reference.

For the cells with a fused kernel (gated.fused) the default path is that kernel, a custom_jvp whose tangent rule is a
linear recurrence; each quantity below is compared with the reference path's (the cell's step under lax.scan,
differentiated by JAX) in float64 to 1e-10. For the other cells the default path is the reference path itself; there
the quantities are checked against each other: forward against reverse mode, and second derivatives in both orders.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import gated
from tests.conftest import CELL_CONFIGS, config_id, make_cell, random_carry, random_params, record_error

T, D, H = 6, 3, 4
LENGTHS = np.array([6, 2, 0, 4, 6])
RUNS = 3  # runs in the vmapped sweep
TOL = {jnp.float64: 1e-10, jnp.float32: 1e-5}


def _case(cell, dtype, batch=(5,)):
    params = random_params(cell, jax.random.key(0), D, dtype)
    carry = random_carry(cell, jax.random.key(1), batch, dtype)
    xs = jnp.asarray(np.random.default_rng(2).standard_normal((T, *batch, D)), dtype)
    # Cotangents for every output, so each gradient path is exercised.
    weights = jnp.asarray(np.random.default_rng(3).standard_normal((T, *batch, H)), dtype)
    return params, carry, xs, weights


def _direction(tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), tree)


def _dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@functools.partial(jax.jit, static_argnames=("cell", "impl", "reverse"))
def _transforms(cell, impl, reverse, params, carry, xs, weights, lengths):
    """Every transform of one loss through gated.run, in one compiled program (under jit, as a user would)."""

    def run(p, c, x):
        return gated.run(cell, p, x, carry=c, lengths=lengths, reverse=reverse, impl=impl)

    def loss(p, c, x):
        final, ys = run(p, c, x)
        return jnp.sum(weights * jnp.tanh(ys)) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final))

    args = (params, carry, xs)
    u = _direction(args, 4)
    value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(*args)
    out = {"value": value, "grad": grads, "outputs": run(*args)}
    out["jvp"] = jax.jvp(loss, args, u)[1]
    out["jvp outputs"] = jax.jvp(run, args, u)[1]
    out["jacfwd"] = jax.jacfwd(lambda x: run(params, carry, x)[1])(xs)
    out["jacrev"] = jax.jacrev(lambda x: run(params, carry, x)[1])(xs)
    out["hessian"] = jax.hessian(lambda c: loss(params, c, xs))(carry)
    # Hessian-vector products: forward over reverse, and reverse over reverse (grad of grad).
    out["hvp"] = jax.jvp(jax.grad(loss, argnums=(0, 1, 2)), args, u)[1]
    out["grad of grad"] = jax.grad(lambda *a: _dot(jax.grad(loss, argnums=(0, 1, 2))(*a), u), argnums=(0, 1, 2))(*args)
    # A sweep: vmap over RUNS parameter sets against a Python loop over them.
    sweep = jax.tree.map(lambda a: jnp.stack([a * (1 + 0.1 * r) for r in range(RUNS)]), params)
    out["vmap"] = jax.vmap(jax.value_and_grad(loss), in_axes=(0, None, None))(sweep, carry, xs)
    out["loop"] = jax.tree.map(
        lambda *a: jnp.stack(a),
        *[jax.value_and_grad(loss)(jax.tree.map(lambda a, r=r: a[r], sweep), carry, xs) for r in range(RUNS)],
    )
    out["consistency"] = (out["jvp"], _dot(grads, u))  # forward mode = reverse mode along u
    return out


def _close(got, want, case, dtype=jnp.float64):
    tol = TOL[dtype]
    got, want = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got) == len(want), case
    for g, w in zip(got, want, strict=True):
        record_error("default vs reference", case, dtype, g, w)
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=case)


# The fast tier (pytest -m "not slow") keeps the LSTM's fused kernel here; the conformance suite's fast tier runs
# the default path of every cell (the fused RNN and GRU among them) against the reference path.
FAST = [("lstm", {})]


@pytest.mark.parametrize(
    "config", [pytest.param(c, marks=() if c in FAST else pytest.mark.slow) for c in CELL_CONFIGS], ids=config_id
)
def test_every_transform_of_the_default_path(config):
    """jvp, jacfwd, jacrev, hessian, Hessian-vector products (forward-over-reverse and grad of grad), a vmapped sweep
    against a loop, all under jit, with padded sequences; read backwards for every other variant."""
    cell = make_cell(config, H)
    params, carry, xs, weights = _case(cell, jnp.float64)
    reverse = CELL_CONFIGS.index(config) % 2 == 1
    args = (params, carry, xs, weights, jnp.asarray(LENGTHS))
    got = _transforms(cell, "auto", reverse, *args)
    case = f"{config_id(config)} reverse={reverse}"
    _close(got["vmap"], got["loop"], case + " vmap")
    _close(*got["consistency"], case + " jvp vs grad")
    _close(got["hvp"], got["grad of grad"], case + " hvp both orders")
    if gated.fused.supports(cell) is None:  # a fused kernel: every quantity against the reference path's
        want = _transforms(cell, "reference", reverse, *args)
        for key in got:
            _close(got[key], want[key], f"{case} {key}")


def test_fused_in_float32_equals_reference():
    for cell in (gated.cells.LSTM(H), gated.cells.GRU(H, update="write"), gated.cells.RNN(H)):
        params, carry, xs, weights = _case(cell, jnp.float32)

        @jax.jit
        def both(p, c, x, cell=cell, weights=weights):
            def loss(impl, p, c, x):
                return jnp.sum(weights * gated.run(cell, p, x, carry=c, impl=impl)[1])

            return {impl: jax.value_and_grad(functools.partial(loss, impl), argnums=(0, 1, 2))(p, c, x)
                    for impl in ("fused", "reference")}  # fmt: skip

        out = both(params, carry, xs)
        _close(out["fused"], out["reference"], f"{cell.name} float32", jnp.float32)


@pytest.mark.parametrize("chunk", [1, 2])  # and 3 or 6, the chunk_length of these sizes, in the tests above
def test_tangent_rule_over_chunks_equals_reference(chunk, monkeypatch):
    """The tangent rule walks chunks of steps; every chunk length gives the reference's derivatives."""
    monkeypatch.setattr(gated.fused, "chunk_length", lambda num_steps, rows: chunk)
    for cell in (gated.cells.LSTM(H), gated.cells.GRU(H)):
        params, carry, xs, weights = _case(cell, jnp.float64)

        @jax.jit  # traced anew for each chunk length
        def derivatives(params, carry, xs, cell=cell, weights=weights):
            def loss(impl, p, c, x):
                return jnp.sum(weights * gated.run(cell, p, x, carry=c, lengths=LENGTHS, impl=impl)[1])

            args, u = (params, carry, xs), _direction((params, carry, xs), 5)
            return {
                impl: (jax.grad(functools.partial(loss, impl), argnums=(0, 1, 2))(*args),
                       jax.jvp(functools.partial(loss, impl), args, u)[1])
                for impl in ("fused", "reference")
            }  # fmt: skip

        out = derivatives(params, carry, xs)
        _close(out["fused"], out["reference"], f"{cell.name} chunk={chunk}")


def test_chunk_length_divides_time():
    assert [gated.fused.chunk_length(t, b * 512) for t, b in ((100, 32), (1000, 16), (7, 32))] == [25, 50, 7]
    assert gated.fused.chunk_length(200, 64 * 1024) == 8


@pytest.mark.slow
def test_fused_gradients_match_finite_differences():
    cell = gated.cells.LSTM(H)
    params, carry, xs, _ = _case(cell, jnp.float64, batch=(2,))
    f = jax.jit(lambda p, c, x: gated.run(cell, p, x, carry=c, lengths=jnp.array([6, 3]), impl="fused"))
    check_grads(f, (params, carry, xs), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("config", CELL_CONFIGS, ids=config_id)
def test_default_path_is_pure_jax(config):
    """No custom call (an FFI kernel, opaque to JAX's transforms and to other platforms) in the default path's
    program: the contract, not which of its pure-JAX forms it takes."""
    cell = make_cell(config, 16)
    params = cell.init(jax.random.key(0), D)
    xs = jnp.zeros((T, 2, D))
    loss = jax.grad(lambda p: sum(jnp.sum(y) for y in jax.tree.leaves(gated.run(cell, p, xs)[1])))
    assert "custom_call" not in jax.jit(loss).lower(params).as_text()


def test_fused_refuses_what_it_does_not_cover():
    xs = jnp.zeros((T, 2, D))
    cell = gated.cells.LSTM(H, coupled=True)
    with pytest.raises(ValueError, match="impl: 'fused' is not available here.*coupling"):
        gated.run(cell, cell.init(jax.random.key(0), D), xs, impl="fused")
    lstm = gated.cells.LSTM(H)
    with pytest.raises(ValueError, match="return_carries"):
        gated.run(lstm, lstm.init(jax.random.key(0), D), xs, impl="fused", return_carries=True)
    with pytest.raises(ValueError, match="impl: expected one of"):
        gated.run(lstm, lstm.init(jax.random.key(0), D), xs, impl="fast")
    gru = gated.cells.GRU(H)
    params = gru.init(jax.random.key(0), D)._replace(candidate_bias=None)
    with pytest.raises(ValueError, match=r"params.candidate_bias: expected shape \(4,\)"):
        gated.run(gru, params, xs, impl="fused")
