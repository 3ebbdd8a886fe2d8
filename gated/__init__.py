"""gated: gated recurrent networks (RNN, LSTM, GRU) as pure JAX functions.

Notation used throughout: T time, B batch (``*batch`` for any number of batch
axes), D input size, H hidden size, G number of fused gates.

Cells (:mod:`gated.cells`), one example at a time::

    cells.RNN(H, activation=...)   cells.LSTM(H, forget_bias=..., peepholes=..., coupled=..., forget_gate=...)
    cells.GRU(H, update="keep"|"write", reset="after"|"before")   cells.get(name, H, **options)
    cells.MinGRU | MinLSTM | LRU | RGLRU | SelectiveSSM | MLSTM | SSD (gated linear recurrences)   cells.SLSTM
    cells.DeltaNet | GatedDeltaNet (the delta rule)
    params = cell.init(key, D)     carry = cell.initial_carry()
    u = cell.project(params, x)    carry, y = cell.step(params, carry, u)    carry, y = cell(params, carry, x)

Sequences::

    carry, ys = run(cell, params, xs, carry=None, lengths=None, reverse=False,
                    time_axis=0, unroll=1, remat=False, return_carries=False, resets=None, chunk=64,
                    impl="auto" | "reference" | "fused" | "associative" | "chunked" | "sequential" | "chunkwise"
                         | "recomputed" | "native")
    layer = Recurrent(cell, impl=...) | Bidirectional(cell_or_layer, merge="concat") | Stack([...], residual=False)
    params = layer.init(key, D);   carry, ys = layer(params, xs, lengths=..., time_axis=...)

Blocks (:mod:`gated.blocks`), what the modern papers stack around a recurrence::

    blocks.RMSNorm() | LayerNorm() | MLP(F) | GatedMLP(F, variant="swiglu") | Highway()   y = block(params, x)
    blocks.CausalConv(width=4)     carry, ys = conv(params, xs, carry=None)   (a streaming state)
    mixers.Griffin(cell) | mixers.Mamba(cell)   carry, ys = mixer(params, xs, carry=None, resets=None)
    models.Model(V, D, layers=[models.Residual(mixer), ...])   carry, logits = model(params, tokens, key=None)
    models.generate(model, params, prompt, steps, key, temperature=0.0)
"""

from gated import blocks, cells, init, mixers, models
from gated.cells import GRUGates, GRUParams, LSTMGates, LSTMParams, LSTMState, RNNParams
from gated.layers import (
    Bidirectional,
    BidirectionalState,
    Recurrent,
    RecurrentParams,
    Stack,
)
from gated.scan import run

__version__ = "0.1.0"

__all__ = [
    "Bidirectional",
    "BidirectionalState",
    "GRUGates",
    "GRUParams",
    "LSTMGates",
    "LSTMParams",
    "LSTMState",
    "RNNParams",
    "Recurrent",
    "RecurrentParams",
    "Stack",
    "blocks",
    "cells",
    "init",
    "mixers",
    "models",
    "run",
]
