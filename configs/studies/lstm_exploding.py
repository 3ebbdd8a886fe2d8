"""Study 5 (Khapra 15.3): the LSTM's output-gate path explodes when W_o is scaled up; clipping in training.

    python -m experiments.main --config=configs/studies/lstm_exploding.py --workdir=runs/studies/lstm_exploding

Sizes: append ``:tiny`` or ``:paper`` to the config path (:func:`configs.base.lag_study`).
Expected: the path stays below (||K|| ||W_o||)^lag; with W_o x 32 the gradient grows with the lag; SGD at a step
size the plain LSTM trains with diverges from W_o x 32 unless the gradient is clipped.
The setting was found by a search over the learning rate (8 seeds, 1000 steps, adding T = 30, H = 64, momentum
0.9): unclipped divergence from W_o x 1 / W_o x 32 was 0/8 / 4/8 at lr 0.1, 0/8 / 8/8 at 0.15, 3/8 / 8/8 at 0.2,
7/8 / 8/8 at 0.3; clipped at 1, 0/8 diverged everywhere. At 0.02 (the earlier setting) nothing diverged.
Measured: see docs/studies/lstm_exploding/report.md.
At ``:paper`` (H = 128, 5000 steps; 1028 s, docs/studies/lstm_exploding/paper/) the path and bound claims hold and
W_o x 32 diverges on 8/8 unclipped and 0/8 clipped, but so does W_o x 1 unclipped (8/8): lr 0.15, found at H = 64,
is too large a step for the wider LSTM, so at that size the claim that the explosion is W_o's does not hold. A
search over the rate at H = 128, as above, would find the paper size's setting (not run: about 17 minutes a rate).
"""

from configs import base


def get_config(size="default"):
    return base.lag_study(
        "lstm_exploding",
        size,
        tiny={"w_o_scales": (1.0, 32.0), "path_examples": 1, "train_length": 6, "train_batch_size": 4},
        w_o_scales=(1.0, 4.0, 8.0, 16.0, 32.0),
        path_examples=4,
        report_lag=75,
        train_w_o_scales=(1.0, 32.0),  # the control, then the exploding initialisation
        train_length=30,
        train_steps=1000,
        train_batch_size=32,
        learning_rate=0.15,
        clip_threshold=1.0,
    )
