"""The variant table against the paper (section 3, Table 2) and the released Caffe configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

from deeplab.models import VARIANTS, build_model, get_variant, list_models
from deeplab.models.variants import Pool, caffe_pool_size

PAPER_PARAMS_M = {
    "deeplab-7x7": 134.3,
    "deeplab": 65.1,
    "deeplab-4x4": 65.1,
    "deeplab-largefov": 20.5,
}
BIG = [n for n in list_models() if n != "deeplab-largefov-tiny"]


def test_list_models_is_the_table() -> None:
    assert list_models() == [
        "deeplab",
        "deeplab-7x7",
        "deeplab-4x4",
        "deeplab-largefov",
        "deeplab-msc",
        "deeplab-msc-largefov",
        "deeplab-largefov-tiny",
    ]
    assert all(VARIANTS[n].name == n for n in list_models())


def test_unknown_variant_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="deeplab-largefov"):
        get_variant("deeplab-huge")


def test_variants_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_variant("deeplab").fc6_kernel = 7  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "pool", "pool4", "pool4_test", "fc6", "width"),
    [
        ("deeplab", (2, 2, 1), (2, 1, 0), 1, (4, 4, 6), 4096),
        ("deeplab-7x7", (3, 2, 1), (3, 1, 1), 1, (7, 4, 12), 4096),
        ("deeplab-4x4", (3, 2, 1), (3, 1, 1), 1, (4, 8, 12), 4096),
        ("deeplab-largefov", (3, 2, 1), (3, 1, 1), 1, (3, 12, 12), 1024),
        ("deeplab-largefov-tiny", (3, 2, 1), (3, 1, 1), 1, (3, 12, 12), 128),
        ("deeplab-msc", (3, 2, 1), (3, 1, 1), 1, (4, 4, 6), 4096),
        ("deeplab-msc-largefov", (3, 2, 1), (3, 1, 1), 1, (3, 12, 12), 1024),
    ],
)
def test_table_matches_the_released_configs(name, pool, pool4, pool4_test, fc6, width) -> None:
    v = get_variant(name)
    assert v.pool == Pool(*pool)
    assert v.pool_specs(training=True)[3] == Pool(*pool4)
    assert v.pool_specs(training=False)[3].padding == pool4_test
    assert v.pool5 == Pool(3, 1, 1)
    assert (v.fc6_kernel, v.fc6_dilation, v.fc6_padding) == fc6
    assert v.fc_channels == width
    assert v.conv5_dilation == 2
    assert (v.pool5a == Pool(3, 1, 1)) == ("largefov" in name)


def test_msc_variants_share_their_base() -> None:
    fields = (
        "pool",
        "pool4",
        "pool4_eval_padding",
        "pool5",
        "pool5a",
        "fc6_kernel",
        "fc6_dilation",
        "fc6_padding",
        "fc_channels",
        "channels",
    )
    a, b = get_variant("deeplab-msc-largefov"), get_variant("deeplab-largefov")
    assert a.msc and not b.msc
    assert all(getattr(a, f) == getattr(b, f) for f in fields)
    # The released DeepLab-MSc: DeepLab's fc6 on the 3/2/1 pools (not `deeplab`'s 2/2/1).
    msc, deeplab, largefov = (get_variant(n) for n in ("deeplab-msc", "deeplab", "deeplab-4x4"))
    assert all(getattr(msc, f) == getattr(largefov, f) for f in fields[:5])
    assert all(getattr(msc, f) == getattr(deeplab, f) for f in fields[5:])
    assert (msc.train_crop, msc.test_crop, msc.score_crop) == (321, 513, 0)
    assert (deeplab.train_crop, deeplab.test_crop, deeplab.score_crop) == (306, 514, 7)
    assert msc.msc_train_fc8 and not a.msc_train_fc8


def test_tiny_keeps_the_largefov_topology() -> None:
    tiny, big = get_variant("deeplab-largefov-tiny"), get_variant("deeplab-largefov")
    same = dataclasses.replace(
        tiny,
        name=big.name,
        paper_name=big.paper_name,
        description=big.description,
        channels=big.channels,
        fc_channels=big.fc_channels,
        dropout=big.dropout,
        paper_params_m=big.paper_params_m,
        caffe_config=big.caffe_config,
        init_weights=big.init_weights,
    )
    assert same == big


@pytest.mark.parametrize("name", list(PAPER_PARAMS_M))
def test_parameter_counts_match_the_paper(name: str) -> None:
    with torch.device("meta"):
        model = build_model(name, num_classes=21)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / 1e6 - PAPER_PARAMS_M[name]) < 0.1
    assert get_variant(name).paper_params_m == PAPER_PARAMS_M[name]


def test_msc_adds_five_branches_of_the_paper_size() -> None:
    with torch.device("meta"):
        base = build_model("deeplab-largefov")
        msc = build_model("deeplab-msc-largefov")
    extra = sum(p.numel() for p in msc.parameters()) - sum(p.numel() for p in base.parameters())
    ins = (3, 64, 128, 256, 512)
    expected = sum(c * 9 * 128 + 128 + 128 * 128 + 128 + 128 * 21 + 21 for c in ins)
    assert extra == expected


@pytest.mark.parametrize(
    "pool", [Pool(2, 2, 1), Pool(3, 2, 1), Pool(2, 1, 0), Pool(2, 1, 1), Pool(3, 1, 1)]
)
def test_caffe_pool_arithmetic_equals_torch_ceil_mode(pool: Pool) -> None:
    for n in range(2, 70):
        x = torch.zeros(1, 1, n, 1)
        y = F.max_pool2d(x, (pool.kernel, 1), (pool.stride, 1), (pool.padding, 0), ceil_mode=True)
        assert y.shape[2] == caffe_pool_size(n, pool), n


def test_known_output_sizes() -> None:
    # Paper section 3.2: "Given a 306x306 input image, it produces 39x39 dense raw feature
    # scores"; the others map their 321 crops to 41 (the released train nets).
    assert get_variant("deeplab").output_size(306, training=True) == 39
    for name in BIG:
        if name != "deeplab":
            assert get_variant(name).output_size(321) == 41
            assert get_variant(name).output_size(513) == 65


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("training", [True, False])
def test_output_stride_is_8_for_odd_and_even_sizes(name: str, training: bool) -> None:
    v = get_variant(name)
    assert v.output_stride == 8
    first = v.output_origin(training)
    assert -8 <= first <= 1
    for n in range(24, 140):
        out = v.output_size(n, training)
        assert v.output_size(n + 8, training) == out + 1
        # the cells, 8 px apart, span the image with at most one cell beyond each edge
        last = first + 8 * (out - 1)
        assert n - 1 - 8 < last <= n - 1 + 8


def test_output_origin() -> None:
    for name in list_models():
        v = get_variant(name)
        if v.pool == Pool(3, 2, 1):
            assert v.output_origin(True) == v.output_origin(False) == 0.0
    deeplab = get_variant("deeplab")
    # 2x2 pools shift each level by half a pixel: labels of `deeplab` are sampled at 1, 9, ...
    assert deeplab.output_origin(training=True) == 0.5
    # test-time pool4 padding adds one leading cell, 8 px earlier; the released test net's
    # fc8_crop drops 7 of the x8-interpolated pixels: pixel p then sits at p - 0.5
    assert deeplab.output_origin(training=False) == 0.5 - 8
    assert deeplab.output_origin(training=False) + deeplab.score_crop == -0.5


def test_bad_sizes() -> None:
    with pytest.raises(ValueError):
        get_variant("deeplab").output_size(0)
