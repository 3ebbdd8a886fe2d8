"""Study 3 (seeds 000/003): ||dL/dh_k|| vs lag for a vanilla RNN, spectral radius below, at and above 1."""

from __future__ import annotations

import jax
import numpy as np

import gated
from experiments.studies.base import (
    DTYPE,
    decay,
    lag_axes,
    lag_norms,
    plt_figure,
    stack,
    task_inputs,
    trained_lag_profile,
)
from gated import diagnostics

TITLE = "3. Vanilla RNN: the gradient against the lag, and the bound (||W_hh|| max|phi'|)^lag"
FIELDS = {
    "hidden_size": int,
    "length": int,
    "batch_size": int,
    "seeds": int,
    "radii": tuple,
    "activations": tuple,
    "report_lag": int,
    "train_steps": int,
    "train_batch_size": int,
    "learning_rate": float,
}


def run(config, report) -> None:
    task, xs = task_inputs("adding", config.length, config.batch_size, seed=1)
    lag = min(config.report_lag, config.length - 1)
    seeds = range(config.seeds)
    curves, rows, bound_ok, vanished, exploded, overflowed = {}, [], True, [], [], 0
    fig, axes = plt_figure(len(config.activations), width=4.2)
    for ax, activation in zip(axes, config.activations, strict=True):
        cell = gated.cells.rnn(config.hidden_size, activation=activation)
        params = stack(
            [
                gated.cells.rnn(config.hidden_size, activation=activation, recurrent_scale=float(rho)).init(
                    jax.random.key(s), task.input_size, DTYPE
                )
                for rho in config.radii
                for s in seeds
            ]
        )
        norms = lag_norms(cell, params, xs, seed=2)["h"].reshape(len(config.radii), config.seeds, -1)
        bounds = np.asarray(jax.vmap(lambda p, c=cell: diagnostics.rnn_bound(c, p, config.length))(params))[:, ::-1]
        bounds = bounds.reshape(len(config.radii), config.seeds, -1)
        exponent = lambda p, x, c=cell: diagnostics.lyapunov_exponent(c, p, x, jax.random.key(3))
        lyapunov = jax.jit(jax.vmap(jax.vmap(exponent, (None, 0)), (0, None)))(params, xs[:8])
        lyapunov = np.asarray(lyapunov).mean(axis=1).reshape(len(config.radii), config.seeds).mean(axis=1)
        for r, rho in enumerate(config.radii):
            curve = np.median(norms[r], axis=0)
            finite = np.isfinite(norms[r]) & np.isfinite(bounds[r])  # float32 overflows past ~3e38
            bound_ok &= bool(np.all(norms[r][finite] <= bounds[r][finite] * (1 + 1e-4)))
            overflowed += int(np.sum(~finite))
            gain = float(bounds[r, 0, 1])
            (line,) = ax.plot(curve, label=f"radius {rho:g} (gain {gain:.2g})")
            ax.plot(bounds[r, 0], "--", color=line.get_color(), linewidth=0.8)
            d = decay(curve, lag)
            curves[(activation, float(rho))] = curve
            rows.append([activation, float(rho), gain, float(lyapunov[r]), d])
            if gain < 1:
                vanished.append((activation, rho, d))
            elif d > 1:
                exploded.append((activation, rho, d))
        lag_axes(ax, f"{activation} RNN, H = {config.hidden_size}, T = {config.length}")
        ax.legend(fontsize=7)
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

    trained = trained_lag_profile(
        gated.cells.rnn(config.hidden_size, activation="tanh"),
        config,
        task,
        xs,
        report,
        name="rnn_lag_trained",
        title=f"tanh RNN, radius 1, adding problem T = {config.length}",
        what="tanh RNN",
        lag=lag,
    )
    init_curve = curves.get(("tanh", 1.0))
    report.claim(
        "The bound is never below the measured norm",
        bound_ok,
        f"every example, setting and lag where both are finite; {overflowed} values overflowed float32",
    )
    report.claim(
        "A gain ||W_hh|| max|phi'| below 1 makes the gradient vanish (sufficient condition)",
        all(d < 0.1 for *_, d in vanished),
        "; ".join(f"{a} radius {r:g}: {d:.2g} left at lag {lag}" for a, r, d in vanished) or "no such setting",
    )
    report.text(
        "A gain above 1 is necessary for explosion, not sufficient: settings with gain above 1 whose gradient grew "
        f"at lag {lag}: " + (", ".join(f"{a} radius {r:g} (x{d:.3g})" for a, r, d in exploded) or "none") + ". "
        "A saturating activation (tanh) driven by inputs spends time where phi' < 1, which can keep the product "
        "bounded even when the radius is above 1."
    )
    if init_curve is not None:
        report.headline[f"tanh_radius1_init_decay_lag{lag}"] = decay(init_curve, lag)
    report.headline[f"tanh_trained_decay_lag{lag}"] = decay(trained, lag)
    report.numbers["curves"] = {f"{a}/{r:g}": c for (a, r), c in curves.items()}
    report.numbers["trained_curve"] = trained
