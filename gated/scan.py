"""Running a cell over a sequence with ``jax.lax.scan``.

Notation: T time, B batch (any number of batch axes, written ``*batch``),
D input size, H hidden size, G fused gates.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gated import fused, native, parallel
from gated.cells import Cell, LinearCell
from gated.options import boolean, choice, integer

Array = jax.Array

IMPLS = ("auto", "fused", "reference", "native", "associative", "chunked")
# What impl="auto" runs a gated linear recurrence with, per platform: the fastest training step measured by
# benchmarks/linear_forms.py (benchmarks/results/linear_forms.md). Platforms not measured take "associative".
LINEAR_AUTO = {"cpu": "reference"}


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
) -> tuple[Any, Any]:
    """Runs ``cell`` over a sequence with ``jax.lax.scan``.

    By default (``impl="auto"``) the LSTM, GRU and RNN run as one fused kernel
    whose derivative is a linear tangent recurrence (:mod:`gated.fused`); every
    other cell takes the reference path, which computes ``cell.project`` for
    every step and batch element at once, as one matmul outside the scan, and
    runs ``cell.step`` inside it, vmapped over the batch. Both are pure JAX:
    ``grad``, ``jvp``, ``jacfwd``, ``jacrev``, ``hessian``, ``vmap``, ``remat``
    and ``jit`` work on them, and they give the same program on every machine.

    Args:
      cell: a :mod:`gated.cells` cell.
      params: its parameters, from ``cell.init``.
      xs: inputs ``(T, *batch, D)``, or with time on another axis given by
        ``time_axis`` (``time_axis=1`` for batch-major ``(B, T, D)``).
      carry: initial carry with leaves ``(*batch, H)``; zeros if None.
      lengths: optional integer array ``(*batch,)`` of valid lengths in [0, T].
        Padded steps (t >= length) leave the carry unchanged and output zeros,
        so the returned carry is each sequence's last valid one. Their inputs
        are replaced by zeros before any arithmetic, so whatever the padding
        holds (NaN, Inf) reaches no value and no gradient.
      reverse: read each sequence backwards. With ``lengths``, each sequence
        starts from its own last valid step; padding stays at the end and
        outputs stay aligned with their inputs.
      time_axis: the time axis of ``xs`` (and of the outputs).
      unroll: passed to ``jax.lax.scan``.
      remat: recompute each step's internals in the backward pass
        (``jax.checkpoint`` on the scan body), storing only the carries. The
        fused kernels store only the carries anyway.
      return_carries: return every step's full carry (for an LSTM, the
        ``c_t`` too) in place of the outputs; zero at padded steps.
      impl: "auto" (default) takes "fused" where the cell has a kernel and
        ``return_carries`` is False and there are no ``resets``; for a gated
        linear recurrence (``mingru``, ``minlstm``, ``lru``, ``rglru``, ``ssm``,
        ``mlstm``) the form :data:`LINEAR_AUTO` names for the platform; else "reference".
        "associative" and "chunked" (gated linear recurrences only) run the
        parallel forms of :mod:`gated.parallel`: one associative scan over
        time, or one inside each chunk of ``chunk`` steps and a sequential
        scan across the chunks. "reference" vmaps
        ``cell.step`` over the batch and lets JAX differentiate the scan (the
        transcription of the equations). "fused" runs the cell's kernel in
        :mod:`gated.fused` (same values and derivatives to rounding, every
        transform). "native" (opt-in, CPU only, float32, LSTM and GRU) runs
        the C++ loops of :mod:`gated.native`: reverse-mode differentiation
        only, and ``vmap`` runs its batch one after another.

      resets: optional booleans shaped like ``xs`` without its feature axis
        (``(T, *batch)`` time-major): True where a new segment starts, so
        the initial ``carry`` is restored before that step (packed sequences,
        episode boundaries of RL rollouts). Reading backwards
        (``reverse=True``), each segment is read backwards from its own last
        step. Resets at padded steps are ignored.
      chunk: the chunk length of ``impl="chunked"``.

    Returns:
      ``(carry, ys)``: the final carry, leaves ``(*batch, H)``, and the outputs
      ``(T, *batch, H)`` (time on ``time_axis``), or the stacked carries if
      ``return_carries``.

    Raises:
      TypeError: non-floating ``xs`` or carry, non-integer ``lengths``.
      ValueError: a rank, shape, input size, time axis or length out of range;
        ``impl="fused"`` or ``"native"`` for a cell, option, dtype or machine
        the kernels do not cover.
    """
    impl = choice("impl", impl, IMPLS)
    reverse, remat = boolean("reverse", reverse), boolean("remat", remat)
    return_carries = boolean("return_carries", return_carries)
    unroll, chunk = integer("unroll", unroll), integer("chunk", chunk)
    xs = jnp.asarray(xs)
    if not jnp.issubdtype(xs.dtype, jnp.inexact):
        raise TypeError(f"xs: expected a floating-point array, got dtype {xs.dtype}")
    if xs.ndim < 2:
        raise ValueError(f"xs: expected shape (T, *batch, D) with rank >= 2, got shape {xs.shape}")
    axis = _check_time_axis(time_axis, xs.ndim)
    xs = jnp.moveaxis(xs, axis, 0)
    num_steps, *batch, input_size = xs.shape
    batch_shape = tuple(batch)
    expected = params.input_kernel.shape[0]
    if input_size != expected:
        raise ValueError(f"xs: expected input size D = {expected} on the last axis, got shape {xs.shape}")
    size = math.prod(batch_shape)

    flat = xs.reshape(num_steps, size, input_size)
    dtype = jax.eval_shape(lambda x: cell.project(params, x), jax.ShapeDtypeStruct((input_size,), xs.dtype)).dtype
    if carry is None:
        carry = cell.initial_carry((size,), dtype)
    else:
        carry = _flatten_carry(cell, carry, batch_shape, dtype)
    carry = _varying_like(flat, carry)
    if lengths is not None:
        lengths = check_lengths(lengths, batch_shape, num_steps).reshape(size)
        # Zeros at the padded steps before any arithmetic: whatever the padding holds (NaN, Inf), those steps
        # contribute exactly zero to the values and gradients on every path (a where after the arithmetic would
        # pass 0 * NaN = NaN back).
        flat = jnp.where((jnp.arange(num_steps)[:, None] < lengths[None, :])[..., None], flat, 0)
    if resets is not None:
        resets = _check_resets(resets, axis, (num_steps, *batch_shape)).reshape(num_steps, size)
        if lengths is not None:
            resets = resets & (jnp.arange(num_steps)[:, None] < lengths[None, :])  # none at padded steps
        if reverse:  # read backwards, a segment starts at the step before the next one's start
            resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])])
        if num_steps == 0:
            resets = None  # checked, and nothing to reset in an empty sequence (resets[t] could not be traced)

    if impl in parallel.FORMS or (impl == "auto" and isinstance(cell, LinearCell)):
        form = impl if impl != "auto" else LINEAR_AUTO.get(jax.default_backend(), "associative")
        reason = parallel.supports(cell)
        if reason is None and return_carries:
            reason = "return_carries=True is served by the reference path"
        if impl != "auto" and reason is not None:
            raise ValueError(f"impl: {impl!r} is not available here: {reason} (use impl='auto' or 'reference')")
        if reason is None and form in parallel.FORMS and num_steps > 0:
            mask = None if lengths is None else jnp.arange(num_steps)[:, None] < lengths[None, :]
            us = jax.vmap(jax.vmap(lambda x: cell.project(params, x)))(flat)
            if reverse:
                us, mask = us[::-1], None if mask is None else mask[::-1]
                resets = None if resets is None else resets[::-1]

            def forms(us, carry, mask, resets):
                return parallel.sequence(cell, params, us, carry, mask, resets, form=form, chunk=chunk)

            carry, ys = (jax.checkpoint(forms) if remat else forms)(us, carry, mask, resets)
            ys = ys[::-1] if reverse else ys
            return _unflatten(carry, ys, batch_shape, num_steps, axis)
        impl = "reference"

    if return_carries:
        reason = "return_carries=True is served by the reference path"
    elif num_steps == 0:
        reason = "an empty sequence (T = 0) is served by the reference path"
    elif resets is not None:
        reason = "resets are served by the reference path"
    elif impl == "native":
        reason = native.supports(cell, dtype)
    else:
        reason = fused.supports(cell)
    if impl in ("fused", "native") and reason is not None:
        raise ValueError(f"impl: {impl!r} is not available here: {reason} (use impl='auto' or 'reference')")
    if impl != "reference" and reason is None:
        flat = flat.astype(dtype)
        mask = None if lengths is None else jnp.arange(num_steps)[:, None] < lengths[None, :]
        if reverse:
            flat, mask = flat[::-1], None if mask is None else mask[::-1]
        if impl == "native":
            carry, ys = native.sequence(cell, params, flat, carry, mask, remat=remat)
        else:
            carry, ys = fused.sequence(cell, params, flat, carry, mask, unroll=unroll)
        ys = ys[::-1] if reverse else ys
        return _unflatten(carry, ys, batch_shape, num_steps, axis)

    us = jax.vmap(jax.vmap(lambda x: cell.project(params, x)))(flat)
    step = jax.vmap(lambda c, u: cell.step(params, c, u))

    initial = carry

    def body(carry, inputs):
        t, u = inputs
        if resets is not None:
            carry = jax.tree.map(lambda c, c0: jnp.where(_per_example(resets[t], c), c0, c), carry, initial)
        new, y = step(carry, u)
        if lengths is not None:
            valid = t < lengths
            new = jax.tree.map(lambda n, o: jnp.where(_per_example(valid, n), n, o), new, carry)
            y = jnp.where(_per_example(valid, y), y, jnp.zeros_like(y))
            out = (jax.tree.map(lambda n: jnp.where(_per_example(valid, n), n, jnp.zeros_like(n)), new)
                   if return_carries else y)  # fmt: skip
        else:
            out = new if return_carries else y
        return new, out

    if remat:
        body = jax.checkpoint(body)
    carry, ys = jax.lax.scan(body, carry, (jnp.arange(num_steps), us), reverse=reverse, unroll=unroll)
    return _unflatten(carry, ys, batch_shape, num_steps, axis)


def _per_example(flags: Array, like: Array) -> Array:
    """Per-example booleans ``(B,)`` shaped to broadcast against ``like`` ``(B, ...)``."""
    return flags.reshape(flags.shape[0], *([1] * (like.ndim - 1)))


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
