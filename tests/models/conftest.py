"""Shared fixtures of the networks tests."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from deeplab.models.variants import Variant, get_variant


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny() -> Variant:
    return get_variant("deeplab-largefov-tiny")


@pytest.fixture
def tiny_msc(tiny: Variant) -> Variant:
    """The tiny LargeFOV trunk with (narrow) MSc branches: exercises MSc cheaply."""
    return dataclasses.replace(tiny, name="tiny-msc", msc=True, msc_channels=8)


@pytest.fixture
def tiny_deeplab(tiny: Variant) -> Variant:
    """`deeplab`'s 2/2/1 pooling and train/test pool4 on the tiny channel widths, with MSc
    branches (not a released net: the released DeepLab-MSc has 3/2/1 pools; this exercises
    the branch alignment on a grid that moves between levels)."""
    big = get_variant("deeplab")
    return dataclasses.replace(
        big,
        name="tiny-deeplab-msc",
        channels=tiny.channels,
        fc_channels=32,
        msc=True,
        msc_channels=8,
        dropout=0.0,
    )
