"""The matrix-state cells (xLSTM's mLSTM, Mamba-2's SSD, Gated DeltaNet) and their chunkwise form: each step
against a float64 NumPy transcription, the chunkwise form against the sequential reference in values and
derivatives (lengths, resets, both directions, chunks that do and do not divide T) and under every transform, and
against the authors' pure-PyTorch reference code where it is installed (flash-linear-attention's naive gated delta
rule and simple GLA, xLSTM's stabilised parallel mLSTM)."""

import importlib.util
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gated
from tests import reference
from tests.conftest import random_carry, random_params

CONFIGS = [
    ("mlstm", {"num_heads": 2}),
    ("ssd", {"num_heads": 2, "state_size": 3}),
    ("gated_deltanet", {"num_heads": 2}),
]
IDS = [name for name, _ in CONFIGS]
T, B, D, H = 13, 3, 4, 6
F64 = {"rtol": 1e-10, "atol": 1e-10}
FLA = {"rtol": 1e-6, "atol": 1e-6}  # flash-linear-attention's naive code computes in float32 whatever it is given


def _case(name, options, dtype=jnp.float64, seed=0):
    cell = gated.cells.get(name, H, **options)
    params = random_params(cell, jax.random.key(seed), D, dtype)
    carry = random_carry(cell, jax.random.key(seed + 1), (B,), dtype)
    xs = jax.random.normal(jax.random.key(seed + 2), (T, B, D), dtype)
    return cell, params, carry, xs


def _close(a, b, **tol):
    chex.assert_trees_all_close(jax.tree.leaves(a), jax.tree.leaves(b), **(tol or F64))


@pytest.mark.parametrize("config", CONFIGS[1:], ids=IDS[1:])
def test_step_equals_the_numpy_transcription(config):
    cell, params, carry, xs = _case(*config)
    one = jax.tree.map(lambda a: a[0], carry)
    new, y = jax.jit(cell)(params, one, xs[0, 0])
    want_new, want_y = reference.step(cell, params, one, xs[0, 0])
    _close((new, y), (want_new, want_y))


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_chunkwise_under_every_transform(config):
    """jacfwd and hessian (forward mode, and forward over reverse) of the chunkwise form, with resets, equal the
    reference path's (the conformance suite runs jvp, an HVP and vmap of every cell on it)."""
    cell, params, carry, xs = _case(*config)
    resets = xs[..., 0] > 1.0

    def both(impl):
        loss = lambda p: jnp.sum(gated.run(cell, p, xs, carry=carry, resets=resets, impl=impl, chunk=4)[1] ** 2)
        return jax.jit(lambda p: (jax.jacfwd(loss)(p), jax.hessian(loss)(p)))(params)

    _close(both("chunkwise"), both("reference"))


def test_the_chunkwise_form_refuses_what_it_does_not_cover():
    xs = jnp.zeros((T, B, D))
    lstm = gated.cells.LSTM(H)
    with pytest.raises(
        ValueError,
        match="impl: 'chunkwise' is not available here: the lstm cell is nonlinear, and "
        "'chunkwise' serves the matrix-state form",
    ):
        gated.run(lstm, lstm.init(jax.random.key(0), D), xs, impl="chunkwise")
    cell = gated.cells.MLSTM(H, num_heads=2)
    with pytest.raises(ValueError, match="return_carries=True is served by the reference path"):
        gated.run(cell, cell.init(jax.random.key(0), D), xs, impl="chunkwise", return_carries=True)
    with pytest.raises(ValueError, match="num_heads: expected a positive int dividing hidden_size 6, got 4"):
        gated.cells.GatedDeltaNet(H, num_heads=4)


def _temporaries(cell, xs, impl, chunk):
    params = cell.init(jax.random.key(0), xs.shape[-1])
    f = jax.jit(jax.grad(lambda p: jnp.sum(gated.run(cell, p, xs, impl=impl, chunk=chunk)[1])))
    return f.lower(params).compile().memory_analysis().temp_size_in_bytes


def test_the_chunked_training_steps_store_no_state_per_step():
    """The compiled gradient of a long sequence holds less than half of one state per step and example in the
    chunkwise, sequential and recomputed forms: the states inside a chunk are recomputed, never stored (the reference
    path stores them all, and more)."""
    xs = jnp.zeros((512, 2, 8), jnp.float32)
    mlstm, ssm = gated.cells.MLSTM(64, num_heads=1), gated.cells.SelectiveSSM(32, state_size=64)
    memories, states = 512 * 2 * 64 * 64 * 4, 512 * 2 * 32 * 64 * 4  # (T, B, d, d) and (T, B, H, N) float32
    assert _temporaries(mlstm, xs, "reference", 32) > memories > 2 * _temporaries(mlstm, xs, "chunkwise", 32)
    assert memories > 2 * _temporaries(mlstm, xs, "sequential", 32)
    assert _temporaries(ssm, xs, "reference", 32) > states > 2 * _temporaries(ssm, xs, "recomputed", 32)
    # the sequential form holds a chunk's coefficients and states, whatever the length: 4x the steps, no more states
    longer = jnp.zeros((2048, 2, 8), jnp.float32)
    assert _temporaries(ssm, longer, "sequential", 32) - _temporaries(ssm, xs, "sequential", 32) < states / 4


# Beside tests/test_conformance.py, which runs every registered cell with its default options on this form too.
RECOMPUTED = [("mingru", {"log_space": True})]


@pytest.mark.parametrize("config", RECOMPUTED, ids=[n for n, _ in RECOMPUTED])
def test_recomputed_equals_the_reference_path(config):
    """impl="recomputed" (carries stored every chunk steps): values and gradients to 1e-10 with lengths, resets and
    both directions, chunks that do and do not divide T, and forward mode through it."""
    cell = gated.cells.get(config[0], H, **config[1])
    params = random_params(cell, jax.random.key(0), D, jnp.float64)
    carry = random_carry(cell, jax.random.key(1), (B,), jnp.float64)
    carry = jax.tree.map(jnp.abs, carry) if config[0] == "mingru" else carry
    xs = jax.random.normal(jax.random.key(2), (T, B, D), jnp.float64)
    kw = dict(carry=carry, lengths=jnp.array([T, 7, 0]), resets=xs[..., 0] > 1.0)

    def loss(impl, chunk, reverse):
        f = lambda p, x: jnp.sum(jnp.sin(gated.run(cell, p, x, impl=impl, chunk=chunk, reverse=reverse, **kw)[1]))
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(params, xs)

    _close(loss("recomputed", 4, False), loss("reference", 4, False))
    _close(loss("recomputed", 13, True), loss("reference", 13, True))
    tangent = jax.tree.map(jnp.ones_like, params)
    jvp = lambda impl: jax.jit(lambda p: jax.jvp(lambda q: gated.run(cell, q, xs, impl=impl, chunk=5)[1], (p,),
                                                 (tangent,)))(params)  # fmt: skip
    _close(jvp("recomputed"), jvp("reference"))


def _module(package: str, path: str):
    """A module file of an installed package, loaded on its own (the package's __init__ may need a GPU stack)."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is not installed (a test-only reference)")
    file = pathlib.Path(spec.submodule_search_locations[0]) / path
    module_spec = importlib.util.spec_from_file_location(f"_reference_{package}_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _torch_heads(cell, params, xs):
    """Each step's per-head pieces, ``(B, T, K, ...)`` float64 torch tensors, from gated's own projection."""
    torch = pytest.importorskip("torch")
    us = jax.vmap(jax.vmap(lambda x: cell.project(params, x)))(xs)
    pieces = jax.vmap(jax.vmap(lambda u: cell.heads(params, u)))(us)
    return [torch.from_numpy(np.array(jnp.moveaxis(a, 0, 1))) for a in pieces]


def test_gated_deltanet_equals_flash_linear_attention():
    naive = _module("fla", "ops/gated_delta_rule/naive.py")
    cell, params, carry, xs = _case("gated_deltanet", {"num_heads": 2})
    q, k, v, log_alpha, beta = _torch_heads(cell, params, xs)
    state = __import__("torch").from_numpy(np.asarray(jnp.swapaxes(carry, -1, -2)))  # fla's (K, d_k, d_v)
    out, final = naive.naive_recurrent_gated_delta_rule(q, k, v, beta, log_alpha, scale=1.0, initial_state=state,
                                                        output_final_state=True)  # fmt: skip
    for impl in ("chunkwise", "reference"):
        got_final, ys = gated.run(cell, params, xs, carry=carry, impl=impl, chunk=4)
        want = (np.moveaxis(out.numpy(), 1, 0).reshape(T, B, H), final.numpy())
        _close((ys, jnp.swapaxes(got_final, -1, -2)), want, **FLA)


@pytest.mark.parametrize("eigenvalues", ["[0, 1]", "[-1, 1]"])
def test_deltanet_equals_flash_linear_attention(eigenvalues):
    """DeltaNet against flash-linear-attention's naive delta rule, from gated's own per-head pieces: the outputs and
    final state, and the gradient of a loss of both with respect to the inputs, on every backend of its form (the
    reference's gradient with respect to its pieces, from torch, carried back to the inputs by gated's projection)."""
    naive = _module("fla", "ops/delta_rule/naive.py")
    torch = pytest.importorskip("torch")
    cell = gated.cells.DeltaNet(H, num_heads=2, eigenvalues=eigenvalues)
    params = random_params(cell, jax.random.key(0), D, jnp.float64)
    carry = random_carry(cell, jax.random.key(1), (B,), jnp.float64)
    xs = jax.random.normal(jax.random.key(2), (T, B, D), jnp.float64)

    def pieces(x):  # (B, K, T, ...) as fla takes them; fla scales q by 1/sqrt(d) itself
        heads = jax.vmap(jax.vmap(lambda u: cell.heads(params, cell.project(params, u))))(x)
        q, k, v, _, beta = (jnp.moveaxis(a, 0, 2) for a in heads)
        return q * np.sqrt(H // 2), k, v, beta

    inputs, vjp = jax.vjp(pieces, xs)
    q, k, v, beta = (torch.from_numpy(np.array(a)).requires_grad_() for a in inputs)
    state = torch.from_numpy(np.array(jnp.swapaxes(carry, -1, -2)))  # fla's (K, d_k, d_v)
    out, final = naive.delta_rule_recurrence(q, k, v, beta, initial_state=state, output_final_state=True)
    (torch.sin(out).sum() + torch.cos(final).sum()).backward()
    want_grad = vjp(tuple(a.grad.numpy() for a in (q, k, v, beta)))[0]
    want = (np.moveaxis(out.detach().numpy(), 2, 0).reshape(T, B, H), final.detach().numpy())

    def loss(x, impl):
        got_final, ys = gated.run(cell, params, x, carry=carry, impl=impl, chunk=4)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(jnp.cos(got_final)), (ys, jnp.swapaxes(got_final, -1, -2))

    for impl in ("chunkwise", "recomputed", "reference"):
        (_, got), grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)(xs, impl)
        _close((got, grad), (want, want_grad), **FLA)


def test_ssd_equals_flash_linear_attention_simple_gla():
    """Mamba-2's SSD is simple GLA with q = C, k = B, v = Delta x and log decay Delta A (flash-linear-attention's
    naive recurrent form), plus the skip D x."""
    naive = _module("fla", "ops/simple_gla/naive.py")
    cell, params, carry, xs = _case("ssd", {"num_heads": 2, "state_size": 3})
    q, k, v, log_decay, _ = _torch_heads(cell, params, xs)
    state = __import__("torch").from_numpy(np.asarray(jnp.swapaxes(carry, -1, -2)))
    out, final = naive.naive_recurrent_simple_gla(q, k, v, log_decay, scale=1.0, initial_state=state,
                                                  output_final_state=True)  # fmt: skip
    skip = np.repeat(np.asarray(params.skip), H // 2) * np.asarray(
        xs @ params.input_kernel[:, :H] + params.bias[None, None, :H]
    )
    for impl in ("chunkwise", "reference"):
        got_final, ys = gated.run(cell, params, xs, carry=carry, impl=impl, chunk=4)
        want = np.moveaxis(out.numpy(), 1, 0).reshape(T, B, H) + skip
        _close((ys, jnp.swapaxes(got_final, -1, -2)), (want, final.numpy()), **FLA)


def test_mlstm_equals_the_xlstm_packages_stabilised_recurrent_step():
    """xLSTM's own stabilised step (its memory keys by values, gated's values by keys), from a random carry."""
    backends = _module("xlstm", "blocks/mlstm/backends.py")
    torch = pytest.importorskip("torch")
    cell, params, carry, xs = _case("mlstm", {"num_heads": 2, "output_gate": False})
    q, k, v, log_f, i_pre = (torch.moveaxis(a, 1, 2) for a in _torch_heads(cell, params, xs))  # (B, K, T, ...)
    pre_f = torch.log(torch.expm1(-log_f).reciprocal())  # the pre-activation whose logsigmoid is log_f
    k = k * np.sqrt(H // 2)  # xLSTM scales its keys by 1/sqrt(d) itself
    c, n, m = (torch.from_numpy(np.asarray(a)) for a in (jnp.swapaxes(carry.c, -1, -2), carry.n[..., None],
                                                             carry.m[..., None, None]))  # fmt: skip
    outs = []
    for t in range(T):
        piece = lambda a, t=t: a[:, :, t : t + 1]
        h, (c, n, m) = backends.recurrent_step_stabilized_simple(c, n, m, piece(q), piece(k), piece(v),
                                                                 piece(i_pre)[..., None], piece(pre_f)[..., None],
                                                                 eps=0.0)  # fmt: skip
        outs.append(h.reshape(B, H).numpy())
    for impl in ("chunkwise", "reference"):
        final, ys = gated.run(cell, params, xs, carry=carry, impl=impl, chunk=4)
        _close((ys, jnp.swapaxes(final.c, -1, -2), final.m), (np.stack(outs), c.numpy(), m.numpy()[..., 0, 0]))
