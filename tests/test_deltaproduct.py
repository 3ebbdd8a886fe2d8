"""The delta rule's newer cells against flash-linear-attention's naive recurrences, from gated's own per-head pieces:
Gated DeltaProduct (its n_h corrections a token) and Kimi Delta Attention (its decay per key channel). Outputs, final
state and the gradient of a loss of both with respect to the inputs, on every backend of the delta-rule form: the
references compute in float64 here (their ``.float()`` casts keep it, tests/test_gla.py) but store their outputs in
float32, hence 1e-6; and Gated DeltaProduct's special case: one correction a token is Gated DeltaNet."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gated
from tests.conftest import random_carry, random_params
from tests.test_chunkwise import FLA, _close, _module
from tests.test_gla import _float64

T, B, D, H, K = 11, 3, 4, 8, 2
IMPLS = ("chunkwise", "recomputed", "reference")


def _every_backend(cell, params, carry, xs, want):
    """Outputs, final memory (keys by values, as the references keep it) and the input gradient of
    ``sum(sin(ys)) + sum(cos(final))`` on every backend of the form, against ``want``."""

    def loss(x, impl):
        got_final, ys = gated.run(cell, params, x, carry=carry, impl=impl, chunk=4)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(jnp.cos(got_final)), (ys, jnp.swapaxes(got_final, -1, -2))

    for impl in IMPLS:
        (_, got), grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)(xs, impl)
        _close((got, grad), want, **FLA)


@pytest.mark.parametrize(
    "options",
    [
        {"householder": 2},
        pytest.param({"householder": 3, "eigenvalues": "[0, 1]"}, marks=pytest.mark.slow),
        pytest.param({"householder": 2, "forget_gate": False}, marks=pytest.mark.slow),
    ],
    ids=["2", "3-[0, 1]", "2-no-gate"],
)
def test_gated_deltaproduct_equals_flash_linear_attention(options):
    naive = _module("fla", "ops/gated_delta_product/naive.py")
    torch = pytest.importorskip("torch")
    cell = gated.cells.GatedDeltaProduct(H, num_heads=K, **options)
    n = cell.householder
    params = random_params(cell, jax.random.key(0), D, jnp.float64)
    carry = random_carry(cell, jax.random.key(1), (B,), jnp.float64)
    xs = jax.random.normal(jax.random.key(2), (T, B, D), jnp.float64)

    def pieces(x):  # as the reference takes them: q (B, T, K, d), k and v (B, T n_h, K, d), beta (B, T n_h, K)
        q, k, v, log_alpha, beta = (
            jnp.swapaxes(a, 0, 1) for a in jax.vmap(jax.vmap(lambda u: cell.heads(params, cell.project(params, u))))(x)
        )
        tokens = lambda a: jnp.moveaxis(a, 3, 2).reshape(B, T * n, *a.shape[2:3], *a.shape[4:])
        return q, tokens(k), tokens(v), log_alpha, tokens(beta)

    inputs, vjp = jax.vjp(pieces, xs)
    q, k, v, g, beta = (torch.from_numpy(np.array(a)).requires_grad_() for a in inputs)
    state = torch.from_numpy(np.array(jnp.swapaxes(carry, -1, -2)))  # the reference's (K, d_k, d_v)
    with _float64(torch):
        out, final = naive.naive_recurrent_gated_delta_product(
            q, k, v, g, beta, 1.0, initial_state=state, output_final_state=True, num_householder=n
        )
    (torch.sin(out).sum() + torch.cos(final).sum()).backward()
    grads = tuple(np.zeros(a.shape) if a.grad is None else a.grad.numpy() for a in (q, k, v, g, beta))
    want = ((np.swapaxes(out.detach().numpy(), 0, 1).reshape(T, B, H), final.detach().numpy()), vjp(grads)[0])

    _every_backend(cell, params, carry, xs, want)


def test_one_correction_a_token_is_gated_deltanet():
    """householder=1 with eigenvalues in [0, 1]: Gated DeltaNet's recurrence, parameter for parameter (the
    projection's blocks in the same order: q, k, v, the strengths, the gates)."""
    product = gated.cells.GatedDeltaProduct(H, num_heads=K, householder=1, eigenvalues="[0, 1]")
    deltanet = gated.cells.GatedDeltaNet(H, num_heads=K)
    params = random_params(product, jax.random.key(3), D, jnp.float64)
    h = 3 * H
    # Gated DeltaNet's projection: q, k, v, then the K gates, then the K strengths
    swapped = lambda a: jnp.concatenate([a[..., :h], a[..., h + K :], a[..., h : h + K]], axis=-1)
    theirs = gated.cells.DeltaParams(swapped(params.input_kernel), swapped(params.bias), params.a_log)
    xs = jax.random.normal(jax.random.key(4), (T, B, D), jnp.float64)
    for impl in ("chunkwise", "reference"):
        _close(gated.run(product, params, xs, impl=impl, chunk=4), gated.run(deltanet, theirs, xs, impl="reference"))


def test_deltaproduct_options_are_checked():
    with pytest.raises(ValueError, match="householder: expected a positive int, got 0"):
        gated.cells.GatedDeltaProduct(H, householder=0)
    with pytest.raises(ValueError, match=r"eigenvalues: expected '\[0, 1\]' or '\[-1, 1\]', got '\[0, 2\]'"):
        gated.cells.GatedDeltaProduct(H, eigenvalues="[0, 2]")


@pytest.mark.slow
@pytest.mark.parametrize("eigenvalues", ["[0, 1]", "[-1, 1]"])
def test_kda_equals_flash_linear_attention(eigenvalues):
    """Kimi Delta Attention against fla's naive recurrent KDA (its decay per key channel), in float64."""
    naive = _module("fla", "ops/kda/naive.py")
    torch = pytest.importorskip("torch")
    cell = gated.cells.KDA(H, num_heads=K, eigenvalues=eigenvalues)
    params = random_params(cell, jax.random.key(5), D, jnp.float64)
    carry = random_carry(cell, jax.random.key(6), (B,), jnp.float64)
    xs = jax.random.normal(jax.random.key(7), (T, B, D), jnp.float64)

    def pieces(x):  # (B, T, K, ...) as the reference takes them
        heads = jax.vmap(jax.vmap(lambda u: cell.heads(params, cell.project(params, u))))(x)
        return tuple(jnp.swapaxes(a, 0, 1) for a in heads)

    inputs, vjp = jax.vjp(pieces, xs)
    q, k, v, g, beta = (torch.from_numpy(np.array(a)).requires_grad_() for a in inputs)
    state = torch.from_numpy(np.array(jnp.swapaxes(carry, -1, -2)))
    with _float64(torch):
        out, final = naive.naive_recurrent_kda(q, k, v, g, beta, 1.0, initial_state=state, output_final_state=True)
    (torch.sin(out).sum() + torch.cos(final).sum()).backward()
    want = ((np.swapaxes(out.detach().numpy(), 0, 1).reshape(T, B, H), final.detach().numpy()),
            vjp(tuple(a.grad.numpy() for a in (q, k, v, g, beta)))[0])  # fmt: skip

    _every_backend(cell, params, carry, xs, want)
