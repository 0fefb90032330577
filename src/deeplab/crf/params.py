"""CRF parameters in the paper's notation (Chen et al. 2015, section 4, eq. 3), and the
authors' presets (section 5)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeplab.crf._files import write_atomically
from deeplab.crf.validation import (
    NORMALIZATIONS,
    check_iterations,
    check_nonnegative,
    check_normalization,
    check_positive,
)

__all__ = ["NORMALIZATIONS", "PRESETS", "CRFParams", "check_params"]


# Smallest standard deviation accepted: features are divided by it in float32.
MIN_THETA = 1e-30


@dataclass(frozen=True)
class CRFParams:
    """Fully connected CRF parameters (paper eq. 3; Kraehenbuehl & Koltun 2011).

    The pairwise kernel is ``w1 exp(-|p_i-p_j|^2/2 theta_alpha^2 - |I_i-I_j|^2/2 theta_beta^2)
    + w2 exp(-|p_i-p_j|^2/2 theta_gamma^2)``.

    pydensecrf names: w1 = ``compat`` and theta_alpha = ``sxy``, theta_beta = ``srgb`` of
    ``addPairwiseBilateral``; w2 = ``compat`` and theta_gamma = ``sxy`` of
    ``addPairwiseGaussian``; iterations = ``inference(n)``; normalization "after" =
    ``NORMALIZE_AFTER`` (DeepLab's code), "symmetric" = ``NORMALIZE_SYMMETRIC``
    (pydensecrf's default), "before" = ``NORMALIZE_BEFORE``, "none" = ``NO_NORMALIZATION``.
    The defaults are the ``deeplab-largefov`` preset.
    """

    w1: float = 4.0
    theta_alpha: float = 121.0
    theta_beta: float = 5.0
    w2: float = 3.0
    theta_gamma: float = 3.0
    iterations: int = 10
    normalization: str = "after"

    def __post_init__(self) -> None:
        for name in ("w1", "w2"):
            object.__setattr__(self, name, check_nonnegative(getattr(self, name), name))
        for name in ("theta_alpha", "theta_beta", "theta_gamma"):
            theta = check_positive(getattr(self, name), name)
            if theta < MIN_THETA:
                # Features are float32: x / 1e-300 is inf, and the error would name them.
                raise ValueError(f"{name} must be at least {MIN_THETA:g}, got {theta!r}")
            object.__setattr__(self, name, theta)
        object.__setattr__(self, "iterations", check_iterations(self.iterations))
        check_normalization(self.normalization)

    @classmethod
    def preset(cls, name: str) -> CRFParams:
        """The named preset; see :func:`preset_names`."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(
                f"unknown CRF preset {name!r}; choose one of {', '.join(PRESETS)}"
            ) from None

    @staticmethod
    def preset_names() -> tuple[str, ...]:
        return tuple(PRESETS)

    def replace(self, **changes: Any) -> CRFParams:
        """A copy with some fields changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CRFParams:
        if not isinstance(data, Mapping):
            raise ValueError(f"CRF parameters: expected a mapping, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"CRF parameters: unknown field(s) {unknown}; known: {sorted(fields)}")
        return cls(**dict(data))

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically), readable by :meth:`load` and ``--crf FILE``."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        write_atomically(Path(path), text.encode())

    @classmethod
    def load(cls, path: str | Path) -> CRFParams:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{p}: not UTF-8 text (byte {exc.start})") from None
        except ValueError as exc:  # JSONDecodeError, or an integer of over 4300 digits
            raise ValueError(f"{p}: not valid JSON CRF parameters ({exc})") from None
        except RecursionError:
            raise ValueError(f"{p}: JSON nested too deeply") from None
        if isinstance(data, Mapping) and "params" in data and isinstance(data["params"], Mapping):
            data = data["params"]  # a tune-crf result file carries them under "params"
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{p}: {exc}") from None

    @classmethod
    def resolve(cls, spec: str | Path | CRFParams) -> CRFParams:
        """A preset name, a JSON file path, or params as they are."""
        if isinstance(spec, CRFParams):
            return spec
        s = str(spec)
        if s in PRESETS:
            return PRESETS[s]
        if Path(s).is_file():
            return cls.load(s)
        raise ValueError(
            f"CRF {s!r} is neither a preset ({', '.join(PRESETS)}) nor an existing JSON file"
        )


def check_params(params: CRFParams | None) -> CRFParams:
    """``params``, or the default (``deeplab-largefov``) for None; TypeError for others."""
    params = CRFParams() if params is None else params
    if not isinstance(params, CRFParams):
        raise TypeError(f"params: expected CRFParams, got {type(params).__name__}")
    return params


PRESETS: dict[str, CRFParams] = {
    # The authors' cross-validated values (paper section 5; normalise-after, 10 iterations).
    "deeplab": CRFParams(w1=5, theta_alpha=50, theta_beta=10),
    "deeplab-msc": CRFParams(w1=3, theta_alpha=95, theta_beta=3),
    "deeplab-largefov": CRFParams(w1=4, theta_alpha=121, theta_beta=5),
    "deeplab-msc-largefov": CRFParams(w1=4, theta_alpha=83, theta_beta=5),
    # The classic pydensecrf demo settings.
    "krahenbuhl2013": CRFParams(
        w1=10, theta_alpha=80, theta_beta=13, iterations=5, normalization="symmetric"
    ),
}
