"""Hand-built hostile ``.caffemodel`` files: lengths and shapes that claim far more than
the file holds, and structures that cost the reader per byte (many chunks, fields, layers).

Each family builds a file of about ``size`` bytes, so that the reader's peak memory
(tracemalloc) and time can be compared with the input size; the tests bound the ratio,
``benchmarks/fuzz_report.py --caffe-memory`` prints it.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from reliability.strategies import varint

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


def field(number: int, wire: int, payload: bytes) -> bytes:
    """One protobuf field; LENGTH payloads get their length prefix."""
    key = varint((number << 3) | wire)
    return key + (varint(len(payload)) + payload if wire == LENGTH else payload)


def v1_layer(name: bytes, *blobs: bytes) -> bytes:
    """NetParameter.layers (2) = V1LayerParameter{name (4), blobs (6)...}."""
    return field(2, LENGTH, field(4, LENGTH, name) + b"".join(field(6, LENGTH, b) for b in blobs))


def _claim(number: int, claimed: int, present: bytes) -> bytes:
    """A LENGTH field whose prefix claims ``claimed`` bytes; only ``present`` follow."""
    return varint((number << 3) | LENGTH) + varint(claimed) + present


def layer_claims_2_60(size: int) -> bytes:
    return _claim(2, 2**60, b"\0" * size)


def blob_data_claims_2_62(size: int) -> bytes:
    blob = _claim(5, 2**62, b"\0" * size)
    return field(2, LENGTH, field(4, LENGTH, b"conv") + field(6, LENGTH, blob))


def shape_claims_2_80_values(size: int) -> bytes:
    shape = field(7, LENGTH, field(1, VARINT, varint(2**40)) * 2)
    data = field(5, LENGTH, b"\0" * (size // 4 * 4))
    return v1_layer(b"conv", shape + data)


def many_empty_data_chunks(size: int) -> bytes:
    return v1_layer(b"conv", field(5, LENGTH, b"") * (size // 2))


def fragmented_floats(size: int) -> bytes:
    # One unpacked float, then an unrelated field, again and again: a chunk per float.
    return v1_layer(
        b"conv", (field(5, FIXED32, b"\0\0\x80?") + field(1, VARINT, b"\1")) * (size // 7)
    )


def many_shape_fields(size: int) -> bytes:
    return v1_layer(b"conv", field(7, LENGTH, field(1, VARINT, b"\1")) * (size // 4))


def many_huge_dims(size: int) -> bytes:
    dims = field(1, VARINT, varint(2**62)) * (size // 10)
    return v1_layer(b"conv", field(7, LENGTH, dims))


def many_layers(size: int) -> bytes:
    out, i = bytearray(), 0
    while len(out) < size:
        out += v1_layer(str(i).encode(), b"")
        i += 1
    return bytes(out)


def nested_claims(size: int) -> bytes:
    # Every level of nesting claims to run past the end of its parent.
    inner = _claim(1, 2**40, b"")
    for number in (7, 6, 2):
        inner = _claim(number, len(inner) + size, inner)
    return inner + b"\0" * size


@dataclass(frozen=True)
class Measure:
    family: str
    size: int
    peak: int  # tracemalloc peak bytes while parsing
    seconds: float
    outcome: str  # "ok" or the error message


FAMILIES: dict[str, Callable[[int], bytes]] = {
    "layer length claims 2^60 bytes": layer_claims_2_60,
    "packed data claims 2^62 bytes": blob_data_claims_2_62,
    "shape claims 2^80 values": shape_claims_2_80_values,
    "nested lengths past the end": nested_claims,
    "empty data chunks": many_empty_data_chunks,
    "one float per chunk": fragmented_floats,
    "shape fields (> 32 axes)": many_shape_fields,
    "2^62 dims (> 32 axes)": many_huge_dims,
    "layers with empty blobs": many_layers,
}


def measure(family: str, size: int) -> Measure:
    """Parse one file of the family twice: timed, then under tracemalloc (which slows
    every allocation, so it does not time): peak bytes, seconds, outcome."""
    from deeplab.models.caffe import parse_caffemodel

    data = FAMILIES[family](size)

    def parse() -> str:
        try:
            parse_caffemodel(data)
        except ValueError as exc:
            return str(exc)
        return "ok"

    start = time.perf_counter()
    outcome = parse()
    seconds = time.perf_counter() - start
    tracemalloc.start()
    try:
        parse()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return Measure(family, len(data), peak, seconds, outcome)
