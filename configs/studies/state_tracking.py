"""Study 14 (Merrill, Petty & Sabharwal 2024; Grazzi et al. 2025, section 5): state tracking. Parity and addition
mod m, labelled at every step with the running sum so far, trained at T = 32 and tested at 2x, 4x and 8x, for
nonlinear recurrences (the tanh RNN and the LSTM as plain layers, the sLSTM in its block) and linear ones (the
minGRU with an MLP, the selective SSM in Mamba's block with N = 4, the LRU, the mLSTM in its block), the minGRU and
the SSM each with eigenvalues in [0, 1] and in [-1, 1] (the option, ``a -> 2a - 1``). One block of width 32 each.

    python -m experiments.main --config=configs/studies/state_tracking.py --workdir=runs/studies/state_tracking

Sizes: append ``:tiny`` or ``:paper`` to the config path. 8 seeds; a seed solves a task when its accuracy over every
step is at least 0.95; a claim holds when its 95% Wilson interval says so.
Expected (Published): Grazzi et al. 2025, Table 2 (parity, trained at lengths 3 to 40, tested to 256): Mamba with
eigenvalues in [0, 1] fails, with [-1, 1] it solves parity (accuracy 1.0); sLSTM and the LSTM solve it; mLSTM fails.
Addition mod 3 needs rotations (complex eigenvalues or non-diagonal products): a diagonal [-1, 1] recurrence cannot
track it either (their Theorem 2).
Measured (default size, 1285 s on 2 CPU cores, AMD EPYC, 2026-12-03; docs/studies/state_tracking/), seeds of 8
that solve parity at T = 32 (then at 8x): tanh RNN, LSTM, sLSTM 8 (8); minGRU and SSM with eigenvalues in [-1, 1]
8 (7); minGRU and SSM with [0, 1], LRU, mLSTM 0 (median accuracy 0.60 to 0.72). Addition mod 3: LSTM 8, tanh RNN 6,
sLSTM 2, every linear cell 0 (the [-1, 1] ones at 0.59 to 0.61). A first run with the SSM at N = 16 took 1430 s and
gave the same counts.
"""

from configs import base

SIZES = {
    "tiny": {
        "models": ("rnn", "mingru_negative"),
        "tasks": ("parity",),
        "seeds": 2,
        "width": 4,
        "steps": 2,
        "batch_size": 4,
        "warmup_steps": 1,
        "eval_batch_size": 8,
        "length": 4,
        "test_factors": (2,),
    },
    "default": {},
    # Grazzi et al.'s budget (lengths to 40, 2-layer models of width 128, 100k steps): not run; about a day on 2 cores.
    "paper": {
        "width": 128,
        "num_layers": 2,
        "steps": 20000,
        "batch_size": 128,
        "length": 40,
        "test_factors": (2, 4, 8),
    },
}


def get_config(size="default"):
    return base.sized(
        dict(
            study="state_tracking",
            models=("rnn", "lstm", "slstm", "mingru", "mingru_negative", "mamba", "mamba_negative", "lru", "mlstm"),
            tasks=("parity", "modular_addition"),
            modulus=3,
            width=32,
            ssm_state_size=4,
            **base.modern_training(num_layers=1, steps=1000, batch_size=32),
            length=32,
            test_factors=(2, 4, 8),
            success_accuracy=0.95,
        ),
        SIZES,
        size,
    )
