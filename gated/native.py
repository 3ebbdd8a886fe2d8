"""The time loops of the LSTM and the GRU as C++ kernels on the CPU, through the XLA FFI.

XLA:CPU runs a ``lax.scan`` as a loop of separate kernels; at the sizes
recurrent networks train at, the per-step launches around the one small matmul
cost as much as the matmul. ``csrc/loops_cpu.cc`` runs the loop in C++ instead:
each step is a register-blocked AVX2/FMA matmul fused with the gate arithmetic,
the batch split between threads. :mod:`gated.fused` calls the forward loop
(which also keeps every step's gates, so nothing is recomputed) and, per chunk
of steps, the backward loop (which forms the pre-activation gradients); the
large matmuls of the weight gradients stay with XLA.

The kernels are compiled on first use with the machine's C++ compiler (``c++``,
or ``$CXX``; about 5 s) against the XLA FFI headers that jaxlib ships, and cached
in ``$GATED_CACHE`` (default ``~/.cache/gated``) under a name that hashes the
source, jaxlib's version and the flags. Where they cannot be had (no compiler,
not x86-64 with AVX2 and FMA, ``GATED_NATIVE=0``) :func:`available` is False,
:func:`unavailable_reason` says why (a failed build also warns once), and
:mod:`gated.fused` keeps its XLA loops: same results, slower.
``tests/test_native.py`` checks the kernels against XLA transcriptions of the
same loops and the whole path against the reference path.

``GATED_NATIVE_THREADS`` sets the number of threads (default: the CPUs this
process may run on).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib

Array = jax.Array

_SOURCE = Path(__file__).parent / "csrc" / "loops_cpu.cc"
_FLAGS = ["-O3", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC", "-pthread", "-w"]
_TARGETS = {
    "gated_lstm_forward": "GatedLstmForward",
    "gated_lstm_backward": "GatedLstmBackward",
    "gated_gru_forward": "GatedGruForward",
    "gated_gru_backward": "GatedGruBackward",
}


def _cache_dir() -> Path:
    return Path(os.environ.get("GATED_CACHE") or Path.home() / ".cache" / "gated")


def _build() -> Path:
    """Compiles the kernel into the cache (once per source, jaxlib and flags) and returns the library's path."""
    compiler = os.environ.get("CXX", "c++")
    key = hashlib.sha256(_SOURCE.read_bytes() + jaxlib.__version__.encode() + " ".join(_FLAGS).encode())
    library = _cache_dir() / f"loops_cpu-{key.hexdigest()[:16]}.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as tmp:  # compile aside, then rename: safe in parallel
        built = Path(tmp) / library.name
        command = [compiler, *_FLAGS, f"-I{jax.ffi.include_dir()}", str(_SOURCE), "-o", str(built)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
        os.replace(built, library)
    return library


def _load() -> str | None:
    """Builds, loads and registers the kernels; None on success, else why they are unavailable."""
    if os.environ.get("GATED_NATIVE", "1") == "0":
        return "disabled by GATED_NATIVE=0"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the kernel is written for x86-64 (AVX2, FMA); this machine is {platform.machine()}"
    try:
        library = ctypes.cdll.LoadLibrary(str(_build()))
    except (OSError, RuntimeError) as error:
        return f"could not build the CPU kernel: {error}"
    if not library.gated_cpu_supported():
        return "this CPU lacks AVX2 or FMA"
    for name, symbol in _TARGETS.items():
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    return None


@functools.cache
def unavailable_reason() -> str | None:
    """None when the CPU kernel is built and registered (building it on the first call), else the reason it is not."""
    reason = _load()
    if reason is not None and reason.startswith("could not build"):
        warnings.warn(f"gated: {reason}\nThe LSTM and GRU run on XLA's loops.", RuntimeWarning, stacklevel=2)
    return reason


def available() -> bool:
    return unavailable_reason() is None


def covers(dtype, hidden: int) -> bool:
    """Whether the kernels take this LSTM or GRU: float32, H a multiple of 16, JAX computing on the CPU by default,
    and the kernels available. (A function traced here and run elsewhere still works: :mod:`gated.fused` calls
    them through ``jax.lax.platform_dependent``, with XLA loops for other platforms.)"""
    if jnp.dtype(dtype) != jnp.float32 or hidden % 16 or jax.default_backend() != "cpu":
        return False
    return available()


def threads() -> int:
    if "GATED_NATIVE_THREADS" in os.environ:
        return max(1, int(os.environ["GATED_NATIVE_THREADS"]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _require() -> None:
    if not available():
        raise RuntimeError(f"gated.native: the CPU kernel is unavailable: {unavailable_reason()}")


def _transposed_panels(w_h: Array) -> Array:
    """``W_h^T`` ``(G*H, H)`` as ``(H/16, G*H, 16)`` panels of 16 output units, for the backward loops' matmul."""
    hidden = w_h.shape[0]
    return w_h.reshape(hidden // 16, 16, w_h.shape[1]).transpose(0, 2, 1)


def _kernel_mask(m: Array | None, like: Array) -> Array:
    """The kernels' mask ``(T, B)``: ``m`` ``(T, B, 1)`` without its last axis, or ones."""
    return jnp.ones(like.shape[:2], like.dtype) if m is None else m[..., 0]


def _stacked(like: Array, width: int, keep: bool = True) -> jax.ShapeDtypeStruct:
    """A kernel output ``(T, B, width)`` shaped after ``like`` ``(T, B, .)``; empty when not ``keep``."""
    return jax.ShapeDtypeStruct((*like.shape[:2], width) if keep else (0, 0, 0), like.dtype)


def lstm_forward(keep: bool, w_x: Array, w_h: Array, b: Array, xs: Array, h0: Array, c0: Array, m: Array | None):
    """The forward loop: ``xs`` ``(T, B, D)``, carries ``(B, H)``, ``m`` ``(T, B, 1)`` or None.

    Returns the carries after every step, ``hs`` and ``cs`` ``(T, B, H)`` (a padded step keeps the carry), and
    with ``keep`` every step's activated gates ``[i, f, g, o]`` ``(T, B, 4H)`` (else None).
    """
    _require()
    hidden = h0.shape[-1]
    panels, bias = _panels(jnp.concatenate([w_x, w_h], axis=0), 4), _panels(b[None], 4)[:, 0]
    out = (_stacked(xs, hidden), _stacked(xs, hidden), _stacked(xs, 4 * hidden, keep))
    call = jax.ffi.ffi_call("gated_lstm_forward", out, vmap_method="sequential")
    hs, cs, acts = call(xs, h0, c0, panels, bias, _kernel_mask(m, xs), threads=threads())
    return hs, cs, acts if keep else None


def lstm_backward(w_h: Array, dh: Array, dc: Array, dys: Array, acts: Array, cs: Array, cps: Array, m: Array | None):
    """The backward loop over a chunk of steps, from the last: ``dys``, ``cs`` (c_t), ``cps`` (c_{t-1})
    ``(T, B, H)``, ``acts`` ``(T, B, 4H)``, ``m`` ``(T, B, 1)`` or None.

    Returns the carry gradients before the first step and every step's pre-activation gradient ``(T, B, 4H)``.
    """
    _require()
    carry = jax.ShapeDtypeStruct(dh.shape, dh.dtype)
    call = jax.ffi.ffi_call("gated_lstm_backward", (carry, carry, _stacked(acts, acts.shape[-1])),
                            vmap_method="sequential")  # fmt: skip
    mask = _kernel_mask(m, dys)
    dh0, dc0, dpre = call(_transposed_panels(w_h), dh, dc, dys, acts, cs, cps, mask, threads=threads())
    return (dh0, dc0), dpre


def _panels(w: Array, gates: int, width: int = 8) -> Array:
    """A fused ``(rows, gates * H)`` weight as ``(H / width, rows, gates * width)`` panels: for each group of
    ``width`` hidden units, the columns of every gate, gate after gate."""
    rows, hidden = w.shape[0], w.shape[1] // gates
    return w.reshape(rows, gates, hidden // width, width).transpose(2, 0, 1, 3).reshape(hidden // width, rows, -1)


def gru_forward(keep: bool, keep_z: bool, w_x, w_h, b, b_hn, xs, h0, m):
    """The GRU's forward loop (reset="after"; ``keep_z``: the update convention "keep").

    Returns every step's carry ``hs`` ``(T, B, H)`` and with ``keep`` its ``[r, z, n, hn]`` ``(T, B, 4H)``
    (else None), ``hn = h W_hn + b_hn``.
    """
    _require()
    hidden = h0.shape[-1]
    bias_h = jnp.concatenate([jnp.zeros((2 * hidden,), b.dtype), b_hn])
    bias = jnp.concatenate([_panels(b[None], 3), _panels(bias_h[None], 3)], axis=-1)[:, 0]
    call = jax.ffi.ffi_call("gated_gru_forward", (_stacked(xs, hidden), _stacked(xs, 4 * hidden, keep)),
                            vmap_method="sequential")  # fmt: skip
    mask = _kernel_mask(m, xs)
    hs, g = call(xs, h0, _panels(w_x, 3), _panels(w_h, 3), bias, mask, threads=threads(), keep_z=keep_z)
    return hs, g if keep else None


def gru_backward(keep_z: bool, w_h, dh, dys, gates, hps, m):
    """The GRU's backward loop over a chunk of steps, from the last: ``dys``, ``hps`` (h_{t-1}) ``(T, B, H)``,
    ``gates`` ``[r, z, n, hn]`` ``(T, B, 4H)``. Returns the carry gradient before the first step and every step's
    ``[d_r, d_z, d_hn, d_n]`` ``(T, B, 4H)`` (pre-activations of r, z; hn; the candidate's input side)."""
    _require()
    out = (jax.ShapeDtypeStruct(dh.shape, dh.dtype), _stacked(gates, gates.shape[-1]))
    call = jax.ffi.ffi_call("gated_gru_backward", out, vmap_method="sequential")
    mask = _kernel_mask(m, dys)
    return call(_transposed_panels(w_h), dh, dys, gates, hps, mask, threads=threads(), keep_z=keep_z)
