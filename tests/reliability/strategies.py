"""Hypothesis strategies for hostile input: byte mutations, crafted headers, odd JSON."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

# Values that break length and count fields: zero, one, sign boundaries, all ones.
EXTREME_INTS = (
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0x8000,
    0xFFFF,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**63 - 1,
    2**64 - 1,
)
MUTATIONS = ("truncate", "flip", "byte", "insert", "delete", "int", "varint", "duplicate")


@st.composite
def mutated(draw: st.DrawFn, bases: Sequence[bytes]) -> bytes:
    """One of ``bases`` with 1-4 random edits: truncation, bit flips, byte overwrites,
    insertions, deletions, extreme little/big-endian integers, huge protobuf varints and
    duplicated ranges. Edits are placed anywhere, so headers are hit as often as data."""
    data = bytearray(draw(st.sampled_from(list(bases))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(MUTATIONS))
        n = len(data)
        at = draw(st.integers(0, max(n - 1, 0)))
        if op == "truncate":
            data = data[: draw(st.integers(0, n))]
        elif op == "flip" and n:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and n:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and n:
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "int":
            width = draw(st.sampled_from((1, 2, 4, 8)))
            value = draw(st.sampled_from(EXTREME_INTS)) & ((1 << (8 * width)) - 1)
            order = draw(st.sampled_from(("little", "big")))
            data[at : at + width] = value.to_bytes(width, order)
        elif op == "varint":
            # A protobuf length or count claiming up to 2^63.
            data[at : at + 1] = varint(draw(st.sampled_from(EXTREME_INTS)))
        elif op == "duplicate" and n:
            end = draw(st.integers(at, n))
            data[end:end] = data[at:end]
    return bytes(data)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def mostly(
    valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """``valid`` nine times in ten: most inputs should reach the compiled kernels."""
    return st.integers(0, 9).flatmap(lambda k: invalid if k == 0 else valid)


# -- protobuf ------------------------------------------------------------------------------


def _protobuf_field(number: int, payload: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    def encode(parts: tuple[int, bytes]) -> bytes:
        wire, body = parts
        key = varint((number << 3) | wire)
        if wire == 0:
            return key + varint(int.from_bytes(body[:8].ljust(8, b"\0"), "little") >> 1)
        if wire == 1:
            return key + body[:8].ljust(8, b"\0")
        if wire == 5:
            return key + body[:4].ljust(4, b"\0")
        return key + varint(len(body)) + body

    return st.tuples(st.sampled_from((0, 1, 2, 5)), payload).map(encode)


def protobuf_soup() -> st.SearchStrategy[bytes]:
    """Random but well-formed-looking protobuf messages using caffe.proto's field numbers
    (NetParameter 2/100, layer 1/4/6/7, BlobProto 1-8, BlobShape 1) nested at random:
    reaches the reader's deeper branches far more often than random bytes."""
    leaf = st.binary(max_size=24)
    numbers = st.sampled_from((1, 2, 3, 4, 5, 6, 7, 8, 100))

    def message(inner: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
        one = numbers.flatmap(lambda n: _protobuf_field(n, inner))
        return st.lists(one, max_size=6).map(b"".join)

    return st.recursive(leaf, message, max_leaves=12)


# -- PNG -----------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_SIDES = (0, 1, 2, 3, 255, 65535, 100000, 2**31 - 1, 2**32 - 1)


@st.composite
def png_headers(draw: st.DrawFn) -> bytes:
    """A PNG with valid CRCs whose IHDR claims any size (up to 2^32-1 a side), depth,
    colour type and interlacing, with or without a palette and with little or no data:
    the decoder must refuse or fail cleanly without allocating what the header claims."""
    side = st.one_of(st.sampled_from(PNG_SIDES), st.integers(0, 2**32 - 1))
    width, height = draw(side), draw(side)
    depth = draw(st.sampled_from((1, 2, 4, 8, 16, 0, 3, 32)))
    colour = draw(st.sampled_from((0, 2, 3, 4, 6, 1, 5, 7)))
    interlace = draw(st.sampled_from((0, 1, 2)))
    body = PNG_SIGNATURE + png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    )
    if draw(st.booleans()):
        body += png_chunk(b"PLTE", draw(st.binary(max_size=48)))
    if draw(st.booleans()):
        body += png_chunk(b"tRNS", draw(st.binary(max_size=8)))
    raw = draw(st.binary(max_size=64))
    body += png_chunk(b"IDAT", zlib.compress(raw) if draw(st.booleans()) else raw)
    return body + png_chunk(b"IEND", b"")


# -- JSON ----------------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from((10**400, -(10**400), 2**63, -1, 0)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def _python_json(value: Any) -> str:
    import json

    # Python's json writes (and reads) NaN/Infinity, and big ints verbatim: hostile but
    # what a user's file can contain.
    return json.dumps(value)


def json_documents(
    fields: dict[str, st.SearchStrategy[Any]], valid: dict[str, Any]
) -> st.SearchStrategy[bytes]:
    """Config files: objects with some of ``fields`` (each from its own strategy or any
    JSON value), any JSON value at all, edits of a valid file's text, deep nesting and
    bytes that are not UTF-8."""
    field_values = {k: st.one_of(s, JSON_VALUES) for k, s in fields.items()}
    objects = st.fixed_dictionaries({}, optional=field_values).map(_python_json)
    extra = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)
    with_extra = st.tuples(st.fixed_dictionaries({}, optional=field_values), extra).map(
        lambda p: _python_json({**p[1], **p[0]})
    )
    # The valid document with up to three fields changed: mostly plausible files with
    # one bad value, which is what people actually write.
    tweaked = (
        st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)
        .flatmap(lambda keys: st.fixed_dictionaries({k: field_values[k] for k in keys}))
        .map(lambda changes: _python_json({**valid, **changes}))
    )
    anything = JSON_VALUES.map(_python_json)
    valid_text = _python_json(valid).encode()
    edits = mutated([valid_text])
    deep = st.integers(10, 100_000).map(lambda n: "[" * n + "]" * n)
    deep_objects = st.integers(10, 100_000).map(lambda n: '{"a":' * n + "1" + "}" * n)
    # Python refuses to parse integers of over 4300 digits (a denial-of-service guard).
    long_numbers = st.tuples(st.sampled_from(sorted(fields)), st.integers(4000, 6000)).map(
        lambda p: _python_json({**valid, p[0]: 0}).replace(": 0", ": " + "7" * p[1], 1)
    )
    return st.one_of(
        tweaked.map(str.encode),
        tweaked.map(str.encode),
        objects.map(str.encode),
        with_extra.map(str.encode),
        anything.map(str.encode),
        edits,
        deep.map(str.encode),
        deep_objects.map(str.encode),
        long_numbers.map(str.encode),
        st.binary(max_size=64),
    )
