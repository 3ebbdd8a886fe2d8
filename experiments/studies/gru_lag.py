"""Study 6: the GRU's gradient against the lag for both update conventions; the update-gate product."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gated
from gated import diagnostics

from .base import (
    DTYPE,
    EXACT,
    claim_over_seeds,
    decay,
    draw_trained_lag_profile,
    lag_axes,
    lag_norms,
    plt_figure,
    rate_text,
    report_lag,
    stack,
    task_inputs,
    trained_lag_profile,
    wilson,
)

TITLE = "6. GRU: the update gate plays the forget gate's role"


def _settings(config) -> list[tuple[str, dict]]:
    settings = [(f"update={u}", {"update": u}) for u in config.updates]
    if config.chrono:
        settings += [(f"update={u}, chrono init", {"update": u, "chrono_init": config.length}) for u in config.updates]
    return settings


def compute(config, workdir) -> dict:
    """Per GRU setting: ||dL/dh_k|| and the update-gate product by lag (medians); the gate path against autodiff;
    and the trained profile."""
    task, xs = task_inputs("adding", config.length, config.batch_size, seed=1)
    grad, per_seed, product, path_error = {}, {}, {}, 0.0
    for name, options in _settings(config):
        cell = gated.cells.GRU(config.hidden_size, **options)
        params = stack([cell.init(jax.random.key(s), task.input_size, DTYPE) for s in range(config.seeds)])
        per_seed[name] = lag_norms(cell, params, xs, seed=2)["h"]  # (seeds, T): each seed's median over examples
        grad[name] = np.median(per_seed[name], axis=0)
        path = jax.jit(
            jax.vmap(jax.vmap(lambda p, x, c=cell: diagnostics.gate_path(c, p, x)["product"], (None, 0)), (0, None))
        )(params, xs)
        product[name] = np.median(np.asarray(path).mean(axis=-1).reshape(-1, config.length), axis=0)[::-1]
        one = jax.tree.map(lambda a: a[0], params)
        by_autodiff = jax.jit(lambda p, c=cell: diagnostics.gate_path_by_autodiff(c, p, xs[0]))(one)
        by_gates = jax.vmap(jnp.diag)(path[0, 0])  # the same params and example, from the gates
        path_error = max(path_error, float(jnp.max(jnp.abs(by_autodiff - by_gates))))
    trained = trained_lag_profile(gated.cells.GRU(config.hidden_size, update=config.updates[0]), config, task, xs)
    return {
        "grad": grad,
        "per_seed_grad": per_seed,
        "update_product": product,
        "path_error": path_error,
        "trained": trained,
    }


def plot(results, config, report) -> None:
    lag = report_lag(config)
    grad, product = results["grad"], results["update_product"]
    fig, axes = plt_figure(2)
    for name in grad:  # the conventions coincide under chrono init: "write" dashed, so both show
        style = "--" if "write" in name else "-"
        (line,) = axes[0].plot(grad[name], style, label=name)
        axes[1].plot(product[name], style, color=line.get_color(), label=name)
    lag_axes(axes[0], f"GRU, H = {config.hidden_size}, T = {config.length}")
    lag_axes(
        axes[1],
        "the update-gate path alone",
        "update gates' keep fractions, product\nfrom k to T - 1 (mean over units)",
    )
    for ax in axes:
        ax.legend()
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
    rows = [[name, float(product[name][lag]), decay(np.asarray(grad[name]), lag)] for name in grad]
    report.table(["GRU", f"prod keep at lag {lag}", f"||dL/dh|| left at lag {lag}"], rows)
    title = f"GRU (update={config.updates[0]}), adding problem T = {config.length}"
    draw_trained_lag_profile(results["trained"], config, report, name="gru_lag_trained", title=title, what="GRU")


def claims(results, config, report) -> None:
    lag = report_lag(config)
    left = {name: decay(np.asarray(curve), lag) for name, curve in results["grad"].items()}
    seeds = {name: [decay(np.asarray(c), lag) for c in curves] for name, curves in results["per_seed_grad"].items()}
    report.claim(
        "The update-gate product from the gates equals autodiff with the gates and candidate held constant",
        results["path_error"] < 1e-5,
        f"largest difference {results['path_error']:.2g} (one seed and example per setting); {EXACT}",
    )
    if len(config.updates) == 2 and set(config.updates) == {"keep", "write"}:
        a, b = left["update=keep"], left["update=write"]
        more = sum(x > y for x, y in zip(seeds["update=keep"], seeds["update=write"], strict=True))
        low, high = wilson(more, config.seeds)
        report.claim(
            "Neither update convention keeps systematically more gradient at zero bias (a sign test: the interval of "
            "the share of seeds where 'keep' keeps more contains 1/2)",
            low < 0.5 < high,
            f"'keep' keeps more on {rate_text(more, config.seeds)}; medians: keep {a:.2g}, write {b:.2g} left at "
            f"lag {lag}",
        )
    first = f"update={config.updates[0]}"
    if config.chrono:
        plain, chrono = left[first], left[f"{first}, chrono init"]
        claim_over_seeds(
            report,
            "An update gate biased to keep the state (chrono init) keeps more gradient (seed by seed)",
            [c > p for c, p in zip(seeds[f"{first}, chrono init"], seeds[first], strict=True)],
            f"medians: {chrono:.2g} vs {plain:.2g} left at lag {lag}",
        )
    report.headline[f"gru_init_decay_lag{lag}"] = left[first]
    report.headline[f"gru_trained_decay_lag{lag}"] = decay(np.asarray(results["trained"]["after"]["h"]), lag)
