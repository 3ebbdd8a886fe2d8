"""Study 5 (Khapra 15.3): the LSTM's output-gate path explodes when W_o is scaled up; clipping in training.

    python -m experiments.main --config=configs/studies/lstm_exploding.py --workdir=runs/studies/lstm_exploding

Sizes: append ``:tiny`` or ``:paper`` to the config path.
Expected: the path stays below (||K|| ||W_o||)^lag; with W_o x 32 the gradient grows with the lag.
Measured (default size, 71 s on 2 CPU cores): with W_o x 32 ||dL/dh|| at lag 75 is 4.0e5 times its value at
lag 0 (3.5e-4 with W_o x 1), always below the bound. Training from W_o x 32 with SGD did not diverge with or
without clipping; the median test MSE was 0.080 unclipped and 0.265 clipped at 1 (the claim that clipping is
needed here did not hold).
"""

import ml_collections

SIZES = {
    "tiny": {
        "hidden_size": 4,
        "length": 6,
        "batch_size": 2,
        "seeds": 1,
        "w_o_scales": (1.0, 32.0),
        "path_examples": 1,
        "train_length": 6,
        "train_steps": 2,
        "train_batch_size": 4,
    },
    "default": {},
    "paper": {"hidden_size": 128, "length": 200, "batch_size": 128, "seeds": 8, "train_steps": 5000},
}


def get_config(size="default"):
    config = ml_collections.ConfigDict(
        dict(
            study="lstm_exploding",
            hidden_size=64,
            length=100,
            batch_size=32,
            seeds=4,
            w_o_scales=(1.0, 4.0, 8.0, 16.0, 32.0),
            path_examples=4,
            report_lag=75,
            train_w_o_scale=32.0,
            train_length=30,
            train_steps=1000,
            train_batch_size=32,
            learning_rate=0.02,
            clip_threshold=1.0,
        )
    )
    if size not in SIZES:
        raise ValueError(f"size: expected one of {sorted(SIZES)}, got {size!r}")
    config.update(SIZES[size])
    return config
