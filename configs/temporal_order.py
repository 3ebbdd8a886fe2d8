"""Temporal order, experiment 6a of Hochreiter & Schmidhuber 1997 (--config.task.relevant=3 for 6b), T = 100.

    python -m experiments.main --config=configs/temporal_order.py --workdir=runs/temporal_order
    python -m experiments.main --config=configs/temporal_order.py --workdir=runs/temporal_order_sweep --sweep

Expected (measured on 2 CPU cores, seed 0): within 2000 steps (38 s) the LSTM has NOT
learned 6a at T = 100: test accuracy 0.256, loss 1.387 (chance 0.25, 1.386). Longer
training or a higher learning rate is needed; this budget is a smoke-sized default.
"""

from experiments.engine import base_config


def get_config():
    config = base_config()
    config.model.cell = "lstm"
    config.model.hidden_size = 64
    config.task.name = "temporal_order"
    config.task.length = 100
    config.task.relevant = 2
    config.optimizer.learning_rate = 3e-3
    config.train.steps = 2000
    config.train.batch_size = 32
    return config


def sweep():
    return [{"model.cell": cell, "seed": seed} for cell in ("lstm", "gru", "rnn") for seed in range(2)]
