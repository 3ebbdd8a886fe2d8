"""Parallel forms of the diagonal linear recurrences (:class:`gated.forms.Diagonal`): ``s_t = a_t * s_{t-1} + b_t``.

Three forms, all pure JAX (every transform works), used by :func:`gated.run` with ``impl=``:

- ``"associative"``: one ``jax.lax.associative_scan`` over time of the pairs ``(a_t, b_t)`` with the operator
  ``(a, b) o (a', b') = (a a', a' b + b')``; O(log T) depth, O(T) work.
- ``"chunked"``: the same scan inside chunks of ``chunk`` steps, all chunks at once, then a sequential
  ``lax.scan`` over the chunks that carries the state from one chunk to the next.
- ``"sequential"``: a ``lax.scan`` over chunks of ``chunk`` steps; in each, the inputs' projections and the
  coefficients of its steps at once, then a ``lax.scan`` whose body is the update alone (``a_t s + b_t``): the
  fewest operations. Each chunk is recomputed in the backward pass: only the carry at each chunk's start is stored,
  and a chunk's arrays stay in the cache, so a step costs the same at any length.

A cell with ``log_space`` (its inputs ``b_t >= 0``, :attr:`gated.forms.Diagonal.log_space`) runs the associative and
chunked forms in log space: the pairs are ``(log a_t, log b_t)`` and the operator ``(la + la', logaddexp(la' + lb,
lb'))``, so long products of gates that underflow in float32 stay exact (Feng et al. 2024, Heinsen 2023). The initial
state, which may be negative, is not logged: its weight is scanned beside the inputs' part (:func:`_log_elements`). A
decay that can be negative (``eigenvalues="[-1, 1]"``) is logged as its magnitude and sign: each state's positive and
negative parts are summed apart, both in log space, and subtracted at the end (:func:`_signed_log_combine`).

A stabilised cell (:attr:`gated.forms.Diagonal.stabilised`: exponential input gates that would overflow) keeps its state
as ``(m, s)``, the true state being ``exp(m) s``, and scans triples ``(log a_t, log b_t, b_t)`` with the operator
:func:`gated.cells.stabilised_combine`, which the cell's step also uses: the max-plus recursion of the stabiliser ``m``
beside the rescaled sum, so the states equal the sequential cell's, stabiliser included.

Padding (``mask`` False) is the identity pair ``(1, 0)``: the state is carried unchanged. A reset (``resets``
True at step t) restores the initial state before step t: the pair becomes ``(0, a_t s_0 + b_t)``, the
composition of the initial state with step t's update.

Notation: T time, B batch (flattened), H hidden size.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gated import backends, forms, reference
from gated.cells import stabilised_combine, trailing_axes
from gated.cells.linear import cast_like
from gated.options import Call

Array = jax.Array

FORMS = ("associative", "chunked", "sequential")


def supports(cell: forms.Diagonal, call: Call | None = None) -> str | None:
    """None if the parallel forms can run ``call`` of a diagonal linear ``cell``, else the reason they can't."""
    if call is not None and call.return_carries:
        return "return_carries=True is served by the reference path"
    return None


def sequence(
    cell: forms.Diagonal, params: Any, xs: Array, carry: Any, mask: Array | None, resets: Array | None, call: Call
) -> tuple[Any, Array]:
    """The backend of :func:`gated.run` for ``impl="associative"``, ``"chunked"`` and ``"sequential"``: ``xs``
    ``(T, B, D)`` projected for every step at once, then :func:`scan_projected` (an empty sequence takes the
    reference path, as there is nothing to scan); ``"sequential"`` does both chunk by chunk (:func:`_in_chunks`)."""
    if xs.shape[0] == 0:
        return reference.sequence(cell, params, xs, carry, mask, resets, call)
    if call.impl == "sequential" and xs.shape[0] > call.chunk:
        return _in_chunks(cell, params, xs, carry, mask, resets, call)

    def forms(xs, carry, mask, resets):
        us = jax.vmap(jax.vmap(lambda x: cell.project(params, x)))(xs)
        return scan_projected(cell, params, us, carry, mask, resets, form=call.impl, chunk=call.chunk)

    return (jax.checkpoint(forms) if call.remat else forms)(xs, carry, mask, resets)


def _in_chunks(
    cell: forms.Diagonal, params: Any, xs: Array, carry: Any, mask: Array | None, resets: Array | None, call: Call
) -> tuple[Any, Array]:
    """``impl="sequential"`` over more than ``call.chunk`` steps: a ``lax.scan`` over chunks of that many steps, each
    projected, turned into coefficients and scanned by the update alone (:func:`scan_projected`), and recomputed in
    the backward pass. Only the carry at each chunk's start is stored, and each chunk's work stays in the cache: the
    cost per step does not grow with the length, as it does when every step's coefficients are held at once. A reset
    restores the sequence's initial ``carry``, not the chunk's."""

    def chunk(state, inputs):
        xs, mask, resets = inputs
        us = jax.vmap(jax.vmap(lambda x: cell.project(params, x)))(xs)
        return scan_projected(cell, params, us, state, mask, resets, form="sequential", initial=carry)

    return reference.scan_in_chunks(chunk, carry, call.chunk, xs, mask, resets)


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
    return la1 + la2, jax.tree.map(lambda x, y: _logaddexp(la2 + x, y), lb1, lb2)


def _signed_log_combine(earlier, later):
    """The log-space operator of a decay of either sign: elements ``(log |a|, sign a, parts)``, each part a pair
    ``(log P, log N)`` of a non-negative sum's positive and negative terms (the value ``P - N``). Multiplying by a
    negative decay swaps a pair; no difference is taken inside the scan, so nothing cancels there."""
    la1, sa1, b1 = earlier
    la2, sa2, b2 = later
    flip = sa2 < 0

    def part(x, y):
        positive, negative = jnp.where(flip, x[1], x[0]), jnp.where(flip, x[0], x[1])
        return _logaddexp(la2 + positive, y[0]), _logaddexp(la2 + negative, y[1])

    return la1 + la2, sa1 * sa2, tuple(part(x, y) for x, y in zip(b1, b2, strict=True))


def _signed_log_elements(a: Array, b: Array, s0: Array, resets: Array | None) -> tuple[tuple, tuple]:
    """:func:`_log_elements` for a decay ``a`` of either sign (``b >= 0``): ``(log |a|, sign a, ((log b, -inf),
    (log w+, log w-)))`` from ``((-inf, -inf), (0, -inf))``, ``w`` the weight a reset gives the initial state."""
    weight = jnp.zeros_like(a) if resets is None else _where(resets, a, 0.0)
    if resets is not None:
        a = _where(resets, 0.0, a)
    sign = jnp.where(a < 0, -1.0, 1.0).astype(a.dtype)
    never = jnp.full_like(b, -jnp.inf)
    parts = ((_safe_log(b), never), (_safe_log(weight), _safe_log(-weight)))
    start = (
        (jnp.full_like(s0, -jnp.inf), jnp.full_like(s0, -jnp.inf)),
        (jnp.zeros_like(s0), jnp.full_like(s0, -jnp.inf)),
    )
    return (_safe_log(jnp.abs(a)), sign, parts), start


def _log_elements(a: Array, b: Array, s0: Array, resets: Array | None) -> tuple[tuple, tuple]:
    """The log-space elements and start of ``s_t = a_t s_{t-1} + b_t`` with ``a, b >= 0`` and ``s0`` of any sign.

    The states are linear in ``s0``: ``s_t = p_t + s0 w_t``, where ``p`` is the recurrence from 0 on ``b`` and
    ``w`` the recurrence from 1 on no input but, at a reset step, ``a_t`` (the weight of the initial state it
    restores). Both are non-negative, so both run in log space, in one scan: ``(log a_t, (log b_t, log r_t a_t))``
    from ``(-inf, 0)``, ``a_t`` zero at a reset. (A log of ``s0`` itself would be NaN, or -inf, for ``s0 <= 0``.)
    """
    weight = jnp.zeros_like(a) if resets is None else _where(resets, a, 0.0)
    if resets is not None:
        a = _where(resets, 0.0, a)
    start = (jnp.full_like(s0, -jnp.inf), jnp.zeros_like(s0))
    return (_safe_log(a), (_safe_log(b), _safe_log(weight))), start


def _safe_log(x: Array) -> Array:
    """log x for x >= 0, -inf at 0, with a finite (zero) derivative there."""
    positive = x > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -jnp.inf)


def _where(flags: Array, x: Any, y: Any) -> Any:
    """``jnp.where`` over pytrees, with ``flags`` ``(T, B)`` broadcast against each leaf ``(T, B, ...)``."""
    return jax.tree.map(lambda a, b: jnp.where(trailing_axes(flags, max(jnp.ndim(a), jnp.ndim(b))), a, b), x, y)


def scan_projected(
    cell: forms.Diagonal,
    params: Any,
    us: Array,
    carry: Any,
    mask: Array | None,
    resets: Array | None,
    *,
    form: str,
    chunk: int = 64,
    initial: Any = None,
) -> tuple[Any, Array]:
    """Runs ``cell`` over the projected inputs ``us`` ``(T, B, G*H)`` from ``carry`` (leaves ``(B, ...)``).

    ``mask`` ``(T, B)``: valid steps (None: all); ``resets`` ``(T, B)``: steps that restart from ``initial`` (None:
    ``carry``; another only with ``form="sequential"``, for a chunk of a longer sequence). Returns the final carry and
    the outputs ``(T, B, H)``, zero at padded steps."""
    if form not in FORMS:
        raise ValueError(f"form: expected one of {FORMS}, got {form!r}")
    if initial is not None and form != "sequential":
        raise ValueError(f"initial: only form='sequential' scans from another carry than resets restore, got {form!r}")
    initial = carry if initial is None else initial
    coefficients = jax.vmap(jax.vmap(lambda u: cell.coefficients(params, u)))
    log = cell.log_space and form != "sequential"  # one step at a time, no product of many gates to underflow
    if cell.stabilised:  # elements (log a, log b, b); the state (m, s) is the element (-inf, m, s)
        elements = coefficients(us)
        identity = (0.0, -jnp.inf, 0.0)
        combine, apply = stabilised_combine, lambda prefix, state: stabilised_combine((-jnp.inf, *state), prefix)[1:]
        if resets is not None:  # a reset step applies its update to the initial state
            m0, s0 = cell.to_state(initial)
            restored = (jnp.full_like(m0, -jnp.inf), m0, s0)
            elements = _where(resets, combine(jax.tree.map(lambda a: a[None], restored), elements), elements)
        start = cell.to_state(carry)
    else:
        a, b = coefficients(us)
        s0 = cell.to_state(carry)  # (B, H), complex for the LRU, (B, H, N) for the SSM
        a = jnp.broadcast_to(a, b.shape).astype(b.dtype)  # a constant a (the LRU's lambda) per step, b's dtype
        if log:
            elements, start, combine, identity, apply = _log_forms(cell, a, b, s0, resets)
        else:
            if resets is not None and cell.restarts:  # the cell's own rule for a segment start
                a0, b0 = jax.vmap(jax.vmap(lambda u: cell.restart(params, u)))(us)
                a, b = _where(resets, a0.astype(a.dtype), a), _where(resets, b0, b)
            elif resets is not None:
                a, b = _where(resets, 0.0, a), _where(resets, a * cell.to_state(initial)[None] + b, b)
            elements, combine, start, identity = (a, b), _linear_combine, s0, (1.0, 0.0)
            apply = lambda prefix, state: prefix[0] * state + prefix[1]
    if mask is not None:  # padding is the identity update
        ones = jax.tree.map(lambda e, i: jnp.full_like(e, i), elements, _like(elements, identity))
        elements = _where(mask, elements, ones)
    states = _states(form, elements, start, combine, apply, identity, chunk)
    if log and cell.negative_eigenvalues:  # each part's positive terms less its negative ones
        (p, n), (wp, wn) = states
        states = (jnp.exp(p) - jnp.exp(n)) + cell.to_state(carry)[None] * (jnp.exp(wp) - jnp.exp(wn))
    elif log:  # s_t = exp(log of the inputs' part) + s0 exp(log of s0's weight)
        states = jnp.exp(states[0]) + cell.to_state(carry)[None] * jnp.exp(states[1])
    ys = jax.vmap(jax.vmap(lambda s, u: cell.output(params, s, u)))(states, us)
    if mask is not None:
        ys = jnp.where(trailing_axes(mask, ys.ndim), ys, jnp.zeros_like(ys))
    return cast_like(cell.from_state(jax.tree.map(lambda a: a[-1], states)), carry), ys.astype(us.dtype)


def _log_forms(cell: forms.Diagonal, a: Array, b: Array, s0: Array, resets: Array | None):
    """``(elements, start, combine, identity, apply)`` of a log-space cell: ``b >= 0``, ``s0`` of either sign (its
    term scanned apart, :func:`_log_elements`), and ``a`` of either sign with negative eigenvalues (magnitudes logged,
    signs carried, :func:`_signed_log_combine`)."""
    if cell.negative_eigenvalues:
        elements, start = _signed_log_elements(a, b, s0, resets)
        apply = lambda prefix, state: _signed_log_combine((0.0, 1.0, state), prefix)[2]
        return elements, start, _signed_log_combine, (0.0, 1.0, -jnp.inf), apply
    elements, start = _log_elements(a, b, s0, resets)
    apply = lambda prefix, state: jax.tree.map(lambda lb, ls: _logaddexp(prefix[0] + ls, lb), prefix[1], state)
    return elements, start, _log_combine, (0.0, -jnp.inf), apply


def _like(elements: Any, identity: tuple) -> Any:
    """The identity element's values, one per leaf of ``elements`` (the last entry serving every leaf of ``b``)."""
    return tuple(jax.tree.map(lambda _, v=value: v, part) for part, value in zip(elements, identity, strict=True))


def _states(form, elements, start, combine, apply, identity, chunk):
    """Every step's state from the elements, by ``form``."""
    if form == "associative":
        prefix = jax.lax.associative_scan(combine, elements, axis=0)
        return apply(prefix, jax.tree.map(lambda a: a[None], start))
    if form == "sequential":
        return _sequential(elements, start, apply)
    return _chunked(elements, start, combine, apply, identity, chunk)


def _sequential(elements, start, apply):
    """The states one step after another: a ``lax.scan`` whose body is the recurrence's update alone (``a s + b``,
    or the stabilised one), every coefficient computed before it for all steps at once. (A log-space cell takes the
    plain update here: one step multiplies one gate, so there is no long product to underflow.)"""

    def step(state, element):
        new = apply(jax.tree.map(lambda e: e[None], element), jax.tree.map(lambda a: a[None], state))
        new = jax.tree.map(lambda a: a[0], new)
        return new, new

    return jax.lax.scan(step, start, elements)[1]


def _chunked(elements, start, combine, apply, identity, chunk: int):
    num_steps = jax.tree.leaves(elements)[0].shape[0]
    size = max(1, min(chunk, num_steps))
    pad = -num_steps % size
    if pad:
        elements = jax.tree.map(
            lambda e, i: jnp.concatenate([e, jnp.full((pad, *e.shape[1:]), i, e.dtype)]),
            elements,
            _like(elements, identity),
        )
    chunks = jax.tree.map(lambda e: e.reshape(e.shape[0] // size, size, *e.shape[1:]), elements)
    prefix = jax.lax.associative_scan(combine, chunks, axis=1)

    def across(state, prefix):
        states = apply(prefix, jax.tree.map(lambda a: a[None], state))
        return jax.tree.map(lambda a: a[-1], states), states

    _, states = jax.lax.scan(across, start, prefix)
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:])[:num_steps], states)


for _form in FORMS:
    backends.register(_form, serves=(forms.Diagonal,), supports=supports, sequence=sequence)
