"""Models from blocks: the residual block the papers stack, a token model (an embedding, N layers, a final norm and
a tied or untied head), and generation one token at a time from a carry. Without an embedding (``embed=False``) the
same model is the classic recurrent layer and its dense readout, per step or at each sequence's last step.

A layer of a model is a :mod:`gated.blocks` block, a :mod:`gated.mixers` mixer, a :mod:`gated.layers` layer or a
:class:`Residual` around any of them. The sequential ones (the convolution, the mixers, the recurrent layers) take
and return a carry, so a model runs a sequence whole, in pieces or one token at a time with the same outputs:
:func:`generate` decodes with ``lax.scan`` from the carry its prompt leaves.

Notation: T time, V the vocabulary, D the model width.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import blocks
from gated import init as initializers
from gated.options import boolean, check_fields, choice, integer, number, option

Array = jax.Array


def sequential(layer: Any) -> bool:
    """Whether ``layer`` is called with a carry (:class:`gated.blocks.Sequential`): the convolution, a mixer, a
    recurrent layer, a :class:`Residual`; else ``(params, x) -> y`` (position-wise)."""
    return getattr(layer, "sequential", True)


def _apply(layer: Any, params: Any, xs: Array, carry: Any, resets: Array | None, time_axis: int, key: Array | None,
           lengths: Array | None = None):  # fmt: skip
    random = {"key": key} if getattr(layer, "stochastic", False) else {}
    if lengths is not None and getattr(layer, "reads_lengths", False):
        random["lengths"] = lengths
    if sequential(layer):
        return layer(params, xs, carry=carry, resets=resets, time_axis=time_axis, **random)
    return None, layer(params, xs, **random)


class ResidualParams(NamedTuple):
    """The norm's parameters (None without one) and the mixer's."""

    norm: Any
    mixer: Any


@dataclasses.dataclass(frozen=True)
class Residual(blocks.Sequential):
    r"""A pre-norm residual block, :math:`y = x + \mathrm{mixer}(\mathrm{norm}(x))` (Griffin's and Mamba's
    residual blocks, the pre-LN transformer's).

    Attributes:
      mixer: a block, mixer or layer whose output has the input's width.
      norm: :class:`gated.blocks.RMSNorm` (default), :class:`gated.blocks.LayerNorm` or None.
      dropout: the rate of dropout on the mixer's output before the sum (default 0; with a ``key`` only).
    """

    mixer: Any
    norm: Any = blocks.RMSNorm()
    dropout: float = option(0.0, number, low=0.0, high=1.0, high_open=True)

    # Called with a carry (None around a position-wise mixer) and a key, whatever the mixer.
    stochastic: ClassVar[bool] = True
    params_type: ClassVar[type] = ResidualParams

    def __post_init__(self):
        check_fields(self)

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> ResidualParams:
        k_norm, k_mixer = jax.random.split(key)
        norm = None if self.norm is None else self.norm.init(k_norm, input_size, dtype)
        return ResidualParams(norm, self.mixer.init(k_mixer, input_size, dtype))

    def apply(self, params, xs, carry, resets, time_axis, key, lengths) -> tuple[Any, Array]:
        """``(carry, ys)``; ``key`` (None at evaluation) draws the dropout masks, the mixer's own included."""
        normed = xs if self.norm is None else self.norm(params.norm, xs)
        k_mixer, k_out = (None, None) if key is None else jax.random.split(key)
        carry, ys = _apply(self.mixer, params.mixer, normed, carry, resets, time_axis, k_mixer)
        ys = blocks.Dropout(self.dropout)(blocks.DropoutParams(), ys, k_out)
        if ys.shape != xs.shape:
            raise ValueError(
                f"mixer: expected outputs of the input's shape {xs.shape} for the residual sum, got {ys.shape}"
            )
        return carry, xs + ys


class ModelParams(NamedTuple):
    """``embedding`` (V, D), normal with variance 1 (None without one, ``embed=False``); each layer's parameters;
    the final norm's (or None); the head's ``(D, V)`` kernel, or None when it is tied to the embedding, or
    :class:`HeadParams` with ``head_bias``."""

    embedding: Array | None
    layers: tuple
    final_norm: Any
    head: Any


class HeadParams(NamedTuple):
    """A head with a bias (``head_bias=True``): its ``(D, V)`` kernel and ``(V,)`` bias (zeros)."""

    kernel: Array
    bias: Array


READOUTS = ("per_step", "last")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Model(blocks.Sequential):
    r"""A token model: :math:`h^0_t = E[x_t] \cdot s`, :math:`h^{l} = \mathrm{layer}_l(h^{l-1})`,
    logits :math:`= \mathrm{norm}(h^N) W` with :math:`W = E^\top` when tied. With ``input_size``, a model of
    feature sequences: :math:`h^0_t = x_t E \cdot s` with :math:`E` a ``(input_size, D)`` kernel.

    Attributes:
      vocab_size: V, the head's outputs (the vocabulary; the classes or targets of a model of features).
      width: D.
      input_size: None (default): the inputs are tokens in [0, V); an int: feature vectors of that size.
      input_vocab_size: None (default): the input tokens are the head's V; an int: tokens in [0, input_vocab_size)
        (a task whose inputs hold symbols its outputs never do: cues, padding), untied.
      layers: the N layers, each a block, mixer, layer or :class:`Residual` of width D.
      final_norm: a norm or None.
      tie_embeddings: the head is the embedding's transpose (default True).
      embedding_scale: :math:`s`, multiplies the embedded tokens (1.0; Griffin uses :math:`\sqrt{D}`).
      embed: True (default): the embedding above. False: none; the first layer reads the one-hot tokens (over
        ``input_vocab_size`` or ``vocab_size``) or the features themselves, each layer the previous one's outputs
        (``output_size``), and D is the last layer's output size: the classic recurrent layer and readout. Its key
        splits into the layers' and the head's, the head LeCun-normal (Flax's ``Dense``).
      head_bias: the head adds a bias (zeros at init; default False).
      readout: "per_step" (default): logits at every step, ``(T, *batch, V)``; "last": at each sequence's last
        valid step (by ``lengths``), ``(*batch, V)``.
      dtype: None (default): compute in the parameters' type; "bfloat16" or "float32": the parameters and float
        inputs cast to it for the call (mixed precision: the parameters are kept in their own type).
    """

    vocab_size: int = option(check=integer, minimum=1)
    width: int = option(check=integer, minimum=1)
    layers: tuple = ()
    input_size: int | None = option(None, integer, minimum=1, optional=True)
    input_vocab_size: int | None = option(None, integer, minimum=1, optional=True)
    final_norm: Any = blocks.RMSNorm()
    tie_embeddings: bool = option(True, boolean)
    embedding_scale: float = option(1.0, number, low=0.0, low_open=True)
    embed: bool = option(True, boolean)
    head_bias: bool = option(False, boolean)
    readout: str = option("per_step", choice, choices=READOUTS)
    dtype: str | None = option(None, choice, choices=tuple(COMPUTE_DTYPES), optional=True)

    params_type: ClassVar[type] = ModelParams
    stochastic: ClassVar[bool] = True  # its dropout, where a layer has any
    reads_lengths: ClassVar[bool] = True  # passed to the recurrent layers and the "last" readout

    def __post_init__(self):
        check_fields(self)
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.embed and self.tie_embeddings:
            raise ValueError("tie_embeddings: expected False with embed=False (there is no embedding to tie to)")
        if not self.embed and self.embedding_scale != 1.0:
            raise ValueError(
                f"embedding_scale: expected 1.0 with embed=False (nothing is embedded), got {self.embedding_scale}"
            )
        if not self.embed and self.layers and hasattr(self.layers[-1], "output_size"):
            if self.layers[-1].output_size != self.width:
                raise ValueError(
                    f"width: expected the last layer's output size {self.layers[-1].output_size} with embed=False "
                    f"(the head reads it), got {self.width}"
                )
        if self.input_size is not None and self.tie_embeddings:
            raise ValueError(
                f"tie_embeddings: expected False with input_size={self.input_size} (features in, not "
                "tokens: there is no embedding to tie the head to)"
            )
        if self.input_vocab_size is not None and self.input_size is not None:
            raise ValueError(
                f"input_vocab_size: expected None with input_size={self.input_size} (features are not "
                f"tokens), got {self.input_vocab_size}"
            )
        if self.tokens != self.vocab_size and self.tie_embeddings:
            raise ValueError(
                f"tie_embeddings: expected False with input_vocab_size={self.input_vocab_size} != "
                f"vocab_size={self.vocab_size} (the embedding is not the head's shape)"
            )

    @property
    def tokens(self) -> int:
        """The number of input tokens the embedding holds (``input_vocab_size``, else ``vocab_size``)."""
        return self.vocab_size if self.input_vocab_size is None else self.input_vocab_size

    def init(self, key: Array, dtype=jnp.float32) -> ModelParams:
        if not self.embed:
            return self._init_without_embedding(key, dtype)
        keys = jax.random.split(key, len(self.layers) + 3)
        wide = jnp.promote_types(dtype, jnp.float32)
        if self.input_size is None:
            embedding = jax.random.normal(keys[0], (self.tokens, self.width), wide).astype(dtype)
        else:
            embedding = initializers.input_kernel(keys[0], self.input_size, self.width, dtype)
        layers = tuple(layer.init(k, self.width, dtype) for layer, k in zip(self.layers, keys[3:], strict=True))
        norm = None if self.final_norm is None else self.final_norm.init(keys[1], self.width, dtype)
        head = None
        if not self.tie_embeddings:
            head = (jax.random.normal(keys[2], (self.width, self.vocab_size), wide) / self.width**0.5).astype(dtype)
            head = HeadParams(head, jnp.zeros((self.vocab_size,), dtype)) if self.head_bias else head
        return ModelParams(embedding, layers, norm, head)

    def _init_without_embedding(self, key: Array, dtype) -> ModelParams:
        k_layers, k_head = jax.random.split(key)
        keys = [k_layers] if len(self.layers) == 1 else list(jax.random.split(k_layers, len(self.layers)))
        size, layers = self.tokens if self.input_size is None else self.input_size, []
        for layer, k in zip(self.layers, keys, strict=True):
            layers.append(layer.init(k, size, dtype))
            size = getattr(layer, "output_size", size)
        k_norm = jax.random.fold_in(k_head, 1)
        norm = None if self.final_norm is None else self.final_norm.init(k_norm, self.width, dtype)
        head = jax.nn.initializers.lecun_normal()(k_head, (self.width, self.vocab_size), dtype)
        head = HeadParams(head, jnp.zeros((self.vocab_size,), dtype)) if self.head_bias else head
        return ModelParams(None, tuple(layers), norm, head)

    def apply(self, params, tokens, carry, resets, time_axis, key, lengths) -> tuple[tuple, Array]:
        """``(carry, logits)``: ``tokens`` ``(T, *batch)`` integers (time on ``time_axis``), logits
        ``(T, *batch, V)`` (``(*batch, V)`` with ``readout="last"``); ``carry`` one entry per layer (None for a
        position-wise one), None: from nothing. ``key`` draws the dropout masks of every layer that has them
        (training); None turns them off. ``lengths`` ``(*batch,)``: each sequence's valid steps, read by the recurrent
        layers (a bidirectional one reads backwards from the last valid step) and the "last" readout; the blocks
        and mixers are causal and need none."""
        tokens = jnp.asarray(tokens)
        if self.input_size is not None:
            tokens = blocks.check_features("tokens", tokens, self.input_size, "features: the model's input_size")
            if tokens.ndim < 2:
                raise ValueError(f"tokens: expected features (T, *batch, {self.input_size}), got shape {tokens.shape}")
        elif not jnp.issubdtype(tokens.dtype, jnp.integer) or tokens.ndim < 1:
            raise TypeError(f"tokens: expected integers (T, *batch), got dtype {tokens.dtype} shape {tokens.shape}")
        if carry is not None and len(carry) != len(self.layers):
            raise ValueError(f"carry: expected one entry per layer ({len(self.layers)}), got {len(carry)}")
        if self.dtype is not None:
            params, tokens = _cast((params, tokens), COMPUTE_DTYPES[self.dtype])
        hidden = self._inputs(params, tokens)
        carries = []
        keys = [None] * len(self.layers) if key is None else list(jax.random.split(key, len(self.layers)))
        for i, layer in enumerate(self.layers):
            given = None if carry is None else carry[i]
            state, hidden = _apply(layer, params.layers[i], hidden, given, resets, time_axis, keys[i], lengths)
            carries.append(state)
        if self.readout == "last":
            hidden = last_step(jnp.moveaxis(hidden, time_axis, 0), lengths)
        if self.final_norm is not None:
            hidden = self.final_norm(params.final_norm, hidden)
        head = params.embedding.T if params.head is None else params.head
        if isinstance(head, HeadParams):
            logits = hidden @ head.kernel
            return tuple(carries), logits + blocks.broadcast_row(head.bias, logits.ndim)
        return tuple(carries), hidden @ head

    def _inputs(self, params: ModelParams, tokens: Array) -> Array:
        """What the first layer reads: the embedded tokens or features, or without an embedding the one-hot tokens
        (in the head's type) or the features themselves."""
        if not self.embed:
            if self.input_size is not None:
                return tokens
            head = params.head.kernel if isinstance(params.head, HeadParams) else params.head
            return jax.nn.one_hot(tokens, self.tokens, dtype=head.dtype)
        if self.input_size is None:
            hidden = jnp.take(params.embedding, tokens, axis=0)
        else:
            hidden = tokens.astype(params.embedding.dtype) @ params.embedding
        return hidden * jnp.asarray(self.embedding_scale, params.embedding.dtype)


def last_step(ys: Array, lengths: Array | None) -> Array:
    """``ys`` ``(T, *batch, ...)`` at each sequence's last valid step (``lengths`` ``(*batch,)``; None: the last
    step), ``(*batch, ...)``."""
    t = ys.shape[0]
    if lengths is None:
        return ys[t - 1]
    last = jnp.maximum(jnp.asarray(lengths) - 1, 0)
    index = last.reshape(1, *last.shape, *[1] * (ys.ndim - 1 - last.ndim))
    return jnp.take_along_axis(ys, index, axis=0)[0]


def _cast(tree: Any, dtype) -> Any:
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def generate(
    model: Model,
    params: ModelParams,
    prompt: Array,
    num_steps: int,
    key: Array | None = None,
    *,
    temperature: float = 0.0,
) -> tuple[Array, Array]:
    """Continues ``prompt`` ``(T0, *batch)`` by ``num_steps`` tokens, one at a time from the model's carry, under
    ``lax.scan`` (so under ``jit`` with ``num_steps`` static).

    ``temperature`` 0 is greedy (the most likely token); above 0, samples ``softmax(logits / temperature)`` with
    ``key``. Returns the new tokens ``(num_steps, *batch)`` and the logits each was drawn from
    ``(num_steps, *batch, V)``: equal to the model's logits on the whole sequence at those steps.
    """
    if model.input_size is not None:
        raise ValueError(
            f"model: expected a token model (input_size None) to generate from, got input_size={model.input_size}"
        )
    if model.tokens != model.vocab_size:
        raise ValueError(
            f"model: expected its outputs to be its inputs to generate (input_vocab_size None), got "
            f"input_vocab_size={model.input_vocab_size}, vocab_size={model.vocab_size}"
        )
    if model.readout != "per_step":
        raise ValueError(
            f"model: expected readout 'per_step' to generate (a token from every step), got {model.readout!r}"
        )
    num_steps = integer("num_steps", num_steps, minimum=0)
    temperature = number("temperature", temperature, low=0.0)
    if temperature > 0 and key is None:
        raise ValueError("key: expected a PRNG key to sample with temperature > 0, got None")
    carry, logits = model(params, prompt)
    keys = jax.random.split(jax.random.key(0) if key is None else key, num_steps)

    def pick(logits, key):
        if temperature == 0:
            return jnp.argmax(logits, axis=-1).astype(prompt.dtype)
        return jax.random.categorical(key, logits.astype(jnp.float32) / temperature, axis=-1).astype(prompt.dtype)

    def one(state, key):
        carry, logits = state
        token = pick(logits, key)
        carry, new = model(params, token[None], carry)
        return (carry, new[0]), (token, logits)

    _, (tokens, drawn) = jax.lax.scan(one, (carry, logits[-1]), keys)
    return tokens, drawn


__all__ = [
    "COMPUTE_DTYPES",
    "READOUTS",
    "HeadParams",
    "Model",
    "ModelParams",
    "Residual",
    "ResidualParams",
    "generate",
    "last_step",
    "sequential",
]
