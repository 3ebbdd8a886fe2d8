"""Study 7 (seed 000; Pascanu, Mikolov & Bengio 2013): training in the exploding regime with and without
optax.clip_by_global_norm, over thresholds and seeds (the one-unit RNN's cliff is study 10, cliff.py).

    python -m experiments.main --config=configs/studies/clipping.py --workdir=runs/studies/clipping

Sizes: append ``:tiny`` or ``:paper`` to the config path.
Expected (the paper, section 4): unclipped runs diverge (NaN/Inf); clipped runs survive.
Measured: see docs/studies/clipping/report.md.
"""

from configs import base

SIZES = {
    "tiny": {
        "hidden_size": 4,
        "length": 6,
        "seeds": 1,
        "thresholds": (float("inf"), 1.0),
        "train_steps": 2,
        "batch_size": 4,
    },
    "default": {},
    "paper": {"hidden_size": 100, "length": 150, "seeds": 16, "train_steps": 10000, "batch_size": 64},
}


def get_config(size="default"):
    return base.sized(
        dict(
            study="clipping",
            hidden_size=32,
            length=50,
            seeds=8,
            thresholds=(float("inf"), 100.0, 10.0, 1.0, 0.1),  # inf: no clipping
            train_steps=1000,
            batch_size=32,
            learning_rate=0.01,
        ),
        SIZES,
        size,
    )
