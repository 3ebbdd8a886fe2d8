"""Study 5 (Khapra 15.3): the LSTM's exploding path through the output gates, W_o scaled up; clipping in training."""

from __future__ import annotations

import jax
import numpy as np

import gated
from gated import diagnostics

from .. import tasks as tasks_lib
from .. import train as train_lib
from .base import (
    DTYPE,
    decay,
    lag_axes,
    lag_norms,
    plt_figure,
    plt_panels,
    rate_text,
    report_lag,
    stack,
    style_key,
    task_inputs,
    train_runs,
    wilson,
)

TITLE = "5. LSTM: the output-gate path explodes when W_o is large; clipping keeps training alive"


def scale_w_o(cell, params, scale: float):
    """``params`` with the output gate's recurrent block W_o multiplied by ``scale``."""
    h = cell.hidden_size
    k = cell.gates.index("o")
    return params._replace(recurrent_kernel=params.recurrent_kernel.at[:, k * h : (k + 1) * h].multiply(scale))


def compute(config, workdir) -> dict:
    """Per W_o scale: ||dL/dh_k|| by lag, the output-gate path and its bound, the gain; then SGD training from the
    exploding initialisation without and with clipping (per-step loss and pre-clip gradient norm, test MSE)."""
    task, xs = task_inputs("adding", config.length, config.batch_size, seed=1)
    scales = [float(s) for s in config.w_o_scales]
    cell = gated.cells.LSTM(config.hidden_size)
    base = [cell.init(jax.random.key(s), task.input_size, DTYPE) for s in range(config.seeds)]
    params = stack([scale_w_o(cell, p, s) for s in scales for p in base])
    grad = np.median(lag_norms(cell, params, xs, seed=2)["h"].reshape(len(scales), config.seeds, -1), axis=1)
    path_fn = jax.jit(jax.vmap(lambda p, x: diagnostics.output_gate_path(cell, p, x)))
    path_norm, bound, gains, bound_ok = [], [], [], True
    for i, _ in enumerate(scales):  # the path's Jacobians are (T, H, H) per example: a few examples per scale
        p = jax.tree.map(lambda a, i=i: a[i * config.seeds], params)
        n = config.path_examples
        out = path_fn(jax.tree.map(lambda a, n=n: np.repeat(a[None], n, axis=0), p), xs[:n])
        spectral, b = np.asarray(out["spectral"])[:, ::-1], np.asarray(out["bound"])[:, ::-1]
        bound_ok &= bool(np.all(spectral <= b * (1 + 1e-4)))
        path_norm.append(np.median(spectral, axis=0))
        bound.append(np.max(b, axis=0))
        gains.append(float(np.max(np.asarray(out["gain"]))))
    return {
        "scales": scales,
        "grad": grad,
        "path_norm": path_norm,
        "bound": bound,
        "gains": gains,
        "bound_holds": bound_ok,
        "training": _train(config),
    }


def _train(config) -> dict:
    """SGD on the adding problem from an LSTM whose W_o is scaled by each of ``train_w_o_scales`` (the first the
    control), every seed without and with clip_by_global_norm; per scale, runs ``[unclipped seeds, clipped seeds]``."""
    task = tasks_lib.get("adding", length=config.train_length)
    cell = gated.cells.LSTM(config.hidden_size)
    seeds = list(range(config.seeds))
    thresholds = [float("inf")] * len(seeds) + [config.clip_threshold] * len(seeds)  # inf: never clips
    out = {
        "scales": [float(s) for s in config.train_w_o_scales],
        "diverged_at": [],
        "loss": [],
        "grad_norm": [],
        "test_mse": [],
        "chance": task.chance_loss,
    }
    for scale in out["scales"]:

        def transform(p, scale=scale):
            return p._replace(layers=(p.layers[0]._replace(cell=scale_w_o(cell, p.layers[0].cell, scale)),))

        _, states, metrics, test = train_runs(
            cell,
            task,
            seeds * 2,
            steps=config.train_steps,
            batch_size=config.train_batch_size,
            optimizer=train_lib.OptimizerSpec("sgd", momentum=0.9, steps=config.train_steps),
            learning_rate=config.learning_rate,
            clip_thresholds=thresholds,
            init_transform=transform,
        )
        out["diverged_at"].append(np.asarray(states.diverged_at))  # -1: never; else the step (from 1)
        out["loss"].append(metrics["loss"])
        out["grad_norm"].append(metrics["grad_norm"])
        out["test_mse"].append(test["loss"])
    return out


def plot(results, config, report) -> None:
    lag, scales, gains = report_lag(config), results["scales"], results["gains"]
    grad, path_norm, bound = (np.asarray(results[k]) for k in ("grad", "path_norm", "bound"))
    fig, axes = plt_figure(2)
    for i, s in enumerate(scales):
        axes[0].plot(grad[i], label=f"W_o x {s:g}")
        (line,) = axes[1].plot(path_norm[i], label=f"W_o x {s:g}, gain {gains[i]:.2g}")
        axes[1].plot(bound[i], "--", color=line.get_color(), linewidth=0.9)
    lag_axes(axes[0], f"the whole gradient, LSTM H = {config.hidden_size}, T = {config.length}")
    lag_axes(axes[1], "the output-gate path alone", "gradient along the output gates\n(norm ||dh_{T-1}/dh_k||, median)")
    axes[0].legend()
    handles = axes[1].get_legend_handles_labels()[0]
    axes[1].legend(handles=handles + [style_key("--", "dashed: the bound gain^lag,\ngain = ||K|| ||W_o||")], fontsize=9)
    report.figure(
        fig,
        "lstm_exploding",
        "Left: the LSTM's full ||dL/dh_k|| against the lag at initialisation with the output gate's recurrent block "
        "W_o scaled (median over adding-problem sequences and seeds). Right: the lecture's path t_1 through the "
        "output gates alone (dh_t/dh_{t-1} = diag(tanh(c_t) sigma'(a_o)) W_o^T, the other gates held), by autodiff "
        "(solid, median over examples), and the bound (||K|| ||W_o||)^lag (dashed). The forget gates protect the "
        "cell-state path from vanishing but nothing stops this one from exploding once ||K|| ||W_o|| > 1.",
    )
    rows = [[s, gains[i], float(path_norm[i][lag]), decay(grad[i], lag)] for i, s in enumerate(scales)]
    report.table(["W_o scale", "||K|| ||W_o||", f"o-path norm at lag {lag}", f"||dL/dh|| at lag {lag} / lag 0"], rows)

    t = results["training"]
    n, scales = config.seeds, t["scales"]
    fig, axes, _ = plt_panels(len(scales))
    steps = np.arange(1, config.train_steps + 1)
    for ax, scale, at, norms in zip(axes, scales, t["diverged_at"], t["grad_norm"], strict=True):
        at, norms = np.asarray(at), np.asarray(norms, float)
        for run in range(2 * n):
            clipped = run >= n
            color = "tab:blue" if clipped else "tab:red"
            label = (
                (f"clip_by_global_norm({config.clip_threshold:g})" if clipped else "no clipping")
                if run % n == 0
                else None
            )
            end = at[run] - 1 if at[run] >= 0 else config.train_steps
            ax.plot(steps[:end], norms[:end, run], color=color, alpha=0.5, lw=0.8, label=label)
            if at[run] >= 0:  # the last finite norm before the step that diverged
                ax.plot(steps[max(end - 1, 0)], norms[max(end - 1, 0), run], "x", color="black", ms=7)
        ax.plot([], [], "x", color="black", label="diverged (NaN/Inf) at the next step")
        ax.set(
            xlabel="SGD step",
            ylabel="gradient norm before clipping\n(global, all parameters)",
            yscale="log",
            title=f"LSTM, W_o x {scale:g}, SGD lr {config.learning_rate:g}",
        )
        ax.legend()
        ax.grid(True, alpha=0.3)
    report.figure(
        fig,
        "lstm_exploding_training",
        f"Training on the adding problem T = {config.train_length} with SGD (lr {config.learning_rate:g}, momentum "
        f"0.9), {n} seeds, without clipping (red) and with clip_by_global_norm({config.clip_threshold:g}) (blue), "
        "from the LSTM's initialisation (left) and with W_o scaled (right): the pre-clip gradient norm of every "
        "step, each unclipped curve ending at its divergence.",
    )
    rows = []
    for scale, at, test in zip(scales, t["diverged_at"], t["test_mse"], strict=True):
        at, test = np.asarray(at), np.asarray(test, float)
        for name, part in (("no clipping", slice(0, n)), (f"clip {config.clip_threshold:g}", slice(n, 2 * n))):
            k = int((at[part] >= 0).sum())
            alive = test[part][at[part] < 0]
            rows.append(
                [f"W_o x {scale:g}", name, rate_text(k, n), float(np.median(alive)) if alive.size else float("nan")]
            )
    report.table(["initialisation", "training", "diverged", "median test MSE of the others"], rows)


def claims(results, config, report) -> None:
    lag, scales = report_lag(config), results["scales"]
    grad = np.asarray(results["grad"])
    report.claim(
        "The bound (||K|| ||W_o||)^lag is never below the output-gate path",
        results["bound_holds"],
        f"{config.path_examples} examples per scale, every lag",
    )
    largest = int(np.argmax(scales))
    report.claim(
        f"Scaling W_o up makes the gradient explode with the lag (W_o x {scales[largest]:g})",
        decay(grad[largest], lag) > 1,
        f"||dL/dh|| at lag {lag} is {decay(grad[largest], lag):.3g} times its value at lag 0, against "
        f"{decay(grad[int(np.argmin(scales))], lag):.3g} for W_o x {min(scales):g}",
    )
    report.headline[f"w_o_x{scales[largest]:g}_gradient_growth_lag{lag}"] = decay(grad[largest], lag)
    t, n = results["training"], config.seeds
    diverged = [np.asarray(at) >= 0 for at in t["diverged_at"]]
    scaled, control = diverged[-1], diverged[0]
    k_plain, k_clip, k_control = int(scaled[:n].sum()), int(scaled[n:].sum()), int(control[:n].sum())
    big = t["scales"][-1]
    report.claim(
        f"Without clipping, SGD from W_o x {big:g} diverges (NaN/Inf) on most seeds",
        wilson(k_plain, n)[0] > 0.5,
        rate_text(k_plain, n),
    )
    report.claim(
        f"With clip_by_global_norm({config.clip_threshold:g}), the same runs diverge on few seeds",
        wilson(k_clip, n)[1] < 0.5,
        rate_text(k_clip, n),
    )
    report.claim(
        f"The explosion is W_o's: at the same learning rate, from W_o x {t['scales'][0]:g}, unclipped SGD diverges "
        "on few seeds",
        wilson(k_control, n)[1] < 0.5,
        rate_text(k_control, n),
    )
    report.headline[f"diverged_unclipped_w_o_x{big:g}"] = f"{k_plain}/{n}"
    report.headline[f"diverged_clipped_w_o_x{big:g}"] = f"{k_clip}/{n}"
    report.headline[f"diverged_unclipped_w_o_x{t['scales'][0]:g}"] = f"{k_control}/{n}"
