"""Sequential digits: scikit-learn's 8x8 digits read pixel by pixel, T = 64 (pip install scikit-learn).

    python -m experiments.main --config=configs/digits.py --workdir=runs/digits
    python -m experiments.main --config=configs/digits.py --workdir=runs/digits_sweep --sweep

Expected (measured on 2 CPU cores, seed 0): the LSTM reaches test accuracy 0.951 on the
held-out 360 images (chance 0.1) in 1500 steps, 35 s.
"""

from experiments.engine import base_config


def get_config():
    config = base_config()
    config.model.cell = "lstm"
    config.model.hidden_size = 64
    config.task.name = "digits"
    config.task.length = 64
    config.optimizer.learning_rate = 3e-3
    config.train.steps = 1500
    config.train.batch_size = 64
    return config


def sweep():
    return [{"model.cell": cell, "seed": seed} for cell in ("lstm", "gru", "rnn") for seed in range(2)]
