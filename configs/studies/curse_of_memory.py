"""Study 9 (Zucchet & Orvieto 2024): the curse of memory of h_t = lambda h_{t-1} + x_t, and its remedies.

    python -m experiments.main --config=configs/studies/curse_of_memory.py --workdir=runs/studies/curse_of_memory

Sizes: append ``:tiny`` or ``:paper`` to the config path.
Expected: Var(h) = 1/(1 - lambda^2) and Var(dh/dlambda) = (1 + lambda^2)/(1 - lambda^2)^3 inside the Monte Carlo
intervals; the LRU's normalisation keeps Var(h) at 1 and its sensitivity to nu bounded; input gating (minGRU,
RG-LRU) shrinks Var(h) and slows the sensitivity's growth to the memory's own.
Measured (default size, 4 s on 2 CPU cores, Intel Xeon, 2026-11-28): every law inside its intervals (simultaneous
99% over the 7 values of lambda, 4096 sequences each). From lambda 0.5 to 0.995 (memory x100) the plain
sensitivity grows x6.8e5 (to 2.0e6); the gated one's x43 (to 51), following 2/((1 + lambda)^2 (1 - lambda^2));
the LRU's stays at 0.50 [0.47, 0.54].
"""

from configs import base

SIZES = {
    "tiny": {"lambdas": (0.5, 0.9), "length": 200, "batch_size": 256},
    "default": {},
    "paper": {
        "lambdas": (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999),
        "length": 20000,
        "batch_size": 16384,
    },
}


def get_config(size="default"):
    return base.sized(
        dict(
            study="curse_of_memory",
            lambdas=(0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995),
            length=4000,
            batch_size=4096,
            seed=1,
            confidence=0.99,
        ),
        SIZES,
        size,
    )
