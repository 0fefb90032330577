"""CRF parameter search (paper section 4.1): the search on saved scores, the resumable log,
the report files, and agreement with `evaluate_saved` on the same saved scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deeplab.crf import CRFParams
from deeplab.data import SyntheticScenes
from deeplab.evaluate import evaluate_saved
from deeplab.predict import padded_size
from deeplab.saved_scores import save_logits
from deeplab.tune import (
    SEARCH_LOG,
    Range,
    SearchSpace,
    param_key,
    search,
    select_images,
    tune_crf,
)

DEFAULT = CRFParams.preset("deeplab-largefov")  # w1=4, theta_alpha=121, theta_beta=5
# A small grid holding the default preset, 3 iterations so each CRF takes milliseconds.
SMALL = SearchSpace(
    w1=Range(2, 4, 2),
    theta_alpha=Range(21, 121, 50),
    theta_beta=Range(5, 15, 10),
    iterations=3,
)


# One thread for torch and numba (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def _oracle_logits(label: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Stride-8 scores a decent network might give: the label at each cell centre (void
    read as background), spread over the neighbouring cells and with noise, so that the x8
    upsampling blurs every boundary and the CRF has something to fix."""
    h, w = padded_size(*label.shape, None)
    ys = np.minimum(np.arange(0, h, 8), label.shape[0] - 1)
    xs = np.minimum(np.arange(0, w, 8), label.shape[1] - 1)
    cells = label[np.ix_(ys, xs)]
    cells = np.where(cells == 255, 0, cells)
    onehot = np.eye(num_classes, dtype=np.float32)[cells].transpose(2, 0, 1)
    padded = np.pad(onehot, ((0, 0), (1, 1), (1, 1)), mode="edge")
    spread = sum(
        padded[:, 1 + dy : 1 + dy + cells.shape[0], 1 + dx : 1 + dx + cells.shape[1]]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )
    return 0.75 * spread + rng.normal(0, 0.25, spread.shape).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticScenes]:
    """Three 96x96 scenes and their oracle stride-8 scores saved as `evaluate` saves them."""
    folder = tmp_path_factory.mktemp("logits")
    scenes = SyntheticScenes(3, size=(96, 96), seed=7)
    rng = np.random.default_rng(0)
    for s in scenes:
        logits = _oracle_logits(s.label, 6, rng)
        save_logits(folder, s.name, logits, s.size, padded_size(*s.size, None), "float32")
    return folder, scenes


def _table(out: Path) -> list[tuple[str, float]]:
    data = json.loads((out / "ranking.json").read_text())
    return [(json.dumps(r["params"], sort_keys=True), r["mean_iou"]) for r in data["ranking"]]


def test_search_finds_at_least_the_default_inside_the_grid(
    tmp_path: Path, saved: tuple[Path, SyntheticScenes]
) -> None:
    folder, scenes = saved
    default = DEFAULT.replace(iterations=3)
    assert param_key(default) in {param_key(p) for p in SMALL.grid()}
    result, paths = tune_crf(
        folder,
        scenes,
        tmp_path,
        SMALL,
        rounds=0,
        reference=default,
        reference_name="deeplab-largefov",
    )
    assert result.reference is not None
    assert result.best.mean_iou >= result.reference.mean_iou
    assert result.best.mean_iou > result.no_crf.mean_iou  # the CRF sharpens blurred boundaries
    assert len({e.mean_iou for e in result.ranking}) > 1  # the parameters matter here
    # The default was scored once, as a reference, and reused as a grid point.
    lines = (tmp_path / SEARCH_LOG).read_text().splitlines()
    keys = [json.loads(line).get("key") for line in lines[1:]]
    assert len(keys) == len(set(keys)) == result.computed
    assert result.round_sizes == [12] and len(result.ranking) == len(keys) - 1  # minus no-CRF
    assert [e.mean_iou for e in result.ranking] == sorted(
        (e.mean_iou for e in result.ranking), reverse=True
    )
    # The tuner scores exactly as `evaluate --from-logits --crf` does.
    check = evaluate_saved(folder, scenes, result.best_params)
    assert check.crf is not None
    np.testing.assert_array_equal(check.crf.matrix, result.best.confusion.matrix)
    np.testing.assert_array_equal(check.plain.matrix, result.no_crf.confusion.matrix)
    # Report files: best params readable by CRFParams.load (both files), a PNG heat map.
    assert CRFParams.load(paths["best"]) == result.best_params
    assert CRFParams.load(paths["json"]) == result.best_params
    assert paths["heatmap"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["markdown"].read_text()
    assert "| no CRF |" in text and "| reference (deeplab-largefov) |" in text
    report = json.loads(paths["json"].read_text())
    assert report["reference"]["mean_iou"] == pytest.approx(result.reference.mean_iou)
    # Range-edge hints name exactly the axes whose best value sits on an edge.
    edges = set()
    for axis in ("w1", "theta_alpha", "theta_beta"):
        values = getattr(SMALL, axis).values()
        if getattr(result.best_params, axis) in (values[0], values[-1]):
            edges.add(axis)
    assert {n.split()[1] for n in result.notes()} == edges
    assert report["notes"] == result.notes()
    assert report["ranking"][0]["rank"] == 1 and report["num_images"] == 3


def test_interrupted_search_resumes_to_the_same_table(
    tmp_path: Path, saved: tuple[Path, SyntheticScenes]
) -> None:
    folder, scenes = saved
    space = SearchSpace(
        w1=Range(2, 4, 2), theta_alpha=Range(10, 20, 10), theta_beta=Range(5, 5), iterations=2
    )
    options = {"rounds": 1, "reference": None, "num_images": 2}
    whole = tmp_path / "whole"
    full, _ = tune_crf(folder, scenes, whole, space, **options)
    assert full.round_sizes[0] == 4 and len(full.round_sizes) == 2

    class StopError(Exception):
        pass

    # CRF runs (set x image) before the interruption: inside round 1. The count jumps over
    # the sets round 1 shares with round 0 (found in the log), hence ">=".
    runs = 26

    parts = tmp_path / "parts"

    def stop_after_runs(done: int, planned: int) -> None:
        if done >= runs:
            raise StopError

    with pytest.raises(StopError):
        search(folder, scenes, parts, space, progress=stop_after_runs, **options)
    # Sets finished before it: no-CRF, round 0 and some of round 1 (those of a lattice
    # group run together, so how many depends on the groups).
    k = len((parts / SEARCH_LOG).read_text().splitlines()) - 1
    assert 1 + full.round_sizes[0] < k < runs // 2
    # A run killed while writing leaves half a line: it is dropped, not misread.
    with open(parts / SEARCH_LOG, "a") as handle:
        handle.write('{"type": "result", "key": "w1=')
    seen: list[tuple[int, int]] = []
    result, _ = tune_crf(
        folder,
        scenes,
        parts,
        space,
        progress=lambda done, planned: seen.append((done, planned)),
        **options,
    )
    total = len(result.ranking) + 1
    assert result.computed == total - k
    # The sets already in the log count as done from the first call on.
    assert seen[1][0] == 2 * 5 and seen[-1][0] == seen[-1][1]
    assert _table(parts) == _table(whole)
    # Once complete, a rerun computes nothing.
    again, _ = tune_crf(folder, scenes, parts, space, **options)
    assert again.computed == 0 and _table(parts) == _table(whole)


def test_log_of_other_images_is_refused(
    tmp_path: Path, saved: tuple[Path, SyntheticScenes]
) -> None:
    folder, scenes = saved
    space = SearchSpace(
        w1=Range(3, 3), theta_alpha=Range(10, 10), theta_beta=Range(5, 5), iterations=1
    )
    search(folder, scenes, tmp_path, space, rounds=0, num_images=2)
    with pytest.raises(ValueError, match="other images"):
        search(folder, scenes, tmp_path, space, rounds=0, num_images=3)


def test_image_selection(tmp_path: Path, saved: tuple[Path, SyntheticScenes]) -> None:
    folder, scenes = saved
    assert select_images(folder, scenes, 2) == [(0, "scene_000000"), (1, "scene_000001")]
    assert len(select_images(folder, scenes, 100)) == 3  # fewer saved than asked: a warning
    # Spread: the first and last saved images and every other one in between.
    assert select_images(folder, scenes, 2, spread=True) == [
        (0, "scene_000000"),
        (2, "scene_000002"),
    ]
    assert len(select_images(folder, scenes, 100, spread=True)) == 3
    with pytest.raises(ValueError, match="no saved scores"):
        select_images(tmp_path, scenes, 1)
    with pytest.raises(FileNotFoundError):
        select_images(tmp_path / "missing", scenes, 1)
    other = tmp_path / "other"
    save_logits(other, "scene_000000", np.zeros((6, 13, 13), np.float32), (90, 96), (97, 97))
    with pytest.raises(ValueError, match="saved scores are for"):
        search(other, scenes, tmp_path / "out", SMALL, rounds=0)


def test_worker_pool_agrees_with_inline(
    tmp_path: Path, saved: tuple[Path, SyntheticScenes]
) -> None:
    folder, scenes = saved
    space = SearchSpace(
        w1=Range(2, 4, 2), theta_alpha=Range(21, 21), theta_beta=Range(5, 15, 10), iterations=2
    )
    inline, _ = tune_crf(folder, scenes, tmp_path / "a", space, rounds=0, reference=None)
    pooled, _ = tune_crf(folder, scenes, tmp_path / "b", space, rounds=0, reference=None, workers=2)
    assert _table(tmp_path / "a") == _table(tmp_path / "b")
    assert pooled.best.key == inline.best.key


@pytest.mark.slow
def test_worker_that_cannot_load_reports_why(
    tmp_path: Path, saved: tuple[Path, SyntheticScenes]
) -> None:
    # Pool initializers that raise are respawned forever: the error must reach the caller.
    _, scenes = saved
    space = SearchSpace(w1=Range(3, 3), theta_alpha=Range(10, 10), theta_beta=Range(5, 5))
    other = tmp_path / "other"
    save_logits(other, "scene_000000", np.zeros((6, 13, 13), np.float32), (90, 96), (97, 97))
    with pytest.raises(ValueError, match="saved scores are for"):
        search(other, scenes, tmp_path / "c", space, rounds=0, workers=1)


def test_progress_total_is_known_from_the_start(
    tmp_path: Path, saved: tuple[Path, SyntheticScenes]
) -> None:
    folder, scenes = saved
    # Refinement windows that never reach theta <= 0, so no round is clipped.
    space = SearchSpace(w1=Range(2, 4, 2), theta_alpha=Range(60, 100, 40),
                        theta_beta=Range(25, 25), iterations=2)  # fmt: skip
    calls: list[tuple[int, int]] = []
    search(folder, scenes, tmp_path, space, rounds=1,
           progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    totals = {total for _, total in calls}
    assert totals == {3 * (1 + 4 + 25)}  # images x (no CRF + coarse grid + refinement)
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == 3 * 30
    # Resumed: everything is found in the log and counts as done at once.
    calls.clear()
    search(folder, scenes, tmp_path, space, rounds=1,
           progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    assert calls[-1] == (90, 90) and {t for _, t in calls} == {90}
