"""Every input refused or served: generated inputs to the cells' constructors, ``gated.run`` and the config
validation either give the reference path's result or raise a ValueError/TypeError naming the argument; padded steps
contribute nothing whatever they hold; every option of every cell is reachable from the command line.

The property tests draw a bounded number of examples in the fast tier and more in the slow tier, derandomized so
that every run draws the same examples.
"""

import dataclasses
import math
import re
import sys

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import gated
from experiments import config as config_lib
from tests.conftest import random_carry, random_params

# Examples per property test: the fast tier's, and the slow tier's.
EXAMPLES = [pytest.param(12, id="fast"), pytest.param(40, id="slow", marks=pytest.mark.slow)]


def _settings(examples):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))  # fmt: skip


def _names_the_argument(err: Exception, *names: str) -> bool:
    return any(re.search(rf"(^|[\s.(\[']){re.escape(n)}[:\s'=\]]", str(err)) for n in names)


# ---------------------------------------------------------------------------------------------------------------
# The cells' constructors


def _option_fields(cls):
    return [f for f in dataclasses.fields(cls) if "check" in f.metadata]


# Values of every kind a user or a config may pass: valid and invalid, Python, NumPy and JAX scalars.
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(["", "1", "tanh", "keep", "write", "before", "after", "orthogonal", "gaussian", "relu"]),
    st.integers(-3, 40).map(np.int64),
    st.integers(1, 40).map(jnp.int32),
    st.floats(0.001, 0.99).map(np.float32),
    st.booleans().map(np.bool_),
    st.just(np.array([1, 2])),
)


def _valid(field, value) -> bool:
    """What :mod:`gated.options` accepts for ``field``, written out independently of it."""
    meta = field.metadata
    kw = meta["check"].keywords
    if value is None:
        return meta["optional"]
    is_bool = isinstance(value, bool | np.bool_)
    if meta["type"] is bool:
        return is_bool
    if meta["type"] is str:
        return isinstance(value, str) and value in kw["choices"]
    if is_bool or isinstance(value, str) or np.ndim(value) != 0:
        return False
    if meta["type"] is int:
        return not isinstance(value, float | np.floating) and int(value) >= kw.get("minimum", 1)
    x = float(value)
    low, high = kw.get("low", -math.inf), kw.get("high", math.inf)
    above = x > low if kw.get("low_open") else x >= low
    below = x < high if kw.get("high_open") else x <= high
    return math.isfinite(x) and above and below


@pytest.mark.parametrize("examples", EXAMPLES)
@pytest.mark.parametrize("name", list(gated.cells.CELLS))
def test_cell_constructors_take_valid_options_and_refuse_the_rest_by_name(name, examples):
    cls = gated.cells.CELLS[name]
    fields = _option_fields(cls)

    @_settings(examples)
    @given(st.data())
    def check(data):
        chosen = data.draw(st.lists(st.sampled_from(fields), max_size=3, unique_by=lambda f: f.name))
        values = {f.name: data.draw(ANY_VALUE, label=f.name) for f in chosen}
        values.setdefault("hidden_size", 4)
        hidden = values.pop("hidden_size")
        valid = all(_valid(f, values.get(f.name, hidden)) for f in chosen)
        try:
            cell = gated.cells.get(name, hidden, **values)
        except (TypeError, ValueError) as err:
            names = [f.name for f in chosen] + ["r_min, r_max", "a_min, a_max", "dt_min, dt_max", "coupled=True"]
            assert _names_the_argument(err, *names) or str(err).startswith(tuple(names)), err
            return
        assert valid, f"accepted {values} (hidden_size {hidden!r})"
        for f in _option_fields(cls):  # normalised to the Python type: hashable, printable, JSON-able
            value = getattr(cell, f.name)
            assert value is None or type(value) is f.metadata["type"], (f.name, value)
        hash(cell)
        jax.eval_shape(lambda k: cell.init(k, 3), jax.random.key(0))

    check()


def test_the_reported_bad_options_are_refused_and_numpy_sizes_taken():
    refused = [
        (lambda: gated.cells.LSTM(8, forget_bias=float("nan")), r"forget_bias: expected a finite number, got nan"),
        (lambda: gated.cells.LSTM(8, forget_bias="1"), r"forget_bias: expected a finite number, got '1'"),
        (lambda: gated.cells.SelectiveSSM(8, dt_max=float("inf")), r"dt_max: expected a finite number > 0, got inf"),
        (lambda: gated.cells.RNN(8, recurrent_scale=True), r"recurrent_scale: expected a finite number, got True"),
        (lambda: gated.cells.MLSTM(8, num_heads=np.int64(3)), r"num_heads: expected a positive int dividing"),
        (lambda: gated.cells.LSTM(8).init(jax.random.key(0), 2.5), r"input_size: expected a positive int, got 2.5"),
    ]
    for make, message in refused:
        with pytest.raises(ValueError, match=message):
            make()
    cell = gated.cells.LSTM(np.int64(8), forget_bias=np.float32(2.0), peepholes=np.bool_(True))
    assert cell == gated.cells.LSTM(8, forget_bias=2.0, peepholes=True)
    assert type(cell.hidden_size) is int and type(cell.forget_bias) is float
    assert gated.cells.SelectiveSSM(jnp.int32(4), state_size=np.int16(3)).carry_shape == (4, 3)
    params = cell.init(jax.random.key(0), np.int64(3))
    assert params.input_kernel.shape == (3, 32)


def test_layers_refuse_what_is_not_a_layer_and_take_numpy_scalars():
    lstm = gated.cells.LSTM(4)
    with pytest.raises(TypeError, match=r"layers\[1\]: expected a cell or a layer .* got str 'gru'"):
        gated.Stack([lstm, "gru"])
    with pytest.raises(TypeError, match=r"residual: expected a bool, got 1"):
        gated.Stack([lstm], residual=1)
    with pytest.raises(TypeError, match=r"forward: expected a cell or a gated.Recurrent layer, got str"):
        gated.Bidirectional("lstm")
    with pytest.raises(TypeError, match=r"backward: expected a cell or a gated.Recurrent layer, got Stack"):
        gated.Bidirectional(lstm, gated.Stack([lstm]))
    with pytest.raises(TypeError, match=r"time_axis: expected an int, got 1.0"):
        gated.run(lstm, lstm.init(jax.random.key(0), 3), jnp.zeros((2, 5, 3)), time_axis=1.0)
    layer = gated.Recurrent(lstm, unroll=np.int64(2), reverse=np.bool_(True))
    assert layer.unroll == 2 and layer.reverse is True
    _, ys = layer(layer.init(jax.random.key(0), np.int64(3)), jnp.zeros((2, 5, 3)), time_axis=np.int64(1))
    assert ys.shape == (2, 5, 4)


def test_the_config_schema_is_every_option_of_every_cell():
    assert len(OPTIONS) >= 32  # every option of the ten cells: the command-line test below sets each
    schema = config_lib.base_config().model.options
    for cls in gated.cells.CELLS.values():
        for f in _option_fields(cls):
            if f.name != "hidden_size":
                assert schema.get_type(f.name) is f.metadata["type"], f.name


# ---------------------------------------------------------------------------------------------------------------
# gated.run

RUN_CELLS = {
    "rnn": {},
    "lstm": {"peepholes": True},
    "gru": {"reset": "before"},
    "mingru": {"log_space": True},
    "minlstm": {},
    "lru": {},
    "rglru": {},
    "ssm": {"state_size": 2},
    "mlstm": {"num_heads": 2},
    "ssd": {"num_heads": 2, "state_size": 2},
    "gated_deltanet": {"num_heads": 2},
    "slstm": {},
}


@st.composite
def run_cases(draw):
    name = draw(st.sampled_from(sorted(RUN_CELLS)))
    cell = gated.cells.get(name, 4, **RUN_CELLS[name])
    dtype = draw(st.sampled_from([jnp.float32, jnp.float64]))
    steps = draw(st.integers(0, 6))
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    kwargs = {}
    if batch and draw(st.booleans()):
        low, past = draw(st.sampled_from([0, 0, 0, -1])), draw(st.integers(0, 3)) == 3  # sometimes out of [0, T]
        kwargs["lengths"] = jnp.asarray(rng.integers(low, steps + 1 + past, batch))
    if draw(st.booleans()):
        kwargs["resets"] = jnp.asarray(rng.random((steps, *batch)) < 0.3)
    if draw(st.booleans()):
        carry = random_carry(cell, jax.random.key(seed), batch, dtype)
        if name == "slstm":
            carry = carry._replace(n=jnp.abs(carry.n) + 1.0)  # a normaliser is positive
        kwargs["carry"] = jax.tree.map(jnp.abs, carry) if getattr(cell, "log_space", False) else carry
    kwargs["reverse"] = draw(st.booleans())
    kwargs["impl"] = draw(st.sampled_from(gated.scan.IMPLS))
    ndim = 2 + len(batch)
    kwargs["chunk"], kwargs["unroll"], kwargs["time_axis"] = draw(st.integers(1, 4)), draw(st.integers(1, 3)), 0
    kwargs["time_axis"] = draw(st.sampled_from([0, ndim - 2, -2]))
    broken = draw(st.sampled_from([None] * 12 + ["chunk", "unroll", "time_axis", "reverse"]))
    if broken is not None:  # one argument of a wrong type or out of range
        bad = {"chunk": [0, -2, 2.0, True], "unroll": [0, 1.5, "2"], "time_axis": [ndim - 1, ndim, 0.0],
               "reverse": [1, "no"]}  # fmt: skip
        kwargs[broken] = draw(st.sampled_from(bad[broken]))
    xs = jnp.asarray(rng.standard_normal((steps, *batch, 3)), dtype)
    axis = kwargs["time_axis"]
    if isinstance(axis, int) and -ndim <= axis < ndim - 1:  # xs and resets laid out with time on that axis
        xs = jnp.moveaxis(xs, 0, axis)
        if "resets" in kwargs:
            kwargs["resets"] = jnp.moveaxis(kwargs["resets"], 0, axis % ndim)
    return cell, random_params(cell, jax.random.key(seed + 1), 3, dtype), xs, kwargs


@pytest.mark.parametrize("examples", EXAMPLES)
def test_run_gives_the_reference_result_or_names_the_argument(examples):
    @_settings(examples)
    @given(run_cases())
    def check(case):
        cell, params, xs, kwargs = case
        try:
            result = gated.run(cell, params, xs, **kwargs)
        except (TypeError, ValueError) as err:
            assert _names_the_argument(err, *kwargs, "xs"), err
            return
        served.append(cell.name)
        expected = gated.run(cell, params, xs, **{**kwargs, "impl": "reference"})
        tol = 1e-9 if xs.dtype == jnp.float64 else 2e-4
        for a, b in zip(jax.tree.leaves(result), jax.tree.leaves(expected), strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)

    served = []
    check()
    assert len(served) >= examples // 4, f"only {len(served)} of {examples} examples ran"


# ---------------------------------------------------------------------------------------------------------------
# Padded steps


def _nan_padding_case(name, options):
    cell = gated.cells.get(name, 4, **options)
    params = random_params(cell, jax.random.key(0), 3, jnp.float64)
    lengths = jnp.array([5, 2, 0])
    valid = (jnp.arange(5)[:, None] < lengths[None, :])[..., None]
    xs = jax.random.normal(jax.random.key(1), (5, 3, 3), jnp.float64)
    return cell, params, lengths, jnp.where(valid, xs, 0.0), jnp.where(valid, xs, jnp.nan)


PADDING_CASES = [
    ("lstm", {}, "auto"),  # the fused kernel
    ("gru", {}, "reference"),
    ("mingru", {}, "associative"),
    pytest.param("rnn", {}, "fused", marks=pytest.mark.slow),
    pytest.param("gru", {"update": "write"}, "auto", marks=pytest.mark.slow),
    pytest.param("lstm", {"peepholes": True}, "reference", marks=pytest.mark.slow),
    pytest.param("mingru", {"log_space": True}, "chunked", marks=pytest.mark.slow),
    pytest.param("lru", {}, "auto", marks=pytest.mark.slow),
    pytest.param("rglru", {}, "chunked", marks=pytest.mark.slow),
    pytest.param("ssm", {"state_size": 2}, "associative", marks=pytest.mark.slow),
    pytest.param("mlstm", {"num_heads": 2}, "associative", marks=pytest.mark.slow),
    pytest.param("slstm", {}, "auto", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, options, impl", PADDING_CASES)
@pytest.mark.parametrize("reverse", [False, True])
def test_nan_in_padded_steps_reaches_no_value_or_gradient(name, options, impl, reverse):
    """The defect: with ``lengths`` masking NaN steps the forward pass was finite but every parameter gradient NaN
    (the where-gradient trap). Now the values and gradients equal those of zero padding exactly."""
    cell, params, lengths, zero_padded, nan_padded = _nan_padding_case(name, options)
    weights = jax.random.normal(jax.random.key(2), (5, 3, 4), jnp.float64)

    @jax.jit
    def value_and_grads(xs):
        def loss(p, x):
            carry, ys = gated.run(cell, p, x, lengths=lengths, reverse=reverse, impl=impl)
            return jnp.sum(weights * ys) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(carry))

        return jax.value_and_grad(loss, argnums=(0, 1))(params, xs)

    (value, (g_params, g_xs)), (value0, (g_params0, g_xs0)) = value_and_grads(nan_padded), value_and_grads(zero_padded)
    assert np.isfinite(value) and value == value0
    for a, b in zip(jax.tree.leaves(g_params), jax.tree.leaves(g_params0), strict=True):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(g_xs, g_xs0)  # zero at every padded step


# ---------------------------------------------------------------------------------------------------------------
# Config validation

TINY = {"model.hidden_size": 4, "task.length": 6, "train.steps": 4, "train.batch_size": 4, "train.log_every": 2,
        "train.eval_batch_size": 8}  # fmt: skip


def _keys(config, prefix=""):
    for k, v in config.items():
        if isinstance(v, ml_collections.ConfigDict):
            yield from _keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


CONFIG_KEYS = sorted(_keys(config_lib.override(config_lib.base_config(), TINY)))
CELL_NAMES = st.sampled_from([*gated.cells.CELLS, "transformer"])


@pytest.mark.parametrize("examples", EXAMPLES)
def test_config_validation_builds_the_run_or_names_the_key(examples):
    @_settings(examples)
    @given(st.dictionaries(st.sampled_from(CONFIG_KEYS), ANY_VALUE, max_size=3), CELL_NAMES)
    def check(updates, cell):
        updates = {**TINY, "model.cell": cell, **{k: v.item() if isinstance(v, np.generic) else v
                                                  for k, v in updates.items()}}  # fmt: skip
        try:
            config = config_lib.override(config_lib.base_config(), updates)
        except TypeError as err:  # the ConfigDict's own type check: a value of another type than the key's
            assert any(k.split(".")[-1] in str(err) for k in updates), err
            return
        try:
            spec = config_lib.validate(config)
        except config_lib.ConfigError as err:
            assert str(err).startswith("config."), err
            return
        assert spec.cell.name == config.model.cell and spec.model.layers[0] is not None

    check()


def test_the_reported_bad_configs_are_refused():
    base = config_lib.override(config_lib.base_config(), TINY)
    cases = [
        ({"optimizer.schedule": "warmup_cosine", "optimizer.warmup_steps": 100}, r"warmup_steps: expected at most"),
        ({"optimizer.warmup_steps": 3}, r"warmup_steps: expected 0: schedule 'constant' has no warm-up"),
        ({"model.options.forget_bias": float("nan")}, r"config.model: forget_bias: expected a finite number, got nan"),
        ({"model.cell": "gru", "model.options.update": "add"}, r"config.model: update: expected 'keep' or 'write'"),
    ]
    for updates, message in cases:
        with pytest.raises(config_lib.ConfigError, match=message):
            config_lib.validate(config_lib.override(base, updates))
    with pytest.raises(ValueError, match=r"unroll: expected a positive int, got 0"):
        gated.Recurrent(gated.cells.LSTM(4), unroll=0)
    cell = gated.cells.LSTM(4)
    with pytest.raises(ValueError, match=r"unroll: expected a positive int, got 0"):
        gated.run(cell, cell.init(jax.random.key(0), 3), jnp.zeros((2, 3)), unroll=0)


# ---------------------------------------------------------------------------------------------------------------
# The command line: every option of every cell, set once


def _other_value(field, hidden_size):
    """A valid value of ``field`` other than its default, from its check's own bounds."""
    kw, kind, default = field.metadata["check"].keywords, field.metadata["type"], field.default
    if kind is bool:
        return not default
    if kind is str:
        return next(c for c in kw["choices"] if c != default)
    if kind is int:
        if field.name == "num_heads":
            return 2  # divides the hidden size
        return (default or kw.get("minimum", 1)) + 7
    low, high = kw.get("low", -math.inf), kw.get("high", math.inf)
    if math.isinf(low) and math.isinf(high):
        return default + 1.0
    near = high if high - default < default - low else low
    near = low if default == near and math.isfinite(low) else near
    return (default + (near if math.isfinite(near) else default * 3)) / 2


OPTIONS = [(name, f) for name, cls in gated.cells.CELLS.items() for f in _option_fields(cls) if f.name != "hidden_size"]


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # config_flags loading a config
@pytest.mark.parametrize("name, field", OPTIONS, ids=[f"{n}.{f.name}" for n, f in OPTIONS])
def test_every_option_of_every_cell_is_set_from_the_command_line(name, field, monkeypatch):
    from absl import flags
    from ml_collections import config_flags

    from experiments import main

    value = _other_value(field, 64)
    text = str(value).lower() if isinstance(value, bool) else str(value)
    argv = ["main", "--config=configs/adding.py", "--workdir=unused", f"--config.model.cell={name}",
            f"--config.model.options.{field.name}={text}"]  # fmt: skip
    flag_values = flags.FlagValues()
    flag = config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True)
    flags.DEFINE_string("workdir", None, "", flag_values=flag_values)
    monkeypatch.setattr(sys, "argv", argv)
    main.parse_flags(argv, flag_values, flag)
    spec = config_lib.validate(flag.value)
    assert getattr(spec.cell, field.name) == value and spec.cell.name == name


def test_a_shadowed_option_from_the_command_line_keeps_its_type():
    from experiments import main

    kept, shadowed = main.split_shadowed(["main", "--config.model.options.update", "write", "--config.seed=3"])
    assert kept == ["main", "--config.seed=3"] and shadowed == [("model.options.update", "write")]
    config = config_lib.base_config()
    main.set_override(config, "model.options.update", "write")
    assert config.model.options["update"] == "write"
    with pytest.raises(KeyError, match="model.options.nope: no such key"):
        main.set_override(config, "model.options.nope", "1")
    with pytest.raises(KeyError, match="model.options.eigenvalue: no such key in the config; did you mean 'eigenva"):
        main.set_override(config, "model.options.eigenvalue", "[-1, 1]")


@pytest.mark.parametrize("name", ["gru", "mingru"])
def test_an_empty_sequence_with_resets_is_served(name):
    """Found by the property test above: T = 0 with ``resets`` failed inside JAX (an index into a length-0 axis)."""
    cell = gated.cells.get(name, 4)
    params = cell.init(jax.random.key(0), 3)
    for impl in ("auto", "reference"):
        carry, ys = gated.run(cell, params, jnp.zeros((0, 2, 3)), resets=jnp.zeros((0, 2), bool), impl=impl)
        assert ys.shape == (0, 2, 4) and jax.tree.leaves(carry)[0].shape == (2, 4)


@pytest.mark.parametrize("name", ["mingru", "minlstm", "lru", "rglru", "ssm", "mlstm"])
def test_cells_without_a_recurrent_matrix_refuse_its_options(name):
    """The defect: the linear cells took recurrent_init and recurrent_scale and ignored them."""
    for option, value in (("recurrent_scale", 2.0), ("recurrent_init", "identity")):
        with pytest.raises(TypeError, match=rf"{name} cell: unknown option\(s\) \['{option}'\]"):
            gated.cells.get(name, 4, **{option: value})
    assert not hasattr(gated.cells.get(name, 4), "recurrent_scale")
