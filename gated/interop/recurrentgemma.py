"""Parameters of ``recurrentgemma``'s JAX modules (Botev et al. 2024, the authors' code of Griffin and Hawk) as
gated's.

    block = recurrentgemma.jax.RecurrentBlock(width=D, num_heads=heads, lru_width=H)
    variables = block.init(key, x, segment_pos)
    mixer, params = from_recurrent_block(variables["params"], num_heads=heads)
    carry, ys = mixer(params, jnp.swapaxes(x, 0, 1))   # time-major; ys equals block.apply(...)[0] swapped

Only the parameter layout changes; ``recurrentgemma`` is not imported (the parameters are a dict of arrays).
The RG-LRU's gates there are block-diagonal (``num_heads`` blocks); here they are the dense kernels those blocks
make, and its input is the branch itself: the ``v`` block of :class:`gated.cells.RGLRU`'s kernel is the identity.
``recurrentgemma`` restarts the RG-LRU at a segment start (``segment_pos == 0``, the first step of a sequence
without a cache among them) with ``a = 0`` and no ``sqrt(1 - a^2)`` factor: the converted cell does the same
(``RGLRU(segment_start="recurrentgemma")``), so that ``resets`` where ``segment_pos == 0`` give the same outputs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gated import blocks, cells, mixers


def _block_diagonal(w: Any) -> jax.Array:
    """``(heads, i, j)`` blocks to the ``(heads * i, heads * j)`` block-diagonal matrix."""
    return jax.scipy.linalg.block_diag(*jnp.asarray(w))


def from_recurrent_block(params: Any, num_heads: int | None = None) -> tuple[mixers.Griffin, mixers.GriffinParams]:
    """A :class:`gated.mixers.Griffin` and its parameters from those of ``recurrentgemma.jax.RecurrentBlock``
    (``variables["params"]``: ``linear_y``, ``linear_x``, ``conv_1d``, ``rg_lru``, ``linear_out``), with real
    (``lru_only_real=True``) RG-LRU parameters. ``num_heads`` is read from the gates' blocks when left None."""
    try:
        lru = params["rg_lru"]
        heads = lru["a_gate"]["w"].shape[0]
        if num_heads is not None and num_heads != heads:
            raise ValueError(f"num_heads: expected the gates' {heads} blocks, got {num_heads}")
        h = lru["a_param"].shape[0]
        gates = [_block_diagonal(lru[g]["w"]) for g in ("a_gate", "input_gate")]
        eye = jnp.eye(h, dtype=gates[0].dtype)
        kernel = jnp.concatenate([*gates, eye], axis=1)  # gates ("a", "x", "v"): v is the branch itself
        bias = jnp.concatenate(
            [jnp.ravel(lru["a_gate"]["b"]), jnp.ravel(lru["input_gate"]["b"]), jnp.zeros((h,), gates[0].dtype)]
        )
        cell = cells.RGLRU(h, c=8.0, segment_start="recurrentgemma")
        cell_params = cell.params_type(kernel, bias, -jnp.asarray(lru["a_param"]))  # softplus(-Lambda) = softplus(a)
        conv = params["conv_1d"]
        mixer = mixers.Griffin(cell, conv_width=conv["w"].shape[0])
        out = mixers.GriffinParams(
            params["linear_y"]["kernel"],
            params["linear_y"]["bias"],
            params["linear_x"]["kernel"],
            params["linear_x"]["bias"],
            blocks.ConvParams(conv["w"], conv["b"]),
            cell_params,
            params["linear_out"]["kernel"],
            params["linear_out"]["bias"],
        )
    except KeyError as err:
        raise ValueError(
            f"params: expected recurrentgemma RecurrentBlock parameters, missing key {err}; got keys {sorted(params)}"
        ) from None
    if "a_imag_param" in lru:
        raise ValueError("params: a complex RG-LRU (lru_only_real=False) has no gated equal; expected real parameters")
    return mixer, out
