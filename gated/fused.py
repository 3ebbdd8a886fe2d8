"""Fused sequence kernels: one forward loop and one linear tangent rule per cell.

Each kernel is a :func:`jax.custom_jvp` over the whole sequence. Its primal is
the forward loop (every step's carry, ``(T, B, H)``); its tangent rule is a
*linear recurrence* in the carry tangent:

.. math::
    \\dot h_t = K_t \\odot \\dot h_{t-1} + \\textstyle\\sum_k A_{t,k} \\odot (\\dot h_{t-1} W_h)_k + e_t

where the factors ``K_t`` and ``A_t`` come from the saved primal states, and
``e_t``, everything the parameter and input tangents contribute
(``x_t dW_x + dx_t W_x + h_{t-1} dW_h + db``), is formed by large matmuls
over all ``T * B`` rows outside the loop. Only the carry tangent runs inside it.

Because the rule is linear in the tangents, JAX transposes it for reverse
mode: the transposed loop carries only the carry cotangent, and the weight
gradients (``sum_t [x_t, h_{t-1}]^T dpre_t``) come out as one matmul after it.
Forward mode (``jvp``, ``jacfwd``), reverse mode (``grad``, ``jacrev``) and
higher orders (``hessian``, ``grad`` of ``grad``) all come from this one rule,
and ``vmap`` batches it like any JAX function: nothing here is opaque to XLA.

The forward loops: the input projection is inside the loop, one matmul of
depth D + H with the recurrent one; the LSTM activates its whole gate block with
one ``tanh`` (``sigmoid(z) = (1 + tanh(z / 2)) / 2``); the GRU keeps one kernel
per gate so that nothing is sliced inside its loop. The tangent rule walks
chunks of steps (:func:`chunk_length`) under ``jax.checkpoint``: reverse mode
keeps only the carries (``2*H`` numbers per step and example for the LSTM,
``H`` for the GRU and RNN), and the backward pass recomputes each chunk's gates
with one matmul, runs its steps and adds its share of the weight gradients on
arrays that stay in cache. ``remat`` therefore has nothing left to save. The
choices were measured with ``benchmarks/training_step.py`` (results in
``benchmarks/results``).

Every kernel takes time-major, batch-flat arrays: ``xs`` ``(T, B, D)``, carries
``(B, H)``, an optional ``mask`` ``(T, B)`` (1 where a step is valid; a padded
step leaves the carry unchanged and outputs zero, as in :func:`gated.run`),
and returns ``(final carry, ys)``.

Supported cells (:func:`supports`): the LSTM with a forget gate, without
peepholes or coupling; the GRU with ``reset="after"`` (either update
convention); the RNN with any activation. :func:`gated.run` takes the
reference path for the others. ``tests/test_fused.py`` checks values, both
modes of differentiation, second derivatives and ``vmap`` against the
reference path in float64 to 1e-10.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from gated.cells import ACTIVATIONS, Cell, LSTMState
from gated.options import Call

Array = jax.Array


def supports(cell: Cell, call: Call | None = None) -> str | None:
    """None if ``cell`` has a fused kernel that serves ``call`` (by default any), else the reason it has none."""
    reason = None if call is None else call.reference_only()
    if reason is not None:
        return reason
    if cell.kernel is None:
        return f"no fused kernel for {type(cell).__name__}"
    limits = cell.kernel_limits()
    return None if limits is None else f"the fused {cell.name.upper()} kernel {limits}"


def check_params(cell: Cell, params: Any) -> None:
    """Checks the parameter shapes a fused kernel relies on (the reference path checks them per step)."""
    h, g = cell.hidden_size, cell.num_gates
    d = params.input_kernel.shape[0]
    expected = {"input_kernel": (d, g * h), "recurrent_kernel": (h, g * h), "bias": (g * h,)}
    if cell.kernel == "gru":
        expected["candidate_bias"] = (h,)
    for name, shape in expected.items():
        leaf = getattr(params, name)
        got = None if leaf is None else jnp.shape(leaf)
        if got != shape:
            raise ValueError(f"params.{name}: expected shape {shape} for {cell.name} with H = {h}, got {got}")


def sequence(cell: Cell, params: Any, xs: Array, carry: Any, mask: Array | None, resets: None, call: Call):
    """Runs the fused kernel of ``cell``: ``xs`` ``(T, B, D)``, carry leaves ``(B, H)``, ``mask`` ``(T, B)`` or None
    (no ``resets``: :func:`supports`).

    Returns ``(carry, ys)`` with ``ys`` ``(T, B, H)``. Raises ValueError for a
    cell without a fused kernel (see :func:`supports`).
    """
    reason = supports(cell, call)
    if reason is not None:
        raise ValueError(f"cell: {reason}; got {cell!r}")
    check_params(cell, params)
    xs, unroll = xs.astype(call.dtype), call.unroll
    m = None if mask is None else mask.astype(xs.dtype)[:, :, None]
    w = (params.input_kernel, params.recurrent_kernel, params.bias)
    if cell.kernel == "lstm":
        hs, cs = _lstm(unroll, *w, xs, carry.h, carry.c, m)
        return LSTMState(hs[-1], cs[-1]), _outputs(hs, m)
    if cell.kernel == "gru":
        hs = _gru(cell.update == "keep", unroll, *w, params.candidate_bias, xs, carry, m)
    else:
        hs = _rnn(cell.activation, unroll, *w, xs, carry, m)
    return hs[-1], _outputs(hs, m)


def _outputs(hs: Array, m: Array | None) -> Array:
    """The outputs from the stacked carries: zero at padded steps, where the carry is held."""
    return hs if m is None else m * hs


def previous(first: Array, stacked: Array) -> Array:
    """``[first, stacked[0], ..., stacked[T-2]]``: the state before each step."""
    return jnp.concatenate([first[None], stacked[:-1]], axis=0)


def _masked(m: Array | None, new: Array, old: Array) -> Array:
    return new if m is None else jnp.where(m > 0, new, old)


def _nonzero(tangents) -> list:
    """The tangents with symbolic zeros as None: the tangent rules skip their terms (a model's first layer has no
    input tangent), and ``jax.checkpoint`` passes None through as an empty pytree."""
    return [None if isinstance(t, SymbolicZero) else t for t in tangents]


def _matmul(a: Array, w: Array) -> Array:
    """``(T, B, K) @ (K, N)`` as one 2-D matmul over all T*B rows. Its transpose (the weight gradient in reverse
    mode) is then one 2-D matmul too, which XLA:CPU runs faster than the 3-D contraction's transpose."""
    return (a.reshape(-1, a.shape[-1]) @ w).reshape(*a.shape[:-1], w.shape[-1])


def _input_tangent(w_x, xs, hprev, dw_x, dw_h, db, dxs):
    """``e = dx W_x + x dW_x + h_{t-1} dW_h + db``, ``(T, B, G*H)``: the tangent the loop receives at each step
    from everything but the carry, as matmuls over all T*B rows. Zero tangents (None) are skipped; None if every
    term is zero."""
    terms = []
    if dxs is not None:
        terms.append(_matmul(dxs, w_x))
    if dw_x is not None:
        terms.append(_matmul(xs, dw_x))
    if dw_h is not None:
        terms.append(_matmul(hprev, dw_h))
    if db is not None:
        terms.append(jnp.broadcast_to(db, (*xs.shape[:2], db.shape[0])))
    return functools.reduce(jnp.add, terms) if terms else None


def _block_sum(a: Array, hidden: int) -> Array:
    """The sum of the gate blocks of ``a`` ``(..., G*H)``: ``(..., H)``. A reshape and a sum rather than slices:
    its transpose is a broadcast, where that of slices is pads, which XLA:CPU runs slower in the reverse loop."""
    gates = a.shape[-1] // hidden
    return a if gates == 1 else a.reshape(*a.shape[:-1], gates, hidden).sum(-2)


def _dense(t: Array | None, like: Array) -> Array:
    return jnp.zeros_like(like) if t is None else t


def chunk_length(num_steps: int, rows: int) -> int:
    """The divisor of T nearest the chunk length whose gate block, ``(k * rows)`` numbers, holds about 2**19.

    Chunks of that size keep a chunk's recomputed gates, tangents and cotangents in cache: faster on XLA:CPU than
    one pass over all T steps (``benchmarks/training_step.py``).
    """
    target = max(1, round(2**19 / rows))
    divisors = [k for k in range(1, num_steps + 1) if num_steps % k == 0]
    return min(divisors, key=lambda k: abs(k - target))


def _over_chunks(chunk_fn, init, per_step, rows: int):
    """The tangent recurrence over chunks of steps: ``chunk_fn(carry, chunk) -> (carry, outputs)`` on every chunk of
    the per-step arrays ``per_step`` (leading axis T), outputs stacked back to ``(T, ...)``.

    Each chunk is under ``jax.checkpoint``: linearising keeps only the chunk's inputs (weights, inputs and saved
    carries), and the transposed (reverse-mode) pass recomputes the chunk's gates with one matmul, runs its steps
    backwards and adds the chunk's share to the weight gradients, all on arrays that stay in cache.
    """
    num_steps = jax.tree.leaves(per_step)[0].shape[0]
    k = chunk_length(num_steps, rows)
    chunks = jax.tree.map(lambda a: a.reshape(num_steps // k, k, *a.shape[1:]), per_step)
    _, ys = jax.lax.scan(jax.checkpoint(chunk_fn), init, chunks)
    return jax.tree.map(lambda y: y.reshape(num_steps, *y.shape[2:]), ys)


def _carry_tangent(w_h, keep, a, e, dh0, unroll):
    """The linear recurrence ``dh_t = keep_t * dh_{t-1} + sum_k a_{t,k} * (dh_{t-1} W_h)_k + e_t`` over a chunk.

    ``w_h`` ``(H, G*H)``; ``keep`` ``(k, B, H)`` or None (zero); ``a`` ``(k, B, G*H)``; ``e`` ``(k, B, H)`` or None;
    ``dh0`` ``(B, H)``. Returns ``(dh_last, dh)`` with ``dh`` ``(k, B, H)``.
    """
    hidden = w_h.shape[0]
    e = jnp.zeros((a.shape[0], *dh0.shape), a.dtype) if e is None else e

    def body(dh, inputs):
        e_t, a_t, k_t = inputs
        new = e_t + _block_sum(a_t * (dh @ w_h), hidden)
        new = new if k_t is None else new + k_t * dh
        return new, new

    return jax.lax.scan(body, dh0, (e, a, keep), unroll=unroll)


# RNN: h_t = phi(x_t W_x + h_{t-1} W_h + b). Tangent: dh_t = phi'_t * (e_t + dh_{t-1} W_h), phi' from h_t.

_DERIVATIVES = {
    "tanh": lambda y: 1 - y * y,
    "sigmoid": lambda y: y * (1 - y),
    "relu": lambda y: (y > 0).astype(y.dtype),
    "identity": jnp.ones_like,
}


def _rnn_loop(activation, unroll, w_x, w_h, b, xs, h0, m):
    phi = ACTIVATIONS[activation]
    w, bias = jnp.concatenate([w_x, w_h], axis=0), b[None, :]  # the input projection inside the loop

    def body(h, inputs):
        x, mt = inputs
        h_new = _masked(mt, phi(jnp.concatenate([x, h], axis=1) @ w + bias), h)
        return h_new, h_new

    return jax.lax.scan(body, h0, (xs, m), unroll=unroll)[1]


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _rnn(activation, unroll, w_x, w_h, b, xs, h0, m):
    return _rnn_loop(activation, unroll, w_x, w_h, b, xs, h0, m)


@functools.partial(_rnn.defjvp, symbolic_zeros=True)
def _rnn_jvp(activation, unroll, primals, tangents):
    w_x, w_h, b, xs, h0, m = primals
    dw_x, dw_h, db, dxs, dh0, _ = _nonzero(tangents)
    hs = _rnn(activation, unroll, w_x, w_h, b, xs, h0, m)

    def chunk(dh, inputs):
        x, hp, h, mt, dx = inputs
        a = _DERIVATIVES[activation](h)  # phi'(pre_t) from h_t; at padded steps the mask zeroes it
        a = a if mt is None else mt * a
        e = _input_tangent(w_x, x, hp, dw_x, dw_h, db, dx)
        return _carry_tangent(w_h, None if mt is None else 1 - mt, a, None if e is None else a * e, dh, unroll)

    per_step = (xs, previous(h0, hs), hs, m, dxs)
    return hs, _over_chunks(chunk, _dense(dh0, h0), per_step, h0.size)


# LSTM: gates i, f, g, o. One tanh over the block z * scale gives tanh(z/2) for i, f, o and tanh(z) for g;
# sigmoid(z) = (1 + tanh(z / 2)) / 2.


def _lstm_scale(h: int, dtype) -> Array:
    half = jnp.full((h,), 0.5, dtype)
    return jnp.concatenate([half, half, jnp.ones((h,), dtype), half])


def lstm_block(pre: Array, hidden: int) -> Array:
    """``a = tanh(z * scale)`` of a pre-activation block ``z`` ``(..., 4H)``: ``tanh(z/2)`` for i, f, o and
    ``tanh(z)`` for g, one ``tanh`` for the whole block. The LSTM's gates, on the fused and native paths."""
    return jnp.tanh(pre * _lstm_scale(hidden, pre.dtype).reshape((1,) * (pre.ndim - 1) + (-1,)))


def lstm_gates(a: Array, h: int):
    """``(i, f, g, o)`` from the block ``a = tanh(z * scale)`` (:func:`lstm_block`)."""
    i, f, g, o = (a[..., k * h : (k + 1) * h] for k in range(4))
    return 0.5 + 0.5 * i, 0.5 + 0.5 * f, g, 0.5 + 0.5 * o


def _lstm_loop(unroll, w_x, w_h, b, xs, h0, c0, m):
    """Every step's ``(h_t, c_t)``. The input projection is inside the loop, as one matmul with the recurrent one:
    ``[x_t, h] [W_x; W_h]``."""
    hidden = w_h.shape[0]
    w, bias = jnp.concatenate([w_x, w_h], axis=0), b[None, :]

    def body(carry, inputs):
        h, c = carry
        x, mt = inputs
        a = lstm_block(jnp.concatenate([x, h], axis=1) @ w + bias, hidden)
        i, f, g, o = lstm_gates(a, hidden)
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        h_new, c_new = _masked(mt, h_new, h), _masked(mt, c_new, c)
        return (h_new, c_new), (h_new, c_new)

    return jax.lax.scan(body, (h0, c0), (xs, m), unroll=unroll)[1]


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _lstm(unroll, w_x, w_h, b, xs, h0, c0, m):
    return _lstm_loop(unroll, w_x, w_h, b, xs, h0, c0, m)


@functools.partial(_lstm.defjvp, symbolic_zeros=True)
def _lstm_jvp(unroll, primals, tangents):
    """The LSTM's tangent recurrence.

    With ``dpre_t = e_t + dh_{t-1} W_h`` the pre-activation tangent and
    ``s = [i'(g), f'(c_{t-1}), g'(i), o'(tanh c_t)]`` the gates' derivatives times
    what they multiply: ``dc_t = f dc_{t-1} + (s dpre)_i + (s dpre)_f + (s dpre)_g``
    and ``dh_t = (s dpre)_o + o tanh'(c_t) dc_t``. Each chunk's gates are
    recomputed from the saved carries with one matmul.
    """
    w_x, w_h, b, xs, h0, c0, m = primals
    dw_x, dw_h, db, dxs, dh0, dc0, _ = _nonzero(tangents)
    hs, cs = _lstm(unroll, w_x, w_h, b, xs, h0, c0, m)
    hidden = w_h.shape[0]
    w = jnp.concatenate([w_x, w_h], axis=0)
    # Which gate blocks of s * dpre sum into dc (i, f, g) and which into dh (o). A masked sum rather than slices:
    # its transpose is a broadcast, where that of slices is pads, which XLA:CPU runs slower in the reverse loop.
    to_c = jnp.array([1, 1, 1, 0], xs.dtype)[None, :, None]
    to_h = jnp.array([0, 0, 0, 1], xs.dtype)[None, :, None]

    def chunk(carry, inputs):
        x, hp, cp, c, mk, dx = inputs
        a = lstm_block(_matmul(jnp.concatenate([x, hp], axis=2), w) + b[None, None], hidden)
        i, f, g, o = lstm_gates(a, hidden)
        tc = jnp.tanh(c)  # c_t at every valid step; the mask keeps the carry at padded ones
        s = jnp.concatenate([0.25 * g, 0.25 * cp, i, 0.25 * tc], axis=-1) * (1 - a * a)  # (1 - a^2) / 4 = sigma'
        e = _input_tangent(w_x, x, hp, dw_x, dw_h, db, dx)
        e = jnp.zeros_like(s) if e is None else e

        def body(carry, inputs):
            dh, dc = carry
            e_t, s_t, f_t, o_t, tc_t, mt = inputs
            sd = (s_t * (e_t + dh @ w_h)).reshape(*dh.shape[:-1], 4, hidden)
            dc_new = f_t * dc + jnp.sum(sd * to_c, axis=-2)
            dh_new = jnp.sum(sd * to_h, axis=-2) + o_t * (1 - tc_t * tc_t) * dc_new
            dh_new, dc_new = _masked(mt, dh_new, dh), _masked(mt, dc_new, dc)
            return (dh_new, dc_new), (dh_new, dc_new)

        return jax.lax.scan(body, carry, (e, s, f, o, tc, mk), unroll=unroll)

    per_step = (xs, previous(h0, hs), previous(c0, cs), cs, m, dxs)
    tangent = _over_chunks(chunk, (_dense(dh0, h0), _dense(dc0, c0)), per_step, 4 * h0.size)
    return (hs, cs), tangent


# GRU, reset="after": r, z = sigmoid(u_rz + (h W_h)_rz); n = tanh(u_n + r * ((h W_h)_n + b_hn));
# h_t = n + keep * (h_{t-1} - n) with keep = z ("keep") or 1 - z ("write").


def gru_gates(w_x, w_h, b, b_hn, x, hp):
    """``(r, z, n, hn)`` of a chunk ``(k, B, .)`` from its inputs ``x`` and previous carries ``hp``, two matmuls
    over all its rows (``hn = h W_hn + b_hn``). The GRU's gates, on the fused and native paths."""
    hidden = hp.shape[-1]
    u = _matmul(x, w_x) + b[None, None]
    v = _matmul(hp, w_h) + jnp.concatenate([jnp.zeros((2 * hidden,), b.dtype), b_hn])[None, None]
    rz = jax.nn.sigmoid(u[..., : 2 * hidden] + v[..., : 2 * hidden])
    r, z, hn = rz[..., :hidden], rz[..., hidden:], v[..., 2 * hidden :]
    return r, z, jnp.tanh(u[..., 2 * hidden :] + r * hn), hn


def _gru_loop(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m):
    """Every step's ``h_t``, with one kernel per gate so that nothing is sliced inside the loop (XLA:CPU emits slow
    code for a slice of a value computed in the same fusion): r and z each come from ``[x_t, h] W``, the candidate
    from ``x_t W_xn`` and ``h W_hn``."""
    hidden = h0.shape[-1]
    w = jnp.concatenate([w_x, w_h], axis=0)
    w_r, w_z = w[:, :hidden], w[:, hidden : 2 * hidden]
    w_xn, w_hn = w_x[:, 2 * hidden :], w_h[:, 2 * hidden :]
    b_r, b_z, b_n = (b[None, k * hidden : (k + 1) * hidden] for k in range(3))

    def body(h, inputs):
        x, mt = inputs
        xh = jnp.concatenate([x, h], axis=1)
        r = jax.nn.sigmoid(xh @ w_r + b_r)
        z = jax.nn.sigmoid(xh @ w_z + b_z)
        n = jnp.tanh(x @ w_xn + b_n + r * (h @ w_hn + b_hn[None]))
        keep = z if keep_z else 1 - z
        h_new = _masked(mt, n + keep * (h - n), h)
        return h_new, h_new

    return jax.lax.scan(body, h0, (xs, m), unroll=unroll)[1]


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _gru(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m):
    return _gru_loop(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m)


@functools.partial(_gru.defjvp, symbolic_zeros=True)
def _gru_jvp(keep_z, unroll, primals, tangents):
    """The GRU's tangent recurrence, in the form of :func:`_carry_tangent`.

    ``dh_t = keep dh_{t-1} + a_r dpre_r + a_z dpre_z + a_hn dhn + c_n du_n`` with
    ``c_n = (1 - keep) tanh'``, ``a_r = c_n hn sigma'(r)``, ``a_z = +-(h_{t-1} - n) sigma'(z)``,
    ``a_hn = c_n r``, where ``dpre_{r,z}`` and ``dhn`` each get ``dh_{t-1} W_h`` and their share of
    the input-side tangent. Each chunk's gates are recomputed from the saved carries (two matmuls).
    """
    w_x, w_h, b, b_hn, xs, h0, m = primals
    dw_x, dw_h, db, db_hn, dxs, dh0, _ = _nonzero(tangents)
    hs = _gru(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m)
    hidden = h0.shape[-1]
    zeros = jnp.zeros((2 * hidden,), b.dtype)
    db_h = None if db_hn is None else jnp.concatenate([zeros, db_hn])  # b_hn's tangent, on the recurrent side

    def chunk(dh, inputs):
        x, hp, mk, dx = inputs
        r, z, n, hn = gru_gates(w_x, w_h, b, b_hn, x, hp)
        keep = z if keep_z else 1 - z
        c_n = (1 - keep) * (1 - n * n)
        a_z = (hp - n) * z * (1 - z)
        a = jnp.concatenate([c_n * hn * r * (1 - r), a_z if keep_z else -a_z, c_n * r], axis=-1)
        # The input side: dx W_x + x dW_x + db enters r and z through a_r, a_z and the candidate through c_n;
        # h_{t-1} dW_h + db_hn enters r, z and hn through a.
        e_x = _input_tangent(w_x, x, hp, dw_x, None, db, dx)
        e_h = _input_tangent(w_x, x, hp, None, dw_h, db_h, None)
        terms = []
        if e_x is not None:
            terms.append(_block_sum(jnp.concatenate([a[..., : 2 * hidden], c_n], axis=-1) * e_x, hidden))
        if e_h is not None:
            terms.append(_block_sum(a * e_h, hidden))
        e = functools.reduce(jnp.add, terms) if terms else None
        if mk is not None:
            a, keep, e = mk * a, mk * keep + (1 - mk), None if e is None else mk * e
        return _carry_tangent(w_h, keep, a, e, dh, unroll)

    per_step = (xs, previous(h0, hs), m, dxs)
    return hs, _over_chunks(chunk, _dense(dh0, h0), per_step, 4 * h0.size)


__all__ = ["check_params", "chunk_length", "gru_gates", "lstm_block", "lstm_gates", "previous", "sequence", "supports"]
