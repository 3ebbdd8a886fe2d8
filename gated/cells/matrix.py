"""Matrix-state cells of the chunkwise form (:mod:`gated.chunkwise`): Mamba-2's SSD (Dao & Gu 2024) and Gated
DeltaNet (Yang, Kautz & Hatamizadeh 2024)."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import forms
from gated import init as initializers
from gated.options import integer, number, option

from .base import Array, Cell
from .linear import LinearCell
from .ssm import check_step_range


class SSDParams(NamedTuple):
    """SSD parameters: ``input_kernel`` (D, H + K + 2N) and ``bias`` for the channel input ``x`` (H), the step sizes
    (K) and B and C (N each); ``a_log`` (K,) with A = -exp(a_log); ``skip`` (K,), Mamba-2's D, one per head."""

    input_kernel: Array
    bias: Array
    a_log: Array
    skip: Array


def decay_rates(key: Array, num_heads: int, dtype) -> Array:
    """``a_log`` ``(K,)``: the logs of decay rates ``A`` drawn uniform in [1, 16] (Mamba-2's and
    flash-linear-attention's initialisation of ``A_log``)."""
    return jnp.log(jax.random.uniform(key, (num_heads,), jnp.float32, 1.0, 16.0)).astype(dtype)


def _dt_bias(key: Array, size: int, dt_min: float, dt_max: float) -> Array:
    """Step-size biases with ``softplus(b)`` log-uniform in ``[dt_min, dt_max]`` (Mamba's initialisation)."""
    dt = jnp.exp(jax.random.uniform(key, (size,), jnp.float32, math.log(dt_min), math.log(dt_max)))
    return dt + jnp.log(-jnp.expm1(-dt))  # softplus^-1(dt)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SSD(LinearCell, forms.MatrixDecay):
    r"""Mamba-2's state-space dual layer's recurrence (Dao & Gu 2024, "Transformers are SSMs", section 3; one group
    of B and C shared by the heads): a scalar decay per head, so that the state is a matrix per head.

    .. math::
        x_t &= u_t W_x + b_x, \quad \Delta_t = \mathrm{softplus}(u_t W_\Delta + b_\Delta) \in \mathbb{R}^K,
        \quad B_t = u_t W_B + b_B, \quad C_t = u_t W_C + b_C \in \mathbb{R}^N\\
        S^k_t &= e^{\Delta^k_t A^k} S^k_{t-1} + \Delta^k_t\, x^k_t B_t^\top \in \mathbb{R}^{P \times N}, \qquad
        y^k_t = S^k_t C_t + D^k x^k_t

    for each head k of ``num_heads`` K (H = K P channels, P = H/K), with ``A = -exp(a_log)`` one per head. As in
    Mamba-2's reference code: ``A`` drawn uniform in [1, 16], ``D = 1``, the step-size bias drawn so that
    ``softplus(b_Delta)`` is log-uniform in ``[dt_min, dt_max]``. The carry is ``(K, P, N)``. As a linear cell
    (elementwise decays broadcast over each head's matrix) it runs on every form; ``impl="chunkwise"``
    (:mod:`gated.chunkwise`) computes it as masked, decay-weighted matmuls (the "dual" form) within chunks. Gates
    ``("x",)``, then the K step sizes, B and C.

    Attributes:
      num_heads: K, which must divide H.
      state_size: N.
      dt_min, dt_max: the range of the initial step sizes.
    """

    num_heads: int = option(1, integer, minimum=1)
    state_size: int = option(16, integer, minimum=1)
    dt_min: float = option(1e-3, number, low=0.0, low_open=True)
    dt_max: float = option(0.1, number, low=0.0, low_open=True)

    name: ClassVar[str] = "ssd"
    params_type: ClassVar[type] = SSDParams
    gates: ClassVar[tuple[str, ...]] = ("x",)

    def __post_init__(self):
        super().__post_init__()
        check_step_range(self.dt_min, self.dt_max)

    @property
    def carry_shape(self) -> tuple[int, ...]:
        return (self.num_heads, self.head_size, self.state_size)

    @property
    def projection_size(self) -> int:
        return self.hidden_size + self.num_heads + 2 * self.state_size

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> SSDParams:
        k_x, k_dt, k_a = jax.random.split(key, 3)
        params = super().init(k_x, input_size, dtype)
        h, k = self.hidden_size, self.num_heads
        bias = params.bias.at[h : h + k].set(_dt_bias(k_dt, k, self.dt_min, self.dt_max).astype(dtype))
        a_log = decay_rates(k_a, k, dtype)
        return SSDParams(params.input_kernel, bias, a_log, jnp.ones((k,), dtype))

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> Array:
        return jnp.zeros((*batch_shape, *self.carry_shape), dtype)

    def _pieces(self, params, u):
        h, k, n = self.hidden_size, self.num_heads, self.state_size
        x = u[:h].reshape(k, self.head_size)
        dt = jax.nn.softplus(u[h : h + k])
        return x, dt, dt * -jnp.exp(params.a_log), u[h + k : h + k + n], u[h + k + n :]

    def coefficients(self, params, u):
        x, dt, log_a, b, _ = self._pieces(params, u)
        a = jnp.broadcast_to(jnp.exp(log_a)[:, None, None], self.carry_shape)
        return a, (dt[:, None] * x)[:, :, None] * b[None, None, :]

    def output(self, params, state, u):
        x, *_, c = self._pieces(params, u)
        return (jnp.einsum("kpn,n->kp", state, c) + params.skip[:, None] * x).reshape(self.hidden_size)

    def heads(self, params, u) -> forms.Heads:
        """``(q, k, v, log f, i)`` per head: ``(C_t, B_t, Delta_t x_t, Delta_t A, 0)``."""
        x, dt, log_a, b, c = self._pieces(params, u)
        k = self.num_heads
        heads = lambda a: jnp.broadcast_to(a, (k, self.state_size))
        return forms.Heads(heads(c), heads(b), dt[:, None] * x, log_a, jnp.zeros_like(log_a))

    def read(self, params, reads: forms.Reads, u):
        x = self._pieces(params, u)[0]
        return (jnp.exp(reads.m)[:, None] * reads.value + params.skip[:, None] * x).reshape(self.hidden_size)

    def matrix_state(self, carry):
        """The true memory as a stabilised one with ``m = 0``, no normaliser."""
        return forms.MatrixCarry(carry, None, jnp.zeros(carry.shape[:-2], carry.dtype))

    def from_matrix_state(self, state):
        return jnp.exp(state.m)[..., None, None] * state.c


class DeltaParams(NamedTuple):
    """Gated DeltaNet parameters: ``input_kernel`` (D, 3H + 2K) and ``bias`` for the queries, keys and values (H
    each) and the K gates' and K writing strengths' pre-activations; ``a_log`` (K,), the decay rates' logs."""

    input_kernel: Array
    bias: Array
    a_log: Array


def l2_normalise(x: Array, eps: float = 1e-6) -> Array:
    """``x / sqrt(|x|^2 + eps)`` along the last axis (flash-linear-attention's ``l2norm``)."""
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatedDeltaNet(forms.DeltaRule, Cell):
    r"""Gated DeltaNet's recurrence (Yang, Kautz & Hatamizadeh 2024, "Gated Delta Networks", eq. 10): the delta
    rule's correction of a matrix memory with Mamba-2's gated decay, per head.

    .. math::
        q_t &= \frac{\ell_2(u_t W_q + b_q)}{\sqrt d}, \quad k_t = \ell_2(u_t W_k + b_k), \quad v_t = u_t W_v + b_v,
        \quad \beta_t = \sigma(u_t w_\beta + b_\beta)\\
        \alpha_t &= \exp(-e^{a}\, \mathrm{softplus}(u_t w_\alpha + b_\alpha)), \qquad
        S_t = \alpha_t S_{t-1} (I - \beta_t k_t k_t^\top) + \beta_t v_t k_t^\top, \qquad y_t = S_t q_t

    (``S`` is ``(d, d)`` per head, values by keys; ``K = num_heads`` heads of size ``d = H/K``). The state enters
    linearly, but through a matrix, not elementwise, so there is no associative form: ``impl="chunkwise"``
    (:mod:`gated.chunkwise`) solves each chunk's corrections as one triangular system (the WY/UT form of Yang et
    al.), and the reference path steps. Initialisation as flash-linear-attention's layer: ``a`` the log of a draw
    uniform in [1, 16], the gate's bias so that its softplus is log-uniform in [1e-3, 0.1], zero writing-strength
    biases (``beta = 1/2``). The carry is ``(K, d, d)``, zero at the start. Gates ``("q", "k", "v")``, then the K
    gate and K strength pre-activations. (flash-linear-attention's layer adds a short convolution and SiLU before
    the normalisation and an output gate and norm after: the block's parts, not the cell's.)

    Attributes:
      num_heads: K, which must divide H.
    """

    num_heads: int = option(1, integer, minimum=1)

    name: ClassVar[str] = "gated_deltanet"
    params_type: ClassVar[type] = DeltaParams
    gates: ClassVar[tuple[str, ...]] = ("q", "k", "v")

    @property
    def projection_size(self) -> int:
        return 3 * self.hidden_size + 2 * self.num_heads

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> DeltaParams:
        input_size = integer("input_size", input_size)
        k_x, k_dt, k_a = jax.random.split(key, 3)
        kernel = initializers.input_kernel(k_x, input_size, self.projection_size, dtype)
        k, gh = self.num_heads, 3 * self.hidden_size
        bias = jnp.zeros((self.projection_size,), dtype).at[gh : gh + k].set(_dt_bias(k_dt, k, 1e-3, 0.1).astype(dtype))
        a_log = decay_rates(k_a, k, dtype)
        return DeltaParams(kernel, bias, a_log)

    def heads(self, params, u) -> forms.Heads:
        """``(q, k, v, log alpha, beta)`` per head: ``(K, d)`` each but the gates' ``(K,)``."""
        k, d, gh = self.num_heads, self.head_size, 3 * self.hidden_size
        head = lambda name: self.gate(u, name).reshape(k, d)
        log_alpha = -jnp.exp(params.a_log) * jax.nn.softplus(u[gh : gh + k])
        beta = jax.nn.sigmoid(u[gh + k :])
        return forms.Heads(l2_normalise(head("q")) / math.sqrt(d), l2_normalise(head("k")), head("v"), log_alpha, beta)
