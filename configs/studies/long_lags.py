"""Study 8 (Hochreiter & Schmidhuber 1997): RNN vs LSTM vs GRU success rate vs sequence length on the adding
problem and temporal order; the LSTM variants (no forget gate, CIFG, peepholes, forget bias) on the adding problem.

    python -m experiments.main --config=configs/studies/long_lags.py --workdir=runs/studies/long_lags

Sizes: append ``:tiny`` or ``:paper`` to the config path. Every run is an engine run under
``training/runs/`` (seeds vmapped, resumable).
Expected: the vanilla RNN's success rate falls with T first; the gated cells hold on longer.
Measured (default size, 352 s on 2 CPU cores): adding, success at T = 10/25/50/100: RNN 1/0.33/0/0, LSTM
1/1/1/0.33, GRU 1/1/1/1; temporal order at T = 25/50/100: RNN 1/0.33/0, LSTM 1/0.67/0, GRU 1/1/0 (nothing solves
T = 100 in 800 steps). LSTM variants on adding T = 50: success 1 (plain, CIFG, peepholes, forget bias 0), 0.67
(no forget gate, forget bias 3).
"""

import ml_collections

SIZES = {
    "tiny": {
        "cells": ("rnn", "lstm"),
        "tasks": ("adding",),
        "adding_lengths": (5,),
        "seeds": 1,
        "hidden_size": 4,
        "steps": 2,
        "batch_size": 4,
        "variants": ("cifg",),
        "variant_length": 5,
    },
    "default": {},
    "paper": {
        "adding_lengths": (25, 50, 100, 200, 400),
        "temporal_order_lengths": (25, 50, 100, 200),
        "seeds": 8,
        "hidden_size": 64,
        "steps": 10000,
        "batch_size": 64,
        "variant_length": 200,
    },
}


def get_config(size="default"):
    config = ml_collections.ConfigDict(
        dict(
            study="long_lags",
            cells=("rnn", "lstm", "gru"),
            tasks=("adding", "temporal_order"),
            adding_lengths=(10, 25, 50, 100),
            temporal_order_lengths=(25, 50, 100),
            seeds=3,
            hidden_size=32,
            steps=800,
            batch_size=32,
            learning_rate=3e-3,
            success_mse_fraction=0.1,
            success_accuracy=0.9,
            variants=("lstm", "no_forget_gate", "cifg", "peepholes", "forget_bias_0", "forget_bias_3"),
            variant_task="adding",
            variant_length=50,
        )
    )
    if size not in SIZES:
        raise ValueError(f"size: expected one of {sorted(SIZES)}, got {size!r}")
    config.update(SIZES[size])
    return config
