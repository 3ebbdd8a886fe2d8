"""What ``pip install`` gives: one top-level package, ``gated``, that imports with jax and numpy alone; the
experiments and configs inside it (``gated.experiments``, ``gated.configs``), runnable outside the checkout."""

import json
import pathlib
import re
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import FAST_COMPILE

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEAVY = ("flax", "optax", "matplotlib", "absl", "ml_collections", "tensorboardX", "torch")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (path,) = out.glob("gated-*.whl")
    site = tmp_path_factory.mktemp("site")  # the wheel unpacked, as pip installs it into site-packages
    with zipfile.ZipFile(path) as z:
        z.extractall(site)
    return path, site


def _python(site, code, cwd, *args):
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(cwd), "XLA_FLAGS": FAST_COMPILE}
    return subprocess.run([sys.executable, *args, "-c", code] if code else [sys.executable, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_the_wheel_holds_gated_alone_and_needs_jax_and_numpy(wheel):
    path, _ = wheel
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"gated"}
    assert "gated/experiments/main.py" in names and "gated/configs/adding.py" in names
    assert "gated/configs/studies/rnn_lag.py" in names and "gated/native/loops_cpu.cc" in names
    required = sorted(re.findall(r"^Requires-Dist: ([\w-]+)[^;\n]*$", metadata, re.M))
    assert required == ["jax", "numpy"], required
    assert "gated.experiments.main:run" in entry_points


@pytest.mark.slow
def test_the_installed_library_imports_nothing_heavy(wheel, tmp_path):
    _, site = wheel
    code = (f"import sys, gated, gated.diagnostics\nassert gated.__file__.startswith({str(site)!r}), gated.__file__\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))")  # fmt: skip
    out = _python(site, code, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.slow
def test_a_bundled_config_runs_outside_the_checkout(wheel, tmp_path):
    _, site = wheel
    from tests.test_command_line import TINY as tiny

    out = _python(site, None, tmp_path, "-m", "gated.experiments.main", "--config=configs/adding.py",
                  f"--workdir={tmp_path / 'w'}", *tiny)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "run: finished" in out.stdout
    assert json.loads((tmp_path / "w" / "result.json").read_text())["status"] == "finished"
    assert not (tmp_path / "configs").exists()  # no checkout here: the config came with gated
