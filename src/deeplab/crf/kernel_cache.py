"""Kernels that depend on the grid alone, kept for the next call on a grid of that size.

The spatial kernel (w2, theta_gamma) of an image depends on its height and width, not on
its pixels; a volume's on its shape and spacing. A data set's images mostly share one
size, so its lattice and normalisation (8-10% of a 500x375 CRF) are built once and reused
(:meth:`deeplab.crf.DenseCRF.add_term`, bit-identical to a fresh build). At most
:data:`MAX_ENTRIES` kernels of at most :data:`MAX_BYTES` together are kept, the most
recently used; :func:`clear` frees them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np

from deeplab.crf.meanfield import Compat, DenseCRF, PairwiseTerm

__all__ = ["MAX_BYTES", "MAX_ENTRIES", "add_cached_kernel", "clear", "term_bytes"]

MAX_ENTRIES = 4
MAX_BYTES = 128 << 20
_terms: OrderedDict[Hashable, PairwiseTerm] = OrderedDict()
_lock = threading.Lock()


def term_bytes(term: PairwiseTerm) -> int:
    """Memory a kept kernel holds: its lattice's arrays and normalisation scales."""
    lat = term.lattice
    arrays = [lat.offsets, lat.weights, lat.neighbors, term.in_scale, term.out_scale]
    # Symmetric normalisation uses one array for both scales.
    unique = {id(a): a for a in arrays if a is not None}
    return sum(a.nbytes for a in unique.values())


def add_cached_kernel(
    crf: DenseCRF,
    key: Hashable,
    features: Callable[[], np.ndarray],
    compat: Compat,
    normalization: str,
) -> PairwiseTerm:
    """Add to ``crf`` the kernel over ``features()`` (N, d), built only if no kernel of
    ``key`` (what the features depend on) and ``normalization`` over N points is kept."""
    full_key = (key, normalization, crf.num_points)
    with _lock:
        term = _terms.get(full_key)
        if term is not None:
            _terms.move_to_end(full_key)
    if term is not None:
        return crf.add_term(term, compat)
    term = crf.add_kernel(features(), compat, normalization)
    size = term_bytes(term)
    if size <= MAX_BYTES:
        with _lock:
            _terms[full_key] = term
            while len(_terms) > MAX_ENTRIES or sum(map(term_bytes, _terms.values())) > MAX_BYTES:
                _terms.popitem(last=False)
    return term


def clear() -> None:
    """Forget every kept kernel."""
    with _lock:
        _terms.clear()
