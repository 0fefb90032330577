"""The search grid (paper section 4.1): ranges, the coarse grid, refinement rounds and
parameter keys."""

from __future__ import annotations

import pytest

from deeplab.crf import CRFParams
from deeplab.tune import (
    Range,
    SearchSpace,
    param_key,
    round_spaces,
)


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
    # w1 in 5:10, theta_alpha in 50:10:100, theta_beta in 3:1:10 (paper section 4.1).
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
