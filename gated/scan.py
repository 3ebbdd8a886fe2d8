"""Running a cell over a sequence: :func:`run` (``gated.run``) normalises its inputs, chooses a backend, runs it.

Notation: T time, B batch (any number of batch axes, written ``*batch``), D input size, H hidden size, G fused
gates.

The arguments of :func:`run`:

- ``cell``, ``params``: a :mod:`gated.cells` cell and its parameters (``cell.init``).
- ``xs``: inputs ``(T, *batch, D)``, or with time on another axis given by ``time_axis`` (``time_axis=1`` for
  batch-major ``(B, T, D)``); the outputs have time on the same axis.
- ``carry``: initial carry with leaves ``(*batch, H)``; zeros if None.
- ``lengths``: optional integer array ``(*batch,)`` of valid lengths in [0, T]. Padded steps (t >= length) leave
  the carry unchanged and output zeros, so the returned carry is each sequence's last valid one. Their inputs are
  replaced by zeros before any arithmetic, so whatever the padding holds (NaN, Inf) reaches no value and no
  gradient.
- ``reverse``: read each sequence backwards. With ``lengths``, each sequence starts from its own last valid step;
  padding stays at the end and outputs stay aligned with their inputs.
- ``unroll``: passed to ``jax.lax.scan``.
- ``remat``: recompute in the backward pass instead of storing: on the reference path, the carry is stored only
  at every ``chunk``-th step and each chunk's steps are recomputed (``jax.checkpoint`` on a scan over chunks;
  ``impl="recomputed"`` is this path); on the others, their whole sequence. The fused kernels store only the
  carries anyway.
- ``return_carries``: return every step's full carry (for an LSTM, the ``c_t`` too) in place of the outputs; zero
  at padded steps.
- ``resets``: optional booleans shaped like ``xs`` without its feature axis (``(T, *batch)`` time-major): True
  where a new segment starts, so the initial ``carry`` is restored before that step (packed sequences, episode
  boundaries of RL rollouts). Reading backwards, each segment is read backwards from its own last step. Resets at
  padded steps are ignored.
- ``chunk``: the chunk length of ``impl="chunked"``, ``"sequential"``, ``"chunkwise"`` and ``"recomputed"`` (and of
  ``remat``).
- ``state_dtype``: the floating type the recurrence runs in (None: that of ``xs``). With ``jnp.float32``, a
  bfloat16 sequence keeps its carry, its states and their sums in float32: the parameters and inputs are widened
  inside, the outputs come back in ``xs``'s type and the carry in ``state_dtype`` (mixed precision, as the mLSTM's
  normaliser and the SSM's decays need over long sequences).
- ``impl``: the backend, each registered by its module (:mod:`gated.backends`), all pure JAX but "native":

  - "reference" (:mod:`gated.reference`, every form): ``cell.project`` for every step and batch element at once,
    as one matmul outside the scan, and ``cell.step`` inside it, vmapped over the batch; JAX differentiates the
    scan (the transcription of the equations).
  - "recomputed" (:mod:`gated.reference` with ``remat``, every form): the reference path storing its carry every
    ``chunk`` steps only, each chunk recomputed in the backward pass: a state ``(T, H, N)`` is never all held.
  - "fused" (:mod:`gated.fused`, the nonlinear form where the cell has a kernel): one kernel whose derivative is a
    linear tangent recurrence; the same values and derivatives to rounding, every transform.
  - "associative" and "chunked" (:mod:`gated.parallel`, the diagonal linear form): one associative scan over
    time, or one inside each chunk of ``chunk`` steps and a sequential scan across the chunks.
  - "sequential" (:mod:`gated.parallel`, the diagonal linear form): a ``lax.scan`` over chunks of ``chunk`` steps,
    each chunk's coefficients at once, then a ``lax.scan`` of the update ``a_t s + b_t`` alone; each chunk
    recomputed in the backward pass, so only the carry at chunk boundaries is stored and a chunk's work stays in
    the cache.
  - "chunkwise" (:mod:`gated.chunkwise`, the matrix-state forms): within each chunk, masked decay-weighted matmuls
    of queries, keys and values (with a triangular solve for the delta rule); across chunks, a sequential scan of
    the matrix state, each chunk recomputed in the backward pass (only the states at chunk boundaries are stored).
  - "native" (:mod:`gated.native`; opt-in, CPU only, float32, the nonlinear cells with a native kernel): C++
    loops; reverse-mode differentiation only, and ``vmap`` runs its batch one after another.
  - "auto" (the default): the first backend of the platform's row of :data:`gated.backends.AUTO` (a measured
    table) for the cell's form that supports the call: on the CPU "recomputed" for the delta rule, "chunkwise" for
    the other matrix-state cells, "sequential" for the diagonal linear ones, and for the nonlinear ones "fused"
    where the cell has a kernel, ``return_carries`` is False and there are no ``resets``, else "recomputed"; on
    accelerators "chunkwise" for the matrix-state cells and "associative" for the diagonal ones; else
    "reference".

Which backends serve a cell follows from its form (:mod:`gated.forms`) alone: none of them names a cell. The pure-JAX
backends give the same program on every machine, and ``grad``, ``jvp``, ``jacfwd``, ``jacrev``, ``hessian``,
``vmap``, ``remat`` and ``jit`` work on them. Adding a backend is one module registering ``supports(cell, call)`` and
``sequence(cell, params, xs, carry, mask, resets, call)`` for the forms it serves (:func:`gated.backends.register`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# The backends register themselves (gated.backends) when imported.
from gated import backends, chunkwise, fused, native, parallel, reference  # noqa: F401
from gated.cells import Cell
from gated.options import Call, boolean, choice, integer

Array = jax.Array

# What impl takes: "auto" and every registered backend (gated.backends.REGISTRY).
IMPLS = backends.impls()


def _check_time_axis(time_axis: int, ndim: int) -> int:
    try:
        time_axis = integer("time_axis", time_axis, minimum=None)
    except ValueError as err:
        raise TypeError(err) from None
    if not -ndim <= time_axis < ndim or time_axis % ndim == ndim - 1:
        raise ValueError(
            f"time_axis: expected an axis of xs other than the last (feature) axis, i.e. in "
            f"[{-ndim}, {ndim - 2}] for xs of rank {ndim}, got {time_axis}"
        )
    axis = time_axis % ndim
    return axis


def check_lengths(lengths: Any, batch_shape: tuple[int, ...], num_steps: int) -> Array:
    """Checks ``lengths`` has shape ``batch_shape``, an integer dtype and values in [0, T].

    Values are checked where they are concrete (outside ``jax.jit``); inside
    ``jit`` they are traced and only their shape and dtype can be checked.
    """
    lengths_arr = jnp.asarray(lengths)
    if not jnp.issubdtype(lengths_arr.dtype, jnp.integer):
        raise TypeError(f"lengths: expected an integer array, got dtype {lengths_arr.dtype}")
    if lengths_arr.shape != batch_shape:
        raise ValueError(f"lengths: expected shape {batch_shape} (the batch axes of xs), got {lengths_arr.shape}")
    if not isinstance(lengths, jax.core.Tracer) and lengths_arr.size:
        values = np.asarray(lengths)  # not lengths_arr: under jit, jnp.asarray makes even a NumPy constant a tracer
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > num_steps:
            raise ValueError(f"lengths: expected values in [0, T] = [0, {num_steps}], got values in [{lo}, {hi}]")
    return lengths_arr


def run(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    carry: Any = None,
    lengths: Array | None = None,
    reverse: bool = False,
    time_axis: int = 0,
    unroll: int = 1,
    remat: bool = False,
    return_carries: bool = False,
    impl: str = "auto",
    resets: Array | None = None,
    chunk: int = 64,
    state_dtype: Any = None,
) -> tuple[Any, Any]:
    """Runs ``cell`` over ``xs`` ``(T, *batch, D)`` (time on ``time_axis``): returns ``(carry, ys)``, the final
    carry (leaves ``(*batch, H)``) and the outputs ``(T, *batch, H)`` (or every step's carry if
    ``return_carries``). Every argument is described in the module docstring (``help(gated.scan)``).

    ``carry``: initial carry (zeros if None). ``lengths`` ``(*batch,)``: valid lengths; padded steps keep the carry,
    output zeros, and their inputs never reach a value or gradient. ``reverse``: read each sequence backwards.
    ``unroll``: ``jax.lax.scan``'s. ``remat``: recompute in the backward pass. ``impl``: the backend
    (:data:`gated.backends.REGISTRY`; "auto" takes the first of the platform's :data:`gated.backends.AUTO` row
    for the cell's form that supports it).
    ``resets`` (``(T, *batch)`` booleans): restore the initial carry before a step. ``chunk``: the chunk length of
    ``impl="chunked"``, ``"chunkwise"`` and ``"recomputed"`` (and ``remat``'s). ``state_dtype``: the recurrence's
    floating type (mixed precision; None: ``xs``'s).

    Raises:
      TypeError: non-floating ``xs`` or carry, non-integer ``lengths``, non-boolean ``resets``.
      ValueError: a rank, shape, input size, time axis or length out of range; an ``impl`` that does not cover
        the cell, option, dtype or machine (with the reason).
    """
    call = Call(choice("impl", impl, IMPLS), integer("unroll", unroll), boolean("remat", remat),
                integer("chunk", chunk), boolean("return_carries", return_carries))  # fmt: skip
    reverse = boolean("reverse", reverse)
    if state_dtype is not None:
        return _widened(state_dtype, cell, params, xs, carry=carry, lengths=lengths, reverse=reverse,
                        time_axis=time_axis, unroll=unroll, remat=remat, return_carries=return_carries, impl=impl,
                        resets=resets, chunk=chunk)  # fmt: skip
    seq = _normalise(cell, params, xs, carry, lengths, resets, reverse, time_axis)
    call = call._replace(dtype=seq.carry_dtype, num_steps=seq.xs.shape[0], resets=seq.resets is not None)
    call = call._replace(impl=backends.choose(cell, call))
    flip = (lambda a: None if a is None else a[::-1]) if reverse else (lambda a: a)
    sequence = backends.REGISTRY[call.impl].sequence
    carry, ys = sequence(cell, params, flip(seq.xs), seq.carry, flip(seq.mask), flip(seq.resets), call)
    return _unflatten(carry, jax.tree.map(flip, ys), seq.batch_shape, call.num_steps, seq.axis)


def _widened(state_dtype: Any, cell: Cell, params: Any, xs: Array, **arguments) -> tuple[Any, Any]:
    """:func:`run` in ``state_dtype``: the parameters and inputs widened, the outputs back in ``xs``'s type."""
    if not jnp.issubdtype(state_dtype, jnp.floating):
        raise TypeError(f"state_dtype: expected a floating-point dtype (jnp.float32) or None, got {state_dtype!r}")
    widen = lambda a: a.astype(state_dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a
    carry, ys = run(cell, jax.tree.map(widen, params), widen(jnp.asarray(xs)), **arguments)
    return carry, ys if arguments["return_carries"] else jax.tree.map(lambda a: a.astype(jnp.result_type(xs)), ys)


class Sequence(NamedTuple):
    """The checked inputs of :func:`run`, batch axes flattened to one: ``xs`` ``(T, B, D)`` (zero at padded steps),
    carry leaves ``(B, ...)``, ``mask`` and ``resets`` ``(T, B)`` or None."""

    xs: Array
    carry: Any
    mask: Array | None
    resets: Array | None
    carry_dtype: Any
    batch_shape: tuple[int, ...]
    axis: int


def _normalise(cell, params, xs, carry, lengths, resets, reverse, time_axis) -> Sequence:
    """Checks every input of :func:`run` and puts it in the layout the backends take."""
    xs = jnp.asarray(xs)
    if not jnp.issubdtype(xs.dtype, jnp.inexact):
        raise TypeError(f"xs: expected a floating-point array, got dtype {xs.dtype}")
    if xs.ndim < 2:
        raise ValueError(f"xs: expected shape (T, *batch, D) with rank >= 2, got shape {xs.shape}")
    axis = _check_time_axis(time_axis, xs.ndim)
    xs = jnp.moveaxis(xs, axis, 0)
    num_steps, *batch, input_size = xs.shape
    batch_shape, size = tuple(batch), math.prod(batch)
    if input_size != cell.input_size(params):
        raise ValueError(f"xs: expected input size D = {cell.input_size(params)} on the last axis, got shape "
                         f"{xs.shape}")  # fmt: skip
    flat = xs.reshape(num_steps, size, input_size)
    dtype = jax.eval_shape(lambda x: cell.project(params, x), jax.ShapeDtypeStruct((input_size,), xs.dtype)).dtype
    carry = cell.initial_carry((size,), dtype) if carry is None else _flatten_carry(cell, carry, batch_shape, dtype)
    mask = None
    if lengths is not None:
        lengths = check_lengths(lengths, batch_shape, num_steps).reshape(size)
        mask = jnp.arange(num_steps)[:, None] < lengths[None, :]
        # Zeros at the padded steps before any arithmetic: whatever the padding holds (NaN, Inf), those steps
        # contribute exactly zero to the values and gradients on every path (a where after the arithmetic would
        # pass 0 * NaN = NaN back).
        flat = jnp.where(mask[..., None], flat, 0)
    if resets is not None:
        resets = _check_resets(resets, axis, (num_steps, *batch_shape)).reshape(num_steps, size)
        resets = resets if mask is None else resets & mask  # none at padded steps
        if reverse:  # read backwards, a segment starts at the step before the next one's start
            resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])])
    return Sequence(flat, _varying_like(flat, carry), mask, resets, dtype, batch_shape, axis)


def _check_resets(resets: Any, axis: int, shape: tuple[int, ...]) -> Array:
    """Checks ``resets`` is boolean and shaped like ``xs`` without its feature axis; returns it time-major."""
    resets = jnp.asarray(resets)
    if resets.dtype != jnp.bool_:
        raise TypeError(f"resets: expected a boolean array, got dtype {resets.dtype}")
    resets = jnp.moveaxis(resets, axis, 0) if resets.ndim == len(shape) else resets
    if resets.shape != shape:
        raise ValueError(f"resets: expected the shape of xs without its feature axis, (T, *batch) = {shape} "
                         f"time-major, got {resets.shape} (after moving time_axis to the front)")  # fmt: skip
    return resets


def _varying_axes(x: Array) -> frozenset:
    """The mesh axes ``x`` varies over inside ``jax.shard_map`` (empty outside one)."""
    aval = jax.typeof(x)
    mat = getattr(aval, "mat", None)  # jax >= 0.9; earlier versions call it aval.vma
    return frozenset(mat.varying if mat is not None else getattr(aval, "vma", ()))


def _varying_like(xs: Array, carry: Any) -> Any:
    """The carry marked as varying over every mesh axis the inputs vary over (inside ``jax.shard_map``): a zero
    carry is the same on every device, while the scan's new carry depends on each device's inputs, and the scan
    needs both of one type."""
    axes = _varying_axes(xs)

    def cast(leaf):
        missing = tuple(sorted(axes - _varying_axes(leaf)))
        return jax.lax.pcast(leaf, missing, to="varying") if missing else leaf

    return jax.tree.map(cast, carry) if axes else carry


def _unflatten(carry: Any, ys: Any, batch_shape: tuple[int, ...], num_steps: int, axis: int) -> tuple[Any, Any]:
    """Restores the batch axes of the carry and outputs, and puts time back on ``axis``."""
    carry = jax.tree.map(lambda a: a.reshape(*batch_shape, *a.shape[1:]), carry)
    ys = jax.tree.map(lambda a: jnp.moveaxis(a.reshape(num_steps, *batch_shape, *a.shape[2:]), 0, axis), ys)
    return carry, ys


def _flatten_carry(cell: Cell, carry: Any, batch_shape: tuple[int, ...], dtype) -> Any:
    """Checks every carry leaf is ``(*batch, *shape)`` for the shape of the same leaf of ``cell.initial_carry()``
    (``(H,)``, or ``(H, N)`` for a state of N per unit, ...) and of the computation's dtype; flattens the batch axes."""
    ref = jax.tree.structure(cell.initial_carry())
    if jax.tree.structure(carry) != ref:
        raise ValueError(f"carry: expected a pytree of structure {ref}, got {jax.tree.structure(carry)}")

    def check(leaf, shape):
        leaf = jnp.asarray(leaf)
        expected = (*batch_shape, *shape)
        if leaf.shape != expected:
            named = "(*batch, H)" if shape == (cell.hidden_size,) else f"(*batch, {', '.join(map(str, shape))})"
            raise ValueError(f"carry: expected leaves of shape {named} = {expected}, got {leaf.shape}")
        if leaf.dtype != dtype:
            raise TypeError(f"carry: expected dtype {dtype} (that of the projected inputs), got {leaf.dtype}")
        return leaf.reshape(-1, *shape)

    leaves = [check(leaf, shape) for leaf, shape in zip(jax.tree.leaves(carry), cell.carry_shapes(), strict=True)]
    return jax.tree.unflatten(ref, leaves)
