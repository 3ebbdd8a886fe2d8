"""The GRU: reset and update gates (Cho et al. 2014)."""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import fused, native
from gated import init as initializers
from gated.options import choice, integer, option

from .base import Array, RecurrentCell


class GRUGates(NamedTuple):
    """Reset gate ``r``, update gate ``z`` and candidate ``n`` of one GRU step, ``(H,)`` each."""

    r: Array
    z: Array
    n: Array


class GRUParams(NamedTuple):
    """GRU parameters, gate blocks in the order r, z, n.

    ``input_kernel`` (D, 3H), ``recurrent_kernel`` (H, 3H), ``bias`` (3H,) and,
    for ``reset="after"`` only, ``candidate_bias`` (H,): the bias b_hn inside
    the reset product ``r * (h W_hn + b_hn)``; None for ``reset="before"``.
    """

    input_kernel: Array
    recurrent_kernel: Array
    bias: Array
    candidate_bias: Array | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class GRU(RecurrentCell):
    r"""Gated recurrent unit, in both published conventions.

    .. math::
        r_t &= \sigma(x_t W_{xr} + h_{t-1} W_{hr} + b_r)  && \text{reset gate}\\
        z_t &= \sigma(x_t W_{xz} + h_{t-1} W_{hz} + b_z)  && \text{update gate}\\
        n_t &= \tanh(x_t W_{xn} + (r_t * h_{t-1}) W_{hn} + b_n)
              && \text{reset="before" (seed 002, Cho et al. 2014)}\\
        n_t &= \tanh(x_t W_{xn} + r_t * (h_{t-1} W_{hn} + b_{hn}) + b_n)
              && \text{reset="after" (PyTorch, cuDNN, Flax)}\\
        h_t &= z_t * h_{t-1} + (1 - z_t) * n_t
              && \text{update="keep" (seed 002, PyTorch, Flax)}\\
        h_t &= (1 - z_t) * h_{t-1} + z_t * n_t
              && \text{update="write" (seeds 000/003, Chung et al. 2014)}

    Gate order: ``("r", "z", "n")`` as in PyTorch. Khapra's lecture GRU (gates
    read s_{t-1}; o_t plays the reset gate, i_t the update gate with the
    forget gate tied to 1 - i_t) is ``reset="before", update="write"``.
    The defaults, ``reset="after", update="keep"``, match PyTorch's
    ``nn.GRU`` and Flax's ``GRUCell``.

    Attributes:
      update: "keep" (z keeps the old state) or "write" (z writes the new one).
      reset: "after" (reset applied after the recurrent matmul, with the extra
        bias b_hn in ``params.candidate_bias``) or "before" (reset applied to
        h before the matmul).
      chrono_init: if set to T_max, the update-gate bias is drawn so that the
        gate keeps the state with time scales in [1, T_max] (Tallec &
        Ollivier 2018): b_z = +log(U[1, T_max-1]) for "keep", minus that for "write".

    References:
      Cho et al. 2014; Chung et al. 2014, "Empirical evaluation of gated
      recurrent neural networks on sequence modeling".
    """

    update: str = option("keep", choice, choices=("keep", "write"))
    reset: str = option("after", choice, choices=("before", "after"))
    chrono_init: int | None = option(None, integer, optional=True, minimum=3, expected="an int T_max > 2 or None")

    name: ClassVar[str] = "gru"
    params_type: ClassVar[type] = GRUParams
    hidden_output: ClassVar[bool] = True
    gates: ClassVar[tuple[str, ...]] = ("r", "z", "n")

    def fused_limits(self) -> str | None:
        return "the fused GRU kernel covers reset='after' only" if self.reset != "after" else None

    def fused_sequence(self, params: GRUParams, xs: Array, carry: Array, mask: Array | None, unroll: int):
        """The fused kernel (:mod:`gated.fused`): every step's ``h_t`` from one loop, one linear tangent rule."""
        w = (params.input_kernel, params.recurrent_kernel, params.bias, params.candidate_bias)
        hs = _fused(self.update == "keep", unroll, *w, xs, carry, mask)
        return hs[-1], fused.outputs(hs, mask)

    def native_limits(self) -> str | None:
        return "the native GRU loop covers reset='after' only" if self.reset != "after" else None

    def native_sequence(self, params: GRUParams, xs: Array, carry: Array, mask: Array | None, keep: bool):
        w = (params.input_kernel, params.recurrent_kernel, params.bias, params.candidate_bias)
        return _native(self.update == "keep", keep, *w, xs, carry, mask)

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> GRUParams:
        """Parameters for inputs of size ``input_size``; zero biases unless ``chrono_init``."""
        k_kernels, k_chrono = jax.random.split(key)
        w_x, w_h = self._init_kernels(k_kernels, input_size, dtype)
        h = self.hidden_size
        b_z = jnp.zeros((h,), dtype)
        if self.chrono_init is not None:
            b_z = initializers.chrono(k_chrono, h, self.chrono_init, dtype)
            b_z = b_z if self.update == "keep" else -b_z
        zeros = jnp.zeros((h,), dtype)
        bias = jnp.concatenate([zeros, b_z, zeros])
        return GRUParams(w_x, w_h, bias, zeros if self.reset == "after" else None)

    def gate_activations(self, params: GRUParams, carry: Array, u: Array) -> GRUGates:
        """The reset and update gates and the candidate of one step (``step`` is built on this)."""
        u = self._check_step(carry, u)
        h = carry
        hh = self.hidden_size
        w = params.recurrent_kernel
        if self.reset == "after":
            if params.candidate_bias is None or params.candidate_bias.shape != (hh,):
                got = None if params.candidate_bias is None else params.candidate_bias.shape
                raise ValueError(f"params.candidate_bias: expected shape {(hh,)} for reset='after', got {got}")
            rec = h @ w
            rz = jax.nn.sigmoid(u[: 2 * hh] + rec[: 2 * hh])
            r, z = rz[:hh], rz[hh:]
            n = jnp.tanh(u[2 * hh :] + r * (rec[2 * hh :] + params.candidate_bias))
        else:
            if params.candidate_bias is not None:
                raise ValueError("params.candidate_bias: expected None for reset='before' (it has no b_hn)")
            rz = jax.nn.sigmoid(u[: 2 * hh] + h @ w[:, : 2 * hh])
            r, z = rz[:hh], rz[hh:]
            n = jnp.tanh(u[2 * hh :] + (r * h) @ w[:, 2 * hh :])
        return GRUGates(r, z, n)

    def keep_fraction(self, z: Array) -> Array:
        """The share of h_{t-1} kept in h_t: z for update="keep", 1 - z for "write"."""
        return z if self.update == "keep" else 1.0 - z

    def step(self, params: GRUParams, carry: Array, u: Array) -> tuple[Array, Array]:
        h_new = self.gated_update(self.gate_activations(params, carry, u), carry)
        return h_new, h_new

    # The gated path (gated.diagnostics.gate_path): the state the update gate carries across time, h itself, its
    # per-step keep fraction, its update from gates held fixed, and no readout (h is the output).
    def gated_state(self, carry: Array) -> Array:
        return carry

    def with_gated_state(self, carry: Array, h: Array) -> Array:
        return h

    def keep(self, act: GRUGates) -> Array:
        return self.keep_fraction(act.z)

    def gated_update(self, act: GRUGates, carry: Array) -> Array:
        keep = self.keep_fraction(act.z)
        return keep * carry + (1.0 - keep) * act.n

    def readout_slope(self, act: GRUGates) -> Array | None:
        return None


# The fused kernel (gated.fused).
# GRU, reset="after": r, z = sigmoid(u_rz + (h W_h)_rz); n = tanh(u_n + r * ((h W_h)_n + b_hn));
# h_t = n + keep * (h_{t-1} - n) with keep = z ("keep") or 1 - z ("write").


def gru_gates(w_x, w_h, b, b_hn, x, hp):
    """``(r, z, n, hn)`` of a chunk ``(k, B, .)`` from its inputs ``x`` and previous carries ``hp``, two matmuls
    over all its rows (``hn = h W_hn + b_hn``). The GRU's gates, on the fused and native paths."""
    hidden = hp.shape[-1]
    u = fused.matmul(x, w_x) + b[None, None]
    v = fused.matmul(hp, w_h) + jnp.concatenate([jnp.zeros((2 * hidden,), b.dtype), b_hn])[None, None]
    rz = jax.nn.sigmoid(u[..., : 2 * hidden] + v[..., : 2 * hidden])
    r, z, hn = rz[..., :hidden], rz[..., hidden:], v[..., 2 * hidden :]
    return r, z, jnp.tanh(u[..., 2 * hidden :] + r * hn), hn


def _fused_loop(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m):
    """Every step's ``h_t``, with one kernel per gate so that nothing is sliced inside the loop (XLA:CPU emits slow
    code for a slice of a value computed in the same fusion): r and z each come from ``[x_t, h] W``, the candidate
    from ``x_t W_xn`` and ``h W_hn``."""
    hidden = h0.shape[-1]
    w = jnp.concatenate([w_x, w_h], axis=0)
    w_r, w_z = w[:, :hidden], w[:, hidden : 2 * hidden]
    w_xn, w_hn = w_x[:, 2 * hidden :], w_h[:, 2 * hidden :]
    b_r, b_z, b_n = (b[None, k * hidden : (k + 1) * hidden] for k in range(3))

    def body(h, inputs):
        x, mt = inputs
        xh = jnp.concatenate([x, h], axis=1)
        r = jax.nn.sigmoid(xh @ w_r + b_r)
        z = jax.nn.sigmoid(xh @ w_z + b_z)
        n = jnp.tanh(x @ w_xn + b_n + r * (h @ w_hn + b_hn[None]))
        keep = z if keep_z else 1 - z
        h_new = fused.masked(mt, n + keep * (h - n), h)
        return h_new, h_new

    return jax.lax.scan(body, h0, (xs, m), unroll=unroll)[1]


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _fused(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m):
    return _fused_loop(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m)


@functools.partial(_fused.defjvp, symbolic_zeros=True)
def _fused_jvp(keep_z, unroll, primals, tangents):
    """The GRU's tangent recurrence, in the form of :func:`gated.fused.carry_tangent`.

    ``dh_t = keep dh_{t-1} + a_r dpre_r + a_z dpre_z + a_hn dhn + c_n du_n`` with
    ``c_n = (1 - keep) tanh'``, ``a_r = c_n hn sigma'(r)``, ``a_z = +-(h_{t-1} - n) sigma'(z)``,
    ``a_hn = c_n r``, where ``dpre_{r,z}`` and ``dhn`` each get ``dh_{t-1} W_h`` and their share of
    the input-side tangent. Each chunk's gates are recomputed from the saved carries (two matmuls).
    """
    w_x, w_h, b, b_hn, xs, h0, m = primals
    dw_x, dw_h, db, db_hn, dxs, dh0, _ = fused.nonzero(tangents)
    hs = _fused(keep_z, unroll, w_x, w_h, b, b_hn, xs, h0, m)
    hidden = h0.shape[-1]
    zeros = jnp.zeros((2 * hidden,), b.dtype)
    db_h = None if db_hn is None else jnp.concatenate([zeros, db_hn])  # b_hn's tangent, on the recurrent side

    def chunk(dh, inputs):
        x, hp, mk, dx = inputs
        r, z, n, hn = gru_gates(w_x, w_h, b, b_hn, x, hp)
        keep = z if keep_z else 1 - z
        c_n = (1 - keep) * (1 - n * n)
        a_z = (hp - n) * z * (1 - z)
        a = jnp.concatenate([c_n * hn * r * (1 - r), a_z if keep_z else -a_z, c_n * r], axis=-1)
        # The input side: dx W_x + x dW_x + db enters r and z through a_r, a_z and the candidate through c_n;
        # h_{t-1} dW_h + db_hn enters r, z and hn through a.
        e_x = fused.input_tangent(w_x, x, hp, dw_x, None, db, dx)
        e_h = fused.input_tangent(w_x, x, hp, None, dw_h, db_h, None)
        terms = []
        if e_x is not None:
            terms.append(fused.block_sum(jnp.concatenate([a[..., : 2 * hidden], c_n], axis=-1) * e_x, hidden))
        if e_h is not None:
            terms.append(fused.block_sum(a * e_h, hidden))
        e = functools.reduce(jnp.add, terms) if terms else None
        if mk is not None:
            a, keep, e = mk * a, mk * keep + (1 - mk), None if e is None else mk * e
        return fused.carry_tangent(w_h, keep, a, e, dh, unroll)

    per_step = (xs, fused.previous(h0, hs), m, dxs)
    return hs, fused.over_chunks(chunk, fused.dense(dh0, h0), per_step, 4 * h0.size)


# The native kernel (gated.native, opt-in), reset="after": the forward loop keeps [r, z, n, hn] per step
# (hn = h W_hn + b_hn); the backward loop forms [d_r, d_z, d_hn, d_n] (pre-activations of r and z, of hn, and of the
# candidate's input side).


def _native_forward(keep: bool, keep_z: bool, w_x, w_h, b, b_hn, xs, h0, m):
    hidden = h0.shape[-1]
    bias_h = jnp.concatenate([jnp.zeros((2 * hidden,), b.dtype), b_hn])
    bias = jnp.concatenate([native.panels(b[None], 3), native.panels(bias_h[None], 3)], axis=-1)[:, 0]
    out = (native.stacked(xs, hidden), native.stacked(xs, 4 * hidden, keep))
    hs, g = native.ffi_call(
        "gated_gru_forward",
        out,
        xs,
        h0,
        native.panels(w_x, 3),
        native.panels(w_h, 3),
        bias,
        native.kernel_mask(m, xs),
        keep_z=keep_z,
    )
    return hs, g if keep else None


def _native_recompute(w_x, w_h, b, b_hn, x, hp):
    """``[r, z, n, hn]`` of a chunk from its inputs and previous carries: :func:`gated.cells.gru.gru_gates`."""
    return jnp.concatenate(gru_gates(w_x, w_h, b, b_hn, x, hp), axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _native(keep_z, keep, w_x, w_h, b, b_hn, xs, h0, m):
    hs, _ = _native_forward(False, keep_z, w_x, w_h, b, b_hn, xs, h0, m)
    return hs[-1], hs if m is None else m * hs


def _native_fwd(keep_z, keep, w_x, w_h, b, b_hn, xs, h0, m):
    need_dxs = xs.perturbed
    w_x, w_h, b, b_hn, xs, h0, m = native.values(w_x, w_h, b, b_hn, xs, h0, m)
    hs, gates = _native_forward(keep, keep_z, w_x, w_h, b, b_hn, xs, h0, m)
    out = hs[-1], hs if m is None else m * hs
    return out, (w_x, w_h, b, b_hn, xs, h0, m, hs, gates, jnp.zeros((0,)) if need_dxs else None)


def _native_bwd(keep_z, keep, res, cotangents):
    """As the LSTM's (:mod:`gated.cells.lstm`): per chunk, the loop kernel's ``dpre``, then the weight gradients as
    matmuls."""
    w_x, w_h, b, b_hn, xs, h0, m, hs, gates, need_dxs = res
    dh_last, dys = jax.tree.map(native.dense, cotangents, (h0, hs))
    hidden = h0.shape[-1]
    k = fused.chunk_length(xs.shape[0], xs.shape[1] * 4 * hidden)
    panels = native.transposed_panels(w_h)

    def chunk(carry, inputs):
        dh, d_wx, d_wh, d_b, d_bhn = carry
        x_k, hp_k, g_k, dy_k, m_k = inputs
        if g_k is None:
            g_k = _native_recompute(w_x, w_h, b, b_hn, x_k, hp_k)
        out = (jax.ShapeDtypeStruct(dh.shape, dh.dtype), native.stacked(g_k, g_k.shape[-1]))
        dh, dpre = native.ffi_call(
            "gated_gru_backward", out, panels, dh, dy_k, g_k, hp_k, native.kernel_mask(m_k, dy_k), keep_z=keep_z
        )
        d_rec = dpre[..., : 3 * hidden]
        d_in = jnp.concatenate([dpre[..., : 2 * hidden], dpre[..., 3 * hidden :]], axis=-1)
        d_wx = d_wx + jnp.einsum("tbd,tbg->dg", x_k, d_in)
        d_wh = d_wh + jnp.einsum("tbh,tbg->hg", hp_k, d_rec)
        d_b, d_bhn = d_b + d_in.sum((0, 1)), d_bhn + d_rec[..., 2 * hidden :].sum((0, 1))
        return (dh, d_wx, d_wh, d_b, d_bhn), d_in @ w_x.T if need_dxs is not None else None

    zeros = tuple(jnp.zeros_like(a) for a in (w_x, w_h, b, b_hn))
    scanned = tuple(native.chunked(a, k) for a in (xs, fused.previous(h0, hs), gates, dys, m))
    (dh0, d_wx, d_wh, d_b, d_bhn), d_xs = jax.lax.scan(chunk, (dh_last, *zeros), scanned, reverse=True)
    d_xs = None if d_xs is None else d_xs.reshape(xs.shape)
    return d_wx, d_wh, d_b, d_bhn, d_xs, dh0, None if m is None else jnp.zeros_like(m)


_native.defvjp(_native_fwd, _native_bwd, symbolic_zeros=True)
