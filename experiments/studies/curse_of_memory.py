"""Study 9 (Zucchet & Orvieto 2024, "Recurrent neural networks: vanishing and exploding gradients are not the end of
the story"): the curse of memory of a linear recurrence, and how normalisation and input gating tame it.

For ``h_t = lambda h_{t-1} + x_t`` driven by white noise (x_t ~ N(0, 1)), the stationary variance of the state and
of its sensitivity to ``lambda`` blow up as ``|lambda| -> 1``:

    Var(h) = 1 / (1 - lambda^2),        Var(dh/dlambda) = (1 + lambda^2) / (1 - lambda^2)^3.

The study measures both by Monte Carlo (``batch`` sequences of ``length`` steps, forward-mode autodiff for the
sensitivity), with 99% chi-square intervals (the state and its sensitivity are Gaussian: linear in the noise), and
checks the laws. It then measures the same for the two remedies of the modern gated linear recurrences:

- LRU (Orvieto et al. 2023): the input normalised by ``gamma = sqrt(1 - lambda^2)`` (held at its initial value) and
  ``lambda = exp(-exp(nu))`` parametrised by ``nu``: ``Var(h) = 1`` and
  ``Var(dh/dnu) = (lambda ln lambda)^2 (1 + lambda^2) / (1 - lambda^2)^2``, bounded as ``lambda -> 1``;
- input gating as in minGRU and RG-LRU, ``h_t = lambda h_{t-1} + (1 - lambda) x_t``:
  ``Var(h) = (1 - lambda) / (1 + lambda)`` and ``Var(dh/dlambda) = 2 / ((1 + lambda)^2 (1 - lambda^2))``, which
  grows only like the memory ``1/(1 - lambda)``, not like its cube (derived here: the coefficient of ``x_{T-k}`` in
  ``dh/dlambda`` is ``k (1 - lambda) lambda^(k-1) - lambda^k``; summing its square gives the form).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import gated
from gated import diagnostics

from .base import plt_figure

TITLE = "9. The curse of memory: a linear recurrence's variance and sensitivity as |lambda| -> 1"

VARIANTS = ("plain", "lru", "gated")
LABELS = {
    "plain": "h = lambda h + x",
    "lru": "LRU: h = lambda h + gamma x, lambda = exp(-exp(nu))",
    "gated": "gated (minGRU, RG-LRU): h = lambda h + (1 - lambda) x",
}


def laws(variant: str, lam: float) -> tuple[float, float | None]:
    """The closed forms ``(Var(h), Var(dh/dparameter))`` (None where the study gives no closed form)."""
    if variant == "plain":
        return 1.0 / (1 - lam**2), (1 + lam**2) / (1 - lam**2) ** 3
    if variant == "lru":
        return 1.0, (lam * np.log(lam)) ** 2 * (1 + lam**2) / (1 - lam**2) ** 2 if lam > 0 else 0.0
    return (1 - lam) / (1 + lam), 2.0 / ((1 + lam) ** 2 * (1 - lam**2))


def _final(variant: str, parameter, xs, gamma):
    """h_T from h_0 = 0 for ``xs`` ``(T, B)``, as a function of the variant's parameter (lambda, or nu for the LRU),
    run by the library's cells with one unit: the identity RNN ``h = x W_x + h W_h`` with ``W_h = lambda``; the LRU
    with ``nu_log = nu``, no phase, ``gamma_log = log gamma`` (held), ``B = 1``, ``C = 1``; the minGRU
    ``h = (1 - z) h + z x`` with a constant update gate ``z = 1 - lambda`` (its bias ``logit(1 - lambda)``)."""
    one, zero = jnp.ones((1, 1), xs.dtype), jnp.zeros((1, 1), xs.dtype)
    if variant == "plain":
        cell = gated.cells.RNN(1, activation="identity")
        params = cell.params_type(one, parameter * one, jnp.zeros((1,), xs.dtype))
    elif variant == "lru":
        cell = gated.cells.LRU(1)
        kernel = jnp.concatenate([one, zero, zero], axis=1)  # B: real part 1, imaginary 0; no skip
        vector = lambda v: jnp.full((1,), v, xs.dtype)
        params = cell.params_type(
            kernel,
            jnp.zeros((3,), xs.dtype),
            parameter * vector(1.0),
            vector(-jnp.inf),
            jnp.log(gamma) * vector(1.0),
            one,
            zero,
        )
    else:
        cell = gated.cells.MinGRU(1)
        bias = jnp.concatenate([jnp.log((1 - parameter) / parameter)[None], jnp.zeros((1,), xs.dtype)])
        params = cell.params_type(jnp.concatenate([zero, one], axis=1), bias)
    carry, _ = gated.run(cell, params, xs[..., None])
    return diagnostics.hidden(carry)[:, 0]


def _measure(variant: str, lam: float, xs) -> tuple[np.ndarray, np.ndarray]:
    """Samples of h_T and of its derivative with respect to the variant's parameter, (B,) each."""
    parameter = jnp.log(-jnp.log(lam)) if variant == "lru" else jnp.asarray(lam, xs.dtype)
    gamma = jnp.sqrt(1 - lam**2).astype(xs.dtype)
    h, dh = jax.jit(lambda p, x: jax.jvp(lambda q: _final(variant, q, x, gamma), (p,), (jnp.ones_like(p),)))(
        parameter.astype(xs.dtype), xs
    )
    return np.asarray(h, np.float64), np.asarray(dh, np.float64)


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """The sample variance (mean known to be 0) and its chi-square interval at ``confidence``."""
    n = samples.size
    var = float(np.mean(samples**2))
    lo, hi = stats.chi2.ppf([(1 + confidence) / 2, (1 - confidence) / 2], n)
    return var, n * var / lo, n * var / hi


def compute(config, workdir) -> dict:
    """Per variant and lambda: the measured variances of h_T and of its sensitivity, with intervals, and the laws."""
    key = jax.random.key(config.seed)
    level = 1 - (1 - config.confidence) / len(config.lambdas)  # Bonferroni: the family of lambdas at `confidence`
    rows = []
    for i, lam in enumerate(float(x) for x in config.lambdas):
        xs = jax.random.normal(jax.random.fold_in(key, i), (config.length, config.batch_size), jnp.float32)
        for variant in VARIANTS:
            h, dh = _measure(variant, lam, xs)
            law_h, law_s = laws(variant, lam)
            rows.append(
                {
                    "variant": variant,
                    "lambda": lam,
                    "var_h": _interval(h, level),
                    "var_s": _interval(dh, level),
                    "law_h": law_h,
                    "law_s": law_s,
                }
            )
    return {"rows": rows}


def _inside(measured, law) -> bool:
    return law is None or measured[1] <= law <= measured[2]


def plot(results, config, report) -> None:
    rows = results["rows"]
    fig, axes = plt_figure(2, width=6.2, height=4.8)
    for variant, color in zip(VARIANTS, ("C0", "C1", "C2"), strict=True):
        mine = [r for r in rows if r["variant"] == variant]
        x = np.array([1.0 / (1.0 - r["lambda"]) for r in mine])
        for ax, key, law_key in ((axes[0], "var_h", "law_h"), (axes[1], "var_s", "law_s")):
            var = np.array([r[key][0] for r in mine])
            err = np.abs(np.array([[r[key][1], r[key][2]] for r in mine]).T - var)
            ax.errorbar(x, var, yerr=err, fmt="o", color=color, markersize=4, capsize=2, label=f"{LABELS[variant]}")
            laws_ = [r[law_key] for r in mine]
            if all(v is not None for v in laws_):
                label = "dashed: the closed form" if variant == "plain" else None
                ax.plot(x, laws_, "--", color=color, linewidth=1, label=label)
    memory = "memory: steps the state remembers, 1 / (1 - lambda)"
    labels = (
        ("variance of the last state, Var(h_T)", "the state's variance"),
        (
            "variance of its derivative in the\nrecurrent parameter, Var(dh_T / d theta)",
            "sensitivity to the recurrent parameter",
        ),
    )
    for ax, (ylabel, title) in zip(axes, labels, strict=True):
        ax.set(xscale="log", yscale="log", xlabel=memory, ylabel=ylabel, title=title)
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=9)
    report.figure(
        fig,
        "curse_of_memory",
        f"Monte Carlo over {config.batch_size} white-noise sequences of {config.length} steps (dots, with "
        f"chi-square intervals, simultaneous at {config.confidence:.0%} over the values of lambda) against the "
        "closed forms (dashed): 1/(1 - lambda^2) and "
        "(1 + lambda^2)/(1 - lambda^2)^3 for the plain recurrence, 1 and (lambda ln lambda)^2 (1 + lambda^2)/"
        "(1 - lambda^2)^2 for the LRU (sensitivity to nu), (1 - lambda)/(1 + lambda) and 2/((1 + lambda)^2 "
        "(1 - lambda^2)) for the gated recurrence. "
        "The parameter is lambda, or nu for the LRU.",
    )
    table = [
        [
            LABELS[r["variant"]].split(":")[0],
            r["lambda"],
            r["var_h"][0],
            r["law_h"],
            r["var_s"][0],
            "-" if r["law_s"] is None else r["law_s"],
        ]
        for r in rows
    ]
    report.table(["recurrence", "lambda", "Var(h)", "law", "Var(dh/dparameter)", "law"], table)


def claims(results, config, report) -> None:
    rows = results["rows"]
    n, conf = config.batch_size, f"{config.confidence:.0%}"
    plain = [r for r in rows if r["variant"] == "plain"]
    lru = [r for r in rows if r["variant"] == "lru"]
    gated = [r for r in rows if r["variant"] == "gated"]
    outside = lambda rs, key, law: [f"lambda {r['lambda']:g}" for r in rs if not _inside(r[key], r[law])]
    checks = [
        (plain, "var_h", "law_h", "Var(h) = 1/(1 - lambda^2)"),
        (plain, "var_s", "law_s", "Var(dh/dlambda) = (1 + lambda^2)/(1 - lambda^2)^3"),
        (lru, "var_h", "law_h", "LRU's normalisation keeps Var(h) = 1"),
        (lru, "var_s", "law_s", "LRU: Var(dh/dnu) = (lambda ln lambda)^2 (1 + lambda^2)/(1 - lambda^2)^2"),
        (gated, "var_h", "law_h", "Input gating gives Var(h) = (1 - lambda)/(1 + lambda)"),
        (gated, "var_s", "law_s", "Input gating: Var(dh/dlambda) = 2/((1 + lambda)^2 (1 - lambda^2))"),
    ]
    for rs, key, law, what in checks:
        bad = outside(rs, key, law)
        evidence = f"{len(rs)} values of lambda, {n} sequences each; outside: {', '.join(bad) or 'none'}"
        report.claim(what + f", at every lambda, inside the intervals (simultaneous {conf})", not bad, evidence)
    growth = lambda rs, key: rs[-1][key][0] / rs[0][key][0]
    memory = (1 - plain[0]["lambda"]) / (1 - plain[-1]["lambda"])
    report.claim(
        "The plain sensitivity explodes faster than the square of the memory 1/(1 - lambda) (the law: its cube); "
        "the LRU's stays bounded (upper "
        "interval end below 10 at the longest memory); the gated one's grows at most like the memory",
        growth(plain, "var_s") > memory**2 and lru[-1]["var_s"][2] < 10 and growth(gated, "var_s") < 2 * memory,
        f"memory x{memory:.3g} from lambda {plain[0]['lambda']:g} to {plain[-1]['lambda']:g}: plain sensitivity "
        f"x{growth(plain, 'var_s'):.3g}, gated x{growth(gated, 'var_s'):.3g}; at lambda {plain[-1]['lambda']:g} "
        f"the LRU's is {lru[-1]['var_s'][0]:.3g} [{lru[-1]['var_s'][1]:.3g}, {lru[-1]['var_s'][2]:.3g}]",
    )
    report.headline[f"plain_var_sensitivity_lambda{plain[-1]['lambda']:g}"] = plain[-1]["var_s"][0]
    report.headline[f"lru_var_sensitivity_lambda{lru[-1]['lambda']:g}"] = lru[-1]["var_s"][0]
    report.headline[f"gated_var_sensitivity_lambda{gated[-1]['lambda']:g}"] = gated[-1]["var_s"][0]
