"""The blocks (gated.blocks): each against a float64 NumPy transcription of its paper's equations, its derivatives
against finite differences, the convolution run in pieces and one token at a time against the whole sequence (and
against PyTorch's Conv1d where torch is installed), half precision, and the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import special

from gated import blocks
from tests.conftest import random_params

D, F = 5, 7
F64 = {"rtol": 1e-12, "atol": 1e-12}


def _gelu(z):
    return 0.5 * z * (1.0 + special.erf(z / np.sqrt(2.0)))


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


NUMPY_ACTIVATIONS = {
    "gelu": _gelu,
    "gelu_tanh": lambda z: 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3))),
    "relu": lambda z: np.maximum(z, 0.0),
    "silu": lambda z: z * _sigmoid(z),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "identity": lambda z: z,
}


def _numpy(block, p, x):
    """The paper's equations in float64 NumPy, for one position-wise block."""
    p = [np.asarray(a, np.float64) for a in p]
    if isinstance(block, blocks.RMSNorm):  # Zhang & Sennrich 2019, eq. 4
        return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + block.eps) * p[0]
    if isinstance(block, blocks.LayerNorm):  # Ba et al. 2016, eq. 4 (per example, over features)
        mu, var = np.mean(x, -1, keepdims=True), np.var(x, -1, keepdims=True)
        return (x - mu) / np.sqrt(var + block.eps) * p[0] + p[1]
    if isinstance(block, blocks.MLP):
        return NUMPY_ACTIVATIONS[block.activation](x @ p[0] + p[1]) @ p[2] + p[3]
    if isinstance(block, blocks.GatedMLP):  # Shazeer 2020, eqs. 5-6: (phi(x W) * x V) W2
        w, v = p[0][:, : block.hidden_size], p[0][:, block.hidden_size :]
        return (NUMPY_ACTIVATIONS[blocks.GLU_GATES[block.variant]](x @ w) * (x @ v)) @ p[1]
    if isinstance(block, blocks.Highway):  # Srivastava et al. 2015, eq. 3 with C = 1 - T
        t = _sigmoid(x @ p[0][:, D:] + p[1][D:])
        return NUMPY_ACTIVATIONS[block.activation](x @ p[0][:, :D] + p[1][:D]) * t + x * (1.0 - t)
    raise AssertionError(block)


POSITION_WISE = [
    blocks.RMSNorm(),
    blocks.RMSNorm(eps=0.0),
    blocks.LayerNorm(),
    blocks.MLP(F),
    blocks.MLP(F, activation="gelu_tanh"),
    blocks.MLP(F, activation="relu"),
    *[blocks.GatedMLP(F, variant=v) for v in blocks.GLU_GATES],
    blocks.Highway(),
    blocks.Highway(activation="relu", gate_bias=-3.0),
]


def _x(shape=(3, 2, D), seed=0, dtype=jnp.float64):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


@pytest.mark.parametrize("block", POSITION_WISE, ids=repr)
def test_position_wise_blocks_equal_their_numpy_transcription(block):
    params = random_params(block, jax.random.key(0), D, jnp.float64, scale=0.8)
    x = _x()
    got = jax.jit(block)(params, x)
    assert got.shape == x.shape and got.dtype == jnp.float64
    np.testing.assert_allclose(got, _numpy(block, params, np.asarray(x)), **F64)
    # one example at a time (vmap) is the same as the batch
    np.testing.assert_allclose(jax.vmap(lambda e: block(params, e))(x.reshape(-1, D)), got.reshape(-1, D), **F64)


def test_derivatives_equal_finite_differences():
    """A norm, an MLP, a gated MLP and the highway layer to first order, and the convolution with its carry to
    second, in forward and reverse mode (their derivatives are JAX's own, of plain jnp: no custom rule)."""
    x = _x((2, 3, D), seed=1)
    for block in (blocks.LayerNorm(), blocks.MLP(F), blocks.GatedMLP(F, variant="geglu"), blocks.Highway()):
        params = random_params(block, jax.random.key(1), D, jnp.float64, scale=0.8)
        check_grads(jax.jit(block), (params, x), order=1, modes=("fwd", "rev"))
    conv = blocks.CausalConv(width=3)
    params = random_params(conv, jax.random.key(2), D, jnp.float64)
    carry = _x((2, 3, D), seed=2)
    check_grads(lambda p, x, c: conv(p, x, c), (params, x, carry), order=2, modes=("fwd", "rev"))


def test_initial_parameters():
    """Norms start as the identity map of the normalised input; the highway's gate bias is negative, so a new layer
    mostly carries its input; kernels are LeCun-normal (variance 1/fan-in)."""
    x = _x((4, D))
    for block in (blocks.RMSNorm(), blocks.LayerNorm()):
        params = block.init(jax.random.key(0), D, jnp.float64)
        np.testing.assert_allclose(block(params, x), _numpy(block, [np.ones(D), np.zeros(D)], np.asarray(x)), **F64)
    highway = blocks.Highway(gate_bias=-3.0)
    params = highway.init(jax.random.key(0), D)
    np.testing.assert_array_equal(params.bias, np.r_[np.zeros(D), np.full(D, -3.0)])
    mlp = blocks.MLP(512).init(jax.random.key(0), 256)
    assert abs(float(jnp.var(mlp.kernel_in)) * 256 - 1.0) < 0.05
    assert abs(float(jnp.var(mlp.kernel_out)) * 512 - 1.0) < 0.05
    conv = blocks.CausalConv(width=4).init(jax.random.key(0), 4096)
    assert abs(float(jnp.var(conv.kernel)) * 4 - 1.0) < 0.05 and not conv.bias.any()


def _numpy_conv(kernel, bias, xs, carry):
    width = kernel.shape[0]
    seen = np.concatenate([carry, xs])
    return np.stack([sum(kernel[k] * seen[t + k] for k in range(width)) + bias for t in range(xs.shape[0])])


@pytest.mark.parametrize("width", [1, 4])
def test_causal_conv_equals_its_sum_and_streams(width):
    """y_t = sum_k w_k x_{t-(W-1)+k} + b from the carry's past; the sequence in pieces (one of them shorter than
    the carry) and one token at a time give the whole sequence's outputs and final carry; time_axis=1."""
    conv = blocks.CausalConv(width=width)
    params = random_params(conv, jax.random.key(3), D, jnp.float64)
    xs, carry = _x((9, 2, D), seed=3), _x((width - 1, 2, D), seed=4)
    final, ys = jax.jit(conv)(params, xs, carry)
    np.testing.assert_allclose(ys, _numpy_conv(*map(np.asarray, (params.kernel, params.bias, xs, carry))), **F64)
    np.testing.assert_allclose(final, np.concatenate([carry, xs])[9:], **F64)
    pieces, state = [], carry
    for start, stop in ((0, 2), (2, 3), (3, 9)):
        state, part = conv(params, xs[start:stop], state)
        pieces.append(part)
    np.testing.assert_allclose(jnp.concatenate(pieces), ys, **F64)
    np.testing.assert_allclose(state, final, **F64)

    def token(state, x):
        state, y = conv(params, x[None], state)
        return state, y[0]

    state, one_by_one = jax.lax.scan(token, carry, xs)
    np.testing.assert_allclose(one_by_one, ys, **F64)
    np.testing.assert_allclose(state, final, **F64)
    batch_major = conv(params, jnp.swapaxes(xs, 0, 1), carry, time_axis=1)[1]
    np.testing.assert_allclose(jnp.swapaxes(batch_major, 0, 1), ys, **F64)
    zero_start = conv(params, xs)[1]
    np.testing.assert_allclose(zero_start, conv(params, xs, conv.initial_carry((2,), D, jnp.float64))[1], **F64)


def test_causal_conv_resets_equal_running_each_segment_by_hand():
    """resets: an output reads nothing from before its segment's start; each segment equals a run of its own (the
    first from the carry, the others from zeros), and the sequence in pieces cut just after a reset equals the
    whole (the carry keeps nothing from before the reset)."""
    conv = blocks.CausalConv(width=4)
    params = random_params(conv, jax.random.key(7), D, jnp.float64)
    xs, carry = _x((10, 3, D), seed=7), _x((3, 3, D), seed=8)
    starts = {0: [4, 6], 1: [0], 2: []}
    resets = np.zeros((10, 3), bool)
    for b, ts in starts.items():
        resets[ts, b] = True
    final, ys = jax.jit(lambda x, r: conv(params, x, carry, resets=r))(xs, resets)
    for b, ts in starts.items():
        bounds = [0, *ts, 10]
        for i, (s, e) in enumerate((s, e) for s, e in zip(bounds, bounds[1:], strict=False) if e > s):
            first = carry[:, b] if s == 0 and not resets[0, b] else jnp.zeros_like(carry[:, b])
            np.testing.assert_allclose(ys[s:e, b], conv(params, xs[s:e, b], first)[1], **F64, err_msg=f"{b} {i}")
    state, pieces = carry, []
    for s, e in ((0, 5), (5, 7), (7, 10)):  # 5 and 7: just after the resets at 4 and 6 of example 0
        state, part = conv(params, xs[s:e], state, resets=resets[s:e])
        pieces.append(part)
    np.testing.assert_allclose(jnp.concatenate(pieces), ys, **F64)
    np.testing.assert_allclose(state, final, **F64)
    batch_major = conv(params, jnp.swapaxes(xs, 0, 1), carry, resets=resets.T, time_axis=-2)[1]
    np.testing.assert_allclose(jnp.swapaxes(batch_major, 0, 1), ys, **F64)
    with pytest.raises(TypeError, match="resets: expected a boolean array, got dtype int"):
        conv(params, xs, resets=resets.astype(int))
    with pytest.raises(ValueError, match=r"resets: expected the shape of xs without its feature axis \(10, 3\)"):
        conv(params, xs, resets=resets[:, :2])
    with pytest.raises(ValueError, match=r"time_axis: expected an axis of xs \(10, 3, 5\) before its feature axis"):
        conv(params, xs, time_axis=2)


def test_causal_conv_is_pytorchs_depthwise_conv1d():
    """Conv1d(D, D, W, groups=D, padding=W - 1), its first T outputs (Mamba's use), from the zero carry."""
    torch = pytest.importorskip("torch")
    conv = blocks.CausalConv(width=4)
    params = random_params(conv, jax.random.key(5), D, jnp.float64)
    xs = _x((11, 2, D), seed=5)
    peer = torch.nn.Conv1d(D, D, 4, groups=D, padding=3, dtype=torch.float64)
    with torch.no_grad():
        peer.weight.copy_(torch.from_numpy(np.asarray(params.kernel).T[:, None, :]))
        peer.bias.copy_(torch.from_numpy(np.asarray(params.bias)))
        want = peer(torch.from_numpy(np.asarray(xs).transpose(1, 2, 0)))[..., :11].numpy().transpose(2, 0, 1)
    np.testing.assert_allclose(conv(params, xs)[1], want, **F64)


@pytest.mark.parametrize("block", [blocks.RMSNorm(), blocks.LayerNorm(), blocks.GatedMLP(F), blocks.CausalConv()],
                         ids=repr)  # fmt: skip
def test_bfloat16_keeps_its_type_and_the_float32_result(block):
    """bfloat16 parameters and inputs give bfloat16 outputs near the float32 ones; the norms' means are taken in
    float32 (inputs of 300 and more, whose bfloat16 sum of squares would lose the scale)."""
    params = random_params(block, jax.random.key(6), D, jnp.float32, scale=0.8)
    x = _x((8, 3, D), seed=6, dtype=jnp.float32) * 300.0
    half = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    x_half = x.astype(jnp.bfloat16)
    out = jax.jit(block)(half, x_half)
    want = block(jax.tree.map(lambda a: a.astype(jnp.float32), half), x_half.astype(jnp.float32))
    if isinstance(block, blocks.CausalConv):
        out, want = out[1], want[1]
    assert out.dtype == jnp.bfloat16
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(out.astype(jnp.float32), want, atol=0.02 * scale)


def test_errors_name_the_argument_what_it_got_and_what_was_expected():
    with pytest.raises(ValueError, match="hidden_size: expected a positive int, got 0"):
        blocks.MLP(0)
    with pytest.raises(ValueError, match="variant: expected one of .*'swiglu'.*, got 'swish'"):
        blocks.GatedMLP(4, variant="swish")
    with pytest.raises(ValueError, match="width: expected a positive int, got 0"):
        blocks.CausalConv(width=0)
    with pytest.raises(ValueError, match="eps: expected a finite number >= 0, got -1"):
        blocks.RMSNorm(eps=-1)
    with pytest.raises(ValueError, match="block: expected one of"):
        blocks.get("mamba")
    norm = blocks.RMSNorm()
    params = norm.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match=r"x: expected a last axis of 5 \(the input_size .*\), got shape \(3, 4\)"):
        norm(params, jnp.zeros((3, 4)))
    with pytest.raises(TypeError, match="x: expected a floating-point array, got dtype int"):
        norm(params, jnp.zeros((3, D), int))
    with pytest.raises(TypeError, match=r"params: expected RMSNormParams \(RMSNorm.init\), got LayerNormParams"):
        norm(blocks.LayerNorm().init(jax.random.key(0), D), jnp.zeros((3, D)))
    conv = blocks.CausalConv(width=3)
    params = conv.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match=r"carry: expected shape \(2, 4, 5\) .*, got \(3, 4, 5\)"):
        conv(params, jnp.zeros((6, 4, D)), jnp.zeros((3, 4, D)))
    with pytest.raises(ValueError, match=r"xs: expected \(T, \*batch, D\) with a time axis, got shape \(5,\)"):
        conv(params, jnp.zeros((D,)))
    assert blocks.get("gated_mlp", hidden_size=4, variant="geglu") == blocks.GatedMLP(4, variant="geglu")


def chex_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_linen_and_nnx_modules_equal_the_pure_functions():
    from flax import nnx

    import gated.flax
    import gated.nnx

    x = _x((6, 2, D), seed=9, dtype=jnp.float32)
    for block in (blocks.LayerNorm(), blocks.GatedMLP(F, variant="geglu"), blocks.CausalConv(width=3)):
        module = gated.flax.Block(block)
        variables = module.init(jax.random.key(0), x)
        params = variables["params"]["block"]
        assert isinstance(params, block.params_type)
        chex_equal(module.apply(variables, x), block(params, x))
        nnx_module = gated.nnx.Block(block, D, rngs=nnx.Rngs(0))
        pure = jax.tree.map(lambda v: v[...], nnx_module.params, is_leaf=lambda a: isinstance(a, nnx.Variable))
        chex_equal(nnx_module(x), block(pure, x))
    conv = blocks.CausalConv(width=3)
    module = gated.flax.Block(conv)
    variables = module.init(jax.random.key(0), x)
    carry = _x((2, 2, D), seed=10, dtype=jnp.float32)
    resets = jnp.zeros((6, 2), bool).at[3, 0].set(True)
    chex_equal(module.apply(variables, x, carry, resets=resets),
               conv(variables["params"]["block"], x, carry, resets=resets))  # fmt: skip
    with pytest.raises(TypeError, match="block: expected a gated.blocks block or gated.mixers mixer .*, got LSTM"):
        gated.flax.Block(gated.cells.LSTM(4))
    with pytest.raises(TypeError, match="block: expected a gated.blocks block or gated.mixers mixer .*, got LSTM"):
        gated.nnx.Block(gated.cells.LSTM(4), D, rngs=nnx.Rngs(0))


def test_dropout_statistics_and_the_identity_where_it_is_off():
    """Kept entries are scaled by 1/(1-p); the kept fraction is 1-p within 4 standard errors over 20000 entries; no
    key (evaluation) and rate 0 are the identity; two keys give two masks; the block is jit and grad friendly."""
    x = _x((100, 200), seed=11, dtype=jnp.float32) + 3.0
    drop = blocks.Dropout(0.3)
    params = drop.init(jax.random.key(0), 200)
    y = jax.jit(drop)(params, x, jax.random.key(1))
    kept = np.asarray(y != 0)
    np.testing.assert_allclose(np.asarray(y)[kept], np.asarray(x)[kept] / 0.7, rtol=1e-6)
    assert abs(kept.mean() - 0.7) < 4 * np.sqrt(0.3 * 0.7 / kept.size)
    np.testing.assert_array_equal(drop(params, x), x)
    np.testing.assert_array_equal(blocks.Dropout(0.0)(params, x, jax.random.key(1)), x)
    assert not np.array_equal(drop(params, x, jax.random.key(2)), y)
    grad = jax.grad(lambda v: jnp.sum(drop(params, v, jax.random.key(1))))(x)
    np.testing.assert_allclose(grad, kept / 0.7, rtol=1e-6)
    with pytest.raises(ValueError, match=r"rate: expected a finite number in \[0, 1\), got 1"):
        blocks.Dropout(1)
