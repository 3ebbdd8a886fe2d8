"""The README's Python snippets run as written, in a fresh Python with JAX's default settings."""

import importlib.util
import pathlib
import re
import subprocess
import sys
import tempfile

import pytest

README = pathlib.Path(__file__).parent.parent / "README.md"


@pytest.mark.slow
def test_readme_snippets_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    has_torch = importlib.util.find_spec("torch") is not None
    script = "\n".join(b for b in blocks if has_torch or "import torch" not in b)
    script += "\nassert grads.bias.shape == (512,) and logits.shape == (8, 2)\n"
    script += "assert bool(jnp.all(bound >= spectral * (1 - 1e-6))) and norms.shape == (50,) and rate < 0\n"
    if has_torch:
        script += "assert h_n.shape == (4, 8, 32) and ys.shape == (20, 8, 64)\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=README.parent)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_the_main_job_prints_what_the_readme_says():
    """configs/adding.py at its full size, as the README's set-up command runs it (float32, JAX's defaults): the
    printed line has the README's form and the final test MSE is below the bound the README gives."""
    text = README.read_text()
    stated = re.search(r"\nrun: finished; final test loss ([0-9.]+) \(step 2000\); best [0-9.]+ \(step \d+\); "
                       r"chance loss 0.1667\n", text)  # fmt: skip
    bound = float(re.search(r"checks that it stays below ([0-9.]+)\)", text).group(1))
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
