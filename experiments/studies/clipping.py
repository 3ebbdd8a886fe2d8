"""Study 7 (seed 000; Pascanu, Mikolov & Bengio 2013): gradient clipping in the exploding regime, and the cliff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gated
from experiments import tasks as tasks_lib
from experiments import train as train_lib
from experiments.studies.base import DTYPE, plt_figure, train_runs

TITLE = "7. Clipping: clip_by_global_norm rescues training when gradients explode"
FIELDS = {
    "hidden_size": int,
    "length": int,
    "seeds": int,
    "thresholds": tuple,
    "train_steps": int,
    "batch_size": int,
    "learning_rate": float,
    "cliff_steps": int,
    "cliff_target": float,
    "cliff_w": tuple,
    "cliff_b": tuple,
    "cliff_grid": int,
    "cliff_start": tuple,
    "cliff_lr": float,
    "cliff_threshold": float,
    "cliff_descent_steps": int,
}


def compute(config, workdir) -> dict:
    """The IRNN trained with SGD per (threshold, seed), and Pascanu et al.'s cliff: surface, gradient norm, and
    gradient descent without and with clipping."""
    return {"training": _training(config), "cliff": _cliff(config)}


def _name(t: float) -> str:
    return "no clipping" if np.isinf(t) else f"clip {t:g}"


def _training(config) -> dict:
    """An IRNN (ReLU, identity W_hh; Le et al. 2015) on the adding problem with SGD: one program over every
    (threshold, seed); no clipping is the threshold +inf, which clip_by_global_norm never reaches."""
    task = tasks_lib.get("adding", length=config.length)
    cell = gated.cells.rnn(config.hidden_size, activation="relu", recurrent_init="identity")
    thresholds = [float(t) for t in config.thresholds]
    n = config.seeds
    _, states, metrics, test = train_runs(
        cell,
        task,
        list(range(n)) * len(thresholds),
        steps=config.train_steps,
        batch_size=config.batch_size,
        optimizer=train_lib.OptimizerSpec("sgd", momentum=0.9, steps=config.train_steps),
        learning_rate=config.learning_rate,
        clip_thresholds=[t for t in thresholds for _ in range(n)],
    )
    return {
        "thresholds": thresholds,
        "diverged_at": np.asarray(states.diverged_at).reshape(len(thresholds), n),  # -1: never; else the step (from 1)
        "test_mse": np.asarray(test["loss"]).reshape(len(thresholds), n),
        "loss": metrics["loss"].reshape(config.train_steps, len(thresholds), n),
        "grad_norm": metrics["grad_norm"].reshape(config.train_steps, len(thresholds), n),
        "chance": task.chance_loss,
    }


def _cliff(config) -> dict:
    ws = np.linspace(*config.cliff_w, config.cliff_grid, dtype=np.float32)
    bs = np.linspace(*config.cliff_b, config.cliff_grid, dtype=np.float32)
    loss = lambda w, b: cliff_loss(w, b, config.cliff_steps, config.cliff_target)
    surface = jax.jit(jax.vmap(jax.vmap(loss, (None, 0)), (0, None)))(ws, bs)
    grads = jax.jit(jax.vmap(jax.vmap(jax.grad(loss, (0, 1)), (None, 0)), (0, None)))(ws, bs)
    return {
        "surface": np.asarray(surface),
        "grad_norm": np.hypot(np.asarray(grads[0]), np.asarray(grads[1])),
        "descent_unclipped": _descent(config, np.inf),
        "descent_clipped": _descent(config, config.cliff_threshold),
    }


def _jumps(path) -> np.ndarray:
    return np.linalg.norm(np.diff(np.asarray(path, float), axis=0), axis=1)


def plot(results, config, report) -> None:
    t = results["training"]
    thresholds, n = t["thresholds"], config.seeds
    diverged_at, test_mse = np.asarray(t["diverged_at"]), np.asarray(t["test_mse"], float)
    loss, grad_norm = np.asarray(t["loss"], float), np.asarray(t["grad_norm"], float)
    fig, axes = plt_figure(3, width=4.4)
    steps = np.arange(1, config.train_steps + 1)
    colors = [f"C{i}" for i in range(len(thresholds))]
    for i, th in enumerate(thresholds):
        for s in range(n):
            kw = {"label": _name(th)} if s == 0 else {}
            alive = steps < (diverged_at[i, s] if diverged_at[i, s] >= 0 else config.train_steps + 1)
            axes[0].plot(steps[alive], loss[alive, i, s], color=colors[i], alpha=0.5, **kw)
            axes[1].plot(steps[alive], grad_norm[alive, i, s], color=colors[i], alpha=0.5, **kw)
    axes[0].axhline(t["chance"], color="gray", linestyle="--", label="chance")
    axes[0].set(xlabel="step", ylabel="train MSE", yscale="log", title=f"IRNN, adding T = {config.length}, SGD")
    axes[1].set(xlabel="step", ylabel="global gradient norm before clipping", yscale="log", title="gradient norm")
    counts = (diverged_at >= 0).sum(axis=1)
    axes[2].bar([_name(th) for th in thresholds], counts, color=colors)
    axes[2].set(ylabel=f"diverged runs (NaN/Inf) of {n}", title="divergence", ylim=(0, n))
    axes[2].tick_params(axis="x", labelrotation=30)
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    report.figure(
        fig,
        "clipping_training",
        f"An IRNN (ReLU, W_hh = I) trained with SGD (lr {config.learning_rate:g}, momentum 0.9) on the adding problem "
        f"T = {config.length}, {n} seeds per threshold, all {n * len(thresholds)} runs one program. Curves end "
        "where a run diverged (its state is frozen and the step recorded). Right: diverged runs per threshold.",
    )
    rows = []
    for i, th in enumerate(thresholds):
        steps_at = [int(d) for d in diverged_at[i] if d >= 0]
        finite = test_mse[i][diverged_at[i] < 0]
        rows.append([_name(th), f"{counts[i]}/{n}", ", ".join(map(str, steps_at)) or "-",
                     float(np.median(finite)) if finite.size else float("nan")])  # fmt: skip
    report.table(["threshold", "diverged", "at steps", "median test MSE of the others"], rows)

    c = results["cliff"]
    surface, cliff_grad = np.asarray(c["surface"], float), np.asarray(c["grad_norm"], float)
    plain, clipped = np.asarray(c["descent_unclipped"], float), np.asarray(c["descent_clipped"], float)
    fig, axes = plt_figure(2, width=5.2, height=4.4)
    extent = (*config.cliff_b, *config.cliff_w)
    image = axes[0].imshow(np.log10(surface + 1e-12), origin="lower", extent=extent, aspect="auto", cmap="viridis")
    fig.colorbar(image, ax=axes[0], label="log10 error")
    for path, color, label in (
        (plain, "red", "no clipping"),
        (clipped, "white", f"clipped at {config.cliff_threshold:g}"),
    ):
        axes[0].plot(path[:, 1], path[:, 0], "o-", color=color, markersize=2.5, linewidth=1, label=label)
    axes[0].set(xlabel="b", ylabel="w", title=f"error (x_{config.cliff_steps} - {config.cliff_target:g})^2",
                xlim=config.cliff_b, ylim=config.cliff_w)  # fmt: skip
    axes[0].legend(fontsize=8, loc="lower left")
    image = axes[1].imshow(np.log10(cliff_grad + 1e-12), origin="lower", extent=extent, aspect="auto", cmap="magma")
    fig.colorbar(image, ax=axes[1], label="log10 ||grad||")
    axes[1].set(xlabel="b", ylabel="w", title="gradient norm: the wall")
    report.figure(
        fig,
        "clipping_cliff",
        "Pascanu et al.'s cliff: the error of the one-unit RNN x_t = w sigmoid(x_(t-1)) + b after "
        f"{config.cliff_steps} "
        "steps from x_0 = 0.5, over a (w, b) grid (left), and its gradient norm (right): where the recurrence "
        "bifurcates, the error jumps across a narrow wall on which the gradient is huge. Gradient descent from the "
        f"same start with lr {config.cliff_lr:g}: unclipped (red) the largest step is {_jumps(plain).max():.3g}; "
        f"clipped at {config.cliff_threshold:g} (white) it is {_jumps(clipped).max():.3g}.",
    )


def claims(results, config, report) -> None:
    t = results["training"]
    thresholds, n = t["thresholds"], config.seeds
    diverged_at, test_mse = np.asarray(t["diverged_at"]), np.asarray(t["test_mse"], float)
    counts = (diverged_at >= 0).sum(axis=1)
    unclipped = [i for i, th in enumerate(thresholds) if np.isinf(th)]
    clipped = [i for i, th in enumerate(thresholds) if not np.isinf(th)]
    if unclipped and clipped:
        report.claim(
            "Without clipping, training in the exploding regime diverges (NaN/Inf); "
            "with clip_by_global_norm it does not",
            counts[unclipped].sum() > 0 and counts[clipped].sum() < counts[unclipped].sum() * len(clipped),
            f"diverged: {counts[unclipped].sum()}/{n} without; "
            + ", ".join(f"{counts[i]}/{n} at {thresholds[i]:g}" for i in clipped),
        )
        report.headline["diverged_without_clipping"] = f"{counts[unclipped].sum()}/{n}"
        report.headline["diverged_with_clipping"] = f"{counts[clipped].sum()}/{n * len(clipped)}"
        best = min(clipped, key=lambda i: np.nanmedian(np.where(diverged_at[i] < 0, test_mse[i], np.nan)))
        report.headline["best_clip_threshold"] = thresholds[best]
        report.headline["best_clip_median_test_mse"] = float(np.nanmedian(test_mse[best]))
    c = results["cliff"]
    plain, clipped_path = _jumps(c["descent_unclipped"]), _jumps(c["descent_clipped"])
    grad_norm = np.asarray(c["grad_norm"], float)
    report.claim(
        "On the cliff, an unclipped step is thrown far; a clipped one stays at most lr * threshold",
        clipped_path.max() <= config.cliff_lr * config.cliff_threshold * (1 + 1e-4) < plain.max(),
        f"largest step {plain.max():.3g} unclipped, {clipped_path.max():.3g} clipped; largest gradient "
        f"norm on the grid {grad_norm.max():.3g}, median {np.median(grad_norm):.3g}",
    )
    report.headline["cliff_largest_step_unclipped"] = float(plain.max())
    report.headline["cliff_largest_step_clipped"] = float(clipped_path.max())


def cliff_loss(w, b, steps: int, target: float):
    """Pascanu et al.'s one-unit RNN x_t = w sigmoid(x_{t-1}) + b from x_0 = 0.5: the error (x_steps - target)^2."""
    x, _ = jax.lax.scan(lambda x, _: (w * jax.nn.sigmoid(x) + b, None), jnp.asarray(0.5, w.dtype), None, length=steps)
    return (x - target) ** 2


def _descent(config, threshold: float) -> np.ndarray:
    grad = jax.grad(lambda p: cliff_loss(p[0], p[1], config.cliff_steps, config.cliff_target))

    def step(p, _):
        g = grad(p)
        norm = jnp.linalg.norm(g)
        g = jnp.where(norm > threshold, g * threshold / norm, g)
        p = p - config.cliff_lr * g
        return p, p

    start = jnp.asarray(config.cliff_start, DTYPE)
    _, path = jax.jit(lambda s: jax.lax.scan(step, s, None, length=config.cliff_descent_steps))(start)
    return np.concatenate([np.asarray(start)[None], np.asarray(path)])
