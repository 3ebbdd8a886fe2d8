"""The vanilla (Elman) RNN."""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import fused
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
    hidden_output: ClassVar[bool] = True
    gates: ClassVar[tuple[str, ...]] = ("h",)

    def fused_limits(self) -> str | None:
        return None

    def fused_sequence(self, params: RNNParams, xs: Array, carry: Array, mask: Array | None, unroll: int):
        """The fused kernel (:mod:`gated.fused`): every step's ``h_t`` from one loop, one linear tangent rule."""
        w = (params.input_kernel, params.recurrent_kernel, params.bias)
        hs = _fused(self.activation, unroll, *w, xs, carry, mask)
        return hs[-1], fused.outputs(hs, mask)

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> RNNParams:
        """Parameters for inputs of size ``input_size``; zero bias."""
        w_x, w_h = self._init_kernels(key, input_size, dtype)
        return RNNParams(w_x, w_h, jnp.zeros((self.hidden_size,), dtype))

    def step(self, params: RNNParams, carry: Array, u: Array) -> tuple[Array, Array]:
        u = self._check_step(carry, u)
        h = ACTIVATIONS[self.activation](u + carry @ params.recurrent_kernel)
        return h, h


# RNN: h_t = phi(x_t W_x + h_{t-1} W_h + b). Tangent: dh_t = phi'_t * (e_t + dh_{t-1} W_h), phi' from h_t.

_DERIVATIVES = {
    "tanh": lambda y: 1 - y * y,
    "sigmoid": lambda y: y * (1 - y),
    "relu": lambda y: (y > 0).astype(y.dtype),
    "identity": jnp.ones_like,
}


def _fused_loop(activation, unroll, w_x, w_h, b, xs, h0, m):
    phi = ACTIVATIONS[activation]
    w, bias = jnp.concatenate([w_x, w_h], axis=0), b[None, :]  # the input projection inside the loop

    def body(h, inputs):
        x, mt = inputs
        h_new = fused.masked(mt, phi(jnp.concatenate([x, h], axis=1) @ w + bias), h)
        return h_new, h_new

    return jax.lax.scan(body, h0, (xs, m), unroll=unroll)[1]


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _fused(activation, unroll, w_x, w_h, b, xs, h0, m):
    return _fused_loop(activation, unroll, w_x, w_h, b, xs, h0, m)


@functools.partial(_fused.defjvp, symbolic_zeros=True)
def _fused_jvp(activation, unroll, primals, tangents):
    w_x, w_h, b, xs, h0, m = primals
    dw_x, dw_h, db, dxs, dh0, _ = fused.nonzero(tangents)
    hs = _fused(activation, unroll, w_x, w_h, b, xs, h0, m)

    def chunk(dh, inputs):
        x, hp, h, mt, dx = inputs
        a = _DERIVATIVES[activation](h)  # phi'(pre_t) from h_t; at padded steps the mask zeroes it
        a = a if mt is None else mt * a
        e = fused.input_tangent(w_x, x, hp, dw_x, dw_h, db, dx)
        return fused.carry_tangent(w_h, None if mt is None else 1 - mt, a, None if e is None else a * e, dh, unroll)

    per_step = (xs, fused.previous(h0, hs), hs, m, dxs)
    return hs, fused.over_chunks(chunk, fused.dense(dh0, h0), per_step, h0.size)


# LSTM: gates i, f, g, o. One tanh over the block z * scale gives tanh(z/2) for i, f, o and tanh(z) for g;
# sigmoid(z) = (1 + tanh(z / 2)) / 2.
