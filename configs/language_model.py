"""Byte-level language models of real text: the modern papers' named architectures at matched parameter counts.

    python -m experiments.main --config=configs/language_model.py --workdir=runs/lm/hawk
    python -m experiments.main --config=configs/language_model.py:mamba --workdir=runs/lm/mamba
    python -m experiments.main --config=configs/language_model.py --workdir=runs/lm/sweep --sweep

The text is the Python standard library's top-level source files (``task.path`` "" ; any UTF-8 file or folder
works), split into training and validation files by a hash of each file's name (``experiments.tasks.Text``).
Each architecture is data, the model keys of :data:`ARCHITECTURES`, about 1M parameters each at D = 128:

- ``hawk``: De et al. 2024's Hawk: residual blocks of Griffin's recurrent block (RG-LRU, H = D) and a GeGLU MLP
  (expansion 3), RMSNorm.
- ``mamba``: Gu & Dao 2023: residual Mamba blocks (selective SSM, E = 2D, N = 16), no MLP, RMSNorm.
- ``xlstm``: Beck et al. 2024's xLSTM[1:0]: residual mLSTM blocks (E = 2D, 4 heads), no MLP, LayerNorm.
- ``mingru``: Feng et al. 2024, section 4: residual minGRU layers (H = D) with an MLP (expansion 4) between them.
- ``gla``: Yang et al. 2024's GLA Transformer: residual blocks of gated linear attention (2 heads, keys half a
  head's size, the swish output gate and per-head RMSNorm) and a SwiGLU MLP (expansion 3.5), RMSNorm.
- ``hgrn2``: Qin et al. 2024's HGRN2: residual HGRN2 blocks (2 heads, state expansion a head's size, RMSNorm over
  the outputs, no output gate) and a SwiGLU MLP (expansion 3.625), RMSNorm.
- ``lstm``: Zaremba et al. 2014's language model: two stacked LSTM layers (H = D = 240) with dropout between layers
  and at both ends, no residual, no norm.

Training: Adam at 2e-3 (warm-up 50 steps, cosine decay), clipping at global norm 1, batches of 16 windows of 128
bytes, 400 steps (819,200 bytes, a fifth of the training split). The metric is validation bits per byte
(``bits_per_byte``): 8.0 at chance (uniform bytes). The sweep trains every architecture over 3 seeds (one program
per architecture).

No published number: the papers train far larger models on other text for billions of tokens (their bits per
byte on enwik8 or the Pile are near 1). Measured (``--sweep``, 2-core AMD EPYC, 2026-12-02; 3 seeds each, the mean
and its 95% t-interval; docs/language_model/): final validation bits per byte mamba 2.148 +- 0.130, xlstm 2.328 +-
0.107, mingru 2.361 +- 0.067, hawk 2.487 +- 0.041, lstm 2.629 +- 0.060. The sweep took 75 minutes, sharing the 2
cores with other jobs; alone, the measured step times give about 30 (mamba and xlstm 2.8k to 3.8k tokens/s, the
others 9k to 14k).
"""

from configs import base

ARCHITECTURES = {
    "hawk": dict(
        architecture="blocks",
        mixer="griffin",
        cell="rglru",
        width=128,
        hidden_size=128,
        num_layers=4,
        mlp="geglu",
        mlp_expansion=3.0,
        norm="rmsnorm",
        residual=True,
    ),
    "mamba": dict(
        architecture="blocks",
        mixer="mamba",
        cell="ssm",
        width=128,
        hidden_size=256,
        num_layers=4,
        options={"state_size": 16},
        mlp="none",
        norm="rmsnorm",
        residual=True,
    ),
    "xlstm": dict(
        architecture="blocks",
        mixer="mlstm",
        cell="mlstm",
        width=128,
        hidden_size=256,
        num_layers=2,
        options={"num_heads": 4, "output_gate": False},
        mlp="none",
        norm="layernorm",
        residual=True,
    ),
    "mingru": dict(
        architecture="blocks",
        mixer="cell",
        cell="mingru",
        width=128,
        hidden_size=128,
        num_layers=6,
        mlp="mlp",
        mlp_expansion=4.0,
        norm="layernorm",
        residual=True,
    ),
    "gla": dict(
        architecture="blocks",
        mixer="linear_attention",
        cell="gla",
        width=128,
        hidden_size=128,
        num_layers=4,
        options={"num_heads": 2},
        mlp="swiglu",
        mlp_expansion=3.5,
        norm="rmsnorm",
        residual=True,
    ),
    "hgrn2": dict(
        architecture="blocks",
        mixer="linear_attention",
        cell="hgrn2",
        width=128,
        hidden_size=128,
        num_layers=4,
        options={"num_heads": 2},
        mlp="swiglu",
        mlp_expansion=3.625,
        norm="rmsnorm",
        residual=True,
    ),
    "lstm": dict(
        architecture="blocks",
        mixer="cell",
        cell="lstm",
        width=240,
        hidden_size=240,
        num_layers=2,
        mlp="none",
        norm="none",
        residual=False,
        dropout=0.1,
    ),
}


def model_keys(name: str) -> dict:
    """The ``model`` keys of architecture ``name``, dotted (``{"model.mixer": "griffin", ...,
    "model.options.state_size": 16}``), for a sweep (whose run names they make)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture: expected one of {sorted(ARCHITECTURES)}, got {name!r}")
    # every model key some architecture sets, so that no sweep point inherits the default architecture's value
    defaults = base.get_config().model
    keys = {k: defaults[k] for a in ARCHITECTURES.values() for k in a if k != "options"}
    keys.update(ARCHITECTURES[name])
    options = keys.pop("options", {})
    return {**{f"model.{k}": v for k, v in keys.items()}, **{f"model.options.{k}": v for k, v in options.items()}}


def get_config(name: str = "hawk"):
    config = base.task_config(dict(name="text", length=128, path=""), steps=400, batch_size=16)
    config.optimizer.update(learning_rate=2e-3, warmup_steps=50)
    config.train.update(log_every=25, eval_every=100, eval_batch_size=64, checkpoint_every=100)
    for dotted, value in model_keys(name).items():
        section, key = dotted.removeprefix("model.").rpartition(".")[::2]
        (config.model.options if section == "options" else config.model)[key] = value
    return config


def sweep():
    return [{**model_keys(name), "seed": seed} for name in ARCHITECTURES for seed in range(3)]
