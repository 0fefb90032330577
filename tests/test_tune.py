"""CRF parameter search (SPEC section 4): grids and refinement, ranking, the resumable log,
the report files, and agreement with `evaluate_saved` on the same saved scores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab.crf import CRFParams
from deeplab.data import SyntheticScenes
from deeplab.evaluate import evaluate_saved, save_logits
from deeplab.metrics import ConfusionMatrix
from deeplab.predict import padded_size
from deeplab.tune import (
    SEARCH_LOG,
    Entry,
    Range,
    SearchSpace,
    TuneResult,
    heatmap_slice,
    param_key,
    plot_heatmap,
    rank_entries,
    round_spaces,
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


# --------------------------------------------------------------------------- pure functions


def test_range_parsing_and_values() -> None:
    assert Range.parse("5:10:1").values() == (5, 6, 7, 8, 9, 10)
    assert Range.parse("50:100:10").values() == (50, 60, 70, 80, 90, 100)
    assert Range.parse("3:10").values() == tuple(range(3, 11))
    assert Range.parse("3").values() == (3.0,) and Range.parse("3").fixed
    assert Range.parse("4:4:2").fixed
    # Steps are counted, not summed: no 0.30000000000000004 and no value past stop.
    assert Range.parse("0.1:0.7:0.1").values() == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    assert Range.parse("1:2:0.3").values() == (1.0, 1.3, 1.6, 1.9)
    assert str(Range.parse("50:100:10")) == "50:100:10" and str(Range(3, 3)) == "3"
    for bad in ("a:b", "10:5:1", "1:2:0", "1:2:3:4", "", "1:nan:1"):
        with pytest.raises(ValueError):
            Range.parse(bad)


def test_paper_coarse_grid() -> None:
    space = SearchSpace()
    grid = space.grid()
    # w1 in 5:10, theta_alpha in 50:10:100, theta_beta in 3:1:10 (SPEC section 4).
    assert len(grid) == space.size() == 6 * 6 * 8
    assert len({param_key(p) for p in grid}) == len(grid)
    assert {p.w1 for p in grid} == set(range(5, 11))
    assert {p.theta_alpha for p in grid} == set(range(50, 101, 10))
    assert {p.theta_beta for p in grid} == set(range(3, 11))
    assert all(p.w2 == 3 and p.theta_gamma == 3 and p.iterations == 10 for p in grid)
    assert all(p.normalization == "after" for p in grid)
    # w1 slowest, theta_beta fastest.
    assert (grid[0].w1, grid[0].theta_alpha, grid[0].theta_beta) == (5, 50, 3)
    assert (grid[1].w1, grid[1].theta_alpha, grid[1].theta_beta) == (5, 50, 4)
    assert (grid[8].w1, grid[8].theta_alpha) == (5, 60)
    assert param_key(CRFParams.preset("deeplab")) in {param_key(p) for p in grid}
    with pytest.raises(ValueError, match="theta_alpha"):
        SearchSpace(theta_alpha=Range(0, 10, 5))
    with pytest.raises(ValueError, match="normalization"):
        SearchSpace(normalization="sideways")


def test_refinement_halves_steps_around_the_best() -> None:
    space = SearchSpace()
    best = CRFParams(w1=5, theta_alpha=100, theta_beta=7)
    fine = space.refine(best)
    assert fine.w1 == Range(4, 6, 0.5)  # may leave the coarse range (5..10)
    assert fine.theta_alpha == Range(90, 110, 5)
    assert fine.theta_beta == Range(6, 8, 0.5)
    assert fine.w2 == Range(3, 3) and fine.theta_gamma == Range(3, 3)  # fixed axes stay
    assert fine.size() == 125
    # Every coarse neighbour of the best is in the refined grid, so nothing better is lost.
    keys = {param_key(p) for p in fine.grid()}
    assert param_key(CRFParams(w1=6, theta_alpha=90, theta_beta=8)) in keys
    finer = fine.refine(CRFParams(w1=4.5, theta_alpha=105, theta_beta=6.5))
    assert finer.w1 == Range(4, 5, 0.25) and finer.theta_beta.step == 0.25
    # A wider window: two old steps either side.
    assert space.refine(best, window=2).theta_alpha == Range(80, 120, 5)
    # The valid domain bounds the window: theta > 0, weights >= 0.
    low = SearchSpace(w1=Range(0, 2, 1), theta_beta=Range(1, 3, 1))
    clipped = low.refine(CRFParams(w1=0, theta_alpha=50, theta_beta=1))
    assert clipped.w1 == Range(0, 1, 0.5)
    assert clipped.theta_beta == Range(0.5, 2, 0.5)
    with pytest.raises(ValueError, match="window"):
        space.refine(best, window=0.25)


def test_rounds_ask_for_the_best_only_after_each_round() -> None:
    calls: list[int] = []
    best = CRFParams(w1=7, theta_alpha=60, theta_beta=4)

    def best_of(current: SearchSpace) -> CRFParams:
        calls.append(current.size())
        return best

    gen = round_spaces(SearchSpace(), 2, best_of)
    first = next(gen)
    assert first == SearchSpace() and calls == []
    second = next(gen)
    assert calls == [288] and second.theta_alpha == Range(50, 70, 5)
    third = next(gen)
    assert third.theta_alpha == Range(55, 65, 2.5)
    assert list(gen) == []
    assert [s.size() for s in round_spaces(SearchSpace(), 0, best_of)] == [288]
    with pytest.raises(ValueError, match="rounds"):
        next(round_spaces(SearchSpace(), -1, best_of))


def test_param_keys() -> None:
    assert param_key(None) == "none"
    assert param_key(CRFParams(w1=5)) == param_key(CRFParams(w1=5.0000000001))
    assert param_key(CRFParams(w1=5)) != param_key(CRFParams(w1=5.5))
    assert param_key(CRFParams()) != param_key(CRFParams(iterations=5))
    assert param_key(CRFParams()) != param_key(CRFParams(normalization="symmetric"))


def _entry(params: CRFParams, matrix: list[list[int]]) -> Entry:
    return Entry(params, ConfusionMatrix.from_matrix(np.array(matrix)))


def test_ranking_order_and_ties() -> None:
    a = _entry(CRFParams(w1=5), [[8, 2], [2, 8]])  # mIoU 2/3, accuracy 0.8
    b = _entry(CRFParams(w1=6), [[9, 1], [1, 9]])  # best
    c = _entry(CRFParams(w1=4), [[8, 2], [2, 8]])  # ties a; smaller w1 first
    d = _entry(CRFParams(w1=3), [[10, 0], [10, 0]])  # mIoU 1/4
    empty = _entry(CRFParams(w1=1), [[0, 0], [0, 0]])  # nothing scored: NaN, last
    assert math.isnan(empty.mean_iou)
    ranked = rank_entries([a, empty, d, b, c])
    assert [e.params.w1 for e in ranked] == [6, 4, 5, 3, 1]


def test_heatmap_slice_takes_the_best_w1() -> None:
    entries = [
        _entry(CRFParams(w1=5, theta_alpha=50, theta_beta=3), [[9, 1], [1, 9]]),
        _entry(CRFParams(w1=5, theta_alpha=60, theta_beta=4), [[8, 2], [2, 8]]),
        _entry(CRFParams(w1=6, theta_alpha=50, theta_beta=4), [[1, 9], [9, 1]]),
    ]
    alphas, betas, grid = heatmap_slice(entries, CRFParams(w1=5, theta_alpha=50, theta_beta=3))
    assert alphas == [50, 60] and betas == [3, 4]
    np.testing.assert_allclose(grid, [[0.9 / 1.1, np.nan], [np.nan, 2 / 3]])


def test_heatmap_adds_the_coarse_grid_when_the_best_w1_is_refined(tmp_path: Path) -> None:
    space = SearchSpace(w1=Range(5, 6, 1), theta_alpha=Range(50, 60, 10), theta_beta=Range(3, 4, 1))
    coarse = [_entry(p, [[5 + i, 5], [5, 5 + i]]) for i, p in enumerate(space.grid())]
    refined = _entry(CRFParams(w1=5.5, theta_alpha=55, theta_beta=3.5), [[20, 0], [0, 20]])
    none = _entry(CRFParams(), [[5, 5], [5, 5]])
    widths = {}
    for name, ranking in (("coarse", coarse), ("refined", [refined, *coarse])):
        result = TuneResult(ranking=rank_entries(ranking), no_crf=none, reference=None,
                            reference_name=None, space=space, rounds=1, images=["a"],
                            class_names=("x", "y"), computed=1, seconds=0.0)  # fmt: skip
        with Image.open(plot_heatmap(result, tmp_path / f"{name}.png")) as im:
            widths[name] = im.size[0]
    assert widths["refined"] > 1.6 * widths["coarse"]  # a second panel


def test_notes_on_range_edges_and_a_better_reference() -> None:
    space = SearchSpace()  # w1 5:10:1, theta_alpha 50:100:10, theta_beta 3:10:1
    good, fair = [[9, 1], [1, 9]], [[8, 2], [2, 8]]
    none = _entry(CRFParams(), [[5, 5], [5, 5]])
    better = _entry(CRFParams(), [[10, 0], [0, 10]])

    def result(ranking: list[Entry], reference: Entry) -> TuneResult:
        return TuneResult(ranking=rank_entries(ranking), no_crf=none, reference=reference,
                          reference_name="deeplab-largefov", space=space, rounds=1,
                          images=["a"], class_names=("x", "y"), computed=1,
                          seconds=0.0)  # fmt: skip

    inside = [_entry(CRFParams(w1=7, theta_alpha=70, theta_beta=5), good),
              _entry(CRFParams(w1=6, theta_alpha=60, theta_beta=4), fair),
              _entry(CRFParams(w1=8, theta_alpha=80, theta_beta=6), fair)]  # fmt: skip
    assert result(inside, none).notes() == []
    # The best theta_alpha is the smallest searched, theta_beta the largest; w1 is inside.
    edges = [_entry(CRFParams(w1=7, theta_alpha=45, theta_beta=10), good),
             _entry(CRFParams(w1=6, theta_alpha=60, theta_beta=4), fair),
             _entry(CRFParams(w1=8, theta_alpha=50, theta_beta=9.5), fair)]  # fmt: skip
    assert result(edges, none).notes() == [
        "best theta_alpha = 45 is the smallest value searched (45..60): a wider range may "
        "find better values",
        "best theta_beta = 10 is the largest value searched (4..10): a wider range may find "
        "better values",
    ]
    assert result(inside, better).notes() == [
        "the reference (deeplab-largefov) scores higher than every point searched: widen the ranges"
    ]


# --------------------------------------------------------------------------- search


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


# --------------------------------------------------------------------------- first-hour fixes


def test_heatmap_titles_fit_inside_the_figure() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from deeplab.tune import heatmap_figure

    # The narrowest figure: one panel of a 2x2 grid, long numbers in the titles.
    space = SearchSpace(w1=Range(20, 20), theta_alpha=Range(6, 7, 1), theta_beta=Range(6.5, 7.5, 1))
    ranking = [_entry(p, [[50 + i, 5], [5, 50]]) for i, p in enumerate(space.grid())]
    result = TuneResult(ranking=rank_entries(ranking), no_crf=ranking[0], reference=None,
                        reference_name=None, space=space, rounds=0, images=["a"] * 60,
                        class_names=("x", "y"), computed=1, seconds=0.0)  # fmt: skip
    fig = heatmap_figure(result)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_text")) if a_text(t)]
    titles = [t for t in texts if "best" in t.get_text()]
    assert len(titles) == 2  # the figure's title and the panel's
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1, text.get_text()
        assert extent.y0 >= box.y0 - 1 and extent.y1 <= box.y1 + 1, text.get_text()


def a_text(artist: object) -> bool:
    get = getattr(artist, "get_text", None)
    return callable(get) and isinstance(get(), str) and bool(get().strip())


def test_no_range_note_when_sets_tie() -> None:
    space = SearchSpace(w1=Range(4, 6, 1), theta_alpha=Range(50, 70, 10), theta_beta=Range(3, 5, 1))
    none = _entry(CRFParams(), [[5, 5], [5, 5]])

    def notes(matrices: list[list[list[int]]]) -> list[str]:
        ranking = [_entry(p, m) for p, m in zip(space.grid(), matrices, strict=False)]
        return TuneResult(ranking=rank_entries(ranking), no_crf=none, reference=None,
                          reference_name=None, space=space, rounds=0, images=["a"],
                          class_names=("x", "y"), computed=1,
                          seconds=0.0).notes()  # fmt: skip

    same = [[[9, 1], [1, 9]]] * space.size()
    assert notes(same) == [
        f"all {space.size()} parameter sets score the same mean IoU (81.82%): these ranges "
        "make no difference on these images; try other ranges or more images"
    ]
    # The smallest values tie with inside ones: the edge is no reason to widen the range.
    tied = [[[9, 1], [1, 9]]] * (space.size() // 2) + [[[8, 2], [2, 8]]] * space.size()
    assert not [n for n in notes(tied) if "wider range" in n]
    # A clear winner on the smallest w1: one note, for w1 only.
    edge = [[[10, 0], [0, 10]]] + [[[8, 2], [2, 8]]] * (space.size() - 1)
    assert [n.split()[1] for n in notes(edge)] == ["w1", "theta_alpha", "theta_beta"]


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
