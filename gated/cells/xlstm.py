"""xLSTM's sLSTM and mLSTM (Beck et al. 2024)."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import forms
from gated.options import boolean, integer, number, option

from .base import Array, RecurrentCell, hidden_h, with_hidden_h
from .linear import LinearCell


class SLSTMParams(NamedTuple):
    """sLSTM parameters, gate blocks in the order ``("i", "f", "z", "o")``: ``input_kernel`` (D, 4H),
    ``recurrent_kernel`` (H, 4H) and ``bias`` (4H,)."""

    input_kernel: Array
    recurrent_kernel: Array
    bias: Array


class SLSTMState(NamedTuple):
    """sLSTM carry, ``(H,)`` each: hidden state ``h``, cell state ``c``, normaliser ``n`` and stabiliser ``m``."""

    h: Array
    c: Array
    n: Array
    m: Array

    hidden = hidden_h
    with_hidden = with_hidden_h


@dataclasses.dataclass(frozen=True, kw_only=True)
class SLSTM(RecurrentCell):
    r"""xLSTM's sLSTM (Beck et al. 2024, "xLSTM: Extended long short-term memory", section 2.2): an LSTM with
    exponential gating, a normaliser state and a stabiliser state, with recurrent connections (so it runs
    sequentially).

    .. math::
        \tilde i_t, \tilde f_t, \tilde z_t, \tilde o_t &= x_t W + h_{t-1} R + b
            \quad \text{(gates i, f, z, o)}\\
        m_t &= \max(\log f_t + m_{t-1},\ \tilde i_t), \qquad \log f_t = \log\sigma(\tilde f_t)
            \ \text{(or } \tilde f_t \text{ with } \texttt{exponential\_forget}\text{)}\\
        i'_t &= \exp(\tilde i_t - m_t), \qquad f'_t = \exp(\log f_t + m_{t-1} - m_t)\\
        c_t &= f'_t \odot c_{t-1} + i'_t \odot \tanh(\tilde z_t), \qquad n_t = f'_t \odot n_{t-1} + i'_t\\
        h_t &= \sigma(\tilde o_t) \odot c_t / n_t

    The stabiliser ``m`` rescales ``c`` and ``n`` together, so ``h`` is that of the unstabilised cell
    (``i_t = exp(i~_t)``) without its overflow. One head: ``R`` is a full ``(H, 4H)`` matrix (the paper's
    block-diagonal heads are the special case of a block-diagonal ``R``). The carry is :class:`SLSTMState`, zero at
    the start. Gate order ``("i", "f", "z", "o")`` as in the reference implementation.

    Attributes:
      forget_bias: the initial forget-gate bias (default 1.0).
      exponential_forget: the exponential forget gate ``f_t = exp(f~_t)`` in place of the sigmoid.
    """

    forget_bias: float = option(1.0, number)
    exponential_forget: bool = option(False, boolean)

    name: ClassVar[str] = "slstm"
    params_type: ClassVar[type] = SLSTMParams
    gates: ClassVar[tuple[str, ...]] = ("i", "f", "z", "o")

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> SLSTMParams:
        """Parameters for inputs of size ``input_size``: :class:`SLSTMParams`; zero biases but the
        forget gate's ``forget_bias``."""
        w_x, w_h = self._init_kernels(key, input_size, dtype)
        h = self.hidden_size
        bias = jnp.zeros((4 * h,), dtype).at[h : 2 * h].set(self.forget_bias)
        return SLSTMParams(w_x, w_h, bias)

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> SLSTMState:
        zeros = jnp.zeros((*batch_shape, self.hidden_size), dtype)
        return SLSTMState(zeros, zeros, zeros, zeros)

    def step(self, params: SLSTMParams, carry: SLSTMState, u: Array) -> tuple[SLSTMState, Array]:
        u = self._check_step(carry, u)
        z = u + carry.h @ params.recurrent_kernel
        i_pre, f_pre = self.gate(z, "i"), self.gate(z, "f")
        log_f = f_pre if self.exponential_forget else jax.nn.log_sigmoid(f_pre)
        m = jnp.maximum(log_f + carry.m, i_pre)
        i, f = jnp.exp(i_pre - m), jnp.exp(log_f + carry.m - m)
        c = f * carry.c + i * jnp.tanh(self.gate(z, "z"))
        n = f * carry.n + i
        h = jax.nn.sigmoid(self.gate(z, "o")) * c / n
        return SLSTMState(h, c, n, m), h


class MLSTMParams(NamedTuple):
    """mLSTM parameters: ``input_kernel`` (D, 4H + 2K) and ``bias`` (4H + 2K,) for the query, key, value and output
    gate (H each, K heads of H/K side by side), then the input and forget gates' pre-activations (one per head)."""

    input_kernel: Array
    bias: Array


class MLSTMState(NamedTuple):
    """mLSTM carry, stabilised (the true memory is ``exp(m) c``): the matrix memory ``c`` (K, H/K, H/K), the
    normaliser ``n`` (K, H/K) and the stabiliser ``m`` (K,), for K heads."""

    c: Array
    n: Array
    m: Array

    def hidden(self) -> Array:
        """The (stabilised) matrix memory ``c`` flattened to ``(K d^2,)``."""
        return self.c.reshape(*self.m.shape[:-1], -1)

    def with_hidden(self, h: Array) -> MLSTMState:
        return self._replace(c=h.reshape(self.c.shape))


@dataclasses.dataclass(frozen=True, kw_only=True)
class MLSTM(LinearCell, forms.MatrixDecay):
    r"""xLSTM's mLSTM (Beck et al. 2024, section 2.3): a matrix memory with exponential input and sigmoid forget
    gates, both reading only the input, so that its recurrence is linear in the memory and runs in parallel.

    .. math::
        q_t &= x_t W_q + b_q, \quad k_t = (x_t W_k + b_k)/\sqrt{d}, \quad v_t = x_t W_v + b_v, \quad
        o_t = \sigma(x_t W_o + b_o)\\
        \tilde i_t &= x_t w_i + b_i, \quad \log f_t = \log\sigma(x_t w_f + b_f), \quad
        m_t = \max(\log f_t + m_{t-1},\ \tilde i_t)\\
        C_t &= f'_t C_{t-1} + i'_t\, v_t k_t^\top, \quad n_t = f'_t n_{t-1} + i'_t k_t, \quad
        i'_t = e^{\tilde i_t - m_t},\ f'_t = e^{\log f_t + m_{t-1} - m_t}\\
        h_t &= o_t \odot \frac{C_t q_t}{\max(|n_t^\top q_t|,\ e^{-m_t})}

    per head (``num_heads`` K heads of size d = H/K, each with scalar gates; without ``output_gate``,
    :math:`o_t = 1` and there is no ``o`` block, as in xLSTM's mLSTM block, which gates outside the cell:
    :class:`gated.mixers.MLSTMBlock`); ``C``, ``n`` are the stabilised
    memory and normaliser (the unstabilised ones times ``exp(-m_t)``), so the output equals the paper's
    ``C q / max(|n^T q|, 1)`` of the unstabilised memory. The recurrence is ``s_t = f_t s_{t-1} + e^{i~_t} b_t``
    in the true state, so the parallel forms scan the stabilised pairs (:mod:`gated.parallel`). Initialisation as
    in the reference code: zero input- and forget-gate kernels, forget biases ``linspace(3, 6, K)``, input biases
    ``N(0, 0.1^2)``. The carry is :class:`MLSTMState`, zero at the start. Gates ``("q", "k", "v", "o")``, then the
    K input and K forget pre-activations.

    Attributes:
      num_heads: K, which must divide H.
      output_gate: the output gate :math:`o_t` (default True; False: gates ``("q", "k", "v")`` only).
    """

    num_heads: int = option(1, integer, minimum=1)
    output_gate: bool = option(True, boolean)

    name: ClassVar[str] = "mlstm"
    params_type: ClassVar[type] = MLSTMParams
    stabilised: ClassVar[bool] = True

    @property
    def gates(self) -> tuple[str, ...]:
        return ("q", "k", "v", "o") if self.output_gate else ("q", "k", "v")

    @property
    def carry_shape(self) -> tuple[int, ...]:
        """The shape of the memory ``c``: ``(K, d, d)``."""
        return (self.num_heads, self.head_size, self.head_size)

    @property
    def projection_size(self) -> int:
        return self.num_gates * self.hidden_size + 2 * self.num_heads

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> MLSTMParams:
        k_x, k_i = jax.random.split(key)
        params = super().init(k_x, input_size, dtype)
        gh, k = self.num_gates * self.hidden_size, self.num_heads
        kernel = params.input_kernel.at[:, gh:].set(0.0)
        i_bias = 0.1 * jax.random.normal(k_i, (k,), jnp.float32)
        bias = params.bias.at[gh : gh + k].set(i_bias.astype(dtype))
        bias = bias.at[gh + k :].set(jnp.linspace(3.0, 6.0, k, dtype=jnp.float32).astype(dtype))
        return MLSTMParams(kernel, bias)

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> MLSTMState:
        k, d = self.num_heads, self.head_size
        zeros = lambda *shape: jnp.zeros((*batch_shape, *shape), dtype)
        return MLSTMState(zeros(k, d, d), zeros(k, d), zeros(k))

    def _heads(self, u: Array, name: str) -> Array:
        return self.gate(u, name).reshape(self.num_heads, self.head_size)

    def coefficients(self, params, u):
        """``(log f_t (K,), i~_t (K,), (v_t k_t^T, k_t))``: the stabilised update's coefficients."""
        gh, k = self.num_gates * self.hidden_size, self.num_heads
        keys = self._heads(u, "k") / math.sqrt(self.head_size)
        values = self._heads(u, "v")
        log_f = jax.nn.log_sigmoid(u[gh + k :])
        return log_f, u[gh : gh + k], (values[:, :, None] * keys[:, None, :], keys)

    def to_state(self, carry):
        return carry.m, (carry.c, carry.n)

    def from_state(self, state):
        m, (c, n) = state
        return MLSTMState(c, n, m)

    def output(self, params, state, u):
        m, (c, n) = state
        q = self._heads(u, "q")
        return self.read(params, forms.Reads(jnp.einsum("kab,kb->ka", c, q), jnp.sum(n * q, axis=-1), m), u)

    # The chunkwise form (gated.chunkwise): the per-head pieces of a step and the output from what it reads.
    def heads(self, params, u) -> forms.Heads:
        """``(q, k, v, log f_t, i~_t)`` of one step, per head: ``(K, d)`` each but the gates' ``(K,)``: the true
        memory's update ``C_t = f_t C_{t-1} + e^{i~_t} v_t k_t^T``, read by ``q``."""
        log_f, i_pre, (_, keys) = self.coefficients(params, u)
        return forms.Heads(self._heads(u, "q"), keys, self._heads(u, "v"), log_f, i_pre)

    def read(self, params, reads: forms.Reads, u):
        """``h_t`` from the stabilised memory's read ``C_t q_t`` ``(K, d)``, the normaliser's ``n_t^T q_t`` ``(K,)``
        and the stabiliser ``m_t`` ``(K,)``."""
        scale = jnp.maximum(jnp.abs(reads.norm), jnp.exp(-reads.m))
        h = (reads.value / scale[:, None]).reshape(self.hidden_size)
        return jax.nn.sigmoid(self.gate(u, "o")) * h if self.output_gate else h

    def matrix_state(self, carry):
        """The stabilised memory ``(K, d, d)``, the normaliser ``(K, d)`` and the stabiliser ``(K,)``."""
        return forms.MatrixCarry(carry.c, carry.n, carry.m)

    def from_matrix_state(self, state):
        return MLSTMState(state.c, state.n, state.m)
