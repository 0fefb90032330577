"""tune-crf's engine: parameter sets scored together on one image give exactly what each
gives on its own through `dense_crf` / `score_image`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deeplab.crf import CRFParams, dense_crf_from_logits
from deeplab.data import SyntheticScenes
from deeplab.predict import padded_size, upsample_logits
from deeplab.tune import Range, SearchSpace, param_key
from deeplab.tune.engine import _SharedKernels, group_tasks, score_each, score_shared

NUM_CLASSES = 6


# One thread for torch and numba (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def _scenes() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, label, stride-8 scores) of three small scenes: noisy scores around the
    label, so that the CRF changes the answer and its parameters matter."""
    rng = np.random.default_rng(5)
    out = []
    for sample in SyntheticScenes(3, size=(56, 72), seed=3):
        h, w = padded_size(*sample.size, None)
        ys = np.minimum(np.arange(0, h, 8), sample.size[0] - 1)
        xs = np.minimum(np.arange(0, w, 8), sample.size[1] - 1)
        cells = np.where(sample.label[np.ix_(ys, xs)] == 255, 0, sample.label[np.ix_(ys, xs)])
        onehot = np.eye(NUM_CLASSES, dtype=np.float32)[cells].transpose(2, 0, 1)
        logits = 2 * onehot + rng.normal(0, 1.0, onehot.shape).astype(np.float32)
        out.append((sample.image, sample.label, logits))
    return out


def _settings() -> list[tuple[str, dict | None]]:
    """Groups of several weights per lattice, weights of 0 (a kernel left out), two
    theta_gamma, every normalisation, iteration counts and the no-CRF case."""
    params = [None]
    params += SearchSpace(
        w1=Range(0, 10, 5),
        theta_alpha=Range(20, 60, 40),
        theta_beta=Range(3, 9, 6),
        w2=Range(0, 3, 3),
        iterations=4,
    ).grid()
    params += [
        CRFParams(w1=4, theta_alpha=30, theta_beta=5, w2=3, theta_gamma=1, iterations=2,
                  normalization=norm)
        for norm in ("after", "symmetric", "before", "none")
    ]  # fmt: skip
    params += [CRFParams(w1=4, theta_alpha=30, theta_beta=5, w2=1, theta_gamma=5, iterations=0)]
    return [(param_key(p), None if p is None else p.to_dict()) for p in params]


def test_shared_scoring_equals_scoring_each_setting_alone() -> None:
    settings = _settings()
    distinct = set()
    for image, label, logits in _scenes():
        shared = score_shared(image, label, logits, NUM_CLASSES, settings)
        alone = score_each(image, label, logits, NUM_CLASSES, settings)
        assert [k for k, _ in shared] == [k for k, _ in settings] == [k for k, _ in alone]
        for (key, a), (_, b) in zip(shared, alone, strict=True):
            assert a.dtype == np.int64 and a.shape == (NUM_CLASSES, NUM_CLASSES)
            np.testing.assert_array_equal(a, b, err_msg=key)
            distinct.add(a.tobytes())
    assert len(distinct) > 10  # the settings do lead to different answers here


def test_shared_kernels_give_dense_crf_marginals_bit_for_bit() -> None:
    image, label, logits = _scenes()[0]
    h, w = label.shape
    full = upsample_logits(torch.from_numpy(logits), (h, w)).numpy()
    shared = _SharedKernels(image, np.ascontiguousarray(full))
    for key, params in _settings()[1:]:
        assert params is not None
        p = CRFParams.from_dict(params)
        expected = dense_crf_from_logits(image, np.ascontiguousarray(full), p)
        got = shared.crf_for(p).inference(p.iterations).reshape(expected.shape)
        np.testing.assert_array_equal(got, expected, err_msg=key)
    # Each bilateral kernel was built once per (alpha, beta, norm); the spatial ones are
    # kept across images of one size by deeplab.crf.kernel_cache (tests/crf).
    assert len(shared.bilateral) == 4 + 4


def test_tasks_group_the_sets_of_one_lattice_group_by_group() -> None:
    grid = SearchSpace().grid()  # the paper's coarse grid: 288 sets, 48 (alpha, beta) pairs
    todo = {param_key(p): p for p in [None, *grid]}
    tasks = group_tasks(todo, 3)
    assert len(tasks) == 3 * (1 + 48)
    assert [i for i, _ in tasks[:6]] == [0, 1, 2, 0, 1, 2]
    assert tasks[0][1] == ((param_key(None), None),)
    seen = [key for i, settings in tasks if i == 0 for key, _ in settings]
    assert sorted(seen) == sorted(todo)  # every set once per image
    for _, settings in tasks[3:]:
        assert len(settings) == 6  # w1 = 5..10 over one bilateral lattice
        pairs = {(s["theta_alpha"], s["theta_beta"]) for _, s in settings if s is not None}
        assert len(pairs) == 1
