"""Synthetic long-lag tasks, as pure JAX functions of ``(key, batch_size)``.

Every task is a frozen dataclass: ``batch = task.sample(key, batch_size)`` gives
``Batch(xs (T, B, D), targets, mask (T, B), lengths (B,))``. Because ``sample`` is a pure JAX
function it runs inside the jitted training step, and a run's data is fixed
by its seed and step number alone (so a resumed run sees the same batches).

``task.readout`` says where the model reads out: "per_step" (targets
``(T, B)`` for classification, loss averaged over the labelled steps where
``mask`` is true) or "last" (targets ``(B,)`` or ``(B, 1)``, read at each
sequence's last valid step, ``lengths - 1``). ``split`` is "train" or "test"; the synthetic tasks draw
fresh random data for both, the digits task keeps a held-out test set. ``task.chance_loss`` and
``task.chance_accuracy`` are what a model that ignores the inputs achieves.

Notation: T time, B batch, D input size, C classes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import pathlib
import sysconfig
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class Batch(NamedTuple):
    """Inputs ``xs`` (T, B, D), ``targets`` (see the task), ``mask`` (T, B) of labelled steps,
    ``lengths`` (B,) valid steps of each sequence."""

    xs: Array
    targets: Array
    mask: Array
    lengths: Array


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"task.{name}: expected an int >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """Base class: subclasses set ``name`` (and ``kind``, ``readout``, ``tokens`` where not the defaults), the input
    and output sizes, and implement ``sample``. A classification task's chance is by default that of a uniform guess
    over its ``output_size`` classes; a task whose labels are not uniform says its own."""

    length: int = 100

    name: ClassVar[str]
    kind: ClassVar[str] = "classification"  # or "regression"
    readout: ClassVar[str] = "per_step"  # or "last"
    tokens: ClassVar[bool] = False  # inputs are integer tokens (T, B) in [0, input_size), not features (T, B, D)

    def __post_init__(self):
        _positive_int("length", self.length, 2)

    @property
    def input_size(self) -> int:
        raise NotImplementedError

    @property
    def output_size(self) -> int:
        raise NotImplementedError

    @property
    def chance_loss(self) -> float:
        """The cross-entropy of a uniform guess over the classes (a regression task says its own)."""
        if self.kind != "classification":
            raise NotImplementedError(f"{type(self).__name__}: a regression task gives its own chance_loss")
        return math.log(self.output_size)

    @property
    def chance_accuracy(self) -> float | None:
        """The accuracy of a uniform guess (None for a regression task)."""
        return 1 / self.output_size if self.kind == "classification" else None

    def sample(self, key: Array, batch_size: int, split: str = "train") -> Batch:
        raise NotImplementedError


def _full(xs: Array, targets: Array, mask: Array | None = None) -> Batch:
    """A batch of full-length sequences (every step valid; every step labelled unless ``mask``)."""
    length, batch_size = xs.shape[:2]
    mask = jnp.ones((length, batch_size), bool) if mask is None else mask
    return Batch(xs, targets, mask, jnp.full((batch_size,), length, jnp.int32))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Adding(Task):
    """The adding problem: output the sum of the two marked values.

    Inputs are (value, marker) pairs. ``variant="halves"`` (Le et al. 2015 and
    most later work): values U[0, 1], one marker uniformly in each half of the
    sequence, target the sum; predicting 1 gives MSE 1/6. ``variant="hochreiter"``
    (Hochreiter & Schmidhuber 1997, experiment 4): values U[-1, 1], the first
    marker within the first 10 steps, the second in the first half, markers
    -1 at the first and last step where unmarked, target 0.5 + (X1 + X2) / 4;
    predicting 0.5 gives MSE 1/24. Regression at the last step.
    """

    variant: str = "halves"

    name: ClassVar[str] = "adding"
    kind: ClassVar[str] = "regression"
    readout: ClassVar[str] = "last"

    def __post_init__(self):
        super().__post_init__()
        if self.variant not in ("halves", "hochreiter"):
            raise ValueError(f"task.variant: expected 'halves' or 'hochreiter', got {self.variant!r}")
        if self.variant == "hochreiter" and self.length < 20:
            raise ValueError(f"task.length: the 'hochreiter' variant needs length >= 20, got {self.length}")

    input_size = property(lambda self: 2)
    output_size = property(lambda self: 1)

    @property
    def chance_loss(self) -> float:
        return 1 / 6 if self.variant == "halves" else 1 / 24

    def sample(self, key: Array, batch_size: int, split: str = "train") -> Batch:
        t, half = self.length, self.length // 2
        k_v, k_1, k_2 = jax.random.split(key, 3)
        if self.variant == "halves":
            values = jax.random.uniform(k_v, (t, batch_size), jnp.float32)
            first = jax.random.randint(k_1, (batch_size,), 0, half)
            second = jax.random.randint(k_2, (batch_size,), half, t)
        else:
            values = jax.random.uniform(k_v, (t, batch_size), jnp.float32, minval=-1.0, maxval=1.0)
            first = jax.random.randint(k_1, (batch_size,), 0, 10)
            # the second marker: a different step in the first half
            second = (first + jax.random.randint(k_2, (batch_size,), 1, half)) % half
        steps = jnp.arange(t)[:, None]
        marked = (steps == first[None, :]) | (steps == second[None, :])
        markers = marked.astype(jnp.float32)
        if self.variant == "hochreiter":
            ends = (steps == 0) | (steps == t - 1)
            markers = jnp.where(ends & ~marked, jnp.float32(-1.0), markers)
        total = jnp.sum(jnp.where(marked, values, jnp.float32(0.0)), axis=0)
        target = total if self.variant == "halves" else 0.5 + total / 4.0
        xs = jnp.stack([values, markers], axis=-1)
        return _full(xs, target[:, None])


@dataclasses.dataclass(frozen=True, kw_only=True)
class DelayedRecall(Task):
    """Sequence element classification (seed 002's setting): the label at step t
    is the class of the one-hot input at step t - delay; the first ``delay``
    steps are unlabelled. Chance: accuracy 1/C, cross-entropy log C."""

    delay: int = 10
    classes: int = 8

    name: ClassVar[str] = "delayed_recall"

    def __post_init__(self):
        super().__post_init__()
        _positive_int("classes", self.classes, 2)
        if isinstance(self.delay, bool) or not isinstance(self.delay, int) or not 0 <= self.delay < self.length:
            raise ValueError(f"task.delay: expected an int in [0, length) = [0, {self.length}), got {self.delay!r}")

    input_size = property(lambda self: self.classes)
    output_size = property(lambda self: self.classes)

    def sample(self, key: Array, batch_size: int, split: str = "train") -> Batch:
        seen = jax.random.randint(key, (self.length, batch_size), 0, self.classes)
        labels = jnp.roll(seen, self.delay, axis=0)
        mask = jnp.broadcast_to((jnp.arange(self.length) >= self.delay)[:, None], (self.length, batch_size))
        return _full(jax.nn.one_hot(seen, self.classes, dtype=jnp.float32), labels, mask)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TemporalOrder(Task):
    """Temporal order (Hochreiter & Schmidhuber 1997, experiments 6a and 6b).

    Symbols {a, b, c, d} are distractors, B and E start and end the sequence;
    ``relevant`` = 2 (6a) or 3 (6b) symbols from {X, Y} appear at random steps
    in windows at 10-20%, 50-60% (and 30-40% for 6b) of the sequence. The class
    is their order (XX, XY, YX, YY; 8 classes for 6b), read at the last step.
    Chance: accuracy 1/2^relevant, cross-entropy relevant * log 2.
    """

    relevant: int = 2

    name: ClassVar[str] = "temporal_order"
    readout: ClassVar[str] = "last"
    SYMBOLS: ClassVar[tuple[str, ...]] = ("a", "b", "c", "d", "X", "Y", "B", "E")

    def __post_init__(self):
        super().__post_init__()
        if self.relevant not in (2, 3):
            raise ValueError(f"task.relevant: expected 2 (experiment 6a) or 3 (6b), got {self.relevant!r}")
        _positive_int("length", self.length, 20)

    input_size = property(lambda self: len(self.SYMBOLS))
    output_size = property(lambda self: 2**self.relevant)
    chance_loss = property(lambda self: self.relevant * math.log(2))

    def windows(self) -> list[tuple[int, int]]:
        """Step windows [lo, hi) of the relevant symbols, in order."""
        starts = (0.1, 0.5) if self.relevant == 2 else (0.1, 0.3, 0.5)
        return [(int(s * self.length), max(int((s + 0.1) * self.length), int(s * self.length) + 1)) for s in starts]

    def sample(self, key: Array, batch_size: int, split: str = "train") -> Batch:
        k_d, k_pos, k_sym = jax.random.split(key, 3)
        symbols = jax.random.randint(k_d, (self.length, batch_size), 0, 4)
        symbols = symbols.at[0].set(6).at[-1].set(7)
        which = jax.random.randint(k_sym, (self.relevant, batch_size), 0, 2)  # 0: X, 1: Y
        label = jnp.zeros((batch_size,), jnp.int32)
        pos_keys = jax.random.split(k_pos, self.relevant)
        steps = jnp.arange(self.length)[:, None]
        for r, ((lo, hi), k) in enumerate(zip(self.windows(), pos_keys, strict=True)):
            pos = jax.random.randint(k, (batch_size,), lo, hi)
            symbols = jnp.where(steps == pos[None, :], 4 + which[r][None, :], symbols)
            label = label * 2 + which[r]
        return _full(jax.nn.one_hot(symbols, 8, dtype=jnp.float32), label)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CopyMemory(Task):
    """Copy memory (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

    ``sequence`` symbols from ``classes`` data classes, then ``length`` blank
    steps with a delimiter on the last one, then ``sequence`` blanks during
    which the model must output the symbols. Total T = length + 2 * sequence;
    blank is class ``classes``, delimiter is input ``classes + 1``. Labels at
    every step (blank except the last ``sequence`` steps). Chance (the
    memoryless baseline that outputs blank, then uniform guesses):
    cross-entropy sequence * log(classes) / T.
    """

    length: int = 50
    sequence: int = 10
    classes: int = 8

    name: ClassVar[str] = "copy_memory"

    def __post_init__(self):
        super().__post_init__()
        _positive_int("sequence", self.sequence)
        _positive_int("classes", self.classes, 2)

    @property
    def total_length(self) -> int:
        return self.length + 2 * self.sequence

    input_size = property(lambda self: self.classes + 2)
    output_size = property(lambda self: self.classes + 1)
    chance_loss = property(lambda self: self.sequence * math.log(self.classes) / self.total_length)

    @property
    def chance_accuracy(self) -> float:
        k, t = self.sequence, self.total_length
        return (t - k + k / self.classes) / t

    def sample(self, key: Array, batch_size: int, split: str = "train") -> Batch:
        k, blank = self.sequence, self.classes
        data = jax.random.randint(key, (k, batch_size), 0, self.classes)
        blanks = jnp.full((self.length, batch_size), blank)
        inputs = jnp.concatenate([data, blanks, jnp.full((k, batch_size), blank)])
        inputs = inputs.at[k + self.length - 1].set(blank + 1)  # the delimiter
        labels = jnp.concatenate([jnp.full((k + self.length, batch_size), blank), data])
        xs = jax.nn.one_hot(inputs, self.classes + 2, dtype=jnp.float32)
        return _full(xs, labels)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Review(Task):
    """A synthetic "review" after the lecture's sentiment example.

    A review is mostly stop words (``vocabulary`` of them) with ``sentiment``
    (odd) sentiment-bearing tokens at random steps, each from ``words`` positive
    or ``words`` negative ones; the label is the majority sentiment, read at
    the last step. The model must keep a running tally across long stretches
    of irrelevant tokens: selective reading and forgetting. Chance: accuracy
    1/2, cross-entropy log 2.
    """

    sentiment: int = 3
    words: int = 4
    vocabulary: int = 16

    name: ClassVar[str] = "review"
    readout: ClassVar[str] = "last"

    def __post_init__(self):
        super().__post_init__()
        _positive_int("sentiment", self.sentiment)
        if self.sentiment % 2 == 0 or self.sentiment > self.length:
            raise ValueError(f"task.sentiment: expected an odd count <= length, got {self.sentiment}")
        _positive_int("words", self.words)
        _positive_int("vocabulary", self.vocabulary)

    input_size = property(lambda self: self.vocabulary + 2 * self.words)
    output_size = property(lambda self: 2)

    def sample(self, key: Array, batch_size: int, split: str = "train") -> Batch:
        k_stop, k_pos, k_sign, k_word = jax.random.split(key, 4)
        tokens = jax.random.randint(k_stop, (self.length, batch_size), 0, self.vocabulary)
        # distinct random steps for the sentiment tokens: the first `sentiment` of a random permutation
        order = jnp.argsort(jax.random.uniform(k_pos, (self.length, batch_size)), axis=0)
        is_sentiment = jnp.argsort(order, axis=0) < self.sentiment
        positive = jax.random.bernoulli(k_sign, 0.5, (self.length, batch_size))
        word = jax.random.randint(k_word, (self.length, batch_size), 0, self.words)
        sentiment_token = self.vocabulary + jnp.where(positive, word, self.words + word)
        tokens = jnp.where(is_sentiment, sentiment_token, tokens)
        score = jnp.sum(jnp.where(is_sentiment, jnp.where(positive, 1, -1), 0), axis=0)
        label = (score > 0).astype(jnp.int32)
        xs = jax.nn.one_hot(tokens, self.input_size, dtype=jnp.float32)
        return _full(xs, label)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "task 'digits' reads scikit-learn's bundled 8x8 digits: pip install scikit-learn "
            "(or the project's 'data' extra)"
        ) from None
    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target.astype(np.int32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Digits(Task):
    """Sequential digits: scikit-learn's bundled 8x8 handwritten digits (1797 images,
    no download) read one pixel per step, T = 64, input the pixel intensity in [0, 1].

    The last ``test_size`` images (in a fixed shuffled order) are the test split,
    the rest the training split. Classification of the digit at the last step;
    chance: accuracy 1/10, cross-entropy log 10.
    """

    length: int = 64
    test_size: int = 360

    name: ClassVar[str] = "digits"
    readout: ClassVar[str] = "last"

    def __post_init__(self):
        super().__post_init__()
        if self.length != 64:
            raise ValueError(f"task.length: the digits task reads 8x8 images pixel by pixel, T = 64; got {self.length}")
        _positive_int("test_size", self.test_size)
        if self.test_size >= 1797:
            raise ValueError(f"task.test_size: expected fewer than the 1797 images, got {self.test_size}")

    input_size = property(lambda self: 1)
    output_size = property(lambda self: 10)

    def sample(self, key: Array, batch_size: int, split: str = "train") -> Batch:
        images, labels = _digits()
        order = np.random.default_rng(0).permutation(len(labels))
        chosen = order[-self.test_size :] if split == "test" else order[: -self.test_size]
        index = jax.random.choice(key, jnp.asarray(chosen), (batch_size,))
        pixels = jnp.asarray(images)[index]  # (B, 64)
        return _full(pixels.T[:, :, None], jnp.asarray(labels)[index])


def stdlib_corpus() -> pathlib.Path:
    """The default text: the Python standard library's top-level source files (``Lib/*.py``), on every machine that
    runs Python."""
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


@functools.lru_cache(maxsize=4)
def read_corpus(path: str, validation_percent: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(train bytes, validation bytes, description)`` of a UTF-8 text file or folder.

    A folder: its ``*.py`` files directly inside it when ``path`` is the default (""), else every file under it
    (recursively), read in sorted order of their relative paths. A file goes to validation when the first 8 hex
    digits of the SHA-256 of its relative path, modulo 100, are below ``validation_percent``: a split by file,
    fixed, the same on every machine. One file is split by position: its last ``validation_percent`` percent.
    The description holds the byte counts, the file counts and the SHA-256 of the whole corpus (the language-model
    report records it: another machine's standard library may differ by a patch release).
    """
    root = stdlib_corpus() if path == "" else pathlib.Path(path).expanduser()
    if not root.exists():
        raise ValueError(f"task.path: expected a UTF-8 text file or folder, got {path!r}, which does not exist")
    if root.is_file():
        files = [root]
    else:
        files = sorted(root.glob("*.py")) if path == "" else sorted(f for f in root.rglob("*") if f.is_file())
    if not files:
        raise ValueError(f"task.path: expected a folder holding text files, got {path!r}, which holds none")
    train, valid, digest = [], [], hashlib.sha256()
    for f in files:
        data = f.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"task.path: expected UTF-8 text, got {f} ({err})") from None
        name = f.name if root.is_file() else f.relative_to(root).as_posix()
        digest.update(name.encode() + b"\0" + data)
        if root.is_file():
            cut = len(data) - len(data) * validation_percent // 100
            train.append(data[:cut])
            valid.append(data[cut:])
        elif int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 100 < validation_percent:
            valid.append(data)
        else:
            train.append(data)
    as_array = lambda parts: np.frombuffer(b"".join(parts), np.uint8).copy()
    train_bytes, valid_bytes = as_array(train), as_array(valid)
    description = {
        "path": str(root),
        "files": len(files),
        "train_bytes": int(train_bytes.size),
        "validation_bytes": int(valid_bytes.size),
        "sha256": digest.hexdigest(),
    }
    return train_bytes, valid_bytes, description


@dataclasses.dataclass(frozen=True, kw_only=True)
class Text(Task):
    """Byte-level language modelling of real text: predict each next byte (a vocabulary of 256).

    ``path`` is a UTF-8 text file or a folder of them; the default ("") is the Python standard library's top-level
    source files, which every machine that runs this code has, so nothing is downloaded (Python 3.11.7: 168 files,
    4,698,388 bytes; see :func:`read_corpus` for the split by file). A batch is ``batch_size`` windows of
    ``length + 1`` bytes at uniformly random offsets of the split, inputs the first ``length`` bytes (integer
    tokens ``(T, B)``), targets the next ones. Classification at every step; the test split is the validation
    files. Chance (uniform bytes): cross-entropy log 256, 8 bits per byte; the metric ``bits_per_byte`` is the
    cross-entropy over log 2.
    """

    length: int = 128
    path: str = ""
    validation_percent: int = 10

    name: ClassVar[str] = "text"
    tokens: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.path, str):
            raise ValueError(
                f"task.path: expected a str (a file or folder; '': the standard library), got {self.path!r}"
            )
        _positive_int("validation_percent", self.validation_percent)
        if self.validation_percent >= 100:
            raise ValueError(f"task.validation_percent: expected an int in [1, 100), got {self.validation_percent}")
        train, valid, _ = self.corpus()
        for split, data in (("train", train), ("validation", valid)):
            if data.size <= self.length + 1:
                raise ValueError(
                    f"task.length: expected fewer steps than the {split} split's {data.size} bytes "
                    f"minus 1 (task.path {self.path!r}), got {self.length}"
                )

    def corpus(self) -> tuple[np.ndarray, np.ndarray, dict]:
        return read_corpus(self.path, self.validation_percent)

    @property
    def description(self) -> dict:
        return self.corpus()[2]

    input_size = property(lambda self: 256)
    output_size = property(lambda self: 256)

    def sample(self, key: Array, batch_size: int, split: str = "train") -> Batch:
        train, valid, _ = self.corpus()
        data = valid if split == "test" else train
        starts = jax.random.randint(key, (batch_size,), 0, data.size - self.length)
        window = jnp.take(jnp.asarray(data), starts[None, :] + jnp.arange(self.length + 1)[:, None]).astype(jnp.int32)
        return _full(window[:-1], window[1:])


def _tokens(tokens: Array, targets: Array, mask: Array | None = None) -> Batch:
    """A batch of full-length integer-token sequences ``(T, B)`` (the model embeds them)."""
    return _full(tokens.astype(jnp.int32), targets.astype(jnp.int32), mask)


def _distinct_positions(key: Array, count: int, low: int, high: int, batch_size: int) -> Array:
    """``count`` distinct steps in ``[low, high)`` per sequence, increasing: ``(count, B)``."""
    scores = jax.random.uniform(key, (high - low, batch_size))
    chosen = jnp.argsort(scores, axis=0)[:count]
    return low + jnp.sort(chosen, axis=0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SelectiveCopying(Task):
    """Selective copying (Gu & Dao 2023, section 4.1.1, Figure 2): ``count`` data tokens from ``classes`` kinds lie at
    random steps of a stretch of ``length`` noise tokens; ``count`` cue tokens follow, during which the model must
    output the data tokens in order. Where they lie differs from sequence to sequence, so a recurrence must choose
    what to keep from what it reads (selectivity); a time-invariant one sees only fixed lags. Total T = length +
    count; inputs: data ``0..classes-1``, noise ``classes``, cue ``classes + 1``. Labels at the cue steps only.
    Chance: accuracy 1/classes, cross-entropy log classes.
    """

    length: int = 64
    count: int = 8
    classes: int = 8

    name: ClassVar[str] = "selective_copying"
    tokens: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        _positive_int("count", self.count)
        _positive_int("classes", self.classes, 2)
        if self.count > self.length:
            raise ValueError(f"task.count: expected at most length = {self.length} data tokens, got {self.count}")

    @property
    def total_length(self) -> int:
        return self.length + self.count

    input_size = property(lambda self: self.classes + 2)
    output_size = property(lambda self: self.classes)

    def sample(self, key: Array, batch_size: int, split: str = "train") -> Batch:
        k_data, k_pos = jax.random.split(key)
        data = jax.random.randint(k_data, (self.count, batch_size), 0, self.classes, jnp.int32)
        where = _distinct_positions(k_pos, self.count, 0, self.length, batch_size)
        noise = jnp.full((self.length, batch_size), self.classes, jnp.int32)
        stretch = noise.at[where, jnp.arange(batch_size)[None, :]].set(data)
        tokens = jnp.concatenate([stretch, jnp.full((self.count, batch_size), self.classes + 1)])
        targets = jnp.concatenate([jnp.zeros((self.length, batch_size), data.dtype), data])
        mask = jnp.broadcast_to((jnp.arange(self.total_length) >= self.length)[:, None], tokens.shape)
        return _tokens(tokens, targets, mask)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InductionHeads(Task):
    """Induction heads (Olsson et al. 2022; Gu & Dao 2023, section 4.1.2, Table 2): random tokens from ``classes``
    kinds, with a trigger token (``classes``) once at a random step followed by the answer token, and again at the last
    step, where the model must output the answer (labelled there only). Any ``length`` works, so a model trained at
    one length is tested at others (Gu & Dao: trained at 256, tested to 2^20). Chance: accuracy 1/classes,
    cross-entropy log classes.
    """

    length: int = 64
    classes: int = 16

    name: ClassVar[str] = "induction_heads"
    tokens: ClassVar[bool] = True

    def __post_init__(self):
        _positive_int("length", self.length, 3)  # the trigger, its answer, the trigger again
        _positive_int("classes", self.classes, 2)

    input_size = property(lambda self: self.classes + 1)
    output_size = property(lambda self: self.classes)

    def sample(self, key: Array, batch_size: int, split: str = "train") -> Batch:
        k_tok, k_pos = jax.random.split(key)
        t = self.length
        tokens = jax.random.randint(k_tok, (t, batch_size), 0, self.classes)
        trigger = jax.random.randint(k_pos, (batch_size,), 0, t - 2)  # its answer at trigger + 1 < t - 1
        steps = jnp.arange(t)[:, None]
        tokens = jnp.where((steps == trigger[None, :]) | (steps == t - 1), self.classes, tokens)
        answer = jnp.take_along_axis(tokens, (trigger + 1)[None, :], axis=0)[0]
        targets = jnp.where(steps == t - 1, answer[None, :], 0)
        return _tokens(tokens, targets, jnp.broadcast_to(steps == t - 1, tokens.shape))


@dataclasses.dataclass(frozen=True, kw_only=True)
class MQAR(Task):
    """Multi-query associative recall (Arora et al. 2023, "Zoology", section 3): ``pairs`` key-value pairs
    ``k1 v1 k2 v2 ...`` open the sequence (distinct keys from the first half of the ``vocabulary``, values from the
    second), then every key is queried once, in random order at random later steps among padding tokens
    (``vocabulary``); at a query the model must output the key's value. Labels at the queries only. Chance (the
    values are uniform): accuracy 2/vocabulary, cross-entropy log(vocabulary / 2).
    """

    length: int = 64
    pairs: int = 8
    vocabulary: int = 64

    name: ClassVar[str] = "mqar"
    tokens: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        _positive_int("pairs", self.pairs)
        _positive_int("vocabulary", self.vocabulary, 4)
        if self.vocabulary % 2:
            raise ValueError(f"task.vocabulary: expected an even count (keys, then values), got {self.vocabulary}")
        if self.pairs > self.vocabulary // 2:
            raise ValueError(
                f"task.pairs: expected at most vocabulary / 2 = {self.vocabulary // 2} (distinct keys), "
                f"got {self.pairs}"
            )
        if 3 * self.pairs > self.length:
            raise ValueError(
                f"task.length: expected at least 3 * pairs = {3 * self.pairs} (the pairs, then a query "
                f"per key), got {self.length}"
            )

    input_size = property(lambda self: self.vocabulary + 1)
    output_size = property(lambda self: self.vocabulary)
    chance_loss = property(lambda self: math.log(self.vocabulary // 2))
    chance_accuracy = property(lambda self: 2 / self.vocabulary)

    def sample(self, key: Array, batch_size: int, split: str = "train") -> Batch:
        k_key, k_val, k_order, k_pos = jax.random.split(key, 4)
        half, p, columns = self.vocabulary // 2, self.pairs, jnp.arange(batch_size)[None, :]
        keys = jnp.argsort(jax.random.uniform(k_key, (half, batch_size)), axis=0)[:p].astype(jnp.int32)  # distinct
        values = half + jax.random.randint(k_val, (p, batch_size), 0, half, jnp.int32)
        context = jnp.stack([keys, values], axis=1).reshape(2 * p, batch_size)
        order = jnp.argsort(jax.random.uniform(k_order, (p, batch_size)), axis=0)  # the queries' order
        where = _distinct_positions(k_pos, p, 2 * p, self.length, batch_size)
        rest = jnp.full((self.length - 2 * p, batch_size), self.vocabulary, jnp.int32)
        tokens = jnp.concatenate([context, rest]).at[where, columns].set(keys[order, columns])
        targets = jnp.zeros((self.length, batch_size), jnp.int32).at[where, columns].set(values[order, columns])
        mask = jnp.zeros((self.length, batch_size), bool).at[where, columns].set(True)
        return _tokens(tokens, targets, mask)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModularAddition(Task):
    """State tracking (Merrill et al. 2024; Grazzi et al. 2025, section 5): tokens uniform in ``[0, modulus)``; the
    label at every step is the running sum mod ``modulus`` of the tokens so far (the state of the cyclic group
    Z_m). A linear recurrence with non-negative decays cannot track it at every length (Grazzi et al., Theorem 1).
    Chance: accuracy 1/modulus, cross-entropy log modulus.
    """

    length: int = 64
    modulus: int = 5

    name: ClassVar[str] = "modular_addition"
    tokens: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        _positive_int("modulus", self.modulus, 2)

    input_size = property(lambda self: self.modulus)
    output_size = property(lambda self: self.modulus)

    def sample(self, key: Array, batch_size: int, split: str = "train") -> Batch:
        tokens = jax.random.randint(key, (self.length, batch_size), 0, self.modulus)
        return _tokens(tokens, jnp.cumsum(tokens, axis=0) % self.modulus)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Parity(ModularAddition):
    """Parity: :class:`ModularAddition` mod 2, the label at every step the parity of the bits so far. Chance:
    accuracy 1/2, cross-entropy log 2."""

    modulus: int = 2

    name: ClassVar[str] = "parity"

    def __post_init__(self):
        super().__post_init__()
        if self.modulus != 2:
            raise ValueError(f"task.modulus: parity is the sum mod 2, got {self.modulus} (see 'modular_addition')")


TASKS: dict[str, type[Task]] = {
    t.name: t
    for t in (
        Adding,
        DelayedRecall,
        TemporalOrder,
        CopyMemory,
        Review,
        Digits,
        Text,
        SelectiveCopying,
        InductionHeads,
        MQAR,
        ModularAddition,
        Parity,
    )
}


def get(name: str, **options) -> Task:
    """Makes a task by name; unknown names and options are refused with the valid ones listed."""
    if name not in TASKS:
        raise ValueError(f"task.name: expected one of {tuple(TASKS)}, got {name!r}")
    cls = TASKS[name]
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"task: unknown option(s) {unknown} for task {name!r}; valid options are {valid}")
    return cls(**options)
