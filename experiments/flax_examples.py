"""Worked examples: a sequence classifier built with gated's LSTM, in Flax linen and in Flax NNX.

The task: sequences of varying length whose label is the sign of the first
input's first feature, so the classifier must carry it to each sequence's
last valid step (chance accuracy 0.5). Both models read the LSTM's final carry
(the last valid step, thanks to ``lengths``) into a dense layer and train with
optax Adam behind ``clip_by_global_norm``.

    python -m experiments.flax_examples            # both, a few seconds each
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from flax import nnx

import gated
import gated.flax
import gated.nnx


def make_batch(key, batch_size: int = 32, max_length: int = 12, features: int = 4):
    """``xs`` (B, T, D), batch-major as Flax's ``nn.RNN`` takes it, ``lengths`` (B,), ``labels`` (B,): the sign of
    ``xs[b, 0, 0]``."""
    k_x, k_len = jax.random.split(key)
    xs = jax.random.normal(k_x, (batch_size, max_length, features), jnp.float32)
    lengths = jax.random.randint(k_len, (batch_size,), 2, max_length + 1)
    return xs, lengths, (xs[:, 0, 0] > 0).astype(jnp.int32)


def optimizer(learning_rate: float = 1e-2) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class LinenClassifier(nn.Module):
    """gated LSTM over the sequence, dense readout of the last valid hidden state."""

    hidden_size: int = 32
    classes: int = 2

    @nn.compact
    def __call__(self, xs, lengths):
        carry, _ = gated.flax.RNN(gated.cells.LSTM(self.hidden_size), return_carry=True)(xs, lengths=lengths)
        return nn.Dense(self.classes)(carry.h)


def train_linen(steps: int = 100, hidden_size: int = 32, seed: int = 0) -> list[float]:
    """Trains :class:`LinenClassifier`; returns the loss at every step."""
    model, tx = LinenClassifier(hidden_size), optimizer()
    key = jax.random.key(seed)
    params = model.init(key, *make_batch(key)[:2])["params"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, key):
        xs, lengths, labels = make_batch(key)
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(model.apply({"params": p}, xs, lengths), labels))(
            params
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for k in jax.random.split(jax.random.fold_in(key, 1), steps):
        params, opt_state, loss = step(params, opt_state, k)
        losses.append(float(loss))
    return losses


class NNXClassifier(nnx.Module):
    """The same model in Flax NNX."""

    def __init__(self, features: int, hidden_size: int, classes: int, *, rngs: nnx.Rngs):
        self.rnn = gated.nnx.RNN(gated.cells.LSTM(hidden_size), features, return_carry=True, rngs=rngs)
        self.readout = nnx.Linear(hidden_size, classes, rngs=rngs)

    def __call__(self, xs, lengths):
        carry, _ = self.rnn(xs, lengths=lengths)
        return self.readout(carry.h)


def train_nnx(steps: int = 100, hidden_size: int = 32, seed: int = 0) -> list[float]:
    """Trains :class:`NNXClassifier`; returns the loss at every step."""
    model = NNXClassifier(4, hidden_size, 2, rngs=nnx.Rngs(seed))
    opt = nnx.Optimizer(model, optimizer(), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, key):
        xs, lengths, labels = make_batch(key)
        loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(xs, lengths), labels))(model)
        opt.update(model, grads)
        return loss

    return [float(step(model, opt, k)) for k in jax.random.split(jax.random.key(seed + 1), steps)]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; the one flag is --steps")
    for name, train in (("linen", train_linen), ("nnx", train_nnx)):
        losses = train(flags.FLAGS.steps)
        print(f"{name:5s}: loss {losses[0]:.3f} at step 1 -> {sum(losses[-10:]) / 10:.3f} (mean of the last 10 steps)")


def run():
    """The command line (its flag defined here, so importing this module for its functions defines none)."""
    flags.DEFINE_integer("steps", 200, "Training steps of each example.", lower_bound=1)
    app.run(main)


if __name__ == "__main__":
    run()
