"""Every config in configs/ validates, its sweep validates, and it runs end to end at a tiny size."""

import pathlib

import pytest

from experiments import config as config_lib
from experiments import engine

# Every experiment config; base.py is what they start from (configs.base), not an experiment of its own.
CONFIGS = sorted(p for p in (pathlib.Path(__file__).parent.parent / "configs").glob("[!_]*.py") if p.stem != "base")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.slow
def test_config_validates_and_runs_tiny(path, tmp_path):
    module = config_lib.load_config_module(path)
    config = module.get_config()
    config_lib.validate(config)
    doc = module.__doc__
    assert f"--config=configs/{path.stem}.py" in doc and "--sweep" in doc, "the commands, single run and sweep"
    assert "Published" in doc or "no published number" in doc.lower(), "the source and its number, or that none exists"
    assert "Measured" in doc and "seeds" in doc, "the measured result over the sweep's seeds"
    assert "EXPECTED" not in doc, "fill in the measured result"
    for entry in module.sweep():
        config_lib.validate(config_lib.override(config, entry))
    tiny = {"train.steps": 2, "train.batch_size": 4, "train.eval_batch_size": 8, "model.hidden_size": 4,
            "train.log_every": 1, "optimizer.warmup_steps": min(config.optimizer.warmup_steps, 2)}  # fmt: skip
    result = engine.train_and_evaluate(config_lib.override(config, tiny), tmp_path)[""]
    assert result["status"] == "finished" and result["steps"] == 2
