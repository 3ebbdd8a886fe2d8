"""The recurrent mixers of the papers, as compositions of gated's blocks (:mod:`gated.blocks`) and cells.

A mixer maps a sequence to a sequence of the same width and carries a state, as a layer does:

* ``params = mixer.init(key, input_size, dtype=jnp.float32)``;
* ``carry, ys = mixer(params, xs, carry=None, *, resets=None, time_axis=0)`` with ``xs`` ``(T, *batch, D)`` and
  ``ys`` of the same shape; ``carry`` holds every recurrent state and convolution buffer, so that a sequence run in
  pieces, or one token at a time, gives the outputs of the whole.

Every mixer class names itself and registers in :data:`MIXERS` where it is defined; :func:`get` makes one by
name, as the experiments' configs do (``model.mixer``). A cell on its own, :class:`gated.Recurrent`, is the mixer
``"cell"``.

Notation: T time, D the model width, H the recurrence's width, W the convolution's width.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import blocks, cells, forms, layers
from gated import init as initializers
from gated.options import boolean, check_fields, choice, integer, number, option, register_by_name
from gated.scan import IMPLS, run

Array = jax.Array
STATE_DTYPES = ("float32",)  # a mixer's state_dtype: the recurrence's type under a narrower compute type

# Every mixer by its name, filled where each is defined (Mixer.__init_subclass__), and the plain recurrent layer.
MIXERS: dict[str, type] = {"cell": layers.Recurrent}


class Mixer(blocks.Sequential):
    """What every mixer of this module has: a registered ``name``, the call of every sequence layer
    (:class:`gated.blocks.Sequential`), and whether its cell runs at the mixer's own width (``cell_sets_width``: the
    cell's hidden size is the input and output width D, as for :class:`gated.Recurrent`) or between projections of
    its own."""

    name: ClassVar[str]
    cell_sets_width: ClassVar[bool] = False

    def _cell(self, params: Any, u: Array, carry: Any, resets: Array | None, time_axis: int) -> tuple[Any, Array]:
        """The mixer's ``cell`` over ``u`` by :func:`gated.run`, with the mixer's ``impl`` and ``state_dtype``."""
        return run(
            self.cell,
            params,
            u,
            carry=carry,
            resets=resets,
            time_axis=time_axis,
            impl=self.impl,
            state_dtype=self.state_dtype,
        )

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register_by_name(MIXERS, cls, "mixer")


def get(name: str, cell: cells.Cell, **options) -> Any:
    """A mixer by its name in :data:`MIXERS` around ``cell``, with its options (an unknown one is refused)."""
    choice("mixer", name, tuple(MIXERS))
    return MIXERS[name](cell, **options)


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
class Griffin(Mixer):
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
      cell: the recurrence (its ``hidden_size`` is H); ``gated.cells.RGLRU(H)`` in the paper.
      conv_width: W (default 4).
      activation: the gate branch's (default "gelu_tanh").
      conv_activation: after the convolution (default "identity"; Mamba's block, :class:`Mamba`, has SiLU).
      impl: the backend of :func:`gated.run` for the cell ("auto" by default).
      state_dtype: None, or "float32": the recurrence's state and sums in float32 whatever the compute type
        (:func:`gated.run`'s ``state_dtype``; mixed precision).
    """

    cell: cells.Cell
    conv_width: int = option(4, integer, minimum=1)
    activation: str = option("gelu_tanh", choice, choices=tuple(blocks.ACTIVATIONS))
    conv_activation: str = option("identity", choice, choices=tuple(blocks.ACTIVATIONS))
    impl: str = option("auto", choice, choices=IMPLS)
    state_dtype: str | None = option(None, choice, choices=STATE_DTYPES, optional=True)

    name: ClassVar[str] = "griffin"
    params_type: ClassVar[type] = GriffinParams

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
            initializers.input_kernel(k_g, d, h, dtype),
            zeros(h),
            initializers.input_kernel(k_u, d, h, dtype),
            zeros(h),
            self.conv.init(k_c, h, dtype),
            self.cell.init(k_r, h, dtype),
            initializers.input_kernel(k_o, h, d, dtype),
            zeros(d),
        )

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> GriffinState:
        """Nothing seen: the zero convolution buffer and the cell's zero carry."""
        h = self.cell.hidden_size
        return GriffinState(self.conv.initial_carry(batch_shape, h, dtype), self.cell.initial_carry(batch_shape, dtype))

    def apply(self, params, xs, carry, resets, time_axis, key, lengths) -> tuple[GriffinState, Array]:
        """``(carry, ys)``; ``resets`` start a segment in the convolution and in the cell (see :func:`gated.run`).
        With no ``carry``, a cell that ``restarts`` by its own rule (``RGLRU(segment_start="recurrentgemma")``) starts
        a segment at the first step too, as ``recurrentgemma`` does."""
        xs = blocks.check_features("xs", xs, params.gate_kernel.shape[0], "the input_size the parameters were made for")
        row = lambda v: blocks.broadcast_row(v, xs.ndim)
        gate = blocks.ACTIVATIONS[self.activation](xs @ params.gate_kernel + row(params.gate_bias))
        branch = xs @ params.input_kernel + row(params.input_bias)
        resets = _first_step_starts(self.cell, xs, carry, resets, time_axis)  # no past: segment_pos == 0
        conv_carry, cell_carry = (None, None) if carry is None else carry
        conv_carry, branch = self.conv(params.conv, branch, conv_carry, resets=resets, time_axis=time_axis)
        branch = blocks.ACTIVATIONS[self.conv_activation](branch)
        cell_carry, branch = self._cell(params.cell, branch, cell_carry, resets, time_axis)
        ys = (branch * gate) @ params.output_kernel + row(params.output_bias)
        return GriffinState(conv_carry, cell_carry), ys


@dataclasses.dataclass(frozen=True)
class Mamba(Griffin):
    r"""Mamba's block (Gu & Dao 2023, "Mamba: linear-time sequence modeling with selective state spaces", Fig. 3):
    the composition of :class:`Griffin` with SiLU after the convolution and on the gate,

    .. math::
        z = x W_z, \qquad u = \mathrm{SiLU}(\mathrm{Conv1D}_W(x W_u)), \qquad
        y = (\mathrm{SSM}(u) \odot \mathrm{SiLU}(z)) W_o

    with the selective SSM (``gated.cells.SelectiveSSM(E, state_size=N)``, E the expanded width, 2D in the paper) as the
    cell. Mamba's projections have no biases; here they have, initialised to zero. Mamba's low-rank step-size
    projection (``dt_proj(x_proj(u))``) is a dense one here, which any low-rank product is; and the SSM's channel
    input is a projection ``v = u W_v`` (Mamba's is ``u`` itself: ``W_v = I``).
    """

    activation: str = option("silu", choice, choices=tuple(blocks.ACTIVATIONS))
    conv_activation: str = option("silu", choice, choices=tuple(blocks.ACTIVATIONS))

    name: ClassVar[str] = "mamba"


def _first_step_starts(cell, xs: Array, carry: Any, resets: Array | None, time_axis: int) -> Array | None:
    """``resets`` with the first step a segment start where there is no carry and the cell ``restarts`` by its own
    rule (``RGLRU(segment_start="recurrentgemma")``: ``recurrentgemma``'s ``segment_pos == 0``)."""
    if carry is not None or not cell.restarts:
        return resets
    axis = time_axis % xs.ndim
    first = jnp.moveaxis(jnp.moveaxis(jnp.zeros(xs.shape[:-1], bool), axis, 0).at[0].set(True), 0, axis)
    return first if resets is None else jnp.asarray(resets) | first


def head_norm(x: Array, scale: Array, num_heads: int, eps: float) -> Array:
    """xLSTM's ``MultiHeadLayerNorm`` (a group norm with one group per head): each head's ``H/K`` features
    standardised apart (:func:`gated.blocks.standardise`), then times ``scale`` ``(H,)``; no bias."""
    heads = x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)
    return blocks.standardise(heads, eps).reshape(x.shape) * blocks.broadcast_row(scale, x.ndim)


class XLSTMState(NamedTuple):
    """The carry of :class:`MLSTMBlock` and :class:`SLSTMBlock`: the convolution's last ``W - 1`` inputs and the
    cell's carry."""

    conv: Array
    cell: Any


@dataclasses.dataclass(frozen=True)
class _XLSTMMixer(Mixer):
    """What xLSTM's two blocks share: a causal convolution, a cell run by :func:`gated.run`, a head norm."""

    cell: cells.Cell
    conv_width: int = option(4, integer, minimum=1)
    eps: float = option(1e-5, number, low=0.0, low_open=True)
    impl: str = option("auto", choice, choices=IMPLS)
    state_dtype: str | None = option(None, choice, choices=STATE_DTYPES, optional=True)

    @property
    def conv(self) -> blocks.CausalConv:
        return blocks.CausalConv(width=self.conv_width)

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> XLSTMState:
        """Nothing seen: the zero convolution buffer (over the cell's width) and the cell's zero carry."""
        h = self.cell.hidden_size
        return XLSTMState(self.conv.initial_carry(batch_shape, h, dtype), self.cell.initial_carry(batch_shape, dtype))


class MLSTMBlockParams(NamedTuple):
    """Parameters of :class:`MLSTMBlock`: the up-projection ``(D, 2E)`` (the mLSTM branch, then the gate branch), the
    convolution's, the cell's (reading ``2E``), the learnable skip ``(E,)`` (ones), the head norm's scale ``(E,)``
    (ones) and the down-projection ``(E, D)``. No biases, as the reference code's default."""

    up_kernel: Array
    conv: blocks.ConvParams
    cell: Any
    skip: Array
    norm_scale: Array
    down_kernel: Array


@dataclasses.dataclass(frozen=True)
class MLSTMBlock(_XLSTMMixer):
    r"""xLSTM's mLSTM block (Beck et al. 2024, "xLSTM: Extended long short-term memory", Fig. 10 and the reference
    code's ``mLSTMLayer``): a pre up-projection block. From the input, two branches of width E (2D in the paper):

    .. math::
        [x^m, z] &= x W_{up}, \qquad c = \mathrm{SiLU}(\mathrm{Conv1D}_W(x^m))\\
        \tilde h &= \mathrm{mLSTM}([c, x^m]), \qquad
        y = \big((\mathrm{HeadNorm}(\tilde h) + s \odot c) \odot \mathrm{SiLU}(z)\big) W_{down}

    The cell is ``gated.cells.MLSTM(E, num_heads=K, output_gate=False)``: the block's ``SiLU(z)`` is its output
    gate. In the reference code the queries and keys read ``c`` and the values ``x^m`` through block-diagonal
    projections (blocks of 4), and the input and forget gates read ``[q, k, v]``; here the cell's projection of
    ``[c, x^m]`` is dense, which holds every one of those (the zero blocks are free parameters). ``s`` is the
    learnable skip, HeadNorm :func:`head_norm` (one group per head).

    Attributes:
      cell: an :class:`gated.cells.MLSTM` (its ``hidden_size`` is E).
      conv_width: W (default 4).
      eps: the head norm's epsilon (default 1e-5, as the reference code's).
      impl: the backend of :func:`gated.run` for the cell.
      state_dtype: None, or "float32" (as :class:`Griffin`'s).
    """

    name: ClassVar[str] = "mlstm"
    params_type: ClassVar[type] = MLSTMBlockParams

    def __post_init__(self):
        cells.require(self.cell, "an mLSTM (gated.cells.MLSTM(E, num_heads=K, output_gate=False))", cells.MLSTM)
        check_fields(self)

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> MLSTMBlockParams:
        d, e = integer("input_size", input_size), self.cell.hidden_size
        k_up, k_c, k_r, k_down = jax.random.split(key, 4)
        ones = jnp.ones((e,), dtype)
        return MLSTMBlockParams(
            initializers.input_kernel(k_up, d, 2 * e, dtype),
            self.conv.init(k_c, e, dtype),
            self.cell.init(k_r, 2 * e, dtype),
            ones,
            ones,
            initializers.input_kernel(k_down, e, d, dtype),
        )

    def apply(self, params, xs, carry, resets, time_axis, key, lengths) -> tuple[XLSTMState, Array]:
        """``(carry, ys)``; ``resets`` start a segment in the convolution and in the cell."""
        xs = blocks.check_features("xs", xs, params.up_kernel.shape[0], "the input_size the parameters were made for")
        branch, z = jnp.split(xs @ params.up_kernel, 2, axis=-1)
        conv_carry, cell_carry = (None, None) if carry is None else carry
        conv_carry, c = self.conv(params.conv, branch, conv_carry, resets=resets, time_axis=time_axis)
        c = jax.nn.silu(c)
        cell_carry, h = self._cell(params.cell, jnp.concatenate([c, branch], axis=-1), cell_carry, resets, time_axis)
        skip = c * blocks.broadcast_row(params.skip, c.ndim)
        h = head_norm(h, params.norm_scale, self.cell.num_heads, self.eps) + skip
        return XLSTMState(conv_carry, cell_carry), (h * jax.nn.silu(z)) @ params.down_kernel


class SLSTMBlockParams(NamedTuple):
    """Parameters of :class:`SLSTMBlock`: the convolution's, the cell's (reading ``2D``) and the head norm's scale
    ``(D,)`` (ones)."""

    conv: blocks.ConvParams
    cell: Any
    norm_scale: Array


@dataclasses.dataclass(frozen=True)
class SLSTMBlock(_XLSTMMixer):
    r"""The mixer of xLSTM's sLSTM block (Beck et al. 2024, Fig. 9 and the reference code's ``sLSTMLayer``): a post
    up-projection block, the sLSTM at the model's width D,

    .. math::
        c = \mathrm{SiLU}(\mathrm{Conv1D}_W(x)), \qquad y = \mathrm{HeadNorm}(\mathrm{sLSTM}([c, x]))

    In the paper the input and forget gates read ``c`` and the cell input and output gates ``x``, and the recurrent
    matrix is block-diagonal over ``num_heads`` heads; here the cell's kernels are dense (``[c, x]`` in, ``R`` full),
    which holds those as special cases. The block of Fig. 9 is this mixer in a residual block, followed by a gated
    MLP (GeLU, up-projection 4/3) in another: two :class:`gated.models.Residual` layers.

    Attributes:
      cell: an :class:`gated.cells.SLSTM` of width D.
      conv_width, eps, impl, state_dtype: as :class:`MLSTMBlock`'s.
      num_heads: K, the head norm's groups (default 4; must divide D).
    """

    num_heads: int = option(4, integer, minimum=1)

    name: ClassVar[str] = "slstm"
    params_type: ClassVar[type] = SLSTMBlockParams
    cell_sets_width: ClassVar[bool] = True

    def __post_init__(self):
        cells.require(self.cell, "an sLSTM (gated.cells.SLSTM(D))", cells.SLSTM)
        check_fields(self)
        if self.cell.hidden_size % self.num_heads:
            raise ValueError(
                f"num_heads: expected a positive int dividing the cell's hidden_size "
                f"{self.cell.hidden_size}, got {self.num_heads}"
            )

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> SLSTMBlockParams:
        d = integer("input_size", input_size)
        if d != self.cell.hidden_size:
            raise ValueError(
                f"input_size: expected the cell's hidden_size {self.cell.hidden_size} (the sLSTM runs at "
                f"the model's width), got {d}"
            )
        k_c, k_r = jax.random.split(key)
        return SLSTMBlockParams(self.conv.init(k_c, d, dtype), self.cell.init(k_r, 2 * d, dtype), jnp.ones((d,), dtype))

    def apply(self, params, xs, carry, resets, time_axis, key, lengths) -> tuple[XLSTMState, Array]:
        xs = blocks.check_features("xs", xs, params.norm_scale.shape[0], "the input_size the parameters were made for")
        conv_carry, cell_carry = (None, None) if carry is None else carry
        conv_carry, c = self.conv(params.conv, xs, conv_carry, resets=resets, time_axis=time_axis)
        cell_carry, h = self._cell(
            params.cell, jnp.concatenate([jax.nn.silu(c), xs], axis=-1), cell_carry, resets, time_axis
        )
        return XLSTMState(conv_carry, cell_carry), head_norm(h, params.norm_scale, self.num_heads, self.eps)


class LinearAttentionParams(NamedTuple):
    """Parameters of :class:`LinearAttention`: the cell's (reading D), the norm's scale (``(d_v,)`` shared by the
    heads, or ``(H,)``; ones), the output gate's kernel ``(D, H)`` (None without one) and the output projection's
    ``(H, D)``. No biases, as flash-linear-attention's layers."""

    cell: Any
    norm_scale: Array
    gate_kernel: Array | None
    output_kernel: Array


NORMS = ("head", "all")


@dataclasses.dataclass(frozen=True)
class LinearAttention(Mixer):
    r"""The layer the linear-attention papers put around a matrix-state cell (GLA, Yang et al. 2024, section 4.4;
    Simple GLA; RetNet's multi-scale retention; HGRN2; as flash-linear-attention's ``GatedLinearAttention``,
    ``SimpleGatedLinearAttention``, ``MultiScaleRetention`` and ``HGRN2Attention``):

    .. math::
        o = \mathrm{cell}(x), \qquad y = \big(\mathrm{RMSNorm}(o) \odot \mathrm{swish}(x W_g)\big) W_o

    the cell projecting the queries, keys, values and gates from ``x`` itself. ``norm="head"`` normalises each
    head's ``d_v`` outputs apart with one scale shared by the heads (flash-linear-attention's ``FusedRMSNormGated``
    of GLA and RetNet), ``"all"`` the H outputs together (HGRN2's ``g_norm``); without ``output_gate`` (HGRN2) the
    normalised outputs are projected as they are. RetNet's rotary positions on the queries and keys are not part of
    this layer.

    Attributes:
      cell: a matrix-state cell (:class:`gated.forms.MatrixState`) of width H: ``gated.cells.GLA(H, num_heads=K)``,
        ``gated.cells.HGRN2(H, num_heads=K)``, ...
      output_gate: the swish output gate; None (default): as the cell's paper's layer has it
        (``cell.paper_layer``; True unless it says otherwise).
      norm: "head" or "all"; None (default): as the cell's paper's layer ("head" unless it says otherwise).
      eps: the norm's epsilon (default 1e-5, as flash-linear-attention's layers).
      impl, state_dtype: as :class:`Griffin`'s.
    """

    cell: cells.Cell
    output_gate: bool | None = option(None, boolean, optional=True)
    norm: str | None = option(None, choice, choices=NORMS, optional=True)
    eps: float = option(1e-5, number, low=0.0)
    impl: str = option("auto", choice, choices=IMPLS)
    state_dtype: str | None = option(None, choice, choices=STATE_DTYPES, optional=True)

    name: ClassVar[str] = "linear_attention"
    params_type: ClassVar[type] = LinearAttentionParams

    def __post_init__(self):
        cells.require(self.cell, "a matrix-state cell (gated.cells.GLA(H, num_heads=K), ...)", forms.MatrixState)
        check_fields(self)

    def _layer(self, option: str, default: Any) -> Any:
        """An option as given, or as the cell's paper's layer has it (``paper_layer``), or ``default``."""
        given = getattr(self, option)
        return getattr(self.cell, "paper_layer", {}).get(option, default) if given is None else given

    @property
    def gated(self) -> bool:
        """Whether the outputs pass the swish output gate (:attr:`output_gate`, resolved)."""
        return self._layer("output_gate", True)

    @property
    def norm_over(self) -> str:
        """What the norm normalises: "head" or "all" (:attr:`norm`, resolved)."""
        return self._layer("norm", "head")

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> LinearAttentionParams:
        d, h = integer("input_size", input_size), self.cell.hidden_size
        k_c, k_g, k_o = jax.random.split(key, 3)
        scale = jnp.ones((self.cell.head_size if self.norm_over == "head" else h,), dtype)
        gate = initializers.input_kernel(k_g, d, h, dtype) if self.gated else None
        return LinearAttentionParams(
            self.cell.init(k_c, d, dtype), scale, gate, initializers.input_kernel(k_o, h, d, dtype)
        )

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> Any:
        """The cell's zero carry."""
        return self.cell.initial_carry(batch_shape, dtype)

    def apply(self, params, xs, carry, resets, time_axis, key, lengths) -> tuple[Any, Array]:
        """``(carry, ys)``: the carry is the cell's; ``resets`` start a segment in it."""
        xs = blocks.check_features(
            "xs", xs, params.output_kernel.shape[1], "the input_size the parameters were made for"
        )
        carry, o = self._cell(params.cell, xs, carry, resets, time_axis)
        if self.norm_over == "head":
            k = self.cell.num_heads
            o = o.reshape(*o.shape[:-1], k, o.shape[-1] // k)
        o = blocks.RMSNorm(self.eps)(blocks.RMSNormParams(params.norm_scale), o).reshape(xs.shape[:-1] + (-1,))
        if self.gated:
            o = o * jax.nn.silu(xs @ params.gate_kernel)
        return carry, o @ params.output_kernel


def check_block(block: Any, name: str = "block") -> Any:
    """Returns ``block`` if it is a :mod:`gated.blocks` block or a mixer of this module.

    Raises:
      TypeError: anything else, naming ``name`` and what it got.
    """
    if not isinstance(block, blocks.Block | Mixer):
        raise TypeError(
            f"{name}: expected a gated.blocks block or gated.mixers mixer (gated.blocks.RMSNorm(), "
            f"gated.mixers.Griffin(cell), ...), got {type(block).__name__}"
        )
    return block


__all__ = [
    "MIXERS",
    "Griffin",
    "GriffinParams",
    "GriffinState",
    "MLSTMBlock",
    "MLSTMBlockParams",
    "Mamba",
    "Mixer",
    "SLSTMBlock",
    "SLSTMBlockParams",
    "XLSTMState",
    "check_block",
    "get",
    "head_norm",
]
