"""The gated linear recurrences (minGRU, minLSTM, LRU, RG-LRU, the selective SSM, xLSTM's mLSTM) and xLSTM's
sLSTM: each step against a float64 NumPy transcription, the parallel forms (associative, chunked, sequential)
against the sequential reference in values and derivatives, and resets inside a sequence, for every cell, against
splitting the sequence by hand; the xLSTM stabilisers against the paper's unstabilised equations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import gated
from tests import reference
from tests.conftest import config_id, random_carry, random_params

LINEAR_CONFIGS = [
    ("mingru", {}),
    ("mingru", {"log_space": True}),
    ("minlstm", {}),
    ("minlstm", {"log_space": True}),
    ("lru", {}),
    ("rglru", {}),
    ("ssm", {"state_size": 3}),
    ("mlstm", {"num_heads": 2}),
]
# The cells with negative decays (Grazzi et al.'s [-1, 1]; the minGRU in log space too, where signs are carried) and
# the time-invariant SSM, in the tests of their values, parallel forms and Jacobians.
MINUS = {"eigenvalues": "[-1, 1]"}
NEGATIVES = [("mingru", MINUS), ("mingru", {**MINUS, "log_space": True}), ("rglru", MINUS),
             ("ssm", {"state_size": 3, **MINUS}), ("ssm", {"state_size": 3, "selective": False})]  # fmt: skip
T, B, D, H = 13, 3, 4, 6
F64 = {"rtol": 1e-10, "atol": 1e-10}


def _case(name, options, dtype=jnp.float64, seed=0):
    cell = gated.cells.get(name, H, **options)
    params = random_params(cell, jax.random.key(seed), D, dtype)
    carry = random_carry(cell, jax.random.key(seed + 1), (B,), dtype)
    if cell.name == "slstm":
        carry = carry._replace(n=jnp.abs(carry.n) + 1.0)  # a normaliser is positive
    xs = jax.random.normal(jax.random.key(seed + 2), (T, B, D), dtype)
    return cell, params, carry, xs


def _close(a, b, **tol):
    # leaf by leaf (the NumPy transcriptions return plain tuples for the cells' NamedTuples): shapes, values
    chex.assert_trees_all_close(jax.tree.leaves(a), jax.tree.leaves(b), **(tol or F64))


@pytest.mark.parametrize("config", [*LINEAR_CONFIGS, *NEGATIVES, ("slstm", {}), ("slstm", {"exponential_forget": True}),
                                    ("mlstm", {"num_heads": 2, "output_gate": False})], ids=config_id)  # fmt: skip
def test_step_equals_the_numpy_transcription(config):
    cell, params, carry, xs = _case(*config)
    one = jax.tree.map(lambda a: a[0], carry)
    new, y = jax.jit(cell)(params, one, xs[0, 0])
    ref_new, ref_y = reference.step(cell, params, one, xs[0, 0])
    _close(new, ref_new)
    _close(y, ref_y)


# The log-space forms in the slow tier (the fast tier's test_recomputed_equals_the_reference_path has one)
SLOW_FORMS = [("mingru", {"log_space": True}), ("minlstm", {"log_space": True}), NEGATIVES[1]]
# The options beside the defaults, which tests/test_conformance.py runs on every form of every registered cell.
OPTIONED = [c for c in [*LINEAR_CONFIGS, *NEGATIVES] if c[1] and c[1] != {"state_size": 3} and c[1] != {"num_heads": 2}]


@pytest.mark.parametrize("config", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_FORMS else c
                                    for c in OPTIONED], ids=config_id)  # fmt: skip
def test_parallel_forms_equal_the_sequential_reference(config):
    """Values and gradients, float64 to 1e-10, with lengths, resets, both directions, remat, and chunks that do
    and do not divide T."""
    cell, params, carry, xs = _case(*config)
    lengths = jnp.array([T, 7, 0])
    resets = jnp.zeros((T, B), bool).at[4, 0].set(True).at[9, 0].set(True).at[3, 1].set(True)

    def loss(impl, reverse, chunk, remat):
        def f(p, c, x):
            kw = dict(carry=c, lengths=lengths, resets=resets, reverse=reverse, impl=impl, chunk=chunk, remat=remat)
            final, ys = gated.run(cell, p, x, **kw)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(final))

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))

    forward, backward = (loss("reference", r, 64, False)(params, carry, xs) for r in (False, True))
    _close(loss("associative", False, 64, False)(params, carry, xs), forward)
    _close(loss("sequential", True, 4, False)(params, carry, xs), backward)  # 4 does not divide T = 13
    _close(loss("chunked", True, 4, True)(params, carry, xs), backward)


@pytest.mark.slow
@pytest.mark.parametrize("impl, chunk, remat", [("associative", 64, True), ("chunked", 1, False),
                                                ("chunked", 13, False)])  # fmt: skip
def test_every_chunk_length_and_remat(impl, chunk, remat):
    for i, (name, options) in enumerate(LINEAR_CONFIGS[:-1]):  # the mLSTM: chunks and remat in the fast tier
        cell, params, carry, xs = _case(name, options)
        for reverse in (i % 2 == 1,):  # each direction for half of the configurations
            kw = dict(carry=carry, lengths=jnp.array([T, 7, 0]), resets=xs[..., 0] > 1.0, reverse=reverse)

            def f(p, x, impl, chunk, remat, kw=kw, cell=cell):
                return jnp.sum(jnp.sin(gated.run(cell, p, x, impl=impl, chunk=chunk, remat=remat, **kw)[1]))

            grad = jax.jit(jax.value_and_grad(f, argnums=(0, 1)), static_argnums=(2, 3, 4))
            _close(grad(params, xs, impl, chunk, remat), grad(params, xs, "reference", 64, False))


# The options beside the defaults (tests/test_conformance.py runs jvp and an HVP of every cell's defaults on every form)
TRANSFORMED = [LINEAR_CONFIGS[1], *NEGATIVES[1:3]]


@pytest.mark.slow
@pytest.mark.parametrize("config", TRANSFORMED, ids=config_id)
def test_parallel_forms_under_every_transform(config):
    """jacfwd and hessian (forward mode, and forward over reverse) of the parallel forms and of the default path (on
    the CPU the sequential, chunkwise or recomputed form, in chunks of 4 steps) equal the reference path's, for the
    options the conformance suite does not make (its jvp, HVP and vmap run every cell's defaults on every form)."""
    cell, params, carry, xs = _case(*config)

    def both(impl):
        loss = lambda p: jnp.sum(gated.run(cell, p, xs, carry=carry, impl=impl, chunk=4)[1] ** 2)
        return jax.jit(lambda p: (jax.jacfwd(loss)(p), jax.hessian(loss)(p)))(params)

    want = both("reference")
    for impl in ("associative", "auto"):
        _close(both(impl), want)


@pytest.mark.slow
def test_finite_differences_of_the_parallel_forms():
    cell, params, carry, xs = _case("lru", {})
    f = jax.jit(lambda p, x: gated.run(cell, p, x, carry=carry, impl="associative", resets=xs[..., 0] > 1.0)[1])
    check_grads(f, (params, xs), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) for n in ("rnn", "lstm", "gru", "lru", "slstm", "mlstm")] +
    ["mingru"]
)  # fmt: skip
@pytest.mark.parametrize("reverse", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_resets_equal_running_each_segment_by_hand(name, reverse):
    """resets=starts restores the initial carry where a segment starts; the result equals gated.run on each
    segment from that carry (each read backwards when reverse), on the default path (every other backend equals the
    reference path with resets in tests/test_conformance.py)."""
    cell = gated.cells.get(name, H)
    params = random_params(cell, jax.random.key(4), D, jnp.float64)
    carry = random_carry(cell, jax.random.key(5), (B,), jnp.float64)
    xs = jax.random.normal(jax.random.key(6), (T, B, D), jnp.float64)
    starts = {0: [5, 9], 1: [1], 2: []}
    resets = np.zeros((T, B), bool)
    for b, ts in starts.items():
        resets[ts, b] = True
    final, ys = jax.jit(lambda x, r: gated.run(cell, params, x, carry=carry, resets=r, reverse=reverse))(
        xs, jnp.asarray(resets)
    )
    for b, ts in starts.items():
        bounds = [0, *ts, T]
        one = jax.tree.map(lambda a, b=b: a[b], carry)
        segments = [(s, e) for s, e in zip(bounds, bounds[1:], strict=False) if e > s]
        pieces = [gated.run(cell, params, xs[s:e, b], carry=one, reverse=reverse) for s, e in segments]
        _close(ys[:, b], jnp.concatenate([y for _, y in pieces]))
        expected_final = pieces[0][0] if reverse else pieces[-1][0]
        _close(jax.tree.map(lambda a, b=b: a[b], final), expected_final)


@pytest.mark.slow
def test_log_space_stays_exact_where_the_linear_products_underflow():
    """A minGRU whose gates keep the state (1 - z ~ 0.999) over 4096 steps, float32: the log-space associative form
    agrees with the float64 sequential reference."""
    cell = gated.cells.MinGRU(8, log_space=True)
    params = cell.init(jax.random.key(0), 2)
    params = params._replace(bias=params.bias.at[:8].set(-7.0))  # z ~ 1e-3
    xs = jax.random.normal(jax.random.key(1), (4096, 2, 2))
    got = jax.jit(lambda p, x: gated.run(cell, p, x, impl="associative")[1])(params, xs)
    p64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    want = jax.jit(lambda p, x: gated.run(cell, p, x, impl="reference")[1])(p64, xs.astype(jnp.float64))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)


def test_parallel_forms_refuse_what_they_do_not_cover():
    lstm = gated.cells.LSTM(H)
    xs = jnp.zeros((T, B, D))
    refusal = "impl: 'associative' is not available here: the lstm cell is nonlinear, and 'associative' serves the"
    with pytest.raises(ValueError, match=refusal + " diagonal linear form"):
        gated.run(lstm, lstm.init(jax.random.key(0), D), xs, impl="associative")
    cell = gated.cells.MinGRU(H)
    params = cell.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match="impl: 'fused' is not available here"):
        gated.run(cell, params, xs, impl="fused")
    with pytest.raises(TypeError, match="resets: expected a boolean array, got dtype int"):
        gated.run(cell, params, xs, resets=jnp.zeros((T, B), int))
    with pytest.raises(ValueError, match=r"resets: expected the shape of xs without its feature axis"):
        gated.run(cell, params, xs, resets=jnp.zeros((T, B + 1), bool))
    with pytest.raises(ValueError, match="impl: 'fused' is not available here: resets are served by the reference"):
        gated.run(lstm, lstm.init(jax.random.key(0), D), xs, impl="fused", resets=jnp.zeros((T, B), bool))
    with pytest.raises(ValueError, match="chunk: expected a positive int, got 0"):
        gated.run(cell, params, xs, impl="chunked", chunk=0)
    with pytest.raises(ValueError, match="r_min, r_max"):
        gated.cells.LRU(H, r_min=0.99, r_max=0.9)


@pytest.mark.parametrize("config", [*LINEAR_CONFIGS[1:], *NEGATIVES], ids=config_id)
def test_diagonal_jacobians_in_closed_form_equal_autodiff(config):
    """ds_{T-1}/ds_k = diag(prod_{j>k} a_j): against the full Jacobians by autodiff along the trajectory (for the LRU,
    each unit's real 2x2 block is the rotation-scaling of the complex product)."""
    from gated import diagnostics

    cell, params, carry, xs = _case(*config)
    closed = jax.jit(lambda p, x: diagnostics.linear_state_jacobians(cell, p, x))(params, xs[:, 0])
    full = jax.jit(lambda p, x: diagnostics.state_jacobians(cell, p, x))(params, xs[:, 0])
    if cell.name == "mlstm":  # the stabilised memory's block: prod f_j exp(m_k - m_{T-1}) per head, times I
        m = jax.jit(lambda p, x: gated.run(cell, p, x, return_carries=True)[1].m)(params, xs[:, :1])[:, 0]
        d = cell.head_size
        gains = np.asarray(closed) * np.exp(np.asarray(m) - np.asarray(m[-1]))
        expected = np.stack([np.diag(np.repeat(g, d * d)) for g in gains])
        np.testing.assert_allclose(np.asarray(full)[:, : expected.shape[1], : expected.shape[1]], expected,
                                   rtol=1e-10, atol=1e-12)  # fmt: skip
        return
    if cell.name == "lru":  # flattened carry [real, imag]
        re, im = np.real(closed), np.imag(closed)
        expected = np.stack([np.block([[np.diag(r), np.diag(i)], [-np.diag(i), np.diag(r)]]).T
                             for r, i in zip(re, im, strict=True)])  # fmt: skip
    else:  # the SSM's (H, N) state flattened
        expected = np.stack([np.diag(d.ravel()) for d in np.asarray(closed)])
    np.testing.assert_allclose(full, expected, rtol=1e-10, atol=1e-12)
    norms = jax.jit(lambda p, x: diagnostics.gradient_norms(cell, p, x, lambda ys, final: jnp.sum(ys[-1])))(
        params, xs[:, 0]
    )
    # dL/ds_k for L = sum(s_{T-1}) is prod_{j>k} a_j (for the LRU's [real, imag], the norm is sqrt(2) |prod|)
    scale = np.sqrt(2.0) if cell.name == "lru" else 1.0
    gain = np.sqrt(np.sum(np.abs(closed) ** 2, axis=tuple(range(1, closed.ndim))))
    np.testing.assert_allclose(norms["h"], scale * gain, rtol=1e-10)


@pytest.mark.slow
def test_the_linear_cells_work_in_layers_modules_and_the_engine():
    """Unchanged: a bidirectional stack of linear cells, the linen and NNX modules (equal to the pure layer), and an
    engine config with a linear cell and a parallel form."""
    import flax.linen as nn
    from flax import nnx

    import gated.flax
    import gated.nnx
    from experiments import config as config_lib

    xs = jax.random.normal(jax.random.key(0), (2, 7, 3), jnp.float32)  # (B, T, D)
    lengths = jnp.array([7, 4])
    layer = gated.Stack([gated.Bidirectional(gated.Recurrent(gated.cells.LRU(4), impl="associative")),
                         gated.Recurrent(gated.cells.MinGRU(5, log_space=True), impl="chunked"),
                         gated.Recurrent(gated.cells.SelectiveSSM(4, state_size=3), impl="associative"),
                         gated.Recurrent(gated.cells.MLSTM(4, num_heads=2), impl="chunked"),
                         gated.Bidirectional(gated.cells.SLSTM(3))])  # fmt: skip
    module = gated.flax.RNN(layer, return_carry=True)
    variables = jax.jit(module.init)(jax.random.key(1), xs, lengths=lengths)  # jitted: one compile, not one per op
    _close(jax.jit(module.apply)(variables, xs, lengths=lengths),
           layer(variables["params"]["layer"], xs, lengths=lengths, time_axis=1), rtol=1e-6, atol=1e-6)  # fmt: skip
    for cell in (gated.cells.RGLRU(4), gated.cells.MLSTM(4, num_heads=2), gated.cells.SLSTM(4)):
        assert jax.jit(nn.RNN(gated.flax.Cell(cell)).init)(jax.random.key(2), xs) is not None
    for cell in (gated.cells.MinLSTM(4), gated.cells.MLSTM(4, num_heads=2), gated.cells.SLSTM(4)):
        assert gated.nnx.RNN(cell, 3, rngs=nnx.Rngs(0))(xs, lengths=lengths).shape == (2, 7, 4)
    config = config_lib.base_config()
    config.model.cell, config.model.impl, config.model.options.log_space = "mingru", "associative", True
    spec = config_lib.validate(config)
    assert spec.cell == gated.cells.MinGRU(64, log_space=True) and spec.model.layers[0].impl == "associative"
    config.model.cell, config.model.options.log_space, config.model.options.num_heads = "mlstm", None, 4
    assert config_lib.validate(config).cell == gated.cells.MLSTM(64, num_heads=4)


def _unstabilised_slstm(cell, p, xs):
    """The sLSTM of Beck et al.'s eqs. 8-13 without the stabiliser: i = exp(i~), f = sigmoid(f~), from zeros."""
    hs = cell.hidden_size
    wx, wh, b = (reference._blocks(a, cell.gates, hs) for a in (p.input_kernel, p.recurrent_kernel, p.bias))
    h = c = n = np.zeros(hs)
    ys = []
    for x in np.asarray(xs):
        pre = {g: x @ wx[g] + h @ wh[g] + b[g] for g in cell.gates}
        i, f = np.exp(pre["i"]), reference.sigmoid(pre["f"])
        c, n = f * c + i * np.tanh(pre["z"]), f * n + i
        h = reference.sigmoid(pre["o"]) * c / n
        ys.append(h)
    return np.stack(ys)


def _unstabilised_mlstm(cell, p, xs):
    """The mLSTM of Beck et al.'s eqs. 19-27 without the stabiliser: C = f C + exp(i~) v k^T, n = f n + exp(i~) k,
    h = o C q / max(|n^T q|, 1), from zeros."""
    hs, heads, d = cell.hidden_size, cell.num_heads, cell.head_size
    c, n = np.zeros((heads, d, d)), np.zeros((heads, d))
    ys, memories = [], []
    for x in np.asarray(xs):
        proj = x @ np.asarray(p.input_kernel) + np.asarray(p.bias)
        q, k, v, o = (proj[j * hs : (j + 1) * hs].reshape(heads, d) for j in range(4))
        k = k / np.sqrt(d)
        i, f = np.exp(proj[4 * hs : 4 * hs + heads]), reference.sigmoid(proj[4 * hs + heads :])
        c = f[:, None, None] * c + i[:, None, None] * v[:, :, None] * k[:, None, :]
        n = f[:, None] * n + i[:, None] * k
        read = np.einsum("kab,kb->ka", c, q) / np.maximum(np.abs(np.sum(n * q, -1)), 1.0)[:, None]
        ys.append((reference.sigmoid(o) * read).reshape(hs))
        memories.append(c)
    return np.stack(ys), np.stack(memories)


def test_the_xlstm_stabilisers_change_nothing_but_the_range():
    """Over a sequence from the zero carry, the stabilised sLSTM and mLSTM (every form) give the outputs of the
    paper's unstabilised equations, and exp(m) c is the unstabilised matrix memory (float64, 1e-10)."""
    xs = jax.random.normal(jax.random.key(3), (T, D), jnp.float64)
    slstm = gated.cells.SLSTM(H)
    params = random_params(slstm, jax.random.key(4), D, jnp.float64)
    got = jax.jit(lambda p: gated.run(slstm, p, xs[:, None])[1][:, 0])(params)
    np.testing.assert_allclose(got, _unstabilised_slstm(slstm, params, xs), **F64)
    mlstm = gated.cells.MLSTM(H, num_heads=2)
    params = random_params(mlstm, jax.random.key(5), D, jnp.float64)
    ys, memories = _unstabilised_mlstm(mlstm, params, xs)
    for impl in ("reference", "associative", "chunked"):
        got = jax.jit(lambda p, impl=impl: gated.run(mlstm, p, xs[:, None], impl=impl, chunk=4)[1][:, 0])(params)
        np.testing.assert_allclose(got, ys, **F64)
    _, carries = jax.jit(lambda p: gated.run(mlstm, p, xs[:, None], return_carries=True))(params)
    true = np.exp(np.asarray(carries.m[:, 0]))[:, :, None, None] * np.asarray(carries.c[:, 0])
    np.testing.assert_allclose(true, memories, **F64)


@pytest.mark.slow
def test_slstm_gradients_equal_finite_differences():
    cell, params, carry, xs = _case("slstm", {"exponential_forget": True})
    resets = xs[..., 0] > 1.0
    f = jax.jit(lambda p, x: gated.run(cell, p, x, carry=carry, lengths=jnp.array([T, 7, 0]), resets=resets)[1])
    check_grads(f, (params, xs), order=2, modes=("fwd", "rev"))


def test_mingru_with_eigenvalues_in_minus_one_to_one_flips_its_state():
    """eigenvalues="[-1, 1]": the decay 1 - 2z reaches -1 where the update gate is open, so the state changes sign
    (what parity needs), in every form, log space included; "[0, 1]" keeps it in [0, 1]."""
    from gated import diagnostics

    params = gated.cells.LinearParams(jnp.zeros((1, 2)), jnp.array([30.0, 0.0]))  # z = 1, candidate 0
    xs = jnp.zeros((4, 1))
    flips = gated.cells.MinGRU(1, eigenvalues="[-1, 1]")
    np.testing.assert_allclose(diagnostics.decay_factors(flips, params, xs)[:, 0], -1.0, atol=1e-12)
    in_log_space = gated.cells.MinGRU(1, eigenvalues="[-1, 1]", log_space=True)  # its candidate g(-30) ~ 1e-13
    for cell, p in ((flips, params), (in_log_space, params._replace(bias=jnp.array([30.0, -30.0])))):
        for impl in ("reference", "associative", "chunked"):
            _, ys = gated.run(cell, p, xs[:, None], carry=jnp.ones((1, 1)), impl=impl)
            np.testing.assert_allclose(ys[:, 0, 0], [-1.0, 1.0, -1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(diagnostics.decay_factors(gated.cells.MinGRU(1), params, xs)[:, 0], 0.0, atol=1e-12)
    with pytest.raises(ValueError, match=r"eigenvalues: expected .*'\[0, 1\]'.*got '\[-2, 1\]'"):
        gated.cells.MinGRU(4, eigenvalues="[-2, 1]")


def test_log_space_forms_take_an_initial_carry_of_either_sign():
    """The defect: a log-space minGRU from a negative carry gave parallel results off by 0.92 (the log of a negative
    state read as -inf). The initial state's weight is scanned apart: float64 to 1e-10 against the reference, with
    resets that restore the negative state."""
    cell = gated.cells.MinGRU(H, log_space=True)
    params = random_params(cell, jax.random.key(7), D, jnp.float64)
    carry = -1.0 - jnp.abs(random_carry(cell, jax.random.key(8), (B,), jnp.float64))
    xs = jax.random.normal(jax.random.key(9), (T, B, D), jnp.float64)
    resets = jnp.zeros((T, B), bool).at[6, 1].set(True)
    run = jax.jit(lambda impl: gated.run(cell, params, xs, carry=carry, resets=resets, impl=impl, chunk=4),
                  static_argnums=0)  # fmt: skip
    want = run("reference")
    assert float(jnp.min(want[1])) < 0.0  # the states are negative where the initial one still weighs
    for impl in ("associative", "chunked"):
        _close(run(impl), want)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=lambda d: jnp.dtype(d).name)
def test_rglru_gradients_stay_finite_where_its_recurrence_gate_saturates(dtype):
    """The defect: with the recurrence gate's bias at -200, r_t rounds to 0, a_t to 1, and the derivative of
    sqrt(1 - a_t^2) is infinite: NaN gradients. Bounded at 1000, as recurrentgemma does; the bound changes neither
    the value nor, above 1 / (4 * 1000^2), the derivative (forward and reverse mode)."""
    from gated.cells.rglru import sqrt_bound_derivative

    cell = gated.cells.RGLRU(H)
    params = cell.init(jax.random.key(0), D, dtype)
    params = params._replace(bias=params.bias.at[:H].set(-200.0))  # gate "a" is the first block
    xs = jax.random.normal(jax.random.key(1), (T, B, D), dtype)
    for impl in ("reference", "associative"):
        grads = jax.jit(jax.grad(lambda p, impl=impl: jnp.sum(gated.run(cell, p, xs, impl=impl)[1].astype(
            jnp.float32))))(params)  # fmt: skip
        assert all(np.isfinite(np.asarray(g, np.float32)).all() for g in jax.tree.leaves(grads)), impl
    x = jnp.array([0.0, 1e-9, 1e-6, 0.25, 4.0], jnp.float64)
    np.testing.assert_array_equal(sqrt_bound_derivative(x, 1000.0), jnp.sqrt(x))
    slope = jax.vmap(jax.grad(lambda v: sqrt_bound_derivative(v, 1000.0)))(x)
    np.testing.assert_allclose(slope, [1000.0, 1000.0, 500.0, 1.0, 0.25], rtol=1e-12)
    np.testing.assert_allclose(jax.jvp(lambda v: sqrt_bound_derivative(v, 1000.0), (x,), (jnp.ones_like(x),))[1],
                               slope, rtol=1e-12)  # fmt: skip


MATRIX = [("ssd", {"num_heads": 2, "state_size": 4}), ("gated_deltanet", {"num_heads": 2})]


@pytest.mark.slow
@pytest.mark.parametrize("config", [*LINEAR_CONFIGS, ("slstm", {}), *MATRIX], ids=config_id)
def test_every_modern_cell_runs_and_differentiates_in_bfloat16(config):
    """bfloat16 parameters, inputs and carry (the LRU crashed here: its complex state came back as float32): the
    outputs, the carry and the gradients keep bfloat16 and are finite, and the outputs are near the float32 run's
    from the same (rounded) parameters; on the default path and, for the LRU (complex) and a log-space cell, the
    associative form, and for a matrix-state cell the chunkwise form."""
    name, options = config
    cell = gated.cells.get(name, 8, **options)
    params = cell.init(jax.random.key(0), 3, jnp.bfloat16)
    xs = jax.random.normal(jax.random.key(1), (9, 2, 3), jnp.bfloat16)
    wide = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    want = gated.run(cell, wide, xs.astype(jnp.float32))[1]
    impls = ("auto", "associative") if name == "lru" or options.get("log_space") else ("auto",)
    for impl in impls + (("chunkwise",) if isinstance(cell, gated.forms.MatrixState) else ()):

        def loss(p, impl=impl):
            carry, ys = gated.run(cell, p, xs, impl=impl)
            return jnp.sum(ys.astype(jnp.float32)), (carry, ys)

        (_, (carry, ys)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        assert ys.dtype == jnp.bfloat16 and all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(carry))
        assert all(g.dtype == jnp.bfloat16 and np.isfinite(np.asarray(g, np.float32)).all()
                   for g in jax.tree.leaves(grads)), impl  # fmt: skip
        np.testing.assert_allclose(ys.astype(jnp.float32), want, atol=0.1, rtol=0.05)
