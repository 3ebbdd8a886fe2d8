"""Sequence layers: a cell over time, bidirectional pairs and stacks.

A layer is a frozen dataclass with the same surface as a cell, one level up:

* ``params = layer.init(key, input_size, dtype=jnp.float32)``;
* ``carry, ys = layer(params, xs, carry=None, *, resets=None, time_axis=0, key=None, lengths=None)``, the call of
  every sequence layer (:class:`gated.blocks.Sequential`), with ``xs`` ``(T, *batch, D)`` and ``ys``
  ``(T, *batch, layer.output_size)``;
* ``layer.output_size``, the size of the last axis of ``ys``.

Notation: T time, B batch (any number of axes, ``*batch``), D input, H hidden.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated.blocks import Sequential
from gated.cells import Cell, check_cell, is_cell
from gated.options import Keywords, boolean, choice, integer
from gated.scan import IMPLS, run

Array = jax.Array


class RecurrentParams(NamedTuple):
    """Parameters of a :class:`Recurrent` layer: the cell's, and the learned
    initial carry (leaves ``(H,)``) or None."""

    cell: Any
    initial_carry: Any = None


class BidirectionalState(NamedTuple):
    """Carry (or parameters) of a :class:`Bidirectional` layer, one per direction."""

    forward: Any
    backward: Any


@dataclasses.dataclass(frozen=True)
class Recurrent(Keywords, Sequential):
    """A cell run over time by :func:`gated.run`.

    Attributes:
      cell: the cell.
      reverse: read the sequence backwards (see :func:`gated.run`).
      learn_initial_carry: the initial carry is a parameter (initialised to
        zeros, one ``(H,)`` per carry leaf, broadcast over the batch) instead
        of zeros; an explicit ``carry`` argument still overrides it.
      unroll: passed to ``jax.lax.scan``.
      remat: recompute in the backward pass instead of storing (see :func:`gated.run`).
      impl: the backend of :func:`gated.run`: "auto" (its table :data:`gated.backends.AUTO`, per platform and
        cell), "fused", "reference", "associative", "chunked", "sequential", "chunkwise", "recomputed" or the
        opt-in "native".
      chunk: the chunk length of ``impl="chunked"``, ``"chunkwise"`` and ``"recomputed"``.

    These are the layer options, in this one place: :class:`Bidirectional`'s and :class:`Stack`'s layers and the
    Flax linen and NNX modules take them by these names (:data:`LAYER_OPTIONS`). ``resets`` is an
    argument of every layer's call, as ``lengths`` is.
    """

    cell: Cell
    reverse: bool = False
    learn_initial_carry: bool = False
    unroll: int = 1
    remat: bool = False
    impl: str = "auto"
    chunk: int = 64

    # As a mixer (gated.mixers.MIXERS["cell"]): the cell's hidden size is the layer's output width.
    cell_sets_width: ClassVar[bool] = True
    params_type: ClassVar[type] = RecurrentParams
    # In a gated.models.Model: called with the sequences' lengths.
    reads_lengths: ClassVar[bool] = True

    def __post_init__(self):
        check_cell(self.cell)
        for name in ("reverse", "learn_initial_carry", "remat"):
            object.__setattr__(self, name, boolean(name, getattr(self, name)))
        object.__setattr__(self, "unroll", integer("unroll", self.unroll))
        object.__setattr__(self, "chunk", integer("chunk", self.chunk))
        choice("impl", self.impl, IMPLS)

    @property
    def output_size(self) -> int:
        return self.cell.output_size

    @property
    def stochastic(self) -> bool:
        """Whether the call takes a ``key`` (a :class:`gated.cells.RecurrentDropout` cell's masks)."""
        return self.cell.stochastic

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> RecurrentParams:
        initial = self.cell.initial_carry((), dtype) if self.learn_initial_carry else None
        return RecurrentParams(self.cell.init(key, input_size, dtype), initial)

    def apply(self, params, xs, carry, resets, time_axis, key, lengths) -> tuple[Any, Array]:
        """``(carry, ys)`` by :func:`gated.run`; ``key`` draws the masks of a stochastic cell (None: evaluation)."""
        if self.cell.stochastic:
            xs = self.cell.append_masks(xs, key, time_axis)
        if carry is None and self.learn_initial_carry:
            if params.initial_carry is None:
                raise ValueError("params.initial_carry: expected the learned initial carry, got None")
            xs = jnp.asarray(xs)
            batch_shape = tuple(s for i, s in enumerate(xs.shape[:-1]) if i != time_axis % xs.ndim)
            carry = jax.tree.map(lambda a: jnp.broadcast_to(a, (*batch_shape, *a.shape)), params.initial_carry)
        return run(
            self.cell,
            params.cell,
            xs,
            carry=carry,
            lengths=lengths,
            reverse=self.reverse,
            time_axis=time_axis,
            unroll=self.unroll,
            remat=self.remat,
            impl=self.impl,
            resets=resets,
            chunk=self.chunk,
        )


# The layer options and their defaults, from Recurrent's fields: what Recurrent, Bidirectional's layers and the
# Flax linen and NNX modules take.
LAYER_OPTIONS = {f.name: f.default for f in dataclasses.fields(Recurrent) if f.name != "cell"}


MERGES = ("concat", "sum")


@dataclasses.dataclass(frozen=True)
class Bidirectional(Keywords, Sequential):
    """A forward and a backward layer over the same sequence, outputs merged.

    The backward layer reads each sequence from its own last valid step
    (``lengths``), and its outputs stay aligned with the inputs, so that
    ``ys[t]`` merges the forward state after ``x_0..x_t`` and the backward
    state after ``x_{L-1}..x_t``.

    Attributes:
      forward: a :class:`Recurrent` layer reading forwards, or a cell (run with the default layer options).
      backward: a :class:`Recurrent` layer reading backwards (``reverse=True``); a cell, run with the forward
        layer's options; None (default): the forward layer's cell and options, reversed (its own parameters).
      merge: "concat" (output size H_f + H_b) or "sum" (needs H_f == H_b).
    """

    forward: Recurrent
    backward: Recurrent | None = None
    merge: str = "concat"

    params_type: ClassVar[type] = BidirectionalState
    reads_lengths: ClassVar[bool] = True  # in a gated.models.Model: called with the sequences' lengths

    def __post_init__(self):
        for name in ("forward", "backward"):
            layer = getattr(self, name)
            if not (is_cell(layer) or isinstance(layer, Recurrent) or (name == "backward" and layer is None)):
                got = f"str {layer!r}" if isinstance(layer, str) else type(layer).__name__
                raise TypeError(f"{name}: expected a cell or a gated.Recurrent layer, got {got}")
        forward = Recurrent(self.forward) if is_cell(self.forward) else self.forward
        backward = forward if self.backward is None else self.backward
        if is_cell(backward):
            backward = dataclasses.replace(forward, cell=backward)
        if self.backward is None or is_cell(self.backward):
            backward = dataclasses.replace(backward, reverse=True)
        object.__setattr__(self, "forward", forward)
        object.__setattr__(self, "backward", backward)
        if self.merge not in MERGES:
            raise ValueError(f"merge: expected one of {MERGES}, got {self.merge!r}")
        if self.forward.reverse or not self.backward.reverse:
            raise ValueError("bidirectional: expected forward.reverse=False and backward.reverse=True")
        if self.merge == "sum" and self.forward.output_size != self.backward.output_size:
            raise ValueError(
                f"merge='sum': expected equal hidden sizes, got {self.forward.output_size} (forward) "
                f"and {self.backward.output_size} (backward)"
            )

    @property
    def stochastic(self) -> bool:
        """Whether the call takes a ``key``: either layer's cell is stochastic."""
        return self.forward.stochastic or self.backward.stochastic

    @property
    def output_size(self) -> int:
        f, b = self.forward.output_size, self.backward.output_size
        return f + b if self.merge == "concat" else f

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> BidirectionalState:
        k_f, k_b = jax.random.split(key)
        return BidirectionalState(self.forward.init(k_f, input_size, dtype), self.backward.init(k_b, input_size, dtype))

    def apply(self, params, xs, carry, resets, time_axis, key, lengths) -> tuple[BidirectionalState, Array]:
        carry = BidirectionalState(None, None) if carry is None else carry
        k_f, k_b = (None, None) if key is None else jax.random.split(key)
        along = dict(lengths=lengths, time_axis=time_axis, resets=resets)
        c_f, y_f = self.forward(params.forward, xs, carry.forward, key=k_f, **along)
        c_b, y_b = self.backward(params.backward, xs, carry.backward, key=k_b, **along)
        ys = jnp.concatenate([y_f, y_b], axis=-1) if self.merge == "concat" else y_f + y_b
        return BidirectionalState(c_f, c_b), ys


Layer = Recurrent | Bidirectional


@dataclasses.dataclass(frozen=True)
class Stack(Keywords, Sequential):
    """Layers applied one after the other, each reading the previous one's outputs.

    Attributes:
      layers: the layers (:class:`Recurrent`, :class:`Bidirectional` or :class:`Stack`); a cell among them is run
        as a :class:`Recurrent` layer with the default options.
      residual: add each layer's input to its output, for every layer but the
        first (whose input is the raw sequence): ``y_l = layer_l(y_{l-1}) + y_{l-1}``.
        Needs every layer after the first to keep the size of its input.
    """

    layers: tuple[Layer | Stack, ...]
    residual: bool = False

    params_type: ClassVar[type] = tuple
    reads_lengths: ClassVar[bool] = True  # in a gated.models.Model: called with the sequences' lengths

    def __post_init__(self):
        if not self.layers:
            raise ValueError("layers: expected at least one layer, got none")
        object.__setattr__(self, "layers", tuple(Recurrent(x) if is_cell(x) else x for x in self.layers))
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Recurrent | Bidirectional | Stack):
                got = f"str {layer!r}" if isinstance(layer, str) else type(layer).__name__
                raise TypeError(
                    f"layers[{i}]: expected a cell or a layer (gated.Recurrent, gated.Bidirectional, "
                    f"gated.Stack), got {got}"
                )
        object.__setattr__(self, "residual", boolean("residual", self.residual))
        if self.residual:
            for i in range(1, len(self.layers)):
                before, after = self.layers[i - 1].output_size, self.layers[i].output_size
                if before != after:
                    raise ValueError(
                        f"residual=True: layer {i} maps size {before} to {after}; residual connections "
                        "need equal sizes between layers"
                    )

    @property
    def stochastic(self) -> bool:
        """Whether the call takes a ``key``: any layer is stochastic."""
        return any(layer.stochastic for layer in self.layers)

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> tuple[Any, ...]:
        keys = jax.random.split(key, len(self.layers))
        params, size = [], input_size
        for layer, k in zip(self.layers, keys, strict=True):
            params.append(layer.init(k, size, dtype))
            size = layer.output_size
        return tuple(params)

    def apply(self, params, xs, carry, resets, time_axis, key, lengths) -> tuple[tuple[Any, ...], Array]:
        if len(params) != len(self.layers):
            raise ValueError(f"params: expected one entry per layer ({len(self.layers)}), got {len(params)}")
        carry = (None,) * len(self.layers) if carry is None else tuple(carry)
        if len(carry) != len(self.layers):
            raise ValueError(f"carry: expected one entry per layer ({len(self.layers)}), got {len(carry)}")
        keys = [None] * len(self.layers) if key is None else list(jax.random.split(key, len(self.layers)))
        carries, ys = [], xs
        for i, (layer, p, c, k) in enumerate(zip(self.layers, params, carry, keys, strict=True)):
            c, out = layer(p, ys, c, lengths=lengths, time_axis=time_axis, resets=resets, key=k)
            ys = out + ys if self.residual and i > 0 else out
            carries.append(c)
        return tuple(carries), ys
