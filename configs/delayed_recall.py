"""Delayed recall (seed 002's sequence element classification): label at t = input class at t - 40.

    python -m experiments.main --config=configs/delayed_recall.py --workdir=runs/delayed_recall
    python -m experiments.main --config=configs/delayed_recall.py --workdir=runs/delayed_recall_sweep --sweep

Expected (measured on 2 CPU cores, seed 0): the LSTM reaches test accuracy 0.31
(chance 0.125, loss 1.73 against 2.08) in 1500 steps, 27 s.
"""

from experiments.engine import base_config


def get_config():
    config = base_config()
    config.model.cell = "lstm"
    config.model.hidden_size = 64
    config.task.name = "delayed_recall"
    config.task.length = 80
    config.task.delay = 40
    config.task.classes = 8
    config.optimizer.learning_rate = 3e-3
    config.train.steps = 1500
    config.train.batch_size = 32
    return config


def sweep():
    return [{"model.cell": cell, "seed": seed} for cell in ("lstm", "gru", "rnn") for seed in range(2)]
