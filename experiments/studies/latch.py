"""Study 11 (Bengio, Simard & Frasconi 1994, "Learning long-term dependencies with gradient descent is difficult"):
the latch. One tanh unit ``h_t = tanh(w h_{t-1} + u_t)`` must hold one bit through noise. The class c = +-1 sets
the first L inputs (trained, one set per class); after them the inputs are Gaussian noise of std ``noise``; the
loss is ``(h_T - 0.8 c)^2`` at the last step only.

To latch robustly the unit needs two stable fixed points ``+-h*`` of ``h = tanh(w h)``: ``w > 1``. But at a stable
fixed point the map contracts, ``w (1 - h*^2) < 1``, so ``dh_T/dh_L``, and with it the gradient that reaches the
trained inputs, vanishes as ``(w (1 - h*^2))^(T - L)``: robust latching and learning by gradient descent pull
against each other (the paper's theorem), and the success rate falls with T. Every (T, seed) is trained with Adam,
seeds vmapped; success is a test accuracy of at least ``success_accuracy`` on fresh noise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .base import legend_panel, plt_panels, rate_text, wilson

TITLE = "11. The latch (Bengio, Simard & Frasconi 1994): holding a bit through noise"
TARGET = 0.8
MOST = 0.5


def _inputs(a: jax.Array, key: jax.Array, length: int, batch: int, noise: float):
    """A batch: classes c = +-1 (half each), inputs ``(B, T)``: the class's L trained inputs, then noise."""
    k_c, k_n = jax.random.split(key)
    classes = jnp.where(jax.random.bernoulli(k_c, 0.5, (batch,)), 1.0, -1.0)
    prefix = jnp.where(classes[:, None] > 0, a[0][None, :], a[1][None, :])
    rest = noise * jax.random.normal(k_n, (batch, length - a.shape[1]))
    return classes, jnp.concatenate([prefix, rest], axis=1)


def final_state(w: jax.Array, inputs: jax.Array) -> jax.Array:
    """``h_T`` of ``h_t = tanh(w h_{t-1} + u_t)`` from ``h_0 = 0``, for inputs ``(B, T)``."""
    h, _ = jax.lax.scan(lambda h, u: (jnp.tanh(w * h + u), None), jnp.zeros(inputs.shape[0]), inputs.T)
    return h


def _loss(params, key, length, batch, noise):
    classes, inputs = _inputs(params["a"], key, length, batch, noise)
    return jnp.mean((final_state(params["w"], inputs) - TARGET * classes) ** 2)


def fixed_point(w: float) -> float:
    """The positive stable fixed point h* of ``h = tanh(w h)`` (0 for w <= 1), by iterating the map."""
    if w <= 1.0:
        return 0.0
    h = 1.0
    for _ in range(10_000):
        h = float(np.tanh(w * h))
    return h


def _train_program(config, length: int):
    tx = optax.adam(config.learning_rate)

    def one(key):
        k_w, k_a, k_data, k_test = jax.random.split(key, 4)
        lo, hi = config.w_init
        params = {
            "w": jax.random.uniform(k_w, (), minval=lo, maxval=hi),
            "a": 0.1 * jax.random.normal(k_a, (2, config.prefix)),
        }
        grad = jax.grad(_loss)

        def step(carry, i):
            params, opt = carry
            g = grad(params, jax.random.fold_in(k_data, i), length, config.batch_size, config.noise)
            updates, opt = tx.update(g, opt, params)
            return (optax.apply_updates(params, updates), opt), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(config.steps))
        classes, inputs = _inputs(params["a"], k_test, length, config.test_size, config.noise)
        h = final_state(params["w"], inputs)
        accuracy = jnp.mean(jnp.sign(h) == classes)
        # how much of a change in h_L reaches h_T: d h_T / d h_L, the path the trained inputs' gradient takes
        tail = inputs[:, config.prefix :]
        h_l = final_state(params["w"], inputs[:, : config.prefix])
        run = lambda h0: jax.lax.scan(lambda h, u: (jnp.tanh(params["w"] * h + u), None), h0, tail.T)[0]
        gain = jax.jvp(run, (h_l,), (jnp.ones_like(h_l),))[1]
        return {"w": params["w"], "accuracy": accuracy, "gain": jnp.median(jnp.abs(gain))}

    return jax.jit(jax.vmap(one))


def compute(config, workdir) -> dict:
    """Per length: every seed's learned w, test accuracy and median |dh_T/dh_L| after training."""
    if config.prefix >= min(config.lengths):
        raise ValueError(
            f"config.prefix: expected fewer steps than the shortest length {min(config.lengths)}, got {config.prefix}"
        )
    lo, hi = config.w_init
    if not lo <= hi:
        raise ValueError(f"config.w_init: expected (low, high) with low <= high, got {tuple(config.w_init)}")
    keys = jax.vmap(jax.random.key)(jnp.arange(config.seeds))  # seed s is jax.random.key(s)
    out = {}
    for length in config.lengths:
        result = _train_program(config, int(length))(keys)
        out[str(length)] = {k: np.asarray(v).tolist() for k, v in result.items()}
    return {"lengths": out}


def _solved(config, r: dict) -> list[bool]:
    return [a >= config.success_accuracy for a in r["accuracy"]]


def plot(results, config, report) -> None:
    lengths, n = list(config.lengths), config.seeds
    runs = results["lengths"]
    counts = [sum(_solved(config, runs[str(t)])) for t in lengths]
    fig, (ax1, ax2, ax3), spare = plt_panels(3)
    rate = np.asarray(counts) / n
    low, high = np.asarray([wilson(k, n) for k in counts]).T
    ax1.errorbar(
        lengths,
        rate,
        yerr=[rate - low, high - rate],
        fmt="o-",
        capsize=3,
        label="fraction latched, with its 95%\nWilson interval (top left)",
    )
    ylabel = f"fraction of {n} seeds that latch\n(test accuracy >= {config.success_accuracy:g})"
    ax1.set(
        xlabel="sequence length T (steps)",
        ylabel=ylabel,
        xscale="log",
        ylim=(-0.05, 1.05),
        title="success rate, 95% Wilson",
    )
    for t in lengths:
        r = runs[str(t)]
        solved = np.asarray(_solved(config, r))
        w = np.asarray(r["w"])
        ax2.scatter(np.full(solved.sum(), t), w[solved], marker="o", color="C0", s=18)
        ax2.scatter(np.full((~solved).sum(), t), w[~solved], marker="x", color="C3", s=18)
        gain = np.asarray(r["gain"])
        ax3.scatter(np.full(solved.sum(), t), np.maximum(gain[solved], 1e-30), marker="o", color="C0", s=18)
        ax3.scatter(np.full((~solved).sum(), t), np.maximum(gain[~solved], 1e-30), marker="x", color="C3", s=18)
    ax2.axhline(1.0, ls="--", color="k", lw=1, label="dashed: w = 1; above it, two\nstable fixed points (top right)")
    ax2.scatter([], [], marker="o", color="C0", label="a seed that latched")
    ax2.scatter([], [], marker="x", color="C3", label="a seed that failed")
    ax2.set(
        xlabel="sequence length T (steps)",
        ylabel="learned recurrent weight w",
        xscale="log",
        title="the weight each seed learned",
    )
    ax3.set(
        xlabel="sequence length T (steps)",
        ylabel="sensitivity of the last state to the\nlast trained input's state, |dh_T / dh_L|",
        xscale="log",
        yscale="log",
        title="what reaches the trained inputs",
    )
    legend_panel(spare, ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0])
    for ax in (ax1, ax2, ax3):
        ax.grid(True, alpha=0.3)
    report.figure(
        fig,
        "latch",
        f"One tanh unit latching a bit through Gaussian noise (std {config.noise:g}) after {config.prefix} trained "
        f"inputs; {n} seeds per length, {config.steps} Adam steps (lr {config.learning_rate:g}), w drawn from "
        f"U{tuple(config.w_init)}. Top left: success rate with 95% Wilson intervals. Top right: the learned w "
        "(dashed: w = 1, the bistability threshold). Bottom left: the median sensitivity of h_T to h_L on test "
        "sequences (float32; below 1e-30, drawn at 1e-30).",
    )
    rows = []
    for t, k in zip(lengths, counts, strict=True):
        r = runs[str(t)]
        w = np.asarray(r["w"])
        rows.append([t, rate_text(k, n), float(np.median(w)), float(np.median(r["gain"]))])
    report.table(["T", "latched", "median learned w", "median |dh_T/dh_L|"], rows)


def claims(results, config, report) -> None:
    lengths, n = list(config.lengths), config.seeds
    runs = results["lengths"]
    counts = {t: sum(_solved(config, runs[str(t)])) for t in lengths}
    short, long = lengths[0], lengths[-1]
    report.claim(
        f"Gradient descent latches the bit on most seeds at T = {short}",
        wilson(counts[short], n)[0] > MOST,
        rate_text(counts[short], n),
    )
    report.claim(
        f"The success rate falls with T: fewer seeds latch at T = {long} than at T = {short} (the intervals do not "
        "overlap)",
        wilson(counts[long], n)[1] < wilson(counts[short], n)[0],
        f"T = {short}: {rate_text(counts[short], n)}; T = {long}: {rate_text(counts[long], n)}",
    )
    solved_w = [
        w for t in lengths for w, ok in zip(runs[str(t)]["w"], _solved(config, runs[str(t)]), strict=True) if ok
    ]
    above = sum(w > 1.0 for w in solved_w)
    report.claim(
        "A latch that holds has w > 1 (two stable fixed points +-h*)",
        len(solved_w) > 0 and wilson(above, len(solved_w))[0] > MOST,
        f"{above} of {len(solved_w)} latched runs over all lengths have w > 1 "
        f"(95% Wilson interval {wilson(above, len(solved_w))[0]:.2f}-{wilson(above, len(solved_w))[1]:.2f})",
    )
    if solved_w:
        w = float(np.median(solved_w))
        h = fixed_point(w)
        contraction = w * (1 - h * h)
        report.claim(
            "At a stable fixed point the latch contracts, w (1 - h*^2) < 1, so dh_T/dh_L vanishes with T",
            w > 1.0 and contraction < 1.0,
            f"median latched w = {w:.3g}, h* = {h:.3g}, w (1 - h*^2) = {contraction:.3g}, "
            f"its {long - config.prefix}th power {contraction ** (long - config.prefix):.2g}",
        )
        report.headline["median_latched_w"] = w
        report.headline["contraction_at_fixed_point"] = contraction
    for t in lengths:
        report.headline[f"T{t}_latched"] = f"{counts[t]}/{n}"
