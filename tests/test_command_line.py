"""The command line as a batch job sees it: overrides, one-line errors with exit code 2, log lines, no noise."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import fast_compile_env

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ["--config.train.steps=4", "--config.task.length=10", "--config.model.hidden_size=4",
        "--config.train.log_every=2", "--config.train.eval_batch_size=8", "--config.train.eval_every=2",
        "--config.optimizer.warmup_steps=2"]  # fmt: skip


def _run(*args, module="experiments.main", env=None):
    env = fast_compile_env() if env is None else env  # stderr below is a pipe, not a terminal: a batch job
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)  # fmt: skip


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.model.hidden_size=-3", "config.model.hidden_size: expected a positive int, got -3"),
        ("--config.optimizer.learning_rate=inf", "config.optimizer.learning_rate: expected a finite number > 0"),
        ("--config.optimizer.momentum=-0.9", "config.optimizer.momentum: expected a number in [0, 1)"),
        ("--config.model.hiden_size=3", "unknown key or bad value: 'hiden_size' Did you mean \"hidden_size\""),
        ("--config.train.steps=abc", "train.steps"),
        ("--config.model.options.activation=relu", "lstm cell: unknown option(s) ['activation']"),
    ],
)
def test_a_bad_config_is_one_line_and_exit_code_2(tmp_path, flag, message):
    out = _run("--config=configs/adding.py", f"--workdir={tmp_path / 'w'}", flag)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ") and message in out.stderr, out.stderr
    assert not (tmp_path / "w").exists()


def _read_only(path):
    """Makes the folder ``path`` unwritable, also for root (who ignores permission bits): the immutable attribute."""
    path.chmod(0o555)
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root where chattr +i is refused: no way to make a folder read-only")


@pytest.mark.parametrize("fault", ["workdir is a file", "under a file", "read-only", "no config file",
                                   "damaged config.json"])  # fmt: skip
def test_a_file_system_fault_is_one_line_naming_the_path_and_exit_code_2(tmp_path, fault):
    """The defects: tracebacks of 22 to 36 lines and exit code 1."""
    workdir, config = tmp_path / "w", "configs/adding.py"
    if fault == "workdir is a file":
        workdir.write_text("")
        message = f"workdir '{workdir}' is a file, not a folder"
    elif fault == "under a file":
        (tmp_path / "file").write_text("")
        workdir = tmp_path / "file" / "w"
        message = f"workdir '{workdir}': cannot write '{workdir}': Not a directory"
    elif fault == "read-only":
        workdir.mkdir()
        _read_only(workdir)
        message = f"workdir '{workdir}': cannot write '{workdir}/.lock'"
    elif fault == "no config file":
        config = "configs/nope.py"
        message = "--config: no config file at 'configs/nope.py'"
    else:
        workdir.mkdir()
        (workdir / "config.json").write_text('{"hash": ')
        message = "its config.json is damaged (not the JSON object gated writes); choose a new workdir, or pass --over"
    try:
        out = _run(f"--config={config}", f"--workdir={workdir}", *TINY)
    finally:
        if fault == "read-only":
            subprocess.run(["chattr", "-i", str(workdir)], capture_output=True)
            workdir.chmod(0o755)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ") and message in out.stderr, out.stderr


@pytest.mark.slow
def test_the_grus_update_option_from_the_command_line(tmp_path):
    """The defect: --config.model.options.update=write failed with a 3 KB YAML dump (ConfigDict.update)."""
    out = _run("--config=configs/adding.py", f"--workdir={tmp_path / 'w'}", *TINY, "--config.model.cell=gru",
               "--config.model.options.update=write", "--config.train.steps=2")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "w" / "config.json").read_text())["config"]["model"]["options"]["update"] == "write"
    bad = _run("--config=configs/adding.py", f"--workdir={tmp_path / 'v'}", "--config.model.cell=gru",
               "--config.model.options.update=sideways")  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "config.model: update: expected 'keep' or 'write', got 'sideways'" in bad.stderr


@pytest.mark.slow
def test_a_run_from_the_command_line_logs_overrides_and_refuses_another_config(tmp_path):
    workdir = tmp_path / "w"
    base = ["--config=configs/adding.py", f"--workdir={workdir}", *TINY]
    out = _run(*base, "--config.model.options.forget_bias=2.0")
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((workdir / "result.json").read_text())["config"]["model"]["options"]["forget_bias"] == 2.0
    assert "run: finished; final test loss" in out.stdout
    log = [line for line in out.stderr.splitlines() if "[run] step " in line]
    assert len(log) == 2 and "loss" in log[0] and "grad norm" in log[0] and "steps/s" in log[0]  # absl lines
    assert "libtpu" not in out.stderr and "backend" not in out.stderr and "font" not in out.stderr.lower()
    again = _run(*base, "--config.model.options.forget_bias=3.0")
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "model.options.forget_bias: 2.0 -> 3.0" in again.stderr and "--overwrite" in again.stderr
    assert _run(*base, "--config.model.options.forget_bias=3.0", "--overwrite").returncode == 0


def test_configs_import_only_ml_collections():
    code = (
        "import importlib.util, pathlib, sys\n"
        "for p in sorted(pathlib.Path('configs').rglob('[!_]*.py')):\n"
        "    spec = importlib.util.spec_from_file_location(p.stem, p)\n"
        "    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m.get_config()\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('jax', 'experiments', 'gated', 'flax', 'numpy'))\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.slow
def test_a_run_gives_the_same_bits_alone_and_inside_its_sweep(tmp_path):
    """As a user runs it (float32, JAX's default settings): the sweep's lstm seed-0 run equals the single run."""
    import numpy as np

    assert _run("--config=configs/adding.py", f"--workdir={tmp_path / 'alone'}", *TINY, env=os.environ).returncode == 0
    assert _run("--config=configs/adding.py", f"--workdir={tmp_path / 'sweep'}", *TINY, "--sweep",
                env=os.environ).returncode == 0  # fmt: skip
    alone = np.load(tmp_path / "alone" / "final.npz")
    inside = np.load(tmp_path / "sweep" / "runs" / "cell-lstm_seed-0" / "final.npz")
    assert alone.files == inside.files
    for k in alone.files:
        np.testing.assert_array_equal(alone[k], inside[k], err_msg=k)
