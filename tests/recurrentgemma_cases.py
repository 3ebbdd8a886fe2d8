"""The cases run through ``recurrentgemma``'s JAX RecurrentBlock (its own randomly initialised module, no weights
downloaded): by the live test when recurrentgemma is installed, and by tests/fixtures/make_recurrentgemma_golden.py
for the committed fixture."""

import numpy as np

B, T, D, H, HEADS = 2, 10, 8, 12, 3
# segment_pos of each case: one sequence; two segments (a reset at step 4) in the first example only.
SEGMENTS = {
    "one": np.tile(np.arange(T), (B, 1)),
    "resets": np.stack([np.r_[np.arange(4), np.arange(T - 4)], np.arange(T)]),
}
DECODE_FROM = 6  # the decoding case: a prompt of 6 tokens, then one token from the cache


def run_recurrentgemma(seed: int) -> dict[str, np.ndarray]:
    """float32 parameters (flattened keys ``params/linear_x/kernel``...), inputs, outputs and caches."""
    import jax
    import jax.numpy as jnp
    import recurrentgemma.jax as rg

    with jax.numpy_rank_promotion("allow"):  # recurrentgemma broadcasts by rank promotion; the suite raises on it
        return _run(jax, jnp, rg, seed)


def _run(jax, jnp, rg, seed):
    block = rg.RecurrentBlock(width=D, num_heads=HEADS, lru_width=H)
    x = jax.random.normal(jax.random.key(seed), (B, T, D), jnp.float32)
    variables = block.init(jax.random.key(seed + 1), x, jnp.asarray(SEGMENTS["one"]))
    out = {"x": np.asarray(x)}
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"]):
        out["params/" + "/".join(k.key for k in path)] = np.asarray(leaf)
    for name, pos in SEGMENTS.items():
        ys, cache = block.apply(variables, x, jnp.asarray(pos))
        out[f"{name}/ys"], out[f"{name}/lru"], out[f"{name}/conv"] = map(np.asarray, (ys, *cache))
    _, prompt = block.apply(variables, x[:, :DECODE_FROM], jnp.asarray(SEGMENTS["one"][:, :DECODE_FROM]))
    y, cache = block.apply(variables, x[:, DECODE_FROM : DECODE_FROM + 1],
                           jnp.asarray(SEGMENTS["one"][:, DECODE_FROM : DECODE_FROM + 1]), cache=prompt)  # fmt: skip
    out["decode/ys"], out["decode/lru"], out["decode/conv"] = map(np.asarray, (y, *cache))
    return out


def nested(record: dict) -> dict:
    """The ``params/...`` entries of a record as recurrentgemma's nested parameter dict."""
    params = {}
    for key, value in record.items():
        if key.startswith("params/"):
            *parents, leaf = key.removeprefix("params/").split("/")
            node = params
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
    return params
