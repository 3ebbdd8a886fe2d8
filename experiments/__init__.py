"""Runnable code: entry points, sweeps, plots and reports. The math lives in ``gated``."""

import pathlib

# The configs that come with gated: configs/ in a checkout, gated/configs/ where gated is installed (the folder
# beside this one either way).
BUNDLED_CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
