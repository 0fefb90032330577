"""The grid a CRF parameter search runs over, and its coarse-to-fine refinement.

The paper (section 5) chooses w1, theta_alpha and theta_beta by cross-validation on a
subset of val, with w2 = theta_gamma = 3 fixed: a coarse grid (w1 in 5:10, theta_alpha in
50:10:100, theta_beta in 3:1:10, MATLAB notation) and then finer steps around the best
point. Here each round after the first halves the step of every searched axis in a window
of one old step either side of the best point so far (:meth:`SearchSpace.refine`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from deeplab.crf import CRFParams

__all__ = [
    "AXES",
    "NO_CRF",
    "Range",
    "SearchSpace",
    "clean_value",
    "param_key",
    "planned_sizes",
    "round_spaces",
]

AXES: tuple[str, ...] = ("w1", "theta_alpha", "theta_beta", "w2", "theta_gamma")
"""The CRFParams fields a search may vary."""

NO_CRF = "none"
"""The :func:`param_key` of the network alone."""

_DIGITS = 6  # grid values are rounded here so that halved steps give stable keys


def clean_value(value: float) -> float:
    """``value`` rounded as grid values are, so that equal points compare equal."""
    return float(round(float(value), _DIGITS)) + 0.0  # + 0.0 turns -0.0 into 0.0


@dataclass(frozen=True)
class Range:
    """Inclusive values ``start, start + step, ..., <= stop``; ``step`` 0 is one fixed value.

    Written ``start:stop:step`` (:meth:`parse`), e.g. ``50:100:10``; ``start:stop`` means
    step 1 and a single number is a fixed value.
    """

    start: float
    stop: float
    step: float = 0.0

    def __post_init__(self) -> None:
        for name in ("start", "stop", "step"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"range {name} must be finite, got {value}")
            object.__setattr__(self, name, clean_value(value))
        if self.step < 0:
            raise ValueError(f"range step must be >= 0, got {self.step}")
        if self.stop < self.start:
            raise ValueError(f"range stop {self.stop} is below its start {self.start}")
        if self.step == 0 and self.stop != self.start:
            raise ValueError(f"range {self.start}..{self.stop} needs a step > 0")

    @classmethod
    def parse(cls, text: str) -> Range:
        """``"5:10:1"``, ``"5:10"`` (step 1) or ``"3"`` (fixed)."""
        parts = str(text).strip().split(":")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise ValueError(
                f"range {text!r}: expected start:stop:step, start:stop or a number"
            ) from None
        if len(numbers) == 1:
            return cls(numbers[0], numbers[0], 0.0)
        if len(numbers) == 2:
            return cls(numbers[0], numbers[1], 1.0)
        if len(numbers) == 3:
            if numbers[2] <= 0 and numbers[0] != numbers[1]:
                raise ValueError(f"range {text!r}: the step must be > 0")
            return cls(numbers[0], numbers[1], numbers[2] if numbers[0] != numbers[1] else 0.0)
        raise ValueError(f"range {text!r}: expected start:stop:step, start:stop or a number")

    @property
    def fixed(self) -> bool:
        return self.step == 0

    def values(self) -> tuple[float, ...]:
        if self.fixed:
            return (self.start,)
        # Counting steps (not adding them up) keeps 0.1-type steps from drifting past stop.
        n = math.floor((self.stop - self.start) / self.step + 1e-9)
        return tuple(clean_value(self.start + i * self.step) for i in range(n + 1))

    def __str__(self) -> str:
        if self.fixed:
            return f"{self.start:g}"
        return f"{self.start:g}:{self.stop:g}:{self.step:g}"


@dataclass(frozen=True)
class SearchSpace:
    """A grid over the CRF parameters: one :class:`Range` per field of :data:`AXES`.

    The defaults are the paper's coarse grid (section 5) with the pos kernel fixed at
    w2 = theta_gamma = 3, DeepLab's 10 iterations and normalise-after.
    """

    w1: Range = Range(5, 10, 1)
    theta_alpha: Range = Range(50, 100, 10)
    theta_beta: Range = Range(3, 10, 1)
    w2: Range = Range(3, 3)
    theta_gamma: Range = Range(3, 3)
    iterations: int = 10
    normalization: str = "after"

    def __post_init__(self) -> None:
        for axis in AXES:
            r = getattr(self, axis)
            if not isinstance(r, Range):
                r = Range.parse(str(r))
                object.__setattr__(self, axis, r)
            positive = axis.startswith("theta")
            if r.start < 0 or (positive and r.start == 0):
                bound = "> 0" if positive else ">= 0"
                raise ValueError(f"{axis} range {r} must stay {bound}")
        # Fails here, not in a worker, on bad iterations or normalization.
        CRFParams(iterations=self.iterations, normalization=self.normalization)

    def grid(self) -> list[CRFParams]:
        """Every combination, w1 slowest and theta_gamma fastest."""
        axes = [getattr(self, a).values() for a in AXES]
        return [
            CRFParams(
                w1=w1,
                theta_alpha=theta_alpha,
                theta_beta=theta_beta,
                w2=w2,
                theta_gamma=theta_gamma,
                iterations=self.iterations,
                normalization=self.normalization,
            )
            for w1, theta_alpha, theta_beta, w2, theta_gamma in itertools.product(*axes)
        ]

    def size(self) -> int:
        return math.prod(len(getattr(self, a).values()) for a in AXES)

    def refine(self, best: CRFParams, window: float = 1.0) -> SearchSpace:
        """The next round's grid: half the step, ``window`` old steps either side of ``best``.

        Fixed axes stay fixed. The window may leave the previous range (the authors' final
        values lie outside their coarse grid) but never the valid domain: weights >= 0,
        theta > 0.
        """
        if window < 0.5:
            raise ValueError(f"refinement window must be >= 0.5 old steps, got {window}")
        changes: dict[str, Range] = {}
        for axis in AXES:
            r = getattr(self, axis)
            if r.fixed:
                continue
            centre = float(getattr(best, axis))
            step = r.step / 2
            reach = math.floor(window * 2 + 1e-9)  # new steps either side
            below = reach
            while below > 0 and not _valid(axis, centre - below * step):
                below -= 1
            changes[axis] = Range(centre - below * step, centre + reach * step, step)
        return self._with_ranges(changes)

    def _with_ranges(self, changes: Mapping[str, Range]) -> SearchSpace:
        def pick(axis: str) -> Range:
            return changes.get(axis, getattr(self, axis))

        return SearchSpace(
            w1=pick("w1"),
            theta_alpha=pick("theta_alpha"),
            theta_beta=pick("theta_beta"),
            w2=pick("w2"),
            theta_gamma=pick("theta_gamma"),
            iterations=self.iterations,
            normalization=self.normalization,
        )

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {a: str(getattr(self, a)) for a in AXES}
        out.update(iterations=self.iterations, normalization=self.normalization)
        return out


def _valid(axis: str, value: float) -> bool:
    value = clean_value(value)
    return value > 0 if axis.startswith("theta") else value >= 0


def param_key(params: CRFParams | None) -> str:
    """A stable text key of a parameter set (``"none"``: no CRF)."""
    if params is None:
        return NO_CRF
    values = ",".join(f"{a}={clean_value(getattr(params, a))!r}" for a in AXES)
    return f"{values},iterations={params.iterations},normalization={params.normalization}"


def round_spaces(
    space: SearchSpace,
    rounds: int,
    best_of: Callable[[SearchSpace], CRFParams],
    window: float = 1.0,
) -> Iterator[SearchSpace]:
    """Round 0's space, then ``rounds`` refinements, each around ``best_of(previous)``
    (called only once the previous round's grid has been scored)."""
    if rounds < 0:
        raise ValueError(f"refinement rounds must be >= 0, got {rounds}")
    current = space
    yield current
    for _ in range(rounds):
        current = current.refine(best_of(current), window)
        yield current


def planned_sizes(space: SearchSpace, rounds: int, window: float = 1.0) -> list[int]:
    """Grid points of round 0 and of each refinement round, before clipping at the valid
    domain (:meth:`SearchSpace.refine` keeps ``floor(2 window)`` new steps either side)."""
    reach = math.floor(window * 2 + 1e-9)
    searched = sum(not getattr(space, a).fixed for a in AXES)
    return [space.size()] + [(2 * reach + 1) ** searched] * max(rounds, 0)
