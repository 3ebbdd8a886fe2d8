"""Study 6: the GRU's ||dL/dh_k|| vs lag for both update conventions (and chrono init); the update-gate product.

    python -m experiments.main --config=configs/studies/gru_lag.py --workdir=runs/studies/gru_lag

Sizes: append ``:tiny`` or ``:paper`` to the config path (:func:`configs.base.lag_study`).
Expected: the two conventions coincide at zero bias; the product of keep fractions sets how much survives.
Measured (default size, 8 seeds, 109 s on 2 CPU cores, 2026-11-28; docs/studies/gru_lag/report.md): ||dL/dh||
left at lag 75 is 3.3e-10 (keep) and 1.6e-9 (write) at init ('keep' keeps more on 3/8 seeds: no systematic
difference), 0.32 with chrono init (more than without on 8/8 seeds), 0.14 after 1000 Adam steps on the adding
problem; the product equals autodiff within 4.2e-7.
"""

from configs import base


def get_config(size="default"):
    return base.lag_study(
        "gru_lag",
        size,
        tiny={"updates": ("keep",), "chrono": False},
        updates=("keep", "write"),
        chrono=True,
        report_lag=75,
        train_steps=1000,
        train_batch_size=64,
        learning_rate=3e-3,
    )
