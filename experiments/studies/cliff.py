"""Study 10 (Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural networks", Fig. 6): the
cliff of a one-unit recurrent network.

The unit ``x_t = w sigmoid(x_{t-1}) + b`` runs ``steps`` steps from ``x_0 = 0.5``; the error is
``(x_steps - target)^2``. Its fixed points solve ``b = x - w sigmoid(x)``: for ``w > 4`` that function has a local
maximum and minimum (where ``w sigmoid'(x) = 1``), and for b between them the map has three fixed points, two
stable ones and an unstable one between their basins. Crossing the edges of that band (a bifurcation) or the line
where ``x_0`` sits on the unstable point moves the end state from one attractor to the other: the error jumps
across a narrow wall on which the gradient is huge. Gradient descent that meets the wall is thrown far (the
explosion); ``clip_by_global_norm`` bounds the step by ``lr * threshold``. The study maps the error and its gradient
over a (w, b) grid, marks the three-fixed-point band, and runs descent from ``starts`` random points, unclipped and
clipped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .base import DTYPE, legend_panel, plt_panels, rate_text, wilson

TITLE = "10. The cliff (Pascanu et al. 2013, Fig. 6): a one-unit RNN's error surface and clipping"
MOST = 0.5


def cliff_loss(w, b, steps: int, target: float):
    """``(x_steps - target)^2`` for ``x_t = w sigmoid(x_{t-1}) + b`` from ``x_0 = 0.5``."""
    x, _ = jax.lax.scan(lambda x, _: (w * jax.nn.sigmoid(x) + b, None), jnp.asarray(0.5, w.dtype), None, length=steps)
    return (x - target) ** 2


def three_fixed_points_band(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each w, the band ``(b_low, b_high)`` of biases where ``x = w sigmoid(x) + b`` has three fixed points
    (NaN for w <= 4, where it has one): the values of ``x - w sigmoid(x)`` at its local minimum and maximum, at
    ``sigmoid(x) = (1 +- sqrt(1 - 4/w)) / 2``."""
    w = np.asarray(w, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        root = np.sqrt(1.0 - 4.0 / w)
        s_hi, s_lo = (1 + root) / 2, (1 - root) / 2  # sigmoid values at the two turning points
        g = lambda s: np.log(s / (1 - s)) - w * s  # x - w sigmoid(x) at sigmoid(x) = s
        low, high = g(s_hi), g(s_lo)
    bistable = w > 4
    return np.where(bistable, low, np.nan), np.where(bistable, high, np.nan)


def _descent_program(config):
    grad = jax.grad(lambda p: cliff_loss(p[0], p[1], config.steps, config.target))

    def descend(start, threshold):
        optimizer = optax.chain(optax.clip_by_global_norm(threshold), optax.sgd(config.learning_rate))

        def step(p, _):
            updates, _ = optimizer.update(grad(p), optimizer.init(p))  # both transformations keep no state
            p = optax.apply_updates(p, updates)
            return p, p

        _, path = jax.lax.scan(step, start, None, length=config.descent_steps)
        return jnp.concatenate([start[None], path])

    return jax.jit(jax.vmap(descend, (0, None)))


def compute(config, workdir) -> dict:
    """The error and its gradient norm over the grid, the band, and descent paths from every start."""
    for key in ("w_range", "b_range", "start_w", "start_b"):
        value = tuple(config[key])
        if len(value) != 2 or not value[0] < value[1]:
            raise ValueError(f"config.{key}: expected (low, high) with low < high, got {value}")
    ws = np.linspace(*config.w_range, config.grid, dtype=np.float32)
    bs = np.linspace(*config.b_range, config.grid, dtype=np.float32)
    loss = lambda w, b: cliff_loss(w, b, config.steps, config.target)
    surface = jax.jit(jax.vmap(jax.vmap(loss, (None, 0)), (0, None)))(ws, bs)
    grads = jax.jit(jax.vmap(jax.vmap(jax.grad(loss, (0, 1)), (None, 0)), (0, None)))(ws, bs)
    k_w, k_b = jax.random.split(jax.random.key(0))
    starts = jnp.stack(
        [
            jax.random.uniform(k_w, (config.starts,), DTYPE, *config.start_w),
            jax.random.uniform(k_b, (config.starts,), DTYPE, *config.start_b),
        ],
        axis=1,
    )
    descend = _descent_program(config)
    paths = {"unclipped": descend(starts, jnp.inf), "clipped": descend(starts, config.threshold)}
    final = {k: jax.vmap(lambda p: loss(p[-1, 0], p[-1, 1]))(v) for k, v in paths.items()}
    low, high = three_fixed_points_band(ws)
    return {
        "w": ws,
        "b": bs,
        "surface": np.asarray(surface),
        "grad_norm": np.hypot(*map(np.asarray, grads)),
        "band_low": low,
        "band_high": high,
        "paths": {k: np.asarray(v) for k, v in paths.items()},
        "final_error": {k: np.asarray(v) for k, v in final.items()},
    }


def _jumps(paths) -> np.ndarray:
    """The length of every step of every path, ``(starts, descent_steps)``."""
    return np.linalg.norm(np.diff(np.asarray(paths, float), axis=1), axis=2)


def _in_band(results, tolerance_cells: float = 1.0) -> np.ndarray:
    """Per grid point, whether b lies in the three-fixed-point band of its w, widened by ``tolerance_cells``."""
    b = np.asarray(results["b"], float)
    db = tolerance_cells * (b[1] - b[0])
    low, high = np.asarray(results["band_low"], float), np.asarray(results["band_high"], float)
    return (b[None, :] >= low[:, None] - db) & (b[None, :] <= high[:, None] + db)


def plot(results, config, report) -> None:
    surface, grad = np.asarray(results["surface"], float), np.asarray(results["grad_norm"], float)
    w, low, high = np.asarray(results["w"], float), np.asarray(results["band_low"]), np.asarray(results["band_high"])
    paths = {k: np.asarray(v, float) for k, v in results["paths"].items()}
    fig, axes, spare = plt_panels(3, width=5.8, height=4.6)
    extent = (*config.b_range, *config.w_range)
    for ax, values, label, cmap in (
        (axes[0], surface, "error (log10)", "viridis"),
        (axes[1], grad, "gradient norm ||dE/d(w, b)|| (log10)", "magma"),
    ):
        image = ax.imshow(np.log10(values + 1e-12), origin="lower", extent=extent, aspect="auto", cmap=cmap)
        fig.colorbar(image, ax=ax, label=label)
        ax.plot(low, w, "--", color="cyan", lw=1.4, label="dashed: edges of the band of b\nwith three fixed points")
        ax.plot(high, w, "--", color="cyan", lw=1.4)
        ax.set(xlabel="bias b", ylabel="recurrent weight w", xlim=config.b_range, ylim=config.w_range)
    colors = {"unclipped": "red", "clipped": "black"}
    labels = {
        "unclipped": "gradient descent, unclipped",
        "clipped": f"gradient descent, clipped at {config.threshold:g}",
    }
    for name, color in colors.items():
        for s in range(min(3, paths[name].shape[0])):
            kw = {"label": labels[name] + " (3 starts drawn)"} if s == 0 else {}
            axes[0].plot(paths[name][s, :, 1], paths[name][s, :, 0], "o-", color=color, ms=2, lw=0.8, **kw)
    axes[0].set_title(f"the error (x_{config.steps} - {config.target:g})^2")
    axes[1].set_title("the gradient's size: the wall")
    jumps = {k: _jumps(v).max(axis=1) for k, v in paths.items()}
    x = np.arange(config.starts)
    axes[2].bar(x - 0.2, jumps["unclipped"], 0.4, color=colors["unclipped"])
    axes[2].bar(x + 0.2, jumps["clipped"], 0.4, color=colors["clipped"])
    bound = axes[2].axhline(
        config.learning_rate * config.threshold,
        ls=":",
        color="C0",
        lw=2,
        label="dotted: lr x threshold, the longest\nstep clipping allows",
    )
    axes[2].set(
        xlabel="start (seed)",
        ylabel="largest step in (w, b)",
        yscale="log",
        title=f"{config.descent_steps} descent steps, lr {config.learning_rate:g}",
    )
    legend_panel(spare, axes[0].get_legend_handles_labels()[0] + [bound])
    report.figure(
        fig,
        "cliff",
        f"The one-unit RNN x_t = w sigmoid(x_(t-1)) + b after {config.steps} steps from x_0 = 0.5: its error "
        "(top left) and gradient norm (top right) over the (w, b) grid; between the dashed cyan curves the map has "
        f"three fixed points. Descent from {config.starts} random starts (three drawn top left): the largest step of "
        "each, unclipped (red) and clipped (black) (bottom left).",
    )
    rows = [
        [
            s,
            float(jumps["unclipped"][s]),
            float(jumps["clipped"][s]),
            float(results["final_error"]["unclipped"][s]),
            float(results["final_error"]["clipped"][s]),
        ]
        for s in range(config.starts)
    ]
    report.table(["start", "largest step, unclipped", "clipped", "final error, unclipped", "clipped"], rows)


def _largest_jumps(results) -> tuple[int, int]:
    """Over the grid rows with w > 4 (where the band exists): in how many does the largest jump of the error
    between neighbouring b lie in the band (within one grid cell); and how many rows there are."""
    surface = np.asarray(results["surface"], float)
    rows = np.flatnonzero(np.asarray(results["w"], float) > 4)
    inside = _in_band(results)
    hits = 0
    for r in rows:
        j = int(np.argmax(np.abs(np.diff(surface[r]))))
        hits += bool(inside[r, j] or inside[r, j + 1])
    return hits, len(rows)


def claims(results, config, report) -> None:
    grad = np.asarray(results["grad_norm"], float)
    inside, total = _largest_jumps(results)
    low, high = wilson(inside, total)
    report.claim(
        "The cliff lies in the band where the map has three fixed points: in each row w > 4 of the grid, the largest "
        "jump of the error between neighbouring b falls in the band or on its edge",
        low > MOST,
        f"{inside} of {total} rows (95% Wilson interval {low:.2f}-{high:.2f}); gradient norm on the grid: largest "
        f"{grad.max():.3g}, median {np.median(grad):.3g}",
    )
    paths = {k: np.asarray(v, float) for k, v in results["paths"].items()}
    jumps = {k: _jumps(v).max(axis=1) for k, v in paths.items()}
    bound = config.learning_rate * config.threshold
    far = int((jumps["unclipped"] > 10 * bound).sum())
    report.claim(
        f"Unclipped descent is thrown off the cliff (a step over 10 lr x threshold = {10 * bound:g}) from most starts",
        wilson(far, config.starts)[0] > MOST,
        rate_text(far, config.starts).replace("seeds", "starts")
        + f"; largest steps {', '.join(f'{j:.3g}' for j in jumps['unclipped'])}",
    )
    within = int((jumps["clipped"] <= bound * (1 + 1e-4)).sum())
    report.claim(
        f"A clipped step stays within lr x threshold = {bound:g}",
        within == config.starts,
        f"{within}/{config.starts} starts; largest clipped step {jumps['clipped'].max():.3g}",
    )
    report.headline["cliff_rows_in_band"] = f"{inside}/{total}"
    report.headline["thrown_off_unclipped"] = f"{far}/{config.starts}"
    report.headline["largest_step_unclipped"] = float(jumps["unclipped"].max())
    report.headline["largest_step_clipped"] = float(jumps["clipped"].max())
