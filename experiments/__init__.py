"""Runnable code: entry points, sweeps, plots and reports. The math lives in ``gated``."""

import importlib.util
import pathlib
import sys

# The configs that come with gated: configs/ in a checkout, gated/configs/ where gated is installed (the folder
# beside this one either way).
BUNDLED_CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def make_configs_importable() -> None:
    """Config files share :mod:`configs.base` (``from configs import base``). In a checkout ``configs`` is the
    folder beside ``experiments``; where gated is installed (and no ``configs`` package is on the path) the bundled
    folder is made importable under that name, without importing ``gated`` (a config stays light)."""
    if "configs" in sys.modules or importlib.util.find_spec("configs") is not None:
        return
    init = BUNDLED_CONFIGS / "__init__.py"
    spec = importlib.util.spec_from_file_location("configs", init, submodule_search_locations=[str(BUNDLED_CONFIGS)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["configs"] = module
    spec.loader.exec_module(module)
