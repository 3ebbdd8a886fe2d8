"""The Linear Recurrent Unit (Orvieto et al. 2023)."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated.options import integer, number, option

from .base import Array
from .linear import LinearCell


class LRUParams(NamedTuple):
    """LRU parameters (Orvieto et al. 2023).

    ``input_kernel`` (D, 3H): B's real and imaginary parts and the skip D, side by side; ``bias`` (3H,);
    ``nu_log``, ``theta_log``, ``gamma_log`` (H,): lambda = exp(-exp(nu_log) + i exp(theta_log)) and the input
    normalisation gamma = exp(gamma_log); ``output_real``, ``output_imag`` (H, H): C's real and imaginary parts.
    """

    input_kernel: Array
    bias: Array
    nu_log: Array
    theta_log: Array
    gamma_log: Array
    output_real: Array
    output_imag: Array


class LRUState(NamedTuple):
    """LRU carry: the real and imaginary parts of the complex state, ``(H,)`` each."""

    real: Array
    imag: Array

    def hidden(self) -> Array:
        """``[real, imag]`` ``(2H,)``, so that its norm is the complex state's norm."""
        return jnp.concatenate([self.real, self.imag], axis=-1)

    def with_hidden(self, h: Array) -> LRUState:
        return LRUState(*jnp.split(h, 2, axis=-1))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LRU(LinearCell):
    r"""Linear recurrent unit (Orvieto et al. 2023, "Resurrecting recurrent neural networks for long sequences").

    .. math::
        \lambda &= \exp(-\exp(\nu) + i \exp(\theta)), \qquad \gamma = \sqrt{1 - |\lambda|^2}\ \text{(at init)}\\
        h_t &= \lambda \odot h_{t-1} + \gamma \odot (x_t B), \qquad y_t = \mathrm{Re}(h_t C) + x_t D

    A complex diagonal recurrence with the stable ``exp(-exp(nu))`` magnitude, eigenvalues initialised uniformly
    on the ring ``r_min <= |lambda| <= r_max`` with phases in ``[0, max_phase]``, and the input normalised by
    ``gamma = exp(gamma_log)``, initialised to ``sqrt(1 - |lambda|^2)`` and trained. The carry is
    :class:`LRUState` (real and imaginary parts); ``y`` has size H. Gates (input blocks) ``("re", "im", "skip")``.
    """

    r_min: float = option(0.9, number, low=0.0, high=1.0, high_open=True)
    r_max: float = option(0.999, number, low=0.0, high=1.0, high_open=True)
    max_phase: float = option(
        2 * math.pi, number, low=0.0, high=2 * math.pi, low_open=True, expected="a number in (0, 2 pi]"
    )

    name: ClassVar[str] = "lru"
    params_type: ClassVar[type] = LRUParams
    gates: ClassVar[tuple[str, ...]] = ("re", "im", "skip")

    @property
    def time_invariant(self) -> bool:
        return True  # lambda is a parameter: no gate reads the input

    def __post_init__(self):
        super().__post_init__()
        if not self.r_min < self.r_max:
            raise ValueError(f"r_min, r_max: expected 0 <= r_min < r_max < 1, got {self.r_min!r}, {self.r_max!r}")

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> LRUParams:
        input_size = integer("input_size", input_size)
        h = self.hidden_size
        k_b, k_d, k_r, k_p, k_c = jax.random.split(key, 5)
        f32 = jnp.float32
        b = jax.random.normal(k_b, (input_size, 2 * h), f32) / math.sqrt(2 * input_size)
        skip = jax.random.normal(k_d, (input_size, h), f32) / math.sqrt(input_size)
        radius_sq = jax.random.uniform(k_r, (h,), f32, self.r_min**2, self.r_max**2)
        nu_log = jnp.log(-0.5 * jnp.log(radius_sq))
        theta_log = jnp.log(jax.random.uniform(k_p, (h,), f32, 1e-3 * self.max_phase, self.max_phase))
        gamma_log = 0.5 * jnp.log1p(-radius_sq)
        c = jax.random.normal(k_c, (h, 2 * h), f32) / math.sqrt(2 * h)
        cast = lambda a: a.astype(dtype)
        return LRUParams(
            cast(jnp.concatenate([b, skip], axis=1)),
            jnp.zeros((3 * h,), dtype),
            cast(nu_log),
            cast(theta_log),
            cast(gamma_log),
            cast(c[:, :h]),
            cast(c[:, h:]),
        )

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> LRUState:
        zeros = jnp.zeros((*batch_shape, self.hidden_size), dtype)
        return LRUState(zeros, zeros)

    def eigenvalues(self, params: LRUParams) -> Array:
        """lambda, complex (H,)."""
        return jnp.exp(-jnp.exp(params.nu_log) + 1j * jnp.exp(params.theta_log))

    def coefficients(self, params, u):
        gamma = jnp.exp(params.gamma_log)
        return self.eigenvalues(params), gamma * (self.gate(u, "re") + 1j * self.gate(u, "im"))

    def to_state(self, carry):
        return carry.real + 1j * carry.imag

    def from_state(self, state):
        return LRUState(jnp.real(state), jnp.imag(state))

    def output(self, params, state, u):
        return jnp.real(state) @ params.output_real - jnp.imag(state) @ params.output_imag + self.gate(u, "skip")
