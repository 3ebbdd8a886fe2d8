"""The forms of a recurrence: what a cell declares, and all that the backends of :func:`gated.run` read of it.

Every cell is written for one example (:mod:`gated.cells`): ``u = cell.project(params, x)`` outside the scan, and a
recurrence in ``u``. That recurrence takes one of a few forms, each a base class here with documented methods. A
cell inherits the forms it takes; a backend (:mod:`gated.backends`) registers the forms it serves, and
``impl="auto"`` looks up the cell's form and the platform. No backend reads anything of a cell but its form's
methods, so a new cell is one module that implements a form, and every backend of that form serves it.

- :class:`Nonlinear`: ``carry, y = step(params, carry, u)``, the state inside its gates (the RNN, LSTM, GRU and
  sLSTM). Optionally a fused sequence kernel (:meth:`Nonlinear.fused_sequence`, :mod:`gated.fused`).
- :class:`Diagonal`: elementwise and linear in the state, ``s_t = a_t * s_{t-1} + b_t`` with
  ``(a_t, b_t) = coefficients(params, u_t)`` (minGRU, minLSTM, LRU, RG-LRU, the selective SSM): the sequence is also
  an associative scan with ``(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)`` (:mod:`gated.parallel`).
- :class:`MatrixState`: per head a matrix state ``S (d_v, d_k)``, ``S_t = S_{t-1} M_t + v_t k_t^T``-like, read by a
  query, ``y_t = read(S_t q_t)`` (:mod:`gated.chunkwise`). Its transition is one of three kinds:

  - :class:`MatrixDecay`: ``M_t`` diagonal, a scalar decay per head: ``C_t = f_t C_{t-1} + e^{i_t} v_t k_t^T``, with
    an optional normaliser ``n_t = f_t n_{t-1} + e^{i_t} k_t`` and the stabiliser ``m`` of exponential input gates
    (xLSTM's mLSTM, Mamba-2's SSD);
  - :class:`KeyDecay`: ``M_t`` diagonal, a decay per key channel: ``C_t = C_{t-1} diag(alpha_t) + e^{i_t} v_t k_t^T``
    (GLA, HGRN2; Simple GLA's and RetNet's decay per head, broadcast over the keys);
  - :class:`DeltaRule`: ``M_t`` diagonal plus low rank, ``a_t (I - b_t k_t k_t^T)``:
    ``S_t = a_t S_{t-1} (I - b_t k_t k_t^T) + b_t v_t k_t^T`` (DeltaNet, Gated DeltaNet; flash-linear-attention's
    "generalized delta rule" with ``w = a 1``, ``a = b k``). The eigenvalues of ``I - b k k^T`` (``|k| = 1``) are 1
    and ``1 - b``: ``b`` in ``[0, 2]`` reaches ``-1``, a reflection.

  Normalisers and stabilisers are part of the form (:class:`MatrixCarry`, :class:`Reads`), not special cases of a
  backend.

A cell may take two forms: the mLSTM, SSD and the key-decay cells are diagonal (their decays broadcast over each
head's matrix) and matrix-state. ``impl="auto"`` takes the first of the platform's row of
:data:`gated.backends.AUTO` that the cell is an instance of.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Form:
    """The base of the declared forms (never a cell's only base: a cell is a :class:`gated.cells.Cell` too)."""

    # A short name for messages and the docs ("nonlinear", "diagonal linear", ...).
    form: ClassVar[str] = "recurrence"


def forms_of(cell: Any) -> tuple[type[Form], ...]:
    """The declared forms ``cell`` takes, most specific first (as its class lists them)."""
    return tuple(c for c in type(cell).__mro__ if issubclass(c, Form) and c is not Form and "form" in vars(c))


def describe(cell: Any) -> str:
    """``cell``'s forms in words, for messages: ``"matrix-state decay and diagonal linear"``."""
    names = [c.form for c in forms_of(cell)]
    return " and ".join(dict.fromkeys(names)) or "of no declared form"


class Nonlinear(Form):
    """A recurrence whose state enters its gates nonlinearly: only a step at a time.

    A cell of this form implements ``step(params, carry, u) -> (carry, y)``. It may have a fused sequence kernel
    (:mod:`gated.fused`): one forward loop and one linear tangent rule over the whole sequence.
    """

    form: ClassVar[str] = "nonlinear"
    # Whether the carry's first leaf is the hidden state h that the step reads through its recurrent matrix and
    # outputs: what variational dropout and zoneout act on (gated.cells.RecurrentDropout).
    hidden_output: ClassVar[bool] = False

    def fused_limits(self) -> str | None:
        """Why this cell (with its options) has no fused kernel, or None if :meth:`fused_sequence` runs it."""
        return f"no fused kernel for {type(self).__name__}"

    def fused_sequence(self, params: Any, xs: Array, carry: Any, mask: Array | None, unroll: int):
        """The fused kernel: ``xs`` ``(T, B, D)`` in the computation's dtype, carry leaves ``(B, H)``, ``mask``
        ``(T, B, 1)`` (1 at valid steps) or None; returns ``(final carry, ys (T, B, H))``."""
        raise NotImplementedError(self.fused_limits())

    def native_limits(self) -> str | None:
        """Why the opt-in C++ loops (:mod:`gated.native`) do not run this cell, or None."""
        return f"the native loops have no kernel for {type(self).__name__}"

    def native_sequence(self, params: Any, xs: Array, carry: Any, mask: Array | None, keep: bool):
        """The native kernel, as :meth:`fused_sequence` (``keep``: the forward loop keeps its gates)."""
        raise NotImplementedError(self.native_limits())


class Diagonal(Form):
    r"""A gated linear recurrence, elementwise in the state:

    .. math::
        s_t = a_t \odot s_{t-1} + b_t, \qquad (a_t, b_t) = \text{coefficients}(u_t), \qquad
        y_t = \text{output}(s_t, u_t)

    The state ``s`` is the carry, or (LRU) a complex number made of it (:meth:`to_state`, :meth:`from_state`). The
    state Jacobian ``ds_t/ds_{t-1} = diag(a_t)`` is diagonal, so a sequence is also an associative scan.

    Attributes:
      log_space: ``b_t >= 0`` and the parallel forms run in log space (minGRU and minLSTM's ``log_space``).
      stabilised: the state is ``(m, s)``, the true state ``exp(m) s``, and the coefficients are
        ``(log a_t, log b_t, b_t)``; the update ``exp(log a_t) s_{t-1} + exp(log b_t) b_t`` is composed by
        :func:`gated.cells.stabilised_combine` (xLSTM's mLSTM: exponential gates without overflow).
    """

    form: ClassVar[str] = "diagonal linear"
    log_space: ClassVar[bool] = False
    stabilised: ClassVar[bool] = False

    @property
    def time_invariant(self) -> bool:
        """Whether the decay ``a_t`` is the same at every step, whatever the input (the LRU's; the SSM's with
        ``selective=False``): no input-dependent gate, so the recurrence is a linear time-invariant filter."""
        return False

    @property
    def negative_eigenvalues(self) -> bool:
        """Whether the decay ``a_t`` can be negative (the ``eigenvalues="[-1, 1]"`` option of the cells that have
        it): a log-space form then carries each product's sign (:mod:`gated.parallel`)."""
        return getattr(self, "eigenvalues", "[0, 1]") == "[-1, 1]"

    def coefficients(self, params: Any, u: Array) -> tuple[Array, Array]:
        """``(a_t, b_t)`` of one step from ``u = project(params, x)``, each shaped like the state (``a_t`` may be
        smaller and broadcast: the LRU's constant decay)."""
        raise NotImplementedError

    def to_state(self, carry: Any) -> Any:
        """The state ``s`` the recurrence is linear in, from a carry (the carry itself, but for the LRU)."""
        return carry

    def from_state(self, state: Any) -> Any:
        """The carry of a state (the inverse of :meth:`to_state`)."""
        return state

    def output(self, params: Any, state: Any, u: Array) -> Array:
        """``y_t`` from the new state (the state itself, but for the LRU, the SSM and the matrix cells)."""
        return state

    def restart(self, params: Any, u: Array) -> tuple[Array, Array]:
        """``(a_t, b_t)`` of a step that starts a segment, for a cell that ``restarts`` by its own rule
        (:attr:`gated.cells.Cell.restarts`)."""
        raise NotImplementedError(f"the {type(self).__name__} cell restores its initial carry at a segment start")


class Heads(NamedTuple):
    """A matrix-state step's pieces, per head: ``q``, ``k`` ``(K, d_k)``, ``v`` ``(K, d_v)``, the log decay
    ``log_decay`` ``(K,)`` (``log f_t``, or ``log a_t`` of the delta rule) and the write ``write`` ``(K,)``: the log
    input weight ``i_t`` of a :class:`MatrixDecay`, the strength ``b_t`` of a :class:`DeltaRule`."""

    q: Array
    k: Array
    v: Array
    log_decay: Array
    write: Array


class MatrixCarry(NamedTuple):
    """A matrix-state cell's carry as the backends see it, per head: the memory ``c`` ``(K, d_v, d_k)``, the
    normaliser ``n`` ``(K, d_k)`` (None: none) and the stabiliser ``m`` ``(K,)`` (the true memory is ``exp(m) c``;
    None: none, as for the delta rule)."""

    c: Array
    n: Array | None = None
    m: Array | None = None


class Reads(NamedTuple):
    """What a step reads of its matrix state, per head: ``value`` ``C_t q_t`` ``(K, d_v)``, ``norm`` ``n_t^T q_t``
    ``(K,)`` (None without a normaliser) and the stabiliser ``m_t`` ``(K,)`` (None without one)."""

    value: Array
    norm: Array | None = None
    m: Array | None = None


class MatrixState(Form):
    """A matrix state per head, linear in the state and read by a query (see the module docstring).

    A cell of this form implements :meth:`heads` and, where its carry is more than one memory ``(K, d_v, d_k)``
    read as it is, :meth:`read`, :meth:`matrix_state` and :meth:`from_matrix_state`.
    """

    form: ClassVar[str] = "matrix-state"

    def __post_init__(self):
        # After the options' own checks (gated.cells.Cell): the heads must divide the hidden size.
        then = getattr(super(), "__post_init__", None)
        if then is not None:
            then()
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"num_heads: expected a positive int dividing hidden_size {self.hidden_size}, got {self.num_heads!r}"
            )

    @property
    def head_size(self) -> int:
        """d, the size of a head: ``H / num_heads``."""
        return self.hidden_size // self.num_heads

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> Any:
        """The zero memory ``(*batch, *carry_shape)`` (a cell whose carry is more than the memory gives its own)."""
        return jnp.zeros((*batch_shape, *self.carry_shape), dtype)

    def heads(self, params: Any, u: Array) -> Heads:
        """The step's per-head pieces (:class:`Heads`) from ``u = project(params, x)``."""
        raise NotImplementedError

    def read(self, params: Any, reads: Reads, u: Array) -> Array:
        """``y_t`` ``(H,)`` from what the step reads (:class:`Reads`): by default the heads' ``C_t q_t`` side by
        side."""
        del params, u
        return reads.value.reshape(self.hidden_size)

    def matrix_state(self, carry: Any) -> MatrixCarry:
        """The carry as :class:`MatrixCarry` (by default the carry is the memory)."""
        return MatrixCarry(carry)

    def from_matrix_state(self, state: MatrixCarry) -> Any:
        """The carry of a :class:`MatrixCarry` (the inverse of :meth:`matrix_state`)."""
        return state.c


class MatrixDecay(MatrixState):
    """``C_t = f_t C_{t-1} + e^{i_t} v_t k_t^T`` per head, ``f_t = exp(log_decay)`` a scalar, ``i_t = write``; an
    optional normaliser ``n_t = f_t n_{t-1} + e^{i_t} k_t`` and the stabiliser ``m_t = max(log f_t + m_{t-1}, i_t)``
    of the stabilised memory: :meth:`matrix_state` gives ``m`` always (zeros for a cell that keeps the true memory,
    whose :meth:`from_matrix_state` then takes ``exp(m) c``), ``n`` where there is a normaliser."""

    form: ClassVar[str] = "matrix-state decay"


class KeyDecay(MatrixState):
    r"""A decay per key channel, per head: the transition is a diagonal matrix of data-dependent decays,

    .. math::
        C_t = C_{t-1} \operatorname{diag}(\alpha_t) + e^{i_t} v_t k_t^\top, \qquad y_t = \text{read}(C_t q_t)

    with ``alpha_t = exp(log_decay)`` ``(K, d_k)`` and ``i_t = write`` ``(K,)`` (GLA, HGRN2; a decay shared by a
    head's keys, broadcast, is Simple GLA's and RetNet's). No normaliser and no stabiliser: the carry is the memory
    ``(K, d_v, d_k)``, zero at the start, read as it is. As the decay is elementwise, the form is also diagonal:
    :meth:`coefficients` and :meth:`output` give the diagonal backends the same recurrence over the flattened memory.
    A cell gives :meth:`heads`, :attr:`key_size` and its parameters.
    """

    form: ClassVar[str] = "matrix-state key decay"

    @property
    def key_size(self) -> int:
        """d_k, the keys' size per head (by default a head's size, ``H / num_heads``)."""
        return self.head_size

    @property
    def carry_shape(self) -> tuple[int, ...]:
        return (self.num_heads, self.head_size, self.key_size)

    def coefficients(self, params: Any, u: Array) -> tuple[Array, Array]:
        """``(a_t, b_t)`` of the flattened memory: the decays broadcast over the values, and the write."""
        _, k, v, log_decay, write = self.heads(params, u)
        a = jnp.broadcast_to(jnp.exp(log_decay)[:, None, :], self.carry_shape)
        return a, jnp.exp(write)[:, None, None] * v[:, :, None] * k[:, None, :]

    def output(self, params: Any, state: Any, u: Array) -> Array:
        q = self.heads(params, u).q
        return self.read(params, Reads(jnp.einsum("kvd,kd->kv", state, q)), u)


class DeltaRule(MatrixState):
    r"""The delta rule with a decay, per head:

    .. math::
        S_t = a_t S_{t-1} (I - b_t k_t k_t^\top) + b_t v_t k_t^\top, \qquad y_t = \text{read}(S_t q_t)

    with ``a_t = exp(log_decay)`` and ``b_t = write``: the transition is diagonal plus low rank. The decay is a
    scalar per head ``(K,)``, or one per key channel ``(K, d_k)`` (Kimi Delta Attention: ``a_t S_{t-1}`` is then
    ``S_{t-1} diag(a_t)``). The form gives the
    step; a cell gives :meth:`heads` (and its parameters): its carry is the memory ``(K, d_v, d_k)``, zero at the
    start.

    A cell may take ``n_h`` such corrections a token (Gated DeltaProduct): :meth:`heads` then gives keys and values
    ``(K, n_h, d)`` and writes ``(K, n_h)``, the decay applies once before them and the read after the last, a
    product of ``n_h`` generalised Householder transitions,
    ``S_t = a_t S_{t-1} prod_j (I - b_{t,j} k_{t,j} k_{t,j}^T) + ...``.
    """

    form: ClassVar[str] = "matrix-state delta rule"

    @property
    def carry_shape(self) -> tuple[int, ...]:
        return (self.num_heads, self.head_size, self.head_size)

    def step(self, params: Any, carry: Any, u: Array):
        """One step: decay, correct the memory's read of ``k_t`` towards ``v_t`` by ``b_t`` (each of the ``n_h``
        corrections in turn), read ``q_t``."""
        u = self._check_step(carry, u)
        q, k, v, log_decay, beta = self.heads(params, u)
        decay = jnp.exp(log_decay)  # (K,), or (K, d_k): a decay per key channel
        state = (decay[:, None, None] if decay.ndim == 1 else decay[:, None, :]) * self.matrix_state(carry).c
        steps = [(k, v, beta)] if k.ndim == q.ndim else [(k[:, j], v[:, j], beta[:, j]) for j in range(k.shape[1])]
        for k_j, v_j, beta_j in steps:
            correction = beta_j[:, None] * (v_j - jnp.einsum("kvd,kd->kv", state, k_j))
            state = state + correction[:, :, None] * k_j[:, None, :]
        y = self.read(params, Reads(jnp.einsum("kvd,kd->kv", state, q)), u)
        return self.from_matrix_state(MatrixCarry(state)), y.astype(u.dtype)
