"""Float64 NumPy transcriptions of the cell equations (DESIGN.md), one example at a time.

Written gate by gate from the equations, not from the fused code: the fused
parameters are only cut into per-gate blocks by the documented gate order.
"""

import numpy as np


def f64(a):
    return np.asarray(a, dtype=np.float64)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


ACTIVATIONS = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0), "sigmoid": sigmoid, "identity": lambda z: z}


def _blocks(a, names, h):
    a = f64(a)
    return {name: a[..., k * h : (k + 1) * h] for k, name in enumerate(names)}


def rnn_step(cell, p, h, x):
    """h_t = phi(x W_xh + h W_hh + b)."""
    phi = ACTIVATIONS[cell.activation]
    h_new = phi(f64(x) @ f64(p.input_kernel) + f64(h) @ f64(p.recurrent_kernel) + f64(p.bias))
    return h_new, h_new


def lstm_step(cell, p, carry, x):
    """Seed 002 LSTM with the peephole, CIFG and no-forget-gate variants."""
    hs = cell.hidden_size
    h, c, x = f64(carry[0]), f64(carry[1]), f64(x)
    from_x, from_h = x @ f64(p.input_kernel), h @ f64(p.recurrent_kernel)
    read = np.tanh
    if getattr(cell, "layer_norm", False):  # Ba et al. 2016, eqs. 20-22: LN(W_x x) a_x + LN(W_h h) a_h + b
        norms = [f64(a) for a in p.norms]
        from_x, from_h = layer_norm(from_x) * norms[0], layer_norm(from_h) * norms[1]
        read = lambda c: np.tanh(layer_norm(c) * norms[2] + norms[3])  # h_t = o tanh(LN(c_t) a_c + b_c)
    pre = _blocks(from_x + from_h + f64(p.bias), cell.gates, hs)
    peep = _blocks(p.peepholes, cell.peephole_gates, hs) if cell.peepholes else {}
    zero = np.zeros(hs)

    i = sigmoid(pre["i"] + peep.get("i", zero) * c)
    g = np.tanh(pre["g"])
    if not cell.forget_gate:
        c_new = c + i * g
    else:
        if cell.coupled:
            f = 1.0 - i
        else:
            f = sigmoid(pre["f"] + peep.get("f", zero) * c)
        c_new = f * c + i * g
    o = sigmoid(pre["o"] + peep.get("o", zero) * c_new)
    h_new = o * read(c_new)
    if getattr(cell, "proj_size", None):  # Sak et al. 2014: h_t = (o_t tanh(c_t)) W_hr, of size P
        h_new = h_new @ f64(p.projection)
    return (h_new, c_new), h_new


def layer_norm(z, eps=1e-5):
    """(z - mean) / sqrt(var + eps) over the last axis (the biased variance)."""
    return (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + eps)


def gru_step(cell, p, h, x):
    """GRU with reset "before"/"after" and update "keep"/"write"."""
    hs = cell.hidden_size
    h, x = f64(h), f64(x)
    wx = _blocks(p.input_kernel, "rzn", hs)
    wh = _blocks(p.recurrent_kernel, "rzn", hs)
    b = _blocks(p.bias, "rzn", hs)
    r = sigmoid(x @ wx["r"] + h @ wh["r"] + b["r"])
    z = sigmoid(x @ wx["z"] + h @ wh["z"] + b["z"])
    if cell.reset == "before":
        n = np.tanh(x @ wx["n"] + (r * h) @ wh["n"] + b["n"])
    else:
        n = np.tanh(x @ wx["n"] + r * (h @ wh["n"] + f64(p.candidate_bias)) + b["n"])
    if cell.update == "keep":
        h_new = z * h + (1.0 - z) * n
    else:
        h_new = (1.0 - z) * h + z * n
    return h_new, h_new


def positive(z):
    """Feng et al.'s g: z + 1/2 for z >= 0, sigmoid(z) below."""
    return np.where(z >= 0, z + 0.5, sigmoid(z))


def mingru_step(cell, p, h, x):
    """z = sigmoid(x W_z + b_z), h~ = g(x W_h + b_h), h_t = a h + z h~ with a = 1 - z, or 1 - 2 z for
    eigenvalues="[-1, 1]"."""
    hs = cell.hidden_size
    wx, b = _blocks(p.input_kernel, ("z", "h"), hs), _blocks(p.bias, ("z", "h"), hs)
    x = f64(x)
    z = sigmoid(x @ wx["z"] + b["z"])
    cand = x @ wx["h"] + b["h"]
    cand = positive(cand) if cell.log_space else cand
    a = 1 - z if cell.eigenvalues == "[0, 1]" else 1 - 2 * z
    h_new = a * f64(h) + z * cand
    return h_new, h_new


def minlstm_step(cell, p, h, x):
    """f, i = sigmoid(.), h_t = f/(f+i) h + i/(f+i) h~."""
    hs = cell.hidden_size
    wx, b = _blocks(p.input_kernel, ("f", "i", "h"), hs), _blocks(p.bias, ("f", "i", "h"), hs)
    x = f64(x)
    f, i = sigmoid(x @ wx["f"] + b["f"]), sigmoid(x @ wx["i"] + b["i"])
    cand = x @ wx["h"] + b["h"]
    cand = positive(cand) if cell.log_space else cand
    h_new = f / (f + i) * f64(h) + i / (f + i) * cand
    return h_new, h_new


def lru_step(cell, p, carry, x):
    """lambda = exp(-exp(nu) + i exp(theta)), h_t = lambda h + gamma (x B), y = Re(h C) + x D."""
    hs = cell.hidden_size
    wx, b = _blocks(p.input_kernel, ("re", "im", "skip"), hs), _blocks(p.bias, ("re", "im", "skip"), hs)
    x = f64(x)
    lam = np.exp(-np.exp(f64(p.nu_log)) + 1j * np.exp(f64(p.theta_log)))
    h = f64(carry[0]) + 1j * f64(carry[1])
    bx = (x @ wx["re"] + b["re"]) + 1j * (x @ wx["im"] + b["im"])
    h_new = lam * h + np.exp(f64(p.gamma_log)) * bx
    c = f64(p.output_real) + 1j * f64(p.output_imag)
    y = np.real(h_new @ c) + x @ wx["skip"] + b["skip"]
    return (h_new.real, h_new.imag), y


def rglru_step(cell, p, h, x):
    """r, i = sigmoid(.), a = sigmoid(Lambda)^(c r) (then 2a - 1 for eigenvalues="[-1, 1]"),
    h_t = a h + sqrt(1 - a^2) (i v)."""
    hs = cell.hidden_size
    wx, b = _blocks(p.input_kernel, ("a", "x", "v"), hs), _blocks(p.bias, ("a", "x", "v"), hs)
    x = f64(x)
    r, i = sigmoid(x @ wx["a"] + b["a"]), sigmoid(x @ wx["x"] + b["x"])
    v = x @ wx["v"] + b["v"]
    a = sigmoid(f64(p.a_param)) ** (cell.c * r)
    a = 2 * a - 1 if cell.eigenvalues == "[-1, 1]" else a  # Grazzi et al.'s [-1, 1] range
    h_new = a * f64(h) + np.sqrt(1 - a**2) * (i * v)
    return h_new, h_new


def softplus(z):
    return np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0.0)


def ssm_step(cell, p, h, x):
    """dt = softplus(.), h_t = exp(dt A) h + (dt v) B^T with A = -exp(a_log) (2 exp(dt A) - 1 for eigenvalues="[-1,
    1]"; dt, B, C the biases alone when not selective), y = h C + D v; h (H, N)."""
    hs, n = cell.hidden_size, cell.state_size
    proj = f64(x) @ f64(p.input_kernel) + f64(p.bias)
    v = proj[hs : 2 * hs]
    if not cell.selective:  # time-invariant: dt, B and C are the biases
        proj = f64(p.bias)
    dt, b, c = proj[:hs], proj[2 * hs : 2 * hs + n], proj[2 * hs + n :]
    dt = softplus(dt)
    decay = np.exp(dt[:, None] * -np.exp(f64(p.a_log)))
    decay = 2 * decay - 1 if cell.eigenvalues == "[-1, 1]" else decay
    h_new = decay * f64(h) + np.outer(dt * v, b)
    return h_new, h_new @ c + f64(p.skip) * v


def log_sigmoid(z):
    return -softplus(-z)


def slstm_step(cell, p, carry, x):
    """xLSTM sLSTM (Beck et al. 2024, eqs. 8-17, stabilised as eqs. 15-17): m = max(log f + m, i~),
    i' = exp(i~ - m), f' = exp(log f + m_prev - m), c = f' c + i' z, n = f' n + i', h = o c / n."""
    hs = cell.hidden_size
    h, c, n, m = (f64(a) for a in carry)
    x = f64(x)
    wx, wh, b = (_blocks(a, ("i", "f", "z", "o"), hs) for a in (p.input_kernel, p.recurrent_kernel, p.bias))
    pre = {g: x @ wx[g] + h @ wh[g] + b[g] for g in ("i", "f", "z", "o")}
    log_f = pre["f"] if cell.exponential_forget else log_sigmoid(pre["f"])
    m_new = np.maximum(log_f + m, pre["i"])
    i, f = np.exp(pre["i"] - m_new), np.exp(log_f + m - m_new)
    c_new = f * c + i * np.tanh(pre["z"])
    n_new = f * n + i
    h_new = sigmoid(pre["o"]) * c_new / n_new
    return (h_new, c_new, n_new, m_new), h_new


def mlstm_step(cell, p, carry, x):
    """xLSTM mLSTM (Beck et al. 2024, eqs. 19-27), per head, stabilised as in the paper's appendix: m = max(log f +
    m, i~), C = f' C + i' v k^T, n = f' n + i' k, h = o * C q / max(|n^T q|, exp(-m)), k scaled by 1/sqrt(d)."""
    hs, heads = cell.hidden_size, cell.num_heads
    d = hs // heads
    proj = f64(x) @ f64(p.input_kernel) + f64(p.bias)
    g = 4 if cell.output_gate else 3  # without the output gate o = 1 (xLSTM's mLSTM block gates outside the cell)
    q, k, v, o = (proj[j * hs : (j + 1) * hs].reshape(heads, d) if j < g else np.full((heads, d), np.inf)
                  for j in range(4))  # fmt: skip
    k = k / np.sqrt(d)
    i_pre, f_pre = proj[g * hs : g * hs + heads], proj[g * hs + heads :]
    c, n, m = (f64(a) for a in carry)
    c_new, n_new, m_new, h = np.empty_like(c), np.empty_like(n), np.empty_like(m), np.empty((heads, d))
    for j in range(heads):
        log_f = log_sigmoid(f_pre[j])
        m_new[j] = max(log_f + m[j], i_pre[j])
        i, f = np.exp(i_pre[j] - m_new[j]), np.exp(log_f + m[j] - m_new[j])
        c_new[j] = f * c[j] + i * np.outer(v[j], k[j])
        n_new[j] = f * n[j] + i * k[j]
        h[j] = sigmoid(o[j]) * (c_new[j] @ q[j]) / max(abs(n_new[j] @ q[j]), np.exp(-m_new[j]))
    return (c_new, n_new, m_new), h.reshape(hs)


def ssd_step(cell, p, h, x):
    """Mamba-2's SSD (Dao & Gu 2024), per head k: dt = softplus(.), S^k = exp(dt^k A^k) S^k + dt^k x^k B^T,
    y^k = S^k C + D^k x^k, A = -exp(a_log); S (K, P, N)."""
    hs, heads, n = cell.hidden_size, cell.num_heads, cell.state_size
    proj = f64(x) @ f64(p.input_kernel) + f64(p.bias)
    xs = proj[:hs].reshape(heads, hs // heads)
    dt = softplus(proj[hs : hs + heads])
    b, c = proj[hs + heads : hs + heads + n], proj[hs + heads + n :]
    a = -np.exp(f64(p.a_log))
    s_new, y = np.empty_like(f64(h)), np.empty_like(xs)
    for k in range(heads):
        s_new[k] = np.exp(dt[k] * a[k]) * f64(h)[k] + dt[k] * np.outer(xs[k], b)
        y[k] = s_new[k] @ c + f64(p.skip)[k] * xs[k]
    return s_new, y.reshape(hs)


def gated_deltanet_step(cell, p, s, x):
    """Gated DeltaNet (Yang et al. 2024, eq. 10), per head: q, k L2-normalised (q / sqrt(d)), beta = sigmoid,
    alpha = exp(-exp(a) softplus(.)), S = alpha S (I - beta k k^T) + beta v k^T, y = S q; S (K, d, d)."""
    hs, heads = cell.hidden_size, cell.num_heads
    d = hs // heads
    proj = f64(x) @ f64(p.input_kernel) + f64(p.bias)
    q, k, v = (proj[j * hs : (j + 1) * hs].reshape(heads, d) for j in range(3))
    gate, strength = proj[3 * hs : 3 * hs + heads], proj[3 * hs + heads :]
    s_new, y = np.empty_like(f64(s)), np.empty((heads, d))
    for j in range(heads):
        qj = q[j] / np.sqrt(q[j] @ q[j] + 1e-6) / np.sqrt(d)
        kj = k[j] / np.sqrt(k[j] @ k[j] + 1e-6)
        alpha = np.exp(-np.exp(f64(p.a_log)[j]) * softplus(gate[j]))
        beta = sigmoid(strength[j])
        s_new[j] = alpha * f64(s)[j] @ (np.eye(d) - beta * np.outer(kj, kj)) + beta * np.outer(v[j], kj)
        y[j] = s_new[j] @ qj
    return s_new, y.reshape(hs)


def deltanet_step(cell, p, s, x):
    """DeltaNet (Schlag et al. 2021; Yang et al. 2024), per head: q, k L2-normalised (q / sqrt(d)), beta = sigmoid
    (2 sigmoid with eigenvalues in [-1, 1]), S = S (I - beta k k^T) + beta v k^T, y = S q; S (K, d, d)."""
    hs, heads = cell.hidden_size, cell.num_heads
    d = hs // heads
    proj = f64(x) @ f64(p.input_kernel) + f64(p.bias)
    q, k, v = (proj[j * hs : (j + 1) * hs].reshape(heads, d) for j in range(3))
    beta = sigmoid(proj[3 * hs :]) * (2.0 if cell.eigenvalues == "[-1, 1]" else 1.0)
    s_new, y = np.empty_like(f64(s)), np.empty((heads, d))
    for j in range(heads):
        qj = q[j] / np.sqrt(q[j] @ q[j] + 1e-6) / np.sqrt(d)
        kj = k[j] / np.sqrt(k[j] @ k[j] + 1e-6)
        s_new[j] = f64(s)[j] @ (np.eye(d) - beta[j] * np.outer(kj, kj)) + beta[j] * np.outer(v[j], kj)
        y[j] = s_new[j] @ qj
    return s_new, y.reshape(hs)


def gated_deltaproduct_step(cell, p, s, x):
    """Gated DeltaProduct (Siems et al. 2025, eq. 4), per head: S = alpha S, then for each of n_h keys, values and
    strengths S = S (I - beta k k^T) + beta v k^T (q, k L2-normalised, q / sqrt(d); beta = sigmoid, 2 sigmoid with
    eigenvalues in [-1, 1]; alpha = exp(-exp(a) softplus(.)), 1 without the forget gate); y = S q."""
    hs, heads, n = cell.hidden_size, cell.num_heads, cell.householder
    d = hs // heads
    proj = f64(x) @ f64(p.input_kernel) + f64(p.bias)
    unit = lambda a: a / np.sqrt(a @ a + 1e-6)
    q = proj[:hs].reshape(heads, d)
    ks = proj[hs : hs + n * hs].reshape(n, heads, d)
    vs = proj[hs + n * hs : hs + 2 * n * hs].reshape(n, heads, d)
    beta = sigmoid(proj[hs + 2 * n * hs : hs + 2 * n * hs + n * heads].reshape(n, heads))
    beta = beta * (2.0 if cell.eigenvalues == "[-1, 1]" else 1.0)
    gate = -np.exp(f64(p.a_log)) * softplus(proj[hs + 2 * n * hs + n * heads :])
    alpha = np.exp(gate) if cell.forget_gate else np.ones(heads)
    s_new, y = np.empty_like(f64(s)), np.empty((heads, d))
    for h in range(heads):
        state = alpha[h] * f64(s)[h]
        for j in range(n):
            k = unit(ks[j, h])
            state = state @ (np.eye(d) - beta[j, h] * np.outer(k, k)) + beta[j, h] * np.outer(vs[j, h], k)
        s_new[h], y[h] = state, state @ (unit(q[h]) / np.sqrt(d))
    return s_new, y.reshape(hs)


def kda_step(cell, p, s, x):
    """Kimi Delta Attention (Kimi Linear, eq. 1), per head: q, k L2-normalised (q / sqrt(d)), beta = sigmoid (2
    sigmoid with eigenvalues in [-1, 1]), alpha = exp(-exp(a) softplus(.)) per key channel;
    S = S diag(alpha) (I - beta k k^T) + beta v k^T, y = S q."""
    hs, heads = cell.hidden_size, cell.num_heads
    d = hs // heads
    proj = f64(x) @ f64(p.input_kernel) + f64(p.bias)
    q, k, v, g = (proj[j * hs : (j + 1) * hs].reshape(heads, d) for j in range(4))
    beta = sigmoid(proj[4 * hs :]) * (2.0 if cell.eigenvalues == "[-1, 1]" else 1.0)
    alpha = np.exp(-np.exp(f64(p.a_log))[:, None] * softplus(g))
    s_new, y = np.empty_like(f64(s)), np.empty((heads, d))
    for j in range(heads):
        qj = q[j] / np.sqrt(q[j] @ q[j] + 1e-6) / np.sqrt(d)
        kj = k[j] / np.sqrt(k[j] @ k[j] + 1e-6)
        state = f64(s)[j] @ np.diag(alpha[j])
        s_new[j] = state @ (np.eye(d) - beta[j] * np.outer(kj, kj)) + beta[j] * np.outer(v[j], kj)
        y[j] = s_new[j] @ qj
    return s_new, y.reshape(hs)


def _key_decay_step(s, q, k, v, log_alpha):
    """C = C diag(alpha) + v k^T, y = C q, per head: s (K, d_v, d_k)."""
    s_new = f64(s) * np.exp(log_alpha)[:, None, :] + v[:, :, None] * k[:, None, :]
    return s_new, np.einsum("kvd,kd->kv", s_new, q).reshape(-1)


def gla_step(cell, p, s, x):
    """GLA (Yang et al. 2024, eqs. 3-4), per head: q / sqrt(d_k), log alpha = log sigmoid(.) / tau per key ("key"),
    per head ("head", Simple GLA) or log(1 - 2^(-5-h)) ("fixed", RetNet); C = C diag(alpha) + v k^T, y = C q."""
    hs, heads, dk = cell.hidden_size, cell.num_heads, cell.key_size
    proj = f64(x) @ f64(p.input_kernel) + f64(p.bias)
    v = proj[:hs].reshape(heads, hs // heads)
    q = proj[hs : hs + heads * dk].reshape(heads, dk) / np.sqrt(dk)
    k = proj[hs + heads * dk : hs + 2 * heads * dk].reshape(heads, dk)
    if cell.decay == "fixed":
        log_alpha = np.log(1.0 - 2.0 ** (-5.0 - np.arange(heads)))[:, None]
    else:
        log_alpha = log_sigmoid(proj[hs + 2 * heads * dk :]).reshape(heads, -1) / cell.gate_normaliser
    return _key_decay_step(s, q, k, v, np.broadcast_to(log_alpha, (heads, dk)))


def hgrn2_step(cell, p, s, x):
    """HGRN2 (Qin et al. 2024, eqs. 9-10, as flash-linear-attention's layer), per head: f = b + (1 - b) sigmoid(.)
    with b the lower bound, k = 1 - f, q = swish(.) / sqrt(d_k); C = C diag(f) + v k^T, y = C q."""
    hs, heads, dk = cell.hidden_size, cell.num_heads, cell.key_size
    proj = f64(x) @ f64(p.input_kernel) + f64(p.bias)
    v = proj[:hs].reshape(heads, hs // heads)
    q_pre = proj[hs : hs + heads * dk]
    q = (q_pre * sigmoid(q_pre)).reshape(heads, dk) / np.sqrt(dk)
    f = cell.lower_bound + (1.0 - cell.lower_bound) * sigmoid(proj[hs + heads * dk :]).reshape(heads, dk)
    return _key_decay_step(s, q, 1.0 - f, v, np.log(f))


STEPS = {"rnn": rnn_step, "lstm": lstm_step, "gru": gru_step, "mingru": mingru_step, "minlstm": minlstm_step,
         "lru": lru_step, "rglru": rglru_step, "ssm": ssm_step, "slstm": slstm_step, "mlstm": mlstm_step,
         "ssd": ssd_step, "gated_deltanet": gated_deltanet_step, "deltanet": deltanet_step, "gla": gla_step,
         "hgrn2": hgrn2_step, "gated_deltaproduct": gated_deltaproduct_step,
         "kda": kda_step}  # fmt: skip


def step(cell, p, carry, x):
    """One reference step of any gated cell."""
    return STEPS[cell.name](cell, p, carry, x)


def run(cell, p, xs, carry, length=None, reverse=False):
    """Reference sequence run of ONE example: ``xs`` (T, D), ``carry`` leaves (H,).

    Steps at t >= length are padding: the carry is unchanged and the output is
    zero. ``reverse`` reads the valid prefix backwards. Returns the final
    carry, outputs (T, H) and per-step carries (lists over leaves).
    """
    num_steps = len(xs)
    length = num_steps if length is None else int(length)
    ys = np.zeros((num_steps, cell.output_size))
    is_lstm = cell.name == "lstm"
    carries = [np.zeros((num_steps, size)) for size in ((cell.output_size, cell.hidden_size) if is_lstm else
                                                        (cell.hidden_size,))]  # fmt: skip
    carry = tuple(f64(a) for a in carry) if is_lstm else f64(carry)
    order = range(length - 1, -1, -1) if reverse else range(length)
    for t in order:
        carry, y = step(cell, p, carry, xs[t])
        ys[t] = y
        for k, leaf in enumerate(carry if is_lstm else (carry,)):
            carries[k][t] = leaf
    return carry, ys, carries
