"""HGRN2 (Qin et al. 2024): a gated linear RNN whose state is expanded by outer products, on the key-decay form."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from gated import forms
from gated.options import integer, number, option

from .base import Array
from .linear import LinearCell, LinearParams


@dataclasses.dataclass(frozen=True, kw_only=True)
class HGRN2(forms.KeyDecay, LinearCell):
    r"""HGRN2's recurrence (Qin, Yang, Sun, Shen, Li, Sun & Zhong 2024, "HGRN2: gated linear RNNs with state
    expansion", eqs. 9-10), per head, as flash-linear-attention's ``HGRN2Attention`` computes it:

    .. math::
        f_t = \beta + (1 - \beta)\, \sigma(u_t W_f + b_f), \qquad k_t = 1 - f_t, \qquad
        q_t = \frac{\mathrm{swish}(u_t W_q + b_q)}{\sqrt{d_k}}, \qquad v_t = u_t W_v + b_v\\
        C_t = C_{t-1} \operatorname{diag}(f_t) + v_t k_t^\top, \qquad y_t = C_t q_t

    HGRN's elementwise forget gate ``f_t`` ``(d_k,)`` expanded to a matrix state ``(d_v, d_k)`` per head by the outer
    product with its input gate, tied to it: ``k_t = 1 - f_t``, so that what a key channel forgets it writes. The
    lower bound ``beta`` (``lower_bound``) keeps the forget gate above it: the paper's layers learn one per layer,
    increasing with depth (``lower_bound`` is that layer's value, fixed; 0 in the first layer).
    flash-linear-attention computes ``log f_t = logaddexp(log beta, log(1 - beta) + log sigmoid(.))`` and scales the
    queries by ``1/sqrt(d_k)`` in its GLA kernel. Zero biases: ``f = (1 + beta) / 2`` at the start. The projection is
    ``v`` (H), then ``q`` and the forget gate's pre-activations (``K d_k`` each). The output norm and projection of
    the paper's layer are the block's parts (:class:`gated.mixers.LinearAttention`, which reads ``paper_layer``).

    Attributes:
      num_heads: K, which must divide H.
      expand_ratio: d_k, the state's expansion per head (None: a head's size H / K; flash-linear-attention's
        ``expand_ratio``, 128 in the paper).
      lower_bound: beta in [0, 1).
    """

    num_heads: int = option(1, integer, minimum=1)
    expand_ratio: int | None = option(None, integer, minimum=1, optional=True)
    lower_bound: float = option(0.0, number, low=0.0, high=1.0, high_open=True)

    name: ClassVar[str] = "hgrn2"
    params_type: ClassVar[type] = LinearParams
    gates: ClassVar[tuple[str, ...]] = ("v",)
    # The layer of the paper (gated.mixers.LinearAttention): an RMSNorm over the H outputs, no output gate.
    paper_layer: ClassVar[dict] = {"output_gate": False, "norm": "all"}

    @property
    def key_size(self) -> int:
        return self.head_size if self.expand_ratio is None else self.expand_ratio

    @property
    def projection_size(self) -> int:
        return self.hidden_size + 2 * self.num_heads * self.key_size

    def heads(self, params: LinearParams, u: Array) -> forms.Heads:
        """``(q, 1 - f, v, log f, 0)`` per head: ``(K, d_k)``, ``(K, d_k)``, ``(K, d_v)``, ``(K, d_k)``, ``(K,)``."""
        h, k, d = self.hidden_size, self.num_heads, self.key_size
        q = jax.nn.silu(u[h : h + k * d]).reshape(k, d) / math.sqrt(d)
        log_f = jax.nn.log_sigmoid(u[h + k * d :]).reshape(k, d)
        if self.lower_bound:
            log_f = jnp.logaddexp(math.log(self.lower_bound), math.log1p(-self.lower_bound) + log_f)
        return forms.Heads(q, -jnp.expm1(log_f), u[:h].reshape(k, self.head_size), log_f, jnp.zeros((k,), u.dtype))
