"""The LSTM: input, forget and output gates, peepholes, coupled gates (Hochreiter & Schmidhuber 1997;
Gers et al. 2000; Greff et al. 2017)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import init as initializers
from gated.options import boolean, integer, number, option

from .base import Array, RecurrentCell


class LSTMParams(NamedTuple):
    """LSTM parameters, gate blocks in the order ``cell.gates``.

    ``input_kernel`` (D, G*H), ``recurrent_kernel`` (H, G*H), ``bias`` (G*H,),
    ``peepholes`` (P*H,) diagonal peephole weights in the order
    ``cell.peephole_gates``, or None without peepholes.
    """

    input_kernel: Array
    recurrent_kernel: Array
    bias: Array
    peepholes: Array | None = None


class LSTMState(NamedTuple):
    """LSTM carry: hidden state ``h`` (H,) and cell state ``c`` (H,)."""

    h: Array
    c: Array

    def hidden(self) -> Array:
        """The hidden state the diagnostics follow (:func:`gated.diagnostics.hidden`): ``h``."""
        return self.h

    def with_hidden(self, h: Array) -> LSTMState:
        return self._replace(h=h)


class LSTMGates(NamedTuple):
    """Gate activations of one LSTM step, ``(H,)`` each, and the new cell state ``c``."""

    i: Array
    f: Array
    g: Array
    o: Array
    c: Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class LSTM(RecurrentCell):
    r"""Long short-term memory cell (seed 002 equations; Khapra's s_t is c_t).

    .. math::
        i_t &= \sigma(x_t W_{xi} + h_{t-1} W_{hi} + b_i)   && \text{input gate}\\
        f_t &= \sigma(x_t W_{xf} + h_{t-1} W_{hf} + b_f)   && \text{forget gate}\\
        g_t &= \tanh(x_t W_{xg} + h_{t-1} W_{hg} + b_g)    && \text{candidate}\\
        o_t &= \sigma(x_t W_{xo} + h_{t-1} W_{ho} + b_o)   && \text{output gate}\\
        c_t &= f_t * c_{t-1} + i_t * g_t\\
        h_t &= o_t * \tanh(c_t)

    Gate order ``cell.gates``: ``("i", "f", "g", "o")`` as in PyTorch and Flax's
    ``OptimizedLSTMCell``; ``("i", "g", "o")`` when there is no forget block
    (``coupled`` or ``forget_gate=False``). The carry is ``LSTMState(h, c)``.

    Attributes:
      forget_bias: added to the forget-gate bias at init (default 1.0, Gers et
        al. 2000; Jozefowicz et al. 2015). For ``coupled`` it is subtracted from
        the input-gate bias (f = 1 - i). Ignored with ``forget_gate=False``.
      peepholes: diagonal peephole connections (Gers & Schmidhuber 2000): i_t
        and f_t also see ``p * c_{t-1}``, o_t sees ``p_o * c_t``. Initialised
        to zero, so a peephole cell starts as the plain cell.
      coupled: coupled input and forget gates (CIFG): f_t = 1 - i_t.
      forget_gate: False gives the 1997 cell without a forget gate,
        c_t = c_{t-1} + i_t * g_t.
      chrono_init: if set to T_max, chrono initialisation of the gate biases:
        b_f = log(U[1, T_max - 1]), b_i = -b_f (Tallec & Ollivier 2018),
        replacing ``forget_bias``.

    References:
      Hochreiter & Schmidhuber 1997; Gers, Schmidhuber & Cummins 2000;
      Greff et al. 2017, "LSTM: A search space odyssey" (CIFG, peepholes).
    """

    forget_bias: float = option(1.0, number)
    peepholes: bool = option(False, boolean)
    coupled: bool = option(False, boolean)
    forget_gate: bool = option(True, boolean)
    chrono_init: int | None = option(None, integer, optional=True, minimum=3, expected="an int T_max > 2 or None")

    name: ClassVar[str] = "lstm"
    params_type: ClassVar[type] = LSTMParams
    kernel: ClassVar[str | None] = "lstm"

    def kernel_limits(self) -> str | None:
        if self.peepholes or self.coupled or not self.forget_gate:
            return "covers the cell with a forget gate, without peepholes or coupling"
        return None

    def __post_init__(self):
        super().__post_init__()
        if self.coupled and not self.forget_gate:
            raise ValueError("coupled=True ties the forget gate to the input gate; it needs forget_gate=True")
        if self.chrono_init is not None and not self.forget_gate:
            raise ValueError("chrono_init: sets the forget-gate bias; it needs forget_gate=True")

    @property
    def gates(self) -> tuple[str, ...]:
        return ("i", "f", "g", "o") if self.forget_gate and not self.coupled else ("i", "g", "o")

    @property
    def peephole_gates(self) -> tuple[str, ...]:
        """Gates with a peephole, in the order of ``params.peepholes``."""
        if not self.peepholes:
            return ()
        return ("i", "f", "o") if "f" in self.gates else ("i", "o")

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> LSTMParams:
        """Parameters for inputs of size ``input_size``; see the class docstring for the biases."""
        k_kernels, k_chrono = jax.random.split(key)
        w_x, w_h = self._init_kernels(k_kernels, input_size, dtype)
        h = self.hidden_size
        blocks = {name: jnp.zeros((h,), dtype) for name in self.gates}
        if self.forget_gate:
            if self.chrono_init is not None:
                forget = initializers.chrono(k_chrono, h, self.chrono_init, dtype)
            else:
                forget = jnp.full((h,), self.forget_bias, dtype)
            if self.coupled:
                blocks["i"] = -forget
            else:
                blocks["f"] = forget
                if self.chrono_init is not None:
                    blocks["i"] = -forget
        bias = jnp.concatenate([blocks[name] for name in self.gates])
        peepholes = jnp.zeros((len(self.peephole_gates) * h,), dtype) if self.peepholes else None
        return LSTMParams(w_x, w_h, bias, peepholes)

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> LSTMState:
        zeros = jnp.zeros((*batch_shape, self.hidden_size), dtype)
        return LSTMState(zeros, zeros)

    def gate_activations(self, params: LSTMParams, carry: LSTMState, u: Array) -> LSTMGates:
        """The gate activations of one step and the new cell state (``step`` is built on this).

        ``f`` is ``1 - i`` for a coupled cell and ones without a forget gate, so
        that ``c = f * c_prev + i * g`` in every variant.
        """
        u = self._check_step(carry, u)
        h, c = carry
        z = u + h @ params.recurrent_kernel
        pre = {name: self.gate(z, name) for name in self.gates}
        p = {}
        if self.peepholes:
            n = len(self.peephole_gates)
            if params.peepholes is None or params.peepholes.shape != (n * self.hidden_size,):
                got = None if params.peepholes is None else params.peepholes.shape
                raise ValueError(f"params.peepholes: expected shape {(n * self.hidden_size,)}, got {got}")
            p = dict(zip(self.peephole_gates, params.peepholes.reshape(n, self.hidden_size), strict=True))
            pre["i"] = pre["i"] + p["i"] * c
            if "f" in p:
                pre["f"] = pre["f"] + p["f"] * c
        i = jax.nn.sigmoid(pre["i"])
        g = jnp.tanh(pre["g"])
        if not self.forget_gate:
            f = jnp.ones_like(i)
        else:
            f = 1.0 - i if self.coupled else jax.nn.sigmoid(pre["f"])
        c_new = f * c + i * g
        o = jax.nn.sigmoid(pre["o"] + p["o"] * c_new if self.peepholes else pre["o"])
        return LSTMGates(i, f, g, o, c_new)

    def step(self, params: LSTMParams, carry: LSTMState, u: Array) -> tuple[LSTMState, Array]:
        act = self.gate_activations(params, carry, u)
        h_new = act.o * jnp.tanh(act.c)
        return LSTMState(h_new, act.c), h_new

    def other_states(self, carry: LSTMState) -> dict[str, Array]:
        return {"c": carry.c}

    # The gated path (gated.diagnostics.gate_path): the state the gates carry across time, c, its per-step keep
    # factor f, its update from gates held fixed, and the slope dh/dc that reads it out.
    def gated_state(self, carry: LSTMState) -> Array:
        return carry.c

    def with_gated_state(self, carry: LSTMState, c: Array) -> LSTMState:
        return carry._replace(c=c)

    def keep(self, act: LSTMGates) -> Array:
        return act.f

    def gated_update(self, act: LSTMGates, carry: LSTMState) -> LSTMState:
        c_new = act.f * carry.c + act.i * act.g
        return LSTMState(act.o * jnp.tanh(c_new), c_new)

    def readout_slope(self, act: LSTMGates) -> Array | None:
        """``dh/dc`` of one step, ``o tanh'(c)``."""
        return act.o * (1.0 - jnp.tanh(act.c) ** 2)
