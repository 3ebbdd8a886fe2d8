"""Recurrent cells as pure functions over pytrees.

Notation: D input size, H hidden size, G number of fused gates. A cell is
written for ONE example (no batch axis): ``x`` is ``(D,)``, ``h`` is ``(H,)``.
Batches come from ``jax.vmap``, time from ``jax.lax.scan`` (see
:func:`gated.run`).

Every cell splits into

* ``u = cell.project(params, x)``: the input-side affine map ``x W_x + b``
  ``(G*H,)``, which depends on ``x`` only and so is computed for all time steps
  at once, outside the scan, on :func:`gated.run`'s reference path;
* ``carry, y = cell.step(params, carry, u)``: the recurrent part, the only
  thing inside the scan;
* ``carry, y = cell(params, carry, x)``: both.

Parameters are NamedTuples with fused gates: an input kernel ``(D, G*H)``, a
recurrent kernel ``(H, G*H)`` and a bias ``(G*H,)``, gate blocks side by side
in the order given by ``cell.gates``. Cells are frozen dataclasses: hashable,
so they can be static arguments of ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

import jax
import jax.numpy as jnp

from gated import options as opts

# isort: off
# The order in which the cells register (CELLS): the classic chapter, then the modern one.
from .base import ACTIVATIONS, CELLS, Array, Cell, RecurrentCell
from .rnn import RNN, RNNParams
from .lstm import LSTM, LSTMGates, LSTMNorms, LSTMParams, LSTMState
from .gru import GRU, GRUGates, GRUParams
from .linear import LinearCell, LinearParams, MinGRU, MinLSTM, positive, stabilised_combine, trailing_axes
from .lru import LRU, LRUParams, LRUState
from .rglru import RGLRU, RGLRUParams
from .ssm import SelectiveSSM, SSMParams
from .xlstm import MLSTM, SLSTM, MLSTMParams, MLSTMState, SLSTMParams, SLSTMState
from .matrix import SSD, DeltaParams, GatedDeltaNet, SSDParams, l2_normalise
from .dropout import RecurrentDropout

# isort: on

# Every other module here defines cells that register themselves: a new cell is one module (imported here, its
# class made public below).
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "ACTIVATIONS",
    "Array",
    "CELLS",
    "Cell",
    "DeltaParams",
    "GRU",
    "GRUGates",
    "GRUParams",
    "GatedDeltaNet",
    "LRU",
    "LRUParams",
    "LRUState",
    "LSTM",
    "LSTMGates",
    "LSTMNorms",
    "LSTMParams",
    "LSTMState",
    "LinearCell",
    "LinearParams",
    "MLSTM",
    "MLSTMParams",
    "MLSTMState",
    "MinGRU",
    "MinLSTM",
    "RGLRU",
    "RGLRUParams",
    "RNN",
    "RNNParams",
    "RecurrentCell",
    "RecurrentDropout",
    "SLSTM",
    "SLSTMParams",
    "SLSTMState",
    "SSD",
    "SSDParams",
    "SSMParams",
    "SelectiveSSM",
    "check_cell",
    "check_params",
    "get",
    "is_cell",
    "l2_normalise",
    "option_types",
    "positive",
    "require",
    "stabilised_combine",
    "trailing_axes",
]


def check_cell(cell: Any, name: str = "cell") -> Cell:
    """Returns ``cell`` if it is a cell of this module.

    Raises:
      TypeError: anything else (a cell's name, a layer, a Flax module), naming ``name``, what it got and how to
        make a cell.
    """
    if not isinstance(cell, Cell):
        hint = f"; make one with gated.cells.get({cell!r}, H)" if isinstance(cell, str) and cell in CELLS else ""
        got = f"str {cell!r}" if isinstance(cell, str) else type(cell).__name__
        raise TypeError(f"{name}: expected a gated.cells cell, e.g. gated.cells.LSTM(H), got {got}{hint}")
    return cell


def is_cell(value: Any) -> bool:
    """Whether ``value`` is a gated cell."""
    return isinstance(value, Cell)


def require(cell: Cell, expected: str, what: str | type) -> Cell:
    """Returns ``cell`` if it is what a function needs; ``what`` is a cell class or form (:class:`LSTM`,
    :class:`gated.forms.Diagonal`) or a method the cell must have (``"gated_update"``).

    Raises:
      TypeError: ``cell: expected EXPECTED, got NAME``.
    """
    check_cell(cell)
    ok = isinstance(cell, what) if isinstance(what, type) else hasattr(cell, what)
    if not ok:
        raise TypeError(f"cell: expected {expected}, got {cell.name!r}")
    return cell


def check_params(cell: Cell, params: Any, input_size: int | None = None, name: str = "params") -> Any:
    """Returns ``params`` after checking it has the structure and leaf shapes that ``cell.init`` gives for
    ``input_size`` (by default the rows of ``params.input_kernel``); nothing is computed (``jax.eval_shape``).

    Raises:
      ValueError: another structure, or a leaf of another shape, naming the leaf, the expected and the received
        shapes.
    """
    if input_size is None:
        input_size = jnp.shape(getattr(params, "input_kernel", jnp.zeros((1, 1))))[0]
    expected = jax.eval_shape(lambda k: cell.init(k, input_size), jax.random.key(0))
    described = f"a {cell.name} cell of hidden size {cell.hidden_size}"
    if jax.tree.structure(params) != jax.tree.structure(expected):
        raise ValueError(
            f"{name}: expected the parameters of {described} ({type(expected).__name__} with fields "
            f"{getattr(expected, '_fields', '?')}), got {type(params).__name__}"
        )
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(params), strict=True):
        if jnp.shape(got) != want.shape:
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)}: expected shape {want.shape} for {described} with "
                f"input size {input_size}, got {jnp.shape(got)}"
            )
    return params


def option_types() -> dict[str, type]:
    """Every option of every cell in :data:`CELLS` with its type (int, float, bool or str), read from the cells'
    own fields: the schema of the experiments' ``model.options``. An option that two cells share has one type."""
    types: dict[str, type] = {}
    for cls in CELLS.values():
        for f in dataclasses.fields(cls):
            if f.name != "hidden_size":
                kind = opts.option_type(f)
                if types.setdefault(f.name, kind) is not kind:
                    raise TypeError(f"option {f.name!r}: {cls.__name__} types it {kind}, another cell {types[f.name]}")
    return types


def get(name: str, hidden_size: int, **options) -> Cell:
    """Makes a cell by its registered name (a key of :data:`CELLS`: ``"lstm"``, ``"mingru"``, ...), for configs.

    Raises:
      ValueError: unknown cell name.
      TypeError: an option the cell does not have (the message lists the valid ones).
    """
    if name not in CELLS:
        raise ValueError(f"cell name: expected one of {tuple(CELLS)}, got {name!r}")
    return CELLS[name](hidden_size, **options)


# Each registered cell's class and parameters by their names (cells.LSTM, cells.LSTMParams): the class is the one
# constructor, cells.get(name, H, **options) the registry's.
for _cls in CELLS.values():
    for _public in (_cls, _cls.params_type):
        globals().setdefault(_public.__name__, _public)
__all__ = sorted({*__all__, *(c.__name__ for c in CELLS.values()), *(c.params_type.__name__ for c in CELLS.values())})
