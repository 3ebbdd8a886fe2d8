"""Study 4 (Khapra 15.3): the LSTM's ||dL/dh_k|| and ||dL/dc_k|| vs lag with the forget bias swept, and the
cell-state path against the product of forget gates.

    python -m experiments.main --config=configs/studies/lstm_lag.py --workdir=runs/studies/lstm_lag

Sizes: append ``:tiny`` or ``:paper`` to the config path (:func:`configs.base.lag_study`).
Expected: the path equals prod f; the gradient along the cell state survives as the forget bias grows.
Measured (default size, 8 seeds, 137 s on 2 CPU cores, 2026-11-28; docs/studies/lstm_lag/report.md): the path
equals autodiff within 6e-7; prod f at lag 75 goes from 9.0e-15 (forget bias 0) to 0.57 (bias 5), in the order
of the bias on 8/8 seeds; ||dL/dh|| left at lag 75 is 9.8e-5 at init (bias 1) and 6.7e-3 after 1000 Adam steps.
"""

from configs import base


def get_config(size="default"):
    return base.lag_study(
        "lstm_lag",
        size,
        tiny={"forget_biases": (0.0, 1.0), "train_batch_size": 4},
        forget_biases=(-2.0, 0.0, 1.0, 2.0, 3.0, 5.0),
        report_lag=75,
        train_steps=1000,
        train_batch_size=64,
        learning_rate=3e-3,
    )
