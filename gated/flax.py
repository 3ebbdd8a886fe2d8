"""Flax linen modules over gated's cells and layers, and weight conversion from Flax's own cells.

The modules own parameters and nothing else: each declares its parameters
with the cell's (or layer's) own ``init`` and calls the pure functions, so a
module's output equals ``cell(params, ...)`` / ``gated.run`` exactly.

    model = gated.flax.RNN(gated.cells.lstm(64))                 # xs (B, T, D) -> ys (B, T, 64), as nn.RNN
    variables = model.init(key, xs)                              # {'params': {'layer': RecurrentParams(...)}}
    ys = model.apply(variables, xs, lengths=lengths)
    flax_rnn = nn.RNN(gated.flax.Cell(gated.cells.gru(64)))      # a gated cell inside Flax's own nn.RNN

Notation: T time, B batch (``*batch``: any number of batch axes), D input, H hidden.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gated import cells as cells_lib
from gated import layers as layers_lib

Array = jax.Array


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
      param_dtype: dtype of the parameters (and of the carry ``initialize_carry`` makes).

    The parameters are one entry, ``'cell'``, holding the cell's NamedTuple.
    """

    cell: cells_lib.Cell
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        cells_lib.check_cell(self.cell)
        super().__post_init__()

    @nn.compact
    def __call__(self, carry: Any, x: Array) -> tuple[Any, Array]:
        params = self.param("cell", lambda key: self.cell.init(key, x.shape[-1], self.param_dtype))
        return over_batch(lambda c, xi: self.cell(params, c, xi), x.ndim - 1)(carry, x)

    @nn.nowrap
    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Any:
        """Zero carry for inputs of shape ``input_shape`` ``(*batch, D)``: leaves ``(*batch, H)`` (``rng`` unused,
        as for Flax's cells with their default zero carry)."""
        del rng
        return self.cell.initial_carry(tuple(input_shape[:-1]), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


LAYERS = (layers_lib.Recurrent, layers_lib.Bidirectional, layers_lib.Stack)
_LAYER_OPTIONS = {"reverse": False, "learn_initial_carry": False, "unroll": 1, "remat": False, "impl": "auto"}


def sequence_layer(layer: Any, **options) -> Any:
    """The :mod:`gated.layers` layer for ``layer``: a cell is run by :class:`gated.Recurrent` with ``options``; a
    layer is returned as it is, and then ``options`` must be left at their defaults (set them on the layer)."""
    if isinstance(layer, cells_lib.Cell):
        return layers_lib.Recurrent(layer, **options)
    if not isinstance(layer, LAYERS):
        got = f"str {layer!r}" if isinstance(layer, str) else type(layer).__name__
        raise TypeError(
            f"layer: expected a gated cell (gated.cells.lstm(H), ...) or layer (gated.recurrent, gated.bidirectional, "
            f"gated.stack), got {got}"
        )
    changed = sorted(k for k, v in options.items() if v != _LAYER_OPTIONS[k])
    if changed:
        raise ValueError(
            f"{', '.join(changed)}: options of the layer made from a bare cell; got a {type(layer).__name__} layer, "
            f"which has its own: set them on it (e.g. gated.recurrent(cell, {changed[0]}=...))"
        )
    return layer


class RNN(nn.Module):
    """A gated cell or layer over a sequence.

    Attributes:
      layer: a cell (run by :func:`gated.recurrent` with the options below), or
        a layer: :func:`gated.recurrent`, :func:`gated.bidirectional`,
        :func:`gated.stack`.
      reverse, learn_initial_carry, unroll, remat, impl: options of the layer made
        from a bare cell (see :class:`gated.Recurrent`); with a layer they must
        stay at their defaults (set them on the layer itself): a changed one is
        refused.
      time_axis: time axis of the inputs and outputs. The default, -2 (the axis
        before the features), is Flax's ``nn.RNN`` batch-major layout
        ``(*batch, T, D)``; 0 is ``gated.run``'s time-major ``(T, *batch, D)``.
      return_carry: return ``(carry, ys)`` instead of ``ys``.
      param_dtype: dtype of the parameters.

    The parameters are one entry, ``'layer'``, holding the layer's params pytree.
    """

    layer: Any
    reverse: bool = False
    learn_initial_carry: bool = False
    unroll: int = 1
    remat: bool = False
    impl: str = "auto"
    time_axis: int = -2
    return_carry: bool = False
    param_dtype: Any = jnp.float32

    @nn.nowrap
    def sequence_layer(self):
        """The :mod:`gated.layers` layer this module runs."""
        return sequence_layer(self.layer, **{k: getattr(self, k) for k in _LAYER_OPTIONS})

    @nn.compact
    def __call__(self, xs: Array, *, initial_carry: Any = None, lengths: Array | None = None):
        layer = self.sequence_layer()
        params = self.param("layer", lambda key: layer.init(key, jnp.shape(xs)[-1], self.param_dtype))
        carry, ys = layer(params, xs, carry=initial_carry, lengths=lengths, time_axis=self.time_axis)
        return (carry, ys) if self.return_carry else ys


# Flax's own cells: parameter names per gate, and the gated cell each one equals.
_LINEN_NAMES = {
    "lstm": ("i", "f", "g", "o"),  # LSTMCell / OptimizedLSTMCell: i{gate} kernel, h{gate} kernel + bias
    "gru": ("r", "z", "n"),  # GRUCell: i{gate} kernel + bias, h{gate} kernel, hn bias
    "rnn": None,  # SimpleCell (residual=False): 'i' kernel + bias, 'h' kernel
}


def _check_linen_compatible(cell: cells_lib.Cell) -> None:
    cells_lib.check_cell(cell)
    plain_lstm = cells_lib.LSTM(cell.hidden_size)
    if isinstance(cell, cells_lib.LSTM) and (cell.gates, cell.peepholes) != (plain_lstm.gates, False):
        raise ValueError(
            f"cell: Flax's LSTMCell has no peepholes, coupled gates or missing forget gate, got {cell}; "
            "expected gated.cells.lstm(H) with peepholes=False, coupled=False, forget_gate=True"
        )
    if isinstance(cell, cells_lib.GRU) and (cell.reset, cell.update) != ("after", "keep"):
        raise ValueError(
            f"cell: Flax's GRUCell is reset='after', update='keep', got reset={cell.reset!r}, update={cell.update!r}"
        )


def from_linen_params(flax_params: Any, cell: cells_lib.Cell) -> Any:
    """Converts the parameters of a Flax linen cell to gated parameters for ``cell``.

    ``flax.linen.LSTMCell`` and ``OptimizedLSTMCell`` map to ``gated.cells.lstm(H)``,
    ``GRUCell`` to ``gated.cells.gru(H)`` (reset "after", update "keep"),
    ``SimpleCell`` to ``gated.cells.rnn(H, activation=...)`` (the same activation).
    The values are copied exactly; only the layout changes (per-gate Dense
    layers to fused kernels). Note Flax's LSTM carry is ``(c, h)``, gated's
    ``LSTMState(h, c)``.

    Args:
      flax_params: the cell's parameter dict, e.g. ``variables['params']`` of a
        bare cell or ``variables['params']['cell']`` of ``nn.RNN``.
      cell: the gated cell to convert to.
    """
    _check_linen_compatible(cell)
    p = flax_params
    try:
        if isinstance(cell, cells_lib.RNN):
            params = cells_lib.RNNParams(p["i"]["kernel"], p["h"]["kernel"], p["i"]["bias"])
        else:
            names = _LINEN_NAMES[cell.name]
            w_x = jnp.concatenate([p[f"i{g}"]["kernel"] for g in names], axis=1)
            w_h = jnp.concatenate([p[f"h{g}"]["kernel"] for g in names], axis=1)
            if isinstance(cell, cells_lib.LSTM):
                params = cells_lib.LSTMParams(w_x, w_h, jnp.concatenate([p[f"h{g}"]["bias"] for g in names]))
            else:
                bias = jnp.concatenate([p[f"i{g}"]["bias"] for g in names])
                params = cells_lib.GRUParams(w_x, w_h, bias, p["hn"]["bias"])
        return cells_lib.check_params(cell, params, name="flax_params (converted)")
    except KeyError as err:
        raise ValueError(
            f"flax_params: expected the parameters of the Flax cell matching {cell.name!r}, missing key {err}; "
            f"got keys {sorted(p)}"
        ) from None


def to_linen_params(params: Any, cell: cells_lib.Cell) -> dict:
    """Inverse of :func:`from_linen_params`: gated parameters to a Flax linen cell's parameter dict."""
    _check_linen_compatible(cell)
    cells_lib.check_params(cell, params)
    if isinstance(cell, cells_lib.RNN):
        return {"i": {"kernel": params.input_kernel, "bias": params.bias}, "h": {"kernel": params.recurrent_kernel}}
    out = {}
    for g in _LINEN_NAMES[cell.name]:
        w_x, w_h, b = (
            cell.gate(params.input_kernel, g),
            cell.gate(params.recurrent_kernel, g),
            cell.gate(params.bias, g),
        )
        if isinstance(cell, cells_lib.LSTM):
            out[f"i{g}"], out[f"h{g}"] = {"kernel": w_x}, {"kernel": w_h, "bias": b}
        else:
            out[f"i{g}"], out[f"h{g}"] = {"kernel": w_x, "bias": b}, {"kernel": w_h}
    if isinstance(cell, cells_lib.GRU):
        out["hn"]["bias"] = params.candidate_bias
    return out
