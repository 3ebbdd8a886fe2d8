"""A selective state-space model, Mamba's S6 (Gu & Dao 2023)."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated.options import EIGENVALUES, boolean, choice, integer, number, option

from .base import Array
from .linear import LinearCell


def check_step_range(dt_min: float, dt_max: float) -> None:
    """The range the step sizes are drawn from at initialisation (this cell's and SSD's): ``0 < dt_min < dt_max``."""
    if not dt_min < dt_max:
        raise ValueError(f"dt_min, dt_max: expected 0 < dt_min < dt_max, got {dt_min!r}, {dt_max!r}")


class SSMParams(NamedTuple):
    """Selective SSM parameters: ``input_kernel`` (D, 2H + 2N) and ``bias`` (2H + 2N,) for the step size, the
    channel input, B and C side by side; ``a_log`` (H, N) with A = -exp(a_log); ``skip`` (H,), the D of Mamba."""

    input_kernel: Array
    bias: Array
    a_log: Array
    skip: Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class SelectiveSSM(LinearCell):
    r"""A diagonal selective state-space model in the style of Mamba's S6 (Gu & Dao 2023), for one example.

    .. math::
        \Delta_t &= \mathrm{softplus}(x_t W_\Delta + b_\Delta), \quad v_t = x_t W_v + b_v, \quad
        B_t = x_t W_B + b_B, \quad C_t = x_t W_C + b_C\\
        h_t &= \exp(\Delta_t A) \odot h_{t-1} + (\Delta_t v_t) B_t^\top, \qquad y_t = h_t C_t + D \odot v_t

    per channel (H channels, each with a state of ``state_size`` N): the step size, B and C depend on the input
    (the selection), ``A = -exp(a_log)`` is real, diagonal and negative (S4D-real initialisation
    ``A[:, n] = -(n + 1)``), ``exp(Delta A)`` is the zero-order hold and ``Delta B`` the Euler step of the
    discretisation, as in Mamba's reference code. The step-size bias is drawn so that ``softplus(b_Delta)`` is
    log-uniform in ``[dt_min, dt_max]``. The carry is ``(H, N)``; ``y`` has size H. Gates ``("dt", "v")``, then B
    and C (N each) at the end of the projection.

    ``selective=False`` is the time-invariant setting (S4D's, as Gu & Dao's Table 1 compares): the step size, B and C
    are their biases alone, the same at every step, so only ``v`` reads the input (the projection's other columns
    are then unused). ``eigenvalues="[-1, 1]"`` stretches the decay as Grazzi et al. 2025 do for Mamba,
    ``exp(Delta A) -> 2 exp(Delta A) - 1``, so that the state can flip its sign, as parity needs.
    """

    state_size: int = option(16, integer, minimum=1)
    dt_min: float = option(1e-3, number, low=0.0, low_open=True)
    dt_max: float = option(0.1, number, low=0.0, low_open=True)
    selective: bool = option(True, boolean)
    eigenvalues: str = option("[0, 1]", choice, choices=EIGENVALUES)

    name: ClassVar[str] = "ssm"
    params_type: ClassVar[type] = SSMParams
    gates: ClassVar[tuple[str, ...]] = ("dt", "v")

    @property
    def time_invariant(self) -> bool:
        return not self.selective  # S4D's setting: the step size, B and C are the biases alone

    def __post_init__(self):
        super().__post_init__()
        check_step_range(self.dt_min, self.dt_max)

    @property
    def carry_shape(self) -> tuple[int, ...]:
        return (self.hidden_size, self.state_size)

    @property
    def projection_size(self) -> int:
        return 2 * self.hidden_size + 2 * self.state_size

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> SSMParams:
        k_x, k_dt = jax.random.split(key)
        params = super().init(k_x, input_size, dtype)
        h, n = self.hidden_size, self.state_size
        dt = jnp.exp(jax.random.uniform(k_dt, (h,), jnp.float32, math.log(self.dt_min), math.log(self.dt_max)))
        dt_bias = dt + jnp.log(-jnp.expm1(-dt))  # softplus^-1(dt)
        bias = params.bias.at[:h].set(dt_bias.astype(dtype))
        a_log = jnp.broadcast_to(jnp.log(jnp.arange(1, n + 1, dtype=jnp.float32)), (h, n)).astype(dtype)
        return SSMParams(params.input_kernel, bias, a_log, jnp.ones((h,), dtype))

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> Array:
        return jnp.zeros((*batch_shape, *self.carry_shape), dtype)

    def _pieces(self, params, u: Array) -> tuple[Array, Array, Array, Array]:
        h, n = self.hidden_size, self.state_size
        v = u[h : 2 * h]
        if not self.selective:  # time-invariant: the step size, B and C are the biases alone
            u = params.bias.astype(u.dtype)
        return jax.nn.softplus(u[:h]), v, u[2 * h : 2 * h + n], u[2 * h + n :]

    def coefficients(self, params, u):
        dt, v, b, _ = self._pieces(params, u)
        a = jnp.exp(dt[:, None] * -jnp.exp(params.a_log))
        a = 2.0 * a - 1.0 if self.eigenvalues == "[-1, 1]" else a
        return a, (dt * v)[:, None] * b[None, :]

    def output(self, params, state, u):
        _, v, _, c = self._pieces(params, u)
        return state @ c + params.skip * v
