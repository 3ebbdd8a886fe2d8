"""Flax linen modules over gated's cells and layers, and weight conversion from Flax's own cells.

The modules own parameters and nothing else: each declares its parameters
with the cell's (or layer's) own ``init`` and calls the pure functions, so a
module's output equals ``cell(params, ...)`` / ``gated.run`` exactly.

    model = gated.flax.RNN(gated.cells.LSTM(64))                 # xs (B, T, D) -> ys (B, T, 64), as nn.RNN
    variables = model.init(key, xs)                              # {'params': {'layer': RecurrentParams(...)}}
    ys = model.apply(variables, xs, lengths=lengths)
    flax_rnn = nn.RNN(gated.flax.Cell(gated.cells.GRU(64)))      # a gated cell inside Flax's own nn.RNN

Notation: T time, B batch (``*batch``: any number of batch axes), D input, H hidden.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gated import cells as cells_lib
from gated import layers as layers_lib
from gated import mixers as mixers_lib

Array = jax.Array


def cast(tree: Any, dtype: Any) -> Any:
    """The floating-point leaves of ``tree`` in ``dtype`` (None: unchanged): a module's compute ``dtype``, beside its
    ``param_dtype``, as Flax's modules have (bfloat16 computation from float32 parameters)."""
    if dtype is None:
        return tree
    floating = lambda a: jnp.issubdtype(jnp.result_type(a), jnp.inexact)
    return jax.tree.map(lambda a: jnp.asarray(a, dtype) if floating(a) else a, tree)


def over_batch(fn, num_batch_axes: int):
    """``fn`` vmapped over ``num_batch_axes`` leading axes of every argument."""
    for _ in range(num_batch_axes):
        fn = jax.vmap(fn)
    return fn


class Cell(nn.RNNCellBase):
    """One time step of a gated cell, for inputs ``(*batch, D)``: a Flax ``nn.RNNCellBase``, so it also runs
    inside Flax's own ``nn.RNN``.

    Attributes:
      cell: a :mod:`gated.cells` cell.
      param_dtype: dtype of the parameters.
      dtype: dtype of the computation (None: the parameters'): parameters, inputs and carry are cast to it, and
        ``initialize_carry`` makes a carry of it.

    The parameters are one entry, ``'cell'``, holding the cell's NamedTuple.
    """

    cell: cells_lib.Cell
    param_dtype: Any = jnp.float32
    dtype: Any = None

    def __post_init__(self):
        cells_lib.check_cell(self.cell)
        super().__post_init__()

    @nn.compact
    def __call__(self, carry: Any, x: Array) -> tuple[Any, Array]:
        params = self.param("cell", lambda key: self.cell.init(key, x.shape[-1], self.param_dtype))
        params, carry, x = cast((params, carry, x), self.dtype)
        return over_batch(lambda c, xi: self.cell(params, c, xi), x.ndim - 1)(carry, x)

    @nn.nowrap
    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Any:
        """Zero carry for inputs of shape ``input_shape`` ``(*batch, D)``: leaves ``(*batch, H)`` (``rng`` unused,
        as for Flax's cells with their default zero carry)."""
        del rng
        return self.cell.initial_carry(tuple(input_shape[:-1]), self.dtype or self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


LAYERS = (layers_lib.Recurrent, layers_lib.Bidirectional, layers_lib.Stack)


def sequence_layer(layer: Any, **options) -> Any:
    """The :mod:`gated.layers` layer for ``layer``: a cell is run by :class:`gated.Recurrent` with ``options``; a
    layer is returned as it is, and then ``options`` must be left at their defaults (set them on the layer)."""
    if cells_lib.is_cell(layer):
        return layers_lib.Recurrent(layer, **options)
    if not isinstance(layer, LAYERS):
        got = f"str {layer!r}" if isinstance(layer, str) else type(layer).__name__
        raise TypeError(
            f"layer: expected a gated cell (gated.cells.LSTM(H), ...) or layer (gated.Recurrent, gated.Bidirectional, "
            f"gated.Stack), got {got}"
        )
    changed = sorted(k for k, v in options.items() if v != layers_lib.LAYER_OPTIONS[k])
    if changed:
        raise ValueError(
            f"{', '.join(changed)}: options of the layer made from a bare cell; got a {type(layer).__name__} layer, "
            f"which has its own: set them on it (e.g. gated.Recurrent(cell, {changed[0]}=...))"
        )
    return layer


class RNN(nn.Module):
    """A gated cell or layer over a sequence.

    Attributes:
      layer: a cell (run by :class:`gated.Recurrent` with the options below), or
        a layer: :class:`gated.Recurrent`, :class:`gated.Bidirectional`,
        :class:`gated.Stack`.
      reverse, learn_initial_carry, unroll, remat, impl, chunk: options of the layer made
        from a bare cell (:data:`gated.layers.LAYER_OPTIONS`, see :class:`gated.Recurrent`); with a layer they must
        stay at their defaults (set them on the layer itself): a changed one is
        refused.
      time_axis: time axis of the inputs and outputs. The default, -2 (the axis
        before the features), is Flax's ``nn.RNN`` batch-major layout
        ``(*batch, T, D)``; 0 is ``gated.run``'s time-major ``(T, *batch, D)``.
      return_carry: return ``(carry, ys)`` instead of ``ys``.
      param_dtype: dtype of the parameters.
      dtype: dtype of the computation (None: the parameters'); parameters, inputs and carry are cast to it.

    The parameters are one entry, ``'layer'``, holding the layer's params pytree.
    """

    layer: Any
    # The layer options of a bare cell with their defaults, from gated.layers.LAYER_OPTIONS (Recurrent's fields).
    for _name, _default in layers_lib.LAYER_OPTIONS.items():
        __annotations__[_name] = type(_default).__name__
        locals()[_name] = _default
    del _name, _default
    time_axis: int = -2
    return_carry: bool = False
    param_dtype: Any = jnp.float32
    dtype: Any = None

    @nn.nowrap
    def sequence_layer(self):
        """The :mod:`gated.layers` layer this module runs."""
        return sequence_layer(self.layer, **{k: getattr(self, k) for k in layers_lib.LAYER_OPTIONS})

    @nn.compact
    def __call__(
        self, xs: Array, *, initial_carry: Any = None, lengths: Array | None = None, resets: Array | None = None
    ):
        """``ys`` (or ``(carry, ys)``) over ``xs``; ``lengths`` and ``resets`` as in :func:`gated.run`, with
        ``resets`` shaped like ``xs`` without its feature axis."""
        layer = self.sequence_layer()
        params = self.param("layer", lambda key: layer.init(key, jnp.shape(xs)[-1], self.param_dtype))
        params, xs, initial_carry = cast((params, xs, initial_carry), self.dtype)
        carry, ys = layer(params, xs, carry=initial_carry, lengths=lengths, time_axis=self.time_axis, resets=resets)
        return (carry, ys) if self.return_carry else ys


class Block(nn.Module):
    """A :mod:`gated.blocks` block (a norm, an MLP, a gated MLP, a highway layer, the causal convolution) or a
    :mod:`gated.mixers` mixer: its parameters from its own ``init``, one entry ``'block'``, and its call, so that
    ``module.apply(variables, x, ...)`` equals ``block(variables['params']['block'], x, ...)``.

    Attributes:
      block: the block.
      param_dtype: dtype of the parameters.
      dtype: dtype of the computation (None: the parameters'); parameters, inputs and carry are cast to it.
    """

    block: Any
    param_dtype: Any = jnp.float32
    dtype: Any = None

    def __post_init__(self):
        mixers_lib.check_block(self.block)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *args, **kwargs):
        """The block's call on ``x`` (the convolution's ``carry`` and ``time_axis`` passed on)."""
        params = self.param("block", lambda key: self.block.init(key, jnp.shape(x)[-1], self.param_dtype))
        params, x, args = cast((params, x, args), self.dtype)
        return self.block(params, x, *args, **kwargs)


class _Linen(NamedTuple):
    """How a Flax linen cell lays out the parameters of a gated cell."""

    flax_cell: str  # the Flax class
    gates: tuple[str, ...] | None  # one Dense per gate: i{gate} and h{gate}; None: one 'i' and one 'h' (SimpleCell)
    bias_on: str  # which of the two Dense layers has the bias: "i" or "h"
    required: dict  # the gated cell's options that Flax's cell has fixed
    candidate_bias: str | None = None  # the Dense holding the GRU's separate candidate bias ("hn")


# Flax's own cells, by the class of the gated cell each one equals.
_LINEN = {
    cells_lib.LSTM: _Linen(
        "LSTMCell",
        ("i", "f", "g", "o"),
        "h",
        {"peepholes": False, "coupled": False, "forget_gate": True, "layer_norm": False, "proj_size": None},
    ),
    cells_lib.GRU: _Linen("GRUCell", ("r", "z", "n"), "i", {"reset": "after", "update": "keep"}, candidate_bias="hn"),
    cells_lib.RNN: _Linen("SimpleCell", None, "i", {}),  # SimpleCell (residual=False), with the same activation
}


def _linen_layout(cell: cells_lib.Cell) -> _Linen:
    cells_lib.check_cell(cell)
    if type(cell) not in _LINEN:
        expected = [c.name for c in _LINEN]
        raise ValueError(f"cell: Flax linen has no cell equal to a {cell.name} cell; expected one of {expected}")
    layout = _LINEN[type(cell)]
    if any(getattr(cell, k) != v for k, v in layout.required.items()):
        spelled = lambda values: ", ".join(f"{k}={v!r}" for k, v in values.items())
        got = {k: getattr(cell, k) for k in layout.required}
        raise ValueError(f"cell: Flax's {layout.flax_cell} is {spelled(layout.required)}, got {spelled(got)}")
    return layout


def from_linen_params(flax_params: Any, cell: cells_lib.Cell) -> Any:
    """Converts the parameters of a Flax linen cell to gated parameters for ``cell``.

    ``flax.linen.LSTMCell`` and ``OptimizedLSTMCell`` map to ``gated.cells.LSTM(H)``,
    ``GRUCell`` to ``gated.cells.GRU(H)`` (reset "after", update "keep"),
    ``SimpleCell`` to ``gated.cells.RNN(H, activation=...)`` (the same activation).
    The values are copied exactly; only the layout changes (per-gate Dense
    layers to fused kernels). Note Flax's LSTM carry is ``(c, h)``, gated's
    ``LSTMState(h, c)``.

    Args:
      flax_params: the cell's parameter dict, e.g. ``variables['params']`` of a
        bare cell or ``variables['params']['cell']`` of ``nn.RNN``.
      cell: the gated cell to convert to.
    """
    layout = _linen_layout(cell)
    p = flax_params
    try:
        if layout.gates is None:
            w_x, w_h, bias = p["i"]["kernel"], p["h"]["kernel"], p[layout.bias_on]["bias"]
        else:
            w_x = jnp.concatenate([p[f"i{g}"]["kernel"] for g in layout.gates], axis=1)
            w_h = jnp.concatenate([p[f"h{g}"]["kernel"] for g in layout.gates], axis=1)
            bias = jnp.concatenate([p[f"{layout.bias_on}{g}"]["bias"] for g in layout.gates])
        extra = () if layout.candidate_bias is None else (p[layout.candidate_bias]["bias"],)
        params = cell.params_type(w_x, w_h, bias, *extra)
        return cells_lib.check_params(cell, params, name="flax_params (converted)")
    except KeyError as err:
        raise ValueError(
            f"flax_params: expected the parameters of the Flax cell matching {cell.name!r}, missing key {err}; "
            f"got keys {sorted(p)}"
        ) from None


def to_linen_params(params: Any, cell: cells_lib.Cell) -> dict:
    """Inverse of :func:`from_linen_params`: gated parameters to a Flax linen cell's parameter dict."""
    layout = _linen_layout(cell)
    cells_lib.check_params(cell, params)
    if layout.gates is None:
        return {"i": {"kernel": params.input_kernel, "bias": params.bias}, "h": {"kernel": params.recurrent_kernel}}
    out = {}
    for g in layout.gates:
        out[f"i{g}"] = {"kernel": cell.gate(params.input_kernel, g)}
        out[f"h{g}"] = {"kernel": cell.gate(params.recurrent_kernel, g)}
        out[f"{layout.bias_on}{g}"]["bias"] = cell.gate(params.bias, g)
    if layout.candidate_bias is not None:
        out[layout.candidate_bias]["bias"] = params.candidate_bias
    return out
