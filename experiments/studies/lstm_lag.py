"""Study 4 (Khapra 15.3): the LSTM's gradient against the lag with the forget bias swept, and the cell-state path."""

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
    from_lag_one,
    lag_axes,
    lag_norms,
    legend_panel,
    plt_panels,
    report_lag,
    stack,
    style_key,
    task_inputs,
    trained_lag_profile,
)

TITLE = "4. LSTM: the forget gates keep the gradient alive along the cell state"


def _path_products(cell, params, xs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median over examples of the unit-averaged forget-gate product and of dh_{T-1}/dc_k, by lag: (S, T) each;
    and the products themselves, (S, B, T, H) indexed by step."""
    path = jax.jit(jax.vmap(jax.vmap(lambda p, x: diagnostics.gate_path(cell, p, x), (None, 0)), (0, None)))
    out = path(params, xs)
    product = np.median(np.asarray(out["product"]).mean(axis=-1), axis=1)[:, ::-1]
    dh_dc = np.median(np.abs(np.asarray(out["dh_dc"])).mean(axis=-1), axis=1)[:, ::-1]
    return product, dh_dc, out["product"]


def compute(config, workdir) -> dict:
    """Per forget bias: ||dL/dh_k||, ||dL/dc_k||, the forget-gate product and dh/dc by lag (medians over examples
    and seeds); the gate path against autodiff; and the trained profile."""
    task, xs = task_inputs("adding", config.length, config.batch_size, seed=1)
    biases, h = [float(b) for b in config.forget_biases], config.hidden_size
    cell = gated.cells.LSTM(h)  # the forget bias only sets the initial b_f; the step is the same
    params = stack(
        [
            gated.cells.LSTM(h, forget_bias=b).init(jax.random.key(s), task.input_size, DTYPE)
            for b in biases
            for s in range(config.seeds)
        ]
    )
    norms = lag_norms(cell, params, xs, seed=2)
    shape = (len(biases), config.seeds, -1)
    grad_h = np.median(norms["h"].reshape(shape), axis=1)
    per_seed_c = norms["c"].reshape(shape)  # (biases, seeds, T): each seed's median over examples
    grad_c = np.median(per_seed_c, axis=1)
    product, dh_dc, raw_product = _path_products(cell, params, xs)
    per_seed_product = product.reshape(shape)
    product, dh_dc = (np.median(a.reshape(shape), axis=1) for a in (product, dh_dc))
    # the path from the gates against autodiff with the gates held constant, one example per bias
    first = jax.tree.map(lambda a: a[:: config.seeds], params)
    by_gates = jax.vmap(jax.vmap(jnp.diag))(raw_product[:: config.seeds, 0])  # the same params and example
    by_autodiff = jax.jit(jax.vmap(lambda p: diagnostics.gate_path_by_autodiff(cell, p, xs[0])))(first)
    trained = trained_lag_profile(gated.cells.LSTM(config.hidden_size), config, task, xs)
    return {
        "biases": biases,
        "grad_h": grad_h,
        "grad_c": grad_c,
        "forget_product": product,
        "dh_dc": dh_dc,
        "per_seed_grad_c": per_seed_c,
        "per_seed_product": per_seed_product,
        "path_error": float(jnp.max(jnp.abs(by_gates - by_autodiff))),
        "trained": trained,
    }


def plot(results, config, report) -> None:
    lag = report_lag(config)
    biases = results["biases"]
    grad_h, grad_c, product, dh_dc = (np.asarray(results[k]) for k in ("grad_h", "grad_c", "forget_product", "dh_dc"))
    fig, axes, spare = plt_panels(3)
    for i, b in enumerate(biases):
        axes[0].plot(grad_h[i], label=f"forget bias {b:g}")
        axes[1].plot(*from_lag_one(grad_c[i]))
        (line,) = axes[2].plot(product[i])
        axes[2].plot(dh_dc[i], ":", color=line.get_color())
    lag_axes(axes[0], f"hidden state, LSTM H = {config.hidden_size}, T = {config.length}")
    lag_axes(axes[1], "cell state", "gradient reaching the cell state c_k\n(norm ||dL/dc_k||, median over examples)")
    lag_axes(axes[2], "the cell-state path alone", "forget gates' product from k to T - 1\n(mean over units)")
    handles = axes[0].get_legend_handles_labels()[0]
    handles += [
        style_key("-", "bottom left, solid: the forget gates'\nproduct prod_{j>k} f_j"),
        style_key(":", "bottom left, dotted: the same path\ninto h, ||dh_{T-1}/dc_k||"),
    ]
    legend_panel(spare, handles)
    report.figure(
        fig,
        "lstm_lag",
        "Top: ||dL/dh_k|| and ||dL/dc_k|| against the lag at initialisation for a loss on h_{T-1}, "
        "with the "
        "forget-gate bias swept (median over sequences of the adding problem and seeds). Bottom left: the lecture's "
        "explicit term, the cell-state path dc_{T-1}/dc_k = diag(prod_{j=k+1}^{T-1} f_j), averaged over units "
        "(solid), and dh_{T-1}/dc_k = D(o tanh'(c)) diag(prod f) (dotted). c_{T-1} itself feeds nothing after "
        "the loss on h_{T-1}, so dL/dc starts at lag 1. The gradient along the cell state "
        "vanishes only as fast as the forget gates close.",
    )
    rows = [
        [b, float(product[i][lag]), _left_on_c(grad_c[i], lag), decay(grad_h[i], lag)] for i, b in enumerate(biases)
    ]
    report.table(
        ["forget bias", f"prod f at lag {lag}", f"||dL/dc|| at lag {lag} / lag 1", f"||dL/dh|| left at lag {lag}"], rows
    )
    title = f"LSTM (forget bias 1), adding problem T = {config.length}"
    draw_trained_lag_profile(results["trained"], config, report, name="lstm_lag_trained", title=title, what="LSTM")


def _left_on_c(curve: np.ndarray, lag: int) -> float:
    """c_{T-1} feeds nothing after the loss on h_{T-1}, so ||dL/dc|| is measured from lag 1."""
    return decay(np.asarray(curve)[1:], lag - 1)


def claims(results, config, report) -> None:
    lag = report_lag(config)
    biases = results["biases"]
    grad_h, grad_c = np.asarray(results["grad_h"]), np.asarray(results["grad_c"])
    product = np.asarray(results["forget_product"])
    per_c, per_product = np.asarray(results["per_seed_grad_c"]), np.asarray(results["per_seed_product"])
    left = [_left_on_c(grad_c[i], lag) for i in range(len(biases))]
    report.claim(
        "The cell-state path from the gates equals autodiff with the gates held constant",
        results["path_error"] < 1e-5,
        f"largest difference {results['path_error']:.2g} over {len(biases)} biases (one seed and example each), "
        f"every lag and unit; {EXACT}",
    )
    order = np.argsort(biases)
    claim_over_seeds(
        report,
        "The more the forget gates stay open (larger bias), the more gradient survives along the cell state",
        [np.all(np.diff([_left_on_c(per_c[i, s], lag) for i in order]) >= 0) for s in range(config.seeds)],
        "medians: "
        + ", ".join(f"bias {b:g}: {v:.2g}" for b, v in zip(biases, left, strict=True))
        + f" left at lag {lag}",
    )
    closed = [i for i, b in enumerate(biases) if b <= 0]
    open_ = [i for i, b in enumerate(biases) if b >= 3]
    if closed and open_:
        claim_over_seeds(
            report,
            "Closed forget gates (bias <= 0) make the path vanish (prod f < 1e-3); open ones (bias >= 3) keep it "
            "(prod f > 1e-2)",
            [
                max(per_product[i, s, lag] for i in closed) < 1e-3 < 1e-2 < min(per_product[i, s, lag] for i in open_)
                for s in range(config.seeds)
            ],
            f"medians of prod f at lag {lag}: {max(product[i][lag] for i in closed):.2g} (bias <= 0) vs "
            f"{min(product[i][lag] for i in open_):.2g} (bias >= 3)",
        )
    report.headline[f"forget_bias1_init_decay_lag{lag}"] = (
        decay(grad_h[biases.index(1.0)], lag) if 1.0 in biases else None
    )
    report.headline[f"lstm_trained_decay_lag{lag}"] = decay(np.asarray(results["trained"]["after"]["h"]), lag)
