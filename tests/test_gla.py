"""The key-decay cells (GLA with its Simple GLA and RetNet decays, HGRN2) against flash-linear-attention's naive
references: outputs, final state and the gradient of a loss of both with respect to the inputs, on every backend of
their forms, in float64: the references cast to float32 with ``.float()``, which here keeps float64 tensors as they
are, but the GLA op adds the initial state to a float32 memory and RetNet's computes its decays in float32, hence
their float32-level tolerance (1e-6). The
float64 transcriptions (tests/reference.py) and every backend's agreement to 1e-10 are the conformance suite's."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gated
from tests.conftest import random_carry, random_params
from tests.test_chunkwise import FLA, _close, _module

T, B, D, H, K = 13, 3, 4, 8, 2
IMPLS = ("chunkwise", "associative", "sequential", "reference")
F64 = {"rtol": 1e-9, "atol": 1e-9}


@contextlib.contextmanager
def _float64(torch):
    """``Tensor.float()`` leaves a float64 tensor in float64 (the naive references cast with it)."""
    original = torch.Tensor.float
    torch.Tensor.float = lambda self, *a, **k: self if self.dtype == torch.float64 else original(self, *a, **k)
    try:
        yield
    finally:
        torch.Tensor.float = original


def _against(cell, reference, from_zero=False, tol=F64):
    """Runs ``reference(q, k, v, log_decay, state) -> (out (B, T, K, d_v), final (B, K, d_k, d_v) or None)`` on the
    cell's own per-head pieces ``(B, T, K, ...)`` (q unscaled: the references scale by ``1/sqrt(d_k)``), and
    compares every backend's outputs, final memory and input gradient with it."""
    torch = pytest.importorskip("torch")
    params = random_params(cell, jax.random.key(0), D, jnp.float64)
    carry = jnp.zeros((B, *cell.carry_shape)) if from_zero else random_carry(cell, jax.random.key(1), (B,), jnp.float64)
    xs = jax.random.normal(jax.random.key(2), (T, B, D), jnp.float64)

    def pieces(x):
        heads = jax.vmap(jax.vmap(lambda u: cell.heads(params, cell.project(params, u))))(x)
        q, k, v, log_decay, _ = (jnp.swapaxes(a, 0, 1) for a in heads)  # (B, T, K, ...)
        return q * np.sqrt(cell.key_size), k, v, log_decay

    inputs, vjp = jax.vjp(pieces, xs)
    tensors = [torch.from_numpy(np.array(a)).requires_grad_() for a in inputs]
    state = torch.from_numpy(np.array(jnp.swapaxes(carry, -1, -2)))  # the references' (K, d_k, d_v)
    with _float64(torch):
        out, final = reference(*tensors, state)
    loss = torch.sin(out).sum() + (0.0 if final is None else torch.cos(final).sum())
    loss.backward()
    want_grad = vjp(tuple(np.zeros(a.shape) if a.grad is None else a.grad.double().numpy() for a in tensors))[0]
    want = (np.swapaxes(out.detach().double().numpy(), 0, 1).reshape(T, B, H),)
    if final is not None:
        want += (final.detach().double().numpy(),)

    def run(x, impl):
        got_final, ys = gated.run(cell, params, x, carry=carry, impl=impl, chunk=4)
        value = jnp.sum(jnp.sin(ys)) + (0.0 if final is None else jnp.sum(jnp.cos(jnp.swapaxes(got_final, -1, -2))))
        return value, (ys,) + (() if final is None else (jnp.swapaxes(got_final, -1, -2),))

    for impl in IMPLS:
        (_, got), grad = jax.jit(jax.value_and_grad(run, has_aux=True), static_argnums=1)(xs, impl)
        _close((got, grad), (want, want_grad), **tol)


@pytest.mark.parametrize("expand_k", [0.5, pytest.param(1.0, marks=pytest.mark.slow)])
def test_gla_equals_flash_linear_attention(expand_k):
    naive = _module("fla", "ops/gla/naive.py")
    cell = gated.cells.GLA(H, num_heads=K, expand_k=expand_k)
    _against(cell, lambda q, k, v, g, s: naive.naive_recurrent_gla(q, k, v, g, s, output_final_state=True), tol=FLA)


@pytest.mark.slow
def test_simple_gla_equals_flash_linear_attention():
    naive = _module("fla", "ops/simple_gla/naive.py")
    cell = gated.cells.GLA(H, num_heads=K, decay="head", gate_normaliser=4.0)
    reference = lambda q, k, v, g, s: naive.naive_recurrent_simple_gla(q, k, v, g[..., 0], initial_state=s)
    _against(cell, reference)


@pytest.mark.slow
def test_retnet_equals_flash_linear_attentions_retention():
    """RetNet's parallel retention (no state in or out), from the zero memory."""
    naive = _module("fla", "ops/retention/naive.py")
    cell = gated.cells.GLA(H, num_heads=K, decay="fixed", expand_k=1.0)
    swap = lambda a: a.transpose(1, 2)  # (B, K, T, d), as naive_retention takes them
    reference = lambda q, k, v, g, s: (swap(naive.naive_retention(swap(q), swap(k), swap(v))), None)
    _against(cell, reference, from_zero=True, tol=FLA)


@pytest.mark.slow
@pytest.mark.parametrize("lower_bound", [0.0, 0.3])
def test_hgrn2_equals_flash_linear_attentions_gla_op_as_its_layer_calls_it(lower_bound):
    """HGRN2Attention (fla/layers/hgrn2.py) calls the GLA op with q = swish(.), k = 1 - f, v, gk = log f: the cell's
    pieces are those (tests/reference.py transcribes the layer's gate from its log sigmoid and lower bound)."""
    naive = _module("fla", "ops/gla/naive.py")
    cell = gated.cells.HGRN2(H, num_heads=K, expand_ratio=3, lower_bound=lower_bound)
    _against(cell, lambda q, k, v, g, s: naive.naive_recurrent_gla(q, k, v, g, s, output_final_state=True), tol=FLA)


def test_key_decay_options_are_checked():
    with pytest.raises(ValueError, match=r"decay: expected one of \('key', 'head', 'fixed'\), got 'none'"):
        gated.cells.GLA(H, decay="none")
    with pytest.raises(ValueError, match=r"lower_bound: expected a finite number in \[0, 1\), got 1.0"):
        gated.cells.HGRN2(H, lower_bound=1.0)
    with pytest.raises(ValueError, match="num_heads: expected a positive int dividing hidden_size 8, got 3"):
        gated.cells.GLA(H, num_heads=3)
