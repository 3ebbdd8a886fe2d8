"""A synthetic review: 5 sentiment tokens among 95 stop words, label = majority sentiment.

    python -m experiments.main --config=configs/review.py --workdir=runs/review
    python -m experiments.main --config=configs/review.py --workdir=runs/review_sweep --sweep

Expected (measured on 2 CPU cores, seed 0): the LSTM reaches test accuracy 0.994 (chance 0.5)
in 1500 steps, 31 s.
"""

from experiments.engine import base_config


def get_config():
    config = base_config()
    config.model.cell = "lstm"
    config.model.hidden_size = 64
    config.task.name = "review"
    config.task.length = 100
    config.task.sentiment = 5
    config.optimizer.learning_rate = 3e-3
    config.train.steps = 1500
    config.train.batch_size = 32
    return config


def sweep():
    return [{"model.cell": cell, "seed": seed} for cell in ("lstm", "gru", "rnn") for seed in range(2)]
