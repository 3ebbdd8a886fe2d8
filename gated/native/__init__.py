"""Opt-in C++ time loops for the LSTM and the GRU on the CPU, through the XLA FFI: ``gated.run(..., impl="native")``.

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
from gated.cells.gru import gru_gates
from gated.cells.lstm import lstm_block, lstm_gates
from gated.fused import chunk_length, previous
from gated.options import Call, integer

Array = jax.Array

_SOURCE = Path(__file__).parent / "loops_cpu.cc"
_FLAGS = ["-O3", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC", "-pthread", "-w"]
_TARGETS = {
    "gated_lstm_forward": "GatedLstmForward",
    "gated_lstm_backward": "GatedLstmBackward",
    "gated_gru_forward": "GatedGruForward",
    "gated_gru_backward": "GatedGruBackward",
}
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
def unavailable_reason() -> str | None:
    """None once the kernels are built and registered (building them on the first call), else why they cannot be."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the kernels are written for x86-64 (AVX2, FMA); this machine is {platform.machine()}"
    try:
        library = ctypes.cdll.LoadLibrary(str(_build()))
    except (OSError, RuntimeError) as error:
        return f"could not build the CPU kernels: {error}"
    if not library.gated_cpu_supported():
        return "this CPU lacks AVX2 or FMA"
    for name, symbol in _TARGETS.items():
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    return None


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


def _ffi_call(name: str, out, *args, **attributes):
    try:
        return jax.ffi.ffi_call(name, out, vmap_method="sequential")(*args, threads=_threads(), **attributes)
    except ValueError as error:  # the FFI call was differentiated in forward mode (e.g. the outer jvp of a hessian)
        if "cannot be differentiated" in str(error):
            raise TypeError(_FORWARD_MODE) from None
        raise


def _panels(w: Array, gates: int, width: int = 8) -> Array:
    """A fused ``(rows, gates * H)`` weight as ``(H / width, rows, gates * width)`` panels: for each group of
    ``width`` hidden units, the columns of every gate, gate after gate."""
    rows, hidden = w.shape[0], w.shape[1] // gates
    return w.reshape(rows, gates, hidden // width, width).transpose(2, 0, 1, 3).reshape(hidden // width, rows, -1)


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


def _chunked(a: Array | None, k: int) -> Array | None:
    """``(T, ...)`` as ``(T // k, k, ...)``: the chunks the backward passes walk (None stays None)."""
    return None if a is None else a.reshape(a.shape[0] // k, k, *a.shape[1:])


def _values(*args):
    """The values of custom_vjp arguments passed with ``symbolic_zeros`` (None stays None)."""
    return tuple(None if a is None else a.value for a in args)


def _dense(cotangent: Any, like: Array) -> Array:
    """A cotangent as an array: zeros where JAX passed a symbolic zero (an output the loss does not use)."""
    if isinstance(cotangent, jax.custom_derivatives.SymbolicZero):
        return jnp.zeros(like.shape, like.dtype)
    return cotangent


# LSTM: the forward loop keeps every step's activated gates [i, f, g, o]; the backward loop forms dpre from them and
# the cell states.


def _lstm_activations(pre: Array, hidden: int) -> Array:
    """``[sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)]`` of a pre-activation block ``(..., 4H)``: the
    fused path's transcription of the gates (:func:`gated.cells.lstm.lstm_gates`)."""
    return jnp.concatenate(lstm_gates(lstm_block(pre, hidden), hidden), axis=-1)


def _lstm_forward(keep: bool, w_x, w_h, b, xs, h0, c0, m):
    hidden = h0.shape[-1]
    panels, bias = _panels(jnp.concatenate([w_x, w_h], axis=0), 4), _panels(b[None], 4)[:, 0]
    out = (_stacked(xs, hidden), _stacked(xs, hidden), _stacked(xs, 4 * hidden, keep))
    hs, cs, acts = _ffi_call("gated_lstm_forward", out, xs, h0, c0, panels, bias, _kernel_mask(m, xs))
    return hs, cs, acts if keep else None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def lstm(keep, w_x, w_h, b, xs, h0, c0, m):
    hs, cs, _ = _lstm_forward(False, w_x, w_h, b, xs, h0, c0, m)
    return (hs[-1], cs[-1]), hs if m is None else m * hs


def _lstm_fwd(keep, w_x, w_h, b, xs, h0, c0, m):
    need_dxs = xs.perturbed  # the input gradient (one matmul per chunk) is skipped for a model's first layer
    w_x, w_h, b, xs, h0, c0, m = _values(w_x, w_h, b, xs, h0, c0, m)
    hs, cs, acts = _lstm_forward(keep, w_x, w_h, b, xs, h0, c0, m)
    out = (hs[-1], cs[-1]), hs if m is None else m * hs
    return out, (w_x, w_h, b, xs, h0, c0, m, hs, cs, acts, jnp.zeros((0,)) if need_dxs else None)


def _lstm_bwd(keep, res, cotangents):
    """Walks chunks of steps (:func:`gated.fused.chunk_length`) backwards: the loop kernel gives each chunk's
    ``dpre``, then the chunk's share of the weight gradients (and the input gradient, if needed) is one matmul
    each. Without kept gates (remat), the chunk's gates are first recomputed with one matmul."""
    w_x, w_h, b, xs, h0, c0, m, hs, cs, acts, need_dxs = res
    (dh_last, dc_last), dys = jax.tree.map(_dense, cotangents, ((h0, h0), hs))
    hidden, inputs = w_h.shape[0], w_x.shape[0]
    k = chunk_length(xs.shape[0], xs.shape[1] * 4 * hidden)
    w = jnp.concatenate([w_x, w_h], axis=0)
    panels = _transposed_panels(w_h)

    def chunk(carry, inputs_k):
        dh, dc, d_w, d_b = carry
        x_k, hp_k, c_k, cp_k, a_k, dy_k, m_k = inputs_k
        xh = jnp.concatenate([x_k, hp_k], axis=2)
        if a_k is None:
            a_k = _lstm_activations(xh @ w + b[None, None], hidden)
        carry_shape = jax.ShapeDtypeStruct(dh.shape, dh.dtype)
        out = (carry_shape, carry_shape, _stacked(a_k, a_k.shape[-1]))
        dh, dc, dpre = _ffi_call(
            "gated_lstm_backward", out, panels, dh, dc, dy_k, a_k, c_k, cp_k, _kernel_mask(m_k, dy_k)
        )
        d_w = d_w + jnp.einsum("tbc,tbg->cg", xh, dpre)
        d_b = d_b + dpre.sum((0, 1))
        return (dh, dc, d_w, d_b), dpre @ w_x.T if need_dxs is not None else None

    zeros = (jnp.zeros_like(w), jnp.zeros_like(b))
    scanned = tuple(_chunked(a, k) for a in (xs, previous(h0, hs), cs, previous(c0, cs), acts, dys, m))
    (dh0, dc0, d_w, d_b), d_xs = jax.lax.scan(chunk, (dh_last, dc_last, *zeros), scanned, reverse=True)
    d_xs = None if d_xs is None else d_xs.reshape(xs.shape)
    return d_w[:inputs], d_w[inputs:], d_b, d_xs, dh0, dc0, None if m is None else jnp.zeros_like(m)


lstm.defvjp(_lstm_fwd, _lstm_bwd, symbolic_zeros=True)


# GRU, reset="after": the forward loop keeps [r, z, n, hn] per step (hn = h W_hn + b_hn); the backward loop forms
# [d_r, d_z, d_hn, d_n] (pre-activations of r and z, of hn, and of the candidate's input side).


def _gru_forward(keep: bool, keep_z: bool, w_x, w_h, b, b_hn, xs, h0, m):
    hidden = h0.shape[-1]
    bias_h = jnp.concatenate([jnp.zeros((2 * hidden,), b.dtype), b_hn])
    bias = jnp.concatenate([_panels(b[None], 3), _panels(bias_h[None], 3)], axis=-1)[:, 0]
    out = (_stacked(xs, hidden), _stacked(xs, 4 * hidden, keep))
    hs, g = _ffi_call(
        "gated_gru_forward", out, xs, h0, _panels(w_x, 3), _panels(w_h, 3), bias, _kernel_mask(m, xs), keep_z=keep_z
    )
    return hs, g if keep else None


def _gru_recompute(w_x, w_h, b, b_hn, x, hp):
    """``[r, z, n, hn]`` of a chunk from its inputs and previous carries: :func:`gated.cells.gru.gru_gates`."""
    return jnp.concatenate(gru_gates(w_x, w_h, b, b_hn, x, hp), axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def gru(keep_z, keep, w_x, w_h, b, b_hn, xs, h0, m):
    hs, _ = _gru_forward(False, keep_z, w_x, w_h, b, b_hn, xs, h0, m)
    return hs[-1], hs if m is None else m * hs


def _gru_fwd(keep_z, keep, w_x, w_h, b, b_hn, xs, h0, m):
    need_dxs = xs.perturbed
    w_x, w_h, b, b_hn, xs, h0, m = _values(w_x, w_h, b, b_hn, xs, h0, m)
    hs, gates = _gru_forward(keep, keep_z, w_x, w_h, b, b_hn, xs, h0, m)
    out = hs[-1], hs if m is None else m * hs
    return out, (w_x, w_h, b, b_hn, xs, h0, m, hs, gates, jnp.zeros((0,)) if need_dxs else None)


def _gru_bwd(keep_z, keep, res, cotangents):
    """As :func:`_lstm_bwd`: per chunk, the loop kernel's ``dpre``, then the weight gradients as matmuls."""
    w_x, w_h, b, b_hn, xs, h0, m, hs, gates, need_dxs = res
    dh_last, dys = jax.tree.map(_dense, cotangents, (h0, hs))
    hidden = h0.shape[-1]
    k = chunk_length(xs.shape[0], xs.shape[1] * 4 * hidden)
    panels = _transposed_panels(w_h)

    def chunk(carry, inputs):
        dh, d_wx, d_wh, d_b, d_bhn = carry
        x_k, hp_k, g_k, dy_k, m_k = inputs
        if g_k is None:
            g_k = _gru_recompute(w_x, w_h, b, b_hn, x_k, hp_k)
        out = (jax.ShapeDtypeStruct(dh.shape, dh.dtype), _stacked(g_k, g_k.shape[-1]))
        dh, dpre = _ffi_call(
            "gated_gru_backward", out, panels, dh, dy_k, g_k, hp_k, _kernel_mask(m_k, dy_k), keep_z=keep_z
        )
        d_rec = dpre[..., : 3 * hidden]
        d_in = jnp.concatenate([dpre[..., : 2 * hidden], dpre[..., 3 * hidden :]], axis=-1)
        d_wx = d_wx + jnp.einsum("tbd,tbg->dg", x_k, d_in)
        d_wh = d_wh + jnp.einsum("tbh,tbg->hg", hp_k, d_rec)
        d_b, d_bhn = d_b + d_in.sum((0, 1)), d_bhn + d_rec[..., 2 * hidden :].sum((0, 1))
        return (dh, d_wx, d_wh, d_b, d_bhn), d_in @ w_x.T if need_dxs is not None else None

    zeros = tuple(jnp.zeros_like(a) for a in (w_x, w_h, b, b_hn))
    scanned = tuple(_chunked(a, k) for a in (xs, previous(h0, hs), gates, dys, m))
    (dh0, d_wx, d_wh, d_b, d_bhn), d_xs = jax.lax.scan(chunk, (dh_last, *zeros), scanned, reverse=True)
    d_xs = None if d_xs is None else d_xs.reshape(xs.shape)
    return d_wx, d_wh, d_b, d_bhn, d_xs, dh0, None if m is None else jnp.zeros_like(m)


gru.defvjp(_gru_fwd, _gru_bwd, symbolic_zeros=True)

backends.register("native", serves=(forms.Nonlinear,), supports=supports, sequence=sequence, pure=False)

__all__ = ["configure", "gru", "lstm", "sequence", "supports", "unavailable_reason"]
