"""Flax NNX modules over gated's cells and layers.

Thin owners of parameters, as :mod:`gated.flax`: the parameters come from the
cell's (or layer's) own ``init``, each array an ``nnx.Param`` in the same
pytree layout as the pure functions use, and the call is the pure function.

    model = gated.nnx.RNN(gated.cells.GRU(64), input_size=32, rngs=nnx.Rngs(0))
    ys = model(xs, lengths=lengths)                               # xs (B, T, 32) -> ys (B, T, 64), as nnx.RNN

Notation: T time, B batch (``*batch``: any number of batch axes), D input, H hidden.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gated import cells as cells_lib
from gated import layers as layers_lib
from gated import mixers as mixers_lib
from gated.flax import cast, over_batch, sequence_layer

Array = jax.Array


def _wrap(params: Any) -> Any:
    return nnx.data(jax.tree.map(nnx.Param, params))


def _values(params: Any) -> Any:
    return jax.tree.map(lambda v: v[...], params, is_leaf=lambda a: isinstance(a, nnx.Variable))


class Cell(nnx.RNNCellBase):
    """One time step of a gated cell, for inputs ``(*batch, D)``; ``self.params`` is the cell's NamedTuple of Params.
    An ``nnx.RNNCellBase``, so it also runs inside Flax's own ``nnx.RNN``."""

    def __init__(self, cell: cells_lib.Cell, input_size: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=None):
        self.cell = cells_lib.check_cell(cell)
        self.param_dtype = param_dtype
        self.dtype = dtype
        self.params = _wrap(cell.init(rngs.params(), input_size, param_dtype))

    def __call__(self, carry: Any, x: Array) -> tuple[Any, Array]:
        params, carry, x = cast((_values(self.params), carry, x), self.dtype)
        return over_batch(lambda c, xi: self.cell(params, c, xi), x.ndim - 1)(carry, x)

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None, carry_init: Any = None) -> Any:
        """Zero carry for inputs of shape ``input_shape`` ``(*batch, D)``: leaves ``(*batch, H)`` of the parameters'
        dtype. ``rngs`` is unused; a ``carry_init`` other than None (zeros) is refused."""
        if carry_init is not None:
            raise ValueError("carry_init: gated cells start from zeros (pass initial_carry to run from another)")
        return self.cell.initial_carry(tuple(input_shape[:-1]), self.dtype or self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


class RNN(nnx.Module):
    """A gated cell or layer over a sequence; the options are those of :class:`gated.flax.RNN` (batch-major
    ``(*batch, T, D)`` by default, as Flax's ``nnx.RNN``): ``**options`` are the layer options of a bare cell
    (:data:`gated.layers.LAYER_OPTIONS`: ``reverse``, ``learn_initial_carry``, ``unroll``, ``remat``, ``impl``,
    ``chunk``); a layer's own options are set on the layer."""

    def __init__(
        self,
        layer: Any,
        input_size: int,
        *,
        rngs: nnx.Rngs,
        time_axis: int = -2,
        return_carry: bool = False,
        param_dtype=jnp.float32,
        dtype=None,
        **options,
    ):
        unknown = sorted(set(options) - set(layers_lib.LAYER_OPTIONS))
        if unknown:
            known = ["time_axis", "return_carry", "param_dtype", "dtype", *layers_lib.LAYER_OPTIONS]
            raise TypeError(f"{unknown[0]}: not an option of gated.nnx.RNN; expected some of {known}")
        layer = sequence_layer(layer, **{**layers_lib.LAYER_OPTIONS, **options})
        self.layer = layer
        self.time_axis = time_axis
        self.return_carry = return_carry
        self.dtype = dtype
        self.params = _wrap(layer.init(rngs.params(), input_size, param_dtype))

    def __call__(
        self, xs: Array, *, initial_carry: Any = None, lengths: Array | None = None, resets: Array | None = None
    ):
        along = dict(lengths=lengths, time_axis=self.time_axis, resets=resets)
        params, xs, initial_carry = cast((_values(self.params), xs, initial_carry), self.dtype)
        carry, ys = self.layer(params, xs, carry=initial_carry, **along)
        return (carry, ys) if self.return_carry else ys


class Block(nnx.Module):
    """A :mod:`gated.blocks` block or :mod:`gated.mixers` mixer; ``self.params`` is its NamedTuple of Params, from its
    own ``init``, and the call is its own (a carry, ``resets`` and ``time_axis`` passed on)."""

    def __init__(self, block: Any, input_size: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=None):
        self.block = mixers_lib.check_block(block)
        self.dtype = dtype
        self.params = _wrap(block.init(rngs.params(), input_size, param_dtype))

    def __call__(self, x: Array, *args, **kwargs):
        params, x, args = cast((_values(self.params), x, args), self.dtype)
        return self.block(params, x, *args, **kwargs)
