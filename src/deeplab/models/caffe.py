"""Read the weights out of a ``.caffemodel`` without Caffe, protoc or a generated caffe_pb2.

A ``.caffemodel`` is a serialised Caffe ``NetParameter`` (protocol buffers, proto2). We only
need layer names and their blobs, so this module decodes the wire format directly:

=====================  =====================================================================
message                fields read (number: meaning)
=====================  =====================================================================
NetParameter           2: ``layers`` (V1LayerParameter, old nets such as DeepLab's),
                       100: ``layer`` (LayerParameter, current Caffe)
V1LayerParameter       4: name, 6: blobs
LayerParameter         1: name, 7: blobs
BlobProto              1-4: num/channels/height/width (legacy 4-D shape), 7: shape,
                       5: data (float, packed or not), 8: double_data (packed or not)
BlobShape              1: dim (int64, packed or not)
=====================  =====================================================================

Everything else is skipped by wire type. The reader is defensive because model files come
from the internet: every length is checked against the bytes that remain, element counts are
derived from the bytes present (never from a declared count or shape), and each loop
advances by at least one byte, so truncated or malformed input raises :class:`ValueError`
quickly instead of hanging or allocating gigabytes.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator

import numpy as np

__all__ = ["parse_caffemodel", "read_caffemodel"]

log = logging.getLogger(__name__)

VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = range(6)
_MAX_VARINT_BYTES = 10
# Caffe's own limit (blob.hpp, kMaxBlobAxes). Without one, a file of many tiny shape
# fields builds a shape list whose product takes quadratic time to compute and print.
_MAX_AXES = 32
_FLOAT_TAG = (5 << 3) | FIXED32  # BlobProto.data, one unpacked float: 0x2d

Buffer = bytes | bytearray | memoryview


def _varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; return (value, next position)."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos >= end:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value, pos
    raise ValueError("varint longer than 10 bytes")


def _signed64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _signed32(value: int) -> int:
    value &= (1 << 32) - 1
    return value - (1 << 32) if value >= 1 << 31 else value


def _fields(buf: Buffer, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field number, wire type, a, b) for each field of the message in buf[start:end].

    For VARINT ``a`` is the value; for the other wire types ``buf[a:b]`` is the payload.
    """
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ValueError(f"invalid field number 0 at byte {pos}")
        if wire == VARINT:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value, pos
            continue
        if wire == LENGTH:
            size, pos = _varint(buf, pos, end)
            width = size
        elif wire == FIXED32:
            width = 4
        elif wire == FIXED64:
            width = 8
        else:
            # Groups are deprecated and caffe.proto has none; 6 and 7 are not wire types.
            raise ValueError(f"unsupported wire type {wire} (field {field}) at byte {pos}")
        if width > end - pos:
            raise ValueError(
                f"field {field} needs {width} bytes at byte {pos}, only {end - pos} remain"
            )
        yield field, wire, pos, pos + width
        pos += width


def _expect(wire: int, allowed: tuple[int, ...], what: str) -> None:
    if wire not in allowed:
        raise ValueError(f"{what} has wire type {wire}, expected one of {allowed}")


def _float_run(buf: Buffer, tag_pos: int, end: int) -> int:
    """Number of consecutive unpacked ``data`` floats (5-byte records 0x2d + float) at
    ``tag_pos``. Scans in doubling chunks so the cost stays linear in the run length."""
    n, chunk = 0, 64
    while True:
        available = (end - tag_pos - 5 * n) // 5
        if available <= 0:
            return n
        take = min(chunk, available)
        records = np.frombuffer(buf, np.uint8, count=5 * take, offset=tag_pos + 5 * n)
        bad = np.flatnonzero(records[::5] != _FLOAT_TAG)
        if bad.size:
            return n + int(bad[0])
        n += take
        chunk *= 2


def _packed(buf: Buffer, a: int, b: int, dtype: str) -> np.ndarray:
    item = np.dtype(dtype).itemsize
    if (b - a) % item:
        raise ValueError(f"packed {dtype} field of {b - a} bytes is not a multiple of {item}")
    return np.frombuffer(buf, dtype, count=(b - a) // item, offset=a)


def _blob_shape(buf: Buffer, start: int, end: int, dims: list[int]) -> None:
    """Append the dims of the BlobShape in buf[start:end] to ``dims`` (at most 32 in all)."""
    for field, wire, a, b in _fields(buf, start, end):
        if field != 1:
            continue
        _expect(wire, (VARINT, LENGTH), "BlobShape.dim")
        if wire == VARINT:
            dims.append(_signed64(a))
        else:
            pos = a
            while pos < b and len(dims) <= _MAX_AXES:
                value, pos = _varint(buf, pos, b)
                dims.append(_signed64(value))
        if len(dims) > _MAX_AXES:
            raise ValueError(f"blob shape has more than {_MAX_AXES} axes (Caffe's limit)")


def _blob(buf: Buffer, start: int, end: int) -> np.ndarray:
    """Decode one BlobProto into a float32 array of its declared shape."""
    legacy: dict[int, int] = {}
    shape: list[int] | None = None
    # Every data chunk's little-endian float32 bytes, in order: one growing buffer rather
    # than an array object per chunk, whose overhead (~100 bytes) a file of many tiny
    # chunks would multiply far beyond its own size.
    values = bytearray()
    pos = start
    while pos < end:
        if buf[pos] == _FLOAT_TAG:
            n = _float_run(buf, pos, end)
            if n:
                records = np.frombuffer(buf, np.uint8, count=5 * n, offset=pos)
                values += records.reshape(n, 5)[:, 1:].tobytes()
                pos += 5 * n
                continue
        field, wire, a, b = next(_fields(buf, pos, end))
        pos = b  # for varints _fields yields the next position as b as well
        if field in (1, 2, 3, 4):
            _expect(wire, (VARINT,), f"BlobProto field {field}")
            legacy[field] = _signed32(a)
        elif field == 5:
            _expect(wire, (LENGTH, FIXED32), "BlobProto.data")
            _packed(buf, a, b, "<f4")  # checks that the bytes are whole floats
            values += memoryview(buf)[a:b]
        elif field == 8:
            _expect(wire, (LENGTH, FIXED64), "BlobProto.double_data")
            # Out-of-range doubles become +-inf and NaN stays NaN, as in Caffe.
            with np.errstate(over="ignore", invalid="ignore"):
                values += _packed(buf, a, b, "<f8").astype("<f4").tobytes()
        elif field == 7:
            _expect(wire, (LENGTH,), "BlobProto.shape")
            # proto2 merges repeated occurrences of a message field: dims concatenate.
            shape = [] if shape is None else shape
            _blob_shape(buf, a, b, shape)
    # A view of the buffer on little-endian machines (no copy); a byte-swapped copy elsewhere.
    data = (
        np.frombuffer(values, "<f4").astype(np.float32, copy=False)
        if values
        else np.zeros(0, np.float32)
    )
    if shape is None:
        # Caffe always writes all four legacy fields; treat an absent one as 1.
        shape = [legacy.get(k, 1) for k in (1, 2, 3, 4)] if legacy else [data.size]
    if any(d < 0 for d in shape):
        raise ValueError(f"blob has a negative dimension: {shape}")
    if math.prod(shape) != data.size:
        raise ValueError(f"blob shape {shape} needs {math.prod(shape)} values, has {data.size}")
    return data.reshape(shape)


def _layer(buf: Buffer, start: int, end: int, name_field: int, blobs_field: int) -> tuple:
    name = ""
    blobs: list[np.ndarray] = []
    for field, wire, a, b in _fields(buf, start, end):
        if field == name_field:
            _expect(wire, (LENGTH,), "layer name")
            try:
                name = bytes(buf[a:b]).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"layer name is not UTF-8: {exc}") from None
        elif field == blobs_field:
            _expect(wire, (LENGTH,), "layer blobs")
            blobs.append(_blob(buf, a, b))
    return name, blobs


def parse_caffemodel(data: Buffer) -> dict[str, list[np.ndarray]]:
    """Serialised NetParameter -> {layer name: [blob, ...]} (float32 arrays, Caffe shapes).

    Layers without blobs (data, ReLU, pooling, loss...) are left out. Raises ValueError on
    malformed input and on two layers with weights under the same name.
    """
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    layers: dict[str, list[np.ndarray]] = {}
    for field, wire, a, b in _fields(buf, 0, len(buf)):
        if field == 2:  # V1LayerParameter: name = 4, blobs = 6
            _expect(wire, (LENGTH,), "NetParameter.layers")
            name, blobs = _layer(buf, a, b, 4, 6)
        elif field == 100:  # LayerParameter: name = 1, blobs = 7
            _expect(wire, (LENGTH,), "NetParameter.layer")
            name, blobs = _layer(buf, a, b, 1, 7)
        else:
            continue
        if not blobs:
            continue
        if name in layers:
            raise ValueError(f"two layers named {name!r} carry weights")
        layers[name] = blobs
    if not layers:
        raise ValueError("no layer with weights found: not a .caffemodel?")
    return layers


def read_caffemodel(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """:func:`parse_caffemodel` of a file; the error message names the file."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        layers = parse_caffemodel(data)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)}: malformed .caffemodel: {exc}") from None
    log.info("read %d layers with weights from %s", len(layers), os.fspath(path))
    return layers
