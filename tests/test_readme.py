"""The README's Python snippets run as written, in a fresh Python with JAX's default settings."""

import importlib.util
import pathlib
import re
import subprocess
import sys

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
