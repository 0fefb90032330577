"""A drop-in replacement for pydensecrf, powered by deeplab's CRF kernels.

``import deeplab.crf.pydensecrf as dcrf`` (or ``import deeplab.crf.pydensecrf.densecrf as
dcrf``) in place of ``import pydensecrf.densecrf as dcrf``, and
``deeplab.crf.pydensecrf.utils`` in place of ``pydensecrf.utils``. Imports numpy and numba
only.
"""

from deeplab.crf.pydensecrf import densecrf, utils
from deeplab.crf.pydensecrf.densecrf import *  # noqa: F403 (the module's whole API, as pydensecrf)

__all__ = [*densecrf.__all__, "utils"]
