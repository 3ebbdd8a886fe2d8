"""The GRU: reset and update gates (Cho et al. 2014)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import init as initializers
from gated.options import choice, integer, option

from .base import Array, RecurrentCell


class GRUGates(NamedTuple):
    """Reset gate ``r``, update gate ``z`` and candidate ``n`` of one GRU step, ``(H,)`` each."""

    r: Array
    z: Array
    n: Array


class GRUParams(NamedTuple):
    """GRU parameters, gate blocks in the order r, z, n.

    ``input_kernel`` (D, 3H), ``recurrent_kernel`` (H, 3H), ``bias`` (3H,) and,
    for ``reset="after"`` only, ``candidate_bias`` (H,): the bias b_hn inside
    the reset product ``r * (h W_hn + b_hn)``; None for ``reset="before"``.
    """

    input_kernel: Array
    recurrent_kernel: Array
    bias: Array
    candidate_bias: Array | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class GRU(RecurrentCell):
    r"""Gated recurrent unit, in both published conventions.

    .. math::
        r_t &= \sigma(x_t W_{xr} + h_{t-1} W_{hr} + b_r)  && \text{reset gate}\\
        z_t &= \sigma(x_t W_{xz} + h_{t-1} W_{hz} + b_z)  && \text{update gate}\\
        n_t &= \tanh(x_t W_{xn} + (r_t * h_{t-1}) W_{hn} + b_n)
              && \text{reset="before" (seed 002, Cho et al. 2014)}\\
        n_t &= \tanh(x_t W_{xn} + r_t * (h_{t-1} W_{hn} + b_{hn}) + b_n)
              && \text{reset="after" (PyTorch, cuDNN, Flax)}\\
        h_t &= z_t * h_{t-1} + (1 - z_t) * n_t
              && \text{update="keep" (seed 002, PyTorch, Flax)}\\
        h_t &= (1 - z_t) * h_{t-1} + z_t * n_t
              && \text{update="write" (seeds 000/003, Chung et al. 2014)}

    Gate order: ``("r", "z", "n")`` as in PyTorch. Khapra's lecture GRU (gates
    read s_{t-1}; o_t plays the reset gate, i_t the update gate with the
    forget gate tied to 1 - i_t) is ``reset="before", update="write"``.
    The defaults, ``reset="after", update="keep"``, match PyTorch's
    ``nn.GRU`` and Flax's ``GRUCell``.

    Attributes:
      update: "keep" (z keeps the old state) or "write" (z writes the new one).
      reset: "after" (reset applied after the recurrent matmul, with the extra
        bias b_hn in ``params.candidate_bias``) or "before" (reset applied to
        h before the matmul).
      chrono_init: if set to T_max, the update-gate bias is drawn so that the
        gate keeps the state with time scales in [1, T_max] (Tallec &
        Ollivier 2018): b_z = +log(U[1, T_max-1]) for "keep", minus that for "write".

    References:
      Cho et al. 2014; Chung et al. 2014, "Empirical evaluation of gated
      recurrent neural networks on sequence modeling".
    """

    update: str = option("keep", choice, choices=("keep", "write"))
    reset: str = option("after", choice, choices=("before", "after"))
    chrono_init: int | None = option(None, integer, optional=True, minimum=3, expected="an int T_max > 2 or None")

    name: ClassVar[str] = "gru"
    params_type: ClassVar[type] = GRUParams
    gates: ClassVar[tuple[str, ...]] = ("r", "z", "n")
    kernel: ClassVar[str | None] = "gru"

    def kernel_limits(self) -> str | None:
        return "covers reset='after' only" if self.reset != "after" else None

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> GRUParams:
        """Parameters for inputs of size ``input_size``; zero biases unless ``chrono_init``."""
        k_kernels, k_chrono = jax.random.split(key)
        w_x, w_h = self._init_kernels(k_kernels, input_size, dtype)
        h = self.hidden_size
        b_z = jnp.zeros((h,), dtype)
        if self.chrono_init is not None:
            b_z = initializers.chrono(k_chrono, h, self.chrono_init, dtype)
            b_z = b_z if self.update == "keep" else -b_z
        zeros = jnp.zeros((h,), dtype)
        bias = jnp.concatenate([zeros, b_z, zeros])
        return GRUParams(w_x, w_h, bias, zeros if self.reset == "after" else None)

    def gate_activations(self, params: GRUParams, carry: Array, u: Array) -> GRUGates:
        """The reset and update gates and the candidate of one step (``step`` is built on this)."""
        u = self._check_step(carry, u)
        h = carry
        hh = self.hidden_size
        w = params.recurrent_kernel
        if self.reset == "after":
            if params.candidate_bias is None or params.candidate_bias.shape != (hh,):
                got = None if params.candidate_bias is None else params.candidate_bias.shape
                raise ValueError(f"params.candidate_bias: expected shape {(hh,)} for reset='after', got {got}")
            rec = h @ w
            rz = jax.nn.sigmoid(u[: 2 * hh] + rec[: 2 * hh])
            r, z = rz[:hh], rz[hh:]
            n = jnp.tanh(u[2 * hh :] + r * (rec[2 * hh :] + params.candidate_bias))
        else:
            if params.candidate_bias is not None:
                raise ValueError("params.candidate_bias: expected None for reset='before' (it has no b_hn)")
            rz = jax.nn.sigmoid(u[: 2 * hh] + h @ w[:, : 2 * hh])
            r, z = rz[:hh], rz[hh:]
            n = jnp.tanh(u[2 * hh :] + (r * h) @ w[:, 2 * hh :])
        return GRUGates(r, z, n)

    def keep_fraction(self, z: Array) -> Array:
        """The share of h_{t-1} kept in h_t: z for update="keep", 1 - z for "write"."""
        return z if self.update == "keep" else 1.0 - z

    def step(self, params: GRUParams, carry: Array, u: Array) -> tuple[Array, Array]:
        h_new = self.gated_update(self.gate_activations(params, carry, u), carry)
        return h_new, h_new

    # The gated path (gated.diagnostics.gate_path): the state the update gate carries across time, h itself, its
    # per-step keep fraction, its update from gates held fixed, and no readout (h is the output).
    def gated_state(self, carry: Array) -> Array:
        return carry

    def with_gated_state(self, carry: Array, h: Array) -> Array:
        return h

    def keep(self, act: GRUGates) -> Array:
        return self.keep_fraction(act.z)

    def gated_update(self, act: GRUGates, carry: Array) -> Array:
        keep = self.keep_fraction(act.z)
        return keep * carry + (1.0 - keep) * act.n

    def readout_slope(self, act: GRUGates) -> Array | None:
        return None
