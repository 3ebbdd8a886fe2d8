"""Test-wide JAX settings and shared helpers.

float64 is enabled so that references can be checked to 1e-10; float32 tests
ask for float32 explicitly. Rank promotion raises, so no implicit broadcasting
hides in the library.
"""

import collections
import os

# Compile fast: XLA:CPU's older elemental emitters and no LLVM optimisation compile the suite's thousands of small
# programs about 3x faster (the suite is mostly compilation; the programs run slower) and compute the same math.
# XLA reads XLA_FLAGS once, at its first compile, so this process sets it for that compile and restores it after.
# Subprocesses run with XLA's defaults (the README's main job, a run's bits alone and in its sweep: as a user runs
# them) unless a test passes FAST_COMPILE in their environment (fast_compile_env).
FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"
_FLAGS = os.environ.get("XLA_FLAGS")
os.environ["XLA_FLAGS"] = f"{_FLAGS or ''} {FAST_COMPILE}"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.jit(lambda x: x + 1)(0)  # XLA parses XLA_FLAGS here
if _FLAGS is None:
    del os.environ["XLA_FLAGS"]
else:
    os.environ["XLA_FLAGS"] = _FLAGS

import gated  # noqa: E402


def fast_compile_env(flags: str = "", **env) -> dict:
    """This process's environment for a subprocess that compiles fast (FAST_COMPILE beside ``flags``)."""
    return {**os.environ, **env, "XLA_FLAGS": f"{flags} {FAST_COMPILE}".strip()}


# Largest relative error per (comparison, case, dtype), filled by the tests that
# compare against a reference and printed at the end of the run.
ERRORS: dict = collections.defaultdict(float)


def record_error(comparison, case, dtype, actual, expected):
    key = (comparison, case, jnp.dtype(dtype).name)
    ERRORS[key] = max(ERRORS[key], relative_error(actual, expected))


# Every cell configuration checked against the reference.
CELL_CONFIGS = [
    ("rnn", {"activation": "tanh"}),
    ("rnn", {"activation": "relu"}),
    ("rnn", {"activation": "sigmoid"}),
    ("rnn", {"activation": "identity"}),
    ("lstm", {}),
    ("lstm", {"peepholes": True}),
    ("lstm", {"coupled": True}),
    ("lstm", {"coupled": True, "peepholes": True}),
    ("lstm", {"forget_gate": False}),
    ("lstm", {"forget_gate": False, "peepholes": True}),
    ("lstm", {"layer_norm": True, "peepholes": True}),
    ("gru", {"update": "keep", "reset": "after"}),
    ("gru", {"update": "keep", "reset": "before"}),
    ("gru", {"update": "write", "reset": "after"}),
    ("gru", {"update": "write", "reset": "before"}),
]


def config_id(config):
    name, options = config
    return name + "".join(f"-{k}={v}" for k, v in options.items())


def _seed(key):
    return int(np.asarray(jax.random.key_data(key)).ravel()[-1])


def random_params(cell, key, input_size, dtype, scale=0.5):
    """Random parameters of the shapes ``cell.init`` gives (taken with ``jax.eval_shape``,
    so nothing compiles): N(0, scale^2) entries, biases and peepholes included."""
    shapes = jax.eval_shape(lambda k: cell.init(k, input_size, dtype), key)
    rng = np.random.default_rng(_seed(key))
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), dtype), shapes)


def random_carry(cell, key, batch_shape, dtype, scale=0.5):
    """A random carry of the structure of ``cell.initial_carry(batch_shape)``."""
    rng = np.random.default_rng(_seed(key) + 7)
    shapes = jax.eval_shape(lambda: cell.initial_carry(batch_shape, dtype))
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), dtype), shapes)


def relative_error(actual, expected):
    """max |a - e| / max(|e|, 1e-3): relative where values are not tiny."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-3), initial=0.0))


@pytest.fixture(params=CELL_CONFIGS, ids=config_id)
def cell_config(request):
    return request.param


def make_cell(config, hidden_size):
    name, options = config
    return gated.cells.get(name, hidden_size, **options)


def pytest_terminal_summary(terminalreporter):
    if not ERRORS:
        return
    terminalreporter.section("largest relative error against each reference (|a - e| / max(|e|, 1e-3))")
    for (comparison, case, dtype), err in sorted(ERRORS.items()):
        terminalreporter.write_line(f"{comparison:16s} {case:45s} {dtype:8s} {err:.2e}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With ``GATED_FORBID_SKIPS=1`` (``.ci/run``, which installs every test-only oracle), a skipped test fails:
    a test CI skips checks nothing. Tests marked ``hardware`` (a GPU CI lacks) may still skip."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("GATED_FORBID_SKIPS") == "1" and item.get_closest_marker("hardware") is None:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome, report.longrepr = "failed", f"skipped where GATED_FORBID_SKIPS=1 forbids it: {reason}"
