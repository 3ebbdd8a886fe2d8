"""Parallel forms of the gated linear recurrences (:class:`gated.cells.LinearCell`): ``s_t = a_t * s_{t-1} + b_t``.

Two forms, both pure JAX (every transform works), both used by :func:`gated.run` with ``impl=``:

- ``"associative"``: one ``jax.lax.associative_scan`` over time of the pairs ``(a_t, b_t)`` with the operator
  ``(a, b) o (a', b') = (a a', a' b + b')``; O(log T) depth, O(T) work.
- ``"chunked"``: the same scan inside chunks of ``chunk`` steps, all chunks at once, then a sequential
  ``lax.scan`` over the chunks that carries the state from one chunk to the next.

A cell with ``log_space=True`` (minGRU, minLSTM with a positive candidate) runs both forms in log space: the pairs
are ``(log a_t, log b_t)`` and the operator ``(la + la', logaddexp(la' + lb, lb'))``, so long products of gates
that underflow in float32 stay exact (Feng et al. 2024, Heinsen 2023).

Padding (``mask`` False) is the identity pair ``(1, 0)``: the state is carried unchanged. A reset (``resets``
True at step t) restores the initial state before step t: the pair becomes ``(0, a_t s_0 + b_t)``.

Notation: T time, B batch (flattened), H hidden size.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gated.cells import LinearCell

Array = jax.Array

FORMS = ("associative", "chunked")


def supports(cell: Any) -> str | None:
    """None if the parallel forms can run ``cell``, else the reason they can't."""
    if not isinstance(cell, LinearCell):
        return f"the {cell.name} cell's state enters its gates nonlinearly; only gated linear recurrences " \
               "(mingru, minlstm, lru, rglru, ssm) have a parallel form"  # fmt: skip
    return None


def _linear_combine(earlier, later):
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def _logaddexp(x: Array, y: Array) -> Array:
    """``jnp.logaddexp`` with a zero (not NaN) derivative where both arguments are -inf (an empty sum)."""
    empty = (x == -jnp.inf) & (y == -jnp.inf)
    out = jnp.logaddexp(jnp.where(empty, 0.0, x), jnp.where(empty, 0.0, y))
    return jnp.where(empty, -jnp.inf, out)


def _log_combine(earlier, later):
    la1, lb1 = earlier
    la2, lb2 = later
    return la1 + la2, _logaddexp(la2 + lb1, lb2)


def _safe_log(x: Array) -> Array:
    """log x for x >= 0, -inf at 0, with a finite (zero) derivative there."""
    positive = x > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -jnp.inf)


def sequence(
    cell: LinearCell,
    params: Any,
    us: Array,
    carry: Any,
    mask: Array | None,
    resets: Array | None,
    *,
    form: str,
    chunk: int = 64,
) -> tuple[Any, Array]:
    """Runs ``cell`` over the projected inputs ``us`` ``(T, B, G*H)`` from ``carry`` (leaves ``(B, H)``).

    ``mask`` ``(T, B)``: valid steps (None: all); ``resets`` ``(T, B)``: steps that start a new segment from
    ``carry`` (None: none). Returns the final carry and the outputs ``(T, B, H)``, zero at padded steps.
    """
    if form not in FORMS:
        raise ValueError(f"form: expected one of {FORMS}, got {form!r}")
    coefficients = jax.vmap(jax.vmap(lambda u: cell.coefficients(params, u)))
    a, b = coefficients(us)
    s0 = cell.to_state(carry)  # (B, H), complex for the LRU, (B, H, N) for the SSM
    a = jnp.broadcast_to(a, b.shape).astype(b.dtype)  # a constant a (the LRU's lambda) per step, b's dtype
    expand = lambda flags: flags.reshape(*flags.shape, *([1] * (b.ndim - 2)))  # (T, B) against (T, B, ...)
    if resets is not None:
        r = expand(resets)
        a, b = jnp.where(r, 0.0, a), jnp.where(r, a * s0[None] + b, b)
    if mask is not None:
        m = expand(mask)
        a, b = jnp.where(m, a, 1.0), jnp.where(m, b, 0.0)
    if cell.log_space:
        elements, combine = (_safe_log(a), _safe_log(b)), _log_combine
        start = _safe_log(s0)
    else:
        elements, combine, start = (a, b), _linear_combine, s0
    if form == "associative":
        big_a, big_b = jax.lax.associative_scan(combine, elements, axis=0)
        states = _apply(big_a, big_b, start[None], cell.log_space)
    else:
        states = _chunked(elements, start, combine, chunk, cell.log_space)
    ys = jax.vmap(jax.vmap(lambda s, u: cell.output(params, s, u)))(states, us)
    if mask is not None:
        ys = jnp.where(mask.reshape(*mask.shape, *([1] * (ys.ndim - 2))), ys, jnp.zeros_like(ys))
    return cell.from_state(states[-1]), ys


def _apply(big_a: Array, big_b: Array, start: Array, log_space: bool) -> Array:
    """The states ``A s_0 + B`` (or, in log space, ``exp(logaddexp(A + log s_0, B))``)."""
    if log_space:
        return jnp.exp(_logaddexp(big_a + start, big_b))
    return big_a * start + big_b


def _chunked(elements, start: Array, combine, chunk: int, log_space: bool) -> Array:
    a, b = elements
    num_steps = a.shape[0]
    size = max(1, min(chunk, num_steps))
    pad = -num_steps % size
    if pad:
        one, zero = (0.0, -jnp.inf) if log_space else (1.0, 0.0)
        a = jnp.concatenate([a, jnp.full((pad, *a.shape[1:]), one, a.dtype)])
        b = jnp.concatenate([b, jnp.full((pad, *b.shape[1:]), zero, b.dtype)])
    shape = (a.shape[0] // size, size, *a.shape[1:])
    big_a, big_b = jax.lax.associative_scan(combine, (a.reshape(shape), b.reshape(shape)), axis=1)

    def across(state, pair):
        ca, cb = pair
        if log_space:
            states = _logaddexp(ca + state[None], cb)
        else:
            states = ca * state[None] + cb
        return states[-1], states

    _, states = jax.lax.scan(across, start, (big_a, big_b))
    states = states.reshape(-1, *states.shape[2:])[:num_steps]
    return jnp.exp(states) if log_space else states
