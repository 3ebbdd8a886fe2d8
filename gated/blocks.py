"""The pieces the modern papers stack around a recurrence: normalisation, MLPs, gated MLPs, a highway layer and a
causal depthwise temporal convolution with a streaming state.

Each block is a frozen dataclass of checked options with the surface of a cell and a layer:

* ``params = block.init(key, input_size, dtype=jnp.float32)``, a NamedTuple of arrays;
* a position-wise block (the norms, the MLPs, the highway layer): ``y = block(params, x)`` with ``x`` ``(..., D)``
  and ``y`` of the same shape, so that any of them fits in a residual branch;
* the convolution, which reads the past, with the call of every sequence layer (:class:`Sequential`):
  ``carry, ys = conv(params, xs, carry=None, time_axis=0)`` with ``xs``
  ``(T, *batch, D)`` and ``carry`` the last ``width - 1`` inputs, so that a sequence run in pieces, or one token at
  a time, gives the outputs of the whole.

Every block computes in the type its parameters and inputs promote to, and the norms take their means in float32
at least (a bfloat16 sum of squares loses the scale). Notation: T time, D features, F the hidden width of an MLP,
W the convolution's width.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import init as initializers
from gated.options import check_fields, choice, integer, number, option, register_by_name

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": lambda z: jax.nn.gelu(z, approximate=False),
    "gelu_tanh": lambda z: jax.nn.gelu(z, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "identity": lambda z: z,
}


def check_features(name: str, x: Any, size: int, what: str) -> Array:
    """``x`` as a floating-point array whose last axis is ``size``, or a clear error."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
    if x.ndim == 0 or x.shape[-1] != size:
        raise ValueError(f"{name}: expected a last axis of {size} ({what}), got shape {x.shape}")
    return x


def broadcast_row(v: Array, ndim: int) -> Array:
    """A per-feature vector ``(D,)`` as an array of rank ``ndim`` (``(1, ..., 1, D)``), to broadcast against
    ``(..., D)`` without rank promotion (which a user may have set to raise)."""
    return v.reshape((1,) * (ndim - v.ndim) + v.shape)


def _wide(x: Array) -> Array:
    """``x`` in float32 at least, for a mean over features."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def standardise(x: Array, eps: float) -> Array:
    """``(x - mean) / sqrt(var + eps)`` over the last axis, the mean and (biased) variance taken in float32 at
    least, the result in ``x``'s type: layer normalisation without its gain and bias (:class:`LayerNorm`, the
    layer-normalised LSTM)."""
    wide = _wide(x)
    centred = wide - jnp.mean(wide, axis=-1, keepdims=True)
    return (centred * jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + eps)).astype(x.dtype)


BLOCKS: dict[str, type] = {}  # every block by its name, filled where each is defined (Block.__init_subclass__)


def check_params_type(layer: Any, params: Any) -> None:
    """Refuses ``params`` not of ``layer.params_type``, naming the type and the ``init`` that makes it."""
    if not isinstance(params, layer.params_type):
        got = type(params).__name__
        raise TypeError(f"params: expected {layer.params_type.__name__} ({type(layer).__name__}.init), got {got}")


class Block:
    """What every block has: checked options (``__post_init__``), and ``input_size`` read from its parameters. A
    block class that names itself (``name``) registers in :data:`BLOCKS`, which :func:`get` reads."""

    name: ClassVar[str]
    params_type: ClassVar[type]
    # The axis of the first parameter that is the input size D.
    input_axis: ClassVar[int] = 0
    # Whether the block reads the past (and takes a carry): the convolution; the others are position-wise.
    sequential: ClassVar[bool] = False
    # Whether the call takes a PRNG ``key`` (dropout; None at evaluation).
    stochastic: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register_by_name(BLOCKS, cls, "block")

    def __post_init__(self):
        check_fields(self)

    def _input(self, params, x: Any) -> Array:
        check_params_type(self, params)
        size = params[0].shape[self.input_axis]
        return check_features("x", x, size, "the input_size the parameters were made for")


class Sequential:
    """The call every layer over sequences shares: the convolution, the mixers (:mod:`gated.mixers`), the recurrent
    layers (:mod:`gated.layers`), a residual block and a model (:mod:`gated.models`)::

        carry, ys = layer(params, xs, carry=None, *, resets=None, time_axis=0, key=None, lengths=None)

    ``carry`` None starts from nothing, and the carry returned continues the sequence; ``resets`` (as ``xs`` without
    its feature axis, boolean) start new segments; ``key`` draws the masks of a stochastic layer (``stochastic``;
    None: evaluation), and a deterministic one ignores it; ``lengths`` ``(*batch,)`` are each sequence's valid steps,
    read by a layer that says so (``reads_lengths``) and refused by the others, which are causal and need none. A
    layer names its parameters' type (``params_type``), which the call checks, and writes :meth:`apply`, which takes
    the same arguments in that order."""

    params_type: ClassVar[type]
    sequential: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    reads_lengths: ClassVar[bool] = False

    def __call__(
        self,
        params: Any,
        xs: Array,
        carry: Any = None,
        *,
        resets: Array | None = None,
        time_axis: int = 0,
        key: Array | None = None,
        lengths: Array | None = None,
    ) -> tuple[Any, Array]:
        check_params_type(self, params)
        if lengths is not None and not self.reads_lengths:
            raise ValueError(
                f"lengths: {type(self).__name__} reads no sequence lengths (it is causal: the outputs at valid "
                "steps never read padding), got lengths"
            )
        return self.apply(params, xs, carry, resets, time_axis, key, lengths)

    def apply(self, params, xs, carry, resets, time_axis, key, lengths) -> tuple[Any, Array]:
        """The layer's computation, with the arguments of the call (checked ``params``)."""
        raise NotImplementedError(f"{type(self).__name__}.apply")


class RMSNormParams(NamedTuple):
    """``scale`` (D,), initialised to ones."""

    scale: Array


@dataclasses.dataclass(frozen=True)
class RMSNorm(Block):
    r"""Root-mean-square normalisation (Zhang & Sennrich 2019): :math:`y = x / \sqrt{\mathrm{mean}(x^2) + \epsilon}
    \odot \gamma`, over the last axis.

    Attributes:
      eps: added to the mean square (default 1e-6, as Flax's).
    """

    name: ClassVar[str] = "rmsnorm"

    eps: float = option(1e-6, number, low=0.0)
    params_type: ClassVar[type] = RMSNormParams

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> RMSNormParams:
        del key
        return RMSNormParams(jnp.ones((integer("input_size", input_size),), dtype))

    def __call__(self, params: RMSNormParams, x: Array) -> Array:
        x = self._input(params, x)
        wide = _wide(x)
        normed = wide * jax.lax.rsqrt(jnp.mean(wide * wide, axis=-1, keepdims=True) + self.eps)
        return normed.astype(x.dtype) * broadcast_row(params.scale, x.ndim)


class LayerNormParams(NamedTuple):
    """``scale`` (D,) initialised to ones and ``bias`` (D,) to zeros."""

    scale: Array
    bias: Array


@dataclasses.dataclass(frozen=True)
class LayerNorm(Block):
    r"""Layer normalisation (Ba, Kiros & Hinton 2016): :math:`y = (x - \mu) / \sqrt{\sigma^2 + \epsilon} \odot
    \gamma + \beta`, the mean and (biased) variance over the last axis.

    Attributes:
      eps: added to the variance (default 1e-6, as Flax's; PyTorch's is 1e-5).
    """

    name: ClassVar[str] = "layernorm"

    eps: float = option(1e-6, number, low=0.0)
    params_type: ClassVar[type] = LayerNormParams

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> LayerNormParams:
        del key
        size = integer("input_size", input_size)
        return LayerNormParams(jnp.ones((size,), dtype), jnp.zeros((size,), dtype))

    def __call__(self, params: LayerNormParams, x: Array) -> Array:
        x = self._input(params, x)
        normed = standardise(x, self.eps)
        return normed * broadcast_row(params.scale, x.ndim) + broadcast_row(params.bias, x.ndim)


@dataclasses.dataclass(frozen=True)
class FeedForward(Block):
    """What the feed-forward blocks share: their hidden width F (``hidden_size``), and their kernels in, ``(D,
    branches * F)``, and out, ``(F, D)``."""

    hidden_size: int = option(check=integer, minimum=1)

    def _kernels(self, key: Array, input_size: int, dtype, branches: int = 1) -> tuple[Array, Array]:
        d, f = integer("input_size", input_size), self.hidden_size
        k_in, k_out = jax.random.split(key)
        return initializers.input_kernel(k_in, d, branches * f, dtype), initializers.input_kernel(k_out, f, d, dtype)


class MLPParams(NamedTuple):
    """``kernel_in`` (D, F), ``bias_in`` (F,), ``kernel_out`` (F, D), ``bias_out`` (D,): LeCun-normal kernels, zero
    biases."""

    kernel_in: Array
    bias_in: Array
    kernel_out: Array
    bias_out: Array


@dataclasses.dataclass(frozen=True)
class MLP(FeedForward):
    r"""The transformer's feed-forward block: :math:`y = \phi(x W_1 + b_1) W_2 + b_2`, from D to F and back to D.

    Attributes:
      hidden_size: F, the hidden width.
      activation: :math:`\phi`, one of :data:`ACTIVATIONS` (default "gelu", the exact one).
    """

    name: ClassVar[str] = "mlp"

    activation: str = option("gelu", choice, choices=tuple(ACTIVATIONS))
    params_type: ClassVar[type] = MLPParams

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> MLPParams:
        kernel_in, kernel_out = self._kernels(key, input_size, dtype)
        return MLPParams(kernel_in, jnp.zeros((self.hidden_size,), dtype), kernel_out, jnp.zeros((input_size,), dtype))

    def __call__(self, params: MLPParams, x: Array) -> Array:
        x = self._input(params, x)
        hidden = ACTIVATIONS[self.activation](x @ params.kernel_in + broadcast_row(params.bias_in, x.ndim))
        return hidden @ params.kernel_out + broadcast_row(params.bias_out, x.ndim)


# Shazeer 2020's gated feed-forward variants: the function of the gate branch.
GLU_GATES = {"glu": "sigmoid", "geglu": "gelu", "swiglu": "silu", "reglu": "relu", "bilinear": "identity"}


class GatedMLPParams(NamedTuple):
    """``kernel_in`` (D, 2F): the gate branch's kernel and the value branch's, side by side; ``kernel_out`` (F, D).
    No biases, as in Shazeer 2020."""

    kernel_in: Array
    kernel_out: Array


@dataclasses.dataclass(frozen=True)
class GatedMLP(FeedForward):
    r"""A gated feed-forward block (Shazeer 2020, "GLU variants improve transformer"):
    :math:`y = (\phi(x W) \odot x V) W_2`, without biases.

    Attributes:
      hidden_size: F, the width of each branch.
      variant: the gate's function :math:`\phi`: "glu" (sigmoid; Dauphin et al. 2017), "geglu" (GELU), "swiglu"
        (Swish, SiLU), "reglu" (ReLU) or "bilinear" (none), as :data:`GLU_GATES` lists.
    """

    name: ClassVar[str] = "gated_mlp"

    variant: str = option("swiglu", choice, choices=tuple(GLU_GATES))
    params_type: ClassVar[type] = GatedMLPParams

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> GatedMLPParams:
        return GatedMLPParams(*self._kernels(key, input_size, dtype, branches=2))

    def __call__(self, params: GatedMLPParams, x: Array) -> Array:
        x = self._input(params, x)
        gate, value = jnp.split(x @ params.kernel_in, 2, axis=-1)
        return (ACTIVATIONS[GLU_GATES[self.variant]](gate) * value) @ params.kernel_out


class HighwayParams(NamedTuple):
    """``kernel`` (D, 2D): the transform's kernel and the gate's, side by side; ``bias`` (2D,), the gate's half
    initialised to ``gate_bias``."""

    kernel: Array
    bias: Array


@dataclasses.dataclass(frozen=True)
class Highway(Block):
    r"""A highway layer (Srivastava, Greff & Schmidhuber 2015), the seeds' "gates for depth":
    :math:`t = \sigma(x W_T + b_T)`, :math:`y = t \odot \phi(x W_H + b_H) + (1 - t) \odot x`.

    Attributes:
      activation: :math:`\phi` (default "tanh"), one of :data:`ACTIVATIONS`.
      gate_bias: the initial :math:`b_T` (default -1.0): negative, so that a new layer starts by carrying its input
        (the paper's "-1, -3 etc.").
    """

    name: ClassVar[str] = "highway"

    activation: str = option("tanh", choice, choices=tuple(ACTIVATIONS))
    gate_bias: float = option(-1.0, number)
    params_type: ClassVar[type] = HighwayParams

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> HighwayParams:
        d = integer("input_size", input_size)
        bias = jnp.concatenate([jnp.zeros((d,), dtype), jnp.full((d,), self.gate_bias, dtype)])
        return HighwayParams(initializers.input_kernel(key, d, 2 * d, dtype), bias)

    def __call__(self, params: HighwayParams, x: Array) -> Array:
        x = self._input(params, x)
        transform, gate = jnp.split(x @ params.kernel + broadcast_row(params.bias, x.ndim), 2, axis=-1)
        t = jax.nn.sigmoid(gate)
        return t * ACTIVATIONS[self.activation](transform) + (1.0 - t) * x


class DropoutParams(NamedTuple):
    """Dropout has no parameters."""


@dataclasses.dataclass(frozen=True)
class Dropout(Block):
    r"""Dropout (Srivastava et al. 2014), inverted: each entry is kept with probability :math:`1 - p` and scaled by
    :math:`1 / (1 - p)`, so that its expectation is the input; ``y = dropout(params, x, key=key)``. Without a key
    (evaluation) it is the identity, and at ``rate`` 0 it is the identity whatever the key.

    Attributes:
      rate: :math:`p`, the probability of dropping an entry, in [0, 1).
    """

    name: ClassVar[str] = "dropout"

    rate: float = option(0.0, number, low=0.0, high=1.0, high_open=True)
    params_type: ClassVar[type] = DropoutParams
    stochastic: ClassVar[bool] = True

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> DropoutParams:
        del key, dtype
        integer("input_size", input_size)
        return DropoutParams()

    def __call__(self, params: DropoutParams, x: Array, key: Array | None = None) -> Array:
        if not isinstance(params, DropoutParams):
            raise TypeError(f"params: expected DropoutParams (Dropout.init), got {type(params).__name__}")
        x = check_features("x", x, jnp.shape(x)[-1] if jnp.ndim(x) else -1, "features")
        if key is None or self.rate == 0.0:
            return x
        keep = jax.random.bernoulli(key, 1.0 - self.rate, x.shape)
        return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros_like(x))


class ConvParams(NamedTuple):
    """``kernel`` (W, D), ``kernel[W - 1]`` weighing the present input and ``kernel[0]`` the oldest, normal with
    variance 1/W; ``bias`` (D,), zeros."""

    kernel: Array
    bias: Array


@dataclasses.dataclass(frozen=True)
class CausalConv(Sequential, Block):
    r"""A causal depthwise temporal convolution, as Griffin (De et al. 2024) and Mamba (Gu & Dao 2023) put before
    their recurrences: every feature d on its own,

    .. math:: y_t = \sum_{k=0}^{W-1} w_k \odot x_{t - (W - 1) + k} + b

    with the inputs before the sequence read from the carry, the last ``W - 1`` inputs seen (zeros at the start).
    This is PyTorch's ``Conv1d(D, D, W, groups=D, padding=W - 1)`` cut to the first T outputs, and
    ``recurrentgemma``'s ``Conv1D``.

    Attributes:
      width: W, the number of steps each output reads (default 4, as Griffin's and Mamba's).
    """

    name: ClassVar[str] = "causal_conv"

    width: int = option(4, integer, minimum=1)
    params_type: ClassVar[type] = ConvParams
    input_axis: ClassVar[int] = 1

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> ConvParams:
        d = integer("input_size", input_size)
        kernel = jax.random.normal(key, (self.width, d), jnp.promote_types(dtype, jnp.float32))  # drawn in float32
        return ConvParams((kernel / math.sqrt(self.width)).astype(dtype), jnp.zeros((d,), dtype))

    def initial_carry(self, batch_shape: tuple[int, ...], input_size: int, dtype=jnp.float32) -> Array:
        """The zero carry ``(W - 1, *batch, D)``: nothing seen before the sequence."""
        return jnp.zeros((self.width - 1, *batch_shape, integer("input_size", input_size)), dtype)

    def apply(self, params, xs, carry, resets, time_axis, key, lengths) -> tuple[Array, Array]:
        """``(carry, ys)``: ``ys`` shaped like ``xs`` and the carry for the next piece of the sequence.

        ``resets`` ``(T, *batch)`` (as ``xs`` without its feature axis): steps that start a new segment, as in
        :func:`gated.run`; an output reads no input from before its segment's start (``recurrentgemma``'s document
        mask), and the carry keeps none either.
        """
        xs = self._input(params, xs)
        if xs.ndim < 2:
            raise ValueError(f"xs: expected (T, *batch, D) with a time axis, got shape {xs.shape}")
        time_axis = integer("time_axis", time_axis, minimum=None)
        if not -xs.ndim <= time_axis < xs.ndim - 1:
            raise ValueError(f"time_axis: expected an axis of xs {xs.shape} before its feature axis, got {time_axis}")
        time_axis %= xs.ndim
        xs = jnp.moveaxis(xs, time_axis, 0)
        want = (self.width - 1, *xs.shape[1:])
        if carry is None:
            carry = jnp.zeros(want, xs.dtype)
        elif jnp.shape(carry) != want:
            raise ValueError(f"carry: expected shape {want} (the last width - 1 inputs), got {jnp.shape(carry)}")
        seen = jnp.concatenate([jnp.asarray(carry, xs.dtype), xs], axis=0)  # seen[j] is the input at j - (W - 1)
        steps, past = xs.shape[0], self.width - 1
        reads = [seen[k : k + steps] for k in range(self.width)]  # reads[k] is x_{t - (W - 1 - k)}
        kept = seen[seen.shape[0] - past :]
        if resets is not None and steps:
            start = self._segment_starts(resets, time_axis, xs.shape[:-1])  # (T, *batch, 1)
            t = jnp.arange(steps).reshape(steps, *[1] * (xs.ndim - 1))
            reads = [jnp.where(t - (past - k) >= start, r, 0) for k, r in enumerate(reads)]
            times = jnp.arange(steps - past, steps).reshape(past, *[1] * (xs.ndim - 1))
            kept = jnp.where(times >= start[-1:], kept, 0)
        ys = sum(broadcast_row(params.kernel[k], xs.ndim) * r for k, r in enumerate(reads))
        ys = ys + broadcast_row(params.bias, xs.ndim)
        return kept, jnp.moveaxis(ys, 0, time_axis)

    def _segment_starts(self, resets: Any, time_axis: int, shape: tuple[int, ...]) -> Array:
        """The step at which each step's segment starts, ``-W`` before the first reset (the carry is read)."""
        resets = jnp.asarray(resets)
        if resets.dtype != jnp.bool_:
            raise TypeError(f"resets: expected a boolean array, got dtype {resets.dtype}")
        if resets.ndim != len(shape):
            raise ValueError(f"resets: expected the shape of xs without its feature axis, got {resets.shape}")
        resets = jnp.moveaxis(resets, time_axis, 0)
        if resets.shape != shape:
            raise ValueError(
                f"resets: expected the shape of xs without its feature axis {shape} (time first), got {resets.shape}"
            )
        t = jnp.arange(shape[0]).reshape(shape[0], *[1] * (len(shape) - 1))
        return jax.lax.cummax(jnp.where(resets, t, -self.width), axis=0)[..., None]


def get(name: str, **options) -> Block:
    """A block by its name in :data:`BLOCKS`, with its options."""
    choice("block", name, tuple(BLOCKS))
    return BLOCKS[name](**options)


__all__ = [
    "ACTIVATIONS",
    "BLOCKS",
    "GLU_GATES",
    "Block",
    "CausalConv",
    "ConvParams",
    "Dropout",
    "DropoutParams",
    "GatedMLP",
    "GatedMLPParams",
    "Highway",
    "HighwayParams",
    "LayerNorm",
    "LayerNormParams",
    "MLP",
    "MLPParams",
    "RMSNorm",
    "RMSNormParams",
    "broadcast_row",
    "check_features",
    "get",
    "standardise",
]
