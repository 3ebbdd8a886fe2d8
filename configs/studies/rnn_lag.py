"""Study 3 (seeds 000/003): the vanilla RNN's ||dL/dh_k|| vs lag for spectral radius below, at and above 1.

    python -m experiments.main --config=configs/studies/rnn_lag.py --workdir=runs/studies/rnn_lag

Sizes: append ``:tiny`` or ``:paper`` to the config path (:func:`configs.base.lag_study`).
Expected: below the bound everywhere; vanishing when ||W_hh|| max|phi'| < 1; explosion only above it.
Measured (default size, 8 seeds, 38 s on 2 CPU cores, 2026-11-28; docs/studies/rnn_lag/report.md): never above
the bound (128/128 setting-seed pairs); tanh at radius 1 keeps 1.6e-8 of the gradient at lag 75 (2.1e-10 after 1000
Adam steps on the adding problem); radius 0.8 keeps 5.8e-14 (tanh) and 9.9e-18 (ReLU); at radius 2.5 tanh grows
2.7e6-fold; at 1.25 tanh still vanishes (4.3e-4). A gain below 1 vanished on 56/56 setting-seed pairs.
"""

from configs import base


def get_config(size="default"):
    return base.lag_study(
        "rnn_lag",
        size,
        tiny={"radii": (1.0,), "activations": ("tanh",), "train_batch_size": 4},
        radii=(0.8, 1.0, 1.25, 2.5),
        activations=("tanh", "relu", "sigmoid", "identity"),
        report_lag=75,
        train_steps=1000,
        train_batch_size=64,
        learning_rate=1e-3,
    )
