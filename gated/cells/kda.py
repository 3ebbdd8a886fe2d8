"""Kimi Delta Attention (Kimi Team 2025, "Kimi Linear"): the gated delta rule with a decay per key channel."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import forms
from gated import init as initializers
from gated.options import EIGENVALUES, choice, integer, option

from .base import Array, Cell
from .matrix import _dt_bias, decay_rates, l2_normalise


class KDAParams(NamedTuple):
    """Kimi Delta Attention parameters: ``input_kernel`` (D, 4H + K) and ``bias`` for the queries, keys and values
    (H each), the decays' pre-activations (H: one per key channel of each head) and the K writing strengths';
    ``a_log`` (K,), the decay rates' logs."""

    input_kernel: Array
    bias: Array
    a_log: Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class KDA(forms.DeltaRule, Cell):
    r"""Kimi Delta Attention's recurrence (Kimi Team 2025, "Kimi Linear: an expressive, efficient attention
    architecture", eq. 1), per head:

    .. math::
        q_t &= \frac{\ell_2(u_t W_q)}{\sqrt d}, \quad k_t = \ell_2(u_t W_k), \quad v_t = u_t W_v, \quad
        \beta_t = \sigma(u_t w_\beta + b_\beta)\\
        \log \alpha_t &= -e^{a}\, \mathrm{softplus}(u_t W_\alpha + b_\alpha) \in \mathbb{R}^{d}, \qquad
        S_t = S_{t-1} \operatorname{diag}(\alpha_t) (I - \beta_t k_t k_t^\top) + \beta_t v_t k_t^\top, \qquad
        y_t = S_t q_t

    Gated DeltaNet's scalar decay made one per key channel, as GLA's is over linear attention's: the transition is
    diagonal (per channel) times a generalised Householder matrix, diagonal plus low rank. With
    ``eigenvalues="[-1, 1]"``, ``beta_t = 2 sigma(.)`` (flash-linear-attention's ``allow_neg_eigval``).
    Initialisation as flash-linear-attention's layer: ``a`` the log of a draw uniform in [1, 16] per head, the
    decays' biases so that their softplus is log-uniform in [1e-3, 0.1], zero strength biases. The carry is
    ``(K, d, d)``, zero at the start. The projection is ``q``, ``k``, ``v``, the decays' pre-activations (H each),
    then the K strengths. (The paper's low-rank decay projection is full rank here; its short convolutions, output
    gate and norm are the block's parts.)

    Attributes:
      num_heads: K, which must divide H.
      eigenvalues: the range of the transition's eigenvalue ``1 - beta_t`` along ``k_t``: "[0, 1]" or "[-1, 1]".
    """

    num_heads: int = option(1, integer, minimum=1)
    eigenvalues: str = option("[0, 1]", choice, choices=EIGENVALUES)

    name: ClassVar[str] = "kda"
    params_type: ClassVar[type] = KDAParams
    gates: ClassVar[tuple[str, ...]] = ("q", "k", "v", "alpha")

    @property
    def projection_size(self) -> int:
        return 4 * self.hidden_size + self.num_heads

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> KDAParams:
        input_size = integer("input_size", input_size)
        k_x, k_dt, k_a = jax.random.split(key, 3)
        kernel = initializers.input_kernel(k_x, input_size, self.projection_size, dtype)
        h, k = self.hidden_size, self.num_heads
        bias = (
            jnp.zeros((self.projection_size,), dtype).at[3 * h : 4 * h].set(_dt_bias(k_dt, h, 1e-3, 0.1).astype(dtype))
        )
        a_log = decay_rates(k_a, k, dtype)
        return KDAParams(kernel, bias, a_log)

    def heads(self, params: KDAParams, u: Array) -> forms.Heads:
        """``(q, k, v, log alpha, beta)`` per head: ``(K, d)`` each but the strengths' ``(K,)``."""
        k, d = self.num_heads, self.head_size
        head = lambda name: self.gate(u, name).reshape(k, d)
        log_alpha = -jnp.exp(params.a_log)[:, None] * jax.nn.softplus(head("alpha"))
        beta = jax.nn.sigmoid(u[4 * self.hidden_size :])
        beta = 2.0 * beta if self.eigenvalues == "[-1, 1]" else beta
        q, keys = l2_normalise(head("q")) / math.sqrt(d), l2_normalise(head("k"))
        return forms.Heads(q, keys, head("v"), log_alpha, beta)
