"""Several devices and several processes, each in a fresh Python: ONE subprocess sees 4 CPU devices and runs every
check that needs them; one test starts 2 processes on JAX's multi-process runtime (jax.distributed, gloo)."""

import json
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import config as config_lib
from experiments import engine
from tests.conftest import fast_compile_env
from tests.test_engine import tiny_config

ROOT = pathlib.Path(__file__).resolve().parent.parent

FOUR_DEVICES = """
import pathlib, sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, PartitionSpec as P
import gated
from experiments import engine
from tests.test_engine import tiny_config

assert jax.device_count() == 4, jax.devices()
workdir = pathlib.Path(sys.argv[1])

# 1. The default path (fused kernels, and the reference path for the GRU with reset="before") inside shard_map, the
# batch split over the devices: the gradient, a jvp and a Hessian-vector product equal the unsharded ones. A zero
# initial carry, the same on every device, is marked varying by gated.run.
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, PartitionSpec as P
import gated
mesh = Mesh(np.array(jax.devices()), ("batch",))
for cell in (gated.cells.LSTM(4), gated.cells.GRU(4), gated.cells.RNN(4), gated.cells.GRU(4, reset="before")):
    params = cell.init(jax.random.key(0), 3, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (6, 8, 3), jnp.float64)
    lengths = jnp.array([6, 2, 0, 4, 6, 5, 1, 3])

    def derivatives(p, x, n):  # the gradient, a jvp and a Hessian-vector product of the summed loss
        loss = lambda q: jnp.sum(jnp.tanh(gated.run(cell, q, x, lengths=n)[1]))
        v = jax.tree.map(jnp.ones_like, p)
        return jax.grad(loss)(p), jax.jvp(loss, (p,), (v,))[1], jax.jvp(jax.grad(loss), (p,), (v,))[1]

    def per_shard(p, x, n):  # each device its share of the batch
        grad, jvp, hvp = derivatives(p, x, n)
        # The parameters are the same on every device, so reverse mode sums their cotangents over the devices
        # already; the jvp, a tangent of each device's share of the loss, is summed here.
        return grad, jax.lax.psum(jvp, "batch"), hvp

    sharded = jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), P(None, "batch"), P("batch")), out_specs=P())
    got, want = jax.jit(sharded)(params, xs, lengths), jax.jit(derivatives)(params, xs, lengths)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)

# 2. The engine: a sweep's run axis sharded over the devices, and a single run's batch (data parallelism).
assert engine._parallelism(4, tiny_config().train.batch_size)[0] is not None
engine.train_and_evaluate(tiny_config(), workdir / "sweep", [{"seed": s} for s in range(4)])
assert engine._parallelism(1, tiny_config().train.batch_size)[1] is not None
engine.train_and_evaluate(tiny_config(), workdir / "single")
"""


def _final(run_dir):
    with np.load(run_dir / "final.npz") as f:
        return {k: f[k] for k in f.files}


def _assert_close(a, b):
    fa, fb = _final(a), _final(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_allclose(fa[k], fb[k], rtol=2e-5, atol=1e-6, err_msg=k)


@pytest.mark.slow
def test_on_four_cpu_devices(tmp_path):
    env = fast_compile_env("--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    env["JAX_ENABLE_X64"] = "1"  # as this test process (conftest), so both draw the same random streams
    proc = subprocess.run([sys.executable, "-c", FOUR_DEVICES, str(tmp_path / "four")], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = [{"seed": s} for s in range(4)]
    engine.train_and_evaluate(tiny_config(), tmp_path / "one" / "sweep", sweep)
    for entry in sweep:
        name = config_lib.run_name(entry)
        _assert_close(tmp_path / "one" / "sweep" / "runs" / name, tmp_path / "four" / "sweep" / "runs" / name)
    engine.train_and_evaluate(tiny_config(), tmp_path / "one" / "single")
    _assert_close(tmp_path / "one" / "single", tmp_path / "four" / "single")


TINY = ["--config.task.length=10", "--config.model.hidden_size=4", "--config.train.batch_size=8",
        "--config.train.eval_batch_size=8", "--config.train.log_every=50", "--config.train.eval_every=100"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(workdir, steps, processes=2, *extra):
    port = _free_port()
    env = fast_compile_env(JAX_PLATFORMS="cpu")
    base = [sys.executable, "-m", "experiments.main", "--config=configs/adding.py", f"--workdir={workdir}", *TINY,
            f"--config.train.steps={steps}", "--config.train.checkpoint_every=100", *extra]  # fmt: skip
    if processes == 1:
        return [subprocess.Popen(base, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    return [
        subprocess.Popen(
            [*base, f"--coordinator=localhost:{port}", f"--num_processes={processes}", f"--process_id={i}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(processes)
    ]


def _wait(procs):
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]


@pytest.mark.slow
def test_two_processes_share_a_sweep_and_resume_it(tmp_path):
    """jax.distributed with 2 CPU processes on localhost: the sweep's runs are sharded over both processes'
    devices, only process 0 writes, a sweep killed (SIGKILL, both processes) after its first checkpoint resumes, and
    the result equals the single-process run."""
    steps = 300
    procs = _launch(tmp_path / "two", steps, 2, "--sweep")
    checkpoint = tmp_path / "two" / "groups" / "group-0.msgpack"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and procs[0].poll() is None:
        time.sleep(0.02)
    finished = (tmp_path / "two" / "runs" / "cell-lstm_seed-0" / "result.json").exists()
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert checkpoint.exists() and not finished, "killed too late to test resuming"
    _wait(_launch(tmp_path / "two", steps, 2, "--sweep"))  # the same command again
    _wait(_launch(tmp_path / "one", steps, 1, "--sweep"))
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert two.keys() == one.keys() and len(two) == 8
    for name in one:
        assert two[name]["status"] == one[name]["status"] == "finished"
        np.testing.assert_allclose(two[name]["final"]["loss"], one[name]["final"]["loss"], rtol=1e-4)
        _assert_close(tmp_path / "one" / "runs" / name, tmp_path / "two" / "runs" / name)
