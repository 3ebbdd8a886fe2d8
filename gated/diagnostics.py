"""Gradient-flow diagnostics: how gradients and state Jacobians behave along a sequence.

All functions take ONE example, ``xs`` ``(T, D)`` (batch with ``jax.vmap``), and
index states by step: ``carry_t`` is the carry after reading ``x_t``, so
``t = T - 1`` is the last state and the lag of ``carry_k`` is ``T - 1 - k``.

References:
  Bengio, Simard & Frasconi 1994; Hochreiter 1991; Pascanu, Mikolov & Bengio
  2013, "On the difficulty of training recurrent neural networks".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gated.cells import LSTM, RNN, Cell, LSTMParams, LSTMState, require
from gated.forms import Diagonal

Array = jax.Array


def hidden(carry: Any) -> Array:
    """The hidden state ``h`` of a carry: ``carry.h`` for an LSTM or sLSTM, ``[real, imag]`` ``(2H,)`` for the LRU's
    complex state (so that its norm is the complex norm), the (stabilised) matrix memory ``c`` flattened to
    ``(K d^2,)`` for the mLSTM, the carry itself otherwise."""
    return carry.hidden() if hasattr(carry, "hidden") else carry  # a carry type knows its hidden state


def _with_hidden(carry: Any, h: Array) -> Any:
    return carry.with_hidden(h) if hasattr(carry, "with_hidden") else h


def _start(cell: Cell, params: Any, xs: Array, carry: Any) -> tuple[Array, Any]:
    us = jax.vmap(lambda x: cell.project(params, x))(xs)
    return us, cell.initial_carry((), us.dtype) if carry is None else carry


def carry_gradients(
    cell: Cell, params: Any, xs: Array, loss_fn: Callable[[Array, Any], Array], *, carry: Any = None
) -> tuple[Array, Any]:
    """``dL/dcarry_t`` for EVERY step t in one backward pass.

    A zero perturbation ``eps_t`` is added to each step's carry inside the scan
    (the output ``y_t = h_t`` sees it too); the gradient of the loss with respect
    to ``eps_t`` is the gradient with respect to ``carry_t``. The cost is one
    forward and one backward pass, as for a training step, not T of them.

    Args:
      cell, params: the cell and its parameters.
      xs: inputs ``(T, D)`` of one example.
      loss_fn: ``loss_fn(ys (T, H), final_carry) -> scalar``, e.g. a loss on the
        last step or summed over the steps.
      carry: initial carry (zeros if None).

    Returns:
      ``(loss, grads)``: grads has the carry's structure with leaves ``(T, H)``;
      for an LSTM ``grads.h[t]`` is ``dL/dh_t`` and ``grads.c[t]`` is ``dL/dc_t``.
    """
    us, carry0 = _start(cell, params, xs, carry)
    eps = jax.tree.map(lambda a: jnp.zeros((xs.shape[0], *a.shape), a.dtype), carry0)

    def perturbed_loss(eps):
        def body(c, inputs):
            u, e = inputs
            c, _ = cell.step(params, c, u)
            c = jax.tree.map(jnp.add, c, e)
            return c, hidden(c)

        final, ys = jax.lax.scan(body, carry0, (us, eps))
        return loss_fn(ys, final)

    return jax.value_and_grad(perturbed_loss)(eps)


def gradient_norms(
    cell: Cell, params: Any, xs: Array, loss_fn: Callable[[Array, Any], Array], *, carry: Any = None
) -> dict[str, Array]:
    """Euclidean norms ``||dL/dh_t||`` (key "h"), and ``||dL/dc_t||`` (key "c") for an LSTM, for every t: ``(T,)``."""
    _, grads = carry_gradients(cell, params, xs, loss_fn, carry=carry)
    flat = hidden(grads)
    norms = {"h": jnp.sqrt(jnp.sum(flat**2, axis=tuple(range(1, flat.ndim))))}  # a state (H, N) counts whole
    norms.update({k: jnp.linalg.norm(v, axis=-1) for k, v in cell.other_states(grads).items()})
    return norms


def _trajectory(cell: Cell, params: Any, xs: Array, carry: Any) -> tuple[Array, Any, Any, Any]:
    """Projected inputs, the initial carry, and the carries before and after each step
    (``carry_{t-1}`` and ``carry_t``, leaves ``(T, ...)``)."""
    us, carry0 = _start(cell, params, xs, carry)
    _, after = jax.lax.scan(lambda c, u: (cell.step(params, c, u)[0],) * 2, carry0, us)
    before = jax.tree.map(lambda c0, a: jnp.concatenate([c0[None], a[:-1]]), carry0, after)
    return us, carry0, before, after


def _flat_step(cell: Cell, params: Any, unravel: Callable) -> Callable[[Array, Array], Array]:
    """The step as a map of flattened carries: ``(carry_{t-1} flat, u_t) -> carry_t flat``."""
    return lambda flat, u: ravel_pytree(cell.step(params, unravel(flat), u)[0])[0]


def _rerun_from(step: Callable, us: Array, carry0: Any, after: Any, k: Array, carry_k: Any) -> Any:
    """The final carry when the trajectory is followed up to step k, ``carry_k`` replaces the carry
    after step k, and ``step`` runs the remaining steps. Differentiable in ``carry_k``."""

    def body(c, inputs):
        t, u, c_traj = inputs
        stepped = step(c, u)
        pick = lambda traj, injected, new: jnp.where(t < k, traj, jnp.where(t == k, injected, new))
        return jax.tree.map(pick, c_traj, carry_k, stepped), None

    final, _ = jax.lax.scan(body, carry0, (jnp.arange(us.shape[0]), us, after))
    return final


def state_jacobians(cell: Cell, params: Any, xs: Array, *, carry: Any = None) -> Array:
    """The full Jacobians ``d carry_{T-1} / d carry_k`` for every k, ``(T, S, S)`` with S the flattened carry size.

    Computed exactly: the step Jacobians along the trajectory (``jax.jacfwd``),
    multiplied from the last step backwards. For an LSTM the flattened carry is
    ``[h, c]``, so ``[:, :H, :H]`` is ``dh_{T-1}/dh_k`` with ``c_k`` held fixed.
    Costs O(T S^3); for large H use :func:`spectral_norms_power`.
    """
    us, carry0, before, _ = _trajectory(cell, params, xs, carry)
    flat_step = _flat_step(cell, params, ravel_pytree(carry0)[1])
    flat_before = jax.vmap(lambda c: ravel_pytree(c)[0])(before)
    jacobians = jax.vmap(jax.jacfwd(flat_step))(flat_before, us)  # J_t = d carry_t / d carry_{t-1}
    size = jacobians.shape[-1]

    def accumulate(product, j_t):  # reverse scan over t: emits J_{T-1} ... J_{t+1}, then multiplies in J_t
        return product @ j_t, product

    _, products = jax.lax.scan(accumulate, jnp.eye(size, dtype=jacobians.dtype), jacobians, reverse=True)
    return products


def jacobian_norms(cell: Cell, params: Any, xs: Array, *, carry: Any = None) -> dict[str, Array]:
    """Exact ``||dh_{T-1}/dh_k||_2`` (key "spectral") and Frobenius norm (key "frobenius") for every k, ``(T,)``."""
    h = cell.output_size  # h leads the flattened state
    blocks = state_jacobians(cell, params, xs, carry=carry)[:, :h, :h]
    return {
        "spectral": jnp.linalg.svd(blocks, compute_uv=False)[:, 0],
        "frobenius": jnp.sqrt(jnp.sum(blocks**2, axis=(1, 2))),
    }


def spectral_norms_power(
    cell: Cell, params: Any, xs: Array, key: Array, *, carry: Any = None, iterations: int = 30
) -> Array:
    """``||dh_{T-1}/dh_k||_2`` for every k by power iteration on ``J^T J`` with ``jax.jvp`` and ``jax.vjp``.

    Never forms a Jacobian: each iteration is one jvp and one vjp of the map
    ``h_k -> h_{T-1}`` (``c_k`` held fixed for an LSTM), so memory is O(T H).
    """
    us, carry0, _, after = _trajectory(cell, params, xs, carry)
    num_steps = xs.shape[0]
    step = lambda c, u: cell.step(params, c, u)[0]

    def norm_at(k, key):
        carry_k = jax.tree.map(lambda a: a[k], after)
        h_k = hidden(carry_k)
        f = lambda h: hidden(_rerun_from(step, us, carry0, after, k, _with_hidden(carry_k, h)))
        v = jax.random.normal(key, h_k.shape, h_k.dtype)

        def iterate(_, v):
            v = v / jnp.linalg.norm(v)
            w = jax.jvp(f, (h_k,), (v,))[1]
            return jax.vjp(f, h_k)[1](w)[0]

        v = jax.lax.fori_loop(0, iterations, iterate, v)
        v = v / jnp.linalg.norm(v)
        return jnp.linalg.norm(jax.jvp(f, (h_k,), (v,))[1])

    return jax.vmap(norm_at)(jnp.arange(num_steps), jax.random.split(key, num_steps))


def _products_after(factors: Array) -> Array:
    """``prod_{j=k+1..T-1} factors_j`` for every k, ``(T, H)`` (ones at k = T - 1)."""
    inclusive = jnp.cumprod(factors[::-1], axis=0)[::-1]  # prod_{j=k..T-1}
    return jnp.concatenate([inclusive[1:], jnp.ones_like(factors[:1])])


def gate_path(cell: Cell, params: Any, xs: Array, *, carry: Any = None) -> dict[str, Array]:
    """The gated path that carries gradients across time, computed from the gates.

    LSTM (the lecture's explicit term t_0): ``dc_{T-1}/dc_k = diag(prod_{j=k+1..T-1} f_j)``
    and ``dh_{T-1}/dc_k = D(o_{T-1} tanh'(c_{T-1})) diag(prod f_j)``; the
    gradient vanishes along it only when the forget gates close. GRU: the
    product of the update gate's keep fractions (z for "keep", 1 - z for
    "write"), ``dh_{T-1}/dh_k`` along the path that skips the candidate.

    Returns:
      ``{"product": (T, H), "gates": the per-step gate activations}``, plus
      ``"dh_dc": (T, H)`` (the diagonal of dh_{T-1}/dc_k) for an LSTM.
    """
    require(cell, "a gated path (an LSTM or GRU cell)", "gated_update")
    us, _, before, _ = _trajectory(cell, params, xs, carry)
    acts = jax.vmap(lambda c, u: cell.gate_activations(params, c, u))(before, us)
    product = _products_after(cell.keep(acts))
    out = {"product": product, "gates": acts}
    slope = cell.readout_slope(jax.tree.map(lambda a: a[-1], acts))
    if slope is not None:
        out["dh_dc"] = slope[None, :] * product
    return out


def gate_path_by_autodiff(cell: Cell, params: Any, xs: Array, *, carry: Any = None) -> Array:
    """The same path by autodiff: ``dc_{T-1}/dc_k`` (LSTM) or ``dh_{T-1}/dh_k`` (GRU), ``(T, H, H)``,
    with every step's gates (and the GRU's candidate) computed from a carry held constant
    (``jax.lax.stop_gradient``), so that only the gated state update carries the derivative."""
    require(cell, "a gated path (an LSTM or GRU cell)", "gated_update")
    us, carry0, _, after = _trajectory(cell, params, xs, carry)

    def frozen_step(c, u):
        return cell.gated_update(cell.gate_activations(params, jax.lax.stop_gradient(c), u), c)

    state, inject = cell.gated_state, cell.with_gated_state

    def jacobian_at(k):
        carry_k = jax.tree.map(lambda a: a[k], after)
        final_state = lambda s: state(_rerun_from(frozen_step, us, carry0, after, k, inject(carry_k, s)))
        return jax.jacfwd(final_state)(state(carry_k))

    return jax.vmap(jacobian_at)(jnp.arange(xs.shape[0]))


def _output_gate_step(cell: Cell, params: LSTMParams) -> Callable[[LSTMState, Array], LSTMState]:
    """One LSTM step in which ``h_{t-1}`` reaches ``h_t`` only through the output gate:
    ``h_t = sigma(u_o + h_{t-1} W_o [+ p_o c_t]) tanh(c_t)`` with the cell state and the
    other gates computed from a carry held constant."""
    w_o = cell.gate(params.recurrent_kernel, "o")

    def step(c, u):
        held = cell.gate_activations(params, jax.lax.stop_gradient(c), u)
        pre_o = cell.gate(u, "o") + c.h @ w_o
        if cell.peepholes:
            pre_o = pre_o + params.peepholes.reshape(-1, cell.hidden_size)[cell.peephole_gates.index("o")] * held.c
        return LSTMState(jax.nn.sigmoid(pre_o) * jnp.tanh(held.c), held.c)

    return step


def output_gate_path(cell: Cell, params: LSTMParams, xs: Array, *, carry: Any = None) -> dict[str, Array]:
    """The lecture's exploding path ``t_1`` through the output gates, and its bound.

    Along the path, ``dh_t/dh_{t-1} = diag(K_t) W_o^T`` with
    ``K_t = tanh(c_t) sigma'(a_{o,t})``, so

        ||dh_{T-1}/dh_k||  <=  prod_j ||K_j|| ||W_o||  <=  (||K|| ||W_o||)^(T-1-k),

    ``||K|| = max_j ||diag(K_j)||_2 <= 1/4``. (The lecture's exponent t-k+1 counts the
    steps from h_{k-1} to h_t; here the lag T-1-k counts those from h_k to h_{T-1}.)
    Scaling ``W_o`` up makes the bound, and the path, explode.

    Returns:
      ``{"jacobians": (T, H, H)`` dh_{T-1}/dh_k along the path (by autodiff, the other gates
      held), ``"spectral": (T,)`` their spectral norms, ``"bound": (T,)``, ``"gain"``:
      ``||K|| ||W_o||``, ``"k_norm"``: ``||K||``, ``"w_o_norm"``: ``||W_o||_2``}.
    """
    require(cell, "a gated.cells.LSTM cell", LSTM)
    if cell.layer_norm or cell.proj_size:
        raise ValueError(
            "cell: the output-gate path and its bound are the plain LSTM's (h = o tanh(c)); got "
            f"layer_norm={cell.layer_norm}, proj_size={cell.proj_size}"
        )
    us, carry0, before, after = _trajectory(cell, params, xs, carry)
    acts = jax.vmap(lambda c, u: cell.gate_activations(params, c, u))(before, us)
    k_norm = jnp.max(jnp.abs(jnp.tanh(acts.c) * acts.o * (1.0 - acts.o)))
    w_o_norm = jnp.linalg.norm(cell.gate(params.recurrent_kernel, "o"), 2)
    step = _output_gate_step(cell, params)

    def jacobian_at(k):
        carry_k = jax.tree.map(lambda a: a[k], after)
        return jax.jacfwd(lambda h: _rerun_from(step, us, carry0, after, k, carry_k._replace(h=h)).h)(carry_k.h)

    jacobians = jax.vmap(jacobian_at)(jnp.arange(xs.shape[0]))
    gain = k_norm * w_o_norm
    lags = jnp.arange(xs.shape[0] - 1, -1, -1)
    return {
        "jacobians": jacobians,
        "spectral": jnp.linalg.svd(jacobians, compute_uv=False)[:, 0],
        "bound": gain**lags,
        "gain": gain,
        "k_norm": k_norm,
        "w_o_norm": w_o_norm,
    }


MAX_DERIVATIVE = {"tanh": 1.0, "relu": 1.0, "sigmoid": 0.25, "identity": 1.0}


def rnn_bound(cell: Cell, params: Any, num_steps: int) -> Array:
    """The vanilla-RNN bound ``||dh_{T-1}/dh_k||_2 <= (||W_hh||_2 max|phi'|)^(T-1-k)``, ``(T,)`` over k.

    References: Pascanu, Mikolov & Bengio 2013, section 2.1.
    """
    require(cell, "a gated.cells.RNN cell", RNN)
    gain = jnp.linalg.norm(params.recurrent_kernel, 2) * MAX_DERIVATIVE[cell.activation]
    lags = jnp.arange(num_steps - 1, -1, -1)
    return gain**lags


def lyapunov_exponent(cell: Cell, params: Any, xs: Array, key: Array, *, carry: Any = None) -> Array:
    """The largest Lyapunov exponent of the recurrence along this trajectory: the mean per-step log growth
    of a tangent vector pushed through the step Jacobians (renormalised each step). Above 0, perturbations
    (and gradients) grow exponentially with the lag; below 0 they vanish. For a linear RNN with
    ``W_hh = rho Q`` (Q orthogonal) it is ``log rho``.
    """
    us, carry0, before, _ = _trajectory(cell, params, xs, carry)
    flat0, unravel = ravel_pytree(carry0)
    flat_step = _flat_step(cell, params, unravel)
    v0 = jax.random.normal(key, flat0.shape, flat0.dtype)

    def body(v, inputs):
        c_prev, u = inputs
        w = jax.jvp(lambda s: flat_step(s, u), (ravel_pytree(c_prev)[0],), (v,))[1]
        growth = jnp.linalg.norm(w)
        return w / growth, jnp.log(growth)

    _, logs = jax.lax.scan(body, v0 / jnp.linalg.norm(v0), (before, us))
    return jnp.mean(logs)


def scalar_chain(weights: Array, biases: Array, a0: Array, activation: str = "sigmoid") -> tuple[Array, Array]:
    """Seed 002's scalar chain ``a_l = phi(w_l a_{l-1} + b_l)``, l = 1..L.

    Returns ``(a_L, closed_form)`` where the closed form of ``d a_L / d w_1`` is
    ``[prod_{l=2..L} phi'(z_l) w_l] phi'(z_1) a_0``: the product that vanishes
    ((1/4)^L for the sigmoid at best) or explodes with depth.
    """
    phi = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "tanh": jnp.tanh}[activation]

    def body(a, wb):
        w, b = wb
        z = w * a + b
        return phi(z), z

    a_last, zs = jax.lax.scan(body, a0, (weights, biases))
    slopes = jax.vmap(jax.grad(phi))(zs)
    closed = jnp.prod(slopes[1:] * weights[1:]) * slopes[0] * a0
    return a_last, closed


def scalar_chain_gradients(
    weights: Array, biases: Array, a0: Array, activation: str = "sigmoid"
) -> tuple[Array, Array, Array]:
    """``d a_l / d w_1`` for EVERY depth l = 1..L of the scalar chain, by the closed form and by autodiff.

    Returns ``(activations (L,), closed_form (L,), autodiff (L,))``; entry ``l - 1`` of the
    closed form is ``[prod_{m=2..l} phi'(z_m) w_m] phi'(z_1) a_0``, and autodiff is one
    forward-mode pass (``jax.jvp`` in ``w_1``) through the whole chain.
    """
    phi = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "tanh": jnp.tanh}[activation]

    def activations(w1):
        def body(a, wb):
            w, b = wb
            z = w * a + b
            return phi(z), (phi(z), z)

        _, (acts, zs) = jax.lax.scan(body, a0, (weights.at[0].set(w1), biases))
        return acts, zs

    (acts, zs), (d_acts, _) = jax.jvp(activations, (weights[0],), (jnp.ones_like(weights[0]),))
    slopes = jax.vmap(jax.grad(phi))(zs)
    factors = jnp.concatenate([(slopes[0] * a0)[None], slopes[1:] * weights[1:]])
    return acts, jnp.cumprod(factors), d_acts


def decay_factors(cell: Cell, params: Any, xs: Array) -> Array:
    """The diagonal state Jacobians of a gated linear recurrence: ``ds_t/ds_{t-1} = diag(a_t)``, ``(T, H)`` (complex
    for the LRU, whose real Jacobian is the rotation-scaling of ``a_t`` in each unit's (real, imag) plane).

    The gates read only the input, so ``a_t`` does not depend on the state and the trajectory is not needed.
    """
    require(cell, "a gated linear recurrence (a cell of the gated.forms.Diagonal form)", Diagonal)
    us = jax.vmap(lambda x: cell.project(params, x))(xs)
    coefficients = jax.vmap(lambda u: cell.coefficients(params, u))(us)
    if cell.stabilised:  # the true memory's factor: one forget gate per head, (T, K)
        return jnp.exp(coefficients[0])
    return jnp.broadcast_to(coefficients[0], (xs.shape[0], *cell.carry_shape))


def linear_state_jacobians(cell: Cell, params: Any, xs: Array) -> Array:
    """The closed form of ``ds_{T-1}/ds_k`` for every k: the product of the decay factors after step k,
    ``diag(prod_{j=k+1}^{T-1} a_j)``, returned as its diagonal ``(T, H)`` (complex for the LRU). Its absolute value
    is the gain of each unit; the spectral norm of the Jacobian is the largest of them. Exact, and O(T H).
    For the SSM, ``(T, H, N)``: one factor per unit and state. For the mLSTM, ``(T, K)``: the true memory's
    ``dC_{T-1}/dC_k`` is the product of one head's forget gates times the identity (the stabilised carry's is that
    times ``exp(m_k - m_{T-1})``)."""
    return _products_after(decay_factors(cell, params, xs))
