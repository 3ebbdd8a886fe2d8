"""Gated DeltaProduct (Siems et al. 2025): several delta-rule corrections a token, a product of generalised
Householder transitions."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import forms
from gated import init as initializers
from gated.options import EIGENVALUES, boolean, choice, integer, option

from .base import Array, Cell
from .matrix import _dt_bias, decay_rates, l2_normalise


class DeltaProductParams(NamedTuple):
    """Gated DeltaProduct parameters: ``input_kernel`` (D, H + 2 n_h H + K n_h + K) and ``bias`` for the queries
    (H), the ``n_h`` keys and values (H each), the ``K n_h`` writing strengths' and the K gates' pre-activations;
    ``a_log`` (K,), the decay rates' logs (unused without a gate)."""

    input_kernel: Array
    bias: Array
    a_log: Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatedDeltaProduct(forms.DeltaRule, Cell):
    r"""Gated DeltaProduct's recurrence (Siems, Carstensen, Zela, Hutter, Pontil & Grazzi 2025, "DeltaProduct:
    improving state-tracking in linear RNNs via Householder products", eq. 4), per head, ``n_h`` corrections a token:

    .. math::
        S_{t,0} = \alpha_t S_{t-1}, \qquad
        S_{t,j} = S_{t,j-1} (I - \beta_{t,j} k_{t,j} k_{t,j}^\top) + \beta_{t,j} v_{t,j} k_{t,j}^\top
        \quad (j = 1..n_h), \qquad S_t = S_{t,n_h}, \qquad y_t = S_t q_t

    with ``q_t = l2(u W_q) / sqrt(d)``, ``k_{t,j} = l2(u W_{k,j})``, ``v_{t,j} = u W_{v,j}``, ``beta_{t,j} = sigma(u
    w_{beta,j})`` (``2 sigma`` with ``eigenvalues="[-1, 1]"``, the paper's default, so each factor reaches a reflection)
    and Gated DeltaNet's gate ``alpha_t = exp(-e^a softplus(u w_alpha + b_alpha))`` (``forget_gate=True``; without it,
    DeltaProduct). The transition over a token is ``alpha_t`` times a product of ``n_h`` generalised Householder
    matrices: its rank-``n_h`` part is what lets it track what one diagonal-plus-rank-one step cannot (the paper's S_n
    permutations). ``n_h = 1`` is Gated DeltaNet (DeltaNet without the gate). Initialisation as flash-linear-attention's
    layer (``A`` uniform in [1, 16], the gate's bias with softplus log-uniform in [1e-3, 0.1], zero strength biases).
    The carry is ``(K, d, d)``, zero at the start. The projection is ``q``, then the ``n_h`` keys and the ``n_h`` values
    (H each, token-major as flash-linear-attention's ``(n h d)``), the ``n_h K`` strengths and the K gates. (The layer's
    short convolutions, SiLU, output gate and norm are the block's parts.)

    Attributes:
      num_heads: K, which must divide H.
      householder: n_h, the corrections a token (default 2, as flash-linear-attention's layer).
      eigenvalues: the range of each factor's eigenvalue ``1 - beta``: "[-1, 1]" (default) or "[0, 1]".
      forget_gate: the decay ``alpha_t`` (default True: Gated DeltaProduct; flash-linear-attention's
        ``use_forget_gate``).
    """

    num_heads: int = option(1, integer, minimum=1)
    householder: int = option(2, integer, minimum=1)
    eigenvalues: str = option("[-1, 1]", choice, choices=EIGENVALUES)
    forget_gate: bool = option(True, boolean)

    name: ClassVar[str] = "gated_deltaproduct"
    params_type: ClassVar[type] = DeltaProductParams
    gates: ClassVar[tuple[str, ...]] = ("q",)

    @property
    def projection_size(self) -> int:
        n, h, k = self.householder, self.hidden_size, self.num_heads
        return h + 2 * n * h + n * k + k

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> DeltaProductParams:
        input_size = integer("input_size", input_size)
        k_x, k_dt, k_a = jax.random.split(key, 3)
        kernel = initializers.input_kernel(k_x, input_size, self.projection_size, dtype)
        k = self.num_heads
        gates = _dt_bias(k_dt, k, 1e-3, 0.1).astype(dtype)
        bias = jnp.zeros((self.projection_size,), dtype).at[self.projection_size - k :].set(gates)
        a_log = decay_rates(k_a, k, dtype)
        return DeltaProductParams(kernel, bias, a_log)

    def heads(self, params: DeltaProductParams, u: Array) -> forms.Heads:
        """``(q, k, v, log alpha, beta)`` per head: ``q`` ``(K, d)``, the keys and values ``(K, n_h, d)``, the
        decay ``(K,)`` and the strengths ``(K, n_h)``."""
        n, h, k, d = self.householder, self.hidden_size, self.num_heads, self.head_size
        q = l2_normalise(u[:h].reshape(k, d)) / math.sqrt(d)
        per_token = lambda x: jnp.swapaxes(x.reshape(n, k, d), 0, 1)  # (n h d) -> (K, n_h, d)
        keys = l2_normalise(per_token(u[h : h + n * h]))
        values = per_token(u[h + n * h : h + 2 * n * h])
        beta = jax.nn.sigmoid(u[h + 2 * n * h : h + 2 * n * h + n * k].reshape(n, k).T)
        beta = 2.0 * beta if self.eigenvalues == "[-1, 1]" else beta
        if self.forget_gate:
            log_alpha = -jnp.exp(params.a_log) * jax.nn.softplus(u[self.projection_size - k :])
        else:
            log_alpha = jnp.zeros((k,), u.dtype)
        return forms.Heads(q, keys, values, log_alpha, beta)
