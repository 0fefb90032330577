"""A finished CRF parameter search: the ranking, the network alone and the reference on
the same images, and hints on the ranges searched (paper section 5)."""

from __future__ import annotations

from dataclasses import dataclass, field

from deeplab.crf import CRFParams
from deeplab.tune.search_log import Entry
from deeplab.tune.space import AXES, SearchSpace, clean_value

__all__ = ["TuneResult"]


@dataclass
class TuneResult:
    """A finished search.

    Attributes:
        ranking: every grid point of every round, best first.
        best: ``ranking[0]``.
        no_crf: the network alone on the same images.
        reference: the reference preset (None when not asked for).
        images: the names scored.
        computed: parameter sets scored in this call (the rest came from the log).
        seconds: wall time of this call.
    """

    ranking: list[Entry]
    no_crf: Entry
    reference: Entry | None
    reference_name: str | None
    space: SearchSpace
    rounds: int
    images: list[str]
    class_names: tuple[str, ...]
    computed: int
    seconds: float
    round_sizes: list[int] = field(default_factory=list)

    @property
    def best(self) -> Entry:
        return self.ranking[0]

    @property
    def best_params(self) -> CRFParams:
        assert self.best.params is not None
        return self.best.params

    def notes(self) -> list[str]:
        """Hints on the ranges: every set scoring the same (the CRF makes no difference
        there); an axis whose best value is the smallest or largest value searched, with no
        equally good set inside the range, may do better further out; a reference that
        beats the best."""
        out = []
        scores = [e.mean_iou for e in self.ranking]
        if len(scores) > 1 and max(scores) - min(scores) <= 1e-12:
            out.append(
                f"all {len(scores)} parameter sets score the same mean IoU "
                f"({100 * scores[0]:.2f}%): these ranges make no difference on these images; "
                "try other ranges or more images"
            )
        else:
            best_score = self.best.mean_iou
            tied = [e.params for e in self.ranking if e.params and e.mean_iou >= best_score]
            for axis in AXES:
                searched = sorted(
                    {clean_value(getattr(e.params, axis)) for e in self.ranking if e.params}
                )
                values = {clean_value(getattr(p, axis)) for p in tied}
                if len(searched) < 2 or len(values) != 1:
                    continue
                value = values.pop()
                if searched[0] < value < searched[-1]:
                    continue
                side = "smallest" if value == searched[0] else "largest"
                out.append(
                    f"best {axis} = {value:g} is the {side} value searched "
                    f"({searched[0]:g}..{searched[-1]:g}): a wider range may find better values"
                )
        if self.reference is not None and self.reference.mean_iou > self.best.mean_iou:
            out.append(
                f"the reference ({self.reference_name or 'given'}) scores higher than every "
                "point searched: widen the ranges"
            )
        return out
