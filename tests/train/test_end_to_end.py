"""End-to-end training of the network with the unrolled CRF (`--crf-end-to-end`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from deeplab.crf import CRFParams, dense_crf_from_logits
from deeplab.data import IGNORE_INDEX
from deeplab.models import build_model, load_model
from deeplab.models.inputs import to_model_input
from deeplab.predict import upsample_logits
from deeplab.train import DataSpec, Recipe, load_latest, read_log, train
from deeplab.train.end_to_end import CRFTrainingNet, crf_layer, crf_param_group

# Thetas for 48x48 scenes (the paper's are sized for 500x375 photographs).
SMALL_CRF = CRFParams(w1=4.0, theta_alpha=6.0, theta_beta=6.0, w2=3.0, theta_gamma=2.0)


@pytest.fixture
def trained_net(tiny_weights: Path) -> Path:
    """Fresh weights stand in for a trained network: the tests check the mechanics."""
    return tiny_weights


@pytest.fixture
def crf_file(tmp_path: Path) -> Path:
    path = tmp_path / "crf.json"
    SMALL_CRF.save(path)
    return path


def _e2e(tiny_recipe: Callable[..., Recipe], net: Path, crf: Path, **kw: object) -> Recipe:
    return tiny_recipe(
        init=str(net), crf_end_to_end=True, crf=str(crf), crf_train_iterations=2, **kw
    )


def test_forward_is_the_cpu_pipeline_in_log_space() -> None:
    """The training module computes what `evaluate --crf` does at test time."""
    torch.manual_seed(0)
    net = build_model("deeplab-largefov-tiny", num_classes=6).eval()
    crf = crf_layer(SMALL_CRF, train_iterations=2)
    module = CRFTrainingNet(net, crf).eval()
    rgb = torch.randint(0, 256, (1, 3, 41, 41), dtype=torch.uint8)
    x = to_model_input(rgb)
    with torch.no_grad():
        log_q = module(x)
        logits = upsample_logits(net(x), size=(41, 41))
    assert log_q.shape == (1, 6, 41, 41)
    q_cpu = dense_crf_from_logits(
        rgb[0].permute(1, 2, 0).contiguous().numpy(), logits[0].numpy(), SMALL_CRF
    )
    assert torch.allclose(log_q.exp()[0], torch.from_numpy(q_cpu), atol=1e-4)


def test_gradients_reach_the_network_and_the_kernel_weights() -> None:
    torch.manual_seed(0)
    module = CRFTrainingNet(
        build_model("deeplab-largefov-tiny", num_classes=6), crf_layer(SMALL_CRF, 2)
    ).train()
    x = to_model_input(torch.randint(0, 256, (2, 3, 33, 33), dtype=torch.uint8))
    y = torch.randint(0, 6, (2, 33, 33))
    y[:, :3] = IGNORE_INDEX
    F.nll_loss(module(x), y, ignore_index=IGNORE_INDEX).backward()
    assert module.crf.raw_w1.grad is not None and module.crf.raw_w1.grad != 0
    assert module.crf.raw_w2.grad is not None and module.crf.raw_w2.grad != 0
    assert module.net.conv1_1.weight.grad.abs().sum() > 0
    assert module.net.fc8.weight.grad.abs().sum() > 0


def test_crf_group_learns_at_its_own_rate_without_decay() -> None:
    crf = crf_layer(SMALL_CRF, 5)
    group = crf_param_group(crf, 50.0)
    assert group["names"] == ["crf.raw_w1", "crf.raw_w2"]
    assert group["lr_mult"] == 50.0 and group["weight_decay"] == 0.0
    assert crf.train_iterations == 5 and crf.iterations == SMALL_CRF.iterations == 10


def test_run_learns_w1_w2_and_writes_the_crf_file(
    tmp_path: Path,
    tiny_recipe: Callable[..., Recipe],
    tiny_data: DataSpec,
    trained_net: Path,
    crf_file: Path,
) -> None:
    recipe = _e2e(tiny_recipe, trained_net, crf_file, iterations=3, crop=33)
    result = train(recipe, tiny_data, tmp_path / "run")
    assert result.finished
    learned = CRFParams.load(tmp_path / "run" / "crf.json")
    assert (learned.theta_alpha, learned.theta_beta, learned.theta_gamma) == (6.0, 6.0, 2.0)
    assert learned.iterations == 10  # test-time count
    assert (learned.w1, learned.w2) != (SMALL_CRF.w1, SMALL_CRF.w2)
    records = read_log(tmp_path / "run" / "log.jsonl")
    assert records[-1]["crf_w1"] == pytest.approx(learned.w1, rel=1e-5)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["recipe"]["crf_end_to_end"] is True
    # The network file is a plain network: evaluate/segment load it as any other.
    before = load_model(trained_net).state_dict()
    after = load_model(tmp_path / "run" / "model.safetensors").state_dict()
    assert not torch.equal(before["fc8.weight"], after["fc8.weight"])


def test_interrupted_end_to_end_run_resumes_bitwise(
    tmp_path: Path,
    tiny_recipe: Callable[..., Recipe],
    tiny_data: DataSpec,
    trained_net: Path,
    crf_file: Path,
) -> None:
    recipe = _e2e(tiny_recipe, trained_net, crf_file, iterations=4, crop=25, checkpoint_every=2)
    full = train(recipe, tiny_data, tmp_path / "full")
    train(recipe, tiny_data, tmp_path / "cut", stop_at=2)
    rest = train(recipe, tiny_data, tmp_path / "cut", resume=True)
    assert rest.last_loss == full.last_loss
    a = load_latest(tmp_path / "full" / "checkpoints")
    b = load_latest(tmp_path / "cut" / "checkpoints")
    assert a is not None and b is not None
    assert a.model.keys() == b.model.keys() and "crf.raw_w1" in a.model
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
    crf_files = [(tmp_path / run / "crf.json").read_text() for run in ("full", "cut")]
    assert crf_files[0] == crf_files[1]


def test_bad_crf_settings_are_refused_before_training(
    tiny_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="neither a preset"):
        tiny_recipe(crf_end_to_end=True, crf=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="crf_train_iterations"):
        tiny_recipe(crf_end_to_end=True, crf_train_iterations=0)
    off = tmp_path / "off.json"
    SMALL_CRF.replace(w2=0.0).save(off)
    with pytest.raises(ValueError, match="w1 and w2"):
        crf_layer(str(off), 5)
