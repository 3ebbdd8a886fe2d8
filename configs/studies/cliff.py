"""Study 10 (Pascanu, Mikolov & Bengio 2013, Fig. 6): the one-unit recurrent network's cliff over a (w, b) grid, the
band of b where the map has three fixed points, and gradient descent off the cliff, unclipped and clipped.

    python -m experiments.main --config=configs/studies/cliff.py --workdir=runs/studies/cliff

Sizes: append ``:tiny`` or ``:paper`` to the config path.
Expected (the paper, section 3.2 and Fig. 6): the error surface has a wall where the end state switches attractor;
there the gradient explodes, and an unclipped step is thrown far, while a clipped one stays within lr x threshold.
Measured: see docs/studies/cliff/report.md.
"""

from configs import base

SIZES = {
    "tiny": {"grid": 8, "starts": 2, "descent_steps": 3},
    "default": {},
    "paper": {"grid": 401, "starts": 64, "descent_steps": 100},
}


def get_config(size="default"):
    return base.sized(
        dict(
            study="cliff",
            steps=50,  # time steps of the unit
            target=0.7,
            w_range=(0.0, 12.0),
            b_range=(-8.0, 2.0),
            grid=161,
            starts=16,
            start_w=(6.0, 8.0),
            start_b=(-2.5, -1.5),
            learning_rate=0.05,
            threshold=1.0,
            descent_steps=40,
        ),
        SIZES,
        size,
    )
