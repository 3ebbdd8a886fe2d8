"""Runs an experiment config to a finished workdir.

    python -m experiments.main --config=configs/adding.py --workdir=runs/adding
    python -m experiments.main --config=configs/adding.py --workdir=runs/adding_rnn --config.model.cell=rnn
    python -m experiments.main --config=configs/adding.py --workdir=runs/adding_sweep --sweep

Any field can be overridden (``--config.model.hidden_size=128``, ``--config.model.options.forget_bias=2.0``);
unknown keys, wrong types and impossible values are refused before anything compiles, in one line, with exit
code 2. ``--sweep`` runs the grid of the config's ``sweep()``. A stopped run or sweep started again with the same
command resumes where it stopped; the same workdir with another config is refused unless ``--overwrite``.

A study config (``configs/studies/``, with a ``study`` key) runs its study:

    python -m experiments.main --config=configs/studies/rnn_lag.py --workdir=runs/studies/rnn_lag
    python -m experiments.main --config=configs/studies/rnn_lag.py:paper --workdir=runs/studies/rnn_lag_paper

Several processes (``jax.distributed``; e.g. one per SLURM task, or by hand) share one run or sweep: pass
``--coordinator=HOST:PORT --num_processes=N --process_id=I`` (or nothing under SLURM, where JAX finds them). The
runs of a sweep, or a single run's batch, are sharded over every process's devices; process 0 writes the workdir.
"""

import difflib
import logging as std_logging
import os
import sys

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from . import BUNDLED_CONFIGS, make_configs_importable

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the results.")
_SWEEP = flags.DEFINE_bool("sweep", False, "Run the config's sweep() grid instead of a single run.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete what the workdir holds and start afresh.")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "HOST:PORT of process 0, for a multi-process run.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() with what the cluster (e.g. SLURM) tells it."
)
flags.mark_flags_as_required(["config", "workdir"])

# Loggers whose INFO lines are noise in a run's log (JAX's search for a TPU, matplotlib's font cache).
QUIET_LOGGERS = ("jax._src.xla_bridge", "jax._src.distributed", "matplotlib", "matplotlib.font_manager")


def fail(message: str) -> None:
    """A usage or config error: one line on stderr, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS, config_flag=_CONFIG) -> list[str]:
    """absl's flag parsing (into ``flag_values``, whose config is ``config_flag``), with a flag or config override
    error as one line and exit code 2."""
    argv, shadowed = split_shadowed([find_config(a) if a.startswith("--config=") else a for a in argv])
    sys.argv = argv  # config_flags reads its overrides from sys.argv
    make_configs_importable()  # config_flags loads the config file while it parses
    try:
        rest = flag_values(argv)
        if any(path.startswith("model.options.") for path, _ in shadowed):
            from . import config as config_lib  # imports gated (and jax): only when an option is set

            config_lib.fill_options(config_flag.value)
        for path, text in shadowed:
            set_override(config_flag.value, path, text)
        return rest
    except flags.Error as err:
        fail(" ".join(str(err).split()))
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # raised by config_flags for an override
        while err.args and isinstance(err.args[0], Exception):  # ConfigDict wraps its KeyError in an AttributeError
            err = err.args[0]
        text = err.args[0] if err.args and isinstance(err.args[0], str) else str(err)  # not a KeyError's repr
        fail(f"a --config override: unknown key or bad value: {' '.join(text.split())}")


def find_config(arg: str) -> str:
    """``--config=FILE[:size]`` as given where FILE exists, else one of the configs that come with gated
    (``--config=configs/adding.py`` or ``--config=adding`` after a plain install); one line and exit code 2 where
    neither is found."""
    path, colon, size = arg.removeprefix("--config=").partition(":")  # a study config may name a size: FILE:paper
    if os.path.isfile(path):
        return arg
    bundled = BUNDLED_CONFIGS / path.removeprefix("configs/")
    bundled = bundled if bundled.suffix == ".py" else bundled.with_suffix(".py")
    if bundled.is_file():
        return f"--config={bundled}{colon}{size}"
    fail(
        f"--config: no config file at {path!r}, nor among gated's configs ({BUNDLED_CONFIGS}); give the path of "
        "one, e.g. --config=configs/adding.py"
    )


def split_shadowed(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Takes out of ``argv`` the ``--config.KEY=VALUE`` overrides that are set by :func:`set_override` once the
    config is parsed: the cell options (``model.options.KEY``; a config file gives only the options it sets, the
    others are added from the cells' fields first), and any key that is also the name of a ConfigDict method (the
    GRU's ``update``), which config_flags would read as the method. Returns the other arguments and ``(KEY,
    VALUE)`` pairs."""
    kept, shadowed = [], []
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        path = name.removeprefix("--config.")
        deferred = path.startswith("model.options.") or hasattr(ml_collections.ConfigDict, path.split(".")[-1])
        if name.startswith("--config.") and deferred:
            shadowed.append((path, value if eq else next(args, "")))
        else:
            kept.append(arg)
    return kept, shadowed


def set_override(config: ml_collections.ConfigDict, path: str, text: str) -> None:
    """Sets the config key ``path`` from the command-line ``text``, parsed as the key's type (str, int, float or
    bool)."""
    *parents, leaf = path.split(".")
    node = config
    for p in parents:
        node = node[p]
    if leaf not in node:
        close = difflib.get_close_matches(leaf, list(node.keys()), n=1)
        raise KeyError(f"{path}: no such key in the config" + (f"; did you mean {close[0]!r}?" if close else ""))
    parse = {int: flags.IntegerParser(), float: flags.FloatParser(), bool: flags.BooleanParser()}.get(
        node.get_type(leaf)
    )
    node[leaf] = parse.parse(text) if parse is not None else text


def main(argv):
    del argv
    for name in QUIET_LOGGERS:
        std_logging.getLogger(name).setLevel(std_logging.WARNING)
    from . import config as config_lib
    from . import engine, studies, workdir  # after the flags, so --help and flag errors are fast

    if _COORDINATOR.value or _DISTRIBUTED.value:
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    config = _CONFIG.value
    try:
        if "study" in config:
            if _SWEEP.value:
                raise config_lib.ConfigError("--sweep: a study config runs its own grid; drop --sweep")
            result = studies.run(config, _WORKDIR.value, overwrite=_OVERWRITE.value)
            print(f"{result['title']}: {result['wall_seconds']:.0f} s")
            for k, v in result["headline"].items():
                print(f"  {k}: {studies.format_value(v)}")
            for c in result["claims"]:
                print(f"  [{'held' if c['held'] else 'DID NOT HOLD'}] {c['claim']} ({c['evidence']})")
            print(f"report in {_WORKDIR.value}/report.md")
            return
        sweep = None
        if _SWEEP.value:
            sweep = _load_sweep(config_flags.get_config_filename(flags.FLAGS["config"]))
        results = engine.train_and_evaluate(config, _WORKDIR.value, sweep, overwrite=_OVERWRITE.value)
    except (config_lib.ConfigError, workdir.WorkdirError) as err:
        fail(str(err))
    except OSError as err:  # a workdir that stops being writable while the run writes it
        fail(f"workdir {_WORKDIR.value!r}: {workdir.describe(err)}")
    for name, r in results.items():
        print(f"{name or 'run'}: {summary(r)}")
    print(f"results in {_WORKDIR.value}")


def summary(result: dict) -> str:
    """One line: status, final and best test loss with their steps, chance loss."""
    status = result["status"] + (f" at step {result['diverged_at']}" if result["diverged_at"] is not None else "")
    final, best = result["final"], result["best"]["loss"]
    number = lambda v: "-" if v is None else f"{v:.4g}"
    text = f"{status}; final test loss {number(final['loss'])} (step {final['step']})"
    text += f"; best {number(best['value'])} (step {best['step']})"
    if "accuracy" in final:
        text += f"; final test accuracy {number(final['accuracy'])}"
    return text + f"; chance loss {result['chance_loss']:.4g}"


def _load_sweep(path: str) -> list[dict]:
    from . import config as config_lib

    module = config_lib.load_config_module(path)
    if not hasattr(module, "sweep"):
        raise config_lib.ConfigError(f"--sweep: {path} defines no sweep()")
    return list(module.sweep())


def run():
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
