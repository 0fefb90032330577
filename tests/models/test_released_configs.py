"""Every released train and test prototxt against our variants, layer by layer, and every
released solver against our recipes.

For each config folder (:data:`released.RELEASED`) and phase, both sides are written as
``{layer name: description}`` in Caffe's terms: the released side read from the prototxt,
our side from the built module (on the meta device) and its recipe. Compared: layer names,
inputs (``bottom``), kernel, stride, pad, dilation (``hole``), channels, pooling kind and
rounding, Interp zoom, crop (``PADDING``), the fusion sum, learning-rate and decay
multiples of every learning layer, frozen layers, the data layers and the label shrink.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from deeplab.data.transforms import subsampled_size
from deeplab.models import CAFFE_MEAN_BGR, WEIGHTS, DeepLab, get_variant
from deeplab.models.convert import caffe_layer_table, map_caffe
from deeplab.models.variants import MSC_TAPS, Variant
from deeplab.models.vgg import CaffeMaxPool
from deeplab.train.recipe import (
    PAPER_CHOICES,
    RELEASED_SOLVERS,
    Recipe,
    param_groups,
    recipe_for,
)

from .prototxt import Message
from .released import CONFIGS, RELEASED, conv_shapes, in_phase, layers, read_net

PHASES = {"train": "TRAIN", "test": "TEST"}
Spec = dict[str, dict[str, Any]]


def test_every_released_config_folder_is_checked() -> None:
    if not CONFIGS.is_dir():
        pytest.skip(f"released configs not found at {CONFIGS}")
    assert sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()) == sorted(RELEASED)
    assert {get_variant(v).caffe_config for v in RELEASED.values()} <= set(RELEASED)


# --- the released side -----------------------------------------------------------------


def released_spec(net: Message, phase: str) -> Spec:
    spec: Spec = {}
    for layer in layers(net):
        if not in_phase(layer, phase):
            continue
        kind = str(layer.one("type"))
        name = str(layer.one("name"))
        bottoms = tuple(str(b) for b in layer.all("bottom"))
        if kind == "CONVOLUTION":
            p = layer.sub("convolution_param")
            d = {
                "type": kind,
                "bottom": bottoms,
                "num_output": int(p.one("num_output")),
                "kernel": int(p.one("kernel_size")),
                "stride": int(p.one("stride", 1)),
                "pad": int(p.one("pad", 0)),
                "hole": int(p.one("hole", 1)),
            }
            if phase == "TRAIN":
                lr = tuple(float(x) for x in layer.all("blobs_lr")) or (1.0, 1.0)
                d["lr_mult"] = lr
                if any(lr):  # decay only matters where the layer learns
                    d["decay_mult"] = tuple(float(x) for x in layer.all("weight_decay"))
            spec[name] = d
        elif kind == "POOLING":
            p = layer.sub("pooling_param")
            spec[name] = {
                "type": kind,
                "bottom": bottoms,
                "pool": str(p.one("pool")),
                "kernel": int(p.one("kernel_size")),
                "stride": int(p.one("stride", 1)),
                "pad": int(p.one("pad", 0)),
                "rounding": "ceil",  # Caffe's only rounding
            }
        elif kind == "INTERP" and "label" not in bottoms:
            spec[name] = {
                "type": kind,
                "bottom": bottoms,
                "zoom": int(layer.sub("interp_param").one("zoom_factor")),
            }
        elif kind == "PADDING":
            p = layer.sub("padding_param")
            spec[name] = {
                "type": kind,
                "bottom": bottoms,
                "pad_beg": int(p.one("pad_beg")),
                "pad_end": int(p.one("pad_end")),
            }
        elif kind == "ELTWISE":
            spec[name] = {
                "type": kind,
                "bottom": bottoms,
                "op": str(layer.sub("eltwise_param").one("operation")),
            }
        elif kind == "DROPOUT":
            spec[name] = {
                "type": kind,
                "bottom": bottoms,
                "ratio": float(layer.sub("dropout_param").one("dropout_ratio")),
            }
    return spec


def released_data(net: Message, phase: str) -> dict[str, Any]:
    layer = next(
        m for m in layers(net) if str(m.one("type")) == "IMAGE_SEG_DATA" and in_phase(m, phase)
    )
    t, d = layer.sub("transform_param"), layer.sub("image_data_param")
    return {
        "crop": int(t.one("crop_size")),
        "mirror": str(t.one("mirror")) == "true",
        "mean": tuple(float(m) for m in t.all("mean_value")),
        "batch": int(d.one("batch_size")),
    }


# --- our side --------------------------------------------------------------------------


def _conv(
    module: nn.Conv2d, bottom: str, *, stride: int | None = None, pad: int | None = None
) -> dict[str, Any]:
    return {
        "type": "CONVOLUTION",
        "bottom": (bottom,),
        "num_output": module.out_channels,
        "kernel": module.kernel_size[0],
        "stride": module.stride[0] if stride is None else stride,
        "pad": module.padding[0] if pad is None else pad,
        "hole": module.dilation[0],
    }


def _pool(module: nn.Module, bottom: str, training: bool) -> dict[str, Any]:
    if isinstance(module, CaffeMaxPool):
        pad = module.padding if training else module.eval_padding
        return {
            "type": "POOLING",
            "bottom": (bottom,),
            "pool": "MAX",
            "kernel": module.kernel_size,
            "stride": module.stride,
            "pad": pad,
            "rounding": "ceil",
        }
    assert isinstance(module, nn.AvgPool2d)
    # Caffe's AVE divides by the window clipped to the padded input: count_include_pad.
    assert module.count_include_pad
    return {
        "type": "POOLING",
        "bottom": (bottom,),
        "pool": "AVE",
        "kernel": module.kernel_size,
        "stride": module.stride,
        "pad": module.padding,
        "rounding": "ceil" if module.ceil_mode else "floor",
    }


def our_spec(variant: Variant, training: bool, recipe: Recipe) -> Spec:
    """Our network in the released prototxt's terms (channels at full size)."""
    with torch.device("meta"):
        model = DeepLab(variant, 21)
    if variant.msc:
        model.freeze_base(True, train_fc8=recipe.train_fc8)  # as the training loop does
    names = {ours: caffe[0] for ours, caffe in caffe_layer_table(variant).items()}
    spec: Spec = {}
    bottom = "data"
    for k, n in enumerate((2, 2, 3, 3, 3), start=1):
        for j in range(1, n + 1):
            spec[f"conv{k}_{j}"] = _conv(getattr(model, f"conv{k}_{j}"), bottom)
            bottom = f"conv{k}_{j}"
        spec[f"pool{k}"] = _pool(getattr(model, f"pool{k}"), bottom, training)
        bottom = f"pool{k}"
    if model.pool5a is not None:
        spec["pool5a"] = _pool(model.pool5a, bottom, training)
        bottom = "pool5a"
    fc8 = names["fc8"]
    spec["fc6"] = _conv(model.fc6, bottom)
    spec["fc7"] = _conv(model.fc7, "fc6")
    spec[fc8] = _conv(model.fc8, "fc7")
    for layer, drop in (("fc6", "drop6"), ("fc7", "drop7")):
        spec[drop] = {"type": "DROPOUT", "bottom": (layer,), "ratio": getattr(model, drop).p}
    score = fc8
    if not training:
        spec["fc8_interp"] = {"type": "INTERP", "bottom": (fc8,), "zoom": variant.output_stride}
        score = "fc8_interp"
        if variant.score_crop:
            cells = variant.output_size(variant.test_crop, training=False)
            interp = variant.output_stride * (cells - 1) + 1
            spec["fc8_crop"] = {
                "type": "PADDING",
                "bottom": ("fc8_interp",),
                "pad_beg": -variant.score_crop,
                "pad_end": -(interp - variant.score_crop - variant.test_crop),
            }
    if model.msc is not None:
        fusion = []
        geometry = variant.tap_geometry(training)
        for k, (branch, tap) in enumerate(zip(model.msc, MSC_TAPS, strict=True)):
            conv, fc, ms = (names[f"msc.{k}.fc{j}"] for j in (1, 2, 3))
            if training:
                # The train net's branch: strided onto the stride-8 grid, padded by one cell
                # of the tap (plus whole cells where the grids differ, none in the releases).
                pad = 1 + branch.stride * model._shifts[True][k]
                spec[conv] = _conv(branch.fc1, tap, pad=pad)
            else:
                # The test net's branch (DeepLab.image_scores): stride 1, pad 1.
                spec[conv] = _conv(branch.fc1, tap, stride=1, pad=1)
            spec[fc] = _conv(branch.fc2, conv)
            spec[ms] = _conv(branch.fc3, fc)
            for drop, layer in ((f"{tap}_drop_conv", conv), (f"{tap}_drop_fc", fc)):
                spec[drop] = {
                    "type": "DROPOUT",
                    "bottom": (layer,),
                    "ratio": getattr(branch, "drop1" if layer == conv else "drop2").p,
                }
            zoom = geometry[k][0]
            if training or zoom == 1:
                fusion.append(ms)
            else:
                spec[f"{tap}_interp"] = {"type": "INTERP", "bottom": (ms,), "zoom": zoom}
                fusion.append(f"{tap}_interp")
        spec["fc_fusion"] = {"type": "ELTWISE", "bottom": (*fusion, score), "op": "SUM"}
    if training:
        groups = {name: g for g in param_groups(model, recipe) for name in g["names"]}
        for ours, caffe in names.items():
            w, b = groups.get(f"{ours}.weight"), groups.get(f"{ours}.bias")
            spec[caffe]["lr_mult"] = (w["lr_mult"] if w else 0.0, b["lr_mult"] if b else 0.0)
            if w or b:
                spec[caffe]["decay_mult"] = (
                    w["weight_decay"] / recipe.weight_decay if w else 0,
                    b["weight_decay"] / recipe.weight_decay if b else 0,
                )
    return spec


def _drop_names(spec: Spec, released: Spec) -> Spec:
    """Dropout layer names are free in Caffe (``drop6``, ``data_drop1``...): key ours by the
    released name of the dropout reading the same blob."""
    by_bottom = {d["bottom"]: n for n, d in released.items() if d["type"] == "DROPOUT"}
    out: Spec = {}
    for name, d in spec.items():
        out[by_bottom.get(d["bottom"], name) if d["type"] == "DROPOUT" else name] = d
    return out


@pytest.mark.parametrize("phase", ["train", "test"])
@pytest.mark.parametrize("folder", sorted(RELEASED))
def test_network_layer_by_layer(folder: str, phase: str) -> None:
    variant = get_variant(RELEASED[folder])
    net = read_net(folder, phase)
    training = phase == "train"
    released = released_spec(net, PHASES[phase])
    recipe = recipe_for(variant.name, follow="released")
    ours = _drop_names(our_spec(variant, training, recipe), released)
    if not training:
        for d in ours.values():
            d.pop("lr_mult", None)
    assert sorted(ours) == sorted(released)
    for name in released:
        assert ours[name] == released[name], name


@pytest.mark.parametrize("folder", sorted(RELEASED))
def test_data_layers_and_label_shrink(folder: str) -> None:
    variant = get_variant(RELEASED[folder])
    recipe = recipe_for(variant.name, follow="released")
    train = read_net(folder, "train")
    data = released_data(train, "TRAIN")
    assert data["crop"] == recipe.crop == variant.train_crop
    assert data["mirror"] == recipe.mirror
    assert data["batch"] == recipe.batch
    assert data["mean"] == pytest.approx(CAFFE_MEAN_BGR)
    test = released_data(read_net(folder, "test"), "TEST")
    assert (test["crop"], test["batch"], test["mirror"]) == (variant.test_crop, 1, False)
    assert test["mean"] == pytest.approx(CAFFE_MEAN_BGR)
    # label_shrink: Caffe's Interp picks labels pad_beg pixels in, every shrink_factor-th.
    shrink = next(m for m in layers(train) if str(m.one("name")) == "label_shrink")
    p = shrink.sub("interp_param")
    assert int(p.one("shrink_factor")) == variant.output_stride
    assert -int(p.one("pad_beg")) == recipe.label_offset and int(p.one("pad_end")) == 0
    cells = (recipe.crop + int(p.one("pad_beg")) - 1) // 8 + 1  # Caffe: (n_eff - 1) / s + 1
    assert cells == subsampled_size(recipe.crop, 8, recipe.label_offset)
    assert cells == variant.output_size(recipe.crop, training=True)


SOLVER_FIELDS = {
    "base_lr": "lr",
    "stepsize": "lr_step",
    "gamma": "lr_gamma",
    "max_iter": "iterations",
    "momentum": "momentum",
    "weight_decay": "weight_decay",
}


@pytest.mark.parametrize(
    ("stage", "solver"), [("train_aug", "solver"), ("trainval_aug", "solver2")]
)
@pytest.mark.parametrize("folder", sorted(RELEASED))
def test_recipes_are_the_released_solvers(folder: str, stage: str, solver: str) -> None:
    name = RELEASED[folder]
    s = read_net(folder, solver)
    assert str(s.one("lr_policy")) == "step"
    released = recipe_for(name, stage=stage, follow="released")
    for caffe, ours in SOLVER_FIELDS.items():
        assert getattr(released, ours) == pytest.approx(float(s.one(caffe))), caffe
    assert released.batch == released_data(read_net(folder, "train"), "TRAIN")["batch"]
    assert dict(RELEASED_SOLVERS[(name, stage)]) == {
        k: getattr(released, k) for k in RELEASED_SOLVERS[(name, stage)]
    }
    # The default recipe differs from the released one only where PAPER_CHOICES says so,
    # each with both values and a reason; the released value is one field away.
    paper = recipe_for(name, stage=stage)
    differ = {k for k, v in paper.to_dict().items() if v != getattr(released, k)}
    choices = {c.field: c for c in PAPER_CHOICES.get(name, ())}
    assert differ == set(choices)
    for field, c in choices.items():
        assert getattr(paper, field) == c.paper and getattr(released, field) == c.released
        assert c.reason
        assert paper.replace(**{field: c.released}) == released


def test_largefov_batch_follows_the_paper_with_the_released_value_recorded() -> None:
    for name in ("deeplab-largefov", "deeplab-msc-largefov"):
        assert recipe_for(name).batch == 20
        assert recipe_for(name, follow="released").batch == 30
    d = recipe_for("deeplab", stage="trainval_aug")
    assert (d.lr, d.lr_step, d.iterations, d.init) == (0.01, 3000, 12000, None)
    with pytest.raises(ValueError, match="stage"):
        recipe_for("deeplab", stage="test")
    with pytest.raises(ValueError, match="follow"):
        recipe_for("deeplab", follow="spec")


@pytest.mark.parametrize("record", [r for r in WEIGHTS.values() if r.caffe_config])
def test_weight_records_match_their_released_configs(record) -> None:
    variant = get_variant(record.variant)
    assert RELEASED[record.caffe_config] == variant.name
    assert record.caffe_classifier == variant.caffe_classifier
    assert caffe_layer_table(variant)["fc8"][0] == record.caffe_classifier
    test = read_net(record.caffe_config, "test")
    assert released_data(test, "TEST")["crop"] == record.test_crop == variant.test_crop
    names = {str(m.one("name")) for m in layers(test)}
    assert record.caffe_classifier in names
    assert record.crf_params is not None and record.num_classes == 21
    assert record.train_split in (None, "train_aug", "trainval_aug")


@pytest.mark.parametrize("folder", sorted(RELEASED))
def test_full_size_released_weights_convert_completely(folder: str) -> None:
    """Every tensor of the released net, at its full size (meta tensors: no memory), maps
    onto our variant: nothing missing, nothing unexpected, no shape conflict."""
    shapes = conv_shapes(read_net(folder, "train"))
    blobs = {
        name: [torch.empty(o, i, k, k, device="meta"), torch.empty(o, device="meta")]
        for name, (o, i, k) in shapes.items()
    }
    mapped, report = map_caffe(blobs, RELEASED[folder], 21)
    assert report.missing == [] and report.unexpected == []
    assert len(mapped) == 2 * len(shapes)
