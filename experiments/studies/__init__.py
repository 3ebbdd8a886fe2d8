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

from experiments.engine import _atomic_write
from experiments.studies.base import Report, check_fields

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


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Runs a study into ``workdir`` (report.md, results.json, PNGs). A workdir that already holds
    the results of the same config is not run again."""
    module = validate(config)
    workdir = pathlib.Path(workdir)
    done = workdir / "results.json"
    if done.exists():
        previous = json.loads(done.read_text())
        if previous.get("config") == json.loads(config.to_json()):
            return previous
    workdir.mkdir(parents=True, exist_ok=True)
    _atomic_write(workdir / "config.json", config.to_json(indent=2))
    report = Report(workdir, module.TITLE)
    start = time.perf_counter()
    module.run(config, report)
    return report.write(config, time.perf_counter() - start)
