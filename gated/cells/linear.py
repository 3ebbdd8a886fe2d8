"""Gated linear recurrences: the base class, the combine of a stabilised state, and minGRU and minLSTM
(Feng et al. 2024)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import forms
from gated import init as initializers
from gated.options import EIGENVALUES, boolean, choice, integer, number, option

from .base import Array, Cell


class LinearParams(NamedTuple):
    """Parameters of a gated linear recurrence whose gates read only the input (minGRU, minLSTM):
    ``input_kernel`` (D, G*H) and ``bias`` (G*H,), gate blocks in the order ``cell.gates``."""

    input_kernel: Array
    bias: Array


def positive(z: Array) -> Array:
    """Feng et al.'s g: ``z + 1/2`` for ``z >= 0``, ``sigmoid(z)`` below: positive and continuous, so that the
    state stays positive and the recurrence can run in log space."""
    return jnp.where(z >= 0, z + 0.5, jax.nn.sigmoid(z))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LinearCell(forms.Diagonal, Cell):
    r"""A gated linear recurrence: elementwise and linear in the state, its gates functions of the input only,

    .. math::
        s_t = a_t \odot s_{t-1} + b_t, \qquad (a_t, b_t) = \text{coefficients}(x_t), \qquad
        y_t = \text{output}(s_t, x_t)

    so that a whole sequence can also be computed with a parallel (associative) scan
    (:mod:`gated.parallel`), and the state Jacobian ``ds_t/ds_{t-1} = diag(a_t)`` is diagonal. The state ``s`` is
    the carry, or (LRU) a complex number made of it, or (mLSTM) a stabilised pair (see ``stabilised``).
    There is no recurrent matrix, so there are no ``recurrent_init`` and ``recurrent_scale`` options.
    """

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> LinearParams:
        input_size = integer("input_size", input_size)
        w_x = initializers.input_kernel(key, input_size, self.projection_size, dtype)
        return LinearParams(w_x, self._bias(dtype))

    def _bias(self, dtype) -> Array:
        return jnp.zeros((self.projection_size,), dtype)

    def step(self, params, carry, u: Array, start: Array | None = None):
        """``(carry, y)``; ``start`` (a boolean scalar, for a cell that ``restarts``): the step starts a segment and
        takes the coefficients of :meth:`restart`."""
        u = self._check_step(carry, u)
        if self.stabilised:  # the state (m, s) is the update (-inf, m, s) composed with this step's
            state = stabilised_combine((-jnp.inf, *self.to_state(carry)), self.coefficients(params, u))[1:]
        else:
            a, b = self.coefficients(params, u)
            if start is not None and self.restarts:
                a0, b0 = self.restart(params, u)
                a, b = jnp.where(start, a0, a), jnp.where(start, b0, b)
            state = a * self.to_state(carry) + b
        return cast_like(self.from_state(state), carry), self.output(params, state, u).astype(u.dtype)


def cast_like(carry, like):
    """``carry`` in the dtypes of ``like``'s leaves: a state computed in a wider type (the LRU's complex64 from
    bfloat16 parameters) goes back into the carry's type, as a scan needs."""
    return jax.tree.map(lambda new, old: new.astype(jnp.result_type(old)), carry, like)


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
    makes every step's input ``b_t`` positive so that the parallel forms run in log space, stable over long
    sequences (an initial carry of either sign is exact there: its weight is scanned apart). Gates ``("z", "h")``.

    ``eigenvalues`` is the range of the state's decay ``a_t``: "[0, 1]" (Feng et al.: ``a_t = 1 - z_t``), or
    "[-1, 1]" (``a_t = 1 - 2 z_t``: the decay stretched to negative values, as Grazzi et al. 2025, "Unlocking
    state-tracking in linear RNNs through negative eigenvalues", do for Mamba and DeltaNet), which lets the state
    flip its sign from one step to the next, as parity needs. With ``log_space`` the parallel forms then scan the
    logs of the products' magnitudes and carry their signs, the positive and negative parts of each state summed
    apart (:mod:`gated.parallel`).
    """

    log_space: bool = option(False, boolean)
    eigenvalues: str = option("[0, 1]", choice, choices=EIGENVALUES)

    name: ClassVar[str] = "mingru"
    params_type: ClassVar[type] = LinearParams
    gates: ClassVar[tuple[str, ...]] = ("z", "h")

    def coefficients(self, params, u):
        z = jax.nn.sigmoid(self.gate(u, "z"))
        candidate = self.gate(u, "h")
        candidate = positive(candidate) if self.log_space else candidate
        return (1.0 - z if self.eigenvalues == "[0, 1]" else 1.0 - 2.0 * z), z * candidate


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
    params_type: ClassVar[type] = LinearParams
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
