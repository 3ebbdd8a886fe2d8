"""The language models of ``configs/language_model.py`` computed in bfloat16 (parameters and optimiser in float32,
the mixers' recurrences in float32: ``model.dtype``), seed 0 of each architecture, to put beside the float32 sweep:

    python -m experiments.main --config=configs/language_model_bfloat16.py --workdir=runs/lm_bf16 --sweep
    python -m experiments.lm_report --workdir=runs/lm --compare=runs/lm_bf16 --out=docs/language_model

No published number for these sizes. Measured (``--sweep``, 2-core AMD EPYC, 2026-12-02; one seed each, against the
float32 sweep's run of the same seed; its 95% intervals over 3 seeds are +-0.04 to +-0.13): final validation bits per
byte in bfloat16 (float32) mamba 2.206 (2.207), xlstm 2.363 (2.377), mingru 2.393 (2.392), hawk 2.502 (2.506),
lstm 2.656 (2.656): within 0.015 bits per byte of float32 for every architecture, inside the tolerance of 0.02.
"""

from configs import language_model


def get_config(name: str = "hawk"):
    config = language_model.get_config(name)
    config.model.dtype = "bfloat16"
    return config


def sweep():
    return [{**language_model.model_keys(name), "seed": 0} for name in language_model.ARCHITECTURES]
