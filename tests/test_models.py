"""Models (gated.models): the residual block and a token model against their composition by hand, and generation
one token at a time from a carry against the parallel forward pass of the same tokens, for a Hawk model on every
scan form of its RG-LRU, a model with a convolution and an LSTM stack."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gated
from gated import blocks, mixers, models
from gated.options import Call
from tests.conftest import random_params

V, D, T, B = 11, 6, 7, 2
F64 = {"rtol": 1e-10, "atol": 1e-12}


def _hawk(impl="auto", width=D):
    cell = gated.cells.RGLRU(width, segment_start="recurrentgemma")
    return models.Model(V, width, layers=[models.Residual(mixers.Griffin(cell, impl=impl)),
                                          models.Residual(blocks.GatedMLP(2 * width, variant="geglu"))],
                        embedding_scale=width**0.5)  # fmt: skip


MODELS = {
    "hawk": _hawk(),
    "conv-untied": models.Model(
        V,
        D,
        layers=[models.Residual(blocks.CausalConv(width=3), norm=blocks.LayerNorm()), blocks.Highway()],
        tie_embeddings=False,
    ),  # fmt: skip
    "lstm-stack": models.Model(
        V, D, layers=[gated.Recurrent(gated.cells.LSTM(D)), gated.Recurrent(gated.cells.GRU(D))], final_norm=None
    ),  # fmt: skip
}


def _noisy(params, seed):
    """``params`` with every leaf moved at random (norm scales and biases off their initial ones and zeros)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    moved = [a + 0.3 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(tree, moved)


def test_residual_and_model_equal_their_composition_by_hand():
    mixer = mixers.Griffin(gated.cells.RGLRU(D))
    residual = models.Residual(mixer)
    params = random_params(residual, jax.random.key(0), D, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float64)
    carry, ys = jax.jit(residual)(params, xs)
    want_carry, mixed = jax.jit(lambda p, x: mixer(p.mixer, blocks.RMSNorm()(p.norm, x)))(params, xs)
    np.testing.assert_allclose(ys, xs + mixed, **F64)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **F64), carry, want_carry)
    model = MODELS["conv-untied"]
    params = (
        random_params(model, jax.random.key(2), D, jnp.float64) if False else model.init(jax.random.key(2), jnp.float64)
    )
    tokens = jax.random.randint(jax.random.key(3), (T, B), 0, V)
    _, logits = jax.jit(model)(params, tokens)

    @jax.jit
    def by_hand(params, tokens):
        conv, highway = model.layers
        hidden = params.embedding[tokens]
        hidden = hidden + conv.mixer(params.layers[0].mixer, blocks.LayerNorm()(params.layers[0].norm, hidden))[1]
        hidden = highway(params.layers[1], hidden)
        return blocks.RMSNorm()(params.final_norm, hidden) @ params.head

    np.testing.assert_allclose(logits, by_hand(params, tokens), **F64)
    tied = MODELS["hawk"]
    params = _noisy(tied.init(jax.random.key(4), jnp.float64), 4)
    assert params.head is None
    _, logits = jax.jit(tied)(params, tokens)

    @jax.jit
    def tied_by_hand(params, tokens):
        hidden = params.embedding[tokens] * D**0.5
        for layer, p in zip(tied.layers, params.layers, strict=True):
            hidden = layer(p, hidden)[1]
        return blocks.RMSNorm()(params.final_norm, hidden) @ params.embedding.T

    np.testing.assert_allclose(logits, tied_by_hand(params, tokens), **F64)


# The fast tier decodes the Hawk model on its default form, the slow tier the other models (the RG-LRU's decoding on
# its other forms is the conformance suite's).
GENERATED = ["hawk", "conv-untied", "lstm-stack"]


@pytest.mark.parametrize("name", [n if n == "hawk" else pytest.param(n, marks=pytest.mark.slow) for n in GENERATED])
def test_generation_gives_the_logits_of_the_parallel_forward_pass(name):
    """Greedy and temperature decoding under jit: each step's logits equal the whole sequence's (prompt and
    generated tokens) run at once, float64 to 1e-10; greedy picks their argmax."""
    model = MODELS[name]
    params = _noisy(model.init(jax.random.key(5), jnp.float64), 5)
    prompt = jax.random.randint(jax.random.key(6), (4, B), 0, V)
    for temperature in (0.0, 1.5):
        run = jax.jit(lambda p, x, k, t=temperature: models.generate(model, p, x, 5, k, temperature=t))
        tokens, drawn = run(params, prompt, jax.random.key(7))
        assert tokens.shape == (5, B) and drawn.shape == (5, B, V)
        _, logits = model(params, jnp.concatenate([prompt, tokens]))
        np.testing.assert_allclose(drawn, logits[3:-1], **F64)
        if temperature == 0.0:
            np.testing.assert_array_equal(tokens, jnp.argmax(logits[3:-1], axis=-1))


def test_temperature_samples_from_the_softmax():
    """A model whose logits ignore the input (an empty stack, a fixed embedding): over 4000 sampled tokens at
    temperature 2, the frequencies are softmax(logits / 2) within 4 standard errors."""
    model = models.Model(4, 4, layers=[], final_norm=None)
    params = model.init(jax.random.key(0))._replace(embedding=jnp.diag(jnp.array([0.0, 1.0, 2.0, 4.0])))
    prompt = jnp.zeros((1, 4000), jnp.int32)  # token 0: logits row 0 of E E^T, all zero -> uniform
    tokens, _ = jax.jit(lambda k: models.generate(model, params, prompt, 1, k, temperature=2.0))(jax.random.key(1))
    frequencies = np.bincount(np.asarray(tokens[0]), minlength=4) / 4000
    np.testing.assert_allclose(frequencies, 0.25, atol=4 * np.sqrt(0.25 * 0.75 / 4000))


def test_errors():
    model = MODELS["hawk"]
    params = model.init(jax.random.key(0))
    with pytest.raises(TypeError, match="tokens: expected integers"):
        model(params, jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"carry: expected one entry per layer \(2\), got 1"):
        model(params, jnp.zeros((3, 2), int), (None,))
    with pytest.raises(ValueError, match="key: expected a PRNG key to sample with temperature > 0"):
        models.generate(model, params, jnp.zeros((3, 2), int), 2, temperature=1.0)
    with pytest.raises(ValueError, match="mixer: expected outputs of the input's shape"):
        models.Residual(gated.Recurrent(gated.cells.LSTM(3)))(
            models.Residual(gated.Recurrent(gated.cells.LSTM(3))).init(jax.random.key(0), D), jnp.zeros((3, 2, D))
        )
    with pytest.raises(ValueError, match="vocab_size: expected a positive int, got 0"):
        models.Model(0, D)


def test_input_tokens_other_than_the_outputs():
    """input_vocab_size: the embedding holds that many tokens (a task's cues and padding), the head V; it is refused
    tied, with features, and in generation (whose outputs are fed back as inputs)."""
    model = models.Model(V, D, layers=[blocks.CausalConv(width=2)], input_vocab_size=V + 3, tie_embeddings=False)
    params = model.init(jax.random.key(0))
    assert params.embedding.shape == (V + 3, D) and params.head.shape == (D, V)
    tokens = jnp.array([[V + 2, 0], [1, V]])
    _, logits = model(params, tokens)
    assert logits.shape == (2, 2, V) and bool(jnp.isfinite(logits).all())
    moved = params._replace(embedding=params.embedding.at[V + 2].add(1.0))  # the row only sequence 0 reads
    _, again = model(moved, tokens)
    assert not np.allclose(again[:, 0], logits[:, 0])
    np.testing.assert_array_equal(again[:, 1], logits[:, 1])
    with pytest.raises(ValueError, match=r"tie_embeddings: expected False with input_vocab_size=14 != vocab_size=11"):
        models.Model(V, D, input_vocab_size=V + 3)
    with pytest.raises(ValueError, match=r"input_vocab_size: expected None with input_size=3"):
        models.Model(V, D, input_size=3, input_vocab_size=5, tie_embeddings=False)
    with pytest.raises(ValueError, match=r"model: expected its outputs to be its inputs to generate"):
        models.generate(model, params, tokens, 2)


def test_a_model_without_an_embedding_refuses_what_it_does_not_use():
    """embed=False (the classic layer and readout): no embedding to tie or scale; a "last" readout does not generate."""
    layer = gated.Recurrent(gated.cells.GRU(D))
    with pytest.raises(ValueError, match=r"tie_embeddings: expected False with embed=False"):
        models.Model(V, D, layers=[layer], embed=False)
    with pytest.raises(
        ValueError, match=r"embedding_scale: expected 1.0 with embed=False \(nothing is embedded\), got 2.0"
    ):
        models.Model(V, D, layers=[layer], embed=False, tie_embeddings=False, embedding_scale=2.0)
    with pytest.raises(ValueError, match=r"width: expected the last layer's output size 6 with embed=False .* got 7"):
        models.Model(V, D + 1, layers=[layer], embed=False, tie_embeddings=False)
    model = models.Model(V, D, layers=[layer], embed=False, tie_embeddings=False, head_bias=True, readout="last")
    with pytest.raises(ValueError, match=r"model: expected readout 'per_step' to generate .* got 'last'"):
        models.generate(model, model.init(jax.random.key(0)), jnp.zeros((3, 2), jnp.int32), 2)


def test_dropout_is_on_with_a_key_only_and_nothing_at_rate_zero():
    """A model with dropout between layers and on a residual branch: with a key its logits change (and differ from
    key to key), without one they are the evaluation pass; at rate 0 a key changes nothing."""

    def model(rate):
        griffin = mixers.Griffin(gated.cells.RGLRU(D))
        mlp = models.Residual(blocks.MLP(8), dropout=rate)
        layers = [blocks.Dropout(rate), mlp, models.Residual(griffin, dropout=rate)]
        return models.Model(V, D, layers=layers)

    dropping, plain = model(0.5), model(0.0)
    params = dropping.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (T, B), 0, V)
    run = jax.jit(lambda m, key: m(params, tokens, key=key)[1], static_argnums=0)
    evaluation = jax.jit(lambda m: m(params, tokens)[1], static_argnums=0)
    np.testing.assert_array_equal(evaluation(dropping), evaluation(plain))
    np.testing.assert_array_equal(run(plain, jax.random.key(2)), evaluation(plain))
    first, second = run(dropping, jax.random.key(2)), run(dropping, jax.random.key(3))
    assert not np.allclose(first, evaluation(dropping)) and not np.allclose(first, second)
    np.testing.assert_array_equal(first, run(dropping, jax.random.key(2)))  # the same key, the same masks


LINEAR_CELLS = {"mingru": {}, "mlstm": {"num_heads": 2}}
FORMS = ("reference", "associative", "chunked", "chunkwise", "recomputed")


@pytest.mark.slow  # the fast tier's generation test is Hawk's below; every cell's decoding, the conformance suite's
@pytest.mark.parametrize("name", ["mingru", "mlstm"])
def test_generation_on_every_scan_form_of_the_linear_cells(name):
    """A residual model of a diagonal and of a matrix-state cell decodes, on every form that runs it (the prompt and
    each token), to the logits of its parallel forward pass (float64 to 1e-10). Every cell's one-token decoding on
    every form is the conformance suite's."""
    cell = gated.cells.get(name, D, **LINEAR_CELLS[name])
    prompt = jax.random.randint(jax.random.key(8), (5, B), 0, V)
    for impl in (f for f in FORMS if gated.backends.reason(f, cell, Call(f)) is None):
        model = models.Model(V, D, layers=[models.Residual(gated.Recurrent(cell, impl=impl, chunk=2)),
                                           models.Residual(blocks.MLP(2 * D))])  # fmt: skip
        params = _noisy(model.init(jax.random.key(9), jnp.float64), 9)
        tokens, drawn = jax.jit(lambda p, x, m=model: models.generate(m, p, x, 3))(params, prompt)
        _, logits = model(params, jnp.concatenate([prompt, tokens]))
        np.testing.assert_allclose(drawn, logits[4:-1], **F64, err_msg=impl)
