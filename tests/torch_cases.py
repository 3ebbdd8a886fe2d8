"""PyTorch interop cases shared by the live test and the golden-fixture generator.

Each case runs a torch module on fixed inputs and records the outputs, the
final states and the gradients of the scalar loss

    L = sum(output * R) + sum(h_n * S[..., :P]) [+ sum(c_n * S)]

(P the size of h: ``proj_size`` where set, else the hidden size).

with respect to the input and every named weight.
"""

import numpy as np

from gated.interop.torch import torch_module

CASES = {
    "lstm_2layer_bidirectional": dict(mode="LSTM", input_size=3, hidden_size=4, num_layers=2, bidirectional=True),
    "lstm_nobias": dict(mode="LSTM", input_size=3, hidden_size=5, bias=False),
    "lstm_projected_2layer_bidirectional": dict(
        mode="LSTM", input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2
    ),  # fmt: skip
    "gru_2layer_bidirectional": dict(mode="GRU", input_size=3, hidden_size=4, num_layers=2, bidirectional=True),
    "gru_nobias": dict(mode="GRU", input_size=2, hidden_size=3, bias=False),
    "rnn_tanh_2layer": dict(mode="RNN_TANH", input_size=3, hidden_size=4, num_layers=2),
    "rnn_relu_bidirectional": dict(mode="RNN_RELU", input_size=3, hidden_size=4, bidirectional=True),
}
T, B = 5, 2


def run_torch(torch, config, seed, dtype):
    """Random module and inputs; returns a dict of NumPy arrays (weights, x, R, S, outputs and grads)."""
    torch.manual_seed(seed)
    module = torch_module(config).to(dtype)
    rng = np.random.default_rng(seed)
    dirs = 2 if config.bidirectional else 1
    x = torch.tensor(rng.standard_normal((T, B, config.input_size)), dtype=dtype, requires_grad=True)
    r = torch.tensor(rng.standard_normal((T, B, dirs * config.output_size)), dtype=dtype)
    s = torch.tensor(rng.standard_normal((config.num_layers * dirs, B, config.hidden_size)), dtype=dtype)
    out, state = module(x)
    h_n, c_n = state if config.mode == "LSTM" else (state, None)
    loss = (out * r).sum() + (h_n * s[..., : config.output_size]).sum() + (0 if c_n is None else (c_n * s).sum())
    loss.backward()
    record = {"x": x, "R": r, "S": s, "output": out, "h_n": h_n, "grad/x": x.grad}
    if c_n is not None:
        record["c_n"] = c_n
    for name, p in module.named_parameters():
        record[f"weight/{name}"] = p
        record[f"grad/{name}"] = p.grad
    return {k: v.detach().numpy().copy() for k, v in record.items()}
