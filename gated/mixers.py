"""The recurrent mixers of the papers, as compositions of gated's blocks (:mod:`gated.blocks`) and cells.

A mixer maps a sequence to a sequence of the same width and carries a state, as a layer does:

* ``params = mixer.init(key, input_size, dtype=jnp.float32)``;
* ``carry, ys = mixer(params, xs, carry=None, *, resets=None, time_axis=0)`` with ``xs`` ``(T, *batch, D)`` and
  ``ys`` of the same shape; ``carry`` holds every recurrent state and convolution buffer, so that a sequence run in
  pieces, or one token at a time, gives the outputs of the whole.

Notation: T time, D the model width, H the recurrence's width, W the convolution's width.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import blocks, cells
from gated import init as initializers
from gated.options import check_fields, choice, integer, option
from gated.scan import IMPLS, run

Array = jax.Array


class GriffinParams(NamedTuple):
    """Parameters of :class:`Griffin`: the two input branches' ``(D, H)`` kernels and ``(H,)`` biases, the
    convolution's, the cell's, and the output projection's ``(H, D)`` kernel and ``(D,)`` bias."""

    gate_kernel: Array
    gate_bias: Array
    input_kernel: Array
    input_bias: Array
    conv: blocks.ConvParams
    cell: Any
    output_kernel: Array
    output_bias: Array


class GriffinState(NamedTuple):
    """The carry of :class:`Griffin`: the convolution's last ``W - 1`` inputs ``(W - 1, *batch, H)`` and the cell's
    carry (leaves ``(*batch, ...)``)."""

    conv: Array
    cell: Any


@dataclasses.dataclass(frozen=True)
class Griffin:
    r"""Griffin and Hawk's recurrent block (De et al. 2024, "Griffin: mixing gated linear recurrences with local
    attention for efficient language models", Fig. 2): two branches from the input, a GeLU gate and a causal
    convolution followed by the recurrence, multiplied and projected back,

    .. math::
        g_t = \mathrm{GeLU}(x_t W_g + b_g), \qquad u = \mathrm{Conv1D}_W(x W_u + b_u), \qquad
        r = \mathrm{RG\text{-}LRU}(u), \qquad y_t = (r_t \odot g_t) W_o + b_o

    ``recurrentgemma``'s ``RecurrentBlock`` (GeLU in its tanh form, as ``jax.nn.gelu``'s default), whose parameters
    :func:`gated.interop.recurrentgemma.from_recurrent_block` converts. Any cell of width H that reads inputs of
    width H fits where the RG-LRU goes (the paper's ablations swap it for the LRU).

    Attributes:
      cell: the recurrence (its ``hidden_size`` is H); ``gated.cells.rglru(H)`` in the paper.
      conv_width: W (default 4).
      activation: the gate branch's (default "gelu_tanh").
      conv_activation: after the convolution (default "identity"; Mamba's block, :class:`Mamba`, has SiLU).
      impl: the backend of :func:`gated.run` for the cell ("auto" by default).
    """

    cell: cells.Cell
    conv_width: int = option(4, integer, minimum=1)
    activation: str = option("gelu_tanh", choice, choices=tuple(blocks.ACTIVATIONS))
    conv_activation: str = option("identity", choice, choices=tuple(blocks.ACTIVATIONS))
    impl: str = option("auto", choice, choices=IMPLS)

    sequential: ClassVar[bool] = True

    def __post_init__(self):
        cells.check_cell(self.cell)
        check_fields(self)

    @property
    def conv(self) -> blocks.CausalConv:
        return blocks.CausalConv(width=self.conv_width)

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> GriffinParams:
        d, h = integer("input_size", input_size), self.cell.hidden_size
        k_g, k_u, k_c, k_r, k_o = jax.random.split(key, 5)
        zeros = lambda n: jnp.zeros((n,), dtype)
        return GriffinParams(
            initializers.input_kernel(k_g, d, h, dtype), zeros(h), initializers.input_kernel(k_u, d, h, dtype),
            zeros(h), self.conv.init(k_c, h, dtype), self.cell.init(k_r, h, dtype),
            initializers.input_kernel(k_o, h, d, dtype), zeros(d),
        )  # fmt: skip

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> GriffinState:
        """Nothing seen: the zero convolution buffer and the cell's zero carry."""
        h = self.cell.hidden_size
        return GriffinState(self.conv.initial_carry(batch_shape, h, dtype), self.cell.initial_carry(batch_shape, dtype))

    def __call__(self, params: GriffinParams, xs: Array, carry: GriffinState | None = None, *,
                 resets: Array | None = None, time_axis: int = 0) -> tuple[GriffinState, Array]:  # fmt: skip
        """``(carry, ys)``; ``resets`` start a segment in the convolution and in the cell (see :func:`gated.run`).
        With no ``carry``, a cell that ``restarts`` by its own rule (``rglru(segment_start="recurrentgemma")``) starts
        a segment at the first step too, as ``recurrentgemma`` does."""
        if not isinstance(params, GriffinParams):
            raise TypeError(f"params: expected GriffinParams (Griffin.init), got {type(params).__name__}")
        xs = blocks.check_features("xs", xs, params.gate_kernel.shape[0], "the input_size the parameters were made for")
        row = lambda v: blocks.broadcast_row(v, xs.ndim)
        gate = blocks.ACTIVATIONS[self.activation](xs @ params.gate_kernel + row(params.gate_bias))
        branch = xs @ params.input_kernel + row(params.input_bias)
        if carry is None and self.cell.restarts:  # no past: the first step starts a segment (segment_pos == 0)
            first = jnp.zeros(xs.shape[:-1], bool)
            first = jnp.moveaxis(jnp.moveaxis(first, time_axis % xs.ndim, 0).at[0].set(True), 0, time_axis % xs.ndim)
            resets = first if resets is None else jnp.asarray(resets) | first
        conv_carry, cell_carry = (None, None) if carry is None else carry
        conv_carry, branch = self.conv(params.conv, branch, conv_carry, resets=resets, time_axis=time_axis)
        branch = blocks.ACTIVATIONS[self.conv_activation](branch)
        cell_carry, branch = run(self.cell, params.cell, branch, carry=cell_carry, resets=resets,
                                 time_axis=time_axis, impl=self.impl)  # fmt: skip
        ys = (branch * gate) @ params.output_kernel + row(params.output_bias)
        return GriffinState(conv_carry, cell_carry), ys


@dataclasses.dataclass(frozen=True)
class Mamba(Griffin):
    r"""Mamba's block (Gu & Dao 2023, "Mamba: linear-time sequence modeling with selective state spaces", Fig. 3):
    the composition of :class:`Griffin` with SiLU after the convolution and on the gate,

    .. math::
        z = x W_z, \qquad u = \mathrm{SiLU}(\mathrm{Conv1D}_W(x W_u)), \qquad
        y = (\mathrm{SSM}(u) \odot \mathrm{SiLU}(z)) W_o

    with the selective SSM (``gated.cells.ssm(E, state_size=N)``, E the expanded width, 2D in the paper) as the
    cell. Mamba's projections have no biases; here they have, initialised to zero. Mamba's low-rank step-size
    projection (``dt_proj(x_proj(u))``) is a dense one here, which any low-rank product is; and the SSM's channel
    input is a projection ``v = u W_v`` (Mamba's is ``u`` itself: ``W_v = I``).
    """

    activation: str = option("silu", choice, choices=tuple(blocks.ACTIVATIONS))
    conv_activation: str = option("silu", choice, choices=tuple(blocks.ACTIVATIONS))


# The mixers, for the modules that wrap any of them (gated.flax.Block, gated.nnx.Block).
MIXERS = (Griffin,)  # Mamba is a Griffin


def check_block(block: Any, name: str = "block") -> Any:
    """Returns ``block`` if it is a :mod:`gated.blocks` block or a mixer of this module.

    Raises:
      TypeError: anything else, naming ``name`` and what it got.
    """
    if not isinstance(block, (blocks.Block, *MIXERS)):
        raise TypeError(f"{name}: expected a gated.blocks block or gated.mixers mixer (gated.blocks.RMSNorm(), "
                        f"gated.mixers.Griffin(cell), ...), got {type(block).__name__}")  # fmt: skip
    return block


__all__ = ["MIXERS", "Griffin", "GriffinParams", "GriffinState", "Mamba", "check_block"]
