"""Flax linen and NNX modules against the pure functions, Flax's own cells, serialisation and the examples."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, serialization

import gated
import gated.flax
import gated.nnx
from experiments import flax_examples
from tests.conftest import record_error

CELLS = [gated.cells.LSTM(5, peepholes=True), gated.cells.GRU(5, reset="before"), gated.cells.RNN(5)]
XS = jnp.asarray(np.random.default_rng(0).standard_normal((6, 3, 4)), jnp.float32)
LENGTHS = jnp.array([6, 2, 0])


def _equal(a, b):
    chex.assert_trees_all_equal(a, b)  # the same structure, shapes and values


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_linen_and_nnx_cells_equal_the_pure_cell(cell):
    carry = cell.initial_carry((2, 3), jnp.float32)
    xs = XS[:2]  # (2, 3, D): two batch axes
    module = gated.flax.Cell(cell)
    variables = module.init(jax.random.key(0), carry, xs)
    params = variables["params"]["cell"]
    assert isinstance(params, type(cell.init(jax.random.key(0), 4)))
    expected = jax.vmap(jax.vmap(lambda c, x: cell(params, c, x)))(carry, xs)
    _equal(module.apply(variables, carry, xs), expected)

    nnx_cell = gated.nnx.Cell(cell, 4, rngs=nnx.Rngs(0))
    nnx_params = jax.tree.map(lambda v: v[...], nnx_cell.params, is_leaf=lambda a: isinstance(a, nnx.Variable))
    expected = jax.vmap(jax.vmap(lambda c, x: cell(nnx_params, c, x)))(carry, xs)
    _equal(nnx_cell(nnx_cell.initialize_carry(xs.shape), xs), expected)
    _equal(module.initialize_carry(jax.random.key(0), xs.shape), carry)


@pytest.mark.parametrize(
    "options",
    [{}, {"reverse": True}, {"learn_initial_carry": True}, {"remat": True, "unroll": 2}],
    ids=["plain", "reverse", "learned-carry", "remat"],
)
def test_linen_and_nnx_sequence_modules_equal_gated_run(options):
    cell = gated.cells.LSTM(5)
    layer = gated.Recurrent(cell, **options)
    xs_bm = jnp.swapaxes(XS, 0, 1)  # batch-major (B, T, D): the modules' default, as Flax's nn.RNN
    module = gated.flax.RNN(cell, **options, return_carry=True)
    variables = module.init(jax.random.key(0), xs_bm, lengths=LENGTHS)
    params = variables["params"]["layer"]
    carry, ys = jax.jit(lambda v: module.apply(v, xs_bm, lengths=LENGTHS))(variables)
    _equal((carry, ys), layer(params, xs_bm, lengths=LENGTHS, time_axis=1))

    nnx_module = gated.nnx.RNN(cell, 4, **options, return_carry=True, rngs=nnx.Rngs(0))
    nnx_params = jax.tree.map(lambda v: v[...], nnx_module.params, is_leaf=lambda a: isinstance(a, nnx.Variable))
    _equal(nnx_module(xs_bm, lengths=LENGTHS), layer(nnx_params, xs_bm, lengths=LENGTHS, time_axis=1))


def test_bidirectional_and_stacked_modules_with_initial_carry():
    layer = gated.Stack([gated.Bidirectional(gated.cells.GRU(3)), gated.Bidirectional(gated.cells.LSTM(4))])
    module = gated.flax.RNN(layer, time_axis=0, return_carry=True)
    variables = module.init(jax.random.key(0), XS)
    params = variables["params"]["layer"]
    carry0 = jax.tree.map(jnp.ones_like, layer(params, XS)[0])
    _equal(
        module.apply(variables, XS, initial_carry=carry0, lengths=LENGTHS),
        layer(params, XS, carry=carry0, lengths=LENGTHS),
    )
    nnx_module = gated.nnx.RNN(layer, 4, time_axis=0, rngs=nnx.Rngs(1))
    assert nnx_module(XS, initial_carry=carry0, lengths=LENGTHS).shape == (6, 3, 8)


def test_options_beside_a_layer_are_refused():
    layer = gated.Recurrent(gated.cells.GRU(3))
    for options in ({"reverse": True}, {"unroll": 2}, {"remat": True}, {"impl": "reference"}):
        name = next(iter(options))
        with pytest.raises(ValueError, match=f"{name}: options of the layer made from a bare cell; got a Recurrent"):
            gated.flax.RNN(layer, **options).init(jax.random.key(0), XS)
        with pytest.raises(ValueError, match=f"{name}: options of the layer made from a bare cell"):
            gated.nnx.RNN(layer, 4, **options, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("cell", [gated.cells.LSTM(5), gated.cells.GRU(5, reset="before")], ids=lambda c: c.name)
def test_gated_cells_inside_flax_own_rnn(cell):
    """gated.flax.Cell is an nn.RNNCellBase (gated.nnx.Cell an nnx.RNNCellBase): Flax's own nn.RNN runs it, with
    initialize_carry(rng, input_shape), and gives gated.run's outputs."""
    xs_bm = jnp.swapaxes(XS, 0, 1)
    flax_rnn = nn.RNN(gated.flax.Cell(cell))
    variables = flax_rnn.init(jax.random.key(0), xs_bm)
    params = variables["params"]["cell"]["cell"]
    np.testing.assert_allclose(flax_rnn.apply(variables, xs_bm), gated.run(cell, params, xs_bm, time_axis=1)[1],
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    nnx_cell = gated.nnx.Cell(cell, 4, rngs=nnx.Rngs(0))
    nnx_params = jax.tree.map(lambda v: v[...], nnx_cell.params, is_leaf=lambda a: isinstance(a, nnx.Variable))
    np.testing.assert_allclose(nnx.RNN(nnx_cell)(xs_bm), gated.run(cell, nnx_params, xs_bm, time_axis=1)[1],
                               rtol=1e-6, atol=1e-6)  # fmt: skip


FLAX_PARITY = [
    (nn.LSTMCell, gated.cells.LSTM(5)),
    (nn.OptimizedLSTMCell, gated.cells.LSTM(5)),
    (nn.GRUCell, gated.cells.GRU(5)),
    (nn.SimpleCell, gated.cells.RNN(5)),
]


@pytest.mark.parametrize("flax_cell, cell", FLAX_PARITY, ids=lambda c: getattr(c, "__name__", ""))
def test_parity_with_flax_cells(flax_cell, cell):
    flax_rnn = nn.RNN(flax_cell(5, param_dtype=jnp.float32), time_major=True, return_carry=True)
    variables = flax_rnn.init(jax.random.key(0), XS)
    carry, ys = flax_rnn.apply(variables, XS)
    params = gated.flax.from_linen_params(variables["params"]["cell"], cell)
    g_carry, g_ys = gated.run(cell, params, XS)
    np.testing.assert_allclose(g_ys, ys, rtol=1e-6, atol=1e-6)
    record_error("flax", flax_cell.__name__, jnp.float32, g_ys, ys)
    if isinstance(cell, gated.cells.LSTM):  # Flax's LSTM carry is (c, h)
        carry = gated.LSTMState(h=carry[1], c=carry[0])
    np.testing.assert_allclose(jax.tree.leaves(g_carry), jax.tree.leaves(carry), rtol=1e-6, atol=1e-6)
    # and back: gated parameters in Flax's cell
    _equal(gated.flax.to_linen_params(params, cell), variables["params"]["cell"])
    _, ys_back = flax_rnn.apply({"params": {"cell": gated.flax.to_linen_params(params, cell)}}, XS)
    np.testing.assert_array_equal(ys_back, ys)


def test_flax_conversion_refuses_cells_flax_lacks():
    with pytest.raises(
        ValueError,
        match=r"Flax's LSTMCell is peepholes=False, coupled=False, forget_gate=True, layer_norm=False, proj_size=None, "
        r"got peepholes=True",
    ):
        gated.flax.from_linen_params({}, gated.cells.LSTM(5, peepholes=True))
    with pytest.raises(ValueError, match=r"Flax's GRUCell is reset='after', update='keep', got reset='before'"):
        gated.flax.to_linen_params(None, gated.cells.GRU(5, reset="before"))
    with pytest.raises(ValueError, match=r"flax_params: expected the parameters of the Flax cell matching 'gru'"):
        gated.flax.from_linen_params({"ii": {}}, gated.cells.GRU(5))
    with pytest.raises(ValueError, match=r"Flax linen has no cell equal to a mingru cell"):
        gated.flax.to_linen_params(None, gated.cells.MinGRU(5))


def test_modules_and_converters_refuse_what_is_not_a_cell_or_of_another_shape():
    """The defects: gated.flax.RNN("lstm") failed with an AttributeError deep inside Flax, gated.nnx.Cell took a
    layer, and from_linen_params of a Flax cell of another hidden size returned parameters of the wrong shape."""
    with pytest.raises(TypeError, match=r"layer: expected a gated cell .* got str 'lstm'"):
        gated.flax.RNN("lstm").init(jax.random.key(0), XS)
    with pytest.raises(TypeError, match=r"cell: expected a gated.cells cell, .* got Recurrent"):
        gated.nnx.Cell(gated.Recurrent(gated.cells.LSTM(4)), 4, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"cell: expected a gated.cells cell, .* got str 'gru'; make one with"):
        gated.flax.Cell("gru")
    with pytest.raises(TypeError, match=r"layer: expected a gated cell"):
        gated.nnx.RNN(nn.LSTMCell(4), 4, rngs=nnx.Rngs(0))
    flax_cell = nn.LSTMCell(5)
    variables = flax_cell.init(jax.random.key(0), flax_cell.initialize_carry(jax.random.key(0), XS[0].shape), XS[0])
    with pytest.raises(ValueError, match=r"flax_params \(converted\).input_kernel: expected shape \(4, 16\) .* got "
                                         r"\(4, 20\)"):  # fmt: skip
        gated.flax.from_linen_params(variables["params"], gated.cells.LSTM(4))
    params = gated.cells.LSTM(5).init(jax.random.key(0), 4)
    with pytest.raises(ValueError, match=r"params.recurrent_kernel: expected shape \(5, 20\) .* got \(4, 20\)"):
        gated.flax.to_linen_params(params._replace(recurrent_kernel=params.recurrent_kernel[:4]), gated.cells.LSTM(5))
    with pytest.raises(
        ValueError,
        match=r"params: expected the parameters of a gru cell of hidden size 5 \(GRUParams .* got LSTMParams",
    ):
        gated.flax.to_linen_params(params, gated.cells.GRU(5))


def test_serialisation_round_trip():
    module = gated.flax.RNN(gated.Bidirectional(gated.cells.LSTM(5, peepholes=True)))
    variables = module.init(jax.random.key(0), XS)
    restored = serialization.from_bytes(jax.tree.map(jnp.zeros_like, variables), serialization.to_bytes(variables))
    assert jax.tree.structure(restored) == jax.tree.structure(variables)
    _equal(restored, variables)
    _equal(module.apply(restored, XS), module.apply(variables, XS))

    model = gated.nnx.RNN(gated.cells.GRU(5), 4, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    blob = serialization.msgpack_serialize(nnx.to_pure_dict(state))
    other = gated.nnx.RNN(gated.cells.GRU(5), 4, rngs=nnx.Rngs(1))
    other_state = nnx.state(other, nnx.Param)
    nnx.replace_by_pure_dict(other_state, serialization.msgpack_restore(blob))
    nnx.update(other, other_state)
    _equal(other(XS), model(XS))


@pytest.mark.parametrize("train", [flax_examples.train_linen, flax_examples.train_nnx], ids=["linen", "nnx"])
@pytest.mark.slow
def test_examples_learn(train):
    losses = train(steps=80, hidden_size=16)
    assert np.mean(losses[-10:]) < 0.5 < losses[0]  # chance is log 2 = 0.69


def test_modules_with_bfloat16_parameters():
    xs_bm = jnp.swapaxes(XS, 0, 1).astype(jnp.bfloat16)
    module = gated.flax.RNN(gated.cells.LSTM(8), param_dtype=jnp.bfloat16)
    variables = module.init(jax.random.key(0), xs_bm)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(variables))
    assert module.apply(variables, xs_bm).dtype == jnp.bfloat16
    cell_module = gated.flax.Cell(gated.cells.GRU(8), param_dtype=jnp.bfloat16)
    carry = cell_module.initialize_carry(jax.random.key(0), xs_bm[:, 0].shape)
    assert carry.dtype == jnp.bfloat16
    variables = cell_module.init(jax.random.key(0), carry, xs_bm[:, 0])
    assert cell_module.apply(variables, carry, xs_bm[:, 0])[1].dtype == jnp.bfloat16
    nnx_module = gated.nnx.RNN(gated.cells.GRU(8), 4, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert nnx_module(xs_bm).dtype == jnp.bfloat16


def test_a_compute_dtype_beside_the_parameters_dtype():
    """dtype=bfloat16 over float32 parameters (Flax's dtype and param_dtype): the parameters stay float32, the
    outputs are bfloat16 and equal the pure functions on the parameters and inputs cast to bfloat16; the same for
    the NNX modules and the block modules."""
    from gated import blocks

    half = lambda tree: jax.tree.map(lambda a: a.astype(jnp.bfloat16), tree)
    xs_bm = jnp.swapaxes(XS, 0, 1).astype(jnp.float32)
    cell = gated.cells.LSTM(8)
    module = gated.flax.RNN(cell, dtype=jnp.bfloat16)
    variables = module.init(jax.random.key(0), xs_bm)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    ys = module.apply(variables, xs_bm)
    want = gated.Recurrent(cell)(half(variables["params"]["layer"]), half(xs_bm), time_axis=-2)[1]
    assert ys.dtype == jnp.bfloat16
    chex.assert_trees_all_equal(ys, want)
    cell_module = gated.flax.Cell(gated.cells.GRU(8), dtype=jnp.bfloat16)
    carry = cell_module.initialize_carry(jax.random.key(0), xs_bm[:, 0].shape)
    variables = cell_module.init(jax.random.key(0), carry, xs_bm[:, 0])
    assert carry.dtype == jnp.bfloat16 and variables["params"]["cell"].bias.dtype == jnp.float32
    assert cell_module.apply(variables, carry, xs_bm[:, 0])[1].dtype == jnp.bfloat16
    nnx_module = gated.nnx.RNN(cell, 4, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    params = jax.tree.map(lambda v: v[...], nnx_module.params, is_leaf=lambda a: isinstance(a, nnx.Variable))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    chex.assert_trees_all_equal(nnx_module(xs_bm), gated.Recurrent(cell)(half(params), half(xs_bm), time_axis=-2)[1])
    norm = gated.flax.Block(blocks.RMSNorm(), dtype=jnp.bfloat16)
    variables = norm.init(jax.random.key(0), xs_bm)
    out = norm.apply(variables, xs_bm)
    assert out.dtype == jnp.bfloat16 and variables["params"]["block"].scale.dtype == jnp.float32
    nnx_norm = gated.nnx.Block(blocks.RMSNorm(), 4, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    chex.assert_trees_all_equal(nnx_norm(xs_bm), out)


def test_every_layer_option_and_resets_reach_run_from_layers_stacks_and_modules():
    """The layer options live in Recurrent's fields (gated.layers.LAYER_OPTIONS); chunk and resets reach gated.run
    from a layer, a stack, a bidirectional pair and the linen and NNX modules."""
    assert set(gated.layers.LAYER_OPTIONS) == {"reverse", "learn_initial_carry", "unroll", "remat", "impl", "chunk"}
    assert all(hasattr(gated.flax.RNN, k) for k in gated.layers.LAYER_OPTIONS)
    cell = gated.cells.MinGRU(4)
    xs = jax.random.normal(jax.random.key(0), (2, 6, 3))  # batch-major (B, T, D)
    resets = jnp.zeros((2, 6), bool).at[0, 3].set(True)
    run = lambda p, **kw: gated.run(cell, p, xs, time_axis=1, resets=resets, impl="chunked", chunk=2, **kw)[1]
    layer = gated.Recurrent(cell, impl="chunked", chunk=2)
    params = layer.init(jax.random.key(1), 3)
    np.testing.assert_array_equal(layer(params, xs, time_axis=1, resets=resets)[1], run(params.cell))
    stacked = gated.Stack([layer])
    np.testing.assert_array_equal(stacked((params,), xs, time_axis=1, resets=resets)[1], run(params.cell))
    pair = gated.Bidirectional(gated.Recurrent(cell, impl="chunked", chunk=2))
    pair_params = pair.init(jax.random.key(2), 3)
    backward = run(pair_params.backward.cell, reverse=True)
    expected = jnp.concatenate([run(pair_params.forward.cell), backward], axis=-1)
    np.testing.assert_array_equal(pair(pair_params, xs, time_axis=1, resets=resets)[1], expected)
    linen = gated.flax.RNN(cell, impl="chunked", chunk=2)
    variables = linen.init(jax.random.key(3), xs)
    got = linen.apply(variables, xs, resets=resets)
    np.testing.assert_array_equal(got, run(variables["params"]["layer"].cell))
    module = gated.nnx.RNN(cell, 3, rngs=nnx.Rngs(0), impl="chunked", chunk=2)
    got = module(xs, resets=resets)
    np.testing.assert_array_equal(got, run(jax.tree.map(lambda v: v[...], module.params.cell,
                                                         is_leaf=lambda a: isinstance(a, nnx.Variable))))  # fmt: skip
    with pytest.raises(TypeError, match=r"chunks: not an option of gated.Recurrent; expected some of \['cell', 're"):
        gated.Recurrent(cell, chunks=2)
    with pytest.raises(TypeError, match=r"chunks: not an option of gated.nnx.RNN"):
        gated.nnx.RNN(cell, 3, rngs=nnx.Rngs(0), chunks=2)
    with pytest.raises(TypeError, match=r"reverse: not an option of gated.Bidirectional; expected .*'merge'\]"):
        gated.Bidirectional(cell, reverse=True)
