"""The vanishing/exploding-gradient studies of the lecture notes, one module each.

Each study module has ``TITLE``, ``FIELDS`` (its config keys and their types)
and ``run(config, report)``. Configs live in ``configs/studies/`` and carry
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

from experiments import workdir as workdir_lib
from experiments.studies.base import Report, check_fields, format_value

__all__ = ["NAMES", "format_value", "get", "run", "validate"]

NAMES = ("scalar_chain", "deep_mlp", "rnn_lag", "lstm_lag", "lstm_exploding", "gru_lag", "clipping", "long_lags")


def get(name: str):
    """The study module called ``name``."""
    if name not in NAMES:
        raise ValueError(f"config.study: expected one of {NAMES}, got {name!r}")
    return importlib.import_module(f"experiments.studies.{name}")


def validate(config: ml_collections.ConfigDict):
    """Checks a study config's keys and types; returns the study module."""
    if "study" not in config:
        raise ValueError("config.study: missing; expected the name of a study")
    module = get(config.study)
    check_fields(config, module.FIELDS, config.study)
    return module


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike, overwrite: bool = False) -> dict:
    """Runs a study into ``workdir`` (report.md, results.json, PNGs). The workdir is bound to the config and locked
    (:class:`experiments.workdir.Workdir`): a workdir that holds the results of the same config is not run again,
    one that holds another config's is refused unless ``overwrite``."""
    module = validate(config)
    workdir = pathlib.Path(workdir)
    bound = workdir_lib.binding(json.loads(config.to_json()))
    with workdir_lib.Workdir(workdir, bound, overwrite):
        done = workdir / "results.json"
        if done.exists():
            return json.loads(done.read_text())
        report = Report(workdir, module.TITLE)
        start = time.perf_counter()
        module.run(config, report)
        return report.write(config, time.perf_counter() - start)
