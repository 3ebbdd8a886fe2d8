"""A group's checkpoint: the training state and the metrics so far in one file (``flax.serialization``, msgpack),
so that no crash can leave them out of step; written by :func:`experiments.workdir.write_keeping_previous`, which
keeps the one before it and a SHA-256 of each."""

from __future__ import annotations

import pathlib

import jax
import numpy as np
from flax import serialization

from . import loop
from . import workdir as workdir_lib


def is_writer() -> bool:
    """Only process 0 of a multi-process run writes the workdir."""
    return jax.process_index() == 0


def save(path: pathlib.Path, progress: loop.Progress) -> None:
    """The checkpoint: state and metrics in one file, so that no crash can leave them out of step. The one before
    it is kept (:func:`experiments.workdir.write_keeping_previous`) until this one is whole."""
    state = serialization.to_state_dict(loop.fetch(progress.states))
    data = serialization.msgpack_serialize(
        {"state": state, "history": progress.history, "evaluations": progress.evaluations}
    )
    if is_writer():
        workdir_lib.write_keeping_previous(path, data)


# The parameters of the engine's classic layer-and-readout model before it was a gated.models.Model (its own
# ModelParams), and how they map onto the Model's: a checkpoint written then resumes.
_LAYER_MODEL = {"recurrent", "readout_kernel", "readout_bias"}


def _upgrade(state):
    """``state`` with every old layer-model parameter tree (:data:`_LAYER_MODEL`) as the Model's."""
    if isinstance(state, dict):
        if set(state) == _LAYER_MODEL:
            head = {"kernel": state["readout_kernel"], "bias": state["readout_bias"]}
            return {"embedding": None, "layers": {"0": _upgrade(state["recurrent"])}, "final_norm": None, "head": head}
        return {k: _upgrade(v) for k, v in state.items()}
    return state


def restore(path: pathlib.Path, template: loop.Progress, sharding) -> loop.Progress:
    """The checkpoint at ``path`` in the structure of ``template``.

    Raises:
      WorkdirError: a checkpoint of another structure (another model's parameters), naming the file.
    """
    data = serialization.msgpack_restore(workdir_lib.read_checkpoint(path))
    try:
        states = serialization.from_state_dict(loop.fetch(template.states), _upgrade(data["state"]))
    except (ValueError, KeyError, TypeError) as err:
        raise workdir_lib.WorkdirError(
            f"{path}: expected a checkpoint of this config's model and optimiser, got another structure ({err}); "
            "run it in a new workdir or with --overwrite"
        ) from None
    states = loop.to_global(states, sharding) if sharding is not None else jax.tree.map(jax.numpy.asarray, states)
    as_arrays = lambda table: {k: np.asarray(v) for k, v in table.items()}
    return loop.Progress(states, as_arrays(data["history"]), as_arrays(data["evaluations"]))
