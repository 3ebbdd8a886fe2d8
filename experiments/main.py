"""Runs an experiment config to a finished workdir.

    python -m experiments.main --config=configs/adding.py --workdir=runs/adding
    python -m experiments.main --config=configs/adding.py --workdir=runs/adding_rnn --config.model.cell=rnn
    python -m experiments.main --config=configs/adding.py --workdir=runs/adding_sweep --sweep

Any field can be overridden (``--config.model.hidden_size=128``); unknown keys,
wrong types and impossible values are refused before anything compiles.
``--sweep`` runs the grid of the config's ``sweep()``. A stopped run or
sweep started again with the same command resumes where it stopped.

A study config (``configs/studies/``, with a ``study`` key) runs its study:

    python -m experiments.main --config=configs/studies/rnn_lag.py --workdir=runs/studies/rnn_lag
    python -m experiments.main --config=configs/studies/rnn_lag.py:paper --workdir=runs/studies/rnn_lag_paper
"""

from absl import app, flags
from ml_collections import config_flags

from experiments import engine, studies
from experiments.studies.base import format_value

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the results.")
_SWEEP = flags.DEFINE_bool("sweep", False, "Run the config's sweep() grid instead of a single run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if "study" in _CONFIG.value:
        if _SWEEP.value:
            raise app.UsageError("--sweep: a study config runs its own grid; drop --sweep")
        result = studies.run(_CONFIG.value, _WORKDIR.value)
        print(f"{result['title']}: {result['wall_seconds']:.0f} s")
        for k, v in result["headline"].items():
            print(f"  {k}: {format_value(v)}")
        for c in result["claims"]:
            print(f"  [{'held' if c['held'] else 'DID NOT HOLD'}] {c['claim']} ({c['evidence']})")
        print(f"report in {_WORKDIR.value}/report.md")
        return
    sweep = None
    if _SWEEP.value:
        module = config_flags.get_config_filename(flags.FLAGS["config"])
        sweep = _load_sweep(module)
    results = engine.train_and_evaluate(_CONFIG.value, _WORKDIR.value, sweep)
    for name, r in results.items():
        test = "  ".join(f"{k} {v:.4g}" for k, v in r["test"].items())
        status = r["status"] + (f" at step {r['diverged_at']}" if r["diverged_at"] is not None else "")
        print(f"{name or 'run'}: {status}; test {test}; chance loss {r['chance_loss']:.4g}")
    print(f"results in {_WORKDIR.value}")


def _load_sweep(path: str) -> list[dict]:
    module = engine.load_config_module(path)
    if not hasattr(module, "sweep"):
        raise app.UsageError(f"--sweep: {path} defines no sweep()")
    return list(module.sweep())


def run():
    app.run(main)


if __name__ == "__main__":
    run()
