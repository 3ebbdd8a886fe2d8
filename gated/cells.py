"""Recurrent cells as pure functions over pytrees.

Notation: D input size, H hidden size, G number of fused gates. A cell is
written for ONE example (no batch axis): ``x`` is ``(D,)``, ``h`` is ``(H,)``.
Batches come from ``jax.vmap``, time from ``jax.lax.scan`` (see
:func:`gated.run`).

Every cell splits into

* ``u = cell.project(params, x)``: the input-side affine map ``x W_x + b``
  ``(G*H,)``, which depends on ``x`` only and so is computed for all time steps
  at once, outside the scan, on :func:`gated.run`'s reference path;
* ``carry, y = cell.step(params, carry, u)``: the recurrent part, the only
  thing inside the scan;
* ``carry, y = cell(params, carry, x)``: both.

Parameters are NamedTuples with fused gates: an input kernel ``(D, G*H)``, a
recurrent kernel ``(H, G*H)`` and a bias ``(G*H,)``, gate blocks side by side
in the order given by ``cell.gates``. Cells are frozen dataclasses: hashable,
so they can be static arguments of ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import init as initializers
from gated import options as opts
from gated.options import boolean, choice, integer, number, option

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda z: z,
}


class RNNParams(NamedTuple):
    """Vanilla RNN parameters: ``input_kernel`` (D, H), ``recurrent_kernel`` (H, H), ``bias`` (H,)."""

    input_kernel: Array
    recurrent_kernel: Array
    bias: Array


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


class GRUGates(NamedTuple):
    """Reset gate ``r``, update gate ``z`` and candidate ``n`` of one GRU step, ``(H,)`` each."""

    r: Array
    z: Array
    n: Array


class GRUParams(NamedTuple):
    """GRU parameters, gate blocks in the order r, z, n.

    ``input_kernel`` (D, 3H), ``recurrent_kernel`` (H, 3H), ``bias`` (3H,) and,
    for ``reset="after"`` only, ``candidate_bias`` (H,): the bias b_hn inside
    the reset product ``r * (h W_hn + b_hn)``; None for ``reset="before"``.
    """

    input_kernel: Array
    recurrent_kernel: Array
    bias: Array
    candidate_bias: Array | None = None


def _check_array(name: str, x: Any, shape: tuple[int, ...], what: str) -> Array:
    """Returns ``x`` as an array after checking its dtype is floating and its shape is ``shape``."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
    if x.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} ({what}), got {x.shape}")
    return x


@dataclasses.dataclass(frozen=True)
class Cell:
    """What every cell has.

    Attributes:
      hidden_size: H, the size of the hidden state.
    """

    hidden_size: int = option(check=integer, minimum=1)
    _: dataclasses.KW_ONLY

    name: ClassVar[str]
    gates: ClassVar[tuple[str, ...]]
    # Which sequence kernel of gated.fused and gated.native runs this cell ("rnn", "lstm", "gru"), or None.
    kernel: ClassVar[str | None] = None
    # Whether the recurrence is linear in the state, so that gated.parallel's forms run it (LinearCell).
    linear: ClassVar[bool] = False

    def kernel_limits(self) -> str | None:
        """What of this cell's options its kernel does not cover ("covers ..."), or None."""
        return None

    def __post_init__(self):
        # Every option's type, finiteness and range, from its field (gated.options); a subclass's __post_init__
        # then checks what ties options together.
        opts.check_fields(self)

    @property
    def num_gates(self) -> int:
        """G, the number of fused gate blocks."""
        return len(self.gates)

    @property
    def carry_shape(self) -> tuple[int, ...]:
        """The shape of each carry leaf for one example: ``(H,)``, or ``(H, N)`` for a state of N per unit."""
        return (self.hidden_size,)

    @property
    def projection_size(self) -> int:
        """The size of ``project(params, x)``: G*H (more for a cell with per-step vectors of another size)."""
        return self.num_gates * self.hidden_size

    def gate(self, fused: Array, name: str) -> Array:
        """The block of a fused ``(..., G*H)`` array that belongs to gate ``name``."""
        k = self.gates.index(name)
        h = self.hidden_size
        return fused[..., k * h : (k + 1) * h]

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        """Zero carry; ``batch_shape`` prepends batch axes to every leaf."""
        return jnp.zeros((*batch_shape, self.hidden_size), dtype)

    def project(self, params, x: Array) -> Array:
        """Input projection ``x W_x + b`` of one example: ``(D,) -> (G*H,)``."""
        d = params.input_kernel.shape[0]
        x = _check_array("x", x, (d,), "one example of input_size D; batch with jax.vmap or gated.run")
        return x @ params.input_kernel + params.bias

    def carry_shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shape of every carry leaf for one example, in the order of ``jax.tree.leaves``."""
        return tuple(leaf.shape for leaf in jax.tree.leaves(jax.eval_shape(self.initial_carry)))

    def _check_step(self, carry, u: Array) -> Array:
        shapes = self.carry_shapes()
        leaves = jax.tree.leaves(carry)
        if len(leaves) != len(shapes):
            raise ValueError(f"carry: expected {len(shapes)} leaves (cell.initial_carry()), got {len(leaves)}")
        for i, (leaf, shape) in enumerate(zip(leaves, shapes, strict=True)):
            what = "hidden_size H, one example" if shape == (self.hidden_size,) else "one example"
            _check_array(f"carry (leaf {i})", leaf, shape, what)
        return _check_array("u", u, (self.projection_size,), "G*H, the output of cell.project")

    def step(self, params, carry, u: Array):
        """Recurrent part: ``(carry, u) -> (carry, y)``."""
        raise NotImplementedError

    def __call__(self, params, carry, x: Array):
        """One time step on one example: ``step(params, carry, project(params, x))``."""
        return self.step(params, carry, self.project(params, x))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecurrentCell(Cell):
    """A cell with a recurrent matrix ``h_{t-1} W_h`` (the RNN, LSTM, GRU and sLSTM), and the options of its
    initialisation; the cells without one (the gated linear recurrences) have neither, and refuse them.

    Attributes:
      recurrent_init: initialiser of the recurrent kernel, applied per gate
        block: "orthogonal" (default), "gaussian" (std recurrent_scale/sqrt(H))
        or "identity" (IRNN). See :mod:`gated.init`.
      recurrent_scale: spectral radius of each recurrent gate block at init
        (exact for "orthogonal" and "identity", asymptotic for "gaussian").
    """

    recurrent_init: str = option("orthogonal", choice, choices=initializers.RECURRENT_INITS)
    recurrent_scale: float = option(1.0, number)

    def _init_kernels(self, key: Array, input_size: int, dtype) -> tuple[Array, Array]:
        input_size = integer("input_size", input_size)
        k_in, k_rec = jax.random.split(key)
        h, g = self.hidden_size, self.num_gates
        w_x = initializers.input_kernel(k_in, input_size, g * h, dtype)
        w_h = initializers.recurrent_kernel(self.recurrent_init, k_rec, h, g, self.recurrent_scale, dtype)
        return w_x, w_h


@dataclasses.dataclass(frozen=True, kw_only=True)
class RNN(RecurrentCell):
    r"""Vanilla (Elman) RNN cell.

    .. math::
        h_t = \phi(x_t W_{xh} + h_{t-1} W_{hh} + b)

    The output ``y_t`` is ``h_t``; a readout ``y = h W_hy`` belongs to the
    model. Gate order: a single block ``("h",)``.

    Attributes:
      activation: phi, one of "tanh", "relu", "sigmoid", "identity".

    References:
      Elman 1990, "Finding structure in time".
    """

    activation: str = option("tanh", choice, choices=tuple(ACTIVATIONS))

    name: ClassVar[str] = "rnn"
    gates: ClassVar[tuple[str, ...]] = ("h",)
    kernel: ClassVar[str | None] = "rnn"

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> RNNParams:
        """Parameters for inputs of size ``input_size``; zero bias."""
        w_x, w_h = self._init_kernels(key, input_size, dtype)
        return RNNParams(w_x, w_h, jnp.zeros((self.hidden_size,), dtype))

    def step(self, params: RNNParams, carry: Array, u: Array) -> tuple[Array, Array]:
        u = self._check_step(carry, u)
        h = ACTIVATIONS[self.activation](u + carry @ params.recurrent_kernel)
        return h, h


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class GRU(RecurrentCell):
    r"""Gated recurrent unit, in both published conventions.

    .. math::
        r_t &= \sigma(x_t W_{xr} + h_{t-1} W_{hr} + b_r)  && \text{reset gate}\\
        z_t &= \sigma(x_t W_{xz} + h_{t-1} W_{hz} + b_z)  && \text{update gate}\\
        n_t &= \tanh(x_t W_{xn} + (r_t * h_{t-1}) W_{hn} + b_n)
              && \text{reset="before" (seed 002, Cho et al. 2014)}\\
        n_t &= \tanh(x_t W_{xn} + r_t * (h_{t-1} W_{hn} + b_{hn}) + b_n)
              && \text{reset="after" (PyTorch, cuDNN, Flax)}\\
        h_t &= z_t * h_{t-1} + (1 - z_t) * n_t
              && \text{update="keep" (seed 002, PyTorch, Flax)}\\
        h_t &= (1 - z_t) * h_{t-1} + z_t * n_t
              && \text{update="write" (seeds 000/003, Chung et al. 2014)}

    Gate order: ``("r", "z", "n")`` as in PyTorch. Khapra's lecture GRU (gates
    read s_{t-1}; o_t plays the reset gate, i_t the update gate with the
    forget gate tied to 1 - i_t) is ``reset="before", update="write"``.
    The defaults, ``reset="after", update="keep"``, match PyTorch's
    ``nn.GRU`` and Flax's ``GRUCell``.

    Attributes:
      update: "keep" (z keeps the old state) or "write" (z writes the new one).
      reset: "after" (reset applied after the recurrent matmul, with the extra
        bias b_hn in ``params.candidate_bias``) or "before" (reset applied to
        h before the matmul).
      chrono_init: if set to T_max, the update-gate bias is drawn so that the
        gate keeps the state with time scales in [1, T_max] (Tallec &
        Ollivier 2018): b_z = +log(U[1, T_max-1]) for "keep", minus that for "write".

    References:
      Cho et al. 2014; Chung et al. 2014, "Empirical evaluation of gated
      recurrent neural networks on sequence modeling".
    """

    update: str = option("keep", choice, choices=("keep", "write"))
    reset: str = option("after", choice, choices=("before", "after"))
    chrono_init: int | None = option(None, integer, optional=True, minimum=3, expected="an int T_max > 2 or None")

    name: ClassVar[str] = "gru"
    gates: ClassVar[tuple[str, ...]] = ("r", "z", "n")
    kernel: ClassVar[str | None] = "gru"

    def kernel_limits(self) -> str | None:
        return "covers reset='after' only" if self.reset != "after" else None

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> GRUParams:
        """Parameters for inputs of size ``input_size``; zero biases unless ``chrono_init``."""
        k_kernels, k_chrono = jax.random.split(key)
        w_x, w_h = self._init_kernels(k_kernels, input_size, dtype)
        h = self.hidden_size
        b_z = jnp.zeros((h,), dtype)
        if self.chrono_init is not None:
            b_z = initializers.chrono(k_chrono, h, self.chrono_init, dtype)
            b_z = b_z if self.update == "keep" else -b_z
        zeros = jnp.zeros((h,), dtype)
        bias = jnp.concatenate([zeros, b_z, zeros])
        return GRUParams(w_x, w_h, bias, zeros if self.reset == "after" else None)

    def gate_activations(self, params: GRUParams, carry: Array, u: Array) -> GRUGates:
        """The reset and update gates and the candidate of one step (``step`` is built on this)."""
        u = self._check_step(carry, u)
        h = carry
        hh = self.hidden_size
        w = params.recurrent_kernel
        if self.reset == "after":
            if params.candidate_bias is None or params.candidate_bias.shape != (hh,):
                got = None if params.candidate_bias is None else params.candidate_bias.shape
                raise ValueError(f"params.candidate_bias: expected shape {(hh,)} for reset='after', got {got}")
            rec = h @ w
            rz = jax.nn.sigmoid(u[: 2 * hh] + rec[: 2 * hh])
            r, z = rz[:hh], rz[hh:]
            n = jnp.tanh(u[2 * hh :] + r * (rec[2 * hh :] + params.candidate_bias))
        else:
            if params.candidate_bias is not None:
                raise ValueError("params.candidate_bias: expected None for reset='before' (it has no b_hn)")
            rz = jax.nn.sigmoid(u[: 2 * hh] + h @ w[:, : 2 * hh])
            r, z = rz[:hh], rz[hh:]
            n = jnp.tanh(u[2 * hh :] + (r * h) @ w[:, 2 * hh :])
        return GRUGates(r, z, n)

    def keep_fraction(self, z: Array) -> Array:
        """The share of h_{t-1} kept in h_t: z for update="keep", 1 - z for "write"."""
        return z if self.update == "keep" else 1.0 - z

    def step(self, params: GRUParams, carry: Array, u: Array) -> tuple[Array, Array]:
        act = self.gate_activations(params, carry, u)
        keep = self.keep_fraction(act.z)
        h_new = keep * carry + (1.0 - keep) * act.n
        return h_new, h_new


class LinearParams(NamedTuple):
    """Parameters of a gated linear recurrence whose gates read only the input: ``input_kernel`` (D, G*H) and
    ``bias`` (G*H,), gate blocks in the order ``cell.gates``; plus, per cell, the recurrence's own vectors
    (``recurrence``: the RG-LRU's Lambda (H,), or None)."""

    input_kernel: Array
    bias: Array
    recurrence: Array | None = None


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


def positive(z: Array) -> Array:
    """Feng et al.'s g: ``z + 1/2`` for ``z >= 0``, ``sigmoid(z)`` below: positive and continuous, so that the
    state stays positive and the recurrence can run in log space."""
    return jnp.where(z >= 0, z + 0.5, jax.nn.sigmoid(z))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LinearCell(Cell):
    r"""A gated linear recurrence: elementwise and linear in the state, its gates functions of the input only,

    .. math::
        s_t = a_t \odot s_{t-1} + b_t, \qquad (a_t, b_t) = \text{coefficients}(x_t), \qquad
        y_t = \text{output}(s_t, x_t)

    so that a whole sequence can also be computed with a parallel (associative) scan
    (:mod:`gated.parallel`), and the state Jacobian ``ds_t/ds_{t-1} = diag(a_t)`` is diagonal. The state ``s`` is
    the carry, or (LRU) a complex number made of it, or (mLSTM) a stabilised pair (see ``stabilised``).
    There is no recurrent matrix, so there are no ``recurrent_init`` and ``recurrent_scale`` options.
    """

    linear: ClassVar[bool] = True
    log_space: ClassVar[bool] = False
    # A stabilised recurrence (xLSTM's mLSTM) keeps its state as ``(m, s)``, the true state being ``exp(m) s``, and
    # its coefficients are ``(log a_t, log b_t, b_t)``, the update ``exp(log a_t) s_{t-1} + exp(log b_t) b_t``:
    # exponential gates without overflow. See :mod:`gated.parallel` for its associative operator.
    stabilised: ClassVar[bool] = False

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> LinearParams:
        input_size = integer("input_size", input_size)
        w_x = initializers.input_kernel(key, input_size, self.projection_size, dtype)
        return LinearParams(w_x, self._bias(dtype), None)

    def _bias(self, dtype) -> Array:
        return jnp.zeros((self.projection_size,), dtype)

    def coefficients(self, params, u: Array) -> tuple[Array, Array]:
        """``(a_t, b_t)`` of one step from ``u = project(params, x)``, each shaped like the state."""
        raise NotImplementedError

    def to_state(self, carry) -> Array:
        """The state ``s`` the recurrence is linear in, from a carry (the carry itself, but for the LRU)."""
        return carry

    def from_state(self, state: Array):
        """The carry of a state (the inverse of :meth:`to_state`)."""
        return state

    def output(self, params, state: Array, u: Array) -> Array:
        """``y_t`` from the new state (the state itself, but for the LRU)."""
        return state

    def step(self, params, carry, u: Array):
        u = self._check_step(carry, u)
        if self.stabilised:  # the state (m, s) is the update (-inf, m, s) composed with this step's
            state = stabilised_combine((-jnp.inf, *self.to_state(carry)), self.coefficients(params, u))[1:]
        else:
            a, b = self.coefficients(params, u)
            state = a * self.to_state(carry) + b
        return self.from_state(state), self.output(params, state, u)


def stabilised_combine(earlier, later):
    """The composition of two stabilised updates ``s -> exp(la) s + exp(lb) b`` (``la``, ``lb`` per head, ``b`` a
    pytree of per-head arrays): ``(la1 + la2, m, exp(la2 + lb1 - m) b1 + exp(lb2 - m) b2)`` with
    ``m = max(la2 + lb1, lb2)``. Associative, so the parallel forms scan with it (:mod:`gated.parallel`); the max is
    the stabiliser's recursion, so a step (the state ``(m, s)`` as the update ``(-inf, m, s)`` composed with the
    step's) and a scan give the same ``m_t``."""
    la1, lb1, b1 = earlier
    la2, lb2, b2 = later
    first = la2 + lb1
    m = jnp.maximum(first, lb2)
    safe = jnp.where(m == -jnp.inf, 0.0, m)  # both terms empty: no NaN from -inf - -inf
    w1, w2 = jnp.exp(first - safe), jnp.exp(lb2 - safe)
    b = jax.tree.map(lambda x, y: trailing_axes(w1, x.ndim) * x + trailing_axes(w2, y.ndim) * y, b1, b2)
    return la1 + la2, m, b


def trailing_axes(w: Array, ndim: int) -> Array:
    """``w`` with trailing unit axes up to rank ``ndim``, to broadcast against an array of that rank whose leading axes
    are ``w``'s (a per-head factor against a head's memory; per-step flags against a state)."""
    return w.reshape(*w.shape, *([1] * (ndim - w.ndim)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class MinGRU(LinearCell):
    r"""minGRU (Feng et al. 2024, "Were RNNs all we needed?"): a GRU whose gate and candidate read only the input.

    .. math::
        z_t &= \sigma(x_t W_z + b_z), \qquad \tilde h_t = g(x_t W_h + b_h)\\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    with ``g`` the identity, or with ``log_space=True`` Feng et al.'s positive ``g`` (:func:`positive`), which
    keeps ``h`` positive (from a non-negative initial carry) so that the parallel forms run in log space, stable
    over long sequences. Gates ``("z", "h")``.
    """

    log_space: bool = option(False, boolean)

    name: ClassVar[str] = "mingru"
    gates: ClassVar[tuple[str, ...]] = ("z", "h")

    def coefficients(self, params, u):
        z = jax.nn.sigmoid(self.gate(u, "z"))
        candidate = self.gate(u, "h")
        candidate = positive(candidate) if self.log_space else candidate
        return 1.0 - z, z * candidate


@dataclasses.dataclass(frozen=True, kw_only=True)
class MinLSTM(LinearCell):
    r"""minLSTM (Feng et al. 2024): an LSTM without the output gate and cell/hidden split, gates from the input only,
    forget and input gates normalised to sum to one (their time-independent form).

    .. math::
        f_t &= \sigma(x_t W_f + b_f), \quad i_t = \sigma(x_t W_i + b_i), \quad \tilde h_t = g(x_t W_h + b_h)\\
        h_t &= \frac{f_t}{f_t + i_t} \odot h_{t-1} + \frac{i_t}{f_t + i_t} \odot \tilde h_t

    ``g`` as in :class:`MinGRU` (``log_space``). Gates ``("f", "i", "h")``.

    Attributes:
      forget_bias: the initial forget-gate bias (default 1.0, as the LSTM's).
    """

    log_space: bool = option(False, boolean)
    forget_bias: float = option(1.0, number)

    name: ClassVar[str] = "minlstm"
    gates: ClassVar[tuple[str, ...]] = ("f", "i", "h")

    def _bias(self, dtype):
        h = self.hidden_size
        return jnp.concatenate([jnp.full((h,), self.forget_bias, dtype), jnp.zeros((2 * h,), dtype)])

    def coefficients(self, params, u):
        # f / (f + i) = sigmoid(softplus(-a_i) - softplus(-a_f)) with f = sigmoid(a_f), i = sigmoid(a_i): stable
        log_f, log_i = -jax.nn.softplus(-self.gate(u, "f")), -jax.nn.softplus(-self.gate(u, "i"))
        keep = jax.nn.sigmoid(log_f - log_i)
        candidate = self.gate(u, "h")
        candidate = positive(candidate) if self.log_space else candidate
        return keep, (1.0 - keep) * candidate


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
    max_phase: float = option(2 * math.pi, number, low=0.0, high=2 * math.pi, low_open=True,
                              expected="a number in (0, 2 pi]")  # fmt: skip

    name: ClassVar[str] = "lru"
    gates: ClassVar[tuple[str, ...]] = ("re", "im", "skip")

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
            cast(jnp.concatenate([b, skip], axis=1)), jnp.zeros((3 * h,), dtype), cast(nu_log), cast(theta_log),
            cast(gamma_log), cast(c[:, :h]), cast(c[:, h:]),
        )  # fmt: skip

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class RGLRU(LinearCell):
    r"""Real-gated linear recurrent unit (De et al. 2024, Hawk and Griffin).

    .. math::
        r_t &= \sigma(x_t W_a + b_a), \qquad i_t = \sigma(x_t W_x + b_x), \qquad v_t = x_t W_v + b_v\\
        a_t &= \sigma(\Lambda)^{c\, r_t}, \qquad
        h_t = a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot v_t)

    with ``c = 8``; ``log a_t = -c r_t softplus(-Lambda)`` is computed in log space. ``Lambda`` is initialised so
    that ``a^c = sigma(Lambda)^c`` is uniform in ``[a_min, a_max]``. In Griffin the input ``v`` is the block's
    own branch of width H; here it is the projection ``x W_v``. Gates ``("a", "x", "v")``.
    """

    c: float = option(8.0, number, low=0.0, low_open=True)
    a_min: float = option(0.9, number, low=0.0, high=1.0, low_open=True, high_open=True)
    a_max: float = option(0.999, number, low=0.0, high=1.0, low_open=True, high_open=True)

    name: ClassVar[str] = "rglru"
    gates: ClassVar[tuple[str, ...]] = ("a", "x", "v")

    def __post_init__(self):
        super().__post_init__()
        if not self.a_min < self.a_max:
            raise ValueError(f"a_min, a_max: expected 0 < a_min < a_max < 1, got {self.a_min!r}, {self.a_max!r}")

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> LinearParams:
        k_x, k_a = jax.random.split(key)
        params = super().init(k_x, input_size, dtype)
        a_c = jax.random.uniform(k_a, (self.hidden_size,), jnp.float32, self.a_min, self.a_max)
        a = a_c ** (1.0 / self.c)
        return params._replace(recurrence=jnp.log(a / (1.0 - a)).astype(dtype))  # Lambda = logit(a)

    def coefficients(self, params, u):
        if params.recurrence is None or params.recurrence.shape != (self.hidden_size,):
            got = None if params.recurrence is None else params.recurrence.shape
            raise ValueError(f"params.recurrence: expected Lambda of shape {(self.hidden_size,)}, got {got}")
        r = jax.nn.sigmoid(self.gate(u, "a"))
        log_a = -self.c * r * jax.nn.softplus(-params.recurrence)
        a = jnp.exp(log_a)
        scale = jnp.sqrt(-jnp.expm1(2.0 * log_a))  # sqrt(1 - a^2), accurate as a -> 1
        return a, scale * jax.nn.sigmoid(self.gate(u, "x")) * self.gate(u, "v")


class SSMParams(NamedTuple):
    """Selective SSM parameters: ``input_kernel`` (D, 2H + 2N) and ``bias`` (2H + 2N,) for the step size, the
    channel input, B and C side by side; ``a_log`` (H, N) with A = -exp(a_log); ``skip`` (H,), the D of Mamba."""

    input_kernel: Array
    bias: Array
    a_log: Array
    skip: Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class SelectiveSSM(LinearCell):
    r"""A diagonal selective state-space model in the style of Mamba's S6 (Gu & Dao 2023), for one example.

    .. math::
        \Delta_t &= \mathrm{softplus}(x_t W_\Delta + b_\Delta), \quad v_t = x_t W_v + b_v, \quad
        B_t = x_t W_B + b_B, \quad C_t = x_t W_C + b_C\\
        h_t &= \exp(\Delta_t A) \odot h_{t-1} + (\Delta_t v_t) B_t^\top, \qquad y_t = h_t C_t + D \odot v_t

    per channel (H channels, each with a state of ``state_size`` N): the step size, B and C depend on the input
    (the selection), ``A = -exp(a_log)`` is real, diagonal and negative (S4D-real initialisation
    ``A[:, n] = -(n + 1)``), ``exp(Delta A)`` is the zero-order hold and ``Delta B`` the Euler step of the
    discretisation, as in Mamba's reference code. The step-size bias is drawn so that ``softplus(b_Delta)`` is
    log-uniform in ``[dt_min, dt_max]``. The carry is ``(H, N)``; ``y`` has size H. Gates ``("dt", "v")``, then B
    and C (N each) at the end of the projection.
    """

    state_size: int = option(16, integer, minimum=1)
    dt_min: float = option(1e-3, number, low=0.0, low_open=True)
    dt_max: float = option(0.1, number, low=0.0, low_open=True)

    name: ClassVar[str] = "ssm"
    gates: ClassVar[tuple[str, ...]] = ("dt", "v")

    def __post_init__(self):
        super().__post_init__()
        if not self.dt_min < self.dt_max:
            raise ValueError(f"dt_min, dt_max: expected 0 < dt_min < dt_max, got {self.dt_min!r}, {self.dt_max!r}")

    @property
    def carry_shape(self) -> tuple[int, ...]:
        return (self.hidden_size, self.state_size)

    @property
    def projection_size(self) -> int:
        return 2 * self.hidden_size + 2 * self.state_size

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> SSMParams:
        k_x, k_dt = jax.random.split(key)
        params = super().init(k_x, input_size, dtype)
        h, n = self.hidden_size, self.state_size
        dt = jnp.exp(jax.random.uniform(k_dt, (h,), jnp.float32, math.log(self.dt_min), math.log(self.dt_max)))
        dt_bias = dt + jnp.log(-jnp.expm1(-dt))  # softplus^-1(dt)
        bias = params.bias.at[:h].set(dt_bias.astype(dtype))
        a_log = jnp.broadcast_to(jnp.log(jnp.arange(1, n + 1, dtype=jnp.float32)), (h, n)).astype(dtype)
        return SSMParams(params.input_kernel, bias, a_log, jnp.ones((h,), dtype))

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> Array:
        return jnp.zeros((*batch_shape, *self.carry_shape), dtype)

    def _pieces(self, u: Array) -> tuple[Array, Array, Array, Array]:
        h, n = self.hidden_size, self.state_size
        return jax.nn.softplus(u[:h]), u[h : 2 * h], u[2 * h : 2 * h + n], u[2 * h + n :]

    def coefficients(self, params, u):
        dt, v, b, _ = self._pieces(u)
        return jnp.exp(dt[:, None] * -jnp.exp(params.a_log)), (dt * v)[:, None] * b[None, :]

    def output(self, params, state, u):
        _, v, _, c = self._pieces(u)
        return state @ c + params.skip * v


class SLSTMState(NamedTuple):
    """sLSTM carry, ``(H,)`` each: hidden state ``h``, cell state ``c``, normaliser ``n`` and stabiliser ``m``."""

    h: Array
    c: Array
    n: Array
    m: Array

    def hidden(self) -> Array:
        """The hidden state ``h``."""
        return self.h

    def with_hidden(self, h: Array) -> SLSTMState:
        return self._replace(h=h)


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
    gates: ClassVar[tuple[str, ...]] = ("i", "f", "z", "o")

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> RNNParams:
        """Parameters for inputs of size ``input_size``: ``RNNParams`` with 4H gate columns; zero biases but the
        forget gate's ``forget_bias``."""
        w_x, w_h = self._init_kernels(key, input_size, dtype)
        h = self.hidden_size
        bias = jnp.zeros((4 * h,), dtype).at[h : 2 * h].set(self.forget_bias)
        return RNNParams(w_x, w_h, bias)

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> SLSTMState:
        zeros = jnp.zeros((*batch_shape, self.hidden_size), dtype)
        return SLSTMState(zeros, zeros, zeros, zeros)

    def step(self, params: RNNParams, carry: SLSTMState, u: Array) -> tuple[SLSTMState, Array]:
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
class MLSTM(LinearCell):
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

    per head (``num_heads`` K heads of size d = H/K, each with scalar gates); ``C``, ``n`` are the stabilised
    memory and normaliser (the unstabilised ones times ``exp(-m_t)``), so the output equals the paper's
    ``C q / max(|n^T q|, 1)`` of the unstabilised memory. The recurrence is ``s_t = f_t s_{t-1} + e^{i~_t} b_t``
    in the true state, so the parallel forms scan the stabilised pairs (:mod:`gated.parallel`). Initialisation as
    in the reference code: zero input- and forget-gate kernels, forget biases ``linspace(3, 6, K)``, input biases
    ``N(0, 0.1^2)``. The carry is :class:`MLSTMState`, zero at the start. Gates ``("q", "k", "v", "o")``, then the
    K input and K forget pre-activations.

    Attributes:
      num_heads: K, which must divide H.
    """

    num_heads: int = option(1, integer, minimum=1)

    name: ClassVar[str] = "mlstm"
    gates: ClassVar[tuple[str, ...]] = ("q", "k", "v", "o")
    stabilised: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        k = self.num_heads
        if self.hidden_size % k:
            raise ValueError(f"num_heads: expected a positive int dividing hidden_size {self.hidden_size}, got {k!r}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def carry_shape(self) -> tuple[int, ...]:
        """The shape of the memory ``c``: ``(K, d, d)``."""
        return (self.num_heads, self.head_size, self.head_size)

    @property
    def projection_size(self) -> int:
        return 4 * self.hidden_size + 2 * self.num_heads

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> MLSTMParams:
        k_x, k_i = jax.random.split(key)
        params = super().init(k_x, input_size, dtype)
        h, k = self.hidden_size, self.num_heads
        kernel = params.input_kernel.at[:, 4 * h :].set(0.0)
        i_bias = 0.1 * jax.random.normal(k_i, (k,), jnp.float32)
        bias = params.bias.at[4 * h : 4 * h + k].set(i_bias.astype(dtype))
        bias = bias.at[4 * h + k :].set(jnp.linspace(3.0, 6.0, k, dtype=jnp.float32).astype(dtype))
        return MLSTMParams(kernel, bias)

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> MLSTMState:
        k, d = self.num_heads, self.head_size
        zeros = lambda *shape: jnp.zeros((*batch_shape, *shape), dtype)
        return MLSTMState(zeros(k, d, d), zeros(k, d), zeros(k))

    def _heads(self, u: Array, name: str) -> Array:
        return self.gate(u, name).reshape(self.num_heads, self.head_size)

    def coefficients(self, params, u):
        """``(log f_t (K,), i~_t (K,), (v_t k_t^T, k_t))``: the stabilised update's coefficients."""
        h, k = self.hidden_size, self.num_heads
        keys = self._heads(u, "k") / math.sqrt(self.head_size)
        values = self._heads(u, "v")
        log_f = jax.nn.log_sigmoid(u[4 * h + k :])
        return log_f, u[4 * h : 4 * h + k], (values[:, :, None] * keys[:, None, :], keys)

    def to_state(self, carry):
        return carry.m, (carry.c, carry.n)

    def from_state(self, state):
        m, (c, n) = state
        return MLSTMState(c, n, m)

    def output(self, params, state, u):
        m, (c, n) = state
        q = self._heads(u, "q")
        read = jnp.einsum("kab,kb->ka", c, q)
        scale = jnp.maximum(jnp.abs(jnp.sum(n * q, axis=-1)), jnp.exp(-m))
        return jax.nn.sigmoid(self.gate(u, "o")) * (read / scale[:, None]).reshape(self.hidden_size)


CELLS: dict[str, type[Cell]] = {"rnn": RNN, "lstm": LSTM, "gru": GRU, "mingru": MinGRU, "minlstm": MinLSTM,
                                "lru": LRU, "rglru": RGLRU, "ssm": SelectiveSSM, "slstm": SLSTM,
                                "mlstm": MLSTM}  # fmt: skip


def _options(cls: type[Cell]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "hidden_size")


def check_cell(cell: Any, name: str = "cell") -> Cell:
    """Returns ``cell`` if it is a cell of this module.

    Raises:
      TypeError: anything else (a cell's name, a layer, a Flax module), naming ``name``, what it got and how to
        make a cell.
    """
    if not isinstance(cell, Cell):
        hint = f"; make one with gated.cells.{cell}(H)" if isinstance(cell, str) and cell in CELLS else ""
        got = f"str {cell!r}" if isinstance(cell, str) else type(cell).__name__
        raise TypeError(f"{name}: expected a gated.cells cell, e.g. gated.cells.lstm(H), got {got}{hint}")
    return cell


def check_params(cell: Cell, params: Any, input_size: int | None = None, name: str = "params") -> Any:
    """Returns ``params`` after checking it has the structure and leaf shapes that ``cell.init`` gives for
    ``input_size`` (by default the rows of ``params.input_kernel``); nothing is computed (``jax.eval_shape``).

    Raises:
      ValueError: another structure, or a leaf of another shape, naming the leaf, the expected and the received
        shapes.
    """
    if input_size is None:
        input_size = jnp.shape(getattr(params, "input_kernel", jnp.zeros((1, 1))))[0]
    expected = jax.eval_shape(lambda k: cell.init(k, input_size), jax.random.key(0))
    described = f"a {cell.name} cell of hidden size {cell.hidden_size}"
    if jax.tree.structure(params) != jax.tree.structure(expected):
        raise ValueError(f"{name}: expected the parameters of {described} ({type(expected).__name__} with fields "
                         f"{getattr(expected, '_fields', '?')}), got {type(params).__name__}")  # fmt: skip
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(params), strict=True):
        if jnp.shape(got) != want.shape:
            raise ValueError(f"{name}{jax.tree_util.keystr(path)}: expected shape {want.shape} for {described} with "
                             f"input size {input_size}, got {jnp.shape(got)}")  # fmt: skip
    return params


def option_types() -> dict[str, type]:
    """Every option of every cell in :data:`CELLS` with its type (int, float, bool or str), read from the cells'
    own fields: the schema of the experiments' ``model.options``. An option that two cells share has one type."""
    types: dict[str, type] = {}
    for cls in CELLS.values():
        for f in dataclasses.fields(cls):
            if f.name != "hidden_size":
                kind = opts.option_type(f)
                if types.setdefault(f.name, kind) is not kind:
                    raise TypeError(f"option {f.name!r}: {cls.__name__} types it {kind}, another cell {types[f.name]}")
    return types


def get(name: str, hidden_size: int, **options) -> Cell:
    """Makes a cell by name (``"rnn"``, ``"lstm"``, ``"gru"``, ``"mingru"``, ``"minlstm"``, ``"lru"``, ``"rglru"``,
    ``"ssm"``, ``"slstm"``, ``"mlstm"``), for configs.

    Raises:
      ValueError: unknown cell name.
      TypeError: an option the cell does not have (the message lists the valid ones).
    """
    if name not in CELLS:
        raise ValueError(f"cell name: expected one of {tuple(CELLS)}, got {name!r}")
    cls = CELLS[name]
    unknown = sorted(set(options) - set(_options(cls)))
    if unknown:
        raise TypeError(f"{name} cell: unknown option(s) {unknown}; valid options are {list(_options(cls))}")
    return cls(hidden_size, **options)


def _factory(cls: type[Cell]) -> Callable[..., Cell]:
    def make(hidden_size: int, **options) -> Cell:
        return get(cls.name, hidden_size, **options)

    make.__name__ = make.__qualname__ = cls.name
    make.__doc__ = f"Makes a :class:`{cls.__name__}` cell; same arguments.\n\n{cls.__doc__}"
    make.__signature__ = inspect.signature(cls).replace(return_annotation=cls.__name__)
    return make


rnn = _factory(RNN)
lstm = _factory(LSTM)
gru = _factory(GRU)
mingru = _factory(MinGRU)
minlstm = _factory(MinLSTM)
lru = _factory(LRU)
rglru = _factory(RGLRU)
ssm = _factory(SelectiveSSM)
slstm = _factory(SLSTM)
mlstm = _factory(MLSTM)
