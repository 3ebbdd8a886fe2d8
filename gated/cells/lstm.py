"""The LSTM: input, forget and output gates, peepholes, coupled gates (Hochreiter & Schmidhuber 1997;
Gers et al. 2000; Greff et al. 2017)."""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gated import blocks, fused, native
from gated import init as initializers
from gated.options import boolean, integer, number, option

from .base import Array, RecurrentCell, hidden_h, with_hidden_h


class LSTMParams(NamedTuple):
    """LSTM parameters, gate blocks in the order ``cell.gates``.

    ``input_kernel`` (D, G*H), ``recurrent_kernel`` (H, G*H), ``bias`` (G*H,),
    ``peepholes`` (P*H,) diagonal peephole weights in the order
    ``cell.peephole_gates``, or None without peepholes; ``norms``, the
    layer normalisation's gains and cell-state bias (:class:`LSTMNorms`), or
    None without it; ``projection`` ``(H, P)``, the projection of the hidden
    state with ``proj_size`` P (then ``recurrent_kernel`` is ``(P, G*H)``), or
    None.
    """

    input_kernel: Array
    recurrent_kernel: Array
    bias: Array
    peepholes: Array | None = None
    norms: LSTMNorms | None = None
    projection: Array | None = None


class LSTMNorms(NamedTuple):
    """The layer-normalised LSTM's parameters (Ba et al. 2016): the gains of the normalised input and recurrent
    pre-activations ``(G*H,)`` each (their biases are the cell's ``bias``), and the gain and bias of the normalised
    cell state ``(H,)`` each; gains initialised to ones, the bias to zeros."""

    input_scale: Array
    recurrent_scale: Array
    cell_scale: Array
    cell_bias: Array


# The layer normalisation's epsilon (added to the variance).
LAYER_NORM_EPS = 1e-5


def _normalise(z: Array) -> Array:
    """``(z - mean) / sqrt(var + eps)`` over the last axis (:func:`gated.blocks.standardise`)."""
    return blocks.standardise(z, LAYER_NORM_EPS)


class LSTMState(NamedTuple):
    """LSTM carry: hidden state ``h`` (H,) and cell state ``c`` (H,)."""

    h: Array
    c: Array

    hidden = hidden_h
    with_hidden = with_hidden_h


class LSTMGates(NamedTuple):
    """Gate activations of one LSTM step, ``(H,)`` each, and the new cell state ``c``."""

    i: Array
    f: Array
    g: Array
    o: Array
    c: Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class LSTM(RecurrentCell):
    r"""Long short-term memory cell (seed 002 equations; Khapra's s_t is c_t).

    .. math::
        i_t &= \sigma(x_t W_{xi} + h_{t-1} W_{hi} + b_i)   && \text{input gate}\\
        f_t &= \sigma(x_t W_{xf} + h_{t-1} W_{hf} + b_f)   && \text{forget gate}\\
        g_t &= \tanh(x_t W_{xg} + h_{t-1} W_{hg} + b_g)    && \text{candidate}\\
        o_t &= \sigma(x_t W_{xo} + h_{t-1} W_{ho} + b_o)   && \text{output gate}\\
        c_t &= f_t * c_{t-1} + i_t * g_t\\
        h_t &= o_t * \tanh(c_t)

    Gate order ``cell.gates``: ``("i", "f", "g", "o")`` as in PyTorch and Flax's
    ``OptimizedLSTMCell``; ``("i", "g", "o")`` when there is no forget block
    (``coupled`` or ``forget_gate=False``). The carry is ``LSTMState(h, c)``.

    Attributes:
      forget_bias: added to the forget-gate bias at init (default 1.0, Gers et
        al. 2000; Jozefowicz et al. 2015). For ``coupled`` it is subtracted from
        the input-gate bias (f = 1 - i). Ignored with ``forget_gate=False``.
      peepholes: diagonal peephole connections (Gers & Schmidhuber 2000): i_t
        and f_t also see ``p * c_{t-1}``, o_t sees ``p_o * c_t``. Initialised
        to zero, so a peephole cell starts as the plain cell.
      coupled: coupled input and forget gates (CIFG): f_t = 1 - i_t.
      forget_gate: False gives the 1997 cell without a forget gate,
        c_t = c_{t-1} + i_t * g_t.
      chrono_init: if set to T_max, chrono initialisation of the gate biases:
        b_f = log(U[1, T_max - 1]), b_i = -b_f (Tallec & Ollivier 2018),
        replacing ``forget_bias``.
      layer_norm: layer normalisation inside the cell (Ba, Kiros & Hinton 2016,
        eqs. 20-22): the input and recurrent pre-activations of all gates are
        normalised apart, ``LN(x W_x) a_x + LN(h W_h) a_h + b``, and the cell
        state before its tanh, ``h_t = o_t * tanh(LN(c_t) a_c + b_c)``; the
        pre-activations' own LN biases are the cell's ``bias``.
      proj_size: P, an LSTM with a projected hidden state (Sak, Senior &
        Beaufays 2014; PyTorch's ``proj_size``): ``h_t = (o_t * tanh(c_t))
        W_hr``, of size P < H, is what the gates read and what the cell
        outputs; ``c_t`` keeps H units. None (default): no projection.

    References:
      Hochreiter & Schmidhuber 1997; Gers, Schmidhuber & Cummins 2000;
      Greff et al. 2017, "LSTM: A search space odyssey" (CIFG, peepholes).
    """

    forget_bias: float = option(1.0, number)
    peepholes: bool = option(False, boolean)
    coupled: bool = option(False, boolean)
    forget_gate: bool = option(True, boolean)
    chrono_init: int | None = option(None, integer, optional=True, minimum=3, expected="an int T_max > 2 or None")
    layer_norm: bool = option(False, boolean)
    proj_size: int | None = option(None, integer, optional=True, minimum=1, expected="a positive int or None")

    name: ClassVar[str] = "lstm"
    params_type: ClassVar[type] = LSTMParams
    hidden_output: ClassVar[bool] = True

    def fused_limits(self) -> str | None:
        if self.peepholes or self.coupled or not self.forget_gate or self.layer_norm or self.proj_size:
            return (
                "the fused LSTM kernel covers the cell with a forget gate, without peepholes, coupling, layer "
                "normalisation or projection"
            )
        return None

    def fused_sequence(self, params: LSTMParams, xs: Array, carry: LSTMState, mask: Array | None, unroll: int):
        """The fused kernel (:mod:`gated.fused`): every step's ``(h_t, c_t)`` from one loop, one linear tangent
        rule."""
        hs, cs = _fused(unroll, params.input_kernel, params.recurrent_kernel, params.bias, xs, carry.h, carry.c, mask)
        return LSTMState(hs[-1], cs[-1]), fused.outputs(hs, mask)

    def native_limits(self) -> str | None:
        limits = self.fused_limits()
        return None if limits is None else limits.replace("the fused LSTM kernel", "the native LSTM loop")

    def native_sequence(self, params: LSTMParams, xs: Array, carry: LSTMState, mask: Array | None, keep: bool):
        (h, c), ys = _native(
            keep, params.input_kernel, params.recurrent_kernel, params.bias, xs, carry.h, carry.c, mask
        )
        return LSTMState(h, c), ys

    def __post_init__(self):
        super().__post_init__()
        if self.coupled and not self.forget_gate:
            raise ValueError("coupled=True ties the forget gate to the input gate; it needs forget_gate=True")
        if self.chrono_init is not None and not self.forget_gate:
            raise ValueError("chrono_init: sets the forget-gate bias; it needs forget_gate=True")
        if self.proj_size is not None and self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size: expected less than hidden_size {self.hidden_size} (as PyTorch), got {self.proj_size}"
            )

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    @property
    def gates(self) -> tuple[str, ...]:
        return ("i", "f", "g", "o") if self.forget_gate and not self.coupled else ("i", "g", "o")

    @property
    def peephole_gates(self) -> tuple[str, ...]:
        """Gates with a peephole, in the order of ``params.peepholes``."""
        if not self.peepholes:
            return ()
        return ("i", "f", "o") if "f" in self.gates else ("i", "o")

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> LSTMParams:
        """Parameters for inputs of size ``input_size``; see the class docstring for the biases."""
        k_kernels, k_chrono = jax.random.split(key)
        w_x, w_h = self._init_kernels(k_kernels, input_size, dtype)
        projection = None
        if self.proj_size:  # the recurrent kernel reads P units: the first P rows of the (H, G*H) draw
            w_h = w_h[: self.proj_size]
            k_projection = jax.random.fold_in(key, 2)  # apart from the split, so the other draws stay as they were
            projection = initializers.input_kernel(k_projection, self.hidden_size, self.proj_size, dtype)
        h = self.hidden_size
        blocks = {name: jnp.zeros((h,), dtype) for name in self.gates}
        if self.forget_gate:
            if self.chrono_init is not None:
                forget = initializers.chrono(k_chrono, h, self.chrono_init, dtype)
            else:
                forget = jnp.full((h,), self.forget_bias, dtype)
            if self.coupled:
                blocks["i"] = -forget
            else:
                blocks["f"] = forget
                if self.chrono_init is not None:
                    blocks["i"] = -forget
        bias = jnp.concatenate([blocks[name] for name in self.gates])
        peepholes = jnp.zeros((len(self.peephole_gates) * h,), dtype) if self.peepholes else None
        norms = None
        if self.layer_norm:
            ones = jnp.ones((self.num_gates * h,), dtype)
            norms = LSTMNorms(ones, ones, jnp.ones((h,), dtype), jnp.zeros((h,), dtype))
        return LSTMParams(w_x, w_h, bias, peepholes, norms, projection)

    def project(self, params: LSTMParams, x: Array) -> Array:
        """``x W_x + b``, or with ``layer_norm`` ``LN(x W_x) a_x + b`` (input-side only, so still outside the scan)."""
        if not self.layer_norm:
            return super().project(params, x)
        norms = self._norms(params)
        x = super().project(params._replace(bias=jnp.zeros_like(params.bias)), x)
        return _normalise(x) * norms.input_scale + params.bias

    def _norms(self, params: LSTMParams) -> LSTMNorms:
        h, g = self.hidden_size, self.num_gates
        norms = getattr(params, "norms", None)
        want = ((g * h,), (g * h,), (h,), (h,))
        if not isinstance(norms, LSTMNorms) or tuple(jnp.shape(a) for a in norms) != want:
            got = None if norms is None else jax.tree.map(jnp.shape, tuple(norms))
            raise ValueError(f"params.norms: expected LSTMNorms of shapes {want} (layer_norm=True), got {got}")
        return norms

    def _read(self, params: LSTMParams, c: Array) -> Array:
        """``tanh(c)``, or with ``layer_norm`` ``tanh(LN(c) a_c + b_c)``: what the output gate lets out."""
        if not self.layer_norm:
            return jnp.tanh(c)
        norms = self._norms(params)
        return jnp.tanh(_normalise(c) * norms.cell_scale + norms.cell_bias)

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> LSTMState:
        zeros = jnp.zeros((*batch_shape, self.hidden_size), dtype)
        return LSTMState(jnp.zeros((*batch_shape, self.output_size), dtype), zeros)

    def gate_activations(self, params: LSTMParams, carry: LSTMState, u: Array) -> LSTMGates:
        """The gate activations of one step and the new cell state (``step`` is built on this).

        ``f`` is ``1 - i`` for a coupled cell and ones without a forget gate, so
        that ``c = f * c_prev + i * g`` in every variant.
        """
        u = self._check_step(carry, u)
        h, c = carry
        recurrent = h @ params.recurrent_kernel
        if self.layer_norm:
            recurrent = _normalise(recurrent) * self._norms(params).recurrent_scale
        z = u + recurrent
        pre = {name: self.gate(z, name) for name in self.gates}
        p = {}
        if self.peepholes:
            n = len(self.peephole_gates)
            if params.peepholes is None or params.peepholes.shape != (n * self.hidden_size,):
                got = None if params.peepholes is None else params.peepholes.shape
                raise ValueError(f"params.peepholes: expected shape {(n * self.hidden_size,)}, got {got}")
            p = dict(zip(self.peephole_gates, params.peepholes.reshape(n, self.hidden_size), strict=True))
            pre["i"] = pre["i"] + p["i"] * c
            if "f" in p:
                pre["f"] = pre["f"] + p["f"] * c
        i = jax.nn.sigmoid(pre["i"])
        g = jnp.tanh(pre["g"])
        if not self.forget_gate:
            f = jnp.ones_like(i)
        else:
            f = 1.0 - i if self.coupled else jax.nn.sigmoid(pre["f"])
        c_new = f * c + i * g
        o = jax.nn.sigmoid(pre["o"] + p["o"] * c_new if self.peepholes else pre["o"])
        return LSTMGates(i, f, g, o, c_new)

    def step(self, params: LSTMParams, carry: LSTMState, u: Array) -> tuple[LSTMState, Array]:
        act = self.gate_activations(params, carry, u)
        h_new = act.o * self._read(params, act.c)
        if self.proj_size:
            h, p = self.hidden_size, self.proj_size
            projection = getattr(params, "projection", None)
            if projection is None or projection.shape != (h, p):
                got = None if projection is None else projection.shape
                raise ValueError(f"params.projection: expected shape {(h, p)} (proj_size={p}), got {got}")
            h_new = h_new @ projection
        return LSTMState(h_new, act.c), h_new

    def other_states(self, carry: LSTMState) -> dict[str, Array]:
        return {"c": carry.c}

    # The gated path (gated.diagnostics.gate_path): the state the gates carry across time, c, its per-step keep
    # factor f, its update from gates held fixed, and the slope dh/dc that reads it out.
    def gated_state(self, carry: LSTMState) -> Array:
        return carry.c

    def with_gated_state(self, carry: LSTMState, c: Array) -> LSTMState:
        return carry._replace(c=c)

    def keep(self, act: LSTMGates) -> Array:
        return act.f

    def gated_update(self, act: LSTMGates, carry: LSTMState) -> LSTMState:
        if self.layer_norm or self.proj_size:
            raise ValueError(
                "cell: the gated path by autodiff covers the LSTM without layer_norm or proj_size "
                "(its h reads c through parameters); gate_path's forget-gate product holds for it"
            )
        c_new = act.f * carry.c + act.i * act.g
        return LSTMState(act.o * jnp.tanh(c_new), c_new)

    def readout_slope(self, act: LSTMGates) -> Array | None:
        """``dh/dc`` of one step, ``o tanh'(c)``; None with ``layer_norm`` or ``proj_size``, where the units are
        coupled (the slope is a full matrix)."""
        if self.layer_norm or self.proj_size:
            return None
        return act.o * (1.0 - jnp.tanh(act.c) ** 2)


# The fused kernel (gated.fused): the whole gate block activated by one tanh, sigmoid(z) = (1 + tanh(z / 2)) / 2.


def _block_scale(h: int, dtype) -> Array:
    half = jnp.full((h,), 0.5, dtype)
    return jnp.concatenate([half, half, jnp.ones((h,), dtype), half])


def lstm_block(pre: Array, hidden: int) -> Array:
    """``a = tanh(z * scale)`` of a pre-activation block ``z`` ``(..., 4H)``: ``tanh(z/2)`` for i, f, o and
    ``tanh(z)`` for g, one ``tanh`` for the whole block. The LSTM's gates, on the fused and native paths."""
    return jnp.tanh(pre * _block_scale(hidden, pre.dtype).reshape((1,) * (pre.ndim - 1) + (-1,)))


def lstm_gates(a: Array, h: int):
    """``(i, f, g, o)`` from the block ``a = tanh(z * scale)`` (:func:`lstm_block`)."""
    i, f, g, o = (a[..., k * h : (k + 1) * h] for k in range(4))
    return 0.5 + 0.5 * i, 0.5 + 0.5 * f, g, 0.5 + 0.5 * o


def _fused_loop(unroll, w_x, w_h, b, xs, h0, c0, m):
    """Every step's ``(h_t, c_t)``. The input projection is inside the loop, as one matmul with the recurrent one:
    ``[x_t, h] [W_x; W_h]``."""
    hidden = w_h.shape[0]
    w, bias = jnp.concatenate([w_x, w_h], axis=0), b[None, :]

    def body(carry, inputs):
        h, c = carry
        x, mt = inputs
        a = lstm_block(jnp.concatenate([x, h], axis=1) @ w + bias, hidden)
        i, f, g, o = lstm_gates(a, hidden)
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        h_new, c_new = fused.masked(mt, h_new, h), fused.masked(mt, c_new, c)
        return (h_new, c_new), (h_new, c_new)

    return jax.lax.scan(body, (h0, c0), (xs, m), unroll=unroll)[1]


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _fused(unroll, w_x, w_h, b, xs, h0, c0, m):
    return _fused_loop(unroll, w_x, w_h, b, xs, h0, c0, m)


@functools.partial(_fused.defjvp, symbolic_zeros=True)
def _fused_jvp(unroll, primals, tangents):
    """The LSTM's tangent recurrence.

    With ``dpre_t = e_t + dh_{t-1} W_h`` the pre-activation tangent and
    ``s = [i'(g), f'(c_{t-1}), g'(i), o'(tanh c_t)]`` the gates' derivatives times
    what they multiply: ``dc_t = f dc_{t-1} + (s dpre)_i + (s dpre)_f + (s dpre)_g``
    and ``dh_t = (s dpre)_o + o tanh'(c_t) dc_t``. Each chunk's gates are
    recomputed from the saved carries with one matmul.
    """
    w_x, w_h, b, xs, h0, c0, m = primals
    dw_x, dw_h, db, dxs, dh0, dc0, _ = fused.nonzero(tangents)
    hs, cs = _fused(unroll, w_x, w_h, b, xs, h0, c0, m)
    hidden = w_h.shape[0]
    w = jnp.concatenate([w_x, w_h], axis=0)
    # Which gate blocks of s * dpre sum into dc (i, f, g) and which into dh (o). A masked sum rather than slices:
    # its transpose is a broadcast, where that of slices is pads, which XLA:CPU runs slower in the reverse loop.
    to_c = jnp.array([1, 1, 1, 0], xs.dtype)[None, :, None]
    to_h = jnp.array([0, 0, 0, 1], xs.dtype)[None, :, None]

    def chunk(carry, inputs):
        x, hp, cp, c, mk, dx = inputs
        a = lstm_block(fused.matmul(jnp.concatenate([x, hp], axis=2), w) + b[None, None], hidden)
        i, f, g, o = lstm_gates(a, hidden)
        tc = jnp.tanh(c)  # c_t at every valid step; the mask keeps the carry at padded ones
        s = jnp.concatenate([0.25 * g, 0.25 * cp, i, 0.25 * tc], axis=-1) * (1 - a * a)  # (1 - a^2) / 4 = sigma'
        e = fused.input_tangent(w_x, x, hp, dw_x, dw_h, db, dx)
        e = jnp.zeros_like(s) if e is None else e

        def body(carry, inputs):
            dh, dc = carry
            e_t, s_t, f_t, o_t, tc_t, mt = inputs
            sd = (s_t * (e_t + dh @ w_h)).reshape(*dh.shape[:-1], 4, hidden)
            dc_new = f_t * dc + jnp.sum(sd * to_c, axis=-2)
            dh_new = jnp.sum(sd * to_h, axis=-2) + o_t * (1 - tc_t * tc_t) * dc_new
            dh_new, dc_new = fused.masked(mt, dh_new, dh), fused.masked(mt, dc_new, dc)
            return (dh_new, dc_new), (dh_new, dc_new)

        return jax.lax.scan(body, carry, (e, s, f, o, tc, mk), unroll=unroll)

    per_step = (xs, fused.previous(h0, hs), fused.previous(c0, cs), cs, m, dxs)
    tangent = fused.over_chunks(chunk, (fused.dense(dh0, h0), fused.dense(dc0, c0)), per_step, 4 * h0.size)
    return (hs, cs), tangent


# The native kernel (gated.native, opt-in): the forward loop keeps every step's activated gates [i, f, g, o]; the
# backward loop forms dpre from them and the cell states.


def _native_activations(pre: Array, hidden: int) -> Array:
    """``[sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)]`` of a pre-activation block ``(..., 4H)``: the
    fused path's transcription of the gates (:func:`lstm_gates`)."""
    return jnp.concatenate(lstm_gates(lstm_block(pre, hidden), hidden), axis=-1)


def _native_forward(keep: bool, w_x, w_h, b, xs, h0, c0, m):
    hidden = h0.shape[-1]
    panels, bias = native.panels(jnp.concatenate([w_x, w_h], axis=0), 4), native.panels(b[None], 4)[:, 0]
    out = (native.stacked(xs, hidden), native.stacked(xs, hidden), native.stacked(xs, 4 * hidden, keep))
    hs, cs, acts = native.ffi_call("gated_lstm_forward", out, xs, h0, c0, panels, bias, native.kernel_mask(m, xs))
    return hs, cs, acts if keep else None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _native(keep, w_x, w_h, b, xs, h0, c0, m):
    hs, cs, _ = _native_forward(False, w_x, w_h, b, xs, h0, c0, m)
    return (hs[-1], cs[-1]), hs if m is None else m * hs


def _native_fwd(keep, w_x, w_h, b, xs, h0, c0, m):
    need_dxs = xs.perturbed  # the input gradient (one matmul per chunk) is skipped for a model's first layer
    w_x, w_h, b, xs, h0, c0, m = native.values(w_x, w_h, b, xs, h0, c0, m)
    hs, cs, acts = _native_forward(keep, w_x, w_h, b, xs, h0, c0, m)
    out = (hs[-1], cs[-1]), hs if m is None else m * hs
    return out, (w_x, w_h, b, xs, h0, c0, m, hs, cs, acts, jnp.zeros((0,)) if need_dxs else None)


def _native_bwd(keep, res, cotangents):
    """Walks chunks of steps (:func:`gated.fused.chunk_length`) backwards: the loop kernel gives each chunk's
    ``dpre``, then the chunk's share of the weight gradients (and the input gradient, if needed) is one matmul
    each. Without kept gates (remat), the chunk's gates are first recomputed with one matmul."""
    w_x, w_h, b, xs, h0, c0, m, hs, cs, acts, need_dxs = res
    (dh_last, dc_last), dys = jax.tree.map(native.dense, cotangents, ((h0, h0), hs))
    hidden, inputs = w_h.shape[0], w_x.shape[0]
    k = fused.chunk_length(xs.shape[0], xs.shape[1] * 4 * hidden)
    w = jnp.concatenate([w_x, w_h], axis=0)
    panels = native.transposed_panels(w_h)

    def chunk(carry, inputs_k):
        dh, dc, d_w, d_b = carry
        x_k, hp_k, c_k, cp_k, a_k, dy_k, m_k = inputs_k
        xh = jnp.concatenate([x_k, hp_k], axis=2)
        if a_k is None:
            a_k = _native_activations(xh @ w + b[None, None], hidden)
        carry_shape = jax.ShapeDtypeStruct(dh.shape, dh.dtype)
        out = (carry_shape, carry_shape, native.stacked(a_k, a_k.shape[-1]))
        dh, dc, dpre = native.ffi_call(
            "gated_lstm_backward", out, panels, dh, dc, dy_k, a_k, c_k, cp_k, native.kernel_mask(m_k, dy_k)
        )
        d_w = d_w + jnp.einsum("tbc,tbg->cg", xh, dpre)
        d_b = d_b + dpre.sum((0, 1))
        return (dh, dc, d_w, d_b), dpre @ w_x.T if need_dxs is not None else None

    zeros = (jnp.zeros_like(w), jnp.zeros_like(b))
    per_step = (xs, fused.previous(h0, hs), cs, fused.previous(c0, cs), acts, dys, m)
    scanned = tuple(native.chunked(a, k) for a in per_step)
    (dh0, dc0, d_w, d_b), d_xs = jax.lax.scan(chunk, (dh_last, dc_last, *zeros), scanned, reverse=True)
    d_xs = None if d_xs is None else d_xs.reshape(xs.shape)
    return d_w[:inputs], d_w[inputs:], d_b, d_xs, dh0, dc0, None if m is None else jnp.zeros_like(m)


_native.defvjp(_native_fwd, _native_bwd, symbolic_zeros=True)
