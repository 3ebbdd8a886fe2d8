"""Checked options: sizes, flags, numbers and names, each refused in one place with its name, the value it got
and what was expected.

Every public constructor of gated (cells, layers) and :func:`gated.run` take their options through these. NumPy and
JAX scalars are accepted where a Python ``int``, ``float`` or ``bool`` is meant (``np.int64(8)`` as a size), and
are normalised to the Python type, so a cell stays hashable and its options print and serialise as plain values.
Booleans are never taken for numbers (``True`` is no size), and non-finite numbers are refused.

A cell declares each option with :func:`option`; ``Cell.__post_init__`` runs every field's check
(:func:`check_fields`), and the config schema of the experiments reads each option's type from the same field
(:func:`option_type`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import operator
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_) or (getattr(value, "dtype", None) == np.bool_ and np.ndim(value) == 0)


def integer(name: str, value: Any, minimum: int | None = 1, expected: str | None = None) -> int:
    """``value`` as a Python int, at least ``minimum``: an int, or a NumPy or JAX integer scalar; never a bool.

    Raises:
      ValueError: anything else, naming ``name``, the value and what was expected.
    """
    if expected is None:
        expected = {None: "an int", 0: "an int >= 0", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
    try:
        if _is_bool(value) or isinstance(value, float | str):
            raise TypeError
        result = operator.index(value)
    except TypeError:
        raise ValueError(f"{name}: expected {expected}, got {value!r}") from None
    if minimum is not None and result < minimum:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return result


def number(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
    expected: str | None = None,
) -> float:
    """``value`` as a finite Python float in the interval from ``low`` to ``high`` (each end closed unless
    ``low_open``/``high_open``): an int or float, or a NumPy or JAX real scalar; never a bool or a string.

    Raises:
      ValueError: anything else, naming ``name``, the value and what was expected.
    """
    if expected is None:
        expected = "a finite number"
        if low > -math.inf and high < math.inf:
            expected += f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low > -math.inf:
            expected += f" {'>' if low_open else '>='} {low:g}"
        elif high < math.inf:
            expected += f" {'<' if high_open else '<='} {high:g}"
    ok = not _is_bool(value) and (isinstance(value, numbers.Real) or (np.ndim(value) == 0 and _real_dtype(value)))
    result = float(value) if ok else math.nan
    ok = ok and math.isfinite(result)
    ok = ok and (result > low if low_open else result >= low) and (result < high if high_open else result <= high)
    if not ok:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return result


def _real_dtype(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer))


def boolean(name: str, value: Any) -> bool:
    """``value`` as a Python bool: a bool or a NumPy or JAX boolean scalar; never an int.

    Raises:
      TypeError: anything else, naming ``name`` and the value.
    """
    if not _is_bool(value):
        raise TypeError(f"{name}: expected a bool, got {value!r}")
    return bool(value)


def choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``.

    Raises:
      ValueError: anything else, naming ``name``, the value and the choices.
    """
    if not isinstance(value, str) or value not in choices:
        expected = " or ".join(map(repr, choices)) if len(choices) == 2 else f"one of {tuple(choices)}"
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return value


# The range of a linear cell's decay: Grazzi et al. 2025's "[-1, 1]" lets the state flip its sign.
EIGENVALUES = ("[0, 1]", "[-1, 1]")

_TYPES = {integer: int, number: float, boolean: bool, choice: str}


def option(default: Any = dataclasses.MISSING, check: Callable[..., Any] = number, optional: bool = False, **kwargs):
    """A dataclass field checked by ``check`` (:func:`integer`, :func:`number`, :func:`boolean` or :func:`choice`,
    with ``kwargs``, e.g. ``minimum=1`` or ``choices=(...)``) when the object is made; ``optional`` lets None
    through (the option unset)."""
    metadata = {"check": functools.partial(check, **kwargs), "type": _TYPES[check], "optional": optional}
    return dataclasses.field(default=default, metadata=metadata)


def check_fields(obj: Any) -> None:
    """Runs every :func:`option` field's check on the frozen dataclass ``obj`` and stores the normalised value."""
    for f in dataclasses.fields(obj):
        if "check" not in f.metadata:
            continue
        value = getattr(obj, f.name)
        if value is None and f.metadata["optional"]:
            continue
        object.__setattr__(obj, f.name, f.metadata["check"](f.name, value))


def option_type(field: dataclasses.Field) -> type:
    """The Python type of an :func:`option` field: int, float, bool or str."""
    return field.metadata["type"]


class Call(NamedTuple):
    """A call of :func:`gated.run` after its checks: what a backend's ``supports`` and ``sequence`` read."""

    impl: str
    unroll: int = 1
    remat: bool = False
    chunk: int = 64
    return_carries: bool = False
    dtype: Any = None
    num_steps: int = 1
    resets: bool = False

    def reference_only(self) -> str | None:
        """Why only the reference path can serve this call (a kernel that keeps no carries and restores none), or
        None."""
        if self.return_carries:
            return "return_carries=True is served by the reference path"
        if self.num_steps == 0:
            return "an empty sequence (T = 0) is served by the reference path"
        if self.resets:
            return "resets are served by the reference path"
        return None


class Keywords:
    """A dataclass base whose constructor refuses an unknown keyword in one line that lists the valid ones
    (``chunks: not an option of gated.Recurrent; expected some of ['reverse', ...]``), before its fields are set.
    ``unknown_keyword`` words the line; a subclass may say more (a cell names its options)."""

    def __new__(cls, *args, **kwargs):
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise TypeError(cls.unknown_keyword(unknown, names))
        return super().__new__(cls)

    @classmethod
    def unknown_keyword(cls, unknown: list[str], names: list[str]) -> str:
        where = f"{cls.__module__.split('.')[0]}.{cls.__qualname__}"
        return f"{unknown[0]}: not an option of {where}; expected some of {names}"


def register_by_name(registry: dict[str, type], cls: type, what: str) -> None:
    """Puts ``cls`` in ``registry`` under the ``name`` it defines itself (one it inherits does not count, nor a base
    without one): what a cell, block or mixer class does where it is defined (``__init_subclass__``).

    Raises:
      TypeError: a name another class has registered already.
    """
    name = vars(cls).get("name")
    if isinstance(name, str):
        if name in registry:
            raise TypeError(f"{what} name: {name!r} is registered by {registry[name].__qualname__} already")
        registry[name] = cls
