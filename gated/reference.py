"""The reference path: ``cell.project`` for every step at once, then ``cell.step`` under ``jax.lax.scan``, vmapped
over the batch. The readable definition of every cell's sequence, which every other backend is proven equal to; JAX
differentiates it.

Two backends of :func:`gated.run` (:mod:`gated.backends`), serving every form: "reference" and "recomputed" (the same
path storing its carry every ``chunk`` steps only, each chunk recomputed in the backward pass).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gated import backends, forms
from gated.cells import Cell, trailing_axes

Array = jax.Array


def supports(cell: Cell, call: Any) -> str | None:
    """Every cell, option, dtype and platform: None."""
    del cell, call
    return None


def sequence(cell: Cell, params: Any, xs: Array, carry: Any, mask: Array | None, resets: Array | None, call: Any):
    """``xs`` ``(T, B, D)``, carry leaves ``(B, ...)``, ``mask`` and ``resets`` ``(T, B)`` or None; returns the final
    carry and the outputs ``(T, B, H)`` (every step's carry with ``call.return_carries``), zero at padded steps."""
    us = jax.vmap(jax.vmap(lambda x: cell.project(params, x)))(xs)
    initial = carry

    def body(carry, inputs):
        u, valid, start = inputs
        if start is not None:  # a new segment: the initial carry again
            carry = jax.tree.map(lambda c, c0: jnp.where(trailing_axes(start, c.ndim), c0, c), carry, initial)
        if start is not None and cell.restarts:  # or the cell's own rule for a segment start
            new, y = jax.vmap(lambda c, u, s: cell.step(params, c, u, start=s))(carry, u, start)
        else:
            new, y = jax.vmap(lambda c, u: cell.step(params, c, u))(carry, u)
        out = new if call.return_carries else y
        if valid is not None:  # a padded step holds the carry and outputs zeros
            new = jax.tree.map(lambda n, o: jnp.where(trailing_axes(valid, n.ndim), n, o), new, carry)
            out = jax.tree.map(lambda o: jnp.where(trailing_axes(valid, o.ndim), o, jnp.zeros_like(o)), out)
        return new, out

    if not call.remat or us.shape[0] <= call.chunk:
        return jax.lax.scan(jax.checkpoint(body) if call.remat else body, carry, (us, mask, resets), unroll=call.unroll)
    return _recomputed(body, carry, us, mask, resets, call)


def _recomputed(body, carry, us, mask, resets, call):
    """The scan of ``body`` in chunks of ``call.chunk`` steps, each recomputed in the backward pass: only the carry
    at each chunk's start is stored (padding to a whole chunk holds the carry, as ``mask`` False does)."""

    def chunk(carry, inputs):
        return jax.lax.scan(body, carry, inputs, unroll=call.unroll)

    return scan_in_chunks(chunk, carry, call.chunk, us, mask, resets)


def scan_in_chunks(
    body, carry: Any, size: int, xs: Array, mask: Array | None, resets: Array | None, recompute: bool = True
) -> tuple[Any, Any]:
    """A ``lax.scan`` of ``body(carry, (xs, mask, resets))`` over chunks of ``size`` steps (:func:`in_chunks`), each
    recomputed in the backward pass when ``recompute`` (only the carry at each chunk's start stored); the outputs
    back to ``(T, ...)``."""
    carry, outs = jax.lax.scan(jax.checkpoint(body) if recompute else body, carry, in_chunks(size, xs, mask, resets))
    return carry, jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:])[: xs.shape[0]], outs)


def in_chunks(size: int, xs: Array, mask: Array | None, resets: Array | None) -> tuple:
    """``(xs, mask, resets)`` (leading axis T) reshaped to ``(T / size, size, ...)``, padded to whole chunks by
    padding steps (``mask`` False, which hold the carry and output zeros; a ``mask`` of all True made if None)."""
    pad = -xs.shape[0] % size
    if pad and mask is None:
        mask = jnp.ones(xs.shape[:2], bool)
    fill = lambda a, value: None if a is None else jnp.concatenate([a, jnp.full((pad, *a.shape[1:]), value, a.dtype)])
    return jax.tree.map(
        lambda a: a.reshape(-1, size, *a.shape[1:]), (fill(xs, 0), fill(mask, False), fill(resets, False))
    )


def recomputed(cell, params, xs, carry, mask, resets, call):
    """``impl="recomputed"``: :func:`sequence` with ``remat``, its carries stored every ``call.chunk`` steps only."""
    return sequence(cell, params, xs, carry, mask, resets, call._replace(remat=True))


backends.register("reference", serves=(forms.Form,), supports=supports, sequence=sequence)
backends.register("recomputed", serves=(forms.Form,), supports=supports, sequence=recomputed)
