"""Every study config runs end to end at its tiny size; study configs are checked; the report gathers them."""

import json
import pathlib
import re
import subprocess
import sys

import pytest

from experiments import config as config_lib
from experiments import report, studies, workdir
from tests.conftest import fast_compile_env

ROOT = pathlib.Path(__file__).parent.parent
CONFIGS = sorted((ROOT / "configs" / "studies").glob("[!_]*.py"))


def test_every_study_has_a_config():
    assert sorted(p.stem for p in CONFIGS) == sorted(studies.NAMES)


MODERN = ("state_tracking",)  # a modern-chapter study runs tiny in the fast tier


@pytest.mark.parametrize("path", [p if p.stem in MODERN else pytest.param(p, marks=pytest.mark.slow) for p in CONFIGS],
                         ids=lambda p: p.stem)  # fmt: skip
def test_study_runs_tiny(path, tmp_path):
    module = config_lib.load_config_module(path)
    assert f"--config=configs/studies/{path.stem}.py" in module.__doc__ and "Expected" in module.__doc__
    assert "RESULT" not in module.__doc__, "fill in the measured result"
    for size in ("default", "paper"):
        studies.validate(module.get_config(size))
    config = module.get_config("tiny")
    result = studies.run(config, tmp_path)
    assert result["study"] == path.stem and result["claims"] and result["headline"]
    text = (tmp_path / "report.md").read_text()
    figures = [line[line.index("(") + 1 : -1] for line in text.splitlines() if line.startswith("![")]
    assert figures and all((tmp_path / f).stat().st_size > 10_000 for f in figures)
    assert json.loads((tmp_path / "results.json").read_text())["config"] == workdir.spelled(
        json.loads(config.to_json())
    )
    assert studies.run(config, tmp_path)["wall_seconds"] == result["wall_seconds"]  # finished: not run again


def test_study_configs_are_checked():
    config = config_lib.load_config_module(ROOT / "configs/studies/scalar_chain.py").get_config("tiny")
    with config.unlocked():
        config.depth = 3
    with pytest.raises(ValueError, match=r"config\.depth: unknown key for study 'scalar_chain'"):
        studies.validate(config)
    config = config_lib.load_config_module(ROOT / "configs/studies/scalar_chain.py").get_config("tiny")
    config.max_depth = -1
    with pytest.raises(ValueError, match=r"config\.max_depth: expected a positive int, got -1"):
        studies.validate(config)
    del config["max_depth"]
    with pytest.raises(ValueError, match=r"config\.max_depth: missing"):
        studies.validate(config)
    config.study = "nope"
    with pytest.raises(ValueError, match=r"config\.study: expected one of"):
        studies.validate(config)
    with pytest.raises(ValueError, match=r"size: expected one of \['default', 'paper', 'tiny'\], got 'huge'"):
        config_lib.load_config_module(ROOT / "configs/studies/scalar_chain.py").get_config("huge")


@pytest.mark.slow
def test_report_runs_studies_and_gathers_markdown_and_html(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "scalar_chain.py").write_text((ROOT / "configs/studies/scalar_chain.py").read_text())
    out = subprocess.run(
        [sys.executable, "-m", "experiments.report", f"--run_studies={configs}", f"--workdir={tmp_path / 'runs'}",
         "--size=tiny", f"--out={tmp_path / 'report'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=fast_compile_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    markdown = (tmp_path / "report/report.md").read_text()
    assert "## 1. The scalar chain" in markdown and "| 1. The scalar chain" in markdown  # section and summary
    assert "](figures/scalar_chain__scalar_chain.png)" in markdown
    assert (tmp_path / "report/figures/scalar_chain__scalar_chain.png").exists()
    page = (tmp_path / "report/report.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "<table>" in page and "<strong>held</strong>" in page
    # a finished engine run gathers too
    run_dir = tmp_path / "runs" / "engine_run"
    (run_dir).mkdir()
    (run_dir / "result.json").write_text(json.dumps({
        "status": "finished", "diverged_at": None, "steps": 3, "final": {"step": 3, "loss": 0.5},
        "best": {"loss": {"step": 3, "value": 0.5}}, "chance_loss": 1.0, "chance_accuracy": None,
    }))  # fmt: skip
    path = report.gather([run_dir], tmp_path / "report2")
    assert "## engine\\_run" in path.read_text()  # escaped Markdown
    with pytest.raises(ValueError, match="no results.json or result.json"):
        report.gather([tmp_path], tmp_path / "report3")


def _fake_study(workdir, title):
    workdir.mkdir(parents=True)
    data = {"study": "x", "title": title, "wall_seconds": 1.0, "headline": {"a|b": 0.5},
            "claims": [{"claim": "c", "held": True, "evidence": "e"}]}  # fmt: skip
    (workdir / "results.json").write_text(json.dumps(data))
    (workdir / "report.md").write_text(f"## {report.escape(title)}\n\ntext\n")


def test_gathered_report_escapes_markdown_and_is_written_whole_or_not_at_all(tmp_path):
    _fake_study(tmp_path / "s", "Clipping | or not *at all* [1]")
    path = report.gather([tmp_path / "s"], tmp_path / "out")
    rows = [line for line in path.read_text().splitlines() if line.startswith("| Clipping")]
    assert len(rows) == 1 and len(re.split(r"(?<!\\)\|", rows[0])) == 6  # 4 cells, not broken by the title's |
    page = (tmp_path / "out/report.html").read_text()
    assert "<td>Clipping | or not *at all* [1]</td>" in page  # shown as written
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="missing.*no results.json or result.json"):
        report.gather([tmp_path / "s", tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(ValueError, match="no results.json or result.json"):
        report.gather([tmp_path / "missing"], tmp_path / "new")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing half-written


def test_a_study_is_computed_once_then_drawn_from_its_stored_results(tmp_path, monkeypatch):
    config = config_lib.load_config_module(ROOT / "configs/studies/scalar_chain.py").get_config("tiny")
    first = studies.run(config, tmp_path)
    report_md = (tmp_path / "report.md").read_text()
    module = studies.get("scalar_chain")
    monkeypatch.setattr(module, "compute", lambda *a: pytest.fail("the stored results must be used"))
    for name in ("report.md", "results.json", "scalar_chain.png"):
        (tmp_path / name).unlink()
    assert studies.redraw(tmp_path) == first  # figures and claims from computed.json alone
    assert (tmp_path / "report.md").read_text() == report_md and (tmp_path / "scalar_chain.png").exists()
    (tmp_path / "results.json").unlink()  # stopped after computing: the same command only draws
    assert studies.run(config, tmp_path) == first
    other = config_lib.load_config_module(ROOT / "configs/studies/scalar_chain.py").get_config("default")
    with pytest.raises(workdir.WorkdirError, match="max_depth"):
        studies.run(other, tmp_path)


def test_wilson_intervals_and_the_fixed_points_the_new_studies_rely_on():
    """The Wilson interval against values computed by hand; the cliff's band of three fixed points and the latch's
    fixed point against the maps themselves."""
    import numpy as np

    from experiments.studies import base, cliff, latch

    # p = 7/8, z = 1.96: centre (0.875 + 0.24010) / 1.48020, half-width 1.96 sqrt(0.013672 + 0.015006) / 1.48020
    assert base.wilson(7, 8) == pytest.approx((0.52911, 0.97762), abs=1e-4)
    assert base.wilson(0, 8)[0] == 0.0 and base.wilson(8, 8)[1] == 1.0 and base.wilson(0, 0) == (0.0, 1.0)
    assert base.rate_text(7, 8) == "7/8 seeds (95% Wilson interval 0.53-0.98)"
    x = np.linspace(-30, 30, 600_001)
    for w in (3.0, 6.0, 10.0):
        low, high = (float(v[0]) for v in cliff.three_fixed_points_band(np.array([w])))
        for b, three in ((low + 0.05, True), (high - 0.05, True), (low - 0.05, False), (high + 0.05, False)):
            if np.isnan(low):
                b, three = -w / 2, False
            g = w / (1 + np.exp(-x)) + b - x  # zero at each fixed point
            assert (np.count_nonzero(np.diff(np.sign(g))) == 3) == three, (w, b)
    h = latch.fixed_point(1.5)
    assert np.tanh(1.5 * h) == pytest.approx(h, abs=1e-12) and 0.8 < h < 0.9 and latch.fixed_point(0.9) == 0.0
