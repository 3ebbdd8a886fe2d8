"""Dropout through time for the classic cells: variational recurrent dropout (Gal & Ghahramani 2016) and zoneout
(Krueger et al. 2017), as a cell around a cell, so that :func:`gated.run` runs it with lengths, resets, reverse,
remat and every transform.

The random masks are inputs: :meth:`RecurrentDropout.append_masks` draws them from a key and appends them to each
step's features, and the wrapper's ``project`` passes them through to its ``step``. A
:class:`gated.layers.Recurrent` layer of this cell does that itself from the ``key`` of its call.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from gated import forms
from gated.options import integer, number, option

from .base import CELLS, Array, Cell


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecurrentDropout(forms.Nonlinear, Cell):
    r"""A classic cell (RNN, LSTM, GRU) with dropout through time.

    - ``dropout`` (variational, Gal & Ghahramani 2016): one mask :math:`m \in \{0, 1/(1-p)\}^H` per sequence,
      the same at every step, on the hidden state the step reads: the cell computes from :math:`h_{t-1} \odot m`.
      For the RNN and LSTM, where :math:`h_{t-1}` enters only through the recurrent matrix, this is the paper's
      form; the GRU also reads the masked :math:`h_{t-1}` in its interpolation :math:`(1 - z) h_{t-1}` (the
      dropped memory of Moon et al. 2015's rnnDrop).
    - ``zoneout`` (Krueger et al. 2017): each unit of each carry leaf (the LSTM's h and c apart) keeps its previous
      value with probability :math:`p_z` at each step, :math:`s_t = d_t \odot s_{t-1} + (1 - d_t) \odot
      \tilde s_t`; at evaluation :math:`d_t = p_z` (the expectation), as the paper does.

    Without a key (evaluation) the variational mask is all ones. At rate 0 both are the plain cell.

    Attributes:
      cell: the classic cell.
      dropout: :math:`p`, the variational dropout rate, in [0, 1).
      zoneout: :math:`p_z`, the zoneout probability, in [0, 1).
    """

    hidden_size: int = dataclasses.field(init=False, default=0)
    cell: Cell
    dropout: float = option(0.0, number, low=0.0, high=1.0, high_open=True)
    zoneout: float = option(0.0, number, low=0.0, high=1.0, high_open=True)

    name: ClassVar[str] = "recurrent_dropout"
    stochastic: ClassVar[bool] = True
    registered: ClassVar[bool] = False  # a wrapper of a cell, not made by name

    def __post_init__(self):
        if not isinstance(self.cell, Cell):
            raise TypeError(f"cell: expected a gated.cells cell, got {type(self.cell).__name__}")
        if not getattr(self.cell, "hidden_output", False):  # a RecurrentDropout has none: not wrapped twice
            classic = tuple(name for name, cls in CELLS.items() if getattr(cls, "hidden_output", False))
            raise ValueError(
                f"cell: expected a classic cell {classic} (its output is its hidden state), got a {self.cell.name} cell"
            )
        object.__setattr__(self, "hidden_size", self.cell.hidden_size)
        super().__post_init__()

    @property
    def params_type(self) -> type:
        return self.cell.params_type

    @property
    def gates(self) -> tuple[str, ...]:
        return self.cell.gates

    @property
    def carry_shape(self) -> tuple[int, ...]:
        return self.cell.carry_shape

    @property
    def mask_size(self) -> int:
        """The features the masks add to each step: H for the variational mask, then every carry leaf's units."""
        return self.hidden_size + sum(math.prod(s) for s in self.cell.carry_shapes())

    @property
    def projection_size(self) -> int:
        return self.cell.projection_size + self.mask_size

    def init(self, key: Array, input_size: int, dtype=jnp.float32):
        return self.cell.init(key, input_size, dtype)

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        return self.cell.initial_carry(batch_shape, dtype)

    def other_states(self, carry) -> dict[str, Array]:
        return self.cell.other_states(carry)

    def input_size(self, params) -> int:
        """D + mask_size: the features, then the masks."""
        return self.cell.input_size(params) + self.mask_size

    def project(self, params, x: Array) -> Array:
        """The cell's projection of the features, the masks after it (``x`` is ``(D + mask_size,)``)."""
        x = jnp.asarray(x)
        d = self.cell.input_size(params)
        if x.shape != (d + self.mask_size,):
            raise ValueError(
                f"x: expected shape {(d + self.mask_size,)} (D = {d} features and {self.mask_size} "
                f"mask entries: RecurrentDropout.append_masks), got {x.shape}"
            )
        return jnp.concatenate([self.cell.project(params, x[:d]), x[d:].astype(jnp.result_type(params[0]))])

    def step(self, params, carry, u: Array):
        u = self._check_step(carry, u)
        p, h = self.cell.projection_size, self.hidden_size
        leaves, tree = jax.tree.flatten(carry)
        read = jax.tree.unflatten(tree, [leaves[0] * u[p : p + h], *leaves[1:]])  # h_{t-1} dropped, c kept
        new, _ = self.cell.step(params, read, u[:p])
        keep, offset = [], p + h
        for leaf in leaves:
            keep.append(u[offset : offset + leaf.size].reshape(leaf.shape))
            offset += leaf.size
        zoned = [k * old + (1.0 - k) * n for k, old, n in zip(keep, leaves, jax.tree.leaves(new), strict=True)]
        return jax.tree.unflatten(tree, zoned), zoned[0]

    def masks(self, key: Array | None, batch_shape: tuple[int, ...], num_steps: int, dtype=jnp.float32) -> Array:
        """``(T, *batch, mask_size)``: the variational mask (one per sequence, repeated over time) and the zoneout
        masks (one per step); without a key, ones and :math:`p_z` (evaluation)."""
        batch_shape, h = tuple(batch_shape), self.hidden_size
        num_steps = integer("num_steps", num_steps, minimum=0)
        zone_size = self.mask_size - h
        if key is None:
            drop = jnp.ones((num_steps, *batch_shape, h), dtype)
            zone = jnp.full((num_steps, *batch_shape, zone_size), self.zoneout, dtype)
            return jnp.concatenate([drop, zone], axis=-1)
        k_drop, k_zone = jax.random.split(key)
        kept = jax.random.bernoulli(k_drop, 1.0 - self.dropout, (*batch_shape, h))
        drop = jnp.broadcast_to(kept.astype(dtype) / (1.0 - self.dropout), (num_steps, *batch_shape, h))
        zone = jax.random.bernoulli(k_zone, self.zoneout, (num_steps, *batch_shape, zone_size)).astype(dtype)
        return jnp.concatenate([drop, zone], axis=-1)

    def append_masks(self, xs: Array, key: Array | None, time_axis: int = 0) -> Any:
        """``xs`` ``(T, *batch, D)`` (time on ``time_axis``) with :meth:`masks` appended to its features."""
        xs = jnp.asarray(xs)
        axis = time_axis % xs.ndim
        moved = jnp.moveaxis(xs, axis, 0)
        masks = self.masks(key, moved.shape[1:-1], moved.shape[0], xs.dtype)
        return jnp.moveaxis(jnp.concatenate([moved, masks], axis=-1), 0, axis)
