"""Initialisers for fused-gate kernels and biases.

Shapes: D input size, H hidden size, G number of fused gates. A recurrent
kernel is ``(H, G*H)``: G blocks of ``(H, H)``, one per gate, side by side.
"""

from __future__ import annotations

import functools
import inspect
import math

import jax
import jax.numpy as jnp

RECURRENT_INITS = ("orthogonal", "gaussian", "identity")


def _drawn_in_float32(init):
    """Draws in float32 (or wider) and casts to ``dtype``: the orthogonal initialiser's QR and the truncated normal
    have no bfloat16 or float16 kernels, and half-precision draws would lose the distribution's tails."""

    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        dtype = bound.arguments["dtype"]
        bound.arguments["dtype"] = jnp.promote_types(dtype, jnp.float32)
        return init(*bound.args, **bound.kwargs).astype(dtype)

    return wrapped


@_drawn_in_float32
def orthogonal(key: jax.Array, hidden_size: int, num_gates: int, scale: float = 1.0, dtype=jnp.float32) -> jax.Array:
    """Recurrent kernel whose every ``(H, H)`` gate block is ``scale`` times an orthogonal matrix.

    Each block is drawn independently from the Haar measure, so every block
    has all its singular values and eigenvalue moduli equal to ``scale``: the
    spectral radius of each gate's recurrence is exactly ``scale``. Flax NNX
    and Keras orthogonalise the fused ``(H, G*H)`` matrix instead, whose
    ``(H, H)`` blocks are then not orthogonal.

    Returns:
      ``(H, G*H)`` array.

    References:
      Saxe, McClelland & Ganguli 2014, "Exact solutions to the nonlinear
      dynamics of learning in deep linear neural networks".
    """
    keys = jax.random.split(key, num_gates)
    init = jax.nn.initializers.orthogonal(scale=scale)
    return jnp.concatenate([init(k, (hidden_size, hidden_size), dtype) for k in keys], axis=1)


@_drawn_in_float32
def gaussian(key: jax.Array, hidden_size: int, num_gates: int, scale: float = 1.0, dtype=jnp.float32) -> jax.Array:
    """Recurrent kernel with i.i.d. entries N(0, (scale / sqrt(H))^2).

    By the circular law the spectral radius of each ``(H, H)`` block tends to
    ``scale`` as H grows (the "gain" g of Sompolinsky et al. 1988).

    Returns:
      ``(H, G*H)`` array.
    """
    std = scale / math.sqrt(hidden_size)
    return std * jax.random.normal(key, (hidden_size, num_gates * hidden_size), dtype)


@_drawn_in_float32
def identity(key: jax.Array, hidden_size: int, num_gates: int, scale: float = 1.0, dtype=jnp.float32) -> jax.Array:
    """Recurrent kernel with each gate block ``scale * I`` (``key`` unused).

    References:
      Le, Jaitly & Hinton 2015, "A simple way to initialize recurrent networks
      of rectified linear units" (IRNN).
    """
    del key
    return jnp.tile(scale * jnp.eye(hidden_size, dtype=dtype), (1, num_gates))


def recurrent_kernel(
    kind: str, key: jax.Array, hidden_size: int, num_gates: int, scale: float = 1.0, dtype=jnp.float32
) -> jax.Array:
    """Dispatches to :func:`orthogonal`, :func:`gaussian` or :func:`identity` by name."""
    makers = {"orthogonal": orthogonal, "gaussian": gaussian, "identity": identity}
    if kind not in makers:
        raise ValueError(f"recurrent_init: expected one of {RECURRENT_INITS}, got {kind!r}")
    return makers[kind](key, hidden_size, num_gates, scale, dtype)


@_drawn_in_float32
def input_kernel(key: jax.Array, input_size: int, width: int, dtype=jnp.float32) -> jax.Array:
    """LeCun-normal input kernel ``(D, width)``: truncated normal with variance 1/D."""
    return jax.nn.initializers.lecun_normal()(key, (input_size, width), dtype)


@_drawn_in_float32
def chrono(key: jax.Array, hidden_size: int, max_timescale: int, dtype=jnp.float32) -> jax.Array:
    """Chrono bias ``log(U[1, T_max - 1])`` of shape ``(H,)``.

    Set as the forget-gate bias (and its negative as the input-gate bias) it
    spreads the cell's characteristic forgetting times over ``[1, T_max]``.

    References:
      Tallec & Ollivier 2018, "Can recurrent neural networks warp time?"
    """
    if max_timescale <= 2:
        raise ValueError(f"chrono_init: expected the longest time scale T_max > 2, got {max_timescale}")
    u = jax.random.uniform(key, (hidden_size,), dtype, minval=1.0, maxval=max_timescale - 1.0)
    return jnp.log(u)
