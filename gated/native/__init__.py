"""Opt-in C++ time loops on the CPU, through the XLA FFI: ``gated.run(..., impl="native")``.

This module is the backend: it builds ``loops_cpu.cc``, registers its loops as FFI targets, and runs a cell's own
kernel (``cell.native_sequence``, defined in the cell's own module beside its fused kernel)
through the helpers here (:func:`ffi_call`, :func:`panels`, ...).

Not the default, and not pure JAX. What it gives up, and what it buys:

* CPU only, float32, H a multiple of 16, x86-64 with AVX2 and FMA, and a C++
  compiler on the machine: ``loops_cpu.cc`` (beside this file) is compiled on first use
  (seconds) against the XLA FFI headers that jaxlib ships, and cached in
  ``~/.cache/gated`` (see :func:`configure`). Nothing is built or loaded until
  a computation asks for ``impl="native"``.
* Reverse mode only: ``grad``, ``value_and_grad``, ``vjp``, ``jacrev``. Forward
  mode and higher orders (``jvp``, ``jacfwd``, ``hessian``, ``grad`` of
  ``grad``) raise an error that names ``impl="auto"``, which serves them.
* ``vmap`` runs the batched calls one after another (``vmap_method="sequential"``):
  a vmapped sweep costs the sum of its runs.
* Its float32 results differ from the default path's by rounding (its own
  ``exp``, FMA order), so a trajectory trained with it is not bit-identical
  to one trained with the default path, or on another CPU.

What it does: each loop step is a register-blocked AVX2/FMA matmul fused with
the gate arithmetic, the batch split between threads. The forward loop keeps
every step's gates, so the backward pass recomputes nothing; the backward loop
forms the pre-activation gradients, and the weight gradients are large XLA
matmuls over chunks of steps. ``benchmarks/training_step.py`` times it beside
the default path ("native" rows); ``tests/test_native.py`` checks it against
the reference path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib

from gated import backends, forms
from gated.options import Call, integer

Array = jax.Array

_SOURCE = Path(__file__).parent / "loops_cpu.cc"
_FLAGS = ["-O3", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC", "-pthread", "-w"]
_SETTINGS: dict[str, Any] = {"cache_dir": None, "compiler": "c++", "threads": None}  # see configure
_FORWARD_MODE = (
    "impl='native' serves reverse mode only (grad, vjp, jacrev): its C++ loops have no forward-mode rule. "
    "Use impl='auto' (the default) for jvp, jacfwd, hessian and grad of grad"
)


def configure(*, cache_dir: str | os.PathLike | None = None, compiler: str | None = None, threads: int | None = None):
    """Sets where the kernels are built and cached, the C++ compiler, and the number of threads (default: the CPUs
    this process may run on). Call before the first ``impl="native"`` computation; a later build setting takes
    effect in a new process."""
    if cache_dir is not None:
        _SETTINGS["cache_dir"] = Path(cache_dir)
    if compiler is not None:
        _SETTINGS["compiler"] = compiler
    if threads is not None:
        _SETTINGS["threads"] = integer("threads", threads)


def _threads() -> int:
    if _SETTINGS["threads"] is not None:
        return _SETTINGS["threads"]
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _build() -> Path:
    """Compiles the kernel into the cache (once per source, jaxlib and flags) and returns the library's path."""
    key = hashlib.sha256(_SOURCE.read_bytes() + jaxlib.__version__.encode() + " ".join(_FLAGS).encode())
    library = Path(_SETTINGS["cache_dir"] or Path.home() / ".cache" / "gated") / f"loops_cpu-{key.hexdigest()[:16]}.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as tmp:  # compile aside, then rename: safe in parallel
        built = Path(tmp) / library.name
        command = [_SETTINGS["compiler"], *_FLAGS, f"-I{jax.ffi.include_dir()}", str(_SOURCE), "-o", str(built)]
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except OSError as error:
            raise RuntimeError(f"{command[0]}: {error}") from None
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
        os.replace(built, library)
    return library


@functools.cache
def _library() -> ctypes.CDLL:
    return ctypes.cdll.LoadLibrary(str(_build()))


@functools.cache
def unavailable_reason() -> str | None:
    """None once the kernels are built and loaded (building them on the first call), else why they cannot be."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the kernels are written for x86-64 (AVX2, FMA); this machine is {platform.machine()}"
    try:
        library = _library()
    except (OSError, RuntimeError) as error:
        return f"could not build the CPU kernels: {error}"
    if not library.gated_cpu_supported():
        return "this CPU lacks AVX2 or FMA"
    return None


@functools.cache
def _target(name: str) -> str:
    """Registers the loop ``name`` of ``loops_cpu.cc`` (``gated_lstm_forward``: its handler ``GatedLstmForward``) as
    an XLA FFI target, once."""
    symbol = "".join(part.title() for part in name.split("_"))
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(_library(), symbol)), platform="cpu")
    return name


def supports(cell: forms.Nonlinear, call: Call) -> str | None:
    """None if ``impl="native"`` can run ``call`` of ``cell`` here, else why not (builds the kernels)."""
    reason = call.reference_only()
    if reason is not None:
        return reason
    dtype = call.dtype
    limits = cell.native_limits()
    if limits is not None:
        return limits
    if jnp.dtype(dtype) != jnp.float32:
        return f"the native loops are float32 only, got {jnp.dtype(dtype).name}"
    if cell.hidden_size % 16:
        return f"the native loops need H a multiple of 16, got H = {cell.hidden_size}"
    if jax.default_backend() != "cpu":
        return f"the native loops run on the CPU only, and JAX computes on {jax.default_backend()}"
    return unavailable_reason()


def sequence(cell: forms.Nonlinear, params: Any, xs: Array, carry: Any, mask: Array | None, resets: None, call: Call):
    """Runs ``cell`` with the C++ loops: ``xs`` ``(T, B, D)``, carry leaves ``(B, H)``, ``mask`` ``(T, B)`` or None
    (no ``resets``: :func:`supports`).

    Returns ``(carry, ys)``. With ``call.remat`` the forward loop keeps no gates and each chunk of the backward pass
    recomputes them with one matmul. Raises ValueError where :func:`supports` gives a reason, and for forward-mode
    differentiation.
    """
    xs, remat = xs.astype(call.dtype), call.remat
    reason = supports(cell, call)
    if reason is not None:
        raise ValueError(f"impl: 'native' is not available here: {reason} (use impl='auto')")
    m = None if mask is None else mask.astype(xs.dtype)[:, :, None]
    try:
        return cell.native_sequence(params, xs, carry, m, not remat)
    except TypeError as error:
        if "forward-mode" in str(error):
            raise TypeError(_FORWARD_MODE) from None
        raise


def ffi_call(name: str, out, *args, **attributes):
    """The loop ``name`` of ``loops_cpu.cc`` on ``args``, giving ``out`` (shapes), its batch run one call after
    another under ``vmap``; forward-mode differentiation raises the error that names ``impl="auto"``."""
    try:
        return jax.ffi.ffi_call(_target(name), out, vmap_method="sequential")(*args, threads=_threads(), **attributes)
    except ValueError as error:  # the FFI call was differentiated in forward mode (e.g. the outer jvp of a hessian)
        if "cannot be differentiated" in str(error):
            raise TypeError(_FORWARD_MODE) from None
        raise


def panels(w: Array, gates: int, width: int = 8) -> Array:
    """A fused ``(rows, gates * H)`` weight as ``(H / width, rows, gates * width)`` panels: for each group of
    ``width`` hidden units, the columns of every gate, gate after gate."""
    rows, hidden = w.shape[0], w.shape[1] // gates
    return w.reshape(rows, gates, hidden // width, width).transpose(2, 0, 1, 3).reshape(hidden // width, rows, -1)


def transposed_panels(w_h: Array) -> Array:
    """``W_h^T`` ``(G*H, H)`` as ``(H/16, G*H, 16)`` panels of 16 output units, for the backward loops' matmul."""
    hidden = w_h.shape[0]
    return w_h.reshape(hidden // 16, 16, w_h.shape[1]).transpose(0, 2, 1)


def kernel_mask(m: Array | None, like: Array) -> Array:
    """The kernels' mask ``(T, B)``: ``m`` ``(T, B, 1)`` without its last axis, or ones."""
    return jnp.ones(like.shape[:2], like.dtype) if m is None else m[..., 0]


def stacked(like: Array, width: int, keep: bool = True) -> jax.ShapeDtypeStruct:
    """A kernel output ``(T, B, width)`` shaped after ``like`` ``(T, B, .)``; empty when not ``keep``."""
    return jax.ShapeDtypeStruct((*like.shape[:2], width) if keep else (0, 0, 0), like.dtype)


def chunked(a: Array | None, k: int) -> Array | None:
    """``(T, ...)`` as ``(T // k, k, ...)``: the chunks the backward passes walk (None stays None)."""
    return None if a is None else a.reshape(a.shape[0] // k, k, *a.shape[1:])


def values(*args):
    """The values of custom_vjp arguments passed with ``symbolic_zeros`` (None stays None)."""
    return tuple(None if a is None else a.value for a in args)


def dense(cotangent: Any, like: Array) -> Array:
    """A cotangent as an array: zeros where JAX passed a symbolic zero (an output the loss does not use)."""
    if isinstance(cotangent, jax.custom_derivatives.SymbolicZero):
        return jnp.zeros(like.shape, like.dtype)
    return cotangent


backends.register("native", serves=(forms.Nonlinear,), supports=supports, sequence=sequence, pure=False)

__all__ = [
    "chunked",
    "configure",
    "dense",
    "ffi_call",
    "kernel_mask",
    "panels",
    "sequence",
    "stacked",
    "supports",
    "transposed_panels",
    "unavailable_reason",
    "values",
]
