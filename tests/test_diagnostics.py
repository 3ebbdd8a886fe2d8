"""Diagnostics against naive references and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gated
from gated import diagnostics
from tests.conftest import random_params

T, D = 7, 3
XS = jnp.asarray(np.random.default_rng(0).standard_normal((T, D)))
CELLS = [gated.cells.RNN(4), gated.cells.LSTM(4, peepholes=True), gated.cells.GRU(4, reset="before")]
LOSSES = {
    "last": lambda ys, final: jnp.sum(jnp.sin(ys[-1])),
    "sum": lambda ys, final: jnp.sum(jnp.cos(ys)) + sum(jnp.sum(a**2) for a in jax.tree.leaves(final)),
}


def naive_carry_gradients(cell, params, xs, loss_fn):
    """One backward pass per step k: the loss as a function of carry_k, the rest of the sequence rerun from it."""
    _, carries = gated.run(cell, params, xs[:, None], return_carries=True)
    carries = jax.tree.map(lambda a: a[:, 0], carries)
    _, ys = gated.run(cell, params, xs[:, None])
    grads = []
    for k in range(xs.shape[0]):

        def loss_from(c_k, k=k):
            if k + 1 < xs.shape[0]:
                final, rest = gated.run(cell, params, xs[k + 1 :, None], carry=jax.tree.map(lambda a: a[None], c_k))
                final, rest = jax.tree.map(lambda a: a[0], final), rest[:, 0]
            else:
                final, rest = c_k, jnp.zeros((0, cell.hidden_size))
            seq = jnp.concatenate([ys[:k, 0], diagnostics.hidden(c_k)[None], rest])
            return loss_fn(seq, final)

        grads.append(jax.jit(jax.grad(loss_from))(jax.tree.map(lambda a, k=k: a[k], carries)))
    return jax.tree.map(lambda *a: jnp.stack(a), *grads)


@pytest.mark.parametrize("loss", [pytest.param("last", marks=pytest.mark.slow), "sum"])
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_one_pass_gradients_equal_one_backward_pass_per_step(cell, loss):
    params = random_params(cell, jax.random.key(1), D, jnp.float64)
    _, one_pass = jax.jit(lambda p: diagnostics.carry_gradients(cell, p, XS, LOSSES[loss]))(params)
    naive = naive_carry_gradients(cell, params, XS, LOSSES[loss])
    for a, b in zip(jax.tree.leaves(one_pass), jax.tree.leaves(naive), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    norms = diagnostics.gradient_norms(cell, params, XS, LOSSES[loss])
    np.testing.assert_allclose(norms["h"], jnp.linalg.norm(diagnostics.hidden(naive), axis=-1), rtol=1e-10)
    assert ("c" in norms) == (cell.name == "lstm")


def _linear_rnn(rho, hidden=5):
    cell = gated.cells.RNN(hidden, activation="identity")
    params = cell.init(jax.random.key(0), D, jnp.float64)
    q = gated.init.orthogonal(jax.random.key(3), hidden, 1, 1.0, jnp.float64)
    return cell, params._replace(recurrent_kernel=rho * q)


@pytest.mark.parametrize("rho", [0.8, 1.0, 1.25])
def test_linear_rnn_jacobian_norms_are_rho_to_the_lag(rho):
    cell, params = _linear_rnn(rho)
    norms = diagnostics.jacobian_norms(cell, params, XS)
    lags = np.arange(T - 1, -1, -1)
    np.testing.assert_allclose(norms["spectral"], rho**lags, rtol=1e-10)
    np.testing.assert_allclose(norms["frobenius"], rho**lags * np.sqrt(5), rtol=1e-10)
    power = diagnostics.spectral_norms_power(cell, params, XS, jax.random.key(0), iterations=5)
    np.testing.assert_allclose(power, rho**lags, rtol=1e-10)
    np.testing.assert_allclose(
        diagnostics.lyapunov_exponent(cell, params, XS, jax.random.key(1)), np.log(rho), atol=1e-12
    )
    assert np.all(diagnostics.rnn_bound(cell, params, T) >= norms["spectral"] * (1 - 1e-12))


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_power_iteration_matches_the_full_jacobian(cell):
    params = random_params(cell, jax.random.key(2), D, jnp.float64, scale=0.8)
    exact = diagnostics.jacobian_norms(cell, params, XS)["spectral"]
    power = diagnostics.spectral_norms_power(cell, params, XS, jax.random.key(0), iterations=200)
    np.testing.assert_allclose(power, exact, rtol=1e-6)


def test_rnn_bound_is_never_below_the_measured_norm():
    for scale in (0.5, 1.0, 2.0):
        cell = gated.cells.RNN(6, recurrent_scale=scale)
        params = random_params(cell, jax.random.key(4), D, jnp.float64)
        measured = diagnostics.jacobian_norms(cell, params, XS)["spectral"]
        assert np.all(diagnostics.rnn_bound(cell, params, T) >= measured * (1 - 1e-12))


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
def test_scalar_chain_closed_form_equals_autodiff(activation):
    rng = np.random.default_rng(5)
    w, b = jnp.asarray(rng.uniform(0.5, 2.0, 12)), jnp.asarray(rng.uniform(0.1, 0.5, 12))
    a0 = jnp.float64(0.7)
    _, closed = diagnostics.scalar_chain(w, b, a0, activation)
    autodiff = jax.grad(lambda w1: diagnostics.scalar_chain(w.at[0].set(w1), b, a0, activation)[0])(w[0])
    np.testing.assert_allclose(closed, autodiff, rtol=1e-12)


def test_scalar_chain_reproduces_the_seed_numbers():
    # ReLU, w = 2, 17 layers: 16 factors of w * relu' = 2 explode to 2^16 = 65536
    _, grow = diagnostics.scalar_chain(jnp.full(17, 2.0), jnp.zeros(17), jnp.float64(1.0), "relu")
    assert float(grow) == 65536.0
    # sigmoid at z = 0 (sigma' = 1/4) with w = 2: 16 factors of 1/2 vanish to (1/2)^16 = 1.5e-5
    w = jnp.full(17, 2.0)
    a = [jnp.float64(1.0)]  # a_0
    b = []
    for _ in range(17):  # choose each bias so that z_l = w a_{l-1} + b_l = 0
        b.append(-2.0 * a[-1])
        a.append(jax.nn.sigmoid(0.0))
    _, vanish = diagnostics.scalar_chain(w, jnp.asarray(b), jnp.float64(1.0), "sigmoid")
    np.testing.assert_allclose(vanish, 0.5**16 * 0.25, rtol=1e-12)


GATED = [
    gated.cells.LSTM(4),
    gated.cells.LSTM(4, peepholes=True),
    gated.cells.LSTM(4, coupled=True),
    gated.cells.LSTM(4, forget_gate=False),
    gated.cells.GRU(4),
    gated.cells.GRU(4, update="write", reset="before"),
]


@pytest.mark.parametrize("cell", GATED, ids=lambda c: c.name + "-" + "-".join(f"{v}" for v in vars(c).values())[:40])
def test_gate_path_from_the_gates_equals_autodiff_with_the_gates_held_constant(cell):
    params = random_params(cell, jax.random.key(6), D, jnp.float64)
    path = diagnostics.gate_path(cell, params, XS)
    jac = diagnostics.gate_path_by_autodiff(cell, params, XS)
    expected = jax.vmap(jnp.diag)(path["product"])
    np.testing.assert_allclose(jac, expected, rtol=1e-12, atol=1e-14)
    if cell.name == "lstm" and not cell.forget_gate:
        np.testing.assert_array_equal(path["product"], np.ones((T, 4)))  # the 1997 cell: the path never decays
    if cell.name == "lstm":  # dh_{T-1}/dc_k along the path, against autodiff of h_{T-1} with the gates held
        np.testing.assert_allclose(path["dh_dc"][-1], path["gates"].o[-1] * (1 - jnp.tanh(path["gates"].c[-1]) ** 2))


def test_forget_bias_keeps_the_path_open():
    """The lecture's claim: the gradient along the cell state vanishes only when the forget gates close."""
    xs = jnp.asarray(np.random.default_rng(1).standard_normal((40, D)))
    decay = {}
    for bias in (-2.0, 5.0):
        cell = gated.cells.LSTM(8, forget_bias=bias)
        params = cell.init(jax.random.key(0), D, jnp.float64)
        decay[bias] = float(jnp.mean(diagnostics.gate_path(cell, params, xs)["product"][0]))
    assert decay[-2.0] < 1e-30 < 0.5 < decay[5.0]


@pytest.mark.parametrize("cell", [gated.cells.LSTM(4), gated.cells.LSTM(4, peepholes=True)], ids=["plain", "peepholes"])
def test_output_gate_path_is_the_product_of_its_step_jacobians_and_below_its_bound(cell):
    params = random_params(cell, jax.random.key(7), D, jnp.float64)
    for w_o_scale in (1.0, 30.0):
        kernel = params.recurrent_kernel
        scaled = params._replace(recurrent_kernel=kernel.at[:, 12:].multiply(w_o_scale))  # the o block
        path = diagnostics.output_gate_path(cell, scaled, XS)
        # by hand: dh_t/dh_{t-1} = diag(tanh(c_t) sigma'(a_o,t)) W_o^T along the path
        _, carries = gated.run(cell, scaled, XS[:, None], return_carries=True)
        acts = jax.vmap(lambda c, x, p=scaled: cell.gate_activations(p, c, cell.project(p, x)))(
            jax.tree.map(lambda a: jnp.concatenate([jnp.zeros((1, 4)), a[:-1, 0]]), carries), XS
        )
        k_diag = jnp.tanh(acts.c) * acts.o * (1 - acts.o)
        steps = [k_diag[t][:, None] * scaled.recurrent_kernel[:, 12:].T for t in range(T)]
        product = np.eye(4)
        for k in range(T - 1, -1, -1):
            np.testing.assert_allclose(path["jacobians"][k], product, rtol=1e-10, atol=1e-14)
            product = product @ steps[k]
        assert np.all(path["bound"] >= path["spectral"] * (1 - 1e-12))
        assert float(path["k_norm"]) <= 0.25
        np.testing.assert_allclose(path["w_o_norm"], w_o_scale * np.linalg.norm(params.recurrent_kernel[:, 12:], 2))


def test_scalar_chain_gradients_for_every_depth_equal_autodiff_and_the_closed_form():
    rng = np.random.default_rng(8)
    w, b = jnp.asarray(rng.uniform(0.5, 3.0, 10)), jnp.asarray(rng.uniform(-0.5, 0.5, 10))
    acts, closed, autodiff = diagnostics.scalar_chain_gradients(w, b, jnp.float64(0.3), "sigmoid")
    np.testing.assert_allclose(closed, autodiff, rtol=1e-12)
    for depth in (1, 4, 10):
        a_last, last_closed = diagnostics.scalar_chain(w[:depth], b[:depth], jnp.float64(0.3), "sigmoid")
        np.testing.assert_allclose([acts[depth - 1], closed[depth - 1]], [a_last, last_closed], rtol=1e-12)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: diagnostics.gate_path(gated.cells.RNN(3), None, jnp.zeros((4, 2))),
         r"cell: expected a gated path \(an LSTM or GRU cell\), got 'rnn'"),
        (lambda: diagnostics.gate_path_by_autodiff(gated.cells.MinGRU(3), None, jnp.zeros((4, 2))),
         r"cell: expected a gated path \(an LSTM or GRU cell\), got 'mingru'"),
        (lambda: diagnostics.output_gate_path(gated.cells.GRU(3), None, jnp.zeros((4, 2))),
         r"cell: expected a gated.cells.LSTM cell, got 'gru'"),
        (lambda: diagnostics.rnn_bound(gated.cells.LSTM(3), None, 4),
         r"cell: expected a gated.cells.RNN cell, got 'lstm'"),
        (lambda: diagnostics.decay_factors(gated.cells.SLSTM(3), None, jnp.zeros((4, 2))),
         r"cell: expected a gated linear recurrence \(a cell of the gated.forms.Diagonal form\), got 'slstm'"),
        (lambda: diagnostics.gate_path("lstm", None, jnp.zeros((4, 2))), r"cell: expected a gated.cells cell"),
    ],
)  # fmt: skip
def test_diagnostics_refuse_cells_without_what_they_measure(call, message):
    """Each diagnostic asks the cell for what it needs (gated.cells.require) and names what it got."""
    with pytest.raises(TypeError, match=message):
        call()
