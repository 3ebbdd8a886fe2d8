"""Study 6: the GRU's gradient against the lag for both update conventions; the update-gate product."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gated
from experiments.studies.base import DTYPE, decay, lag_axes, lag_norms, plt_figure, stack, task_inputs, train_runs
from gated import diagnostics
from gated import train as train_lib

TITLE = "6. GRU: the update gate plays the forget gate's role"
FIELDS = {
    "hidden_size": int,
    "length": int,
    "batch_size": int,
    "seeds": int,
    "updates": tuple,
    "chrono": bool,
    "report_lag": int,
    "train_steps": int,
    "train_batch_size": int,
    "learning_rate": float,
}


def _settings(config) -> list[tuple[str, dict]]:
    settings = [(f"update={u}", {"update": u}) for u in config.updates]
    if config.chrono:
        settings += [(f"update={u}, chrono init", {"update": u, "chrono_init": config.length}) for u in config.updates]
    return settings


def run(config, report) -> None:
    task, xs = task_inputs("adding", config.length, config.batch_size, seed=1)
    lag, h = min(config.report_lag, config.length - 1), config.hidden_size
    grad, product, path_error, rows = {}, {}, 0.0, []
    for name, options in _settings(config):
        cell = gated.cells.gru(h, **options)
        params = stack([cell.init(jax.random.key(s), task.input_size, DTYPE) for s in range(config.seeds)])
        grad[name] = np.median(lag_norms(cell, params, xs, seed=2)["h"], axis=0)
        path = jax.jit(
            jax.vmap(jax.vmap(lambda p, x, c=cell: diagnostics.gate_path(c, p, x)["product"], (None, 0)), (0, None))
        )(params, xs)
        product[name] = np.median(np.asarray(path).mean(axis=-1).reshape(-1, config.length), axis=0)[::-1]
        one = jax.tree.map(lambda a: a[0], params)
        by_autodiff = jax.jit(lambda p, c=cell: diagnostics.gate_path_by_autodiff(c, p, xs[0]))(one)
        by_gates = jax.vmap(jnp.diag)(diagnostics.gate_path(cell, one, xs[0])["product"])
        path_error = max(path_error, float(jnp.max(jnp.abs(by_autodiff - by_gates))))
        rows.append([name, float(product[name][lag]), decay(grad[name], lag)])

    fig, axes = plt_figure(2, width=5)
    for name in grad:
        (line,) = axes[0].plot(grad[name], label=name)
        axes[1].plot(product[name], color=line.get_color(), label=name)
    lag_axes(axes[0], f"GRU ||dL/dh_k||, H = {h}, T = {config.length}")
    lag_axes(axes[1], "update-gate path", "mean over units of prod_{j>k} keep_j")
    for ax in axes:
        ax.legend(fontsize=7)
    report.figure(
        fig,
        "gru_lag",
        "Left: the GRU's ||dL/dh_k|| against the lag at initialisation (loss on h_{T-1}, median over adding-problem "
        'sequences and seeds), for both update conventions ("keep": h = z h + (1-z) n, PyTorch and Flax; '
        '"write": h = (1-z) h + z n, Chung et al.)'
        + (" and with chrono initialisation of the update bias" if config.chrono else "")
        + ". Right: the path that skips the candidate, dh_{T-1}/dh_k = diag(prod keep_j), "
        "averaged over units. With zero biases the two conventions are the same model up to the sign of z's "
        "parameters, so their curves coincide in distribution; chrono init opens the path.",
    )
    report.table(["GRU", f"prod keep at lag {lag}", f"||dL/dh|| left at lag {lag}"], rows)
    report.claim(
        "The update-gate product from the gates equals autodiff with the gates and candidate held constant",
        path_error < 1e-5,
        f"largest difference {path_error:.2g}",
    )
    if len(config.updates) == 2 and set(config.updates) == {"keep", "write"}:
        a, b = decay(grad["update=keep"], lag), decay(grad["update=write"], lag)
        report.claim(
            "Both update conventions give the same lag profile at zero bias (within a factor 3)",
            1 / 3 < a / b < 3,
            f"keep {a:.2g}, write {b:.2g} left at lag {lag}",
        )
    if config.chrono:
        plain, chrono = (
            decay(grad[f"update={config.updates[0]}"], lag),
            decay(grad[f"update={config.updates[0]}, chrono init"], lag),
        )
        report.claim(
            "An update gate biased to keep the state (chrono init) keeps more gradient",
            chrono > plain,
            f"{chrono:.2g} vs {plain:.2g} left at lag {lag}",
        )
    trained = _trained(config, task, xs, lag, report)
    report.headline[f"gru_init_decay_lag{lag}"] = decay(grad[f"update={config.updates[0]}"], lag)
    report.headline[f"gru_trained_decay_lag{lag}"] = decay(trained, lag)
    report.numbers.update(grad=grad, update_product=product, trained_curve=trained)


def _trained(config, task, xs, lag, report) -> np.ndarray:
    cell = gated.cells.gru(config.hidden_size, update=config.updates[0])
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
    before = np.median(lag_norms(cell, init, xs, seed=2)["h"], axis=0)
    after = np.median(lag_norms(cell, states.params.recurrent.cell, xs, seed=2)["h"], axis=0)
    fig, (ax,) = plt_figure(1, width=6)
    ax.plot(before, label="at initialisation")
    ax.plot(after, label=f"after {config.train_steps} steps (test MSE {np.median(test['loss']):.3g})")
    lag_axes(ax, f"GRU (update={config.updates[0]}), adding problem T = {config.length}")
    ax.legend()
    report.figure(
        fig,
        "gru_lag_trained",
        f"The GRU's lag profile before and after training on the adding problem (Adam, {config.seeds} seeds, "
        f"chance MSE {task.chance_loss:.3g}): gradient left at lag {lag}: {decay(before, lag):.2g} before, "
        f"{decay(after, lag):.2g} after.",
    )
    report.numbers["trained_test_mse"] = test["loss"]
    return after
