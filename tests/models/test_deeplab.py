"""DeepLab networks: shapes, modes, MSc branches, initialisation (paper sections 3, 4.3)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

from deeplab.models import DeepLab, build_model, get_variant, list_models

BIG = [n for n in list_models() if n != "deeplab-largefov-tiny"]


@pytest.mark.parametrize("name", BIG)
@pytest.mark.parametrize("training", [True, False])
def test_big_variant_shapes_on_meta_device(name: str, training: bool) -> None:
    with torch.device("meta"):
        model = build_model(name).train(training)
        for n in (306, 321, 320, 513, 64, 65):
            out = model(torch.empty(2, 3, n, n + 3))
            v = model.variant
            assert out.shape == (2, 21, v.output_size(n, training), v.output_size(n + 3, training))


def test_paper_output_sizes_on_meta_device() -> None:
    with torch.device("meta"):
        assert build_model("deeplab").train()(torch.empty(1, 3, 306, 306)).shape[-2:] == (39, 39)
        for name in ("deeplab-7x7", "deeplab-4x4", "deeplab-largefov", "deeplab-msc-largefov"):
            assert build_model(name).eval()(torch.empty(1, 3, 321, 321)).shape[-2:] == (41, 41)


@pytest.mark.parametrize("size", [(33, 33), (40, 47), (57, 64), (72, 41)])
@pytest.mark.parametrize("training", [True, False])
def test_tiny_forward_shapes_odd_and_even(size: tuple[int, int], training: bool) -> None:
    model = build_model("deeplab-largefov-tiny", num_classes=5).train(training)
    out = model(torch.randn(2, 3, *size) * 50)
    v = model.variant
    assert out.shape == (2, 5, v.output_size(size[0]), v.output_size(size[1]))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(41, 41), (40, 46), (38, 51)])
@pytest.mark.parametrize("training", [True, False])
def test_msc_shapes_for_all_sizes(tiny_msc, tiny_deeplab, size, training) -> None:
    for variant in (tiny_msc, tiny_deeplab):
        model = DeepLab(variant, 4).train(training)
        out = model(torch.randn(1, 3, *size) * 50)
        assert out.shape[-2:] == tuple(variant.output_size(n, training) for n in size)


def test_forward_is_deterministic_in_eval_and_dropout_acts_in_train(tiny) -> None:
    variant = dataclasses.replace(tiny, name="tiny-dropout", dropout=0.5)
    model = DeepLab(variant, 3)
    x = torch.randn(1, 3, 33, 33) * 50
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    model.train()
    assert not torch.equal(model(x), model(x))
    assert model.drop6.p == model.drop7.p == 0.5


def test_logits_are_not_upsampled() -> None:
    model = build_model("deeplab-largefov-tiny").eval()
    assert model(torch.randn(1, 3, 321, 321)).shape == (1, 21, 41, 41)


def test_state_dict_keys_use_caffe_names(tiny_msc) -> None:
    keys = set(build_model("deeplab-largefov-tiny").state_dict())
    assert {"conv1_1.weight", "conv5_3.bias", "fc6.weight", "fc7.weight", "fc8.bias"} <= keys
    msc_keys = set(DeepLab(tiny_msc, 21).state_dict()) - keys
    assert msc_keys == {
        f"msc.{k}.fc{j}.{p}" for k in range(5) for j in (1, 2, 3) for p in ("weight", "bias")
    }


def test_bad_inputs_raise_value_error() -> None:
    model = build_model("deeplab-largefov-tiny")
    with pytest.raises(ValueError, match="B,3,H,W"):
        model(torch.zeros(3, 33, 33))
    with pytest.raises(ValueError, match="B,3,H,W"):
        model(torch.zeros(1, 1, 33, 33))
    with pytest.raises(ValueError, match="floating"):
        model(torch.zeros(1, 3, 33, 33, dtype=torch.uint8))
    with torch.device("meta"):
        deeplab = build_model("deeplab").train()
    with pytest.raises(ValueError, match="too small"):
        deeplab(torch.zeros(1, 3, 1, 1, device="meta"))
    with pytest.raises(ValueError):
        build_model("deeplab-largefov-tiny", num_classes=0)


def test_fresh_initialisation() -> None:
    model = build_model("deeplab-msc-largefov")
    assert model.fc8.bias.abs().max() == 0
    assert model.fc8.weight.std().item() == pytest.approx(0.01, rel=0.05)
    msc = model.msc
    assert msc is not None
    for k, branch in enumerate(msc):
        assert branch.stride == (8, 4, 2, 1, 1)[k]
        assert branch.fc1.weight.std().item() == pytest.approx(0.001, rel=0.1)
        std2 = 0.005 if k == 4 else 0.001
        assert branch.fc2.weight.std().item() == pytest.approx(std2, rel=0.1)
        assert branch.fc3.weight.std().item() == pytest.approx(0.01, rel=0.15)
        assert all(m.bias.abs().max() == 0 for m in (branch.fc1, branch.fc2, branch.fc3))
    # He initialisation of the trunk: std sqrt(2 / fan_in)
    assert model.conv3_1.weight.std().item() == pytest.approx((2 / (128 * 9)) ** 0.5, rel=0.05)


def test_tiny_keeps_unit_scale_activations_at_init() -> None:
    """Why the BatchNorm-free tiny model trains from scratch: He init keeps signal scale
    through the 15 ReLU layers (neither vanishing nor exploding logits)."""
    model = build_model("deeplab-largefov-tiny").eval()
    x = torch.randn(4, 3, 65, 65) * 58
    features = model(x)
    h = F.relu(model.fc7(F.relu(model.fc6(model.forward_with_taps(x)[0]))))
    assert 0.1 < h.pow(2).mean().sqrt().item() < 10
    assert 0.01 < features.std().item() < 10


# --- multi-scale branches (paper section 4.3) ---------------------------------------


def _branch_caffe(branch, tap: torch.Tensor) -> torch.Tensor:
    """Caffe's branch: 3x3 conv with pad 1 and stride s, 1x1, 1x1 (eval: no dropout)."""
    h = F.relu(F.conv2d(tap, branch.fc1.weight, branch.fc1.bias, stride=branch.stride, padding=1))
    h = F.relu(F.conv2d(h, branch.fc2.weight, branch.fc2.bias))
    return F.conv2d(h, branch.fc3.weight, branch.fc3.bias)


def test_msc_output_is_fc8_plus_caffe_branches_for_size_8k_plus_1(tiny_msc) -> None:
    model = DeepLab(tiny_msc, 3).double().eval()
    for branch in model.msc:  # make the branches matter
        for conv in (branch.fc1, branch.fc2, branch.fc3):
            torch.nn.init.normal_(conv.weight, 0, 0.1)
    x = torch.randn(1, 3, 49, 57, dtype=torch.float64) * 50
    features, taps = model.forward_with_taps(x)
    expected = model.fc8(F.relu(model.fc7(F.relu(model.fc6(features)))))
    for branch, tap in zip(model.msc, taps, strict=True):
        expected = expected + _branch_caffe(branch, tap)
    torch.testing.assert_close(model(x), expected, rtol=1e-9, atol=1e-9)


def test_msc_branch_cells_align_with_main_cells_for_other_sizes(tiny_msc) -> None:
    """At sizes != 8k+1 the branch is the Caffe branch on a zero-extended tap, cropped to
    the main grid: its cell i still looks at tap cell stride*i."""
    model = DeepLab(tiny_msc, 3).double().eval()
    x = torch.randn(1, 3, 44, 46, dtype=torch.float64) * 50
    _, taps = model.forward_with_taps(x)
    out_hw = (model.variant.output_size(44), model.variant.output_size(46))
    for branch, tap in zip(model.msc, taps, strict=True):
        got = branch(tap, out_hw, 0)
        big = F.pad(tap, (0, 16, 0, 16))  # zeros, as the conv's own padding
        reference = _branch_caffe(branch, big)[..., : out_hw[0], : out_hw[1]]
        torch.testing.assert_close(got, reference, rtol=1e-9, atol=1e-9)


def test_deeplab_msc_adds_a_leading_cell_at_test_time(tiny_deeplab) -> None:
    model = DeepLab(tiny_deeplab, 3).double()
    assert model._shifts[True] == (0, 0, 0, 0, 0)
    assert model._shifts[False] == (1, 1, 1, 1, 0)  # pool4's test padding already has it


def test_msc_trains_only_the_branches(tiny_msc) -> None:
    model = DeepLab(tiny_msc, 3)
    branch_ids = {id(p) for p in model.branch_parameters()}
    assert len(branch_ids) == 30
    model.freeze_base()
    assert {id(p) for p in model.trainable_parameters()} == branch_ids
    model(torch.randn(1, 3, 33, 33) * 50).sum().backward()
    assert all(p.grad is None for p in model.parameters() if id(p) not in branch_ids)
    assert all(p.grad is not None for p in model.branch_parameters())
    model.freeze_base(False)
    assert all(p.requires_grad for p in model.parameters())
    # The released DeepLab-MSc also trains fc8; freeze_base(False) still thaws everything.
    model.freeze_base(train_fc8=True)
    fc8 = {id(p) for p in model.fc8.parameters()}
    assert {id(p) for p in model.trainable_parameters()} == branch_ids | fc8
    model.freeze_base(train_fc8=False)
    assert {id(p) for p in model.trainable_parameters()} == branch_ids
    model.freeze_base(False)
    assert all(p.requires_grad for p in model.parameters())


def test_build_model_freezes_the_msc_base_only() -> None:
    msc = build_model("deeplab-msc-largefov")
    trainable = sum(p.numel() for p in msc.trainable_parameters())
    assert trainable == sum(p.numel() for p in msc.branch_parameters()) > 0
    plain = build_model("deeplab-largefov-tiny")
    assert all(p.requires_grad for p in plain.parameters())
    assert list(plain.branch_parameters()) == []


def test_one_sgd_step_lowers_the_loss_of_the_tiny_model() -> None:
    model = build_model("deeplab-largefov-tiny", num_classes=3)
    x = torch.randn(2, 3, 65, 65) * 50
    target = torch.randint(0, 3, (2, 9, 9))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_variant_object_is_accepted(tiny) -> None:
    assert build_model(tiny).variant is tiny
    assert get_variant(tiny) is tiny
