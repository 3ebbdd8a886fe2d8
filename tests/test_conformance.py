"""One conformance suite over the registries: every registered cell (``gated.cells.CELLS``), on every pure-JAX backend
that serves its form (``gated.backends.REGISTRY``), against the reference path and the cell's float64 NumPy
transcription (``tests/reference.py``).

A cell that registers gets all of it, with no test written for it here: a sequence of its steps equal to its
transcription; each backend's values and gradients equal to the reference path's (float64, 1e-10) with lengths,
resets (where the backend serves them), both directions, ``remat``, and chunks that do not divide T; ``jvp``, a
forward-over-reverse Hessian-vector product and a ``vmap`` over parameter sets; one-token decoding equal to the
parallel forward pass; and bfloat16 inputs with a float32 ``state_dtype`` near the float32 run. The cells are made
with their default options (``num_heads=2`` where they have heads); their option grids are in the family tests.
Each check is one compiled program per cell and backend. A backend that ``impl="auto"`` runs for a cell is checked as
"auto" alone (the same program). The default path's values, gradients and decoding run in the fast tier, the rest in
the slow one.
"""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gated
from gated import backends
from gated.options import Call
from tests import reference
from tests.conftest import random_params

T, B, D, H, CHUNK = 13, 3, 4, 6, 4  # CHUNK does not divide T
F64 = {"rtol": 1e-10, "atol": 1e-10}
LENGTHS = np.array([T, 7, 0])


def make(name: str):
    """A registered cell with its default options, two heads where it has heads."""
    cls = gated.cells.CELLS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(H, **({"num_heads": 2} if "num_heads" in fields else {}))


def _serves(name: str, impl: str, **call) -> bool:
    return backends.reason(impl, make(name), Call(impl, dtype=jnp.float64, num_steps=T, **call)) is None


def _is_auto(name: str, impl: str) -> bool:
    """Whether ``impl="auto"`` runs ``impl`` for every call here (with and without resets and remat): the same
    program."""
    cell, calls = make(name), [dict(resets=r, remat=m) for r in (False, True) for m in (False, True)]
    return all(
        backends.choose(cell, Call("auto", dtype=jnp.float64, num_steps=T, chunk=CHUNK, **c)) == impl for c in calls
    )


PURE = [b.name for b in backends.REGISTRY.values() if b.pure and b.name != "reference"]
# Every cell on "auto" and on each other pure backend that serves it; not a backend that "auto" runs for it anyway.
PAIRS = [
    (name, impl)
    for name in gated.cells.CELLS
    for impl in ("auto", *PURE)
    if impl == "auto" or (_serves(name, impl) and not _is_auto(name, impl))
]
CASES = [pytest.param(n, i, id=f"{n}-{i}", marks=() if i == "auto" else pytest.mark.slow) for n, i in PAIRS]
# The transforms and bfloat16 checks, in the slow tier on every backend ("auto" included).
SLOW_CASES = [pytest.param(n, i, id=f"{n}-{i}", marks=pytest.mark.slow) for n, i in PAIRS]


@functools.cache
def case(name: str, dtype=jnp.float64):
    """The cell, random parameters, a reachable carry (the reference path's after a few random steps from zeros:
    a normaliser stays positive), inputs ``(T, B, D)`` and resets."""
    cell = make(name)
    params = random_params(cell, jax.random.key(0), D, dtype)
    warm = jax.random.normal(jax.random.key(1), (5, B, D), dtype)
    carry = gated.run(cell, params, warm, impl="reference")[0]
    xs = jax.random.normal(jax.random.key(2), (T, B, D), dtype)
    resets = np.zeros((T, B), bool)
    resets[[4, 9, 3], [0, 0, 1]] = True
    return cell, params, carry, xs, jnp.asarray(resets)


def _close(a, b, **tol):
    chex.assert_trees_all_close(jax.tree.leaves(a), jax.tree.leaves(b), **(tol or F64))


def _runs_resets(name: str, impl: str) -> bool:
    return impl == "auto" or _serves(name, impl, resets=True)


@pytest.mark.parametrize("name", list(gated.cells.CELLS))
def test_a_sequence_of_steps_equals_the_float64_transcription(name):
    """The reference path over a sequence, from a random carry, against the NumPy transcription step by step."""
    cell, params, carry, xs, _ = case(name)
    assert name in reference.STEPS, f"the {name} cell has no float64 transcription in tests/reference.py"
    final, ys = jax.jit(lambda p, c, x: gated.run(cell, p, x, carry=c, impl="reference"))(params, carry, xs)
    state = jax.tree.map(lambda a: np.asarray(a[0]), carry)
    want = []
    for t in range(T):
        state, y = reference.step(cell, params, state, np.asarray(xs[t, 0]))
        want.append(y)
    _close((jax.tree.map(lambda a: a[0], final), ys[:, 0]), (state, np.stack(want)))


# Every diagonal-form cell with its defaults, and with a fixed decay where it has the option: selective=False (S4D's
# setting), decay="fixed" (RetNet's).
DIAGONAL = [
    (n, options)
    for n, c in gated.cells.CELLS.items()
    if issubclass(c, gated.forms.Diagonal)
    for options in ({}, {"selective": False}, {"decay": "fixed"})
    if not options or set(options) <= {f.name for f in dataclasses.fields(c)}
]


@pytest.mark.parametrize("name, options", DIAGONAL, ids=[n + "-fixed" * bool(o) for n, o in DIAGONAL])
def test_a_diagonal_cell_is_time_invariant_exactly_when_it_says(name, options):
    """``time_invariant`` (what the studies read to tell the LRU from the input-gated recurrences): the decays
    ``a_t`` of two different inputs are equal exactly when the cell says so."""
    cell = dataclasses.replace(make(name), **options)
    _, params, _, xs, _ = case(name)
    a = [cell.coefficients(params, cell.project(params, x))[0] for x in (xs[0, 0], xs[1, 0])]
    assert cell.time_invariant == bool(np.allclose(a[0], a[1], rtol=0, atol=1e-12)), (name, cell.time_invariant)


def _loss(cell, impl, resets, params, carry, xs, starts):
    """The value and gradient (parameters, carry, inputs) of both directions, with lengths (and resets), reading
    backwards with ``remat``."""

    def f(p, c, x):
        total = 0.0
        for reverse in (False, True):
            kw = dict(carry=c, lengths=LENGTHS, reverse=reverse, impl=impl, chunk=CHUNK, remat=reverse)
            final, ys = gated.run(cell, p, x, resets=starts if resets else None, **kw)
            total += jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(final))
        return total

    return jax.value_and_grad(f, argnums=(0, 1, 2))(params, carry, xs)


def _transforms(cell, impl, resets, params, carry, xs, starts):
    """``jvp`` and a forward-over-reverse HVP of a loss of the outputs, and a ``vmap`` over two parameter sets."""
    loss = lambda p: jnp.sum(gated.run(cell, p, xs, carry=carry, impl=impl, chunk=CHUNK)[1] ** 2)
    v = jax.tree.map(jnp.ones_like, params)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)
    jvp = jax.jvp(loss, (params,), (v,))
    hvp = jax.jvp(jax.grad(loss), (params,), (v,))[1]
    batched = jax.vmap(lambda p: gated.run(cell, p, xs, carry=carry, impl=impl, chunk=CHUNK)[1])(stacked)
    return jvp, hvp, batched


def _decoding(cell, impl, resets, params, carry, xs, starts):
    """One run over the whole sequence, and a scan of one-step runs with the carry passed on."""
    whole = gated.run(cell, params, xs, carry=carry, impl=impl, chunk=CHUNK)

    def one(c, x_t):
        c, y = gated.run(cell, params, x_t[None], carry=c, impl=impl, chunk=CHUNK)
        return c, y[0]

    return whole, jax.lax.scan(one, carry, xs)


def _bfloat16(cell, impl, resets, params, carry, xs, starts):
    """The float32 run, and the bfloat16 run of the rounded parameters and inputs with a float32 state (the case
    in float32)."""
    cast = lambda tree: jax.tree.map(lambda a: a.astype(jnp.bfloat16), tree)
    f32 = gated.run(cell, params, xs, impl=impl, chunk=CHUNK)
    return f32, gated.run(cell, cast(params), cast(xs), impl=impl, chunk=CHUNK, state_dtype=jnp.float32)


CHECKS = {"loss": _loss, "transforms": _transforms, "decoding": _decoding, "bfloat16": _bfloat16}


@functools.cache
def checks(name: str, impl: str, which: tuple[str, ...], resets: bool) -> dict:
    """The checks ``which`` of a cell on a backend, traced together and compiled as one program, the case's arrays
    its arguments (the loss with or without resets)."""
    cell = case(name)[0]
    cases = {w: case(name, jnp.float32 if w == "bfloat16" else jnp.float64)[1:] for w in which}
    run = lambda arrays: {w: CHECKS[w](cell, impl, resets, *arrays[w]) for w in which}
    return jax.jit(run)(cases)


def _got(name: str, impl: str, check: str):
    """One check's outputs on ``impl``: every slow backend's checks in one program; "auto"'s fast ones (its values,
    gradients and decoding) in one and its slow ones in another."""
    resets = _runs_resets(name, impl)
    if impl == "auto":
        fast = ("loss", "decoding")
        return checks(name, impl, fast if check in fast else ("transforms", "bfloat16"), resets)[check]
    return checks(name, impl, tuple(CHECKS), resets)[check]


def _want(name: str, impl: str, check: str):
    """The reference path's outputs of a check, each on its own (every backend is compared with them)."""
    return checks(name, "reference", (check,), _runs_resets(name, impl) if check == "loss" else True)[check]


@pytest.mark.parametrize("name, impl", CASES)
def test_values_and_gradients_equal_the_reference_path(name, impl):
    _close(_got(name, impl, "loss"), _want(name, impl, "loss"))


@pytest.mark.parametrize("name, impl", SLOW_CASES)
def test_every_transform_equals_the_reference_path(name, impl):
    _close(_got(name, impl, "transforms"), _want(name, impl, "transforms"))


@pytest.mark.parametrize("name, impl", CASES)
def test_one_token_decoding_equals_the_parallel_forward_pass(name, impl):
    """A scan of one-step runs, the carry passed on, equals one run over the whole sequence (float64, 1e-10)."""
    whole, decoded = _got(name, impl, "decoding")
    _close(decoded, whole)


@pytest.mark.parametrize("name, impl", SLOW_CASES)
def test_bfloat16_with_a_float32_state_is_near_the_float32_run(name, impl):
    f32, (final, ys) = _got(name, impl, "bfloat16")
    assert ys.dtype == jnp.bfloat16 and all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(final))
    _close((final, ys.astype(jnp.float32)), f32, rtol=0.1, atol=0.1)
