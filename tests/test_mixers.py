"""The papers' recurrent mixers (gated.mixers): Griffin's recurrent block against a float64 NumPy transcription of
De et al. 2024, Fig. 2 and eqs. 1-4, run in pieces and token by token against the whole sequence, and against the
authors' code (recurrentgemma's JAX RecurrentBlock) live when it is installed and always against its committed
outputs; the RG-LRU's recurrentgemma segment start on every form."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gated
from gated import mixers
from gated.interop import recurrentgemma as interop
from tests import recurrentgemma_cases as cases
from tests import reference
from tests.conftest import random_carry, random_params

T, B, D, H = 9, 2, 5, 6
F64 = {"rtol": 1e-10, "atol": 1e-12}
GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "recurrentgemma_golden.npz"


def _gelu_tanh(z):
    return 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3)))


def _numpy_griffin(mixer, p, xs, starts):
    """One example, ``xs`` (T, D), from no past; ``starts`` (T,) the segment starts (restore: zero conv inputs
    and zero state before the start; recurrentgemma: also h_t = i_t v_t at the start)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    cell, width = mixer.cell, mixer.conv_width
    gate = _gelu_tanh(xs @ p.gate_kernel + p.gate_bias)  # eq. (the GeLU branch of Fig. 2)
    u = xs @ p.input_kernel + p.input_bias
    segment = np.maximum.accumulate(np.where(starts, np.arange(len(xs)), 0))
    conv = np.stack([sum(p.conv.kernel[width - 1 - s] * u[t - s] for s in range(width) if t - s >= segment[t])
                     + p.conv.bias for t in range(len(xs))])  # fmt: skip
    h, out = np.zeros(cell.hidden_size), []
    for t, x in enumerate(conv):
        if starts[t]:
            h = np.zeros(cell.hidden_size)
        h, _ = reference.rglru_step(cell, p.cell, h, x)  # eqs. 1-4: r, i, a = sigmoid(Lambda)^(c r), h
        if starts[t] and cell.segment_start == "recurrentgemma":  # a = 0 and no sqrt(1 - a^2) factor
            k = np.split(p.cell.input_kernel, 3, axis=1)
            bias = np.split(p.cell.bias, 3)
            h = reference.sigmoid(x @ k[1] + bias[1]) * (x @ k[2] + bias[2])
        out.append(h)
    return (np.stack(out) * gate) @ p.output_kernel + p.output_bias


@pytest.mark.parametrize("segment_start", ["restore", "recurrentgemma"])
def test_griffin_equals_its_numpy_transcription(segment_start):
    mixer = mixers.Griffin(gated.cells.RGLRU(H, segment_start=segment_start))
    params = random_params(mixer, jax.random.key(0), D, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float64)
    resets = np.zeros((T, B), bool)
    resets[4, 0] = True
    _, ys = jax.jit(lambda p, x, r: mixer(p, x, resets=r))(params, xs, resets)
    for b in range(B):
        starts = resets[:, b].copy()
        starts[0] |= segment_start == "recurrentgemma"  # no carry: the first step starts a segment there
        np.testing.assert_allclose(ys[:, b], _numpy_griffin(mixer, params, np.asarray(xs[:, b]), starts), **F64)


CELLS = [gated.cells.RGLRU(H, segment_start="recurrentgemma"), pytest.param(gated.cells.LRU(H), marks=pytest.mark.slow)]


@pytest.mark.parametrize("cell", CELLS, ids=["rglru", "lru"])
def test_griffin_in_pieces_and_token_by_token_equals_the_whole(cell):
    """The carry (convolution buffer and recurrent state) continues a sequence exactly; any cell of width H fits
    where the RG-LRU goes (the paper's LRU ablation)."""
    mixer = mixers.Griffin(cell, conv_width=3)
    params = random_params(mixer, jax.random.key(2), D, jnp.float64)
    xs = jax.random.normal(jax.random.key(3), (T, B, D), jnp.float64)
    final, ys = jax.jit(mixer)(params, xs)
    carry, pieces = None, []
    for s, e in ((0, 1), (1, 5), (5, T)):
        carry, part = mixer(params, xs[s:e], carry)
        pieces.append(part)
    np.testing.assert_allclose(jnp.concatenate(pieces), ys, **F64)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **F64), carry, final)
    first, y0 = mixer(params, xs[:1])

    def token(carry, x):
        carry, y = mixer(params, x[None], carry)
        return carry, y[0]

    last, rest = jax.lax.scan(token, first, xs[1:])
    np.testing.assert_allclose(jnp.concatenate([y0, rest]), ys, **F64)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **F64), last, final)
    batch_major = mixer(params, jnp.swapaxes(xs, 0, 1), time_axis=1)[1]
    np.testing.assert_allclose(jnp.swapaxes(batch_major, 0, 1), ys, **F64)


def _check_recurrentgemma(record, rtol=1e-5, atol=1e-5):
    """gated's Griffin, with recurrentgemma's parameters converted, gives its outputs and caches (float32): one
    sequence, two segments, and one token decoded from the cache of a prompt."""
    mixer, params = interop.from_recurrent_block(cases.nested(record))
    x = jnp.swapaxes(jnp.asarray(record["x"]), 0, 1)  # time-major
    close = lambda got, key: np.testing.assert_allclose(got, record[key], rtol=rtol, atol=atol, err_msg=key)
    for name, pos in cases.SEGMENTS.items():
        carry, ys = jax.jit(lambda p, x, r: mixer(p, x, resets=r))(params, x, jnp.asarray(pos == 0).T)
        close(jnp.swapaxes(ys, 0, 1), f"{name}/ys")
        close(carry.cell, f"{name}/lru")
        close(jnp.swapaxes(carry.conv, 0, 1), f"{name}/conv")
    prompt, _ = mixer(params, x[: cases.DECODE_FROM])
    carry, y = mixer(params, x[cases.DECODE_FROM : cases.DECODE_FROM + 1], prompt)
    close(jnp.swapaxes(y, 0, 1), "decode/ys")
    close(carry.cell, "decode/lru")
    close(jnp.swapaxes(carry.conv, 0, 1), "decode/conv")


def test_against_recurrentgemmas_committed_outputs():
    with np.load(GOLDEN) as data:
        _check_recurrentgemma({k: data[k] for k in data.files})


@pytest.mark.slow
def test_against_live_recurrentgemma():
    pytest.importorskip("recurrentgemma.jax")
    _check_recurrentgemma(cases.run_recurrentgemma(5))


def test_rglru_recurrentgemma_segment_start_on_every_form():
    """segment_start="recurrentgemma": h_t = i_t v_t at a reset, on the reference path and the parallel forms
    (float64, values and gradients), and in a step with start=True; "restore" ignores start."""
    cell = gated.cells.RGLRU(H, segment_start="recurrentgemma")
    params = random_params(cell, jax.random.key(4), D, jnp.float64)
    carry = random_carry(cell, jax.random.key(5), (B,), jnp.float64)
    xs = jax.random.normal(jax.random.key(6), (T, B, D), jnp.float64)
    resets = jnp.zeros((T, B), bool).at[3, 0].set(True).at[0, 1].set(True)

    def loss(impl):
        def f(p, x):
            final, ys = gated.run(cell, p, x, carry=carry, resets=resets, impl=impl, chunk=4)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(final)

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(params, xs)

    want = loss("reference")
    for impl in ("associative", "chunked"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **F64), loss(impl), want)
    u = cell.project(params, xs[3, 0])
    new, y = cell.step(params, carry[0], u, start=jnp.bool_(True))
    np.testing.assert_allclose(new, jax.nn.sigmoid(cell.gate(u, "x")) * cell.gate(u, "v"), **F64)
    restore = gated.cells.RGLRU(H)
    np.testing.assert_array_equal(restore.step(params, carry[0], u, start=jnp.bool_(True))[0],
                                  restore.step(params, carry[0], u)[0])  # fmt: skip
    with pytest.raises(ValueError, match="segment_start: expected 'restore' or 'recurrentgemma', got 'zero'"):
        gated.cells.RGLRU(H, segment_start="zero")


@pytest.mark.parametrize("kind", ["griffin", pytest.param("mlstm", marks=pytest.mark.slow)])
def test_linen_and_nnx_modules_equal_the_pure_function(kind):
    from flax import nnx

    import gated.flax
    import gated.nnx

    if kind == "griffin":
        mixer = mixers.Griffin(gated.cells.RGLRU(H, segment_start="recurrentgemma"))
    else:
        mixer = mixers.MLSTMBlock(gated.cells.MLSTM(H, num_heads=2, output_gate=False))
    xs = jax.random.normal(jax.random.key(7), (T, B, D))
    module = gated.flax.Block(mixer)
    variables = module.init(jax.random.key(0), xs)
    params = variables["params"]["block"]
    carry, ys = module.apply(variables, xs[:4])
    expected = mixer(params, xs[:4])
    jax.tree.map(np.testing.assert_array_equal, (carry, ys), expected)
    jax.tree.map(np.testing.assert_array_equal, module.apply(variables, xs[4:], carry), mixer(params, xs[4:], carry))
    nnx_module = gated.nnx.Block(mixer, D, rngs=nnx.Rngs(0))
    pure = jax.tree.map(lambda v: v[...], nnx_module.params, is_leaf=lambda a: isinstance(a, nnx.Variable))
    jax.tree.map(np.testing.assert_array_equal, nnx_module(xs), mixer(pure, xs))


def _silu(z):
    return z / (1.0 + np.exp(-z))


def test_mamba_equals_its_numpy_transcription():
    """Gu & Dao 2023, Fig. 3 and Algorithm 2: SiLU(conv(x W_u)) into the selective SSM (h_t = exp(dt A) h + dt v B^T,
    y = h C + D v), times SiLU(x W_z), projected; from no past and in pieces."""
    mixer = mixers.Mamba(gated.cells.SelectiveSSM(H, state_size=3), conv_width=3)
    params = random_params(mixer, jax.random.key(8), D, jnp.float64)
    xs = jax.random.normal(jax.random.key(9), (T, B, D), jnp.float64)
    final, ys = jax.jit(mixer)(params, xs)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    for b in range(B):
        x = np.asarray(xs[:, b])
        u = x @ p.input_kernel + p.input_bias
        conv = _silu(_numpy_conv(p.conv, u, 3))
        h, out = np.zeros((H, 3)), []
        for v in conv:
            h, y = reference.step(mixer.cell, p.cell, h, v)
            out.append(y)
        want = (np.stack(out) * _silu(x @ p.gate_kernel + p.gate_bias)) @ p.output_kernel + p.output_bias
        np.testing.assert_allclose(ys[:, b], want, **F64)
    carry, first = mixer(params, xs[:4])
    last, rest = mixer(params, xs[4:], carry)
    np.testing.assert_allclose(jnp.concatenate([first, rest]), ys, **F64)
    np.testing.assert_allclose(last.cell, final.cell, **F64)


def test_errors_name_what_they_got():
    with pytest.raises(TypeError, match=r"cell: expected a gated.cells cell.*got str .rglru.; make one with"):
        mixers.Griffin("rglru")
    mixer = mixers.Griffin(gated.cells.RGLRU(H))
    params = mixer.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match=r"xs: expected a last axis of 5 .*, got shape \(4, 2, 3\)"):
        mixer(params, jnp.zeros((4, 2, 3)))
    with pytest.raises(TypeError, match="params: expected GriffinParams"):
        mixer(params.cell, jnp.zeros((4, 2, D)))
    record = {"params/linear_x/kernel": np.zeros((D, H))}
    with pytest.raises(ValueError, match="params: expected recurrentgemma RecurrentBlock parameters, missing key"):
        interop.from_recurrent_block(cases.nested(record))


def _numpy_conv(p, u, width):
    return np.stack([sum(p.kernel[width - 1 - s] * u[t - s] for s in range(width) if t >= s) + p.bias
                     for t in range(len(u))])  # fmt: skip


def _numpy_head_norm(h, scale, heads, eps):
    x = h.reshape(*h.shape[:-1], heads, -1)
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return x.reshape(h.shape) * scale


def _numpy_cell(cell, p, us):
    carry, out = jax.tree.map(lambda a: np.asarray(a, np.float64), cell.initial_carry(dtype=jnp.float64)), []
    for u in us:
        carry, y = reference.step(cell, p, carry, u)
        out.append(y)
    return np.stack(out)


XLSTM_BLOCKS = {
    "mlstm": lambda: mixers.MLSTMBlock(gated.cells.MLSTM(2 * H, num_heads=2, output_gate=False), conv_width=3),
    "slstm": lambda: mixers.SLSTMBlock(gated.cells.SLSTM(D + 1), num_heads=3, conv_width=3),
}


@pytest.mark.parametrize("name", list(XLSTM_BLOCKS))
def test_xlstm_blocks_equal_their_numpy_transcription(name):
    """Beck et al. 2024, Figs. 9 and 10 (the reference code's mLSTMLayer and sLSTMLayer): the mLSTM block's
    up-projection, SiLU(conv), mLSTM of [conv, x^m], head norm plus learnable skip, times SiLU(z), down-projection;
    the sLSTM block's SiLU(conv) and x into the sLSTM, then the head norm. Whole, in pieces and token by token."""
    mixer = XLSTM_BLOCKS[name]()
    d = D if name == "mlstm" else D + 1
    params = random_params(mixer, jax.random.key(10), d, jnp.float64)
    xs = jax.random.normal(jax.random.key(11), (T, B, d), jnp.float64)
    final, ys = jax.jit(mixer)(params, xs)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    for b in range(B):
        x = np.asarray(xs[:, b])
        if name == "mlstm":
            branch, z = np.split(x @ p.up_kernel, 2, axis=-1)
            c = _silu(_numpy_conv(p.conv, branch, 3))
            h = _numpy_cell(mixer.cell, p.cell, np.concatenate([c, branch], -1))
            h = _numpy_head_norm(h, p.norm_scale, 2, mixer.eps) + p.skip * c
            want = (h * _silu(z)) @ p.down_kernel
        else:
            c = _silu(_numpy_conv(p.conv, x, 3))
            want = _numpy_head_norm(_numpy_cell(mixer.cell, p.cell, np.concatenate([c, x], -1)), p.norm_scale, 3,
                                    mixer.eps)  # fmt: skip
        np.testing.assert_allclose(ys[:, b], want, **F64)
    carry, first = mixer(params, xs[:4])
    last, rest = mixer(params, xs[4:], carry)
    np.testing.assert_allclose(jnp.concatenate([first, rest]), ys, **F64)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **F64), last, final)
    step = jax.jit(lambda c, x: mixer(params, x[None], c))
    carry, tokens = mixer.initial_carry((B,), jnp.float64), []
    for t in range(T):
        carry, y = step(carry, xs[t])
        tokens.append(y[0])
    np.testing.assert_allclose(jnp.stack(tokens), ys, **F64)


def test_xlstm_block_errors_name_what_they_got():
    with pytest.raises(TypeError, match=r"cell: expected an mLSTM .*got 'slstm'"):
        mixers.MLSTMBlock(gated.cells.SLSTM(H))
    with pytest.raises(TypeError, match=r"cell: expected an sLSTM .*got 'mlstm'"):
        mixers.SLSTMBlock(gated.cells.MLSTM(H))
    with pytest.raises(ValueError, match=r"num_heads: expected a positive int dividing the cell's hidden_size 6, got"):
        mixers.SLSTMBlock(gated.cells.SLSTM(H), num_heads=4)
    with pytest.raises(ValueError, match=r"input_size: expected the cell's hidden_size 6 .*, got 5"):
        mixers.SLSTMBlock(gated.cells.SLSTM(H), num_heads=2).init(jax.random.key(0), D)
    with pytest.raises(TypeError, match="params: expected MLSTMBlockParams"):
        mixers.MLSTMBlock(gated.cells.MLSTM(H))(None, jnp.zeros((2, D)))


@pytest.mark.slow
def test_state_dtype_keeps_a_bfloat16_recurrence_in_float32():
    """gated.run(state_dtype=float32) on bfloat16 inputs: the carry in float32, the outputs in bfloat16 and equal to
    the float32 run of the widened parameters and inputs; a mixer passes it on, and it differentiates."""
    cell = gated.cells.MLSTM(4, num_heads=2)
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), cell.init(jax.random.key(0), 3))
    xs = jax.random.normal(jax.random.key(1), (6, 2, 3)).astype(jnp.bfloat16)
    carry, ys = gated.run(cell, params, xs, state_dtype=jnp.float32)
    wide = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    want_carry, want = gated.run(cell, wide, xs.astype(jnp.float32))
    assert ys.dtype == jnp.bfloat16 and all(a.dtype == jnp.float32 for a in jax.tree.leaves(carry))
    np.testing.assert_array_equal(ys, want.astype(jnp.bfloat16))
    jax.tree.map(np.testing.assert_array_equal, carry, want_carry)
    mixer = mixers.Mamba(gated.cells.SelectiveSSM(4, state_size=2), state_dtype="float32")
    mp = jax.tree.map(lambda a: a.astype(jnp.bfloat16), mixer.init(jax.random.key(2), 3))
    state, out = mixer(mp, xs)
    assert out.dtype == jnp.bfloat16 and state.cell.dtype == jnp.float32
    grads = jax.grad(lambda p: jnp.sum(mixer(p, xs)[1].astype(jnp.float32)))(mp)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    with pytest.raises(TypeError, match="state_dtype: expected a floating-point dtype"):
        gated.run(cell, params, xs, state_dtype=jnp.int32)


LINEAR_ATTENTION = {
    "gla": lambda: mixers.LinearAttention(gated.cells.GLA(2 * H, num_heads=2)),
    "hgrn2": lambda: mixers.LinearAttention(gated.cells.HGRN2(H, num_heads=2, lower_bound=0.2)),
}


@pytest.mark.parametrize("name", ["gla", pytest.param("hgrn2", marks=pytest.mark.slow)])
def test_linear_attention_equals_its_numpy_transcription(name):
    """flash-linear-attention's GatedLinearAttention and HGRN2Attention layers: the cell over x, an RMSNorm per head
    (GLA) or over the H outputs (HGRN2, from the cell's paper_layer), the swish output gate (GLA only), projected
    back to D. Whole, in pieces and token by token; refused around a cell of another form."""
    mixer = LINEAR_ATTENTION[name]()
    assert (mixer.gated, mixer.norm_over) == ((True, "head") if name == "gla" else (False, "all"))
    params = random_params(mixer, jax.random.key(12), D, jnp.float64)
    assert (params.gate_kernel is None) == (name == "hgrn2")
    xs = jax.random.normal(jax.random.key(13), (T, B, D), jnp.float64)
    final, ys = jax.jit(mixer)(params, xs)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    for b in range(B):
        x = np.asarray(xs[:, b])
        o = _numpy_cell(mixer.cell, p.cell, x)
        groups = o.reshape(T, 2, -1) if name == "gla" else o
        o = (groups / np.sqrt(np.mean(groups**2, axis=-1, keepdims=True) + mixer.eps) * p.norm_scale).reshape(T, -1)
        if name == "gla":
            o = o * _silu(x @ p.gate_kernel)
        np.testing.assert_allclose(ys[:, b], o @ p.output_kernel, **F64)
    carry, first = mixer(params, xs[:4])
    last, rest = mixer(params, xs[4:], carry)
    np.testing.assert_allclose(jnp.concatenate([first, rest]), ys, **F64)
    np.testing.assert_allclose(last, final, **F64)
    step = jax.jit(lambda c, x: mixer(params, x[None], c))
    carry, tokens = mixer.initial_carry((B,), jnp.float64), []
    for t in range(T):
        carry, y = step(carry, xs[t])
        tokens.append(y[0])
    np.testing.assert_allclose(jnp.stack(tokens), ys, **F64)
    with pytest.raises(TypeError, match=r"cell: expected a matrix-state cell .*got 'lstm'"):
        mixers.LinearAttention(gated.cells.LSTM(H))
