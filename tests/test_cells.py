"""Cells against the float64 NumPy reference, finite differences and their options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import gated
from tests import reference
from tests.conftest import CELL_CONFIGS, config_id, make_cell, random_carry, random_params, record_error

TOLERANCES = {jnp.float64: dict(rtol=1e-10, atol=1e-12), jnp.float32: dict(rtol=1e-5, atol=1e-6)}


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["float64", "float32"])
def test_cell_matches_numpy_reference(cell_config, dtype):
    for input_size, hidden_size in [(1, 1), (3, 5), (7, 16)]:
        cell = make_cell(cell_config, hidden_size)
        key = jax.random.key(input_size * 100 + hidden_size)
        k_p, k_c, k_x = jax.random.split(key, 3)
        params = random_params(cell, k_p, input_size, dtype)
        carry = random_carry(cell, k_c, (), dtype)
        x = jax.random.normal(k_x, (input_size,), dtype)

        new_carry, y = jax.jit(cell)(params, carry, x)
        ref_carry, ref_y = reference.step(cell, params, carry, x)

        assert y.dtype == dtype and y.shape == (hidden_size,)
        assert jax.tree.structure(new_carry) == jax.tree.structure(cell.initial_carry())
        for got, want in zip(jax.tree.leaves(new_carry) + [y], jax.tree.leaves(ref_carry) + [ref_y], strict=True):
            np.testing.assert_allclose(got, want, **TOLERANCES[dtype])
            record_error("numpy", config_id(cell_config), dtype, got, want)


FD_FAST = [("rnn", {"activation": "tanh"}), ("lstm", {"peepholes": True}), ("lstm", {"coupled": True}),
           ("gru", {"update": "keep", "reset": "before"})]  # the rest in the slow tier  # fmt: skip


@pytest.mark.parametrize("cell_config", [c if c in FD_FAST else pytest.param(c, marks=pytest.mark.slow)
                                         for c in CELL_CONFIGS], ids=config_id)  # fmt: skip
def test_gradients_match_finite_differences(cell_config):
    cell = make_cell(cell_config, 3)
    params = random_params(cell, jax.random.key(3), 2, jnp.float64)
    carry = random_carry(cell, jax.random.key(4), (), jnp.float64)
    x = jax.random.normal(jax.random.key(5), (2,), jnp.float64)
    if cell_config == ("rnn", {"activation": "relu"}):
        # keep every pre-activation away from the kink at 0, where finite differences are meaningless
        params = params._replace(bias=params.bias + 2.0)
    # Eagerly: check_grads calls the cell in a dozen transformed forms, and jit would compile each one.
    check_grads(cell, (params, carry, x), order=2, modes=("fwd", "rev"))


def test_init_shapes_and_biases():
    key = jax.random.key(0)
    p = gated.cells.LSTM(4, forget_bias=2.5, peepholes=True).init(key, 3)
    assert p.input_kernel.shape == (3, 16) and p.recurrent_kernel.shape == (4, 16) and p.bias.shape == (16,)
    np.testing.assert_array_equal(p.bias, np.r_[np.zeros(4), np.full(4, 2.5), np.zeros(8)])
    np.testing.assert_array_equal(p.peepholes, np.zeros(12))
    cifg = gated.cells.LSTM(4, coupled=True, forget_bias=1.5).init(key, 3)
    np.testing.assert_array_equal(cifg.bias, np.r_[np.full(4, -1.5), np.zeros(8)])
    assert gated.cells.LSTM(4, forget_gate=False).init(key, 3).bias.shape == (12,)
    assert float(jnp.abs(gated.cells.LSTM(4, forget_gate=False).init(key, 3).bias).max()) == 0.0
    g_after, g_before = gated.cells.GRU(4).init(key, 3), gated.cells.GRU(4, reset="before").init(key, 3)
    assert g_after.candidate_bias.shape == (4,) and g_before.candidate_bias is None
    assert gated.cells.RNN(5).init(key, 2, jnp.float64).recurrent_kernel.dtype == jnp.float64


def test_chrono_init():
    cell = gated.cells.LSTM(64, chrono_init=50)
    b = cell.init(jax.random.key(0), 3).bias
    b_i, b_f = cell.gate(b, "i"), cell.gate(b, "f")
    np.testing.assert_array_equal(b_i, -b_f)
    assert float(b_f.min()) >= 0.0 and float(b_f.max()) <= np.log(49) + 1e-6
    keep = gated.cells.GRU(64, chrono_init=50).init(jax.random.key(0), 3).bias
    write = gated.cells.GRU(64, chrono_init=50, update="write").init(jax.random.key(0), 3).bias
    np.testing.assert_array_equal(keep[64:128], -write[64:128])
    assert float(keep[64:128].min()) >= 0.0


def test_gru_keep_and_write_are_the_same_function_with_z_negated():
    """z -> 1 - z (z-block weights and bias negated) maps "keep" onto "write"."""
    for reset in ("after", "before"):
        keep = gated.cells.GRU(5, update="keep", reset=reset)
        write = gated.cells.GRU(5, update="write", reset=reset)
        p = random_params(keep, jax.random.key(0), 3, jnp.float64)
        neg = np.ones((1, 15))
        neg[:, 5:10] = -1.0
        p_write = p._replace(
            input_kernel=p.input_kernel * neg, recurrent_kernel=p.recurrent_kernel * neg, bias=p.bias * neg[0]
        )
        xs = jax.random.normal(jax.random.key(1), (7, 2, 3), jnp.float64)
        _, ys_keep = gated.run(keep, p, xs)
        _, ys_write = gated.run(write, p_write, xs)
        np.testing.assert_allclose(ys_keep, ys_write, rtol=1e-12, atol=1e-14)
        _, ys_unchanged = gated.run(write, p, xs)
        assert float(jnp.abs(ys_unchanged - ys_keep).max()) > 1e-2


def test_gru_reset_before_and_after_differ():
    after, before = gated.cells.GRU(5, reset="after"), gated.cells.GRU(5, reset="before")
    p = random_params(after, jax.random.key(0), 3, jnp.float64)
    p_before = p._replace(candidate_bias=None)
    xs = jax.random.normal(jax.random.key(1), (6, 3), jnp.float64)[:, None, :]
    _, ys_after = gated.run(after, p._replace(candidate_bias=jnp.zeros(5)), xs)
    _, ys_before = gated.run(before, p_before, xs)
    assert float(jnp.abs(ys_after - ys_before).max()) > 1e-2


class TestInitialisers:
    def test_orthogonal_per_gate_block(self):
        w = gated.init.orthogonal(jax.random.key(0), 8, 4, scale=0.9, dtype=jnp.float64)
        assert w.shape == (8, 32)
        for k in range(4):
            block = np.asarray(w[:, 8 * k : 8 * (k + 1)])
            np.testing.assert_allclose(block.T @ block, 0.81 * np.eye(8), atol=1e-12)
            np.testing.assert_allclose(np.abs(np.linalg.eigvals(block)), 0.9, rtol=1e-10)
        assert not np.allclose(w[:, :8], w[:, 8:16])

    def test_gaussian_std_and_spectral_radius(self):
        w = np.asarray(gated.init.gaussian(jax.random.key(0), 400, 1, scale=1.5, dtype=jnp.float64))
        assert abs(w.std() - 1.5 / np.sqrt(400)) < 0.01 * 1.5 / np.sqrt(400) * 5
        assert abs(np.max(np.abs(np.linalg.eigvals(w))) - 1.5) < 0.15

    def test_identity(self):
        w = gated.init.identity(jax.random.key(0), 3, 2, scale=0.5)
        np.testing.assert_array_equal(w, np.hstack([0.5 * np.eye(3)] * 2))

    def test_cells_use_the_selected_recurrent_init(self):
        cell = gated.cells.RNN(6, recurrent_init="identity", recurrent_scale=1.0, activation="relu")
        np.testing.assert_array_equal(cell.init(jax.random.key(0), 2).recurrent_kernel, np.eye(6))
        w = gated.cells.LSTM(6, recurrent_scale=0.5).init(jax.random.key(0), 2, jnp.float64).recurrent_kernel
        np.testing.assert_allclose(np.asarray(w[:, 6:12]).T @ np.asarray(w[:, 6:12]), 0.25 * np.eye(6), atol=1e-12)

    def test_input_kernel_is_lecun_normal(self):
        w = np.asarray(gated.init.input_kernel(jax.random.key(0), 256, 512, jnp.float64))
        assert abs(w.var() * 256 - 1.0) < 0.05


HALF = [jnp.bfloat16, jnp.float16]


@pytest.mark.parametrize("dtype", HALF, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.slow
def test_half_precision_init_and_run(dtype):
    """Every initialiser draws in float32 and casts; gated.run takes half-precision parameters and inputs, on the
    fused and the reference paths, and stays close to the float32 run from the same (rounded) parameters."""
    inits = [{"recurrent_init": r} for r in ("orthogonal", "gaussian", "identity")] + [{"chrono_init": 8}]
    for options in inits:
        for name in ("lstm", "gru", "rnn") if "chrono_init" not in options else ("lstm", "gru"):
            cell = gated.cells.get(name, 8, **options)
            params = cell.init(jax.random.key(0), 3, dtype)
            assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(params))
            want = cell.init(jax.random.key(0), 3, jnp.float32)
            for got, ref in zip(jax.tree.leaves(params), jax.tree.leaves(want), strict=True):
                np.testing.assert_array_equal(got, ref.astype(dtype))  # the float32 draw, rounded
    xs = jnp.asarray(np.random.default_rng(0).standard_normal((5, 2, 3)), dtype)
    for cell in (gated.cells.LSTM(8), gated.cells.GRU(8), gated.cells.LSTM(8, peepholes=True)):
        params = cell.init(jax.random.key(1), 3, dtype)
        wide = jax.tree.map(lambda a: a.astype(jnp.float32), params)
        want = gated.run(cell, wide, xs.astype(jnp.float32))[1]
        for impl in ("auto", "reference"):
            carry, ys = jax.jit(lambda p, x, cell=cell, impl=impl: gated.run(cell, p, x, impl=impl))(params, xs)
            assert ys.dtype == dtype and all(leaf.dtype == dtype for leaf in jax.tree.leaves(carry))
            np.testing.assert_allclose(ys.astype(jnp.float32), want, atol=0.05)
            grads = jax.jit(jax.grad(lambda p, cell=cell, impl=impl: jnp.sum(gated.run(cell, p, xs, impl=impl)[1])))(
                params
            )
            assert all(leaf.dtype == dtype and np.isfinite(np.asarray(leaf, np.float32)).all()
                       for leaf in jax.tree.leaves(grads))  # fmt: skip


def test_layer_normalised_lstm_is_served_where_it_can_be_and_refused_where_not():
    """layer_norm=True (Ba et al. 2016): gated.run's default takes the reference path (the fused kernel names why
    not); at init the gains are ones and the cell-state bias zero; the forget-gate product of gate_path holds, and
    what reads c through LN's coupling (the readout slope, the gated path by autodiff, Flax's LSTMCell) is refused
    or left out."""
    import gated.flax
    from gated import diagnostics, fused

    cell = gated.cells.LSTM(4, layer_norm=True)
    params = cell.init(jax.random.key(0), 3)
    assert isinstance(params.norms, gated.cells.LSTMNorms)
    np.testing.assert_array_equal(params.norms.input_scale, np.ones(16))
    assert not params.norms.cell_bias.any()
    assert "layer normalisation" in fused.supports(cell)
    with pytest.raises(ValueError, match="impl: 'fused' is not available here: .*layer normalisation"):
        gated.run(cell, params, jnp.ones((5, 2, 3)), impl="fused")
    xs = jax.random.normal(jax.random.key(1), (6, 3))
    path = diagnostics.gate_path(cell, params, xs)
    assert "dh_dc" not in path and path["product"].shape == (6, 4)
    with pytest.raises(ValueError, match="the gated path by autodiff covers the LSTM without layer_norm or proj_size"):
        diagnostics.gate_path_by_autodiff(cell, params, xs)
    with pytest.raises(ValueError, match="the output-gate path and its bound are the plain LSTM's"):
        diagnostics.output_gate_path(cell, params, xs)
    with pytest.raises(ValueError, match="params.norms: expected LSTMNorms"):
        cell.project(params._replace(norms=None), jnp.ones(3))
    with pytest.raises(ValueError, match="Flax's LSTMCell is .*layer_norm=False"):
        gated.flax.to_linen_params(params, cell)


@pytest.mark.parametrize("options", [pytest.param({}, marks=pytest.mark.slow), {"peepholes": True, "layer_norm": True}],
                         ids=["plain", "peepholes-ln"])  # fmt: skip
def test_projected_lstm_equals_its_numpy_transcription_and_finite_differences(options):
    """proj_size=P (Sak et al. 2014, PyTorch's proj_size): h_t = (o_t tanh(c_t)) W_hr of size P, what the gates
    read and what the cell outputs; c keeps H units. Against the float64 NumPy loop with lengths and reverse, and
    finite differences of both orders; the layer's output size is P and a stack reads it."""
    import gated.flax

    cell = gated.cells.LSTM(6, proj_size=3, **options)
    params = random_params(cell, jax.random.key(0), 4, jnp.float64)
    carry = random_carry(cell, jax.random.key(1), (2,), jnp.float64)
    assert carry.h.shape == (2, 3) and carry.c.shape == (2, 6)
    xs = jax.random.normal(jax.random.key(2), (7, 2, 4), jnp.float64)
    lengths = jnp.array([7, 4])
    for reverse in (False, True):
        final, ys = jax.jit(lambda p, c, x, r=reverse: gated.run(cell, p, x, carry=c, lengths=lengths, reverse=r))(
            params, carry, xs
        )
        for b in range(2):
            one = jax.tree.map(lambda a, b=b: a[b], carry)
            want_final, want_ys, _ = reference.run(cell, params, np.asarray(xs[:, b]), one, int(lengths[b]), reverse)
            np.testing.assert_allclose(ys[:, b], want_ys, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(final.h[b], want_final[0], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(final.c[b], want_final[1], rtol=1e-10, atol=1e-12)
    if not options:  # the layer-normalised cell's derivatives: its CELL_CONFIGS case
        check_grads(lambda p, x: gated.run(cell, p, x, carry=carry)[1], (params, xs[:3]), order=2, modes=("fwd", "rev"))
    stack = gated.Stack([cell, gated.cells.GRU(5)])
    assert gated.Recurrent(cell).output_size == 3
    assert stack.init(jax.random.key(3), 4)[1].cell.input_kernel.shape[0] == 3  # the GRU reads h of size P
    with pytest.raises(ValueError, match="Flax's LSTMCell is .*proj_size=None, got .*proj_size=3"):
        gated.flax.to_linen_params(params, cell)
    with pytest.raises(ValueError, match="proj_size: expected less than hidden_size 6 .*got 6"):
        gated.cells.LSTM(6, proj_size=6)
    with pytest.raises(ValueError, match=r"params.projection: expected shape \(6, 3\) \(proj_size=3\), got None"):
        cell.step(params._replace(projection=None), jax.tree.map(lambda a: a[0], carry), cell.project(params, xs[0, 0]))


def test_the_new_lstm_variants_and_recurrent_dropout_run_and_differentiate_in_bfloat16():
    """bfloat16 parameters and inputs: outputs in bfloat16, finite gradients, near the float32 run's."""
    xs = jax.random.normal(jax.random.key(1), (6, 2, 3), jnp.bfloat16)
    for cell in (gated.cells.LSTM(8, layer_norm=True), gated.cells.LSTM(8, proj_size=4),
                 gated.cells.RecurrentDropout(cell=gated.cells.GRU(8), dropout=0.2, zoneout=0.1)):  # fmt: skip
        layer = gated.Recurrent(cell)
        params = layer.init(jax.random.key(0), 3, jnp.bfloat16)
        key = {"key": jax.random.key(2)} if cell.stochastic else {}
        ys, grads = jax.jit(lambda p, layer=layer, key=key: (layer(p, xs, **key)[1],
                                                             jax.grad(lambda q: jnp.sum(layer(q, xs, **key)[1].astype(
                                                                 jnp.float32)))(p)))(params)  # fmt: skip
        assert ys.dtype == jnp.bfloat16
        assert all(np.isfinite(np.asarray(g, np.float32)).all() for g in jax.tree.leaves(grads))
        wide = jax.tree.map(lambda a: a.astype(jnp.float32), params)
        want = layer(wide, xs.astype(jnp.float32), **key)[1]
        np.testing.assert_allclose(ys.astype(jnp.float32), want, atol=0.05)
