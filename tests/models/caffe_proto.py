"""Serialise test ``.caffemodel`` bytes with the protobuf runtime, independently of our reader.

The few Caffe messages we need are declared in code (``descriptor_pb2``) and instantiated
with ``message_factory.GetMessageClass``; protobuf's own serialiser then writes the bytes.
Field numbers follow caffe.proto (BVLC): NetParameter.layers = 2 (V1LayerParameter),
NetParameter.layer = 100 (LayerParameter), BlobProto num/channels/height/width = 1..4,
data = 5, diff = 6, shape = 7, double_data = 8, BlobShape.dim = 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto


def _field(
    msg: Any,
    name: str,
    number: int,
    ftype: int,
    label: int = F.LABEL_OPTIONAL,
    type_name: str = "",
    packed: bool | None = None,
) -> None:
    f = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    if packed is not None:
        f.options.packed = packed


@cache
def caffe_messages(packed: bool = True) -> dict[str, type]:
    """NetParameter, V1LayerParameter, LayerParameter, BlobProto, BlobShape classes.

    ``packed`` selects packed or unpacked encoding of the repeated numeric fields (both are
    valid proto2 encodings that a reader must accept).
    """
    pkg = "caffe_packed" if packed else "caffe_unpacked"
    fdp = descriptor_pb2.FileDescriptorProto(name=f"{pkg}.proto", package=pkg, syntax="proto2")
    rep = F.LABEL_REPEATED

    shape = fdp.message_type.add(name="BlobShape")
    _field(shape, "dim", 1, F.TYPE_INT64, rep, packed=packed)

    blob = fdp.message_type.add(name="BlobProto")
    for i, name in enumerate(("num", "channels", "height", "width"), start=1):
        _field(blob, name, i, F.TYPE_INT32)
    _field(blob, "data", 5, F.TYPE_FLOAT, rep, packed=packed)
    _field(blob, "diff", 6, F.TYPE_FLOAT, rep, packed=packed)
    _field(blob, "shape", 7, F.TYPE_MESSAGE, type_name=f".{pkg}.BlobShape")
    _field(blob, "double_data", 8, F.TYPE_DOUBLE, rep, packed=packed)

    v1 = fdp.message_type.add(name="V1LayerParameter")
    _field(v1, "bottom", 2, F.TYPE_STRING, rep)
    _field(v1, "top", 3, F.TYPE_STRING, rep)
    _field(v1, "name", 4, F.TYPE_STRING)
    _field(v1, "type", 5, F.TYPE_INT32)  # an enum in caffe.proto: same varint wire type
    _field(v1, "blobs", 6, F.TYPE_MESSAGE, rep, type_name=f".{pkg}.BlobProto")
    _field(v1, "blobs_lr", 7, F.TYPE_FLOAT, rep, packed=packed)

    layer = fdp.message_type.add(name="LayerParameter")
    _field(layer, "name", 1, F.TYPE_STRING)
    _field(layer, "type", 2, F.TYPE_STRING)
    _field(layer, "bottom", 3, F.TYPE_STRING, rep)
    _field(layer, "top", 4, F.TYPE_STRING, rep)
    _field(layer, "blobs", 7, F.TYPE_MESSAGE, rep, type_name=f".{pkg}.BlobProto")

    net = fdp.message_type.add(name="NetParameter")
    _field(net, "name", 1, F.TYPE_STRING)
    _field(net, "layers", 2, F.TYPE_MESSAGE, rep, type_name=f".{pkg}.V1LayerParameter")
    _field(net, "input", 3, F.TYPE_STRING, rep)
    _field(net, "input_dim", 4, F.TYPE_INT32, rep, packed=packed)
    _field(net, "layer", 100, F.TYPE_MESSAGE, rep, type_name=f".{pkg}.LayerParameter")

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    names = ("NetParameter", "V1LayerParameter", "LayerParameter", "BlobProto", "BlobShape")
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{pkg}.{n}")) for n in names
    }


def fill_blob(blob: Any, array: np.ndarray, *, legacy: bool = False, double: bool = False) -> None:
    """Write ``array`` into a BlobProto, with a BlobShape or Caffe's legacy 4-D fields."""
    a = np.asarray(array)
    if legacy:
        dims = (1,) * (4 - a.ndim) + a.shape
        blob.num, blob.channels, blob.height, blob.width = (int(d) for d in dims)
    else:
        blob.shape.dim.extend(int(d) for d in a.shape)
    values = a.astype(np.float64 if double else np.float32).ravel().tolist()
    (blob.double_data if double else blob.data).extend(values)


def caffemodel_bytes(
    layers: Mapping[str, Sequence[np.ndarray]],
    *,
    v1: bool = True,
    packed: bool = True,
    legacy: bool = False,
    double: bool = False,
    extra_layers: Sequence[str] = ("data", "relu1_1", "pool1", "loss"),
) -> bytes:
    """A NetParameter with one layer per entry (plus blob-less layers), serialised by
    protobuf. ``v1`` uses the old ``layers`` field (DeepLab's Caffe fork) else ``layer``."""
    msgs = caffe_messages(packed)
    net = msgs["NetParameter"](name="test-net")
    net.input.append("data")
    net.input_dim.extend([1, 3, 321, 321])
    repeated = net.layers if v1 else net.layer
    for name in extra_layers:
        layer = repeated.add(name=name)
        layer.top.append(name)
    for name, blobs in layers.items():
        layer = repeated.add(name=name)
        layer.bottom.append("below")
        layer.top.append(name)
        if v1:
            layer.type = 4  # CONVOLUTION in V1LayerParameter.LayerType
            layer.blobs_lr.extend([1.0, 2.0])
        else:
            layer.type = "Convolution"
        for array in blobs:
            fill_blob(layer.blobs.add(), array, legacy=legacy, double=double)
    return net.SerializeToString()
