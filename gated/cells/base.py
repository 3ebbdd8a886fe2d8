"""The base classes of every cell, :class:`Cell` and :class:`RecurrentCell`, and the activations. The notation and
the split of a cell into ``project`` (outside the scan) and ``step`` (inside it) are in :mod:`gated.cells`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from gated import forms
from gated import init as initializers
from gated import options as opts
from gated.options import Keywords, choice, integer, number, option

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda z: z,
}


def hidden_h(state: Any) -> Array:
    """The hidden state the diagnostics follow (:func:`gated.diagnostics.hidden`) of a carry that has one: ``h``.
    A carry's ``hidden`` method, as ``with_hidden_h`` is its ``with_hidden``."""
    return state.h


def with_hidden_h(state: Any, h: Array) -> Any:
    """The carry with its hidden state ``h`` replaced (the inverse of :func:`hidden_h`)."""
    return state._replace(h=h)


def _check_array(name: str, x: Any, shape: tuple[int, ...], what: str) -> Array:
    """Returns ``x`` as an array after checking its dtype is floating and its shape is ``shape``."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
    if x.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} ({what}), got {x.shape}")
    return x


# Every cell class by name, in the order they are defined (gated.cells imports the classic chapter first).
CELLS: dict[str, type] = {}


@dataclasses.dataclass(frozen=True)
class Cell(Keywords, forms.Form):
    """What every cell has, whatever its form (:mod:`gated.forms`): its size, options, parameters, carry and input
    projection. A cell class also inherits the forms it takes, which say what the backends of :func:`gated.run` read.

    Attributes:
      hidden_size: H, the size of the hidden state.
    """

    hidden_size: int = option(check=integer, minimum=1)
    _: dataclasses.KW_ONLY

    name: ClassVar[str]
    gates: ClassVar[tuple[str, ...]]
    # The NamedTuple of the cell's parameters, as ``init`` returns them.
    params_type: ClassVar[type]
    # Whether each step reads random masks appended to its inputs (RecurrentDropout), drawn from a layer's key.
    stochastic: ClassVar[bool] = False
    # Whether a class that names itself registers in CELLS (False: a wrapper of another cell, RecurrentDropout).
    registered: ClassVar[bool] = True

    @classmethod
    def unknown_keyword(cls, unknown: list[str], names: list[str]) -> str:
        valid = [n for n in names if n != "hidden_size"]
        return f"{getattr(cls, 'name', cls.__name__)} cell: unknown option(s) {unknown}; valid options are {valid}"

    @property
    def restarts(self) -> bool:
        """Whether a segment start (``resets`` of :func:`gated.run`) has the cell's own rule (a linear cell's
        ``restart``) instead of the initial carry restored and the usual step taken."""
        return False

    def __init_subclass__(cls, **kwargs):
        # A cell class that names itself registers under its name, where it is defined: cells.get, the config
        # schema (option_types) and the conformance tests read CELLS. Bases without a name, and subclasses that
        # inherit one, do not.
        super().__init_subclass__(**kwargs)
        if cls.registered:
            opts.register_by_name(CELLS, cls, "cell")

    def __post_init__(self):
        # Every option's type, finiteness and range, from its field (gated.options); then a form's checks (the heads
        # of a matrix state); a subclass's __post_init__ then checks what ties its options together.
        opts.check_fields(self)
        form_checks = getattr(super(), "__post_init__", None)
        if form_checks is not None:
            form_checks()

    @property
    def num_gates(self) -> int:
        """G, the number of fused gate blocks."""
        return len(self.gates)

    @property
    def carry_shape(self) -> tuple[int, ...]:
        """The shape of each carry leaf for one example: ``(H,)``, or ``(H, N)`` for a state of N per unit."""
        return (self.hidden_size,)

    @property
    def output_size(self) -> int:
        """The size of ``y`` (and of ``h``): H, but for an LSTM with ``proj_size``."""
        return self.hidden_size

    @property
    def projection_size(self) -> int:
        """The size of ``project(params, x)``: G*H (more for a cell with per-step vectors of another size)."""
        return self.num_gates * self.hidden_size

    def gate(self, fused: Array, name: str) -> Array:
        """The block of a fused ``(..., G*H)`` array that belongs to gate ``name``."""
        k = self.gates.index(name)
        h = self.hidden_size
        return fused[..., k * h : (k + 1) * h]

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        """Zero carry; ``batch_shape`` prepends batch axes to every leaf."""
        return jnp.zeros((*batch_shape, self.hidden_size), dtype)

    def input_size(self, params) -> int:
        """D, the size of the ``x`` that :meth:`project` reads, from the parameters."""
        return params.input_kernel.shape[0]

    def project(self, params, x: Array) -> Array:
        """Input projection ``x W_x + b`` of one example: ``(D,) -> (G*H,)``."""
        d = params.input_kernel.shape[0]
        x = _check_array("x", x, (d,), "one example of input_size D; batch with jax.vmap or gated.run")
        return x @ params.input_kernel + params.bias

    def other_states(self, carry) -> dict[str, Array]:
        """The carry's states besides ``h`` that the diagnostics report on by name (the LSTM's ``c``)."""
        return {}

    def carry_shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shape of every carry leaf for one example, in the order of ``jax.tree.leaves``."""
        return tuple(leaf.shape for leaf in jax.tree.leaves(jax.eval_shape(self.initial_carry)))

    def _check_step(self, carry, u: Array) -> Array:
        shapes = self.carry_shapes()
        leaves = jax.tree.leaves(carry)
        if len(leaves) != len(shapes):
            raise ValueError(f"carry: expected {len(shapes)} leaves (cell.initial_carry()), got {len(leaves)}")
        for i, (leaf, shape) in enumerate(zip(leaves, shapes, strict=True)):
            what = "hidden_size H, one example" if shape == (self.hidden_size,) else "one example"
            _check_array(f"carry (leaf {i})", leaf, shape, what)
        return _check_array("u", u, (self.projection_size,), "G*H, the output of cell.project")

    def step(self, params, carry, u: Array):
        """Recurrent part: ``(carry, u) -> (carry, y)``."""
        raise NotImplementedError

    def __call__(self, params, carry, x: Array):
        """One time step on one example: ``step(params, carry, project(params, x))``."""
        return self.step(params, carry, self.project(params, x))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecurrentCell(forms.Nonlinear, Cell):
    """A cell with a recurrent matrix ``h_{t-1} W_h`` (the RNN, LSTM, GRU and sLSTM), and the options of its
    initialisation; the cells without one (the gated linear recurrences) have neither, and refuse them.

    Attributes:
      recurrent_init: initialiser of the recurrent kernel, applied per gate
        block: "orthogonal" (default), "gaussian" (std recurrent_scale/sqrt(H))
        or "identity" (IRNN). See :mod:`gated.init`.
      recurrent_scale: spectral radius of each recurrent gate block at init
        (exact for "orthogonal" and "identity", asymptotic for "gaussian").
    """

    recurrent_init: str = option("orthogonal", choice, choices=initializers.RECURRENT_INITS)
    recurrent_scale: float = option(1.0, number)

    def _init_kernels(self, key: Array, input_size: int, dtype) -> tuple[Array, Array]:
        input_size = integer("input_size", input_size)
        k_in, k_rec = jax.random.split(key)
        h, g = self.hidden_size, self.num_gates
        w_x = initializers.input_kernel(k_in, input_size, g * h, dtype)
        w_h = initializers.recurrent_kernel(self.recurrent_init, k_rec, h, g, self.recurrent_scale, dtype)
        return w_x, w_h
