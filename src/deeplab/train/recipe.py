"""The training recipe (paper section 5, training) as one frozen dataclass per run.

:func:`recipe_for` gives the paper's recipe for a variant; a JSON config file
(``configs/<variant>.json``) and command-line options override any field, in that order
(:func:`resolve_recipe`). Data locations are not part of the recipe: they come from the
command line (:class:`deeplab.data.DataSpec`).

The optimiser is Caffe's: SGD with momentum 0.9; weight decay 5e-4 on weights only; the
learning rate 1e-3 for the body and 10x for ``fc8``, biases at 2x their layer's rate; the
"step" policy ``lr = base * gamma ** floor(iteration / step)``. MSc (section 4.3): only the
branches learn, at the body's rate, class layers included, and ``fc8`` with them in
DeepLab-MSc (the released MSc train nets: ``blobs_lr`` 1/2 on every learning layer, 0 on the
frozen ones; the paper gives no rates for MSc).

The released solvers and train nets (``deeplab-public``) are in :data:`RELEASED_SOLVERS`,
per variant and stage (``train_aug``: ``solver.prototxt``; ``trainval_aug``, the fine-tune
behind the test-set scores: ``solver2.prototxt``). :func:`recipe_for` follows them except
where :data:`PAPER_CHOICES` says we follow the paper, each with both values and the reason;
``recipe_for(model, follow="released")`` (or the one named option) gives the released value.

``input_lr_mult`` is not in the paper (1 there). The layers that read the Caffe-convention
pixels directly (``conv1_1`` and MSc branch 0's first conv) see inputs of standard deviation
~58 instead of ~1, so their weight gradients are ~58^2 times larger relative to their
weights than any other layer's. Fine-tuning ImageNet weights at lr 1e-3 tolerates that;
training from scratch at the larger rates it needs does not (conv1_1 diverges first), and a
multiple of about 1e-3 puts those layers on the same footing as the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from deeplab.crf import CRFParams
from deeplab.data.balance import BALANCE_MODES
from deeplab.io_utils import read_json
from deeplab.models import get_variant

__all__ = [
    "PAPER_CHOICES",
    "RELEASED_SOLVERS",
    "STAGES",
    "PaperChoice",
    "Recipe",
    "classifier_parameter",
    "load_config_file",
    "lr_at",
    "param_groups",
    "recipe_for",
    "resolve_recipe",
]

log = logging.getLogger(__name__)

AMP_MODES = ("auto", "none", "bf16", "fp16")


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run's result (plus a few run settings)."""

    model: str = _f("deeplab-largefov", "network variant (deeplab.models.list_models())")
    num_classes: int | None = _f(None, "classes; None: the dataset's class count")
    init: str | None = _f(None, "initial weights: a WEIGHTS name or checkpoint path; None: fresh")
    iterations: int = _f(
        6000,
        "SGD iterations (paper: 6000 on train_aug; released trainval_aug: 8000, DeepLab 12000)",
    )
    batch: int = _f(
        20, "images per iteration, over all processes (paper: 20; released LargeFOV: 30)"
    )
    accumulate: int = _f(1, "micro-batches per iteration and process (gradient accumulation)")
    lr: float = _f(1e-3, "base learning rate of the body (paper: 0.001)")
    classifier_lr_mult: float = _f(
        10.0, "final classifier layers' lr multiple (paper: 10, i.e. 0.01; MSc: 1, as released)"
    )
    bias_lr_mult: float = _f(2.0, "biases learn at this multiple of their layer's rate (Caffe)")
    input_lr_mult: float = _f(
        1.0, "lr multiple of the weights reading raw 0..255 pixels (1: paper; see docstring)"
    )
    momentum: float = _f(0.9, "SGD momentum (paper: 0.9)")
    weight_decay: float = _f(5e-4, "L2 decay on weights, never on biases (paper: 0.0005)")
    lr_step: int = _f(2000, "iterations between learning-rate drops (paper: 2000)")
    lr_gamma: float = _f(0.1, "learning-rate drop factor (paper: 0.1)")
    crop: int = _f(321, "training crop side (321; 306 for `deeplab`)")
    label_offset: int = _f(0, "first label pixel picked by the x8 subsampling (1 for `deeplab`)")
    mirror: bool = _f(True, "random horizontal flips (paper: yes)")
    class_balance: str = _f(
        "none",
        "loss weights per class: none (paper) | median_frequency | sqrt_median_frequency "
        "(deeplab.data.balance)",
    )
    freeze_base: bool | None = _f(None, "train only the MSc branches; None: as built (MSc: yes)")
    train_fc8: bool | None = _f(
        None,
        "MSc with a frozen base: fc8 learns with the branches; None: as released "
        "(DeepLab-MSc yes, DeepLab-MSc-LargeFOV no)",
    )
    seed: int = _f(0, "seeds initialisation, data order, crops, mirrors and dropout")
    checkpoint_every: int = _f(1000, "iterations between checkpoints (one is always written last)")
    keep_checkpoints: int = _f(3, "most recent checkpoints kept (>= 2: a fallback if one is bad)")
    log_every: int = _f(10, "iterations between JSONL log records")
    amp: str = _f("auto", "CUDA mixed precision: auto (bf16 if supported) | none | bf16 | fp16")
    workers: int = _f(2, "DataLoader worker processes per training process")
    crf_end_to_end: bool = _f(
        False,
        "train the DCNN and an unrolled mean-field CRF together (w1, w2 learnt) on "
        "full-resolution labels; start from a trained DCNN (--init)",
    )
    crf: str = _f("deeplab-largefov", "end-to-end: CRF preset or JSON (thetas, initial w1, w2)")
    crf_train_iterations: int = _f(5, "end-to-end: mean-field updates in training (test: 10)")
    crf_lr_mult: float = _f(100.0, "end-to-end: lr multiple of the CRF weights (raw w1, w2)")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name))
        get_variant(self.model)
        positive = (
            "iterations",
            "batch",
            "accumulate",
            "lr_step",
            "crop",
            "checkpoint_every",
            "crf_train_iterations",
        )
        for name in (*positive, "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        rates = ("lr", "classifier_lr_mult", "bias_lr_mult", "input_lr_mult", "lr_gamma")
        for name in (*rates, "crf_lr_mult"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.label_offset < 8:
            raise ValueError(f"label_offset must be in 0..7, got {self.label_offset}")
        if self.batch % self.accumulate:
            raise ValueError(f"batch {self.batch} is not divisible by accumulate {self.accumulate}")
        if self.keep_checkpoints < 2:
            raise ValueError(f"keep_checkpoints must be >= 2, got {self.keep_checkpoints}")
        if self.class_balance not in BALANCE_MODES:
            raise ValueError(
                f"class_balance must be one of {tuple(BALANCE_MODES)}, got {self.class_balance!r}"
            )
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.workers < 0 or self.seed < 0:
            raise ValueError("workers and seed must be >= 0")
        if self.num_classes is not None and not 1 <= self.num_classes <= 255:
            raise ValueError(f"num_classes must be in 1..255, got {self.num_classes}")
        if self.crf_end_to_end:
            CRFParams.resolve(self.crf)  # a clear error now, not after the data has loaded

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Build from a mapping of field values; unknown keys are a ValueError."""
        return cls(**_check_keys(data))

    @staticmethod
    def field_help() -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(Recipe)}

    def micro_batch(self, world_size: int = 1) -> int:
        """Images per forward pass: ``batch / (world_size * accumulate)``."""
        per = self.batch / (world_size * self.accumulate)
        if per != int(per):
            raise ValueError(
                f"batch {self.batch} does not split into {world_size} process(es) x "
                f"{self.accumulate} micro-batch(es)"
            )
        return int(per)


def _check_type(name: str, value: Any) -> None:
    """A field's value must have its annotated type: a config file's "mirror": "no" or
    "lr": "0.1" must not be taken as true or compared as text; floats must be finite."""
    hint = _field_types()[name]
    allowed = typing.get_args(hint) or (hint,)
    if value is None:
        ok = type(None) in allowed
    elif isinstance(value, bool):
        ok = bool in allowed
    elif isinstance(value, int):
        # An int in a float field must fit a float: 10**400 does not.
        ok = int in allowed or (float in allowed and abs(value) <= sys.float_info.max)
    elif isinstance(value, float):
        ok = float in allowed and math.isfinite(value)
    else:
        ok = isinstance(value, str) and str in allowed
    if not ok:
        names = " or ".join("null" if a is type(None) else a.__name__ for a in allowed)
        finite = " (finite)" if float in allowed else ""
        raise TypeError(f"{name} must be {names}{finite}, got {value!r}")


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Recipe)


def _check_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"recipe: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown recipe field(s) {unknown}; known: {sorted(known)}")
    return dict(data)


STAGES: tuple[str, ...] = ("train_aug", "trainval_aug")
"""Training stages of the released runs: ``train_aug`` from ImageNet (``solver.prototxt``),
then ``trainval_aug`` from the ``train_aug`` model (``solver2.prototxt``)."""

_SOLVER: dict[str, Any] = {
    "lr": 1e-3,
    "lr_step": 2000,
    "lr_gamma": 0.1,
    "iterations": 6000,
    "momentum": 0.9,
    "weight_decay": 5e-4,
}
_SOLVER2: dict[str, Any] = {**_SOLVER, "iterations": 8000}

RELEASED_SOLVERS: dict[tuple[str, str], Mapping[str, Any]] = {
    ("deeplab", "train_aug"): {**_SOLVER, "batch": 20},
    # DeepLab's own solver2: ten times the rate, longer steps, 12,000 iterations.
    ("deeplab", "trainval_aug"): {
        **_SOLVER, "lr": 1e-2, "lr_step": 3000, "iterations": 12000, "batch": 20,
    },
    ("deeplab-msc", "train_aug"): {**_SOLVER, "batch": 20},
    ("deeplab-msc", "trainval_aug"): {**_SOLVER2, "batch": 20},
    ("deeplab-largefov", "train_aug"): {**_SOLVER, "batch": 30},
    ("deeplab-largefov", "trainval_aug"): {**_SOLVER2, "batch": 30},
    ("deeplab-msc-largefov", "train_aug"): {**_SOLVER, "batch": 30},
    ("deeplab-msc-largefov", "trainval_aug"): {**_SOLVER2, "batch": 30},
}  # fmt: skip
"""The released solvers (lr, step, gamma, iterations, momentum, decay) and train-net batch
sizes, per (variant, stage); the COCO-pretrained LargeFOV configs have the same values."""


@dataclass(frozen=True)
class PaperChoice:
    """A recipe field where we follow the paper, not the released config."""

    field: str
    paper: Any
    released: Any
    reason: str


_BATCH_20 = PaperChoice(
    "batch", 20, 30,
    "paper section 5: 'a mini-batch of 20 images', the setting its LargeFOV numbers are "
    "reported with; the released LargeFOV train nets use 30 (--batch 30 matches them)",
)  # fmt: skip

PAPER_CHOICES: dict[str, tuple[PaperChoice, ...]] = {
    "deeplab-largefov": (_BATCH_20,),
    "deeplab-msc-largefov": (_BATCH_20,),
}


def recipe_for(model: str, stage: str = "train_aug", follow: str = "paper") -> Recipe:
    """The recipe for ``model`` (paper section 5 and the released configs): crop, label
    offset and initialisation from the variant and its ImageNet weights record, the solver
    of ``stage`` (:data:`RELEASED_SOLVERS`), and the paper's value wherever
    :data:`PAPER_CHOICES` says so, unless ``follow="released"``.

    MSc variants get no default ``init``: the paper adds the branches to a trained base
    network (pass its weights, e.g. ``runs/deeplab-largefov/model.safetensors``) and trains
    only them, at the body's rate (``classifier_lr_mult`` 1, as the released MSc nets). The
    ``trainval_aug`` stage starts from the ``train_aug`` model: no default ``init`` either.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if follow not in ("paper", "released"):
        raise ValueError(f"follow must be 'paper' or 'released', got {follow!r}")
    variant = get_variant(model)
    # `deeplab`'s 2/2/1 pools put output cell 0 at pixel 0.5 in the train net; the released
    # configs sample labels from pixel 1 (306 -> 39). The 3/2/1 variants sit on pixel 0.
    offset = math.ceil(variant.output_origin(training=True))
    values: dict[str, Any] = {
        "model": variant.name,
        "crop": variant.train_crop,
        "label_offset": offset,
        "init": None if variant.msc or stage != "train_aug" else variant.init_weights,
    }
    if variant.msc:
        values["classifier_lr_mult"] = 1.0
    values |= RELEASED_SOLVERS.get((variant.name, stage), {})
    if stage != "train_aug" and (variant.name, stage) not in RELEASED_SOLVERS:
        values["iterations"] = _SOLVER2["iterations"]
    if follow == "paper":
        values |= {c.field: c.paper for c in PAPER_CHOICES.get(variant.name, ())}
    return Recipe(**values)


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Recipe fields from a JSON file: either the fields themselves or a run's resolved
    ``config.json`` (fields under ``"recipe"``)."""
    p = Path(path)
    try:
        data = read_json(p)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {p}") from None
    if isinstance(data, Mapping) and isinstance(data.get("recipe"), Mapping):
        data = data["recipe"]
    if not isinstance(data, Mapping):
        raise ValueError(f"{p}: expected a JSON object of recipe fields, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" keys
    try:
        return _check_keys(data)
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None


def resolve_recipe(
    model: str | None = None,
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Recipe:
    """Paper recipe of the model < config file < ``overrides`` (None values are ignored).

    The model comes from ``overrides``/``model``, else from the config file.
    """
    file_values = (
        {}
        if config is None
        else (_check_keys(config) if isinstance(config, Mapping) else load_config_file(config))
    )
    given = {k: v for k, v in _check_keys(overrides or {}).items() if v is not None}
    name = given.get("model") or model or file_values.get("model")
    if not name:
        raise ValueError("no model given: pass --model or a config file with a 'model' field")
    if not isinstance(name, str):
        raise TypeError(f"model must be a variant name, got {name!r}")
    values = {**recipe_for(name).to_dict(), **file_values, **given, "model": name}
    return Recipe.from_dict(values)


def input_parameter(name: str) -> bool:
    """Whether parameter ``name`` is a weight applied to the raw input pixels: conv1_1's,
    and the first conv of the MSc branch on the image (``msc.0.fc1``)."""
    name = name.removeprefix("module.")
    return name in ("conv1_1.weight", "msc.0.fc1.weight")


def classifier_parameter(name: str) -> bool:
    """Whether parameter ``name`` belongs to a final classifier layer (``classifier_lr_mult``):
    fc8, and the class layers of the MSc branches (``msc.<k>.fc3``, Caffe ``{tap}_ms``)."""
    name = name.removeprefix("module.")
    return name.startswith("fc8.") or (name.startswith("msc.") and ".fc3." in name)


def param_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """SGD parameter groups with their lr multiple and weight decay (paper section 5).

    Groups (empty ones dropped), each with ``lr_mult``, ``weight_decay``, ``group`` and the
    parameter ``names``:

    ================  =============================  =============
    group             lr multiple                    weight decay
    ================  =============================  =============
    body.weight       1                              recipe's
    body.bias         bias_lr_mult (2)               0
    classifier.weight classifier_lr_mult (10)        recipe's
    classifier.bias   10 x 2 = 20                    0
    ================  =============================  =============

    With ``input_lr_mult != 1`` the weights reading raw pixels (:func:`input_parameter`)
    form a fifth group, ``input.weight``, at that multiple with the recipe's decay.
    Only parameters with ``requires_grad`` are included (MSc: the branches, and fc8 in
    ``deeplab-msc`` as released).
    """
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        classifier = classifier_parameter(name)
        bias = name.endswith(".bias")
        key = ("classifier" if classifier else "body") + (".bias" if bias else ".weight")
        if recipe.input_lr_mult != 1.0 and input_parameter(name):
            key = "input.weight"
        if key not in groups:
            mult = (recipe.classifier_lr_mult if classifier else 1.0) * (
                recipe.bias_lr_mult if bias else 1.0
            )
            if key == "input.weight":
                mult = recipe.input_lr_mult
            groups[key] = {
                "group": key,
                "params": [],
                "names": [],
                "lr_mult": mult,
                "weight_decay": 0.0 if bias else recipe.weight_decay,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    order = ("input.weight", "body.weight", "body.bias", "classifier.weight", "classifier.bias")
    return [groups[k] for k in order if k in groups]


def lr_at(iteration: int, recipe: Recipe) -> float:
    """Base learning rate at 0-based ``iteration`` (Caffe "step" policy)."""
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    return recipe.lr * recipe.lr_gamma ** (iteration // recipe.lr_step)
