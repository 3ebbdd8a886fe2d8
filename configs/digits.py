"""Sequential digits: scikit-learn's 8x8 digits read pixel by pixel, T = 64 (pip install scikit-learn).

    python -m experiments.main --config=configs/digits.py --workdir=runs/digits
    python -m experiments.main --config=configs/digits.py --workdir=runs/digits_sweep --sweep

No published number exists for this dataset read as a sequence; its nearest published relative is pixel-by-pixel
MNIST (T = 784; Le et al. 2015 report LSTM 65% and IRNN 97% test accuracy), 12 times longer than T = 64 here.
Measured (2 CPU cores, Intel Xeon, 2026-11-28, with the warm-up and cosine decay; the sweep, 4 seeds per cell, 166 s):
final test accuracy on the held-out images (chance 0.1) after 1500 steps, LSTM 0.941 to 0.969, GRU 0.920 to 0.955,
tanh RNN 0.912 to 0.961. At T = 64 every cell learns the task on every seed (accuracy above 0.9 on 12/12 runs). The
single run (seed 0, 24 s): LSTM 0.949, its best test loss, 0.197, at step 750 (final 0.216).
"""

import ml_collections
from ml_collections import config_dict


def get_config():
    unset = config_dict.placeholder
    return ml_collections.ConfigDict(
        dict(
            seed=0,
            model=dict(
                cell="lstm",
                hidden_size=64,
                num_layers=1,
                bidirectional=False,
                residual=False,
                impl="auto",
                # The cell's options; unset (None) keeps the cell's default. Setting one the cell lacks is refused.
                options=dict(
                    recurrent_init=unset(str),
                    recurrent_scale=unset(float),
                    activation=unset(str),
                    forget_bias=unset(float),
                    peepholes=unset(bool),
                    coupled=unset(bool),
                    forget_gate=unset(bool),
                    chrono_init=unset(int),
                    update=unset(str),
                    reset=unset(str),
                    log_space=unset(bool),
                    r_min=unset(float),
                    r_max=unset(float),
                    max_phase=unset(float),
                    c=unset(float),
                    a_min=unset(float),
                    a_max=unset(float),
                    state_size=unset(int),
                    dt_min=unset(float),
                    dt_max=unset(float),
                    exponential_forget=unset(bool),
                    num_heads=unset(int),
                ),
            ),
            task=dict(length=64, name="digits"),
            # Linear warm-up, then a cosine decay to 0 at the last step: the final parameters are not a spike.
            optimizer=dict(
                name="adam",
                learning_rate=0.003,
                momentum=0.9,
                weight_decay=1e-4,
                clip="global_norm",
                clip_threshold=1.0,
                schedule="warmup_cosine",
                warmup_steps=100,
            ),
            train=dict(
                steps=1500, batch_size=64, log_every=50, eval_every=250, eval_batch_size=512, checkpoint_every=500
            ),
        )
    )


def sweep():
    return [{"model.cell": cell, "seed": seed} for cell in ("lstm", "gru", "rnn") for seed in range(4)]
