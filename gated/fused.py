"""The fused backend (``impl="fused"``) and the machinery of its kernels: one forward loop and one linear tangent
rule per cell, over the whole sequence.

A cell of the nonlinear form (:class:`gated.forms.Nonlinear`) that has a kernel implements ``fused_sequence`` in its
own module with the helpers here, and says in ``fused_limits`` which of its options it does not cover. Each kernel is
a :func:`jax.custom_jvp` over the whole sequence. Its primal is the forward loop (every step's carry, ``(T, B, H)``);
its tangent rule is a *linear recurrence* in the carry tangent:

.. math::
    \\dot h_t = K_t \\odot \\dot h_{t-1} + \\textstyle\\sum_k A_{t,k} \\odot (\\dot h_{t-1} W_h)_k + e_t

where the factors ``K_t`` and ``A_t`` come from the saved primal states, and ``e_t``, everything the parameter and
input tangents contribute (``x_t dW_x + dx_t W_x + h_{t-1} dW_h + db``, :func:`input_tangent`), is formed by large
matmuls over all ``T * B`` rows outside the loop. Only the carry tangent runs inside it (:func:`carry_tangent`).

Because the rule is linear in the tangents, JAX transposes it for reverse mode: the transposed loop carries only the
carry cotangent, and the weight gradients (``sum_t [x_t, h_{t-1}]^T dpre_t``) come out as one matmul after it.
Forward mode (``jvp``, ``jacfwd``), reverse mode (``grad``, ``jacrev``) and higher orders (``hessian``, ``grad`` of
``grad``) all come from this one rule, and ``vmap`` batches it like any JAX function: nothing here is opaque to XLA.

The forward loops put the input projection inside the loop, one matmul of depth D + H with the recurrent one. The
tangent rule walks chunks of steps (:func:`chunk_length`, :func:`over_chunks`) under ``jax.checkpoint``: reverse mode
keeps only the carries, and the backward pass recomputes each chunk's gates with one matmul, runs its steps and adds
its share of the weight gradients on arrays that stay in cache. ``remat`` therefore has nothing left to save. The
choices were measured with ``benchmarks/training_step.py`` (results in ``benchmarks/results``).

Every kernel takes time-major, batch-flat arrays: ``xs`` ``(T, B, D)``, carries ``(B, H)``, an optional ``mask``
``(T, B, 1)`` (1 where a step is valid; a padded step leaves the carry unchanged and outputs zero, as in
:func:`gated.run`), and returns ``(final carry, ys)``. ``tests/test_fused.py`` checks values, both modes of
differentiation, second derivatives and ``vmap`` against the reference path in float64 to 1e-10.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from gated import backends, forms
from gated.options import Call

Array = jax.Array


def supports(cell: forms.Nonlinear, call: Call | None = None) -> str | None:
    """None if ``cell`` has a fused kernel that serves ``call`` (by default any), else the reason it has none."""
    reason = None if call is None else call.reference_only()
    return reason if reason is not None else cell.fused_limits()


def sequence(cell: forms.Nonlinear, params: Any, xs: Array, carry: Any, mask: Array | None, resets: None, call: Call):
    """Runs the fused kernel of ``cell`` (:meth:`gated.forms.Nonlinear.fused_sequence`): ``xs`` ``(T, B, D)``, carry
    leaves ``(B, H)``, ``mask`` ``(T, B)`` or None (no ``resets``: :func:`supports`).

    Returns ``(carry, ys)`` with ``ys`` ``(T, B, H)``. Raises ValueError for a cell without a fused kernel (see
    :func:`supports`), and for parameters of other shapes than ``cell.init`` gives (the reference path checks them
    per step).
    """
    reason = supports(cell, call)
    if reason is not None:
        raise ValueError(f"cell: {reason}; got {cell!r}")
    check_params(cell, params)
    xs = xs.astype(call.dtype)
    m = None if mask is None else mask.astype(xs.dtype)[:, :, None]
    return cell.fused_sequence(params, xs, carry, m, call.unroll)


def check_params(cell: forms.Nonlinear, params: Any) -> None:
    """Checks every parameter a kernel reads has the shape ``cell.init`` gives it (the reference path checks them
    per step), naming the first that does not."""
    expected = _shapes(cell, params.input_kernel.shape[0])
    for name, shape in expected.items():
        leaf = getattr(params, name, None)
        got = None if leaf is None else jnp.shape(leaf)
        if got != shape:
            raise ValueError(
                f"params.{name}: expected shape {shape} for {cell.name} with H = {cell.hidden_size}, got {got}"
            )


@functools.lru_cache(maxsize=256)
def _shapes(cell: forms.Nonlinear, input_size: int) -> dict[str, tuple[int, ...]]:
    """The shape of each field of ``cell.init(key, input_size)``, computed once per cell and size."""
    params = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))
    return {name: leaf.shape for name, leaf in zip(params._fields, params, strict=True) if leaf is not None}


backends.register("fused", serves=(forms.Nonlinear,), supports=supports, sequence=sequence)


def outputs(hs: Array, m: Array | None) -> Array:
    """The outputs from the stacked carries: zero at padded steps, where the carry is held."""
    return hs if m is None else m * hs


def previous(first: Array, stacked: Array) -> Array:
    """``[first, stacked[0], ..., stacked[T-2]]``: the state before each step."""
    return jnp.concatenate([first[None], stacked[:-1]], axis=0)


def masked(m: Array | None, new: Array, old: Array) -> Array:
    """``new`` at valid steps (``m`` 1), ``old`` at padded ones (``m`` 0); ``new`` where ``m`` is None."""
    return new if m is None else jnp.where(m > 0, new, old)


def nonzero(tangents) -> list:
    """The tangents with symbolic zeros as None: the tangent rules skip their terms (a model's first layer has no
    input tangent), and ``jax.checkpoint`` passes None through as an empty pytree."""
    return [None if isinstance(t, SymbolicZero) else t for t in tangents]


def matmul(a: Array, w: Array) -> Array:
    """``(T, B, K) @ (K, N)`` as one 2-D matmul over all T*B rows. Its transpose (the weight gradient in reverse
    mode) is then one 2-D matmul too, which XLA:CPU runs faster than the 3-D contraction's transpose."""
    return (a.reshape(-1, a.shape[-1]) @ w).reshape(*a.shape[:-1], w.shape[-1])


def input_tangent(w_x, xs, hprev, dw_x, dw_h, db, dxs):
    """``e = dx W_x + x dW_x + h_{t-1} dW_h + db``, ``(T, B, G*H)``: the tangent the loop receives at each step
    from everything but the carry, as matmuls over all T*B rows. Zero tangents (None) are skipped; None if every
    term is zero."""
    terms = []
    if dxs is not None:
        terms.append(matmul(dxs, w_x))
    if dw_x is not None:
        terms.append(matmul(xs, dw_x))
    if dw_h is not None:
        terms.append(matmul(hprev, dw_h))
    if db is not None:
        terms.append(jnp.broadcast_to(db, (*xs.shape[:2], db.shape[0])))
    return functools.reduce(jnp.add, terms) if terms else None


def block_sum(a: Array, hidden: int) -> Array:
    """The sum of the gate blocks of ``a`` ``(..., G*H)``: ``(..., H)``. A reshape and a sum rather than slices:
    its transpose is a broadcast, where that of slices is pads, which XLA:CPU runs slower in the reverse loop."""
    gates = a.shape[-1] // hidden
    return a if gates == 1 else a.reshape(*a.shape[:-1], gates, hidden).sum(-2)


def dense(t: Array | None, like: Array) -> Array:
    return jnp.zeros_like(like) if t is None else t


def chunk_length(num_steps: int, rows: int) -> int:
    """The divisor of T nearest the chunk length whose gate block, ``(k * rows)`` numbers, holds about 2**19.

    Chunks of that size keep a chunk's recomputed gates, tangents and cotangents in cache: faster on XLA:CPU than
    one pass over all T steps (``benchmarks/training_step.py``).
    """
    target = max(1, round(2**19 / rows))
    divisors = [k for k in range(1, num_steps + 1) if num_steps % k == 0]
    return min(divisors, key=lambda k: abs(k - target))


def over_chunks(chunk_fn, init, per_step, rows: int):
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


def carry_tangent(w_h, keep, a, e, dh0, unroll):
    """The linear recurrence ``dh_t = keep_t * dh_{t-1} + sum_k a_{t,k} * (dh_{t-1} W_h)_k + e_t`` over a chunk.

    ``w_h`` ``(H, G*H)``; ``keep`` ``(k, B, H)`` or None (zero); ``a`` ``(k, B, G*H)``; ``e`` ``(k, B, H)`` or None;
    ``dh0`` ``(B, H)``. Returns ``(dh_last, dh)`` with ``dh`` ``(k, B, H)``.
    """
    hidden = w_h.shape[0]
    e = jnp.zeros((a.shape[0], *dh0.shape), a.dtype) if e is None else e

    def body(dh, inputs):
        e_t, a_t, k_t = inputs
        new = e_t + block_sum(a_t * (dh @ w_h), hidden)
        new = new if k_t is None else new + k_t * dh
        return new, new

    return jax.lax.scan(body, dh0, (e, a, keep), unroll=unroll)
