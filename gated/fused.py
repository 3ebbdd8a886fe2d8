"""Fused sequence kernels: the whole recurrence as one function with a hand-written backward pass.

The reference path (:func:`gated.run` with ``impl="reference"``) vmaps
``cell.step`` over the batch and lets JAX differentiate the scan: the
transcription of the equations, and slow on XLA:CPU. What these kernels do
instead, each measured on a 2-core CPU (``benchmarks/``; the numbers and the
experiments that chose them are in the README's Performance section):

* the LSTM's gates are activated by ONE ``tanh`` over the whole ``(B, 4H)``
  block, using ``sigmoid(z) = (1 + tanh(z / 2)) / 2`` and a per-gate scale
  (per-gate activations of slices were 1.8x slower per step). XLA:CPU emits
  slow code for a slice of a value computed in the same fusion, so the GRU
  keeps one kernel per gate instead and slices nothing inside its loop (2x).
* the input projection is inside the loop, one matmul of depth D + H with the
  recurrent one: a precomputed ``(T, B, G*H)`` projection costs memory traffic
  that made steps 1.4x slower at T = 1000.
* the backward loop carries only ``(dh, dc)`` and emits ``dh_t`` (and
  ``dc_t``); the pre-activation gradients and the weight gradients
  (``dW = sum_t [x_t, h_{t-1}]^T dpre_t``) are formed after it, over chunks of
  steps, as large matmuls instead of one small matmul per step. The chunks
  (:func:`_chunk_length`, about 2**19 floats of gate block each) keep those
  arrays in cache: 1.1 to 1.35x faster than one pass over all T steps.
* the LSTM stores only its carries, ``2*H`` numbers per step and example, and
  recomputes each chunk's gate block with one matmul in the backward pass;
  that was faster than storing the gates, and lighter than Flax's cells, so
  ``remat`` changes nothing for it. The GRU stores its gates (``4*H``; recomputing
  them was 10% slower at T = 100); the RNN stores only ``h_t``.
* with a small batch against H (H >= 32 B) the LSTM keeps activations
  ``(features, batch)`` so that the weight is the matmul's left operand: the
  step is then a matrix-vector product bound by reading W, 2-3x faster so.
* the input gradient is skipped when the inputs are not differentiated
  (``custom_vjp`` with symbolic zeros), as for a model's first layer.

On the CPU, for float32 LSTMs and GRUs with H a multiple of 16 (batch-major
layout), the loops themselves run in C++ (:mod:`gated.native`): the forward loop
keeps every step's gates, so the backward pass recomputes nothing, and the
backward loop forms the pre-activation gradients; the weight gradients remain
large XLA matmuls over chunks. Against the XLA loops above, that measured 1.26x
to 1.88x faster per training step (``benchmarks/training_step.py``, "XLA loops"
rows). With ``remat`` those kernels keep no gates and each chunk recomputes
them. Off the CPU the same contract runs as XLA scans
(``_lstm_gates_forward``/``_backward``, ``_gru_gates_forward``/``_backward``),
chosen by ``jax.lax.platform_dependent``.

Every kernel takes time-major, batch-flat arrays: ``xs`` ``(T, B, D)``, carries
``(B, H)``, an optional ``mask`` ``(T, B)`` (1 where a step is valid; a padded
step leaves the carry unchanged and outputs zero, as in :func:`gated.run`),
and returns ``(final carry, ys)``. They are reverse-mode only (``custom_vjp``):
``jax.jvp`` and ``jax.jacfwd`` need ``impl="reference"``.

Supported cells (:func:`supports`): the LSTM with a forget gate, without
peepholes or coupling; the GRU with ``reset="after"`` (either update
convention); the RNN with any activation. :func:`gated.run` falls back to the
reference path for the others. ``tests/test_fused.py`` checks values and
gradients against the reference path (float64 to 1e-10, float32 to 1e-5).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from gated import native
from gated.cells import ACTIVATIONS, GRU, LSTM, RNN, Cell, LSTMState

Array = jax.Array


def supports(cell: Cell, remat: bool = False) -> str | None:
    """None if ``cell`` (with ``remat``) has a fused kernel, else the reason it has none."""
    if isinstance(cell, LSTM):
        if cell.peepholes or cell.coupled or not cell.forget_gate:
            return "the fused LSTM kernel covers the cell with a forget gate, without peepholes or coupling"
        return None
    if isinstance(cell, GRU):
        if cell.reset != "after":
            return "the fused GRU kernel covers reset='after' only"
        return None
    if isinstance(cell, RNN):
        return None
    return f"no fused kernel for {type(cell).__name__}"


def check_params(cell: Cell, params: Any) -> None:
    """Checks the parameter shapes a fused kernel relies on (the reference path checks them per step)."""
    h, g = cell.hidden_size, cell.num_gates
    d = params.input_kernel.shape[0]
    expected = {"input_kernel": (d, g * h), "recurrent_kernel": (h, g * h), "bias": (g * h,)}
    if isinstance(cell, GRU):
        expected["candidate_bias"] = (h,)
    for name, shape in expected.items():
        leaf = getattr(params, name)
        got = None if leaf is None else jnp.shape(leaf)
        if got != shape:
            raise ValueError(f"params.{name}: expected shape {shape} for {cell.name} with H = {h}, got {got}")


def sequence(
    cell: Cell, params: Any, xs: Array, carry: Any, mask: Array | None, *, remat: bool = False, unroll: int = 1
):
    """Runs the fused kernel of ``cell``: ``xs`` ``(T, B, D)``, carry leaves ``(B, H)``, ``mask`` ``(T, B)`` or None.

    Returns ``(carry, ys)`` with ``ys`` ``(T, B, H)``. Raises ValueError for a
    cell without a fused kernel (see :func:`supports`).
    """
    reason = supports(cell, remat)
    if reason is not None:
        raise ValueError(f"cell: {reason}; got {cell!r}")
    check_params(cell, params)
    dtype = xs.dtype
    m = None if mask is None else mask.astype(dtype)[:, :, None]
    if isinstance(cell, LSTM):
        feature = _feature_major(xs.shape[1], cell.hidden_size)
        if not feature and native.covers(dtype, cell.hidden_size):
            (h, c), ys = _lstm_native(unroll, not remat, params.input_kernel, params.recurrent_kernel, params.bias,
                                      xs, carry.h, carry.c, m)  # fmt: skip
            return LSTMState(h, c), ys
        (h, c), ys = _lstm(unroll, feature, params.input_kernel, params.recurrent_kernel, params.bias, xs,
                           carry.h, carry.c, m)  # fmt: skip
        return LSTMState(h, c), ys
    if isinstance(cell, GRU):
        if native.covers(dtype, cell.hidden_size):
            return _gru_native(cell.update == "keep", unroll, not remat, params.input_kernel, params.recurrent_kernel,
                               params.bias, params.candidate_bias, xs, carry, m)  # fmt: skip
        return _gru(cell.update == "keep", unroll, params.input_kernel, params.recurrent_kernel, params.bias,
                    params.candidate_bias, xs, carry, m)  # fmt: skip
    return _rnn(cell.activation, unroll, params.input_kernel, params.recurrent_kernel, params.bias, xs, carry, m)


def _chunked(a: Array | None, k: int) -> Array | None:
    """``(T, ...)`` as ``(T // k, k, ...)``: the chunks the backward passes walk (None stays None)."""
    return None if a is None else a.reshape(a.shape[0] // k, k, *a.shape[1:])


def _values(*args):
    """The values of custom_vjp arguments passed with ``symbolic_zeros`` (None stays None)."""
    return tuple(None if a is None else a.value for a in args)


def _flag(on: bool) -> Array | None:
    """A static flag that can travel in custom_vjp residuals: an empty array, or None."""
    return jnp.zeros((0,)) if on else None


def _dense(cotangent: Any, like: Array) -> Array:
    """A cotangent as an array: zeros where JAX passed a symbolic zero (an output the loss does not use)."""
    if isinstance(cotangent, jax.custom_derivatives.SymbolicZero):
        return jnp.zeros(like.shape, like.dtype)
    return cotangent


def _masked(m: Array, new: Array, old: Array) -> Array:
    return jnp.where(m > 0, new, old)


def _previous(first: Array, stacked: Array) -> Array:
    """``[first, stacked[0], ..., stacked[T-2]]``: the state before each step."""
    return jnp.concatenate([first[None], stacked[:-1]], axis=0)


# LSTM: gates i, f, g, o. One tanh over the block z * scale gives tanh(z/2) for
# i, f, o and tanh(z) for g; sigmoid(z) = (1 + tanh(z/2)) / 2.
#
# Two layouts, picked from the static shapes by _feature_major: batch-major keeps
# activations (B, 4H) and computes h W_h; feature-major keeps them (4H, B) and
# computes W_h^T h, so the weight is the matmul's left operand with its
# contracted axis contiguous. With a small batch against H the step's matmul is
# a matrix-vector product bound by reading W_h, and feature-major measured 2-3x
# faster per step on XLA:CPU at B 16, H 1024; at B 16, H 128 to 256 batch-major is faster.


def _feature_major(batch: int, hidden: int) -> bool:
    return hidden >= 32 * batch


def _lstm_scale(h: int, dtype, feature: bool) -> Array:
    half = jnp.full((h,), 0.5, dtype)
    scale = jnp.concatenate([half, half, jnp.ones((h,), dtype), half])
    return scale[:, None] if feature else scale[None, :]


def _gates_axis(a: Array, feature: bool) -> int:
    """The gate axis of ``a``: the last, or the second last when feature-major."""
    return a.ndim - 2 if feature else a.ndim - 1


def _block(a: Array, k: int, h: int, feature: bool) -> Array:
    """Gate block k of a fused array."""
    return jax.lax.slice_in_dim(a, k * h, (k + 1) * h, axis=_gates_axis(a, feature))


def _lstm_gates(a: Array, h: int, feature: bool):
    i, f, g, o = (_block(a, k, h, feature) for k in range(4))
    return 0.5 + 0.5 * i, 0.5 + 0.5 * f, g, 0.5 + 0.5 * o


def _lstm_forward(feature, unroll, w_x, w_h, b, xs, h0, c0, m, save):
    """The forward loop, in the kernel's layout (carries ``(H, B)`` when feature-major, ``(B, H)`` otherwise).

    The input projection is inside the loop, as one matmul with the recurrent
    one: ``[x_t, h] [W_x; W_h]``. Precomputing ``x W_x`` for all steps costs a
    ``(T, B, 4H)`` array that, at T = 1000, made each step 1.4x slower (memory
    traffic), and one matmul of depth D + H beats two (measured on XLA:CPU).
    With ``save``, also every step's carry.
    """
    hidden = w_h.shape[0]
    scale = _lstm_scale(hidden, xs.dtype, feature)
    w = jnp.concatenate([w_x, w_h], axis=0)
    if feature:
        w_t, bias, xs = w.T, b[:, None], jnp.swapaxes(xs, 1, 2)

        def pre(x, h):
            return w_t @ jnp.concatenate([x, h], axis=0) + bias

    else:
        bias = b[None, :]

        def pre(x, h):
            return jnp.concatenate([x, h], axis=1) @ w + bias

    def body(carry, inputs):
        h, c = carry
        x, mt = inputs
        a = jnp.tanh(pre(x, h) * scale)
        i, f, g, o = _lstm_gates(a, hidden, feature)
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        if mt is not None:
            h_new, c_new, y = _masked(mt, h_new, h), _masked(mt, c_new, c), mt * h_new
        else:
            y = None
        return (h_new, c_new), (h_new, c_new if save else None, y)

    (h, c), (hs, cs, ys) = jax.lax.scan(body, (h0, c0), (xs, m), unroll=unroll)
    return (h, c), hs if m is None else ys, (hs, cs)


def _to_kernel(feature, h0, c0, m):
    """Carries and mask into the kernel's layout."""
    if not feature:
        return h0, c0, m
    return h0.T, c0.T, None if m is None else jnp.swapaxes(m, 1, 2)


def _from_kernel(feature, stacked):
    return jnp.swapaxes(stacked, 1, 2) if feature else stacked


def _lstm_coefficients(acts, cprev, hidden, feature):
    """The backward loop's per-step factors, for a chunk of steps at once (vectorised, outside the loop).

    With dh, dc the gradients reaching h_t and c_t: dc_t (total) = dc + dh * ko,
    the pre-activation gradient is [dc, dc, dc, dh] * p, and dc_{t-1} = dc_t * f.
    """
    i, f, g, o = _lstm_gates(acts, hidden, feature)
    tc = jnp.tanh(f * cprev + i * g)
    q = 1 - acts * acts  # d tanh(s z)/dz = s q; the sigmoid gates' (1 + a)/2 adds 1/2: 1/4 for i, f, o
    p = jnp.concatenate([0.25 * g, 0.25 * cprev, i, 0.25 * tc], axis=_gates_axis(acts, feature)) * q
    return p, o * (1 - tc * tc), f


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _lstm(unroll, feature, w_x, w_h, b, xs, h0, c0, m):
    h0, c0, m = _to_kernel(feature, h0, c0, m)
    (h, c), ys, _ = _lstm_forward(feature, unroll, w_x, w_h, b, xs, h0, c0, m, save=False)
    return (h.T, c.T) if feature else (h, c), _from_kernel(feature, ys)


def _lstm_fwd(unroll, feature, w_x, w_h, b, xs, h0, c0, m):
    # symbolic_zeros: each argument comes with whether it is differentiated; the input gradient (one matmul
    # per chunk) is skipped when xs is not, as for the first layer of a model.
    need_dxs = _flag(xs.perturbed)
    w_x, w_h, b, xs, h0, c0, m = _values(w_x, w_h, b, xs, h0, c0, m)
    h0, c0, m = _to_kernel(feature, h0, c0, m)
    (h, c), ys, (hs, cs) = _lstm_forward(feature, unroll, w_x, w_h, b, xs, h0, c0, m, save=True)
    out = (h.T, c.T) if feature else (h, c), _from_kernel(feature, ys)
    return out, (w_x, w_h, b, xs, h0, c0, m, hs, cs, need_dxs)


def _chunk_length(num_steps: int, rows: int) -> int:
    """The divisor of T nearest the chunk length whose gate block, ``(k * rows, 4H)``, holds about 2**19 floats.

    Measured on XLA:CPU at B 32, T 100, H 128, at B 16, T 1000, H 128 and at B 64,
    T 200, H 256 (``rows`` = B * 4H): that size was the fastest, 1.1 to 1.35x a
    single chunk over all of T, and 1.05 to 1.1x chunks of 10 steps.
    """
    target = max(1, round(2**19 / rows))
    divisors = [k for k in range(1, num_steps + 1) if num_steps % k == 0]
    return min(divisors, key=lambda k: abs(k - target))


def _lstm_backward_loop(feature, unroll, w_h, dh_last, dc_last, dys, p, ko, f, m):
    """The reverse loop over steps; returns the carry gradients at the start and (dh_t, dc_t) for every step."""
    if feature:

        def matmul(dpre):
            return w_h @ dpre

    else:
        w_ht = w_h.T

        def matmul(dpre):
            return dpre @ w_ht

    def body(carry, inputs):
        dh, dc = carry
        dy, p_t, ko_t, f_t, mt = inputs
        dh_new = dh + dy if mt is None else mt * (dh + dy)
        dc_new = dh_new * ko_t + (dc if mt is None else mt * dc)
        dpre = jnp.concatenate([dc_new, dc_new, dc_new, dh_new], axis=0 if feature else 1) * p_t
        dh_prev = matmul(dpre)
        dc_prev = dc_new * f_t
        if mt is not None:
            dh_prev = dh_prev + (1 - mt) * dh
            dc_prev = dc_prev + (1 - mt) * dc
        return (dh_prev, dc_prev), (dh_new, dc_new)

    return jax.lax.scan(body, (dh_last, dc_last), (dys, p, ko, f, m), reverse=True, unroll=unroll)


def _lstm_bwd(unroll, feature, res, cotangents):
    """Only the carries were stored. Time is cut into chunks (:func:`_chunk_length`); walking them backwards,
    each chunk's gate block and backward factors are recomputed (one matmul), its steps run backwards, and its
    share of the weight gradients is added (one matmul, and one more for the input gradient if it is needed).
    The chunk's arrays stay in cache, which made this faster than storing the factors of all T steps, as well
    as lighter."""
    w_x, w_h, b, xs, h0, c0, m, hs, cs, need_dxs = res
    (dh_last, dc_last), dys = jax.tree.map(_dense, cotangents, _lstm_output_like(feature, h0, hs))
    if feature:
        dh_last, dc_last, dys = dh_last.T, dc_last.T, jnp.swapaxes(dys, 1, 2)
    hidden, inputs = w_h.shape[0], w_x.shape[0]
    num_steps = xs.shape[0]
    k = _chunk_length(num_steps, xs.shape[1] * 4 * hidden)
    scale = _lstm_scale(hidden, xs.dtype, feature)[None]
    w = jnp.concatenate([w_x, w_h], axis=0)

    def chunk(carry, inputs_k):
        dh, dc, d_w, d_b = carry
        x_k, hp_k, cp_k, dy_k, m_k = inputs_k
        if feature:  # activations (k, features, B)
            xh = jnp.concatenate([jnp.swapaxes(x_k, 1, 2), hp_k], axis=1)
            pre = jnp.einsum("cg,tcb->tgb", w, xh) + b[None, :, None]
        else:
            xh = jnp.concatenate([x_k, hp_k], axis=2)
            pre = xh @ w + b[None, None]
        p, ko, f = _lstm_coefficients(jnp.tanh(pre * scale), cp_k, hidden, feature)
        (dh, dc), (dhs, dcs) = _lstm_backward_loop(feature, unroll, w_h, dh, dc, dy_k, p, ko, f, m_k)
        dpre = jnp.concatenate([dcs, dcs, dcs, dhs], axis=1 if feature else 2) * p
        if feature:
            d_w = d_w + jnp.einsum("tcb,tgb->cg", xh, dpre)
            d_b = d_b + dpre.sum((0, 2))
            d_xs = jnp.einsum("tgb,dg->tbd", dpre, w_x) if need_dxs is not None else None
        else:
            d_w = d_w + jnp.einsum("tbc,tbg->cg", xh, dpre)
            d_b = d_b + dpre.sum((0, 1))
            d_xs = dpre @ w_x.T if need_dxs is not None else None
        return (dh, dc, d_w, d_b), d_xs

    zeros = (jnp.zeros_like(w), jnp.zeros_like(b))
    scanned = tuple(_chunked(a, k) for a in (xs, _previous(h0, hs), _previous(c0, cs), dys, m))
    (dh0, dc0, d_w, d_b), d_xs = jax.lax.scan(chunk, (dh_last, dc_last, *zeros), scanned, reverse=True)
    if feature:
        dh0, dc0 = dh0.T, dc0.T
    d_xs = None if d_xs is None else d_xs.reshape(xs.shape)
    d_m = None if m is None else jnp.zeros_like(jnp.swapaxes(m, 1, 2) if feature else m)
    return d_w[:inputs], d_w[inputs:], d_b, d_xs, dh0, dc0, d_m


def _lstm_output_like(feature, h0, hs):
    """Zeros shaped as the kernel's outputs ((h, c), ys), batch-major, for symbolic-zero cotangents."""
    h0 = h0.T if feature else h0
    ys = jnp.swapaxes(hs, 1, 2) if feature else hs
    return (h0, h0), ys


_lstm.defvjp(_lstm_fwd, _lstm_bwd, symbolic_zeros=True)


# The LSTM with the native CPU kernel (gated.native) for its two loops, batch-major. The forward loop also keeps
# every step's activated gates (i, f, g, o), so the backward pass needs no recomputation: with those and the cell
# states, its loop forms the pre-activation gradients itself. Off the CPU (jax.lax.platform_dependent) the same
# contract runs as XLA scans: _lstm_gates_forward and _lstm_gates_backward, which are also what the kernel is
# tested against. With remat the gates are not kept; each chunk recomputes them with one matmul.


def _lstm_gates_forward(keep, unroll, w_x, w_h, b, xs, h0, c0, m):
    """The native forward loop's contract in XLA: every step's carries, and its activated gates if ``keep``."""
    hidden = w_h.shape[0]
    (_, _), _, (hs, cs) = _lstm_forward(False, unroll, w_x, w_h, b, xs, h0, c0, m, save=True)
    if not keep:
        return hs, cs, None
    pre = jnp.concatenate([xs, _previous(h0, hs)], axis=2) @ jnp.concatenate([w_x, w_h]) + b[None, None]
    return hs, cs, _lstm_activations(pre, hidden)


def _lstm_activations(pre: Array, hidden: int) -> Array:
    """``[sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)]`` of a batch-major pre-activation block."""
    a = jnp.tanh(pre * _lstm_scale(hidden, pre.dtype, False).reshape((1,) * (pre.ndim - 1) + (-1,)))
    return jnp.concatenate(_lstm_gates(a, hidden, False), axis=-1)


def _lstm_gates_backward(unroll, w_h, dh_last, dc_last, dys, acts, cs, cps, m):
    """The native backward loop's contract in XLA: the carry gradients at the start and every step's ``dpre``."""
    hidden = w_h.shape[0]
    w_ht = w_h.T

    def body(carry, inputs):
        dh, dc = carry
        dy, a, c, cp, mt = inputs
        i, f, g, o = (_block(a, k, hidden, False) for k in range(4))
        tc = jnp.tanh(c)
        dh_new = dh + dy if mt is None else mt * (dh + dy)
        dc_new = dh_new * o * (1 - tc * tc) + (dc if mt is None else mt * dc)
        dpre = jnp.concatenate(
            [dc_new * g * i * (1 - i), dc_new * cp * f * (1 - f), dc_new * i * (1 - g * g), dh_new * tc * o * (1 - o)],
            axis=-1,
        )
        dh_prev, dc_prev = dpre @ w_ht, dc_new * f
        if mt is not None:
            dh_prev, dc_prev = dh_prev + (1 - mt) * dh, dc_prev + (1 - mt) * dc
        return (dh_prev, dc_prev), dpre

    return jax.lax.scan(body, (dh_last, dc_last), (dys, acts, cs, cps, m), reverse=True, unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _lstm_native(unroll, keep, w_x, w_h, b, xs, h0, c0, m):
    hs, cs, _ = _lstm_native_forward(False, unroll, w_x, w_h, b, xs, h0, c0, m)
    return (hs[-1], cs[-1]), hs if m is None else m * hs


def _lstm_native_forward(keep, unroll, w_x, w_h, b, xs, h0, c0, m):
    return jax.lax.platform_dependent(
        w_x, w_h, b, xs, h0, c0, m,
        cpu=functools.partial(native.lstm_forward, keep),
        default=functools.partial(_lstm_gates_forward, keep, unroll),
    )  # fmt: skip


def _lstm_native_fwd(unroll, keep, w_x, w_h, b, xs, h0, c0, m):
    need_dxs = _flag(xs.perturbed)
    w_x, w_h, b, xs, h0, c0, m = _values(w_x, w_h, b, xs, h0, c0, m)
    hs, cs, acts = _lstm_native_forward(keep, unroll, w_x, w_h, b, xs, h0, c0, m)
    out = (hs[-1], cs[-1]), hs if m is None else m * hs
    return out, (w_x, w_h, b, xs, h0, c0, m, hs, cs, acts, need_dxs)


def _lstm_native_bwd(unroll, keep, res, cotangents):
    """Walks the chunks of :func:`_chunk_length` backwards: the loop kernel gives each chunk's ``dpre``, then the
    chunk's share of the weight gradients (and the input gradient, if needed) is one matmul each. Without kept
    gates (remat), the chunk's gates are first recomputed with one matmul."""
    w_x, w_h, b, xs, h0, c0, m, hs, cs, acts, need_dxs = res
    (dh_last, dc_last), dys = jax.tree.map(_dense, cotangents, _lstm_output_like(False, h0, hs))
    hidden, inputs = w_h.shape[0], w_x.shape[0]
    k = _chunk_length(xs.shape[0], xs.shape[1] * 4 * hidden)
    w = jnp.concatenate([w_x, w_h], axis=0)

    def chunk(carry, inputs_k):
        dh, dc, d_w, d_b = carry
        x_k, hp_k, c_k, cp_k, a_k, dy_k, m_k = inputs_k
        xh = jnp.concatenate([x_k, hp_k], axis=2)
        if a_k is None:
            a_k = _lstm_activations(xh @ w + b[None, None], hidden)
        (dh, dc), dpre = jax.lax.platform_dependent(
            w_h, dh, dc, dy_k, a_k, c_k, cp_k, m_k,
            cpu=native.lstm_backward, default=functools.partial(_lstm_gates_backward, unroll),
        )  # fmt: skip
        d_w = d_w + jnp.einsum("tbc,tbg->cg", xh, dpre)
        d_b = d_b + dpre.sum((0, 1))
        return (dh, dc, d_w, d_b), dpre @ w_x.T if need_dxs is not None else None

    zeros = (jnp.zeros_like(w), jnp.zeros_like(b))
    scanned = tuple(_chunked(a, k) for a in (xs, _previous(h0, hs), cs, _previous(c0, cs), acts, dys, m))
    (dh0, dc0, d_w, d_b), d_xs = jax.lax.scan(chunk, (dh_last, dc_last, *zeros), scanned, reverse=True)
    d_xs = None if d_xs is None else d_xs.reshape(xs.shape)
    return d_w[:inputs], d_w[inputs:], d_b, d_xs, dh0, dc0, None if m is None else jnp.zeros_like(m)


_lstm_native.defvjp(_lstm_native_fwd, _lstm_native_bwd, symbolic_zeros=True)


# GRU, reset="after": r, z = sigmoid(u_rz + (h W_h)_rz); n = tanh(u_n + r * ((h W_h)_n + b_hn)).


def _gru_forward(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m, save):
    """The forward loop, with one kernel per gate and the input projection inside the loop.

    XLA:CPU emits slow code for slices of a value computed in the same fusion, so
    nothing is sliced inside the loop: r and z each come from ``[x_t, h] W``, the
    candidate from ``x_t W_xn`` and ``h W_hn``. Measured against one fused matmul
    and slices with ``x W_x`` precomputed for all steps: 1.6x faster per step at
    B 16, T 1000, H 128 and at B 64, T 200, H 256, equal at B 32, T 100, H 128.
    """
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
        hn = h @ w_hn + b_hn[None]
        n = jnp.tanh(x @ w_xn + b_n + r * hn)
        keep = z if keep_z else 1 - z
        h_new = n + keep * (h - n)
        y = None
        if mt is not None:
            h_new, y = _masked(mt, h_new, h), mt * h_new
        return h_new, (h_new, y) + ((r, z, n, hn) if save else (None,) * 4)

    h, (hs, ys, *gates) = jax.lax.scan(body, h0, (xs, m), unroll=unroll)
    return h, hs if m is None else ys, (hs, *gates)


def _gru_coefficients(keep_z, hprev, r, z, n, hn):
    """The backward loop's per-step factors, for a chunk of steps at once (vectorised, outside the loop).

    With dh the gradient reaching h_t: the pre-activation gradients of the gates
    r, z and of the recurrent candidate h W_hn + b_hn are dh * (a_r, a_z, a_hn),
    that of the input-side candidate is dh * a_n, and dh_{t-1} gets dh * keep.
    """
    keep = z if keep_z else 1 - z
    a_n = (1 - keep) * (1 - n * n)
    a_z = (hprev - n) * z * (1 - z)
    return a_n * hn * r * (1 - r), a_z if keep_z else -a_z, a_n * r, a_n, keep


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _gru(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m):
    h, ys, _ = _gru_forward(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m, save=False)
    return h, ys


def _gru_fwd(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m):
    need_dxs = _flag(xs.perturbed)  # see _lstm_fwd
    w_x, w_h, b, b_hn, xs, h0, m = _values(w_x, w_h, b, b_hn, xs, h0, m)
    h, ys, (hs, *gates) = _gru_forward(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m, save=True)
    return (h, ys), (w_x, w_h, b, b_hn, xs, h0, m, hs, gates, need_dxs)


def _gru_bwd(keep_z, unroll, res, cotangents):
    """As the LSTM's, chunk by chunk: the backward factors from the stored gates, the steps backwards, and the
    chunk's share of the weight gradients. Unlike the LSTM's, the gates are stored, not recomputed: recomputing
    them measured 10% slower at B 32, T 100, H 128 (and equal at T = 1000)."""
    w_x, w_h, b, b_hn, xs, h0, m, hs, gates, need_dxs = res
    dh_last, dys = jax.tree.map(_dense, cotangents, (h0, hs))
    hidden = h0.shape[-1]
    num_steps = xs.shape[0]
    k = _chunk_length(num_steps, xs.shape[1] * 4 * hidden)  # the LSTM's rule; measured best here too
    w_rt, w_zt, w_nt = (w_h[:, j * hidden : (j + 1) * hidden].T for j in range(3))

    def body(dh, inputs):
        dy, ar, az, ahn, keep_t, mt = inputs
        dh_new = dh + dy if mt is None else mt * (dh + dy)
        dh_prev = dh_new * keep_t + (dh_new * ar) @ w_rt + (dh_new * az) @ w_zt + (dh_new * ahn) @ w_nt
        if mt is not None:
            dh_prev = dh_prev + (1 - mt) * dh
        return dh_prev, dh_new

    def chunk(carry, inputs):
        dh, d_wx, d_wh, d_b, d_bhn = carry
        x_k, hp_k, dy_k, m_k, (r, z, n, hn) = inputs
        a_r, a_z, a_hn, a_n, keep = _gru_coefficients(keep_z, hp_k, r, z, n, hn)
        dh, dhs = jax.lax.scan(body, dh, (dy_k, a_r, a_z, a_hn, keep, m_k), reverse=True, unroll=unroll)
        dpre = jnp.concatenate([dhs * a_r, dhs * a_z, dhs * a_hn, dhs * a_n], axis=-1)
        grads, d_xs = _gru_chunk_grads((d_wx, d_wh, d_b, d_bhn), x_k, hp_k, dpre, w_x, need_dxs)
        return (dh, *grads), d_xs

    zeros = tuple(jnp.zeros_like(a) for a in (w_x, w_h, b, b_hn))
    scanned = (*(_chunked(a, k) for a in (xs, _previous(h0, hs), dys, m)), tuple(_chunked(g, k) for g in gates))
    (dh0, d_wx, d_wh, d_b, d_bhn), d_xs = jax.lax.scan(chunk, (dh_last, *zeros), scanned, reverse=True)
    d_xs = None if d_xs is None else d_xs.reshape(xs.shape)
    return d_wx, d_wh, d_b, d_bhn, d_xs, dh0, None if m is None else jnp.zeros_like(m)


def _gru_chunk_grads(grads, x_k, hp_k, dpre, w_x, need_dxs):
    """Adds a chunk's share to the weight gradients ``(d_wx, d_wh, d_b, d_bhn)`` from its ``dpre`` ``(k, B, 4H)``
    (``[d_r, d_z, d_hn, d_n]``: pre-activations of r and z, of ``hn``, of the candidate's input side); also returns
    the chunk's input gradient when ``need_dxs`` (else None)."""
    d_wx, d_wh, d_b, d_bhn = grads
    hidden = hp_k.shape[-1]
    d_rec = dpre[..., : 3 * hidden]
    d_in = jnp.concatenate([dpre[..., : 2 * hidden], dpre[..., 3 * hidden :]], axis=-1)
    d_wx = d_wx + jnp.einsum("tbd,tbg->dg", x_k, d_in)
    d_wh = d_wh + jnp.einsum("tbh,tbg->hg", hp_k, d_rec)
    d_b, d_bhn = d_b + d_in.sum((0, 1)), d_bhn + d_rec[..., 2 * hidden :].sum((0, 1))
    return (d_wx, d_wh, d_b, d_bhn), d_in @ w_x.T if need_dxs is not None else None


_gru.defvjp(_gru_fwd, _gru_bwd, symbolic_zeros=True)


# The GRU with the native CPU kernel, as the LSTM's above: the forward loop keeps [r, z, n, hn] per step (unless
# remat), the backward loop forms the pre-activation gradients [d_r, d_z, d_hn, d_n]; the XLA contracts below run
# off the CPU and are what the kernel is tested against.


def _gru_gates_forward(keep, keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m):
    _, _, (hs, *gates) = _gru_forward(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m, save=keep)
    return hs, jnp.concatenate(gates, axis=-1) if keep else None


def _gru_recompute(w_x, w_h, b, b_hn, x, hp):
    """``[r, z, n, hn]`` of a chunk from its inputs and previous carries (two matmuls)."""
    hidden = hp.shape[-1]
    u = x @ w_x + b[None, None]
    v = hp @ w_h + jnp.concatenate([jnp.zeros((2 * hidden,), b.dtype), b_hn])[None, None]
    rz = jax.nn.sigmoid(u[..., : 2 * hidden] + v[..., : 2 * hidden])
    hn = v[..., 2 * hidden :]
    n = jnp.tanh(u[..., 2 * hidden :] + rz[..., :hidden] * hn)
    return jnp.concatenate([rz, n, hn], axis=-1)


def _gru_gates_backward(keep_z, unroll, w_h, dh_last, dys, gates, hps, m):
    hidden = w_h.shape[0]
    w_ht = w_h.T

    def body(dh, inputs):
        dy, g, hp, mt = inputs
        r, z, n, hn = (_block(g, k, hidden, False) for k in range(4))
        dh_new = dh + dy if mt is None else mt * (dh + dy)
        a_r, a_z, a_hn, a_n, keep = _gru_coefficients(keep_z, hp, r, z, n, hn)
        dpre = jnp.concatenate([dh_new * a_r, dh_new * a_z, dh_new * a_hn, dh_new * a_n], axis=-1)
        dh_prev = dh_new * keep + dpre[:, : 3 * hidden] @ w_ht
        if mt is not None:
            dh_prev = dh_prev + (1 - mt) * dh
        return dh_prev, dpre

    return jax.lax.scan(body, dh_last, (dys, gates, hps, m), reverse=True, unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _gru_native(keep_z, unroll, keep, w_x, w_h, b, b_hn, xs, h0, m):
    hs, _ = _gru_native_forward(False, keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m)
    return hs[-1], hs if m is None else m * hs


def _gru_native_forward(keep, keep_z, unroll, *args):
    return jax.lax.platform_dependent(
        *args,
        cpu=functools.partial(native.gru_forward, keep, keep_z),
        default=functools.partial(_gru_gates_forward, keep, keep_z, unroll),
    )


def _gru_native_fwd(keep_z, unroll, keep, w_x, w_h, b, b_hn, xs, h0, m):
    need_dxs = _flag(xs.perturbed)
    w_x, w_h, b, b_hn, xs, h0, m = _values(w_x, w_h, b, b_hn, xs, h0, m)
    hs, gates = _gru_native_forward(keep, keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m)
    out = hs[-1], hs if m is None else m * hs
    return out, (w_x, w_h, b, b_hn, xs, h0, m, hs, gates, need_dxs)


def _gru_native_bwd(keep_z, unroll, keep, res, cotangents):
    """As :func:`_lstm_native_bwd`: per chunk, the loop kernel's ``dpre``, then the weight gradients as matmuls."""
    w_x, w_h, b, b_hn, xs, h0, m, hs, gates, need_dxs = res
    dh_last, dys = jax.tree.map(_dense, cotangents, (h0, hs))
    hidden = h0.shape[-1]
    k = _chunk_length(xs.shape[0], xs.shape[1] * 4 * hidden)

    def chunk(carry, inputs):
        dh, d_wx, d_wh, d_b, d_bhn = carry
        x_k, hp_k, g_k, dy_k, m_k = inputs
        if g_k is None:
            g_k = _gru_recompute(w_x, w_h, b, b_hn, x_k, hp_k)
        dh, dpre = jax.lax.platform_dependent(
            w_h, dh, dy_k, g_k, hp_k, m_k,
            cpu=functools.partial(native.gru_backward, keep_z),
            default=functools.partial(_gru_gates_backward, keep_z, unroll),
        )  # fmt: skip
        grads, d_xs = _gru_chunk_grads((d_wx, d_wh, d_b, d_bhn), x_k, hp_k, dpre, w_x, need_dxs)
        return (dh, *grads), d_xs

    zeros = tuple(jnp.zeros_like(a) for a in (w_x, w_h, b, b_hn))
    scanned = tuple(_chunked(a, k) for a in (xs, _previous(h0, hs), gates, dys, m))
    (dh0, d_wx, d_wh, d_b, d_bhn), d_xs = jax.lax.scan(chunk, (dh_last, *zeros), scanned, reverse=True)
    d_xs = None if d_xs is None else d_xs.reshape(xs.shape)
    return d_wx, d_wh, d_b, d_bhn, d_xs, dh0, None if m is None else jnp.zeros_like(m)


_gru_native.defvjp(_gru_native_fwd, _gru_native_bwd, symbolic_zeros=True)


# RNN: h = phi(u + h W_h); phi'(pre) is written through phi's output.

_DERIVATIVES = {
    "tanh": lambda y: 1 - y * y,
    "sigmoid": lambda y: y * (1 - y),
    "relu": lambda y: (y > 0).astype(y.dtype),
    "identity": jnp.ones_like,
}


def _rnn_forward(activation, unroll, w_x, w_h, b, xs, h0, m):
    phi = ACTIVATIONS[activation]
    w, bias = jnp.concatenate([w_x, w_h], axis=0), b[None, :]  # the input projection inside the loop, as the LSTM's

    def body(h, inputs):
        x, mt = inputs
        h_new = phi(jnp.concatenate([x, h], axis=1) @ w + bias)
        if mt is None:
            return h_new, (h_new, None, None)
        h_out = _masked(mt, h_new, h)
        return h_out, (h_out, h_new, mt * h_new)

    h, (hs, news, ys) = jax.lax.scan(body, h0, (xs, m), unroll=unroll)
    return h, hs if m is None else ys, (news, hs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _rnn(activation, unroll, w_x, w_h, b, xs, h0, m):
    h, ys, _ = _rnn_forward(activation, unroll, w_x, w_h, b, xs, h0, m)
    return h, ys


def _rnn_fwd(activation, unroll, w_x, w_h, b, xs, h0, m):
    h, ys, (news, hs) = _rnn_forward(activation, unroll, w_x, w_h, b, xs, h0, m)
    return (h, ys), (w_x, w_h, xs, h0, m, news if m is not None else None, hs)


def _rnn_bwd(activation, unroll, res, cotangents):
    w_x, w_h, xs, h0, m, news, hs = res
    dh_last, dys = cotangents
    phi_prime = _DERIVATIVES[activation]
    w_ht = w_h.T

    def body(dh, inputs):
        dy, new, mt = inputs
        if mt is None:
            dpre = (dh + dy) * phi_prime(new)
            return dpre @ w_ht, dpre
        dpre = mt * (dh + dy) * phi_prime(new)
        return dpre @ w_ht + (1 - mt) * dh, dpre

    dh0, dpre = jax.lax.scan(body, dh_last, (dys, hs if m is None else news, m), reverse=True, unroll=unroll)
    # The gradients that need no recurrence, each one large matmul over all T*B rows.
    d_wx = jnp.einsum("tbd,tbg->dg", xs, dpre)
    d_wh = jnp.einsum("tbh,tbg->hg", _previous(h0, hs), dpre)
    d_xs = jnp.einsum("tbg,dg->tbd", dpre, w_x)
    return d_wx, d_wh, dpre.sum((0, 1)), d_xs, dh0, None if m is None else jnp.zeros_like(m)


_rnn.defvjp(_rnn_fwd, _rnn_bwd)

__all__ = ["supports", "sequence", "check_params"]
