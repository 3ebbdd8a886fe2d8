"""Study 1 (seed 002): the scalar chain a_l = phi(w_l a_{l-1} + b_l) and its gradient d a_L / d w_1 vs depth L."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gated import diagnostics

from .base import DTYPE, EXACT, plt_figure, style_key

TITLE = "1. The scalar chain: d a_L / d w_1 vanishes or explodes with depth"


def _zero_preactivation_biases(w: float, a0: float, depth: int) -> np.ndarray:
    """Biases that put every sigmoid at z = 0 (its steepest point, sigma' = 1/4): b_1 = -w a_0, b_l = -w / 2."""
    return np.array([-w * a0] + [-w * 0.5] * (depth - 1))


def _key(activation: str, w: float, bias_kind: str) -> str:
    return f"{activation}, w = {w:g}, {bias_kind}"


def compute(config, workdir) -> dict:
    """The closed form and forward-mode autodiff of d a_L / d w_1 for every chain, L = 1 .. max_depth."""
    depth = config.max_depth
    cases = [("sigmoid", float(w), "b = 0") for w in config.sigmoid_weights]
    cases += [("sigmoid", 2.0, "z = 0"), *[("relu", float(w), "b = 0") for w in config.relu_weights]]
    gradients = jax.jit(diagnostics.scalar_chain_gradients, static_argnums=3)
    a0 = jnp.asarray(config.a0, DTYPE)
    chains = {}
    for activation, w, bias_kind in cases:
        biases = np.zeros(depth) if bias_kind == "b = 0" else _zero_preactivation_biases(w, config.a0, depth)
        _, closed, auto = gradients(jnp.full(depth, w, DTYPE), jnp.asarray(biases, DTYPE), a0, activation)
        chains[_key(activation, w, bias_kind)] = {
            "activation": activation,
            "w": w,
            "bias": bias_kind,
            "closed": np.asarray(closed, np.float64),
            "autodiff": np.asarray(auto, np.float64),
        }
    return {"chains": chains}


def plot(results, config, report) -> None:
    depth = config.max_depth
    fig, axes = plt_figure(2)
    layers = np.arange(1, depth + 1)
    for ax, activation in zip(axes, ("sigmoid", "relu"), strict=True):
        for c in results["chains"].values():
            if c["activation"] != activation:
                continue
            (line,) = ax.plot(layers, np.abs(c["closed"]), label=f"w = {c['w']:g}, {c['bias']}")
            ax.plot(layers, np.abs(c["autodiff"]), "o", markersize=3, color=line.get_color(), alpha=0.6)
        ax.set(
            xlabel="depth L (number of layers)",
            ylabel="gradient reaching the first weight\n|d a_L / d w_1|",
            yscale="log",
            title=f"{activation} chain",
        )
        ax.grid(True, alpha=0.3)
        handles = ax.get_legend_handles_labels()[0]
        ax.legend(
            handles=handles + [style_key("-", "lines: closed form"), style_key("", "dots: autodiff", marker="o")],
            fontsize=9,
        )
    report.figure(
        fig,
        "scalar_chain",
        "|d a_L / d w_1| against depth for constant weights w (lines: the closed form "
        "[prod phi'(z_l) w_l] phi'(z_1) a_0; dots: forward-mode autodiff). The sigmoid factors are at most w/4, so "
        "the chain vanishes unless w > 4; ReLU multiplies by w at every layer.",
    )
    n = min(16, depth - 1)
    rows = [[k, float(c["closed"][-1]), float(c["closed"][n] / c["closed"][0])] for k, c in results["chains"].items()]
    report.table(["chain", f"d a_L/d w_1 at L = {depth}", f"product of the {n} factors, L = 1 to {n + 1}"], rows)


def claims(results, config, report) -> None:
    def claim(text, held, evidence):  # the chain is a fixed computation: no random draw
        report.claim(text, held, f"{evidence}; {EXACT}")

    depth, chains = config.max_depth, results["chains"]
    closed = {k: np.asarray(c["closed"]) for k, c in chains.items()}
    worst = max(
        float(np.max(np.abs(closed[k] - np.asarray(c["autodiff"])) / np.maximum(np.abs(c["autodiff"]), 1e-30)))
        for k, c in chains.items()
    )
    # the seed's numbers: 16 factors (from depth 1 to depth 17) of 2 and of 1/2
    n = min(16, depth - 1)
    factor = lambda key: float(closed[key][n] / closed[key][0])
    relu_up = factor(_key("relu", 2.0, "b = 0")) if _key("relu", 2.0, "b = 0") in closed else None
    relu_down = factor(_key("relu", 0.5, "b = 0")) if _key("relu", 0.5, "b = 0") in closed else None
    sigmoid_half = factor(_key("sigmoid", 2.0, "z = 0"))
    report.headline.update({"closed_form_vs_autodiff_max_rel_error": worst, "sigmoid_z0_w2_16_factors": sigmoid_half})
    claim("The closed form equals autodiff", worst < 1e-5, f"largest relative difference {worst:.2g}")
    claim(
        f"Sigmoid at z = 0 with w = 2 gives (1/2)^{n}",
        abs(sigmoid_half / 0.5**n - 1) < 1e-5,
        f"measured {sigmoid_half:.4g}, (1/2)^{n} = {0.5**n:.4g}",
    )
    if relu_up is not None:
        report.headline["relu_w2_16_factors"] = relu_up
        claim(f"ReLU with w = 2 explodes as 2^{n}", relu_up == 2.0**n, f"measured {relu_up:.6g}")
    if relu_down is not None:
        report.headline["relu_w0.5_16_factors"] = relu_down
        claim(f"ReLU with w = 1/2 vanishes as (1/2)^{n}", relu_down == 0.5**n, f"measured {relu_down:.4g}")
    for w in config.sigmoid_weights:
        curve = closed[_key("sigmoid", float(w), "b = 0")]
        bound = (float(w) / 4) ** np.arange(depth) * abs(curve[0])
        claim(
            f"Sigmoid factors are at most w/4 (w = {w:g}): |d a_L/d w_1| <= (w/4)^(L-1) |d a_1/d w_1|",
            bool(np.all(np.abs(curve) <= bound * (1 + 1e-5))),
            f"at L = {depth}: {abs(curve[-1]):.3g} <= {bound[-1]:.3g}",
        )
