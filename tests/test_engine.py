"""The experiment engine end to end on tiny configs: files, resume, divergence, sweeps, sharding, refusals."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import engine


def tiny_config(**updates):
    config = engine.base_config()
    config.model.hidden_size = 4
    config.task.name = "delayed_recall"
    config.task.length = 6
    config.task.delay = 2
    config.task.classes = 3
    config.optimizer.learning_rate = 1e-2
    config.train.steps = 12
    config.train.batch_size = 4
    config.train.log_every = 2
    config.train.eval_every = 6
    config.train.eval_batch_size = 8
    config.train.checkpoint_every = 4
    return engine.override(config, updates)


def _final(run_dir):
    with np.load(run_dir / "final.npz") as f:
        return {k: f[k] for k in f.files}


def _assert_same_run(a, b, exact=True):
    fa, fb = _final(a), _final(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        if exact:
            np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
        else:
            np.testing.assert_allclose(fa[k], fb[k], rtol=2e-5, atol=1e-6, err_msg=k)


def test_single_run_writes_a_complete_workdir(tmp_path):
    results = engine.train_and_evaluate(tiny_config(), tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    expected = ["checkpoint.msgpack", "config.json", "final.npz", "loss.png", "metrics.jsonl", "report.md"]
    assert files == sorted([*expected, "result.json"])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
    assert {"loss", "accuracy", "grad_norm", "clipped", "update_norm", "param_norm", "finite"} <= rows[0].keys()
    assert "test_loss" in rows[2] and "test_loss" not in rows[0]
    result = results[""]
    assert result["status"] == "finished" and result["steps"] == 12 and result["chance_accuracy"] == 1 / 3
    assert json.loads((tmp_path / "config.json").read_text())["task"]["delay"] == 2
    assert "status: finished after 12 steps" in (tmp_path / "report.md").read_text()


def test_killed_run_resumes_to_exactly_the_uninterrupted_result(tmp_path, monkeypatch):
    engine.train_and_evaluate(tiny_config(), tmp_path / "whole")

    calls = {"n": 0}
    original = engine.Progress.update

    def killed(self, step, loss, grad_norm):
        calls["n"] += 1
        if step == 10:  # after the checkpoint at step 8
            raise KeyboardInterrupt
        original(self, step, loss, grad_norm)

    monkeypatch.setattr(engine.Progress, "update", killed)
    with pytest.raises(KeyboardInterrupt):
        engine.train_and_evaluate(tiny_config(), tmp_path / "killed")
    assert not (tmp_path / "killed" / "result.json").exists()
    monkeypatch.setattr(engine.Progress, "update", original)
    engine.train_and_evaluate(tiny_config(), tmp_path / "killed")
    _assert_same_run(tmp_path / "whole", tmp_path / "killed")
    assert (tmp_path / "whole" / "metrics.jsonl").read_text() == (tmp_path / "killed" / "metrics.jsonl").read_text()


def test_divergence_is_recorded_and_nothing_else_is_lost(tmp_path):
    config = tiny_config(**{"model.cell": "rnn", "model.options": {"activation": "identity", "recurrent_scale": 3.0}})
    config = engine.override(
        config, {"optimizer.name": "sgd", "optimizer.clip": "none", "optimizer.learning_rate": 50.0}
    )
    result = engine.train_and_evaluate(config, tmp_path)[""]
    assert result["status"] == "diverged" and isinstance(result["diverged_at"], int)
    assert f"diverged at step {result['diverged_at']}" in (tmp_path / "report.md").read_text()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["diverged"] and rows[-1]["step"] < 12  # stopped early
    assert all(np.isfinite(v).all() for v in _final(tmp_path).values())  # the last finite parameters are kept


@pytest.mark.slow
def test_vmapped_sweep_equals_runs_one_by_one_and_is_skipped_when_finished(tmp_path, monkeypatch):
    sweep = [{"seed": s, "optimizer.learning_rate": lr} for s, lr in ((0, 1e-2), (1, 3e-2), (2, 1e-2))]
    results = engine.train_and_evaluate(tiny_config(), tmp_path / "sweep", sweep)
    assert len(list((tmp_path / "sweep" / "groups").iterdir())) == 1  # one compiled group
    for entry in sweep:
        name = engine.run_name(entry)
        engine.train_and_evaluate(tiny_config(**entry), tmp_path / name)
        _assert_same_run(tmp_path / "sweep" / "runs" / name, tmp_path / name, exact=False)
        assert results[name]["status"] == "finished"
    assert "| [seed-0_learning_rate-0.01]" in (tmp_path / "sweep" / "report.md").read_text()

    monkeypatch.setattr(engine, "train_group", lambda *a, **k: pytest.fail("finished runs must be skipped"))
    assert engine.train_and_evaluate(tiny_config(), tmp_path / "sweep", sweep).keys() == results.keys()


def test_a_diverging_run_inside_a_group_does_not_stop_the_others(tmp_path):
    config = tiny_config(**{"model.cell": "rnn", "model.options": {"activation": "identity", "recurrent_scale": 3.0}})
    config = engine.override(config, {"optimizer.name": "sgd", "optimizer.clip": "none"})
    sweep = [{"optimizer.learning_rate": 1e-5}, {"optimizer.learning_rate": 50.0}]
    results = engine.train_and_evaluate(config, tmp_path, sweep)
    statuses = [results[engine.run_name(e)]["status"] for e in sweep]
    assert statuses == ["finished", "diverged"]
    assert results[engine.run_name(sweep[0])]["steps"] == 12


def _run_on_four_cpu_devices(script, workdir):
    """Runs ``script`` (given ``workdir`` as argv[1]) in a fresh Python that sees 4 CPU devices."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    env["JAX_ENABLE_X64"] = "1"  # as this test process (conftest), so both draw the same random streams
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(workdir)], env=env, cwd=root, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


SHARDED = """
import sys, jax
assert jax.device_count() == 4, jax.devices()
from experiments import engine
from tests.test_engine import tiny_config
assert engine._parallelism(4, tiny_config().train.batch_size)[0] is not None  # the run axis is sharded
engine.train_and_evaluate(tiny_config(), sys.argv[1], [{"seed": s} for s in range(4)])
"""


@pytest.mark.slow
def test_sharded_sweep_equals_unsharded(tmp_path):
    sweep = [{"seed": s} for s in range(4)]
    engine.train_and_evaluate(tiny_config(), tmp_path / "one_device", sweep)
    _run_on_four_cpu_devices(SHARDED, tmp_path / "four")
    for entry in sweep:
        name = engine.run_name(entry)
        _assert_same_run(tmp_path / "one_device" / "runs" / name, tmp_path / "four" / "runs" / name, exact=False)


DATA_PARALLEL = """
import sys, jax
assert jax.device_count() == 4, jax.devices()
from experiments import engine
from tests.test_engine import tiny_config
assert engine._parallelism(1, tiny_config().train.batch_size)[1] is not None  # the batch axis is sharded
engine.train_and_evaluate(tiny_config(), sys.argv[1])
"""


@pytest.mark.slow
def test_data_parallel_single_run_equals_one_device(tmp_path):
    engine.train_and_evaluate(tiny_config(), tmp_path / "one_device")
    _run_on_four_cpu_devices(DATA_PARALLEL, tmp_path / "four")
    _assert_same_run(tmp_path / "one_device", tmp_path / "four", exact=False)


@pytest.mark.parametrize(
    "updates, message",
    [
        ({"model.hidden_size": -3}, r"config.model.hidden_size: expected a positive int, got -3"),
        ({"model.cell": "transformer"}, r"config.model: cell name: expected one of"),
        ({"model.options": {"forget_bais": 1.0}}, r"config.model: lstm cell: unknown option\(s\) \['forget_bais'\]"),
        ({"task.lenght": 5}, r"config.task: unknown option\(s\) \['lenght'\]"),
        ({"optimizer.name": "rmsprop"}, r"config.optimizer.name: expected one of \('sgd', 'adam', 'adamw'\)"),
        ({"optimizer.learning_rate": 0.0}, r"config.optimizer.learning_rate: expected a positive number"),
        ({"train.steps": 0}, r"config.train.steps: expected a positive int"),
        ({"model.impl": "fast"}, r"config.model.impl: expected one of \('auto', 'fused', 'reference', 'native'\)"),
    ],
)
def test_impossible_configs_are_refused_with_the_key_named(tmp_path, updates, message):
    with pytest.raises(ValueError, match=message):
        engine.train_and_evaluate(tiny_config(**updates), tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything ran or was written


def test_model_impl_reaches_the_layer():
    assert engine.validate(tiny_config()).model.layer.impl == "auto"
    assert engine.validate(tiny_config(**{"model.impl": "native"})).model.layer.impl == "native"


def test_unknown_keys_are_refused(tmp_path):
    config = tiny_config()
    with config.model.unlocked():
        config.model.hiden_size = 3
    with pytest.raises(ValueError, match=r"config.model.hiden_size: unknown key"):
        engine.validate(config)
    with pytest.raises(ValueError, match=r"sweep key 'model.hiden_size': unknown key"):
        engine.override(tiny_config(), {"model.hiden_size": 3})


@pytest.mark.slow
def test_command_line(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = [sys.executable, "-m", "experiments.main", "--config=configs/adding.py", f"--workdir={tmp_path}"]
    bad = subprocess.run([*base, "--config.model.hiden_size=3"], cwd=root, capture_output=True, text=True)
    assert bad.returncode != 0 and "hiden_size" in bad.stderr
    bad = subprocess.run([*base, "--config.train.steps=abc"], cwd=root, capture_output=True, text=True)
    assert bad.returncode != 0 and "train.steps" in bad.stderr
    tiny = ["--config.train.steps=3", "--config.task.length=10", "--config.model.hidden_size=4",
            "--config.train.log_every=1", "--config.train.eval_batch_size=8"]  # fmt: skip
    ok = subprocess.run([*base, *tiny], cwd=root, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "run: finished" in ok.stdout and (tmp_path / "result.json").exists()
