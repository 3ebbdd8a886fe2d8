"""The language models of ``configs/language_model.py`` computed in bfloat16 (parameters and optimiser in float32,
the mixers' recurrences in float32: ``model.dtype``), seed 0 of each architecture, to put beside the float32 sweep:

    python -m experiments.main --config=configs/language_model_bfloat16.py --workdir=runs/lm_bf16 --sweep
    python -m experiments.lm_report --workdir=runs/lm --compare=runs/lm_bf16 --out=docs/language_model
"""

from configs import language_model


def get_config(name: str = "hawk"):
    config = language_model.get_config(name)
    config.model.dtype = "bfloat16"
    return config


def sweep():
    return [{**language_model.model_keys(name), "seed": 0} for name in language_model.ARCHITECTURES]
