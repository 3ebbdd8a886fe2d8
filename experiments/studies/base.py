"""What every study shares: config checks, the report a study writes, training and lag profiles.

A study computes its results (``compute``), then draws figures into the
report (``plot``) and states each claim of the lecture notes with the evidence
and whether it held (``claims``), from the stored results alone. :class:`Report` writes ``report.md`` (a section of the
combined report), ``results.json`` (headline numbers, claims, wall time) and
the PNGs, all atomically, into the study's workdir.
"""

from __future__ import annotations

import functools
import io
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import gated
from gated import diagnostics

from .. import config as config_lib
from .. import loop
from .. import tasks as tasks_lib
from .. import train as train_lib
from ..config import require
from ..workdir import spelled, to_json, write

DTYPE = jnp.float32


def check_fields(config: ml_collections.ConfigDict, fields: dict[str, type], study: str) -> None:
    """Refuses unknown and missing keys and values of the wrong type; the message names the key."""
    given = set(config.keys()) - {"study"}
    unknown, missing = sorted(given - set(fields)), sorted(set(fields) - given)
    if unknown:
        raise ValueError(f"config.{unknown[0]}: unknown key for study {study!r}; valid keys are {sorted(fields)}")
    if missing:
        raise ValueError(f"config.{missing[0]}: missing; study {study!r} needs {sorted(fields)}")
    for key, kind in fields.items():
        value = config[key]
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif kind is tuple:
            ok = isinstance(value, tuple | list) and len(value) > 0
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        else:
            ok = isinstance(value, kind)
        what = {int: "a positive int", float: "a number", tuple: "a non-empty list"}.get(kind, kind.__name__)
        require(ok, key, what, value)


class Report:
    """A study's section of the report: text, figures, tables, headline numbers and claims (its computed results
    are in ``computed.json``)."""

    def __init__(self, workdir: pathlib.Path, title: str):
        self.workdir, self.title = workdir, title
        self.lines: list[str] = []
        self.headline: dict[str, float] = {}
        self.claims: list[dict] = []

    def text(self, paragraph: str) -> None:
        self.lines += [paragraph.strip(), ""]

    def figure(self, fig, name: str, caption: str) -> None:
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()  # laid out by plt_grid's constrained layout
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        write(self.workdir / f"{name}.png", buffer.getvalue())
        self.lines += [f"![{name}]({name}.png)", "", f"*{caption.strip()}*", ""]

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        fmt = lambda v: (f"{v:.3g}" if isinstance(v, float) else str(v)).replace("|", "\\|")
        self.lines += ["| " + " | ".join(map(fmt, header)) + " |", "|" + " --- |" * len(header)]
        self.lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
        self.lines.append("")

    def claim(self, claim: str, held: bool, evidence: str) -> None:
        self.claims.append({"claim": claim, "held": bool(held), "evidence": evidence})

    def write(self, config: ml_collections.ConfigDict, seconds: float) -> dict:
        claims = [
            f"- **{'held' if c['held'] else 'did not hold'}**: {c['claim']} ({c['evidence']})" for c in self.claims
        ]
        headline = [f"- {k}: {format_value(v)}" for k, v in self.headline.items()]
        body = [f"## {self.title}", "", f"Study `{config.study}`, {seconds:.0f} s on this machine.", ""]
        body += ["Headline numbers:", "", *headline, "", "Claims of the notes:", "", *claims, "", *self.lines]
        write(self.workdir / "report.md", "\n".join(body))
        result = {
            "study": config.study,
            "title": self.title,
            "wall_seconds": seconds,
            "headline": self.headline,
            "claims": self.claims,
            "config": spelled(json.loads(config.to_json())),
        }
        write(self.workdir / "results.json", to_json(plain(result)))
        return result


def format_value(v: Any) -> str:
    """A headline value as the reports and the command line print it."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def plain(v: Any) -> Any:
    """Arrays and NumPy scalars as lists and Python numbers, for strict JSON."""
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain(x) for x in v]
    if isinstance(v, np.ndarray | jax.Array):
        return np.asarray(v).tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def engine_config(config, **train) -> ml_collections.ConfigDict:
    """The engine config a study's runs start from: Adam at ``config.learning_rate`` with ``config.warmup_steps``
    of warm-up and a cosine decay, ``config.steps`` of ``config.batch_size``, a log line every twentieth of the steps
    and one checkpoint at the end; ``train``: the study's other ``train`` keys."""
    c = config_lib.base_config()
    c.optimizer.update(learning_rate=config.learning_rate, schedule="warmup_cosine", warmup_steps=config.warmup_steps)
    steps = config.steps
    c.train.update(steps=steps, batch_size=config.batch_size, log_every=max(steps // 20, 1), checkpoint_every=steps)
    c.train.update(train)
    return c


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% for z = 1.96): ``(low, high)``, (0, 1) without trials;
    scipy's ``binomtest(...).proportion_ci("wilson")`` at the level of ``z``.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n successes: 8 of 8 gives
    (0.68, 1), 0 of 8 gives (0, 0.32).
    """
    if trials == 0:
        return 0.0, 1.0
    import scipy.stats  # here: the command line imports the studies, and scipy.stats takes a second to import

    level = 2 * scipy.stats.norm.cdf(z) - 1  # 0.950004 for 1.96, the z the notes quote
    ci = scipy.stats.binomtest(successes, trials).proportion_ci(confidence_level=level, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def rate_text(successes: int, trials: int) -> str:
    """``"7/8 seeds (95% Wilson interval 0.53-0.98)"``: a success count as every claim states it."""
    low, high = wilson(successes, trials)
    return f"{successes}/{trials} seeds (95% Wilson interval {low:.2f}-{high:.2f})"


def claim_over_seeds(
    report: Report, claim: str, outcomes, detail: str = "", unit: str = "seeds", every: bool = False
) -> None:
    """States ``claim`` judged over seeds: it holds when the 95% Wilson interval of the share of ``outcomes`` (one
    bool per seed, or per (setting, seed)) that bear it out lies above 1/2, or with ``every`` (a bound, a law) when
    every outcome does; the evidence gives the count and the interval (and ``detail``)."""
    outcomes = [bool(o) for o in outcomes]
    k, n = sum(outcomes), len(outcomes)
    held = n > 0 and (k == n if every else wilson(k, n)[0] > 0.5)
    evidence = rate_text(k, n).replace(" seeds ", f" {unit} ")
    report.claim(claim, held, evidence + (f"; {detail}" if detail else ""))


EXACT = "an exact identity, not a statistic: no sampling error, so no interval"


# Type sizes for figures read at page width in the README: at most two panels a row, 12 pt labels, 10 pt legends.
FONTS = {
    "font.size": 12,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "legend.fontsize": 10,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
}

LAG_LABEL = "lag: steps back from the loss (T - 1 - k)"
GRAD_LABEL = "gradient reaching step k\n(norm ||dL/dh_k||, median over examples)"


def plt_figure(ncols: int = 1, width: float = 5.5, height: float = 4.2):
    """A figure of one row of ``ncols`` axes, each ``width`` x ``height`` inches; returns ``(fig, [axes])``."""
    fig, grid = plt_grid(1, ncols, width, height)
    return fig, list(grid[0])


def plt_grid(nrows: int, ncols: int, width: float = 5.5, height: float = 4.2):
    """A figure of ``nrows`` x ``ncols`` axes (off-screen backend, :data:`FONTS`); returns ``(fig, axes (nrows,
    ncols))``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update(FONTS)
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, layout="constrained")


def plt_panels(n: int, width: float = 5.5, height: float = 4.2):
    """``n`` panels, two a row; returns ``(fig, [n axes], spare)`` where ``spare`` is the empty last cell of an odd
    count (for :func:`legend_panel`) or None."""
    fig, grid = plt_grid((n + 1) // 2, min(n, 2), width, height)
    axes = list(grid.flat)
    return fig, axes[:n], (axes[n] if len(axes) > n else None)


def legend_panel(ax, handles: Sequence[Any], title: str | None = None) -> None:
    """Turns ``ax`` (an empty cell of the grid) into the figure's shared legend."""
    ax.axis("off")
    ax.legend(handles=list(handles), loc="center", frameon=False, title=title, fontsize=11)


def style_key(style: str, label: str, color: str = "0.35", marker: str = ""):
    """A legend entry for a line style (or ``marker``) the curves share (``"--"`` for the bounds, ``":"`` ...)."""
    from matplotlib.lines import Line2D

    return Line2D([], [], ls=style or "none", color=color, lw=1.2, marker=marker, label=label)


def lag_axes(ax, title: str, ylabel: str = GRAD_LABEL) -> None:
    ax.set(xlabel=LAG_LABEL, ylabel=ylabel, yscale="log", title=title)
    ax.grid(True, which="major", alpha=0.3)


def stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def task_inputs(task_name: str, length: int, batch_size: int, seed: int) -> tuple[tasks_lib.Task, jax.Array]:
    """A task and a batch of its inputs as single examples, ``(B, T, D)``."""
    task = tasks_lib.get(task_name, length=length)
    batch = task.sample(jax.random.key(seed), batch_size, "test")
    return task, jnp.swapaxes(batch.xs, 0, 1).astype(DTYPE)


def lag_norms(cell: Any, params: Any, xs: jax.Array, seed: int) -> dict[str, np.ndarray]:
    """Median over examples of ``||dL/dh_k||`` (and ``||dL/dc_k||`` for an LSTM), indexed by lag.

    ``params`` are stacked over settings (leading axis S); the loss is ``v . h_{T-1}``
    with a random unit ``v`` per example, so ``||dL/dh_{T-1}|| = 1`` and the curve is
    ``||v^T dh_{T-1}/dh_k||``. One backward pass per example and setting, all vmapped.
    Returns ``{"h": (S, T), "c": (S, T)}`` with index 0 = lag 0.
    """
    batch = xs.shape[0]
    vs = jax.random.normal(jax.random.key(seed), (batch, cell.hidden_size), DTYPE)
    vs = vs / jnp.linalg.norm(vs, axis=-1, keepdims=True)
    norms = _lag_norms_program(cell)(params, xs, vs)
    return {k: np.median(np.asarray(v), axis=1)[:, ::-1] for k, v in norms.items()}


@functools.cache
def _lag_norms_program(cell: Any) -> Callable:
    """One compiled program per cell (cells are hashable), reused by every call of :func:`lag_norms`."""

    def one(p, x, v):
        return diagnostics.gradient_norms(cell, p, x, lambda ys, final: jnp.sum(ys[-1] * v))

    return jax.jit(jax.vmap(jax.vmap(one, (None, 0, 0)), (0, None, None)))


def decay(curve: np.ndarray, lag: int) -> float:
    """``curve[lag] / curve[0]``: how much of the gradient at lag 0 is left ``lag`` steps back (inf/nan kept)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(curve[min(lag, len(curve) - 1)] / curve[0])


def trained_lag_profile(cell: Any, config: Any, task: tasks_lib.Task, xs: jax.Array) -> dict:
    """Trains ``cell`` on ``task`` with Adam (``config.seeds`` seeds, ``config.train_steps`` steps of
    ``config.train_batch_size`` at ``config.learning_rate``) and measures the lag profile before and after.

    Returns ``{"before": {"h": curve, "c": curve (LSTM)}, "after": {...}, "test_mse": per seed, "chance": ...}``,
    each curve ``||dL/dh_k||`` (or ``||dL/dc_k||``) by lag, median over examples and seeds.
    """
    _, states, _, test = train_runs(
        cell,
        task,
        range(config.seeds),
        steps=config.train_steps,
        batch_size=config.train_batch_size,
        optimizer=train_lib.OptimizerSpec("adam", steps=config.train_steps),
        learning_rate=config.learning_rate,
    )
    init = stack([cell.init(jax.random.key(s), task.input_size, DTYPE) for s in range(config.seeds)])
    before = lag_norms(cell, init, xs, seed=2)
    after = lag_norms(cell, states.params.layers[0].cell, xs, seed=2)
    median = lambda norms: {k: np.median(v, axis=0) for k, v in norms.items()}
    return {"before": median(before), "after": median(after), "test_mse": test["loss"], "chance": task.chance_loss}


def from_lag_one(curve) -> tuple[np.ndarray, np.ndarray]:
    """``(lags, values)`` of an LSTM's ``||dL/dc_k||`` curve from lag 1: c_{T-1} feeds nothing after a loss on
    h_{T-1}, so its lag-0 value is 0 by construction."""
    curve = np.asarray(curve)
    return np.arange(1, len(curve)), curve[1:]


def report_lag(config: Any) -> int:
    """The lag a classic lag study reports at: its ``report_lag``, within the sequence."""
    return min(config.report_lag, config.length - 1)


def draw_trained_lag_profile(profile: dict, config: Any, report: Report, *, name: str, title: str, what: str) -> None:
    """The figure ``name`` of :func:`trained_lag_profile`'s results: ``||dL/dh_k||`` (and ``||dL/dc_k||``
    dotted for an LSTM) before and after training, read at :func:`report_lag`."""
    lag = report_lag(config)
    fig, (ax,) = plt_figure(1, width=7)
    for label, norms in (
        ("at initialisation", profile["before"]),
        (f"after {config.train_steps} steps", profile["after"]),
    ):
        (line,) = ax.plot(norms["h"], label=f"hidden state h, {label}")
        if "c" in norms:
            ax.plot(*from_lag_one(norms["c"]), ":", color=line.get_color(), label=f"cell state c, {label}")
    lag_axes(ax, title, "gradient reaching step k\n(norm, median over examples)")
    ax.legend()
    before, after = np.asarray(profile["before"]["h"]), np.asarray(profile["after"]["h"])
    report.figure(
        fig,
        name,
        f"The {what}'s lag profile before and after training on the adding problem (Adam, {config.seeds} seeds, test "
        f"MSE {np.median(profile['test_mse']):.3g}, chance {profile['chance']:.3g}): ||dL/dh|| left at lag {lag}: "
        f"{decay(before, lag):.2g} before, {decay(after, lag):.2g} after.",
    )


def train_runs(
    cell: Any,
    task: tasks_lib.Task,
    seeds: Sequence[int],
    *,
    steps: int,
    batch_size: int,
    optimizer: train_lib.OptimizerSpec,
    learning_rate: float,
    clip_thresholds: Sequence[float] | None = None,
    init_transform: Callable[[Any], Any] | None = None,
) -> tuple[gated.models.Model, train_lib.TrainState, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Trains one run per seed (and clip threshold, paired with the seeds) as ONE program, in the engine's loop
    (:mod:`experiments.loop`). ``init_transform`` edits each run's initial :class:`gated.models.ModelParams`.

    Returns ``(model, final states, per-step metrics (steps, runs), test metrics (runs,))``.
    """
    model = train_lib.layer_model(gated.Recurrent(cell), task)
    thresholds = [1.0] * len(seeds) if clip_thresholds is None else list(clip_thresholds)
    states, data_keys, eval_keys = loop.init_states(
        [model] * len(seeds),
        task,
        optimizer,
        list(seeds),
        [learning_rate] * len(seeds),
        thresholds,
        init_transform,
        DTYPE,
    )
    programs = loop.programs(model, task, optimizer, batch_size, 512)
    progress = loop.train(programs, loop.Progress(states, {}, {}), data_keys, eval_keys, steps=steps)
    history = {k: v for k, v in progress.history.items() if k not in ("step", "diverged")}
    test = {k: v[-1] for k, v in progress.evaluations.items() if k != "step"}
    return model, progress.states, history, test
