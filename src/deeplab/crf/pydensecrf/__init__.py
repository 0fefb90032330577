"""A drop-in replacement for pydensecrf, powered by deeplab's CRF kernels.

``import deeplab.crf.pydensecrf as dcrf`` (or ``import deeplab.crf.pydensecrf.densecrf as
dcrf``) in place of ``import pydensecrf.densecrf as dcrf``, and
``deeplab.crf.pydensecrf.utils`` in place of ``pydensecrf.utils``. Imports numpy and numba
only.
"""

from deeplab.crf.pydensecrf import utils
from deeplab.crf.pydensecrf.densecrf import (
    CONST_KERNEL,
    DIAG_KERNEL,
    FULL_KERNEL,
    NO_NORMALIZATION,
    NORMALIZE_AFTER,
    NORMALIZE_BEFORE,
    NORMALIZE_SYMMETRIC,
    ConstUnary,
    DenseCRF,
    DenseCRF2D,
    KernelType,
    LogisticUnary,
    NormalizationType,
    Unary,
)

__all__ = [
    "CONST_KERNEL",
    "DIAG_KERNEL",
    "FULL_KERNEL",
    "NORMALIZE_AFTER",
    "NORMALIZE_BEFORE",
    "NORMALIZE_SYMMETRIC",
    "NO_NORMALIZATION",
    "ConstUnary",
    "DenseCRF",
    "DenseCRF2D",
    "KernelType",
    "LogisticUnary",
    "NormalizationType",
    "Unary",
    "utils",
]
