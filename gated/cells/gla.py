"""Gated linear attention (Yang et al. 2024) and the decays of its family: Simple GLA's gate per head and RetNet's
fixed decay per head (Sun et al. 2023), on the key-decay form."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from gated import forms
from gated.options import choice, integer, number, option

from .base import Array
from .linear import LinearCell, LinearParams

DECAYS = ("key", "head", "fixed")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GLA(forms.KeyDecay, LinearCell):
    r"""Gated linear attention's recurrence (Yang, Wang, Shen, Panda & Kim 2024, "Gated linear attention
    transformers with hardware-efficient training", eqs. 3-4), per head:

    .. math::
        q_t = \frac{u_t W_q}{\sqrt{d_k}}, \quad k_t = u_t W_k, \quad v_t = u_t W_v, \qquad
        \log \alpha_t = \frac{\log \sigma(u_t W_\alpha + b_\alpha)}{\tau}\\
        C_t = C_{t-1} \operatorname{diag}(\alpha_t) + v_t k_t^\top, \qquad y_t = C_t q_t

    the memory ``C`` ``(d_v, d_k)`` per head (values by keys; ``d_v = H / K``), each key channel with its own
    data-dependent decay ``alpha_t`` in (0, 1), sharpened towards 1 by ``tau = gate_normaliser`` (16 in the paper
    and flash-linear-attention). ``decay`` chooses it:

    * "key" (GLA): ``alpha_t`` ``(d_k,)`` per head, as above;
    * "head" (Simple GLA; Mamba-2's decay, flash-linear-attention's ``simple_gla``): one
      ``log alpha_t = log sigma(u_t w_alpha + b_alpha) / tau`` per head, shared by its keys;
    * "fixed" (RetNet's retention, Sun et al. 2023, eq. 6): ``alpha = 1 - 2^{-5-h}`` for head ``h = 0..K-1``, the
      same at every step (a time-invariant filter over the keys and values), no gate parameters.

    The paper's gate projection is low rank (rank 16, then a bias); here every piece is one affine map of the input,
    so the gate is full rank. Zero biases: ``alpha = 2^{-1/tau}`` at the start. The projection is ``v`` (H), ``q``
    and ``k`` (``K d_k`` each), then the gate's pre-activations (``K d_k``, ``K`` or none). The output gate, norm and
    short convolutions of the paper's layer are the block's parts (:mod:`gated.mixers`), not the cell's.

    Attributes:
      num_heads: K, which must divide H.
      expand_k: the keys' size per head as a fraction of a head's size: ``d_k = max(1, floor(expand_k H / K))``
        (0.5, the paper's ``d_k = d_v / 2``, as flash-linear-attention's ``expand_k``).
      decay: "key", "head" or "fixed", above.
      gate_normaliser: tau, which divides the log decays (flash-linear-attention's ``gate_logit_normalizer``).
    """

    num_heads: int = option(1, integer, minimum=1)
    expand_k: float = option(0.5, number, low=0.0, low_open=True)
    decay: str = option("key", choice, choices=DECAYS)
    gate_normaliser: float = option(16.0, number, low=0.0, low_open=True)

    name: ClassVar[str] = "gla"
    params_type: ClassVar[type] = LinearParams
    gates: ClassVar[tuple[str, ...]] = ("v",)

    @property
    def key_size(self) -> int:
        return max(1, math.floor(self.expand_k * self.head_size))

    @property
    def time_invariant(self) -> bool:
        return self.decay == "fixed"

    @property
    def gate_size(self) -> int:
        """The size of the gate's pre-activations: ``K d_k``, ``K`` or 0 (:attr:`decay`)."""
        return {"key": self.num_heads * self.key_size, "head": self.num_heads, "fixed": 0}[self.decay]

    @property
    def projection_size(self) -> int:
        return self.hidden_size + 2 * self.num_heads * self.key_size + self.gate_size

    def log_decay(self, params: LinearParams, u: Array) -> Array:
        """``log alpha_t`` ``(K, d_k)`` of one step (a decay per head broadcast over its keys)."""
        k, d = self.num_heads, self.key_size
        if self.decay == "fixed":
            per_head = jnp.log1p(-jnp.exp2(-5.0 - jnp.arange(k, dtype=u.dtype)))
        else:
            per_head = jax.nn.log_sigmoid(u[self.projection_size - self.gate_size :]) / self.gate_normaliser
        return jnp.broadcast_to(per_head.reshape(k, -1), (k, d))

    def heads(self, params: LinearParams, u: Array) -> forms.Heads:
        """``(q, k, v, log alpha, 0)`` per head: ``(K, d_k)``, ``(K, d_k)``, ``(K, d_v)``, ``(K, d_k)``, ``(K,)``."""
        h, k, d = self.hidden_size, self.num_heads, self.key_size
        v = u[:h].reshape(k, self.head_size)
        q, keys = u[h : h + k * d].reshape(k, d), u[h + k * d : h + 2 * k * d].reshape(k, d)
        return forms.Heads(q / math.sqrt(d), keys, v, self.log_decay(params, u), jnp.zeros((k,), u.dtype))
