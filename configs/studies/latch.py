"""Study 11 (Bengio, Simard & Frasconi 1994): the latch. One tanh unit must hold one bit through Gaussian noise; its
success rate against T over seeds, with 95% Wilson intervals, and the recurrent weight it learns.

    python -m experiments.main --config=configs/studies/latch.py --workdir=runs/studies/latch

Sizes: append ``:tiny`` or ``:paper`` to the config path.
Expected (the paper, section IV and Fig. 3): the probability that gradient descent learns the latch falls as T
grows, because a robust latch (w > 1, two stable fixed points) contracts, and the gradient reaching the first
inputs vanishes with T.
Measured: see docs/studies/latch/report.md.
"""

from configs import base

SIZES = {
    "tiny": {"lengths": (4, 6), "seeds": 2, "steps": 3, "batch_size": 4, "test_size": 8},
    "default": {},
    "paper": {"lengths": (5, 10, 20, 50, 100, 200, 500, 1000), "seeds": 64, "steps": 3000},
}


def get_config(size="default"):
    return base.sized(
        dict(
            study="latch",
            lengths=(5, 10, 15, 20, 30, 50, 100, 200),
            seeds=16,
            prefix=3,  # the L trained inputs that carry the bit
            noise=0.2,
            steps=1000,
            batch_size=32,
            learning_rate=0.01,
            w_init=(0.5, 1.0),
            test_size=512,
            success_accuracy=0.95,
        ),
        SIZES,
        size,
    )
