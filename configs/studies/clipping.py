"""Study 7 (seed 000; Pascanu, Mikolov & Bengio 2013): training in the exploding regime with and without
optax.clip_by_global_norm, over thresholds and seeds; and the one-unit RNN's cliff.

    python -m experiments.main --config=configs/studies/clipping.py --workdir=runs/studies/clipping

Sizes: append ``:tiny`` or ``:paper`` to the config path.
Expected: unclipped runs diverge (NaN/Inf); clipped runs survive; on the cliff an unclipped step is thrown far.
Measured (default size, 25 s on 2 CPU cores): 4/4 unclipped runs diverged at step 1, 0/16 clipped runs
diverged; clip 1 reached median test MSE 0.041 (chance 0.167). On the cliff the largest unclipped step was 1.56,
clipped 0.05.
"""

import ml_collections

SIZES = {
    "tiny": {
        "hidden_size": 4,
        "length": 6,
        "seeds": 1,
        "thresholds": (float("inf"), 1.0),
        "train_steps": 2,
        "batch_size": 4,
        "cliff_grid": 8,
        "cliff_descent_steps": 3,
    },
    "default": {},
    "paper": {"hidden_size": 100, "length": 150, "seeds": 16, "train_steps": 10000, "batch_size": 64},
}


def get_config(size="default"):
    config = ml_collections.ConfigDict(
        dict(
            study="clipping",
            hidden_size=32,
            length=50,
            seeds=4,
            thresholds=(float("inf"), 100.0, 10.0, 1.0, 0.1),  # inf: no clipping
            train_steps=1000,
            batch_size=32,
            learning_rate=0.01,
            cliff_steps=50,
            cliff_target=0.7,
            cliff_w=(0.0, 12.0),
            cliff_b=(-8.0, 2.0),
            cliff_grid=161,
            cliff_start=(7.0, -2.0),
            cliff_lr=0.05,
            cliff_threshold=1.0,
            cliff_descent_steps=40,
        )
    )
    if size not in SIZES:
        raise ValueError(f"size: expected one of {sorted(SIZES)}, got {size!r}")
    config.update(SIZES[size])
    return config
