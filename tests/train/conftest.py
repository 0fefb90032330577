"""Shared fixtures of the training tests: one torch thread, tiny recipes and data."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from deeplab.train import DataSpec, Recipe, resolve_recipe


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # One thread is fast on a shared 2-core machine and makes CPU runs bit-reproducible
    # between processes (the kill/resume test compares against a subprocess).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY_RECIPE = dict(
    model="deeplab-largefov-tiny", iterations=4, batch=2, crop=41, lr=0.01, checkpoint_every=2,
    log_every=1, workers=0,
)  # fmt: skip
"""deeplab-largefov-tiny on 41x41 crops (6x6 scores), a few iterations."""


@pytest.fixture
def tiny_recipe() -> Callable[..., Recipe]:
    def make(**overrides: object) -> Recipe:
        return resolve_recipe(overrides={**TINY_RECIPE, **overrides})

    return make


@pytest.fixture
def tiny_data() -> DataSpec:
    """12 synthetic 48x48 scenes."""
    return DataSpec(kind="synthetic", synthetic_count=12, synthetic_size=(48, 48))
