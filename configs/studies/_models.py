"""The studies' models, data only (it imports nothing): each cell in its paper's block as engine keys, the papers'
stacks, the LSTM variants, what each model of the recall study grows, and the names the figures and reports print.

The modern chapter's studies (``experiments/studies/modern.py``: 12 selectivity, 13 recall, 14 state tracking) read
:data:`BLOCKS`; study 8 (``experiments/studies/long_lags.py``) :data:`STACKS` and :data:`LSTM_VARIANTS`. A study names
its models by these keys in its config (``models=("mingru", "hawk", ...)``), and a stored result by the same keys, so
a figure redrawn from it reads the same rows.
"""

# Each cell in its paper's block (engine keys of ``model.architecture = "blocks"``), at the study's width D: residual
# pre-norm blocks, but the classic RNNs', which are Zaremba et al.'s plain stacks.
BLOCKS = {
    "rnn": {
        "model.mixer": "cell",
        "model.cell": "rnn",
        "model.mlp": "none",
        "model.norm": "none",
        "model.residual": False,
    },
    "lstm": {
        "model.mixer": "cell",
        "model.cell": "lstm",
        "model.mlp": "none",
        "model.norm": "none",
        "model.residual": False,
    },
    "slstm": {
        "model.mixer": "slstm",
        "model.cell": "slstm",
        "model.mlp": "geglu",
        "model.mlp_expansion": 4 / 3,
        "model.norm": "layernorm",
        "model.residual": True,
        "model.heads": 2,
    },
    "mingru": {
        "model.mixer": "cell",
        "model.cell": "mingru",
        "model.mlp": "mlp",
        "model.norm": "layernorm",
        "model.residual": True,
    },
    "lru": {
        "model.mixer": "cell",
        "model.cell": "lru",
        "model.mlp": "glu",
        "model.mlp_expansion": 2.0,
        "model.norm": "layernorm",
        "model.residual": True,
    },
    "hawk": {
        "model.mixer": "griffin",
        "model.cell": "rglru",
        "model.mlp": "geglu",
        "model.mlp_expansion": 3.0,
        "model.norm": "rmsnorm",
        "model.residual": True,
    },
    "mamba": {
        "model.mixer": "mamba",
        "model.cell": "ssm",
        "model.mlp": "none",
        "model.norm": "rmsnorm",
        "model.residual": True,
        "model.options.state_size": 16,
    },
    "mlstm": {
        "model.mixer": "mlstm",
        "model.cell": "mlstm",
        "model.mlp": "none",
        "model.norm": "layernorm",
        "model.residual": True,
        "model.options.num_heads": 2,
        "model.options.output_gate": False,
    },
}
BLOCKS["s4d"] = {**BLOCKS["mamba"], "model.options.selective": False}  # Mamba's block, time-invariant (S4D's)
EXPANDED = ("mamba", "s4d", "mlstm")  # blocks whose cell has twice the model's width

# The papers' stacks (engine block models, width and cells of hidden_size): Feng et al. 2024's two minGRU layers with
# an MLP after each (section 4), and De et al. 2024's Hawk (two Griffin recurrent blocks with RG-LRUs and GeGLU MLPs).
STACKS = {
    "mingru_stack": {
        "model.architecture": "blocks",
        "model.mixer": "cell",
        "model.cell": "mingru",
        "model.num_layers": 2,
        "model.mlp": "mlp",
        "model.mlp_expansion": 4.0,
        "model.norm": "layernorm",
        "model.residual": True,
    },
    "hawk_stack": {
        "model.architecture": "blocks",
        "model.mixer": "griffin",
        "model.cell": "rglru",
        "model.num_layers": 2,
        "model.mlp": "geglu",
        "model.mlp_expansion": 3.0,
        "model.norm": "rmsnorm",
        "model.residual": True,
    },
}

# The LSTM variants of study 8 (Greff et al. 2017's, and the forget gate's bias): each the cell's options.
LSTM_VARIANTS = {
    "cell": "lstm",
    "options": {
        "lstm": {},
        "no_forget_gate": {"model.options.forget_gate": False},
        "cifg": {"model.options.coupled": True},
        "peepholes": {"model.options.peepholes": True},
        "forget_bias_0": {"model.options.forget_bias": 0.0},
        "forget_bias_3": {"model.options.forget_bias": 3.0},
    },
}

# Study 13: what each model's state grows with, the study config's key of its sizes: the cell's width ("widths"), the
# SSM's state size N at a fixed width ("state_sizes") or the mLSTM's number of heads at a fixed width ("heads").
RECALL_SCALES = {"mingru": "widths", "mamba": "state_sizes", "mlstm": "heads"}

# The name a figure, table or claim prints for a cell, a block or a stack.
LABELS = {
    "rnn": "tanh RNN",
    "lstm": "LSTM",
    "gru": "GRU",
    "mingru": "minGRU",
    "minlstm": "minLSTM",
    "lru": "LRU",
    "rglru": "RG-LRU",
    "slstm": "sLSTM",
    "mlstm": "mLSTM",
    "ssm": "selective SSM",
    "hawk": "Hawk (RG-LRU)",
    "mamba": "Mamba (selective SSM)",
    "s4d": "time-invariant SSM (Mamba block)",
    "mingru_stack": "2 minGRU layers + MLPs",
    "hawk_stack": "Hawk (2 blocks)",
}
