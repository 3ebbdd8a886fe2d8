"""The chunkwise-parallel form of the matrix-state cells (:class:`gated.forms.MatrixState`): ``impl="chunkwise"``
of :func:`gated.run`.

Within a chunk of ``L = chunk`` steps the outputs are masked, decay-weighted matmuls of the queries, keys and values;
across chunks the matrix state is carried by a sequential scan, one step per chunk (Yang et al. 2024, GLA; Beck et
al. 2024, appendix; Dao & Gu 2024, SSD). Each chunk is recomputed in the backward pass (``jax.checkpoint``), so a
training step stores only the state at each chunk's start: ``O(T d + T d^2 / L)`` numbers per head where the
sequential and associative forms store ``O(T d^2)``.

Three kinds of update, by the cell's form, each cell giving its per-step pieces (``cell.heads``,
:class:`gated.forms.Heads`), its state (``cell.matrix_state``, :class:`gated.forms.MatrixCarry`) and its output from
what the state reads (``cell.read``, :class:`gated.forms.Reads`):

- :class:`gated.forms.MatrixDecay`: ``C_t = f_t C_{t-1} + e^{i_t} v_t k_t^T`` with a scalar ``f_t`` per head, read as
  ``C_t q_t`` (and the normaliser ``n_t = f_t n_{t-1} + e^{i_t} k_t`` as ``n_t^T q_t``). The stabiliser is the
  sequential cell's, ``m_t = max(log f_t + m_{t-1}, i_t)``, in closed form inside a chunk,
  ``m_t = max(m_0 + F_t, max_{s <= t} (i_s + F_t - F_s))`` with ``F`` the chunk's cumulative log forget gates,
  so every state, stabiliser and output equals the sequential cell's.
- :class:`gated.forms.KeyDecay`: ``C_t = C_{t-1} diag(alpha_t) + e^{i_t} v_t k_t^T``, a decay per key channel,
  read as ``C_t q_t``: the pairwise decays of a chunk's steps are formed per key in log space (GLA's exact form,
  with no secondary chunks).
- :class:`gated.forms.DeltaRule`: ``S_t = a_t S_{t-1} (I - b_t k_t k_t^T) + b_t v_t k_t^T``, read as ``S_t q_t``.
  Inside a chunk the corrected values ``u_t = b_t (v_t - a_t S_{t-1} k_t)`` solve one unit lower-triangular system
  (the WY/UT form of Yang et al. 2024). A decay per key channel (Kimi Delta Attention) weighs the keys' products
  per channel, in log space; several corrections a token (Gated DeltaProduct) run as sub-steps, the decay and a
  reset at a token's first, its read at its last.

A reset (``resets`` True at step t) restores the initial carry before step t: inside a chunk, the steps of a later
segment take the initial state as their base and weight only their own segment's inputs. Padding (``mask`` False)
is the identity update (``f = 1``, no input). Pure JAX: every transform works.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from gated import backends, forms, reference
from gated.cells import trailing_axes
from gated.cells.linear import cast_like
from gated.options import Call

Array = jax.Array


def supports(cell: forms.MatrixState, call: Call | None = None) -> str | None:
    """None if the chunkwise form runs ``call`` of a matrix-state ``cell``, else why not."""
    if call is not None and call.return_carries:
        return "return_carries=True is served by the reference path"
    return None


def sequence(cell, params: Any, xs: Array, carry: Any, mask: Array | None, resets: Array | None, call: Call):
    """The backend of :func:`gated.run` for ``impl="chunkwise"``: ``xs`` ``(T, B, D)``, carry leaves ``(B, ...)``,
    ``mask`` and ``resets`` ``(T, B)`` or None; returns the final carry and the outputs ``(T, B, H)``.

    Over more than one chunk, a ``lax.scan`` over the chunks, each projected, run and read inside the scan and
    recomputed in the backward pass: only the carry at each chunk's start is stored, and each chunk's work stays in
    the cache, so the cost per step does not grow with the length."""
    if xs.shape[0] == 0:
        return reference.sequence(cell, params, xs, carry, mask, resets, call)

    def form(state, inputs):
        xs, mask, resets = inputs
        us = jax.vmap(jax.vmap(lambda x: cell.project(params, x)))(xs)
        return _run(cell, params, us, state, mask, resets, initial=carry)

    # one chunk is a scan of one step too: one compiled body where a caller runs it eagerly
    recompute = call.remat or xs.shape[0] > call.chunk
    return reference.scan_in_chunks(form, carry, min(call.chunk, xs.shape[0]), xs, mask, resets, recompute)


def _run(cell, params, us, carry, mask, resets, initial):
    """One chunk ``us`` ``(L, B, G*H)`` from ``carry``, a reset restoring ``initial``: the carry at its end and
    its outputs ``(L, B, H)``."""
    q, k, v, g, i = jax.vmap(jax.vmap(lambda u: cell.heads(params, u)))(us)  # (L, B, K, ...) each
    kernel, no_input = next(kind for form, kind in _KINDS.items() if isinstance(cell, form))
    has_resets = resets is not None
    if has_resets and mask is not None:
        resets = resets & mask  # a reset at a padded step is ignored
    if mask is not None:  # padding: no forgetting, no input (e^{-inf} for a decay cell, b = 0 for the delta rule)
        g, i = _where(mask, g, 0.0), _where(mask, i, no_input)
    resets = jnp.zeros(us.shape[:2], bool) if resets is None else resets
    steps = k.shape[3] if k.ndim > q.ndim else None  # n_h corrections a token (gated.forms.DeltaRule)
    if steps is not None:
        q, k, v, g, i, resets = _substeps(steps, q, k, v, g, i, resets)
    pieces = [jnp.moveaxis(x, 0, 2) for x in (q, k, v, g, i)]  # (B, K, L, ...)
    kernel = functools.partial(kernel, has_resets=has_resets)
    over_heads = jax.vmap(kernel, in_axes=(0, 0, 0, 0, 0, None, 0, 0))  # the heads share the resets
    states = cell.matrix_state(carry), cell.matrix_state(initial)  # leaves (B, K, ...)
    final, reads = jax.vmap(over_heads)(*pieces, resets.T, *states)
    reads = jax.tree.map(lambda r: jnp.moveaxis(r, 2, 0), reads)  # (B, K, L, ...) -> (L, B, K, ...)
    if steps is not None:  # each token's read is its last correction's
        reads = jax.tree.map(lambda r: r[steps - 1 :: steps], reads)
    ys = jax.vmap(jax.vmap(lambda r, u: cell.read(params, r, u)))(reads, us)
    if mask is not None:
        ys = jnp.where(trailing_axes(mask, ys.ndim), ys, jnp.zeros_like(ys))
    return cast_like(cell.from_matrix_state(final), carry), ys.astype(us.dtype)


def _substeps(n: int, q, k, v, g, i, resets):
    """A chunk of L tokens of ``n`` delta-rule corrections each (``k``, ``v`` ``(L, B, K, n, d)``, ``i`` ``(L, B, K,
    n)``) as ``L n`` sub-steps of one: the decay and a reset at each token's first, its query at its last (zero
    before it, a read that is discarded), as flash-linear-attention's Gated DeltaProduct layer runs its kernel."""
    length = q.shape[0]
    flat = lambda x: jnp.moveaxis(x, 3, 1).reshape(length * n, *x.shape[1:3], *x.shape[4:])
    at = lambda x, j: jnp.stack([x if m == j else jnp.zeros_like(x) for m in range(n)], axis=1).reshape(
        length * n, *x.shape[1:]
    )
    return at(q, n - 1), flat(k), flat(v), at(g, 0), flat(i), at(resets, 0)


def _where(flags: Array, x: Array, value: float) -> Array:
    return jnp.where(trailing_axes(flags, x.ndim), x, value)


def _segments(resets: Array, g: Array):
    """Of one chunk, ``resets`` ``(L,)`` and log decays ``g`` ``(L, ...)``: whether each step is in the chunk's
    first segment, whether steps t and s share a segment with s <= t ``(L, L)``, the cumulative log decay ``F`` and
    its value ``G`` before each step's segment start (0 in the first segment), both shaped like ``g``."""
    size = g.shape[0]
    steps = jnp.arange(size)
    segment = jnp.cumsum(resets)
    same = (steps[:, None] >= steps[None, :]) & (segment[:, None] == segment[None, :])
    cumulative = jnp.cumsum(g, axis=0)
    last = jax.lax.cummax(jnp.where(resets, steps, -1))
    before = jnp.where(trailing_axes(last >= 0, g.ndim), (cumulative - g)[jnp.maximum(last, 0)], 0.0)
    return segment == 0, same, cumulative, before


def _decay(q, k, v, g, i, resets, state, init, *, has_resets: bool):
    """One head of a decay cell, one chunk ``(L, ...)`` from its starting state (:class:`gated.forms.MatrixCarry`):
    the state at its end and each step's read ``(C q, n^T q, m)`` of the stabilised state (``n`` None: no
    normaliser, its read None).
    Step t's base is the chunk's start (or the initial state after a reset in the chunk), and its inputs those of
    its own segment: ``m_t = max(m_base + F_t - G_t, max_s (i_s + F_t - F_s))``."""
    (c0, n0, m0), (ci, ni, mi) = state, init
    first, same, cumulative, before = _segments(resets, g)
    log_w = jnp.where(same, cumulative[:, None] - cumulative[None, :] + i[None, :], -jnp.inf)
    base = m0 + cumulative
    if has_resets:
        base = jnp.where(first, base, mi + cumulative - before)
    m = jnp.maximum(base, jnp.max(log_w, axis=-1))
    weights = jnp.exp(log_w - m[:, None])
    w = jnp.exp(base - m)
    scores = weights * (q @ k.T)
    read = _base_read(first, has_resets, q @ c0.T, lambda: q @ ci.T)
    num = w[:, None] * read + scores @ v
    # The state at the chunk's end is the last step's: its weights over the chunk's inputs and its base
    c = w[-1] * (c0 if not has_resets else jnp.where(first[-1], c0, ci)) + (weights[-1][:, None] * v).T @ k
    if n0 is None:
        return forms.MatrixCarry(c, None, m[-1]), forms.Reads(num, None, m)
    den = w * _base_read(first, has_resets, q @ n0, lambda: q @ ni) + jnp.sum(scores, axis=-1)
    n = w[-1] * (n0 if not has_resets else jnp.where(first[-1], n0, ni)) + weights[-1] @ k
    return forms.MatrixCarry(c, n, m[-1]), forms.Reads(num, den, m)


def _base_read(first, has_resets, read, read_init):
    """``read`` (of the chunk's starting state) in the chunk's first segment, ``read_init()`` after a reset."""
    if not has_resets:
        return read
    return jnp.where(first.reshape(*first.shape, *([1] * (read.ndim - first.ndim))), read, read_init())


def _pairwise_log_decays(same: Array, cumulative: Array) -> Array:
    """``(L, L, d_k)``: the log decay per key from step s to step t, ``F_t - F_s``, where they share a segment with
    s <= t (each at most 0), ``-inf`` elsewhere (a weight of 0)."""
    return jnp.where(same[:, :, None], cumulative[:, None, :] - cumulative[None, :, :], -jnp.inf)


def _key_decay(q, k, v, g, i, resets, start, init, *, has_resets: bool):
    """One head of a key-decay cell, one chunk ``(L, ...)`` with log decays ``g`` ``(L, d_k)``, from its starting
    memory ``C_0`` ``(d_v, d_k)``: the memory at its end and each step's read ``C_t q_t``. Within a segment,
    ``C_t q_t = C_base (q_t * gamma_t) + sum_{s <= t} e^{i_s} (q_t . (k_s * e^{F_t - F_s})) v_s`` with ``F`` the
    cumulative log decays and ``gamma_t = e^{F_t - G_t}`` the decay from the segment's base: the pairwise decays
    ``(L, L, d_k)`` are formed in log space, each exponent at most 0, so no decay over- or underflows a matmul."""
    start, init = start.c, init.c
    first, same, cumulative, before = _segments(resets, g)
    gamma = jnp.exp(cumulative - before)
    log_w = _pairwise_log_decays(same, cumulative) + i[None, :, None]
    scores = jnp.einsum("td,sd,tsd->ts", q, k, jnp.exp(log_w))
    out = _base_read(first, has_resets, (q * gamma) @ start.T, lambda: (q * gamma) @ init.T) + scores @ v
    base = start if not has_resets else jnp.where(first[-1], start, init)
    end = gamma[-1][None, :] * base + v.T @ (k * jnp.exp(log_w[-1]))
    return forms.MatrixCarry(end), forms.Reads(out)


def _delta(q, k, v, g, beta, resets, start, init, *, has_resets: bool):
    """One head of the delta rule, one chunk ``(L, ...)`` from its starting state ``S_0`` ``(d_v, d_k)``: the state
    at its end and each step's read ``S_t q_t``. Within a segment,
    ``S_t = gamma_t S_base + sum_{s <= t} (gamma_t / gamma_s) u_s k_s^T`` with the corrected values
    ``u_s = beta_s (v_s - gamma_s S_base k_s - sum_{r < s} (gamma_s / gamma_r) (k_s . k_r) u_r)``: one unit lower
    triangular system for all of them."""
    if g.ndim == 2:
        return _delta_per_key(q, k, v, g, beta, resets, start, init, has_resets=has_resets)
    start, init = start.c, init.c
    first, same, cumulative, before = _segments(resets, g)
    size = g.shape[-1]
    decay = jnp.exp(jnp.where(same, cumulative[:, None] - cumulative[None, :], -jnp.inf))
    gamma = jnp.exp(cumulative - before)  # from each step's segment base to the step
    strict = beta[:, None] * decay * (1.0 - jnp.eye(size, dtype=decay.dtype)) * (k @ k.T)
    # the base state each step reads: the chunk's start, or the initial state after a reset
    reads_base = k @ start.T if not has_resets else jnp.where(first[:, None], k @ start.T, k @ init.T)
    u = _unit_lower_solve(strict, beta[:, None] * (v - gamma[:, None] * reads_base))
    out_base = q @ start.T if not has_resets else jnp.where(first[:, None], q @ start.T, q @ init.T)
    out = gamma[:, None] * out_base + (decay * (q @ k.T)) @ u
    base = start if not has_resets else jnp.where(first[-1], start, init)
    end = gamma[-1] * base + (decay[-1][:, None] * u).T @ k
    return forms.MatrixCarry(end), forms.Reads(out)


def _delta_per_key(q, k, v, g, beta, resets, start, init, *, has_resets: bool):
    """:func:`_delta` with a decay per key channel, ``g`` ``(L, d_k)`` (Kimi Delta Attention's
    ``S_t = S_{t-1} diag(alpha_t) (I - b_t k_t k_t^T) + b_t v_t k_t^T``): the products ``k_s . k_r`` weighed by
    ``gamma_s / gamma_r`` become sums over the keys of ``k_s k_r e^{F_s - F_r}``, formed in log space as
    :func:`_key_decay` forms them."""
    start, init = start.c, init.c
    first, same, cumulative, before = _segments(resets, g)
    size = g.shape[0]
    gamma = jnp.exp(cumulative - before)  # (L, d_k): from each step's segment base to the step
    weights = jnp.exp(_pairwise_log_decays(same, cumulative))
    strict = beta[:, None] * (1.0 - jnp.eye(size, dtype=k.dtype)) * jnp.einsum("sd,rd,srd->sr", k, k, weights)
    reads_base = _base_read(first, has_resets, (k * gamma) @ start.T, lambda: (k * gamma) @ init.T)
    u = _unit_lower_solve(strict, beta[:, None] * (v - reads_base))
    out_base = _base_read(first, has_resets, (q * gamma) @ start.T, lambda: (q * gamma) @ init.T)
    out = out_base + jnp.einsum("td,sd,tsd->ts", q, k, weights) @ u
    base = start if not has_resets else jnp.where(first[-1], start, init)
    end = gamma[-1][None, :] * base + u.T @ (k * weights[-1])
    return forms.MatrixCarry(end), forms.Reads(out)


def _unit_lower_solve(strict: Array, rhs: Array) -> Array:
    """``(I + N)^{-1} rhs`` for a strictly lower triangular ``N`` ``(L, L)``: as ``N^L = 0``, the inverse is the
    product ``(I - N)(I + N^2)(I + N^4)...`` of ``ceil(log2 L)`` factors, each a matmul (no LAPACK call: the same
    program on every platform, and XLA:CPU's runtime was seen to hang on a triangular solve inside this scan)."""
    power, out = -strict, rhs - strict @ rhs
    for _ in range(max(0, (strict.shape[-1] - 1).bit_length() - 1)):
        power = power @ power
        out = out + power @ out
    return out


# The kernel of each kind of matrix-state update, and the write of a padded step (no input).
_KINDS = {forms.MatrixDecay: (_decay, -jnp.inf), forms.KeyDecay: (_key_decay, -jnp.inf), forms.DeltaRule: (_delta, 0.0)}

backends.register("chunkwise", serves=(forms.MatrixState,), supports=supports, sequence=sequence)
