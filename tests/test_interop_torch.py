"""PyTorch interop: live against torch when installed, always against the committed golden fixtures."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gated
from gated.interop import torch as interop
from tests.conftest import random_params, record_error
from tests.torch_cases import CASES, run_torch

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "torch_golden.npz"


def check_case(name, record, config, dtype, rtol, atol):
    """gated's outputs, final states and gradients (input and every named weight) equal torch's."""
    weights = {k.removeprefix("weight/"): jnp.asarray(v, dtype) for k, v in record.items() if k.startswith("weight/")}
    x, r, s = (jnp.asarray(record[k], dtype) for k in ("x", "R", "S"))

    def loss(weights, x):
        layer, params = interop.from_state_dict(weights, config)
        carry, ys = layer(params, x)
        state = interop.final_state(carry, config)
        h_n, c_n = state if config.mode == "LSTM" else (state, None)
        total = jnp.sum(ys * r) + jnp.sum(h_n * s[..., : config.output_size])
        total = total + (0.0 if c_n is None else jnp.sum(c_n * s))
        return total, (ys, h_n, c_n)

    (_, (ys, h_n, c_n)), (g_w, g_x) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(weights, x)
    got = {"output": ys, "h_n": h_n, "grad/x": g_x, **{f"grad/{k}": v for k, v in g_w.items()}}
    if c_n is not None:
        got["c_n"] = c_n
    assert set(got) == {k for k in record if k.startswith("grad/") or k in ("output", "h_n", "c_n")}
    for key, value in got.items():
        assert value.dtype == dtype
        np.testing.assert_allclose(value, record[key], rtol=rtol, atol=atol, err_msg=f"{name}: {key}")
        record_error("torch", name, dtype, value, record[key])


def _golden_cases():
    data = np.load(GOLDEN)
    for name in CASES:
        config = interop.TorchConfig(**json.loads(str(data[f"{name}/config"])))
        record = {k.removeprefix(f"{name}/"): data[k] for k in data.files if k.startswith(f"{name}/")}
        yield name, config, record


@pytest.mark.parametrize("name, config, record", list(_golden_cases()), ids=list(CASES))
def test_against_golden_torch_fixtures_float64(name, config, record):
    check_case(name, record, config, jnp.float64, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_against_live_torch_float32(name):
    torch = pytest.importorskip("torch")
    config = interop.TorchConfig(**CASES[name])
    check_case(name, run_torch(torch, config, 100, torch.float32), config, jnp.float32, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_gated_state_dict_gated_is_exact(name):
    config = interop.TorchConfig(**CASES[name])
    layer = interop.layer_for(config)
    params = random_params(layer, jax.random.key(0), config.input_size, jnp.float32)
    if not config.bias:
        params = jax.tree.map(
            lambda p: (
                p._replace(bias=jnp.zeros_like(p.bias))
                if isinstance(p, gated.cells.LSTMParams | gated.cells.RNNParams)
                else p._replace(bias=jnp.zeros_like(p.bias), candidate_bias=jnp.zeros_like(p.candidate_bias))
            ),
            params,
            is_leaf=lambda p: isinstance(p, gated.cells.LSTMParams | gated.cells.GRUParams | gated.cells.RNNParams),
        )
    _, back = interop.from_state_dict(interop.to_state_dict(params, config), config)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)

    pytest.importorskip("torch")
    module = interop.to_torch(params, config)
    assert interop.config_of(module) == config
    _, from_module = interop.from_torch(module)
    for a, b in zip(jax.tree.leaves(from_module), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_errors():
    config = interop.TorchConfig(**CASES["lstm_nobias"])
    with pytest.raises(ValueError, match=r"state_dict: missing 'weight_ih_l0'"):
        interop.from_state_dict({}, config)
    bad = {"weight_ih_l0": np.zeros((20, 4)), "weight_hh_l0": np.zeros((20, 5))}
    with pytest.raises(ValueError, match=r"state_dict\['weight_ih_l0'\]: expected shape \(20, 3\), got \(20, 4\)"):
        interop.from_state_dict(bad, config)
    with pytest.raises(ValueError, match=r"config.mode: expected one of"):
        interop.cell_for(config._replace(mode="LSTMP"))
    layer = interop.layer_for(config)
    params = random_params(layer, jax.random.key(0), 3, jnp.float32)
    with pytest.raises(ValueError, match=r"non-zero biases, which a bias=False PyTorch module drops"):
        interop.to_state_dict(params, config)
    # parameters of another hidden size: refused, naming the expected and received shapes
    wide = random_params(interop.layer_for(config._replace(hidden_size=6)), jax.random.key(0), 3, jnp.float32)
    with pytest.raises(ValueError, match=r"params\[0\].cell.input_kernel: expected shape \(3, 20\) .* got \(3, 24\)"):
        interop.to_state_dict(wide, config)


def test_proj_size_is_read_and_only_an_lstm_has_it():
    """An LSTM with proj_size is LSTM(H, proj_size=P) (the fixtures and live cases check its numbers); its state
    dict goes back to PyTorch exactly, weight_hr included; a GRU with a projection is refused."""
    torch = pytest.importorskip("torch")
    module = torch.nn.LSTM(3, 4, proj_size=2)
    config = interop.config_of(module)
    assert config.proj_size == 2 and config.output_size == 2
    layer, params = interop.from_torch(module)
    assert layer.layers[0].cell.proj_size == 2 and layer.output_size == 2
    back = interop.to_state_dict(params, config)  # the weights as they were (the two biases come back summed)
    for name in ("weight_ih_l0", "weight_hh_l0", "weight_hr_l0"):
        np.testing.assert_array_equal(back[name], module.state_dict()[name].numpy())
    jax.tree.map(np.testing.assert_array_equal, interop.from_state_dict(back, config)[1], params)
    with pytest.raises(ValueError, match="config.proj_size: only an LSTM has a projection, got 2 for GRU"):
        interop.cell_for(config._replace(mode="GRU"))
    with pytest.raises(TypeError, match=r"module: expected torch.nn.LSTM, GRU or RNN"):
        interop.config_of(torch.nn.Linear(3, 4))
