"""A finished search's notes on the ranges searched."""

from __future__ import annotations

from deeplab.crf import CRFParams
from deeplab.tune import (
    Entry,
    Range,
    SearchSpace,
    TuneResult,
    rank_entries,
)

from .helpers import entry as _entry


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
