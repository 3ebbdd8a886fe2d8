"""The README's Python snippets run as written."""

import importlib.util
import pathlib
import re

import pytest

README = pathlib.Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_snippets_run():
    assert len(BLOCKS) >= 3
    namespace = {}
    for block in BLOCKS:
        if "import torch" in block and importlib.util.find_spec("torch") is None:
            continue
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["grads"].bias.shape == (512,)
    assert namespace["logits"].shape == (8, 2)


def test_readme_torch_snippet():
    pytest.importorskip("torch")
    namespace = {}
    for block in BLOCKS:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["h_n"].shape == (4, 8, 32) and namespace["ys"].shape == (20, 8, 64)
