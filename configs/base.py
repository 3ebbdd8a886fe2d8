"""What every config starts from, as the Flax examples' ``configs/default.py``: imports nothing but ml_collections.

- :func:`get_config`: every key of a training config with its default. ``model.options`` is empty: a config sets
  only the cell options it changes (``config.model.options.forget_bias = 2.0``); the others keep the cell's default.
  The schema of the options is the cells' own fields (``gated.cells.option_types()``), not written here.
- :func:`task_config`: the task configs' shared training (Adam at 3e-3 with a linear warm-up of 100 steps and a
  cosine decay, clipping at global norm 1, a test evaluation every 250 steps) for one task.
- :func:`sized`: a study config at one of its sizes (``tiny`` for the tests, ``default``, ``paper``).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """Every key of a training config with its default (the schema a config is checked against)."""
    return ml_collections.ConfigDict(
        dict(
            seed=0,
            model=dict(
                cell="lstm",
                hidden_size=64,
                num_layers=1,
                bidirectional=False,
                residual=False,
                impl="auto",
                # The cell options this config sets; unset ones keep the cell's default, one the cell lacks is refused.
                options=ml_collections.ConfigDict(),
                # "layers": the cells' recurrent layers (num_layers, bidirectional, residual) and a dense readout;
                # "blocks": a gated.models.Model of num_layers blocks, built from the keys below.
                architecture="layers",
                mixer="cell",  # blocks: "cell" (a recurrent layer), "griffin", "mamba", "mlstm", "slstm"
                width=64,  # blocks: the model width D (the cell's width is hidden_size)
                mlp="none",  # blocks: a residual MLP after each mixer: "none", "mlp" or a gated one ("geglu", ...)
                mlp_expansion=4.0,  # blocks: the MLP's hidden width over D
                norm="rmsnorm",  # blocks: the residual blocks' pre-norm and the final norm, or "none"
                conv_width=4,  # blocks: the mixers' causal convolution
                heads=4,  # blocks: the sLSTM block's head norm groups
                dropout=0.0,  # blocks: on residual branches, or (residual False) between layers and at both ends
                tie_embeddings=False,  # blocks, token tasks: the head is the embedding's transpose
                dtype="float32",  # the compute dtype ("bfloat16": parameters and optimiser stay float32)
            ),
            task=dict(name="adding", length=100),
            optimizer=dict(
                name="adam",
                learning_rate=1e-3,
                momentum=0.9,
                weight_decay=1e-4,
                clip="global_norm",
                clip_threshold=1.0,
                schedule="constant",
                warmup_steps=0,
            ),
            train=dict(
                steps=1000, batch_size=64, log_every=50, eval_every=0, eval_batch_size=512, checkpoint_every=500
            ),
        )
    )


def task_config(task: dict, *, steps: int, batch_size: int) -> ml_collections.ConfigDict:
    """A task config: ``task`` (its ``name`` and the task's options) trained for ``steps`` steps of ``batch_size``
    with linear warm-up, then a cosine decay to 0 at the last step (the final parameters are not a spike)."""
    config = get_config()
    config.task = ml_collections.ConfigDict(task)
    config.optimizer.update(learning_rate=0.003, schedule="warmup_cosine", warmup_steps=100)
    config.train.update(steps=steps, batch_size=batch_size, eval_every=250)
    return config


def sized(config: dict, sizes: dict[str, dict], size: str) -> ml_collections.ConfigDict:
    """A study config: ``config`` (the default size) updated by ``sizes[size]``; an unknown size is refused, and
    a size may only change keys the config has."""
    if size not in sizes:
        raise ValueError(f"size: expected one of {sorted(sizes)}, got {size!r}")
    config = ml_collections.ConfigDict(config)
    unknown = sorted(set(sizes[size]) - set(config.keys()))
    if unknown:
        raise ValueError(f"size {size!r}: {unknown[0]} is not a key of study {config.get('study')!r}")
    config.update(sizes[size])
    return config


def modern_training(**changes) -> dict:
    """The training keys the modern chapter's studies share (12 selectivity, 13 recall, 14 state tracking): 8 seeds,
    2 layers, 800 Adam steps of batches of 16 at a peak learning rate of 3e-3 after 50 warm-up steps, test batches
    of 256; ``changes`` sets a study's own values."""
    keys = dict(seeds=8, num_layers=2, steps=800, batch_size=16, learning_rate=3e-3, warmup_steps=50)
    return {**keys, "eval_batch_size": 256, **changes}


def lag_study(study: str, size: str, *, tiny: dict, **keys) -> ml_collections.ConfigDict:
    """A study of the gradient against the lag (``rnn_lag``, ``lstm_lag``, ``gru_lag``, ``lstm_exploding``): H = 64
    units, T = 100 steps, batches of 32 and 8 seeds, then the study's own ``keys``; at ``size`` ("tiny": 4 units,
    6 steps, 2 examples, 1 seed, 2 training steps, and the study's ``tiny`` keys; "paper": 128 units, 200 steps,
    batches of 128, 5000 training steps)."""
    config = dict(study=study, hidden_size=64, length=100, batch_size=32, seeds=8, **keys)
    sizes = {
        "tiny": {"hidden_size": 4, "length": 6, "batch_size": 2, "seeds": 1, "train_steps": 2, **tiny},
        "default": {},
        "paper": {"hidden_size": 128, "length": 200, "batch_size": 128, "seeds": 8, "train_steps": 5000},
    }
    return sized(config, sizes, size)
