"""Training as in the paper (section 5, training), on one process or many.

::

    from deeplab.train import DataSpec, resolve_recipe, train

    recipe = resolve_recipe("deeplab-largefov-tiny", overrides={"iterations": 500, "lr": 0.05})
    result = train(recipe, DataSpec(kind="synthetic"), "runs/tiny")
    result.model_path            # runs/tiny/model.safetensors

Modules: :mod:`~deeplab.train.recipe` (the recipe, parameter groups, LR schedule),
:mod:`~deeplab.train.data` (the seeded stream, micro-batches; data sources are
:class:`deeplab.data.DataSpec`),
:mod:`~deeplab.train.loop` (the loop, step by step), :mod:`~deeplab.train.initial` (the
network a run starts from), :mod:`~deeplab.train.resume` (RNG and momentum state),
:mod:`~deeplab.train.checkpoint` (verified safetensors checkpoints),
:mod:`~deeplab.train.logs` (JSONL log, training curve),
:mod:`~deeplab.train.end_to_end` (the network and the unrolled CRF trained together),
:mod:`~deeplab.train.preemption` (SIGTERM/SIGUSR1: a checkpoint, then exit).
"""

from deeplab.data import DataSpec  # train()'s data argument
from deeplab.train.checkpoint import (
    CorruptCheckpointError,
    TrainState,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)
from deeplab.train.data import MicroBatchSampler, TrainStream
from deeplab.train.initial import initial_model
from deeplab.train.logs import plot_training_curve, read_log
from deeplab.train.loop import TrainResult, train
from deeplab.train.recipe import (
    Recipe,
    load_config_file,
    lr_at,
    param_groups,
    recipe_for,
    resolve_recipe,
)

__all__ = [
    "CorruptCheckpointError",
    "DataSpec",
    "MicroBatchSampler",
    "Recipe",
    "TrainResult",
    "TrainState",
    "TrainStream",
    "initial_model",
    "list_checkpoints",
    "load_checkpoint",
    "load_config_file",
    "load_latest",
    "lr_at",
    "param_groups",
    "plot_training_curve",
    "read_log",
    "recipe_for",
    "resolve_recipe",
    "save_checkpoint",
    "train",
]
