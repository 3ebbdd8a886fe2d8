"""Study 2 (seed 003): the gradient at the first layer of a deep MLP vs depth, plain vs residual vs dense."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .base import DTYPE, claim_over_seeds, plt_figure

TITLE = "2. Depth and shortcuts: the first layer's gradient in a deep MLP"
ARCHITECTURES = ("plain", "residual", "dense")
ACTIVATIONS = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu}


def mlp_loss(kernels, xs, targets, depth, architecture: str, phi) -> jax.Array:
    """Mean squared error of an MLP with ``depth`` hidden layers (a traced int, so that every depth is one program).

    ``kernels = (first, middle, readout)`` with ``middle`` stacked for the largest depth and scanned; the layers past
    ``depth`` pass their input through. plain: h_l = phi(h_{l-1} W_l); residual: h_l = h_{l-1} + phi(h_{l-1} W_l)
    from layer 2 on; dense (DenseNet): h_l = phi([x, h_1, ..., h_{l-1}] W_l), kept in a buffer of blocks whose
    unwritten blocks are zero and whose kernels' unused rows are zero, and the readout sees every layer.
    """
    first, middle, readout = kernels
    width = first.shape[1]
    h = phi(xs @ first)
    layers = jnp.arange(2, middle.shape[0] + 2)
    if architecture == "dense":
        buffer = jnp.zeros((xs.shape[0], readout.shape[0]), xs.dtype)
        buffer = buffer.at[:, :width].set(xs).at[:, width : 2 * width].set(h)

        def dense_layer(buffer, inputs):
            layer_index, w = inputs
            new = jax.lax.dynamic_update_slice_in_dim(buffer, phi(buffer @ w), layer_index * width, axis=1)
            return jnp.where(layer_index <= depth, new, buffer), None

        buffer, _ = jax.lax.scan(dense_layer, buffer, (layers, middle))
        return jnp.mean((buffer @ readout - targets) ** 2)
    residual = architecture == "residual"

    def layer(h, inputs):
        layer_index, w = inputs
        return jnp.where(layer_index <= depth, h * residual + phi(h @ w), h), None

    h, _ = jax.lax.scan(layer, h, (layers, middle))
    return jnp.mean((h @ readout - targets) ** 2)


def init_kernels(key, depth, max_depth: int, width: int, architecture: str):
    """LeCun-normal kernels (std 1/sqrt(fan_in)): the first layer, ``max_depth - 1`` middle layers and the readout.

    For "dense", layer l reads l blocks of ``width`` out of a buffer of ``max_depth + 1`` blocks; the rows of the
    blocks it cannot see yet are zero, and the readout sees the ``depth + 1`` written blocks.
    """
    keys = jax.random.split(key, 3)
    first = jax.random.normal(keys[0], (width, width), DTYPE) / math.sqrt(width)
    if architecture != "dense":
        middle = jax.random.normal(keys[1], (max_depth - 1, width, width), DTYPE) / math.sqrt(width)
        return first, middle, jax.random.normal(keys[2], (width, 1), DTYPE) / math.sqrt(width)
    size = width * (max_depth + 1)
    block = jnp.arange(size) // width  # the block each buffer row belongs to
    fan_in = lambda blocks: (width * blocks).astype(DTYPE)
    layers = jnp.arange(2, max_depth + 1)
    middle = jax.random.normal(keys[1], (max_depth - 1, size, width), DTYPE)
    middle = middle * (block[None, :] < layers[:, None])[:, :, None] / jnp.sqrt(fan_in(layers))[:, None, None]
    readout = jax.random.normal(keys[2], (size, 1), DTYPE) * (block <= depth)[:, None] / jnp.sqrt(fan_in(depth + 1))
    return first, middle, readout


def compute(config, workdir) -> dict:
    """The first layer's gradient norm (geometric mean over seeds) per architecture and depth."""
    for a in config.architectures:
        if a not in ARCHITECTURES:
            raise ValueError(f"config.architectures: expected entries of {ARCHITECTURES}, got {a!r}")
    if config.activation not in ACTIVATIONS:
        raise ValueError(f"config.activation: expected one of {sorted(ACTIVATIONS)}, got {config.activation!r}")
    phi = ACTIVATIONS[config.activation]
    keys = jax.random.split(jax.random.key(0), config.seeds)
    norms = {a: [] for a in config.architectures}
    seeds = {a: [] for a in config.architectures}  # per depth, every seed's norm
    max_depth = max(config.depths)
    for architecture in config.architectures:

        def first_layer_norm(key, depth, architecture=architecture):
            k_w, k_x, k_y = jax.random.split(key, 3)
            kernels = init_kernels(k_w, depth, max_depth, config.width, architecture)
            xs = jax.random.normal(k_x, (config.batch_size, config.width), DTYPE)
            targets = jax.random.normal(k_y, (config.batch_size, 1), DTYPE)
            grads = jax.grad(mlp_loss)(kernels, xs, targets, depth, architecture, phi)
            scale = jnp.max(jnp.abs(grads[0]))  # the squares of a 1e-21 gradient underflow float32
            return scale * jnp.linalg.norm(grads[0] / jnp.where(scale > 0, scale, 1.0))

        norms_at = jax.jit(jax.vmap(first_layer_norm, (0, None)))  # one program for every depth
        for depth in config.depths:
            per_seed = np.asarray(norms_at(keys, jnp.int32(depth)), np.float64)
            per_seed = np.maximum(per_seed, np.finfo(np.float32).tiny)  # float32 underflow shows as 1.2e-38
            norms[architecture].append(float(np.exp(np.mean(np.log(per_seed)))))
            seeds[architecture].append(per_seed)

    return {"first_layer_norms": norms, "per_seed": seeds}


def plot(results, config, report) -> None:
    norms = results["first_layer_norms"]
    fig, (ax,) = plt_figure(1, width=7)
    for architecture, values in norms.items():
        ax.plot(config.depths, values, "o-", label=architecture)
    ax.set(
        xlabel="depth (number of hidden layers)",
        ylabel="gradient reaching the first layer\n(norm ||dL/dW_1||, geometric mean over seeds)",
        yscale="log",
        xscale="log",
        title=f"first-layer gradient, {config.activation} MLP, width {config.width}",
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    report.figure(
        fig,
        "deep_mlp",
        f"Norm of the loss gradient at the first layer's weights against depth, at initialisation, geometric mean over "
        f"{config.seeds} seeds (values that underflow float32 are drawn at 1.2e-38). In the plain "
        f"{config.activation} network every layer multiplies the backward signal "
        "by W^T diag(phi'); shortcuts (residual) and dense connections give the first layer paths that skip layers.",
    )
    shallow, deep = config.depths[0], config.depths[-1]
    report.table(
        ["architecture", *[f"depth {d}" for d in config.depths], f"ratio {deep}/{shallow}"],
        [[a, *v, v[-1] / v[0]] for a, v in norms.items()],
    )


def claims(results, config, report) -> None:
    shallow, deep = config.depths[0], config.depths[-1]
    ratio = {a: v[-1] / v[0] for a, v in results["first_layer_norms"].items()}
    report.headline.update({f"{a}_ratio_depth_{deep}_vs_{shallow}": r for a, r in ratio.items()})
    if "plain" in ratio:
        per_seed = {a: np.asarray(v[-1]) / np.asarray(v[0]) for a, v in results["per_seed"].items()}
        claim_over_seeds(
            report,
            f"The plain {config.activation} MLP's first-layer gradient vanishes with depth (depth {deep} keeps under "
            f"1e-2 of depth {shallow}'s)",
            per_seed["plain"] < 1e-2,
            f"geometric mean: depth {deep} keeps {ratio['plain']:.2g}",
        )
        for a in ("residual", "dense"):
            if a in ratio:
                claim_over_seeds(
                    report,
                    f"{a.capitalize()} connections keep it alive (within 100x of the shallow net and 100x above plain, "
                    "seed by seed)",
                    (per_seed[a] > 1e-2) & (per_seed[a] > 100 * per_seed["plain"]),
                    f"geometric means: depth {deep} keeps {ratio[a]:.2g}, plain {ratio['plain']:.2g}",
                )
