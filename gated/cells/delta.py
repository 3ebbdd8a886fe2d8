"""DeltaNet (Schlag, Irie & Schmidhuber 2021; Yang et al. 2024): the delta rule on a matrix memory."""

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
from .matrix import l2_normalise


class DeltaNetParams(NamedTuple):
    """DeltaNet parameters: ``input_kernel`` (D, 3H + K) and ``bias`` (3H + K,) for the queries, keys and values (H
    each, K heads of H/K side by side) and the K writing strengths' pre-activations."""

    input_kernel: Array
    bias: Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeltaNet(forms.DeltaRule, Cell):
    r"""DeltaNet's recurrence (Schlag et al. 2021, "Linear transformers are secretly fast weight programmers";
    Yang et al. 2024, "Parallelizing linear transformers with the delta rule over sequence length"), per head:

    .. math::
        q_t &= \frac{\ell_2(u_t W_q + b_q)}{\sqrt d}, \quad k_t = \ell_2(u_t W_k + b_k), \quad v_t = u_t W_v + b_v,
        \quad \beta_t = \sigma(u_t w_\beta + b_\beta)\\
        S_t &= S_{t-1} (I - \beta_t k_t k_t^\top) + \beta_t v_t k_t^\top, \qquad y_t = S_t q_t

    the memory ``S`` ``(d, d)`` per head (values by keys), corrected towards ``v_t`` where it reads ``k_t``: the
    transition ``I - beta_t k_t k_t^T`` has eigenvalues 1 and ``1 - beta_t``. With ``eigenvalues="[-1, 1]"``,
    ``beta_t = 2 sigma(.)`` in [0, 2] and the transition reaches -1, a reflection (Grazzi et al. 2025, "Unlocking
    state-tracking in linear RNNs through negative eigenvalues"). The form (:class:`gated.forms.DeltaRule`, no
    decay) gives the step, the carry ``(K, d, d)`` (zero at the start) and the read. Zero biases: ``beta = 1/2``
    (1 with ``[-1, 1]``). Gates ``("q", "k", "v")``, then the K strength pre-activations. (flash-linear-attention's
    layer adds short convolutions and SiLU before the normalisation and an output norm after: the block's parts.)

    Attributes:
      num_heads: K, which must divide H.
      eigenvalues: the range of the transition's eigenvalue ``1 - beta_t``: "[0, 1]" or "[-1, 1]".
    """

    num_heads: int = option(1, integer, minimum=1)
    eigenvalues: str = option("[0, 1]", choice, choices=EIGENVALUES)

    name: ClassVar[str] = "deltanet"
    params_type: ClassVar[type] = DeltaNetParams
    gates: ClassVar[tuple[str, ...]] = ("q", "k", "v")

    @property
    def projection_size(self) -> int:
        return 3 * self.hidden_size + self.num_heads

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> DeltaNetParams:
        input_size = integer("input_size", input_size)
        kernel = initializers.input_kernel(key, input_size, self.projection_size, dtype)
        return DeltaNetParams(kernel, jnp.zeros((self.projection_size,), dtype))

    def heads(self, params, u) -> forms.Heads:
        """``(q, k, v, 0, beta)`` per head: ``(K, d)`` each but the decay's and strength's ``(K,)``."""
        k, d = self.num_heads, self.head_size
        head = lambda name: self.gate(u, name).reshape(k, d)
        beta = jax.nn.sigmoid(u[3 * self.hidden_size :])
        beta = 2.0 * beta if self.eigenvalues == "[-1, 1]" else beta
        q, keys = l2_normalise(head("q")) / math.sqrt(d), l2_normalise(head("k"))
        return forms.Heads(q, keys, head("v"), jnp.zeros_like(beta), beta)
