"""The vanilla (Elman) RNN."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax.numpy as jnp

from gated.options import choice, option

from .base import ACTIVATIONS, Array, RecurrentCell


class RNNParams(NamedTuple):
    """Vanilla RNN parameters: ``input_kernel`` (D, H), ``recurrent_kernel`` (H, H), ``bias`` (H,)."""

    input_kernel: Array
    recurrent_kernel: Array
    bias: Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class RNN(RecurrentCell):
    r"""Vanilla (Elman) RNN cell.

    .. math::
        h_t = \phi(x_t W_{xh} + h_{t-1} W_{hh} + b)

    The output ``y_t`` is ``h_t``; a readout ``y = h W_hy`` belongs to the
    model. Gate order: a single block ``("h",)``.

    Attributes:
      activation: phi, one of "tanh", "relu", "sigmoid", "identity".

    References:
      Elman 1990, "Finding structure in time".
    """

    activation: str = option("tanh", choice, choices=tuple(ACTIVATIONS))

    name: ClassVar[str] = "rnn"
    params_type: ClassVar[type] = RNNParams
    gates: ClassVar[tuple[str, ...]] = ("h",)
    kernel: ClassVar[str | None] = "rnn"

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> RNNParams:
        """Parameters for inputs of size ``input_size``; zero bias."""
        w_x, w_h = self._init_kernels(key, input_size, dtype)
        return RNNParams(w_x, w_h, jnp.zeros((self.hidden_size,), dtype))

    def step(self, params: RNNParams, carry: Array, u: Array) -> tuple[Array, Array]:
        u = self._check_step(carry, u)
        h = ACTIVATIONS[self.activation](u + carry @ params.recurrent_kernel)
        return h, h
