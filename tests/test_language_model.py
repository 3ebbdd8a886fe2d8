"""The byte-level language model of real text: the text task (reading, the split by file, batches of next bytes,
errors), the named architectures of configs/language_model.py (matched parameter counts; decoding one token at a
time equals the parallel forward pass for each of them), and block models through the engine (bits per byte,
bfloat16 compute, dropout keyed by the step). A few kilobytes of text, tiny widths."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import language_model
from experiments import config as config_lib
from experiments import engine, tasks
from gated import models

TEXT = "".join(f"def f{i}(x):\n    return x * {i} + 'caf\u00e9'\n\n" for i in range(120))  # 4 KB of UTF-8


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(20):
        (folder / f"m{i:02d}.py").write_text(TEXT[i * 150 : (i + 1) * 150 + 300])
    return folder


def test_text_task_reads_a_folder_split_by_file_and_samples_next_bytes(corpus):
    task = tasks.get("text", path=str(corpus), length=16, validation_percent=20)
    train, valid, about = task.corpus()
    assert about["files"] == 20 and about["train_bytes"] == train.size and about["validation_bytes"] == valid.size
    assert train.size + valid.size == sum(f.stat().st_size for f in corpus.iterdir())
    again = tasks.read_corpus.__wrapped__(str(corpus), 20)  # the split is a function of the names: the same again
    np.testing.assert_array_equal(again[1], valid)
    assert 0 < valid.size < train.size
    batch = jax.jit(lambda k: task.sample(k, 4, "test"))(jax.random.key(0))
    assert batch.xs.shape == (16, 4) and batch.xs.dtype == jnp.int32 and bool(batch.mask.all())
    np.testing.assert_array_equal(batch.xs[1:], batch.targets[:-1])  # the targets are the next bytes
    window = bytes(np.asarray(jnp.concatenate([batch.xs[:, 0], batch.targets[-1:, 0]])).astype(np.uint8))
    assert window in valid.tobytes()
    one = tasks.get("text", path=str(corpus / "m00.py"), length=8)  # one file: split by position
    size = (corpus / "m00.py").stat().st_size
    assert one.description["validation_bytes"] == size // 10 and one.description["train_bytes"] == size - size // 10
    assert task.chance_loss == pytest.approx(math.log(256))


def test_text_task_errors_name_what_they_got(corpus, tmp_path):
    with pytest.raises(ValueError, match="task.path: expected a UTF-8 text file or folder, got '/nonexistent'"):
        tasks.get("text", path="/nonexistent")
    (tmp_path / "bad.bin").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(ValueError, match="task.path: expected UTF-8 text, got .*bad.bin"):
        tasks.get("text", path=str(tmp_path / "bad.bin"))
    with pytest.raises(ValueError, match=r"task.length: expected fewer steps than the validation split's \d+ bytes"):
        tasks.get("text", path=str(corpus), length=5000)
    with pytest.raises(ValueError, match=r"task.validation_percent: expected an int in \[1, 100\), got 100"):
        tasks.get("text", path=str(corpus), validation_percent=100)


def test_the_default_corpus_is_the_standard_librarys_sources():
    about = tasks.get("text").description
    assert about["files"] > 100 and about["train_bytes"] > 3_000_000 and about["validation_bytes"] > 200_000


def test_named_architectures_have_matched_parameter_counts():
    counts = {}
    for name in language_model.ARCHITECTURES:
        spec = config_lib.validate(config_lib.complete(language_model.get_config(name)))
        shapes = jax.eval_shape(lambda s=spec: s.model.init(jax.random.key(0)))
        counts[name] = sum(math.prod(a.shape) for a in jax.tree.leaves(shapes))
    assert 1_000_000 <= min(counts.values()) and max(counts.values()) <= 1.05 * min(counts.values()), counts


def _tiny(name, corpus, **train):
    """Architecture ``name`` at width 8 (cells of 8 or 16) on the test corpus."""
    config = language_model.get_config(name)
    m = config.model
    m.update(width=8, hidden_size=8 if m.hidden_size == m.width else 16, num_layers=min(m.num_layers, 2))
    if "num_heads" in m.options:
        m.options.num_heads = 2
    if "state_size" in m.options:
        m.options.state_size = 3
    config.task.update(path=str(corpus), length=12)
    config.optimizer.warmup_steps = 1
    config.train.update(steps=3, batch_size=2, log_every=1, eval_every=3, eval_batch_size=4, checkpoint_every=3)
    config.train.update(train)
    return config


# The fast tier decodes Hawk; the other architectures are in the slow tier (the whole suite runs them all).
@pytest.mark.parametrize("name", [n if n == "hawk" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in language_model.ARCHITECTURES])  # fmt: skip
def test_every_named_architecture_decodes_as_its_parallel_forward_pass(name, corpus):
    """generate's logits, one token at a time from the carry (recurrent states and convolution buffers), equal the
    whole sequence's, float64 to 1e-9, for each named architecture as its config builds it."""
    model = config_lib.validate(config_lib.complete(_tiny(name, corpus))).model
    leaves, tree = jax.tree.flatten(model.init(jax.random.key(1), jnp.float64))
    keys = jax.random.split(jax.random.key(2), len(leaves))
    moved = [a + 0.2 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)]
    params = jax.tree.unflatten(tree, moved)
    prompt = jax.random.randint(jax.random.key(3), (3, 2), 0, 256)
    tokens, drawn = jax.jit(lambda p, x: models.generate(model, p, x, 4))(params, prompt)
    _, logits = jax.jit(model)(params, jnp.concatenate([prompt, tokens]))
    np.testing.assert_allclose(drawn, logits[2:-1], rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_a_block_model_trains_on_text_through_the_engine(corpus, tmp_path):
    """Hawk on a few kilobytes: bits per byte is the cross-entropy over log 2, and a rerun resumes to the same
    result. bfloat16 compute trains too, near the float32 run; dropout draws its masks from the step's key."""
    steps = dict(steps=30, eval_every=30, checkpoint_every=30, log_every=10)
    config = _tiny("hawk", corpus, **steps)
    config.optimizer.learning_rate = 1e-2
    final = engine.train_and_evaluate(config, tmp_path / "f32")[""]["final"]
    assert final["bits_per_byte"] == pytest.approx(final["loss"] / math.log(2), rel=1e-6)
    assert final["bits_per_byte"] < 6.0  # chance: 8 bits per byte
    config.model.dtype = "bfloat16"
    half = engine.train_and_evaluate(config, tmp_path / "bf16")[""]["final"]
    assert abs(half["loss"] - final["loss"]) < 0.05 * final["loss"], (half, final)


def test_block_config_errors_name_the_key(corpus):
    config = config_lib.complete(_tiny("hawk", corpus))
    with pytest.raises(config_lib.ConfigError, match="config.model.mixer: expected one of .*, got 'attention'"):
        config_lib.validate(config_lib.override(config, {"model.mixer": "attention"}))
    layers = config_lib.override(config, {"model.architecture": "layers", "model.mlp": "none", "model.norm": "none"})
    with pytest.raises(config_lib.ConfigError, match="config.model.mixer: expected 'cell' .*model.architecture"):
        config_lib.validate(layers)
    features = config_lib.override(config, {"model.tie_embeddings": True})
    with features.unlocked():
        features.task = ml_collections.ConfigDict({"name": "adding", "length": 10})
    with pytest.raises(config_lib.ConfigError, match="config.model.tie_embeddings: expected False: task 'adding'"):
        config_lib.validate(features)
    with pytest.raises(config_lib.ConfigError, match="config.model.hidden_size: expected model.width = 8"):
        config_lib.validate(config_lib.override(config, {"model.mixer": "cell", "model.hidden_size": 16}))
    with pytest.raises(config_lib.ConfigError, match="config.model.dtype: expected one of .*, got 'float16'"):
        config_lib.validate(config_lib.override(config, {"model.dtype": "float16"}))
    with pytest.raises(config_lib.ConfigError, match="config.model.heads: expected 4: mixer 'griffin' .*does not use"):
        config_lib.validate(config_lib.override(config, {"model.heads": 2}))
    with pytest.raises(config_lib.ConfigError, match="config.model.conv_width: expected 4: mixer 'cell'"):
        config_lib.validate(config_lib.override(config, {"model.mixer": "cell", "model.conv_width": 3}))
    with pytest.raises(config_lib.ConfigError, match="config.model.mlp_expansion: expected 4.0: .*mlp 'none'"):
        config_lib.validate(config_lib.override(config, {"model.mlp": "none"}))
    with pytest.raises(config_lib.ConfigError, match="config.model.mixer 'mlstm': cell: expected an mLSTM"):
        config_lib.validate(config_lib.override(config, {"model.mixer": "mlstm"}))


@pytest.mark.slow
def test_the_report_gathers_a_sweep_into_a_table_and_a_figure(corpus, tmp_path):
    """experiments.lm_report over a sweep of two tiny architectures and two seeds: each architecture named, its
    seeds' final validation bits per byte, their mean and t-interval, the parameters of final.npz, a timed step."""
    from experiments import lm_report

    config = _tiny("hawk", corpus)
    sweep = [{**{f"model.{k}": v for k, v in _tiny(name, corpus).model.items() if k != "options"}, "seed": seed}
             for name in ("hawk", "lstm") for seed in (0, 1)]  # fmt: skip
    results = engine.train_and_evaluate(config, tmp_path / "sweep", sweep)
    out = lm_report.report(tmp_path / "sweep", tmp_path / "out", time_steps=1)
    for name in ("hawk", "lstm"):
        s = out["architectures"][name]
        finals = [r["final"]["bits_per_byte"] for r in results.values() if r["config"]["model"]["cell"] == _cell(name)]
        assert sorted(s["final_bits_per_byte"]) == sorted(finals) and s["mean"] == pytest.approx(np.mean(finals))
        assert s["half_width"] > 0 and s["seconds_per_step"] > 0 and s["params"] > 0
    assert (tmp_path / "out" / "language_model.png").stat().st_size > 10_000
    assert "| hawk |" in (tmp_path / "out" / "report.md").read_text()


def _cell(name):
    return language_model.ARCHITECTURES[name]["cell"]
