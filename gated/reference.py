"""The reference path: ``cell.project`` for every step at once, then ``cell.step`` under ``jax.lax.scan``, vmapped
over the batch. The readable definition of every cell's sequence, which every other backend is proven equal to; JAX
differentiates it.

A backend of :func:`gated.run` (see :mod:`gated.scan`): ``supports(cell, call)`` and ``sequence(cell, params, xs,
carry, mask, resets, call)`` on time-major inputs read forwards (``run`` flips them to read backwards).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

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

    return jax.lax.scan(jax.checkpoint(body) if call.remat else body, carry, (us, mask, resets), unroll=call.unroll)
