"""The synthetic tasks: shapes, the rule each label follows, and their chance levels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import tasks

KEY = jax.random.key(0)


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_shapes_and_sizes(name):
    task = tasks.get(name, length=64 if name == "digits" else 40)
    batch = jax.jit(task.sample, static_argnums=1)(KEY, 5)
    t = batch.xs.shape[0]
    if task.tokens:  # integer tokens in [0, input_size)
        assert batch.xs.shape == (t, 5) and batch.xs.dtype == jnp.int32
        assert 0 <= int(batch.xs.min()) and int(batch.xs.max()) < task.input_size
    else:
        assert batch.xs.shape == (t, 5, task.input_size) and batch.xs.dtype == jnp.float32
    assert batch.mask.shape == (t, 5) and batch.mask.dtype == jnp.bool_
    np.testing.assert_array_equal(batch.lengths, np.full(5, t))
    expected = (t, 5) if task.readout == "per_step" else ((5, 1) if task.kind == "regression" else (5,))
    assert batch.targets.shape == expected


def test_adding_halves_rule_and_chance():
    task = tasks.get("adding", length=30)
    xs, targets, *_ = task.sample(KEY, 4000)
    values, markers = np.asarray(xs[..., 0]), np.asarray(xs[..., 1])
    assert np.all(markers[:15].sum(0) == 1) and np.all(markers[15:].sum(0) == 1)
    np.testing.assert_allclose(targets[:, 0], (values * markers).sum(0), rtol=1e-6)
    assert abs(np.mean((np.asarray(targets) - 1.0) ** 2) - task.chance_loss) < 0.01


def test_adding_hochreiter_rule_and_chance():
    task = tasks.get("adding", length=40, variant="hochreiter")
    xs, targets, *_ = task.sample(KEY, 4000)
    values, markers = np.asarray(xs[..., 0]), np.asarray(xs[..., 1])
    marked = markers == 1.0
    assert np.all(marked.sum(0) == 2) and np.all(marked[:10].sum(0) >= 1) and not marked[20:].any()
    np.testing.assert_allclose(targets[:, 0], 0.5 + (values * marked).sum(0) / 4, rtol=1e-6)
    assert abs(np.mean((np.asarray(targets) - 0.5) ** 2) - task.chance_loss) < 0.005


def test_delayed_recall_rule():
    xs, labels, mask, _ = tasks.get("delayed_recall", length=12, delay=3, classes=5).sample(KEY, 6)
    seen = np.argmax(np.asarray(xs), -1)
    np.testing.assert_array_equal(np.asarray(labels)[3:], seen[:-3])
    np.testing.assert_array_equal(np.asarray(mask)[:, 0], np.arange(12) >= 3)


@pytest.mark.parametrize("relevant", [2, 3])
def test_temporal_order_rule(relevant):
    task = tasks.get("temporal_order", length=50, relevant=relevant)
    xs, labels, *_ = task.sample(KEY, 64)
    symbols = np.argmax(np.asarray(xs), -1)
    assert np.all(symbols[0] == 6) and np.all(symbols[-1] == 7)
    for b in range(64):
        order = [s - 4 for s in symbols[:, b] if s in (4, 5)]
        assert len(order) == relevant
        assert int(labels[b]) == int("".join(map(str, order)), 2)
    assert len(set(np.asarray(labels).tolist())) == 2**relevant


def test_copy_memory_rule():
    task = tasks.get("copy_memory", length=7, sequence=3, classes=4)
    xs, labels, *_ = task.sample(KEY, 5)
    inputs = np.argmax(np.asarray(xs), -1)
    assert xs.shape[0] == task.total_length == 13
    np.testing.assert_array_equal(np.asarray(labels)[-3:], inputs[:3])
    assert np.all(np.asarray(labels)[:-3] == 4) and np.all(inputs[9] == 5)


def test_review_rule():
    task = tasks.get("review", length=30, sentiment=5, words=3, vocabulary=10)
    xs, labels, *_ = task.sample(KEY, 200)
    tokens = np.argmax(np.asarray(xs), -1)
    is_sentiment = tokens >= 10
    assert np.all(is_sentiment.sum(0) == 5)
    score = np.where(is_sentiment, np.where(tokens < 13, 1, -1), 0).sum(0)
    np.testing.assert_array_equal(np.asarray(labels), (score > 0).astype(int))
    assert 0.3 < np.mean(np.asarray(labels)) < 0.7


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("mnist", {}, r"task.name: expected one of"),
        ("adding", {"lenght": 10}, r"unknown option\(s\) \['lenght'\] for task 'adding'"),
        ("adding", {"variant": "sum"}, r"task.variant: expected 'halves' or 'hochreiter'"),
        ("delayed_recall", {"length": 5, "delay": 5}, r"task.delay: expected an int in \[0, length\)"),
        ("review", {"sentiment": 4}, r"task.sentiment: expected an odd count"),
        ("temporal_order", {"relevant": 4}, r"task.relevant: expected 2"),
        ("copy_memory", {"length": -1}, r"task.length: expected an int >= 2"),
        ("selective_copying", {"length": 3, "count": 4}, r"task.count: expected at most length = 3"),
        ("induction_heads", {"length": 2}, r"task.length: expected an int >= 3"),
        ("mqar", {"pairs": 9, "vocabulary": 16}, r"task.pairs: expected at most vocabulary / 2 = 8"),
        ("mqar", {"vocabulary": 15}, r"task.vocabulary: expected an even count"),
        ("mqar", {"length": 20, "pairs": 8}, r"task.length: expected at least 3 \* pairs = 24"),
        ("modular_addition", {"modulus": 1}, r"task.modulus: expected an int >= 2"),
        ("parity", {"modulus": 3}, r"task.modulus: parity is the sum mod 2"),
    ],
)
def test_bad_task_options(name, options, message):
    with pytest.raises(ValueError, match=message):
        tasks.get(name, **options)


def test_digits_reads_the_images_pixel_by_pixel_with_a_held_out_test_split():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    data = load_digits()
    task = tasks.get("digits", test_size=300)
    xs, labels, mask, lengths = task.sample(KEY, 64)
    assert xs.shape == (64, 64, 1) and float(xs.max()) <= 1.0
    images = {tuple(row): int(t) for row, t in zip(data.data / 16.0, data.target, strict=True)}
    for b in range(64):
        assert images[tuple(np.asarray(xs[:, b, 0], np.float64))] == int(labels[b])
    train = {tuple(np.asarray(x)) for x in task.sample(KEY, 2000)[0][:, :, 0].T}
    test = {tuple(np.asarray(x)) for x in task.sample(KEY, 2000, "test")[0][:, :, 0].T}
    assert not train & test and len(test) <= 300


def test_selective_copying_rule_and_chance():
    """The cue steps' labels are the data tokens in the order they lie among the noise, and only they are labelled;
    the data tokens' kinds are uniform (chance 1/classes) and their steps spread over the whole stretch."""
    task = tasks.get("selective_copying", length=20, count=4, classes=6)
    batch = task.sample(KEY, 2000)
    xs, targets, mask = map(np.asarray, batch[:3])
    assert xs.shape == (24, 2000) and task.chance_accuracy == 1 / 6 and task.chance_loss == pytest.approx(np.log(6))
    np.testing.assert_array_equal(xs[20:], 7)  # the cues
    assert not mask[:20].any() and mask[20:].all()
    for b in range(50):
        data = xs[:20, b][xs[:20, b] < 6]
        np.testing.assert_array_equal(data, targets[20:, b])
    assert ((xs[:20] < 6).sum(axis=0) == 4).all()
    counts = np.bincount(targets[20:].ravel(), minlength=6) / targets[20:].size
    np.testing.assert_allclose(counts, 1 / 6, atol=0.02)
    steps = np.nonzero(xs[:20] < 6)[0]
    np.testing.assert_allclose(np.bincount(steps, minlength=20) / steps.size, 1 / 20, atol=0.01)


def test_induction_heads_rule_and_chance():
    """The trigger appears exactly twice, once at a uniform step before T - 2 and at the end; the label, at the end
    only, is the token after the first trigger, uniform over the classes."""
    task = tasks.get("induction_heads", length=16, classes=5)
    batch = task.sample(KEY, 4000)
    xs, targets, mask = map(np.asarray, batch[:3])
    assert task.input_size == 6 and task.output_size == 5 and task.chance_accuracy == 1 / 5
    assert ((xs == 5).sum(axis=0) == 2).all() and (xs[-1] == 5).all()
    first = np.argmax(xs == 5, axis=0)
    assert first.max() <= 13
    np.testing.assert_array_equal(targets[-1], xs[first + 1, np.arange(4000)])
    assert mask[-1].all() and not mask[:-1].any()
    np.testing.assert_allclose(np.bincount(targets[-1], minlength=5) / 4000, 1 / 5, atol=0.025)
    np.testing.assert_allclose(np.bincount(first, minlength=14) / 4000, 1 / 14, atol=0.02)


def test_mqar_rule_and_chance():
    """Distinct keys from the first half of the vocabulary, values from the second; each key queried once after the
    pairs, labelled with its value; chance 2/vocabulary."""
    task = tasks.get("mqar", length=30, pairs=6, vocabulary=20)
    batch = task.sample(KEY, 1000)
    xs, targets, mask = map(np.asarray, batch[:3])
    assert task.input_size == 21 and task.chance_accuracy == 0.1 and task.chance_loss == pytest.approx(np.log(10))
    assert (mask.sum(axis=0) == 6).all() and not mask[:12].any()
    for b in range(100):
        keys, values = xs[0:12:2, b], xs[1:12:2, b]
        assert len(set(keys)) == 6 and (keys < 10).all() and (values >= 10).all() and (values < 20).all()
        pairs = dict(zip(keys.tolist(), values.tolist(), strict=True))
        queries = np.nonzero(mask[:, b])[0]
        assert sorted(xs[queries, b].tolist()) == sorted(keys.tolist())
        assert all(targets[q, b] == pairs[xs[q, b]] for q in queries)
        assert (xs[12:, b][~mask[12:, b]] == 20).all()  # padding elsewhere
    np.testing.assert_allclose(np.bincount(targets[mask] - 10, minlength=10) / mask.sum(), 0.1, atol=0.015)


@pytest.mark.parametrize("name, modulus", [("parity", 2), ("modular_addition", 5)])
def test_state_tracking_labels_are_running_sums(name, modulus):
    task = tasks.get(name, length=12, **({"modulus": modulus} if name == "modular_addition" else {}))
    batch = task.sample(KEY, 3000)
    xs, targets, mask = map(np.asarray, batch[:3])
    assert task.chance_accuracy == 1 / modulus and mask.all()
    np.testing.assert_array_equal(targets, np.cumsum(xs, axis=0) % modulus)
    np.testing.assert_allclose(np.bincount(xs.ravel(), minlength=modulus) / xs.size, 1 / modulus, atol=0.01)
    # the label at the last step is uniform: no shortcut below chance
    np.testing.assert_allclose(np.bincount(targets[-1], minlength=modulus) / 3000, 1 / modulus, atol=0.03)
