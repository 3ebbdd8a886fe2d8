"""Study 13 (Arora et al. 2023, "Zoology", section 3 and Figure 2): recall against state size. Multi-query associative
recall (MQAR): key-value pairs open a sequence, and each key is queried later. Accuracy against the number of pairs,
for recurrent states spanning a decade and more: the minGRU's width (its state per layer), the selective SSM's H x N
(N grown at a fixed width, in Mamba's block) and the mLSTM's heads x d^2 (fewer, larger heads at a fixed width).

    python -m experiments.main --config=configs/studies/recall.py --workdir=runs/studies/recall

Sizes: append ``:tiny`` or ``:paper`` to the config path. 8 seeds; a claim holds when its 95% Wilson interval says
so: here over (model, seed) pairs whose outcome is a comparison of two settings of the same seed.
Expected (Published): Zoology, Figure 2: gated recurrences' MQAR accuracy falls as the pairs grow past what their
state holds, and rises with the state (model width); attention solves MQAR at every size (no attention here).
Measured (default size, 934 s on 2 CPU cores, AMD EPYC, 2026-12-03; docs/studies/recall/), median test accuracy
of 8 seeds at 2 / 8 pairs: minGRU width 8, 24, 80: 0.16 / 0.06, 0.53 / 0.20, 0.54 / 0.25; Mamba (width 16, H = 32)
N = 1, 4, 16: 0.48 / 0.21, 0.49 / 0.21, 0.50 / 0.22; mLSTM (width 16, H = 32) 16, 4, 1 heads: 0.09 / 0.06,
0.81 / 0.52, 0.83 / 0.63. Both claims held (largest state over smallest: 21/24 pairs; 2 pairs over 8: 69/72), but
the SSM's accuracy did not rise with N: the minGRU's and SSM's plateaus (about 1/2 at 2 pairs, 1/4 at 8) are those
of recalling the last pair only, a budget effect; Zoology trains far longer.
"""

from configs import base

SIZES = {
    "tiny": {
        "models": ("mingru",),
        "seeds": 2,
        "widths": (4, 8),
        "state_sizes": (1, 2),
        "width": 4,
        "num_layers": 1,
        "steps": 2,
        "batch_size": 4,
        "warmup_steps": 1,
        "eval_batch_size": 8,
        "length": 9,
        "pairs": (1, 3),
        "vocabulary": 8,
    },
    "default": {},
    # Zoology's setting (T = 512, vocabulary 8192, up to 64 pairs, model widths 64 to 512): not run. Scaling the
    # default's 934 s by steps (25x), batch (4x), length (16x) and width (8x) gives years on 2 cores.
    "paper": {
        "widths": (64, 128, 256, 512),
        "state_sizes": (4, 16, 64),
        "heads": (16, 4, 1),
        "width": 128,
        "steps": 20000,
        "batch_size": 64,
        "length": 512,
        "pairs": (4, 16, 64),
        "vocabulary": 8192,
    },
}


def get_config(size="default"):
    return base.sized(
        dict(
            study="recall",
            models=("mingru", "mamba", "mlstm"),
            widths=(8, 24, 80),
            state_sizes=(1, 4, 16),
            heads=(16, 4, 1),
            width=16,
            **base.modern_training(),
            length=32,
            pairs=(2, 8),
            vocabulary=32,
        ),
        SIZES,
        size,
    )
