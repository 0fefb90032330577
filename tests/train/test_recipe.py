"""The training recipe (paper section 5, training): values, parameter groups, the
learning-rate schedule, label alignment, config files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deeplab.data import Sample, TrainTransform, subsample_label
from deeplab.data.transforms import subsampled_size
from deeplab.models import DeepLab, build_model, get_variant, list_models
from deeplab.train import Recipe, lr_at, param_groups, recipe_for, resolve_recipe
from deeplab.train.recipe import classifier_parameter, input_parameter, load_config_file

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAPER_VARIANTS = [m for m in list_models() if m != "deeplab-largefov-tiny"]


def test_paper_recipe_values() -> None:
    r = recipe_for("deeplab-largefov")
    assert (r.iterations, r.batch, r.lr, r.momentum, r.weight_decay) == (6000, 20, 1e-3, 0.9, 5e-4)
    assert (r.classifier_lr_mult, r.bias_lr_mult, r.lr_step, r.lr_gamma) == (10, 2, 2000, 0.1)
    assert (r.crop, r.label_offset, r.mirror, r.init) == (321, 0, True, "vgg16_20M")
    d = recipe_for("deeplab")
    assert (d.crop, d.label_offset, d.init) == (306, 1, "vgg16_128")
    # MSc branches are added to a trained base: no ImageNet default. The released
    # DeepLab-MSc trains on 321 crops with labels from pixel 0, every new layer at 1x.
    msc = recipe_for("deeplab-msc")
    assert (msc.init, msc.crop, msc.label_offset, msc.classifier_lr_mult) == (None, 321, 0, 1.0)


@pytest.mark.parametrize("name", list_models())
def test_subsampled_labels_align_with_the_score_map(name: str) -> None:
    r = recipe_for(name)
    variant = get_variant(name)
    cells = variant.output_size(r.crop, training=True)
    assert subsampled_size(r.crop, 8, r.label_offset) == cells
    # The picked pixels are the centres of the output cells (within half a pixel).
    origin = variant.output_origin(training=True)
    assert abs(r.label_offset - origin) <= 0.5
    expected = {"deeplab": 39}.get(name, 41)
    assert cells == expected


def test_transform_and_tiny_network_agree_on_a_small_crop() -> None:
    torch.manual_seed(0)
    model = build_model("deeplab-largefov-tiny", num_classes=6).train()
    label = np.arange(57 * 57, dtype=np.int64).reshape(57, 57) % 5
    sample = Sample("s", np.zeros((57, 57, 3), np.uint8), label.astype(np.uint8))
    image, sub = TrainTransform(crop_size=57, mirror=False)(sample, np.random.default_rng(0))
    out = model(torch.from_numpy(image)[None])
    assert out.shape[-2:] == sub.shape == (8, 8)
    np.testing.assert_array_equal(sub, label[::8, ::8])
    # `deeplab`'s offset 1: pixels 1, 9, ...; 306 -> 39.
    assert subsample_label(np.zeros((306, 306)), 8, 1).shape == (39, 39)


def _groups(model: DeepLab, recipe: Recipe) -> dict[str, dict]:
    return {g["group"]: g for g in param_groups(model, recipe)}


def test_param_groups_follow_the_paper() -> None:
    torch.manual_seed(0)
    model = build_model("deeplab-largefov-tiny", num_classes=6)
    recipe = recipe_for("deeplab-largefov-tiny")
    groups = _groups(model, recipe)
    assert list(groups) == ["body.weight", "body.bias", "classifier.weight", "classifier.bias"]
    expect = {"body.weight": (1.0, 5e-4), "body.bias": (2.0, 0.0),
              "classifier.weight": (10.0, 5e-4), "classifier.bias": (20.0, 0.0)}  # fmt: skip
    for key, (mult, decay) in expect.items():
        assert (groups[key]["lr_mult"], groups[key]["weight_decay"]) == (mult, decay), key
    assert groups["classifier.weight"]["names"] == ["fc8.weight"]
    assert groups["classifier.bias"]["names"] == ["fc8.bias"]
    every = [n for g in groups.values() for n in g["names"]]
    assert sorted(every) == sorted(n for n, _ in model.named_parameters())
    assert all(n.endswith(".bias") for n in groups["body.bias"]["names"])
    assert "fc7.weight" in groups["body.weight"]["names"]


def test_msc_trains_only_the_branches_with_their_class_layers_at_10x() -> None:
    tiny = get_variant("deeplab-largefov-tiny")
    variant = dataclasses.replace(tiny, name="tiny-msc", msc=True, msc_channels=8)
    torch.manual_seed(0)
    model = DeepLab(variant, 6)
    model.freeze_base()
    groups = _groups(model, recipe_for("deeplab-largefov-tiny"))
    names = [n for g in groups.values() for n in g["names"]]
    assert names and all(n.startswith("msc.") for n in names)
    assert len(names) == len(list(model.branch_parameters()))
    assert sorted(groups["classifier.weight"]["names"]) == [f"msc.{k}.fc3.weight" for k in range(5)]
    assert groups["classifier.bias"]["lr_mult"] == 20.0
    assert classifier_parameter("module.fc8.weight") and not classifier_parameter("msc.0.fc2.bias")


def test_input_layer_group_only_when_its_multiple_is_not_one() -> None:
    torch.manual_seed(0)
    model = build_model("deeplab-largefov-tiny", num_classes=6)
    groups = _groups(model, recipe_for("deeplab-largefov-tiny").replace(input_lr_mult=1e-3))
    assert next(iter(groups)) == "input.weight"
    assert groups["input.weight"]["names"] == ["conv1_1.weight"]
    assert (groups["input.weight"]["lr_mult"], groups["input.weight"]["weight_decay"]) == (
        1e-3, 5e-4,
    )  # fmt: skip
    assert "conv1_1.weight" not in groups["body.weight"]["names"]
    assert "conv1_1.bias" in groups["body.bias"]["names"]
    assert input_parameter("module.msc.0.fc1.weight") and not input_parameter("msc.1.fc1.weight")


def test_weight_decay_touches_weights_only_and_lr_multiples_scale_the_step() -> None:
    torch.manual_seed(0)
    model = build_model("deeplab-largefov-tiny", num_classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    recipe = recipe_for("deeplab-largefov-tiny")
    opt = torch.optim.SGD(param_groups(model, recipe), lr=1.0, momentum=0.9)
    for g in opt.param_groups:
        g["lr"] = lr_at(0, recipe) * g["lr_mult"]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model.fc8.bias.grad.fill_(1.0)
    model.conv1_1.bias.grad.fill_(1.0)
    opt.step()
    # Weights with zero gradient: decay only, w -= lr * mult * wd * w.
    assert model.conv1_1.weight[0, 0, 0, 0].item() == pytest.approx(1 - 1e-3 * 5e-4, abs=1e-7)
    assert model.fc8.weight[0, 0, 0, 0].item() == pytest.approx(1 - 1e-2 * 5e-4, abs=1e-7)
    # Biases: never decayed, at 2x and 20x the base rate.
    assert model.conv1_1.bias[0].item() == pytest.approx(1 - 2e-3, abs=1e-7)
    assert model.fc8.bias[0].item() == pytest.approx(1 - 2e-2, abs=1e-7)
    assert model.fc7.bias[0].item() == 1.0


def test_step_schedule_drops_at_2000_and_4000() -> None:
    r = recipe_for("deeplab-largefov")
    assert [lr_at(t, r) for t in (0, 1999)] == [1e-3, 1e-3]
    assert lr_at(2000, r) == pytest.approx(1e-4) and lr_at(3999, r) == pytest.approx(1e-4)
    assert lr_at(4000, r) == pytest.approx(1e-5) and lr_at(5999, r) == pytest.approx(1e-5)
    with pytest.raises(ValueError):
        lr_at(-1, r)


def test_override_order_paper_then_file_then_options(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"_comment": "x", "model": "deeplab", "lr": 0.01, "batch": 10}))
    r = resolve_recipe(config=config, overrides={"batch": 30, "accumulate": 3, "lr": None})
    assert (r.model, r.lr, r.batch, r.accumulate, r.crop, r.label_offset) == (
        "deeplab", 0.01, 30, 3, 306, 1,
    )  # fmt: skip
    # A run's resolved config.json works as a config file too.
    (tmp_path / "run.json").write_text(json.dumps({"recipe": r.to_dict(), "data": {}}))
    assert load_config_file(tmp_path / "run.json") == r.to_dict()
    config.write_text(json.dumps({"model": "deeplab", "learning_rate": 1}))
    with pytest.raises(ValueError, match="learning_rate"):
        resolve_recipe(config=config)
    with pytest.raises(ValueError, match="no model"):
        resolve_recipe(overrides={"lr": 1.0})


def test_invalid_recipes_are_rejected() -> None:
    with pytest.raises(ValueError, match="divisible"):
        Recipe(batch=20, accumulate=3)
    with pytest.raises(ValueError, match="keep_checkpoints"):
        Recipe(keep_checkpoints=1)
    with pytest.raises(ValueError, match="unknown model"):
        Recipe(model="resnet")
    with pytest.raises(ValueError, match="does not split"):
        Recipe(batch=20, accumulate=2).micro_batch(world_size=3)
    assert Recipe(batch=20, accumulate=2).micro_batch(world_size=2) == 5


@pytest.mark.parametrize("name", PAPER_VARIANTS)
def test_shipped_configs_are_the_paper_recipes(name: str) -> None:
    path = CONFIGS / f"{name}.json"
    assert resolve_recipe(config=path) == recipe_for(name)


def test_the_miniature_config_keeps_the_paper_optimizer() -> None:
    r = resolve_recipe(config=CONFIGS / "deeplab-largefov-tiny-synthetic.json")
    assert (r.model, r.init, r.crop) == ("deeplab-largefov-tiny", None, 129)
    # Still SGD with the paper's momentum, decay, bias multiple and step policy.
    assert (r.momentum, r.weight_decay, r.bias_lr_mult, r.lr_gamma) == (0.9, 5e-4, 2.0, 0.1)
    assert r.lr_step < r.iterations
