"""The adding problem at T = 100 (Hochreiter & Schmidhuber 1997; the "halves" variant of Le et al. 2015).

    python -m experiments.main --config=configs/adding.py --workdir=runs/adding
    python -m experiments.main --config=configs/adding.py --workdir=runs/adding_rnn --config.model.cell=rnn
    python -m experiments.main --config=configs/adding.py --workdir=runs/adding_sweep --sweep

Expected: the LSTM's test MSE falls far below the chance level 1/6 = 0.167;
the tanh RNN stays near it. The sweep runs both cells over 4 seeds (each cell
one compiled program). Measured on 2 CPU cores (Intel Xeon, 2026-11-27): the
single LSTM run took about 60 s, test MSE 0.000331, the same to every digit
with and without a C++ compiler on the machine (the default path is pure JAX);
earlier, the sweep took 8 min, LSTM test MSE 0.0003 to 0.0019, tanh RNN 0.156
to 0.174.
"""

from experiments.engine import base_config


def get_config():
    config = base_config()
    config.model.cell = "lstm"
    config.model.hidden_size = 64
    config.task.name = "adding"
    config.task.length = 100
    config.task.variant = "halves"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.clip_threshold = 1.0
    config.train.steps = 2000
    config.train.batch_size = 64
    config.train.log_every = 50
    config.train.checkpoint_every = 500
    return config


def sweep():
    return [{"model.cell": cell, "seed": seed} for cell in ("lstm", "rnn") for seed in range(4)]
