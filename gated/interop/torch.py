"""PyTorch interop: ``torch.nn.LSTM``, ``GRU`` and ``RNN`` weights to gated layers and back.

    layer, params = gated.interop.torch.from_torch(torch_lstm)    # any num_layers, bidirectional, bias
    carry, ys = layer(params, xs)                                 # xs (T, B, D) as torch's batch_first=False
    h_n, c_n = gated.interop.torch.final_state(carry, config_of(torch_lstm))

The mapping (PyTorch's gate orders are gated's: LSTM i, f, g, o; GRU r, z, n):

* kernels are transposed: ``input_kernel = weight_ih.T``, ``recurrent_kernel = weight_hh.T``;
* LSTM and RNN: the two biases are folded, ``bias = bias_ih + bias_hh``;
* GRU (``reset="after", update="keep"``): ``bias = [b_ir + b_hr, b_iz + b_hz, b_in]`` and
  ``candidate_bias = b_hn``, which PyTorch applies inside the reset product.

Back to PyTorch, ``bias_ih`` takes the folded bias and ``bias_hh`` zeros (``b_hn``
for a GRU), so gated -> torch -> gated is exact. An LSTM with ``proj_size``
(projections) is ``gated.cells.LSTM(H, proj_size=P)``, ``weight_hr`` its
``projection`` transposed.

PyTorch itself is needed only by :func:`from_torch`, :func:`config_of`,
:func:`torch_module` and :func:`to_torch`; the state-dict functions take NumPy
or JAX arrays too.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from gated import cells as cells_lib
from gated import layers as layers_lib

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")


class TorchConfig(NamedTuple):
    """The shape of a PyTorch recurrent module; ``mode`` as PyTorch's ``module.mode``."""

    mode: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    bias: bool = True
    proj_size: int = 0  # an LSTM's projected hidden state (0: none)

    @property
    def output_size(self) -> int:
        """The size of h: ``proj_size`` where set, else ``hidden_size``."""
        return self.proj_size or self.hidden_size


def config_of(module: Any) -> TorchConfig:
    """Reads the :class:`TorchConfig` of a ``torch.nn.LSTM``, ``GRU`` or ``RNN``."""
    mode = getattr(module, "mode", None)
    if mode not in MODES:
        raise TypeError(f"module: expected torch.nn.LSTM, GRU or RNN (mode in {MODES}), got {type(module).__name__}")
    return TorchConfig(
        mode,
        module.input_size,
        module.hidden_size,
        module.num_layers,
        bool(module.bidirectional),
        bool(module.bias),
        int(getattr(module, "proj_size", 0)),
    )


def cell_for(config: TorchConfig) -> cells_lib.Cell:
    """The gated cell that computes what PyTorch's ``config.mode`` computes."""
    if config.mode not in MODES:
        raise ValueError(f"config.mode: expected one of {MODES}, got {config.mode!r}")
    h = config.hidden_size
    if config.proj_size and config.mode != "LSTM":
        raise ValueError(f"config.proj_size: only an LSTM has a projection, got {config.proj_size} for {config.mode}")
    if config.mode == "LSTM":
        return cells_lib.LSTM(h, proj_size=config.proj_size or None)
    if config.mode == "GRU":
        return cells_lib.GRU(h, reset="after", update="keep")
    return cells_lib.RNN(h, activation="tanh" if config.mode == "RNN_TANH" else "relu")


def layer_for(config: TorchConfig) -> layers_lib.Stack:
    """The gated layer with PyTorch's structure: a stack of ``num_layers`` (bidirectional) layers."""
    cell = cell_for(config)
    layer = layers_lib.Bidirectional(cell) if config.bidirectional else layers_lib.Recurrent(cell)
    return layers_lib.Stack((layer,) * config.num_layers)


def _suffixes(config: TorchConfig, layer: int) -> list[str]:
    return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if config.bidirectional else [])


def _array(value: Any) -> Any:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return jnp.asarray(value)


def _cell_params(cell: cells_lib.Cell, state_dict: dict, suffix: str, config: TorchConfig, input_size: int):
    h, g = config.hidden_size, cell.num_gates
    expected = {f"weight_ih{suffix}": (g * h, input_size), f"weight_hh{suffix}": (g * h, config.output_size)}
    if config.proj_size:
        expected[f"weight_hr{suffix}"] = (config.proj_size, h)
    if config.bias:
        expected.update({f"bias_ih{suffix}": (g * h,), f"bias_hh{suffix}": (g * h,)})
    arrays = {}
    for name, shape in expected.items():
        if name not in state_dict:
            raise ValueError(f"state_dict: missing {name!r} for {config}; got keys {sorted(state_dict)}")
        arrays[name] = _array(state_dict[name])
        if arrays[name].shape != shape:
            raise ValueError(f"state_dict[{name!r}]: expected shape {shape}, got {arrays[name].shape}")
    w_ih, w_hh = arrays[f"weight_ih{suffix}"], arrays[f"weight_hh{suffix}"]
    if config.bias:
        b_ih, b_hh = arrays[f"bias_ih{suffix}"], arrays[f"bias_hh{suffix}"]
    else:
        b_ih = b_hh = jnp.zeros((g * h,), w_ih.dtype)
    if _separate_candidate_bias(cell):  # the GRU: the last gate's recurrent bias stays apart, inside the reset
        last = (g - 1) * h
        bias = jnp.concatenate([b_ih[:last] + b_hh[:last], b_ih[last:]])
        return cell.params_type(w_ih.T, w_hh.T, bias, b_hh[last:])
    if config.proj_size:
        return cell.params_type(w_ih.T, w_hh.T, b_ih + b_hh, projection=arrays[f"weight_hr{suffix}"].T)
    return cell.params_type(w_ih.T, w_hh.T, b_ih + b_hh)


def _separate_candidate_bias(cell: cells_lib.Cell) -> bool:
    return "candidate_bias" in cell.params_type._fields


def from_state_dict(state_dict: dict, config: TorchConfig) -> tuple[layers_lib.Stack, tuple]:
    """Converts a PyTorch ``state_dict`` (tensors or arrays) to ``(layer, params)``.

    Differentiable: the arrays may be JAX tracers, so ``jax.grad`` through this
    function gives gradients with respect to PyTorch's named weights.
    """
    cell, layer = cell_for(config), layer_for(config)
    params, size = [], config.input_size
    for k in range(config.num_layers):
        per_dir = [
            layers_lib.RecurrentParams(_cell_params(cell, state_dict, s, config, size)) for s in _suffixes(config, k)
        ]
        params.append(layers_lib.BidirectionalState(*per_dir) if config.bidirectional else per_dir[0])
        size = config.output_size * len(per_dir)
    return layer, tuple(params)


def to_state_dict(params: tuple, config: TorchConfig) -> dict[str, np.ndarray]:
    """Inverse of :func:`from_state_dict`: gated parameters to a PyTorch ``state_dict`` of NumPy arrays."""
    cell = cell_for(config)
    if len(params) != config.num_layers:
        raise ValueError(f"params: expected {config.num_layers} layers for {config}, got {len(params)}")
    out = {}
    for k, layer_params in enumerate(params):
        per_dir = list(layer_params) if config.bidirectional else [layer_params]
        size = config.input_size if k == 0 else config.output_size * len(per_dir)
        paths = (
            [f"params[{k}].{d}.cell" for d in layers_lib.BidirectionalState._fields]
            if config.bidirectional
            else [f"params[{k}].cell"]
        )
        for suffix, p, path in zip(_suffixes(config, k), per_dir, paths, strict=True):
            p = cells_lib.check_params(cell, p.cell, size, name=path)
            out[f"weight_ih{suffix}"] = np.asarray(p.input_kernel).T
            out[f"weight_hh{suffix}"] = np.asarray(p.recurrent_kernel).T
            if config.proj_size:
                out[f"weight_hr{suffix}"] = np.asarray(p.projection).T
            bias = np.asarray(p.bias)
            b_hh = np.zeros_like(bias)
            if _separate_candidate_bias(cell):
                b_hh[(cell.num_gates - 1) * config.hidden_size :] = np.asarray(p.candidate_bias)
            if config.bias:
                out[f"bias_ih{suffix}"], out[f"bias_hh{suffix}"] = bias, b_hh
            elif np.any(bias) or np.any(b_hh):
                raise ValueError(f"params: layer {k} has non-zero biases, which a bias=False PyTorch module drops")
    return out


def from_torch(module: Any) -> tuple[layers_lib.Stack, tuple]:
    """``(layer, params)`` computing what the PyTorch module computes (in eval mode: no dropout)."""
    return from_state_dict(module.state_dict(), config_of(module))


def torch_module(config: TorchConfig) -> Any:
    """A new, randomly initialised ``torch.nn.LSTM``/``GRU``/``RNN`` of shape ``config``."""
    import torch

    kwargs = dict(num_layers=config.num_layers, bidirectional=config.bidirectional, bias=config.bias)
    if config.mode == "LSTM":
        return torch.nn.LSTM(config.input_size, config.hidden_size, proj_size=config.proj_size, **kwargs)
    if config.mode == "GRU":
        return torch.nn.GRU(config.input_size, config.hidden_size, **kwargs)
    cell_for(config)  # refuses an unknown mode
    nonlinearity = "tanh" if config.mode == "RNN_TANH" else "relu"
    return torch.nn.RNN(config.input_size, config.hidden_size, nonlinearity=nonlinearity, **kwargs)


def to_torch(params: tuple, config: TorchConfig, dtype=None) -> Any:
    """A new ``torch.nn.LSTM``/``GRU``/``RNN`` holding ``params`` (float32 unless ``dtype``)."""
    import torch

    module = torch_module(config)
    module.load_state_dict({k: torch.tensor(np.array(v)) for k, v in to_state_dict(params, config).items()})
    return module if dtype is None else module.to(dtype)


def final_state(carry: tuple, config: TorchConfig) -> Any:
    """The carry of a :func:`layer_for` stack in PyTorch's layout.

    Returns ``h_n`` ``(num_layers * num_directions, *batch, H)``, ordered layer
    by layer, forward before backward; for an LSTM the pair ``(h_n, c_n)``.
    """
    per_dir = []
    for c in carry:
        per_dir.extend([c.forward, c.backward] if config.bidirectional else [c])
    if config.mode == "LSTM":
        return jnp.stack([c.h for c in per_dir]), jnp.stack([c.c for c in per_dir])
    return jnp.stack(per_dir)
