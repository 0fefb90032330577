"""The .caffemodel reader on hostile files: memory and time stay proportional to the input.

A model file from the internet can claim any length, count or shape. The reader must
refuse such claims without allocating what they ask for, and files built to cost it
per byte (thousands of chunks, fields, layers) must cost time and memory linear in their
size: here at most 48 bytes of peak Python allocation per input byte (the worst case is
the result itself: one layer entry per few bytes) and well under a second per 64 kB.
"""

from __future__ import annotations

import pytest

from reliability.adversarial import FAMILIES, many_huge_dims, measure

SIZE = 64 * 1024
PEAK_PER_BYTE = 48
PEAK_FIXED = 256 * 1024  # tracemalloc's own bookkeeping and the reader's fixed costs


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hostile_files_cost_memory_and_time_linear_in_their_size(family: str) -> None:
    m = measure(family, SIZE)
    assert m.peak <= PEAK_PER_BYTE * m.size + PEAK_FIXED, (
        f"{family}: peak {m.peak} bytes for a {m.size}-byte file ({m.peak / m.size:.1f}x)"
    )
    assert m.seconds < 3.0, f"{family}: {m.seconds:.2f} s for {m.size} bytes"
    # Every claim beyond the bytes present is refused, naming the problem.
    if "claims" in family or "past the end" in family:
        assert m.outcome != "ok" and any(w in m.outcome for w in ("needs", "remain"))


def test_claimed_lengths_are_never_allocated() -> None:
    # 64 kB of input against a claim of 2^60 bytes: the peak is the reader's few objects.
    m = measure("layer length claims 2^60 bytes", SIZE)
    assert m.peak < 64 * 1024, m


def test_many_huge_dims_are_refused_quickly_with_caffes_axis_limit() -> None:
    """Regression: 16,000 dims of 2^62 (160 kB) took 1.2 s (quadratic in the count: a
    million-bit product) and failed with Python's 'Exceeds the limit (4300 digits)'."""
    from deeplab.models.caffe import parse_caffemodel

    data = many_huge_dims(160_000)
    with pytest.raises(ValueError, match="more than 32 axes"):
        parse_caffemodel(data)
    assert measure("2^62 dims (> 32 axes)", 160_000).seconds < 0.5


def test_thirty_two_axes_are_still_read() -> None:
    import numpy as np

    from deeplab.models.caffe import parse_caffemodel
    from reliability.adversarial import LENGTH, VARINT, field, v1_layer

    shape = field(7, LENGTH, field(1, VARINT, b"\1") * 32)
    blob = shape + field(5, LENGTH, np.float32(2.5).tobytes())
    (got,) = parse_caffemodel(v1_layer(b"conv", blob))["conv"]
    assert got.shape == (1,) * 32 and got.item() == 2.5
