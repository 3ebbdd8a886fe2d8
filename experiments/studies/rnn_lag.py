"""Study 3 (seeds 000/003): ||dL/dh_k|| vs lag for a vanilla RNN, spectral radius below, at and above 1."""

from __future__ import annotations

import jax
import numpy as np

import gated
from gated import diagnostics

from .base import (
    DTYPE,
    claim_over_seeds,
    decay,
    draw_trained_lag_profile,
    lag_axes,
    lag_norms,
    plt_panels,
    report_lag,
    stack,
    style_key,
    task_inputs,
    trained_lag_profile,
)

TITLE = "3. Vanilla RNN: the gradient against the lag, and the bound (||W_hh|| max|phi'|)^lag"


def compute(config, workdir) -> dict:
    """Per activation and radius: the lag profile (median over examples and seeds), every example's norms and bound
    where both are finite (for the bound check), the gain and the Lyapunov exponent; and the trained profile."""
    task, xs = task_inputs("adding", config.length, config.batch_size, seed=1)
    settings = {}
    for activation in config.activations:
        cell = gated.cells.RNN(config.hidden_size, activation=activation)
        params = stack(
            [
                gated.cells.RNN(config.hidden_size, activation=activation, recurrent_scale=float(rho)).init(
                    jax.random.key(s), task.input_size, DTYPE
                )
                for rho in config.radii
                for s in range(config.seeds)
            ]
        )
        norms = lag_norms(cell, params, xs, seed=2)["h"].reshape(len(config.radii), config.seeds, -1)
        bounds = np.asarray(jax.vmap(lambda p, c=cell: diagnostics.rnn_bound(c, p, config.length))(params))[:, ::-1]
        bounds = bounds.reshape(len(config.radii), config.seeds, -1)
        exponent = lambda p, x, c=cell: diagnostics.lyapunov_exponent(c, p, x, jax.random.key(3))
        lyapunov = jax.jit(jax.vmap(jax.vmap(exponent, (None, 0)), (0, None)))(params, xs[:8])
        lyapunov = np.asarray(lyapunov).mean(axis=1).reshape(len(config.radii), config.seeds).mean(axis=1)
        for r, rho in enumerate(config.radii):
            finite = np.isfinite(norms[r]) & np.isfinite(bounds[r])  # float32 overflows past ~3e38
            settings[f"{activation}/{float(rho):g}"] = {
                "activation": activation,
                "radius": float(rho),
                "curve": np.median(norms[r], axis=0),
                "per_seed": norms[r],  # (seeds, T): each seed's median over examples
                "bound": bounds[r, 0],
                "gain": float(bounds[r, 0, 1]),
                "lyapunov": float(lyapunov[r]),
                "bound_holds": [
                    bool(np.all(n[f] <= b[f] * (1 + 1e-4))) for n, b, f in zip(norms[r], bounds[r], finite, strict=True)
                ],  # per seed
                "overflowed": int(np.sum(~finite)),
            }
    trained = trained_lag_profile(gated.cells.RNN(config.hidden_size, activation="tanh"), config, task, xs)
    return {"settings": settings, "trained": trained}


def plot(results, config, report) -> None:
    lag = report_lag(config)
    fig, axes, _ = plt_panels(len(config.activations))
    rows = []
    for ax, activation in zip(axes, config.activations, strict=True):
        for s in results["settings"].values():
            if s["activation"] != activation:
                continue
            (line,) = ax.plot(s["curve"], label=f"spectral radius {s['radius']:g}, gain {s['gain']:.2g}")
            ax.plot(s["bound"], "--", color=line.get_color(), linewidth=0.9)
            rows.append([activation, s["radius"], s["gain"], s["lyapunov"], decay(np.asarray(s["curve"]), lag)])
        lag_axes(ax, f"{activation} RNN, H = {config.hidden_size}, T = {config.length}")
        bound = style_key("--", "dashed: the bound gain^lag,\ngain = ||W_hh|| max|phi'|")
        ax.legend(handles=ax.get_legend_handles_labels()[0] + [bound], fontsize=9)
    report.figure(
        fig,
        "rnn_lag",
        "||dL/dh_k|| against the lag for a loss on the last state (||dL/dh_{T-1}|| = 1), at initialisation with an "
        "orthogonal W_hh scaled to each spectral radius, inputs from the adding problem; median over "
        f"{config.batch_size} sequences and {config.seeds} seeds. Dashed: the bound (||W_hh||_2 max|phi'|)^lag.",
    )
    report.table(
        ["activation", "spectral radius", "gain ||W|| max|phi'|", "Lyapunov exponent", f"gradient left at lag {lag}"],
        rows,
    )
    title = f"tanh RNN, radius 1, adding problem T = {config.length}"
    draw_trained_lag_profile(results["trained"], config, report, name="rnn_lag_trained", title=title, what="tanh RNN")


def claims(results, config, report) -> None:
    lag = report_lag(config)
    settings = results["settings"].values()
    left = lambda s: decay(np.asarray(s["curve"]), lag)
    exploded = [(s["activation"], s["radius"], left(s)) for s in settings if s["gain"] >= 1 and left(s) > 1]
    claim_over_seeds(
        report,
        "The bound is never below the measured norm",
        [ok for s in settings for ok in s["bound_holds"]],
        f"every lag of each seed's median over {config.batch_size} sequences, {len(settings)} settings; "
        f"{sum(s['overflowed'] for s in settings)} values overflowed float32",
        unit="(setting, seed) pairs",
        every=True,
    )
    below = [s for s in settings if s["gain"] < 1]
    claim_over_seeds(
        report,
        f"A gain ||W_hh|| max|phi'| below 1 makes the gradient vanish (under 0.1 of it left at lag {lag})",
        [decay(np.asarray(c), lag) < 0.1 for s in below for c in s["per_seed"]],
        "; ".join(f"{s['activation']} radius {s['radius']:g}: median {left(s):.2g}" for s in below)
        or "no such setting",
        unit="(setting, seed) pairs",
    )
    report.text(
        "A gain above 1 is necessary for explosion, not sufficient: settings with gain above 1 whose gradient grew "
        f"at lag {lag}: " + (", ".join(f"{a} radius {r:g} (x{d:.3g})" for a, r, d in exploded) or "none") + ". "
        "A saturating activation (tanh) driven by inputs spends time where phi' < 1, which can keep the product "
        "bounded even when the radius is above 1."
    )
    if "tanh/1" in results["settings"]:
        report.headline[f"tanh_radius1_init_decay_lag{lag}"] = left(results["settings"]["tanh/1"])
    report.headline[f"tanh_trained_decay_lag{lag}"] = decay(np.asarray(results["trained"]["after"]["h"]), lag)
