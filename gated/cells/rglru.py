"""The Real-Gated Linear Recurrent Unit of Griffin (De et al. 2024)."""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated.options import EIGENVALUES, choice, number, option

from .base import Array
from .linear import LinearCell

# The bound on the derivative of sqrt(1 - a^2) (recurrentgemma's _MAX_SQRT_GRADIENT).
MAX_SQRT_GRADIENT = 1000.0


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def sqrt_bound_derivative(x: Array, max_gradient: float) -> Array:
    """``sqrt(x)`` whose derivative is bounded by ``max_gradient``: ``1 / (2 sqrt(max(x, 1 / (4 max_gradient^2))))``
    (De et al. 2024; ``recurrentgemma``'s ``sqrt_bound_derivative``, here a ``custom_jvp``, so that forward mode and
    higher derivatives work too)."""
    return jnp.sqrt(x)


@sqrt_bound_derivative.defjvp
def _sqrt_bound_derivative_jvp(max_gradient, primals, tangents):
    (x,), (x_dot,) = primals, tangents
    floor = jnp.asarray(1.0 / (4.0 * max_gradient**2), jnp.result_type(x))
    return jnp.sqrt(x), 0.5 * x_dot / jnp.sqrt(jnp.maximum(x, floor))


class RGLRUParams(NamedTuple):
    """RG-LRU parameters: ``input_kernel`` (D, 3H) and ``bias`` (3H,) of the gates ``("a", "x", "v")``, and
    ``a_param`` (H,): Lambda, the logit of the recurrence's base decay ``a = sigmoid(Lambda)``."""

    input_kernel: Array
    bias: Array
    a_param: Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class RGLRU(LinearCell):
    r"""Real-gated linear recurrent unit (De et al. 2024, Hawk and Griffin).

    .. math::
        r_t &= \sigma(x_t W_a + b_a), \qquad i_t = \sigma(x_t W_x + b_x), \qquad v_t = x_t W_v + b_v\\
        a_t &= \sigma(\Lambda)^{c\, r_t}, \qquad
        h_t = a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot v_t)

    with ``c = 8``; ``log a_t = -c r_t softplus(-Lambda)`` is computed in log space. The derivative of the square
    root is bounded at ``max_sqrt_gradient`` (1000, as in ``recurrentgemma``): where ``a_t`` rounds to 1 (a
    saturated gate, ``r_t = 0``) the true derivative is infinite and the gradient would be NaN; the bound changes
    nothing where ``1 - a_t^2 >= 1 / (4 max_sqrt_gradient^2)``. ``Lambda`` is initialised so
    that ``a^c = sigma(Lambda)^c`` is uniform in ``[a_min, a_max]``. In Griffin the input ``v`` is the block's
    own branch of width H; here it is the projection ``x W_v``. Gates ``("a", "x", "v")``.

    ``segment_start`` is what a segment start (``resets`` of :func:`gated.run`) does: "restore" (the default, as
    every cell) restores the initial carry and takes the usual step; "recurrentgemma" sets ``a_t = 0`` and drops the
    ``sqrt(1 - a_t^2)`` factor, ``h_t = i_t \odot v_t``, as the authors' code does at ``segment_pos == 0``
    (:class:`gated.mixers.Griffin` then treats the first step of a sequence with no carry as such a start).

    ``eigenvalues`` is the range of the decay: "[0, 1]" (De et al.), or "[-1, 1]": ``a_t -> 2 a_t - 1`` and the
    input scaled by ``sqrt(1 - (2 a_t - 1)^2) = 2 sqrt(a_t (1 - a_t))``, as Grazzi et al. 2025 ("Unlocking
    state-tracking in linear RNNs through negative eigenvalues") stretch Mamba's and DeltaNet's decays, so that the
    state can flip its sign, as parity needs.
    """

    c: float = option(8.0, number, low=0.0, low_open=True)
    a_min: float = option(0.9, number, low=0.0, high=1.0, low_open=True, high_open=True)
    a_max: float = option(0.999, number, low=0.0, high=1.0, low_open=True, high_open=True)
    segment_start: str = option("restore", choice, choices=("restore", "recurrentgemma"))
    eigenvalues: str = option("[0, 1]", choice, choices=EIGENVALUES)

    name: ClassVar[str] = "rglru"
    params_type: ClassVar[type] = RGLRUParams
    gates: ClassVar[tuple[str, ...]] = ("a", "x", "v")

    def __post_init__(self):
        super().__post_init__()
        if not self.a_min < self.a_max:
            raise ValueError(f"a_min, a_max: expected 0 < a_min < a_max < 1, got {self.a_min!r}, {self.a_max!r}")

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> RGLRUParams:
        k_x, k_a = jax.random.split(key)
        params = super().init(k_x, input_size, dtype)
        a_c = jax.random.uniform(k_a, (self.hidden_size,), jnp.float32, self.a_min, self.a_max)
        a = a_c ** (1.0 / self.c)
        return RGLRUParams(*params, jnp.log(a / (1.0 - a)).astype(dtype))  # Lambda = logit(a)

    @property
    def restarts(self) -> bool:
        return self.segment_start == "recurrentgemma"

    def _gated_input(self, u: Array) -> Array:
        """``i_t v_t``, the input the recurrence adds (scaled by ``sqrt(1 - a_t^2)`` but at a recurrentgemma
        restart)."""
        return jax.nn.sigmoid(self.gate(u, "x")) * self.gate(u, "v")

    def restart(self, params, u):
        gated_input = self._gated_input(u)
        return jnp.zeros_like(gated_input), gated_input

    def coefficients(self, params, u):
        if getattr(params, "a_param", None) is None or params.a_param.shape != (self.hidden_size,):
            got = None if getattr(params, "a_param", None) is None else params.a_param.shape
            raise ValueError(f"params.a_param: expected Lambda of shape {(self.hidden_size,)}, got {got}")
        r = jax.nn.sigmoid(self.gate(u, "a"))
        log_a = -self.c * r * jax.nn.softplus(-params.a_param)
        a = jnp.exp(log_a)
        if self.eigenvalues == "[-1, 1]":  # 2a - 1 and sqrt(1 - (2a - 1)^2) = sqrt(4 a (1 - a)), accurate as a -> 1
            scale = sqrt_bound_derivative(-4.0 * a * jnp.expm1(log_a), MAX_SQRT_GRADIENT)
            return 2.0 * a - 1.0, scale * self._gated_input(u)
        # sqrt(1 - a^2), accurate as a -> 1, its derivative bounded
        scale = sqrt_bound_derivative(-jnp.expm1(2.0 * log_a), MAX_SQRT_GRADIENT)
        return a, scale * self._gated_input(u)
