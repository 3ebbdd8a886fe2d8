"""The vanishing/exploding-gradient studies of the lecture notes, one module each.

Each study module has ``TITLE`` and three steps: ``compute(config, workdir) -> results`` (every number the figures
and claims need), then, from the stored results alone, ``plot(results, config,
report)`` (figures and tables) and ``claims(results, config, report)`` (headline
numbers and the claims of the notes, each held or not). :func:`run` stores the
results in ``computed.json`` before drawing anything, so :func:`redraw` can
redraw a study's figures and report without computing again. Configs live in ``configs/studies/`` and carry
``study = "<module name>"``; ``python -m experiments.main`` runs them like any
config, and ``python -m experiments.report`` gathers their sections.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import time

import ml_collections

from .. import BUNDLED_CONFIGS
from .. import config as config_lib
from .. import workdir as workdir_lib
from .base import Report, check_fields, format_value, plain

__all__ = ["NAMES", "format_value", "get", "redraw", "run", "validate"]

NAMES = (
    "scalar_chain",
    "deep_mlp",
    "rnn_lag",
    "lstm_lag",
    "lstm_exploding",
    "gru_lag",
    "clipping",
    "long_lags",
    "curse_of_memory",
    "cliff",
    "latch",
    "selectivity",
    "recall",
    "state_tracking",
)


def get(name: str):
    """The study module called ``name``."""
    if name not in NAMES:
        raise ValueError(f"config.study: expected one of {NAMES}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def validate(config: ml_collections.ConfigDict):
    """Checks a study config's keys and types; returns the study module."""
    if "study" not in config:
        raise ValueError("config.study: missing; expected the name of a study")
    module = get(config.study)
    check_fields(config, fields(config.study), config.study)
    return module


def fields(name: str) -> dict[str, type]:
    """Study ``name``'s config keys and their types, read from its config (``configs/studies/NAME.py``)."""
    kinds = {bool: bool, int: int, float: float, str: str, tuple: tuple, list: tuple}
    path = BUNDLED_CONFIGS / "studies" / f"{name}.py"
    default = config_lib.load_config_module(path).get_config()
    return {k: kinds[type(v)] for k, v in default.items() if k != "study"}


COMPUTED = "computed.json"


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike, overwrite: bool = False) -> dict:
    """Runs a study into ``workdir``: ``computed.json`` (the results), then the PNGs, ``report.md`` and, last,
    ``results.json`` (headline numbers, claims, wall time). The workdir is bound to the config and locked
    (:class:`experiments.workdir.Workdir`): one that holds the results of the same config is not computed again (a
    run stopped after computing only draws), one that holds another config's is refused unless ``overwrite``."""
    module = validate(config)
    workdir = pathlib.Path(workdir)
    bound = workdir_lib.binding(json.loads(config.to_json()))
    with workdir_lib.Workdir(workdir, bound, overwrite):
        if (workdir / "results.json").exists():
            return json.loads((workdir / "results.json").read_text())
        if not (workdir / COMPUTED).exists():
            start = time.perf_counter()
            results = module.compute(config, workdir)
            stored = {
                "study": config.study,
                "config": bound["config"],
                "wall_seconds": time.perf_counter() - start,
                "results": results,
            }
            workdir_lib.write(workdir / COMPUTED, workdir_lib.to_json(workdir_lib.spelled(plain(stored)), None))
        return _draw(workdir)


def redraw(workdir: str | os.PathLike) -> dict:
    """Draws a finished or computed study's figures, report and claims again from its stored ``computed.json``,
    without computing anything (e.g. after the plotting code changed)."""
    workdir = pathlib.Path(workdir)
    stored = json.loads((workdir / COMPUTED).read_text())
    bound = workdir_lib.binding(stored["config"])
    with workdir_lib.Workdir(workdir, bound):
        return _draw(workdir)


def _draw(workdir: pathlib.Path) -> dict:
    stored = workdir_lib.unspelled(json.loads((workdir / COMPUTED).read_text()))
    config = ml_collections.ConfigDict(stored["config"])
    module = get(stored["study"])
    report = Report(workdir, module.TITLE)
    module.plot(stored["results"], config, report)
    module.claims(stored["results"], config, report)
    return report.write(config, stored["wall_seconds"])
