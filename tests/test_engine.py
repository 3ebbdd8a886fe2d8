"""The experiment engine end to end on tiny configs: files, faults at every write, binding, locking, divergence,
sweeps, strict outputs, refusals."""

import json
import os
import pathlib
import re

import chex
import numpy as np
import pytest
from flax import serialization

from experiments import config as config_lib
from experiments import engine, loop, workdir, writers
from experiments import train as train_lib


def tiny_config(**updates):
    config = config_lib.base_config()
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
    return config_lib.override(config, updates)


def diverging_config(**updates):
    config = tiny_config(**{"model.cell": "rnn", "model.options": {"activation": "identity", "recurrent_scale": 3.0}})
    config = config_lib.override(config, {"optimizer.name": "sgd", "optimizer.clip": "none", "train.log_every": 1})
    return config_lib.override(config, {"optimizer.learning_rate": 50.0, **updates})


def _final(run_dir):
    with np.load(run_dir / "final.npz") as f:
        return {k: f[k] for k in f.files}


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# Files whose bytes are the result; the rest (plots, event files with wall times) are redrawn from them.
EXACT = ("result.json", "metrics.jsonl", "config.json", "results.json", "report.md")


def _assert_same_workdir(a: pathlib.Path, b: pathlib.Path):
    """The same files (TensorBoard's: the same scalars, as TensorBoard reads them) and the same results."""
    tensorboard = lambda p: p.name.startswith(writers.EVENTS_PREFIX)
    files = lambda d: sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file() and p.name != ".lock"
                             and not tensorboard(p))  # fmt: skip
    assert files(a) == files(b)
    runs = sorted({p.parent.relative_to(a) for p in a.rglob("*") if tensorboard(p)})
    assert runs == sorted({p.parent.relative_to(b) for p in b.rglob("*") if tensorboard(p)})
    for run in runs:
        assert _read_events(a / run, values=True) == _read_events(b / run, values=True), run
    for rel in files(a):
        if rel.name in EXACT:
            assert (a / rel).read_text() == (b / rel).read_text(), rel
        elif rel.suffix == ".npz":
            fa, fb = _final(a / rel.parent), _final(b / rel.parent)
            assert fa.keys() == fb.keys()
            for k in fa:
                np.testing.assert_array_equal(fa[k], fb[k], err_msg=f"{rel}: {k}")


def test_single_run_writes_a_complete_workdir(tmp_path):
    result = engine.train_and_evaluate(tiny_config(), tmp_path)[""]
    files = sorted(p.name for p in tmp_path.iterdir())
    expected = ["checkpoint.msgpack", "checkpoint.previous.msgpack", "config.json", "final.npz", "loss.png",
                "metrics.jsonl", "report.md"]  # fmt: skip
    events = [f for f in files if f.startswith(writers.EVENTS_PREFIX)]
    assert len(events) == 1 and events[0].endswith(".from-000000000.gated")
    assert sorted(set(files) - set(events)) == sorted([*expected, ".lock", "result.json"])
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
    assert {"loss", "accuracy", "grad_norm", "clipped", "update_norm", "param_norm", "finite"} <= rows[0].keys()
    assert [r["step"] for r in rows if "test_loss" in r] == [6, 12]
    assert result["status"] == "finished" and result["steps"] == 12 and result["chance_accuracy"] == 1 / 3
    # the final and the best test metric, each with its step
    assert result["final"] == {"step": 12, "loss": rows[-1]["test_loss"], "accuracy": rows[-1]["test_accuracy"]}
    tested = [r for r in rows if "test_loss" in r]
    best = min(tested, key=lambda r: r["test_loss"])
    assert result["best"]["loss"] == {"step": best["step"], "value": best["test_loss"]}
    assert result["best"]["accuracy"]["value"] == max(r["test_accuracy"] for r in tested)
    np.testing.assert_array_equal(_final(tmp_path)["curve/test_step"], [6, 12])
    bound = json.loads((tmp_path / "config.json").read_text())
    assert bound["config"]["task"]["delay"] == 2 and re.fullmatch(r"[0-9a-f]{64}", bound["hash"])
    report = (tmp_path / "report.md").read_text()
    assert "status: finished after 12 steps" in report and "final test (step 12)" in report


def _read_events(run_dir, values=False):
    """The scalars TensorBoard shows for a run: its event files (TFRecord framing around Event protos) read in name
    order, a SessionLog START at step s (a resumed run's ``purge_step``) hiding every earlier event at step >= s.
    Returns ``{tag: [step, ...]}``, or ``[(step, value), ...]`` with ``values``."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in sorted(run_dir.glob(writers.EVENTS_PREFIX + "*")):
        data = path.read_bytes()
        while data:
            (length,) = np.frombuffer(data[:8], "<u8")
            event = event_pb2.Event.FromString(data[12 : 12 + int(length)])
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                scalars = {k: [p for p in v if p[0] < event.step] for k, v in scalars.items()}
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
            data = data[12 + int(length) + 4 :]
    return scalars if values else {k: [s for s, _ in v] for k, v in scalars.items()}


def test_tensorboard_event_files_hold_every_logged_metric(tmp_path):
    engine.train_and_evaluate(tiny_config(), tmp_path)
    scalars = _read_events(tmp_path)
    assert scalars["train/loss"] == [2, 4, 6, 8, 10, 12]
    assert scalars["test/loss"] == [6, 12] and "train/grad_norm" in scalars


class Crash(BaseException):
    """Stands for a kill: raised where a file would appear, it leaves that file's temporary behind."""


def _crash_at(monkeypatch, n):
    """Makes the ``n``-th file that would appear (counting from 0) not appear: the process 'dies' there."""
    calls = {"n": 0}
    original = workdir._replace

    def replace(source, target):
        calls["n"] += 1
        if calls["n"] - 1 == n:
            raise Crash(target)
        original(source, target)

    def appended(path):  # TensorBoard's records are flushed: a kill after them
        calls["n"] += 1
        if calls["n"] - 1 == n:
            raise Crash(path)

    monkeypatch.setattr(workdir, "_replace", replace)
    monkeypatch.setattr(workdir, "appended", appended)
    return calls


def _kill_at_every_write(tmp_path, monkeypatch, config, sweep=None):
    whole = tmp_path / "whole" / "run"  # the same folder name, which the reports show
    calls = _crash_at(monkeypatch, -1)
    engine.train_and_evaluate(config, whole, sweep)
    writes = calls["n"]
    for n in range(writes):
        killed = tmp_path / f"killed_{n}" / "run"
        _crash_at(monkeypatch, n)
        with pytest.raises(Crash):
            engine.train_and_evaluate(config, killed, sweep)
        monkeypatch.setattr(workdir, "_replace", os.replace)
        monkeypatch.setattr(workdir, "appended", lambda path: None)
        engine.train_and_evaluate(config, killed, sweep)  # the same command again
        _assert_same_workdir(whole, killed)  # no temporary left behind either
    return writes


def test_a_run_killed_at_every_write_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    writes = _kill_at_every_write(tmp_path, monkeypatch, tiny_config())
    assert writes >= 12  # config, 3 checkpoints with their metrics, the outputs


@pytest.mark.slow
def test_a_sweep_killed_at_every_write_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    sweep = [{"seed": 0}, {"seed": 1}, {"model.cell": "gru", "seed": 0}]  # two groups, one of two runs
    writes = _kill_at_every_write(tmp_path, monkeypatch, tiny_config(**{"train.steps": 8}), sweep)
    assert writes >= 30


def test_a_sweep_stopped_after_its_first_result_resumes(tmp_path, monkeypatch):
    """The defect: two seeds in one group, stopped just after runs/seed-0/result.json appeared; every rerun failed
    with 'vmap got inconsistent sizes'."""
    sweep = [{"seed": 0}, {"seed": 1}]
    original = workdir._replace

    def replace(source, target):
        original(source, target)
        if pathlib.Path(target).name == "result.json" and "seed-0" in str(target):
            raise KeyboardInterrupt

    monkeypatch.setattr(workdir, "_replace", replace)
    with pytest.raises(KeyboardInterrupt):
        engine.train_and_evaluate(tiny_config(), tmp_path / "stopped", sweep)
    assert not (tmp_path / "stopped" / "runs" / "seed-1" / "result.json").exists()
    monkeypatch.setattr(workdir, "_replace", original)
    engine.train_and_evaluate(tiny_config(), tmp_path / "stopped", sweep)
    engine.train_and_evaluate(tiny_config(), tmp_path / "whole" / "stopped", sweep)
    _assert_same_workdir(tmp_path / "whole" / "stopped", tmp_path / "stopped")


def test_a_workdir_refuses_another_config_naming_the_keys(tmp_path, monkeypatch):
    engine.train_and_evaluate(tiny_config(), tmp_path)
    with pytest.raises(workdir.WorkdirError, match=r"model.hidden_size: 4 -> 8.*--overwrite"):
        engine.train_and_evaluate(tiny_config(**{"model.hidden_size": 8}), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["model"]["hidden_size"] == 4  # untouched
    # a killed run rerun with another learning rate or seed does not resume silently
    _crash_at(monkeypatch, 4)
    with pytest.raises(Crash):
        engine.train_and_evaluate(tiny_config(), tmp_path / "killed")
    monkeypatch.setattr(workdir, "_replace", os.replace)
    with pytest.raises(workdir.WorkdirError, match=r"optimizer.learning_rate: 0.01 -> 0.02; seed: 0 -> 1"):
        engine.train_and_evaluate(tiny_config(**{"optimizer.learning_rate": 0.02, "seed": 1}), tmp_path / "killed")
    # a sweep is bound to its entries too
    with pytest.raises(workdir.WorkdirError, match=r"sweep"):
        engine.train_and_evaluate(tiny_config(), tmp_path, [{"seed": 0}])
    # what changes no number is not part of the binding
    engine.train_and_evaluate(tiny_config(**{"train.checkpoint_every": 3}), tmp_path)
    # --overwrite starts afresh
    result = engine.train_and_evaluate(tiny_config(**{"model.hidden_size": 8}), tmp_path, overwrite=True)[""]
    assert result["config"]["model"]["hidden_size"] == 8
    assert json.loads((tmp_path / "result.json").read_text())["config"]["model"]["hidden_size"] == 8


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    bound = workdir.binding(json.loads(tiny_config().to_json()))
    with workdir.Workdir(tmp_path, bound):
        with pytest.raises(workdir.WorkdirError, match=rf"in use by process {os.getpid()} on "):
            engine.train_and_evaluate(tiny_config(), tmp_path)
    engine.train_and_evaluate(tiny_config(), tmp_path)  # free again


def test_a_run_gives_the_same_numbers_alone_and_inside_a_sweep(tmp_path):
    sweep = [{"seed": 0}, {"seed": 1, "optimizer.learning_rate": 3e-2, "optimizer.clip_threshold": 0.5}]
    results = engine.train_and_evaluate(tiny_config(), tmp_path / "sweep", sweep)
    for entry in sweep:
        name = config_lib.run_name(entry)
        alone = engine.train_and_evaluate(tiny_config(**entry), tmp_path / name)[""]
        assert alone["final"] == results[name]["final"] and alone["best"] == results[name]["best"]
        assert _rows(tmp_path / name) == _rows(tmp_path / "sweep" / "runs" / name)
        a, b = _final(tmp_path / name), _final(tmp_path / "sweep" / "runs" / name)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    groups = sorted(p.name for p in (tmp_path / "sweep" / "groups").iterdir())
    assert groups == ["group-0.msgpack", "group-0.previous.msgpack"]  # one compiled group (and its last checkpoint)


def test_divergence_is_recorded_at_the_step_the_metrics_mark_and_in_strict_json(tmp_path):
    result = engine.train_and_evaluate(diverging_config(), tmp_path)[""]
    assert result["status"] == "diverged"
    text = (tmp_path / "metrics.jsonl").read_text()
    strict = lambda s: json.loads(s, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    rows = [strict(line) for line in text.splitlines()]
    first_bad = next(r["step"] for r in rows if not r["finite"])
    assert result["diverged_at"] == first_bad
    bad = next(r for r in rows if not r["finite"])
    assert bad["nonfinite"] and all(bad[k] is None for k in bad["nonfinite"])
    assert rows[-1]["diverged"] and rows[-1]["step"] < 12  # stopped early
    assert f"diverged at step {first_bad}" in (tmp_path / "report.md").read_text()
    assert all(np.isfinite(v).all() for k, v in _final(tmp_path).items() if not k.startswith("curve/"))
    strict((tmp_path / "result.json").read_text())


def test_a_diverging_run_inside_a_group_does_not_stop_the_others(tmp_path):
    sweep = [{"optimizer.learning_rate": 1e-5}, {"optimizer.learning_rate": 50.0}]
    results = engine.train_and_evaluate(diverging_config(), tmp_path, sweep)
    assert [results[config_lib.run_name(e)]["status"] for e in sweep] == ["finished", "diverged"]
    assert results[config_lib.run_name(sweep[0])]["steps"] == 12


def test_files_are_readable_by_the_group(tmp_path):
    old = os.umask(0o022)
    try:
        engine.train_and_evaluate(tiny_config(), tmp_path)
    finally:
        os.umask(old)
    for name in ("result.json", "metrics.jsonl", "final.npz", "checkpoint.msgpack", "config.json", "loss.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.parametrize(
    "updates, message",
    [
        ({"model.hidden_size": -3}, r"config.model.hidden_size: expected a positive int, got -3"),
        ({"model.cell": "transformer"}, r"config.model: cell name: expected one of"),
        ({"model.options": {"activation": "relu"}}, r"config.model: lstm cell: unknown option\(s\) \['activation'\]"),
        ({"task.lenght": 5}, r"config.task: unknown option\(s\) \['lenght'\]"),
        ({"optimizer.name": "rmsprop"}, r"config.optimizer.name: expected one of \('sgd', 'adam', 'adamw'\)"),
        ({"optimizer.learning_rate": 0.0}, r"config.optimizer.learning_rate: expected a finite number > 0"),
        ({"optimizer.learning_rate": float("inf")}, r"config.optimizer.learning_rate: expected a finite number"),
        ({"optimizer.clip_threshold": float("nan")}, r"config.optimizer.clip_threshold: expected a finite number"),
        ({"optimizer.momentum": -0.5}, r"config.optimizer.momentum: expected a number in \[0, 1\), got -0.5"),
        ({"optimizer.weight_decay": -1e-4}, r"config.optimizer.weight_decay: expected a finite number >= 0"),
        ({"optimizer.warmup_steps": -10}, r"config.optimizer.warmup_steps: expected an int >= 0, got -10"),
        ({"train.steps": 0}, r"config.train.steps: expected a positive int"),
        (
            {"model.impl": "fast"},
            r"config.model.impl: expected one of \('auto', 'fused', 'reference', 'recomputed', 'chunkwise', "
            r"'associative', 'chunked', 'sequential', 'native'\)",
        ),
    ],
)
def test_impossible_configs_are_refused_with_the_key_named(tmp_path, updates, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        engine.train_and_evaluate(tiny_config(**updates), tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything ran or was written


def test_cell_options_reach_the_cell_and_impl_the_layer():
    spec = config_lib.validate(tiny_config(**{"model.options.forget_bias": 2.0, "model.impl": "native"}))
    assert spec.cell.forget_bias == 2.0 and spec.model.layers[0].impl == "native"
    assert config_lib.validate(tiny_config()).cell.forget_bias == 1.0  # unset: the cell's default


def test_unknown_and_missing_keys_are_refused():
    config = tiny_config()
    with config.model.unlocked():
        config.model.hiden_size = 3
    with pytest.raises(config_lib.ConfigError, match=r"config.model.hiden_size: unknown key"):
        config_lib.validate(config)
    with pytest.raises(config_lib.ConfigError, match=r"sweep key 'model.hiden_size': unknown key"):
        config_lib.override(tiny_config(), {"model.hiden_size": 3})
    config = tiny_config()
    with config.train.unlocked():
        del config.train["eval_every"]
    with pytest.raises(config_lib.ConfigError, match=r"config.train.eval_every: missing"):
        config_lib.validate(config)


def test_progress_is_a_bar_on_a_terminal_and_log_lines_in_a_batch_job(monkeypatch, capsys, caplog):
    values = {"loss": np.array([0.5, 0.7]), "finite": np.array([True, True]), "grad_norm": np.array([1.0, 3.0])}
    monkeypatch.setattr(engine.sys.stderr, "isatty", lambda: True, raising=False)
    reporter = engine.Reporter("[run]", 100)
    reporter(50, values)
    reporter.close()
    bar = capsys.readouterr().err
    assert re.search(r"\[run\]: +50%\|#####     \| 50/100 \[.*loss 0.6  grad norm 2\]", bar), bar  # tqdm's bar
    monkeypatch.setattr(engine.sys.stderr, "isatty", lambda: False, raising=False)
    with caplog.at_level("INFO"):
        reporter = engine.Reporter("[run]", 100)
        reporter(50, values)
    assert capsys.readouterr().err == ""
    assert re.search(r"\[run\] step 50/100  loss 0.6  grad norm 2  [0-9.]+ steps/s", caplog.text)


def test_a_run_diverging_before_its_first_log_step_is_marked_in_its_plot_and_log(tmp_path, caplog):
    """The defects: a blank loss.png, and a log line of 'grad norm nan' with no word of the divergence."""
    config = diverging_config(**{"train.log_every": 6})
    with caplog.at_level("INFO"):
        result = engine.train_and_evaluate(config, tmp_path)[""]
    step = result["diverged_at"]
    assert result["status"] == "diverged" and step is not None and step < 6
    assert re.search(
        rf"\[run\] step 6/12  loss -  grad norm -  [0-9.]+ steps/s  diverged at step {step}\b", caplog.text
    )
    assert [r["step"] for r in _rows(tmp_path)] == [6] and not _rows(tmp_path)[0]["finite"]
    nothing_finite = [{"step": 6, "loss": None, "grad_norm": None, "test_loss": None}]
    for rows in (_rows(tmp_path), nothing_finite):
        fig = writers.curves_figure(rows, config_lib.validate(config).task, result, "run")
        for ax in fig.axes:
            marks = [line for line in ax.get_lines() if line.get_label() == f"diverged at step {step}"]
            assert len(marks) == 1 and list(marks[0].get_xdata()) == [step, step]
    assert any(f"diverged at step {step}" in t.get_text() for t in fig.axes[0].texts)


def test_a_group_log_line_names_its_diverged_runs(caplog):
    values = {"loss": np.array([0.5, np.nan, 0.7]), "finite": np.array([True, False, True]),
              "grad_norm": np.array([1.0, np.nan, 3.0]), "diverged_at": np.array([-1, 4, -1])}  # fmt: skip
    with caplog.at_level("INFO"):
        engine.Reporter("[group 1/1, 3 run(s)]", 10)(6, values)
    assert "loss 0.6  grad norm 2 " in caplog.text and "1 of 3 runs diverged at step 4" in caplog.text


def _kill_after_checkpoints(tmp_path, monkeypatch, count):
    """A tiny run (checkpoints at steps 4, 8, 12) killed just after its ``count``-th checkpoint appeared."""
    seen = {"n": 0}

    def replace(source, target):
        os.replace(source, target)
        if pathlib.Path(target).name == "checkpoint.msgpack":
            seen["n"] += 1
            if seen["n"] == count:
                raise Crash(target)

    monkeypatch.setattr(workdir, "_replace", replace)
    with pytest.raises(Crash):
        engine.train_and_evaluate(tiny_config(), tmp_path)
    monkeypatch.setattr(workdir, "_replace", os.replace)


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(tmp_path, monkeypatch, damage):
    whole = tmp_path / "whole" / "run"
    engine.train_and_evaluate(tiny_config(), whole)
    killed = tmp_path / "killed" / "run"
    _kill_after_checkpoints(killed, monkeypatch, 2)
    newest = killed / "checkpoint.msgpack"
    data = newest.read_bytes()
    newest.write_bytes(
        data[: len(data) // 2] if damage == "truncated" else data[:-9] + bytes([data[-9] ^ 1]) + data[-8:]
    )
    engine.train_and_evaluate(tiny_config(), killed)  # resumes from step 4, not 8
    _assert_same_workdir(whole, killed)


def test_no_whole_checkpoint_is_refused_naming_both(tmp_path, monkeypatch):
    _kill_after_checkpoints(tmp_path, monkeypatch, 2)
    for path in (tmp_path / "checkpoint.msgpack", tmp_path / "checkpoint.previous.msgpack"):
        path.write_bytes(path.read_bytes()[:100])
    message = r"no whole checkpoint .*checkpoint.msgpack' is damaged .*checkpoint.previous.msgpack' is damaged"
    with pytest.raises(workdir.WorkdirError, match=message + ".*--overwrite"):
        engine.train_and_evaluate(tiny_config(), tmp_path)


def test_a_resume_removes_what_a_killed_writer_left(tmp_path):
    """The defect: a resumed sweep kept a '.events...tmp' that a SIGKILL had left (no handler runs on SIGKILL)."""
    sweep = [{"seed": 0}, {"seed": 1}]
    engine.train_and_evaluate(tiny_config(), tmp_path / "whole" / "run", sweep)
    killed = tmp_path / "killed" / "run"
    engine.train_and_evaluate(tiny_config(), killed, sweep)  # then as if killed while writing its first result
    leftovers = [killed / "runs" / "seed-0" / ".metrics.jsonl.x1y2.tmp", killed / ".config.json.a.tmp"]
    (killed / "runs" / "seed-0" / "result.json").unlink()
    for path in leftovers:
        path.write_bytes(b"half")
    engine.train_and_evaluate(tiny_config(), killed, sweep)
    assert not any(p.exists() for p in leftovers)
    _assert_same_workdir(tmp_path / "whole" / "run", killed)


def test_a_damaged_config_json_and_a_file_as_workdir_are_refused(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "config.json").write_text("{bad")
    with pytest.raises(workdir.WorkdirError, match=r"config.json is damaged .*--overwrite"):
        engine.train_and_evaluate(tiny_config(), tmp_path / "w")
    (tmp_path / "file").write_text("")
    with pytest.raises(workdir.WorkdirError, match=r"workdir '.*file' is a file, not a folder"):
        engine.train_and_evaluate(tiny_config(), tmp_path / "file")
    with pytest.raises(workdir.WorkdirError, match=r"workdir '.*file/sub': cannot write .*Not a directory"):
        engine.train_and_evaluate(tiny_config(), tmp_path / "file" / "sub")


def test_the_training_loop_compiles_once_across_steps_evaluations_and_a_resume(tmp_path, monkeypatch):
    """chex.assert_max_traces on the train and eval steps: one trace each for a whole run, its evaluations and its
    checkpoints, and none more when a killed run resumes in the same process (the programs are reused)."""
    traced = lambda make: lambda *a, **k: chex.assert_max_traces(make(*a, **k), n=1)
    monkeypatch.setattr(train_lib, "make_train_step", traced(train_lib.make_train_step))
    monkeypatch.setattr(train_lib, "make_eval_step", traced(train_lib.make_eval_step))
    loop._programs.cache_clear()
    chex.clear_trace_counter()
    config = tiny_config(**{"model.hidden_size": 3})  # shapes no other test compiles
    _crash_at(monkeypatch, 5)  # dies after its first checkpoints
    with pytest.raises(Crash):
        engine.train_and_evaluate(config, tmp_path / "run")
    monkeypatch.setattr(workdir, "_replace", os.replace)
    result = engine.train_and_evaluate(config, tmp_path / "run")[""]  # resumes: a second trace would raise
    assert result["steps"] == config.train.steps
    loop._programs.cache_clear()  # the wrapped programs stay out of the other tests


def test_a_workdir_bound_before_a_cell_option_existed_still_resumes(tmp_path):
    """A cell option added to gated is unset (None) in every existing config: it changes no workdir's binding.
    Here a finished run's config.json is rewritten as older code wrote it, without one of today's options."""
    engine.train_and_evaluate(tiny_config(), tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["config"]["model"]["options"]["num_heads"]  # as if mLSTM's num_heads had come later
    stored["hash"] = "0" * 64  # hashed by the older code's rule: the stored config is hashed anew
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert engine.train_and_evaluate(tiny_config(), tmp_path)[""]["status"] == "finished"
    set_one = tiny_config(**{"model.options.forget_bias": 2.0})
    with pytest.raises(workdir.WorkdirError, match=r"model.options.forget_bias: '\(absent\)' -> 2.0"):
        engine.train_and_evaluate(set_one, tmp_path)


def _as_written_before_models(state):
    """A checkpoint's state as the engine wrote it when its layer-and-readout model had parameters of its own
    (``recurrent``, ``readout_kernel``, ``readout_bias``), before every engine model was a gated.models.Model."""
    if isinstance(state, dict):
        if set(state) == {"embedding", "layers", "final_norm", "head"} and state["embedding"] is None:
            layer, head = _as_written_before_models(state["layers"]["0"]), state["head"]
            return {"recurrent": layer, "readout_kernel": head["kernel"], "readout_bias": head["bias"]}
        return {k: _as_written_before_models(v) for k, v in state.items()}
    return state


def _rewrite_checkpoint(path, edit):
    data = serialization.msgpack_restore(workdir.read_checkpoint(path))
    data["state"] = edit(data["state"])
    for old in (path, workdir.previous_of(path)):
        old.unlink(missing_ok=True)
    workdir.write_keeping_previous(path, serialization.msgpack_serialize(data))


def _stopped_at_the_first_checkpoint(monkeypatch, config, path):
    """Runs ``config`` in ``path`` and 'kills' it where its second checkpoint would appear: the first stays (moved
    aside as the previous one, as a kill there leaves it)."""
    original, seen = workdir._replace, []

    def replace(source, target):
        if pathlib.Path(target).name == "checkpoint.msgpack" and len(seen) == 1:
            raise Crash(target)
        seen.extend([target] if pathlib.Path(target).name == "checkpoint.msgpack" else [])
        original(source, target)

    monkeypatch.setattr(workdir, "_replace", replace)
    with pytest.raises(Crash):
        engine.train_and_evaluate(config, path)
    monkeypatch.setattr(workdir, "_replace", os.replace)


def test_a_checkpoint_of_the_layer_model_written_before_it_was_a_model_resumes(tmp_path, monkeypatch):
    """A run of the classic layer and readout stopped by older code resumes from its checkpoint, whose parameters
    had their own tree, and ends as the uninterrupted run does."""
    whole = engine.train_and_evaluate(tiny_config(), tmp_path / "whole" / "run")[""]
    killed = tmp_path / "killed" / "run"
    _stopped_at_the_first_checkpoint(monkeypatch, tiny_config(), killed)
    _rewrite_checkpoint(killed / "checkpoint.msgpack", _as_written_before_models)
    assert "readout_kernel" in str(
        serialization.msgpack_restore(workdir.read_checkpoint(killed / "checkpoint.msgpack"))
    )
    resumed = engine.train_and_evaluate(tiny_config(), killed)[""]
    assert resumed["final"] == whole["final"] and resumed["status"] == "finished"


def test_a_checkpoint_of_another_structure_is_refused_naming_the_file(tmp_path, monkeypatch):
    killed = tmp_path / "run"
    _stopped_at_the_first_checkpoint(monkeypatch, tiny_config(), killed)
    _rewrite_checkpoint(killed / "checkpoint.msgpack", lambda state: {**state, "params": {"other": state["params"]}})
    with pytest.raises(workdir.WorkdirError, match=r"checkpoint.msgpack: expected a checkpoint of this config's model"):
        engine.train_and_evaluate(tiny_config(), killed)
