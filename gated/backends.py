"""The backends of :func:`gated.run`, registered by the modules that define them, and what ``impl="auto"`` runs.

A backend is a function pair over time-major, batch-flat inputs read forwards (:func:`gated.run` flips them to read
backwards):

- ``supports(cell, call) -> str | None``: None if it serves this call of a cell of one of its forms, else why not;
- ``sequence(cell, params, xs, carry, mask, resets, call) -> (carry, ys)``: ``xs`` ``(T, B, D)``, carry leaves
  ``(B, ...)``, ``mask`` and ``resets`` ``(T, B)`` or None.

:func:`register` records it under its name with the forms (:mod:`gated.forms`) it serves. A backend reads nothing of
a cell but its form's methods, so it names no cell; adding one is a module and one :func:`register` call (and one
import in :mod:`gated.scan`, which loads them all).

:data:`AUTO` is what ``impl="auto"`` tries, per platform: the first row whose form the cell takes, then the first
backend of that row that supports the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from gated import forms


class Backend(NamedTuple):
    """A registered backend: its name, the forms it serves, ``supports`` and ``sequence``; ``pure``: pure JAX
    (every transform, the same numbers everywhere), False for an opt-in kernel."""

    name: str
    forms: tuple[type[forms.Form], ...]
    supports: Callable[..., str | None]
    sequence: Callable[..., tuple[Any, Any]]
    pure: bool = True


REGISTRY: dict[str, Backend] = {}


def register(name: str, *, serves: tuple[type[forms.Form], ...], supports, sequence, pure: bool = True) -> Backend:
    """Registers a backend of :func:`gated.run` under ``name`` (``impl=name``), serving the forms ``serves``."""
    if name in REGISTRY or name == "auto":
        raise ValueError(f"backend name: {name!r} is already registered")
    REGISTRY[name] = backend = Backend(name, tuple(serves), supports, sequence, pure)
    return backend


def impls() -> tuple[str, ...]:
    """Every value ``impl`` takes: "auto", the registered pure-JAX backends, then the opt-in ones (``pure=False``),
    each group in the order its modules registered."""
    return ("auto", *(n for n, b in REGISTRY.items() if b.pure), *(n for n, b in REGISTRY.items() if not b.pure))


def reason(name: str, cell: Any, call: Any) -> str | None:
    """None if backend ``name`` serves ``call`` of ``cell``, else why not: its forms first, then its own check."""
    backend = REGISTRY[name]
    if not isinstance(cell, backend.forms):
        served = " or ".join(f.form for f in backend.forms)
        return f"the {cell.name} cell is {forms.describe(cell)}, and {name!r} serves the {served} form"
    return backend.supports(cell, call)


# What impl="auto" runs: per platform, rows of (form, backends to try in order); the first row whose form the cell
# takes is used, and the first of its backends that supports the call runs it (a call one does not serve, as
# return_carries=True, falls through to "reference"). The CPU row is measured: benchmarks/linear_forms.py, B 8,
# D = H = 64, T = 256 to 16384, its table in benchmarks/results/linear_forms.md (2-core AMD EPYC, AVX2 and AVX-512),
# and benchmarks/training_step.py for the fused kernels. There the matrix cells with a scalar decay train fastest
# chunkwise, the delta rule recomputed (its triangular systems make the chunkwise form slower on a CPU), the
# elementwise recurrences on the sequential scan of their update alone, chunk by chunk, and a nonlinear cell without
# a fused kernel (the sLSTM) recomputed. The other platforms' row is not measured (no GPU was lent): the chunkwise
# form for the matrix cells, the associative scan for the elementwise ones.
AUTO: dict[str, tuple[tuple[type[forms.Form], tuple[str, ...]], ...]] = {
    "cpu": (
        (forms.DeltaRule, ("recomputed",)),
        (forms.MatrixDecay, ("chunkwise", "reference")),
        (forms.KeyDecay, ("chunkwise", "reference")),
        (forms.Diagonal, ("sequential", "reference")),
        (forms.Nonlinear, ("fused", "recomputed", "reference")),
    ),
    "default": (
        (forms.MatrixState, ("chunkwise", "reference")),
        (forms.Diagonal, ("associative", "reference")),
        (forms.Nonlinear, ("fused", "reference")),
    ),
}


def auto_row(cell: Any, platform: str | None = None) -> tuple[str, ...]:
    """The backends ``impl="auto"`` tries for ``cell`` on ``platform`` (default: JAX's), in order."""
    rows = AUTO.get(platform or jax.default_backend(), AUTO["default"])
    return next((names for form, names in rows if isinstance(cell, form)), ("reference",))


def choose(cell: Any, call: Any) -> str:
    """The backend that runs ``call``: ``call.impl``, or for "auto" the first of :func:`auto_row` that supports it.

    Raises:
      ValueError: an ``impl`` that does not support the call, with the reason.
    """
    names = auto_row(cell) if call.impl == "auto" else (call.impl,)
    why = None
    for name in names:
        why = reason(name, cell, call._replace(impl=name))
        if why is None:
            return name
    raise ValueError(f"impl: {call.impl!r} is not available here: {why} (use impl='auto' or 'reference')")
