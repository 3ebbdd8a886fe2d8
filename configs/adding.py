"""The adding problem at T = 100 (Hochreiter & Schmidhuber 1997; the "halves" variant of Le et al. 2015).

    python -m experiments.main --config=configs/adding.py --workdir=runs/adding
    python -m experiments.main --config=configs/adding.py --workdir=runs/adding_rnn --config.model.cell=rnn
    python -m experiments.main --config=configs/adding.py --workdir=runs/adding_sweep --sweep

Published (Hochreiter & Schmidhuber 1997, experiment 4): the LSTM solves T = 100, stopping after 74,000 training
sequences on average (its criterion: mean training error below 0.01, and the last 2,000 sequences each within an
absolute error of 0.04). Their target, 1/2 + (X_1 + X_2)/4 with X in [-1, 1], is half the scale of this one, x_1 +
x_2 with x in [0, 1], so their 0.04 is 0.08 here. A run here sees 2,000 x 64 = 128,000 sequences.
Expected: the LSTM's test MSE falls far below the chance level 1/6 = 0.167; the tanh RNN stays near it. The sweep
runs both cells over 4 seeds (each cell one compiled program). Measured on 2 CPU cores (Intel Xeon, 2026-11-28, with
the warm-up and cosine decay): the single LSTM run trains in about 50 s to a final test MSE of 0.0005939 at step
2000, also its best; the sweep takes about 4 minutes, LSTM final test MSE 0.00044 to 0.0010 (seed 0 the same bits as
the single run), tanh RNN 0.036 to 0.168. The LSTM's RMS test error, 0.021 to 0.032, is under the paper's per-
sequence tolerance (0.08 on this scale) on 4/4 seeds (95% Wilson interval 0.51-1): T = 100 is solved, as published.
"""

from configs import base


def get_config():
    return base.task_config(dict(length=100, name="adding", variant="halves"), steps=2000, batch_size=64)


def sweep():
    return [{"model.cell": cell, "seed": seed} for cell in ("lstm", "rnn") for seed in range(4)]
