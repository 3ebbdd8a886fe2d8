"""The README's Python snippets run as written, in a fresh Python with JAX's default settings."""

import importlib.util
import pathlib
import re
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import fast_compile_env

README = pathlib.Path(__file__).parent.parent / "README.md"


# What a snippet's results must be, by the name it defines (checked after the snippet that defines it).
CHECKS = {
    "grads": "assert grads.bias.shape == (512,) and hvp.bias.shape == (512,)",
    "logits": "assert logits.shape == (8, 2) and ys.shape in ((8, 20, 64), (8, 20, 32))",
    "h_n": "assert h_n.shape == (4, 8, 32) and ys.shape == (20, 8, 64)",
    "rate": "assert bool(jnp.all(bound >= spectral * (1 - 1e-6))) and norms.shape == (50,) and rate < 0",
    "decay": "assert outputs.shape == (4096, 8, 64) and decay.shape == (4096, 64)",
    "drawn": "assert drawn.shape == (8, 4, 256) and new.shape == (8, 4) and scores.shape == (16, 4, 256)",
}
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.slow
@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet-{i}" for i in range(len(SNIPPETS))])
def test_each_readme_snippet_runs_on_its_own(snippet):
    """Every Python block of the README, alone in a fresh Python (as a reader copies one), and what it computes."""
    if "import torch" in snippet and importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    defined = {name for name in CHECKS if re.search(rf"^\s*(\w+, )*{name}\b[\w, ]* = ", snippet, re.M)}
    assert defined, "each snippet's results are checked: add its names to CHECKS"
    script = snippet + "".join(f"\n{CHECKS[name]}" for name in sorted(defined))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=README.parent,
                            env=fast_compile_env())  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_readme_has_the_snippets_the_checks_name():
    assert len(SNIPPETS) >= 5
    for name in CHECKS:
        assert any(re.search(rf"\b{name}\b[\w, ]* = ", s) for s in SNIPPETS), name


@pytest.mark.slow
def test_the_main_job_prints_what_the_readme_says():
    """configs/adding.py at its full size, as the README's set-up command runs it (float32, JAX's defaults): the
    printed line has the README's form and the final test MSE is below the bound the README gives."""
    text = README.read_text()
    stated = re.search(r"\nrun: finished; final test loss ([0-9.]+) \(step 2000\); best [0-9.]+ \(step \d+\); "
                       r"chance loss 0.1667\n", text)  # fmt: skip
    bound = float(re.search(r"checks that it stays below ([0-9.]+[0-9])", text).group(1))
    assert stated and float(stated.group(1)) < bound
    with tempfile.TemporaryDirectory() as workdir:
        out = subprocess.run(
            [sys.executable, "-m", "experiments.main", "--config=configs/adding.py", f"--workdir={workdir}"],
            capture_output=True, text=True, cwd=README.parent, timeout=900,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    line = re.search(
        r"run: finished; final test loss ([0-9.e-]+) \(step 2000\); best .*; chance loss 0.1667", out.stdout
    )
    assert line, out.stdout
    assert float(line.group(1)) < bound
