"""Every entry point that takes outside data, as a fuzz :class:`~reliability.fuzzing.Target`.

Each target names what it feeds (the input strategy), how (the call) and, where a success
can be judged, what a correct result is (the check). The tests run them with a few dozen
inputs each; ``benchmarks/fuzz_report.py`` runs thousands.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import math
import typing
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from reliability.fuzzing import Target
from reliability.strategies import (
    JSON_VALUES,
    json_documents,
    mostly,
    mutated,
    png_headers,
    protobuf_soup,
)

# -- .caffemodel ---------------------------------------------------------------------------


@cache
def caffemodel_bases() -> tuple[bytes, ...]:
    """Small valid nets written by the protobuf runtime in every encoding we read."""
    from models.caffe_proto import caffemodel_bytes

    rng = np.random.default_rng(0)
    layers = {
        "conv1_1": [
            rng.standard_normal((2, 3, 3, 3)).astype(np.float32),
            rng.standard_normal(2).astype(np.float32),
        ],
        "fc8": [rng.standard_normal((3, 2, 1, 1)).astype(np.float32)],
    }
    return tuple(
        caffemodel_bytes(layers, v1=v1, packed=packed, legacy=legacy, double=double)
        for v1 in (True, False)
        for packed in (True, False)
        for legacy in (True, False)
        for double in (False, True)
    )


def _check_layers(_: Any, layers: Any) -> None:
    assert isinstance(layers, dict) and layers, "no layers"
    for name, blobs in layers.items():
        assert isinstance(name, str)
        assert blobs and all(isinstance(b, np.ndarray) and b.dtype == np.float32 for b in blobs), (
            f"layer {name!r}: blobs are not float32 arrays"
        )


def _parse_caffemodel(data: bytes, _: Path) -> Any:
    from deeplab.models.caffe import parse_caffemodel

    return parse_caffemodel(data)


def _read_caffemodel(data: bytes, workdir: Path) -> Any:
    from deeplab.models.caffe import read_caffemodel

    path = workdir / "net.caffemodel"
    path.write_bytes(data)
    return read_caffemodel(path)


CAFFE_BYTES = Target(
    "caffemodel-bytes",
    "models.caffe.parse_caffemodel: random bytes and protobuf-shaped soup",
    st.one_of(st.binary(max_size=2048), protobuf_soup()),
    _parse_caffemodel,
    _check_layers,
)

CAFFE_FILE = Target(
    "caffemodel-file",
    "models.caffe.read_caffemodel: edited valid files (8 encodings)",
    st.deferred(lambda: mutated(caffemodel_bases())),
    _read_caffemodel,
    _check_layers,
)

# -- images and label masks ----------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def _png_without_palette(png: bytes) -> bytes:
    """Drop the PLTE chunk of a palette PNG (valid CRCs elsewhere)."""
    out, pos = bytearray(png[:8]), 8
    while pos < len(png):
        size = int.from_bytes(png[pos : pos + 4], "big")
        kind = png[pos + 4 : pos + 8]
        if kind != b"PLTE":
            out += png[pos : pos + 12 + size]
        pos += 12 + size
    return bytes(out)


@cache
def image_bases() -> tuple[bytes, ...]:
    """Small images in the formats and modes people feed: PNG (L, P, P without PLTE, RGB,
    RGBA, LA, 1, I;16), JPEG (RGB, L, CMYK), BMP, GIF, TIFF (RGB, I;16, I, F), PPM, WEBP."""
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    gray = Image.fromarray(rng.integers(0, 21, (5, 7), dtype=np.uint8))
    pal = gray.copy()
    pal.putpalette(list(range(256)) * 3)
    wide = Image.fromarray(rng.integers(0, 60000, (5, 7)).astype(np.uint16))
    bases = [
        _encode(gray, "PNG"),
        _encode(pal, "PNG"),
        _png_without_palette(_encode(pal, "PNG")),
        _encode(rgb, "PNG"),
        _encode(rgb.convert("RGBA"), "PNG"),
        _encode(gray.convert("LA"), "PNG"),
        _encode(gray.convert("1"), "PNG"),
        _encode(wide, "PNG"),
        _encode(rgb, "JPEG"),
        _encode(gray, "JPEG"),
        _encode(rgb.convert("CMYK"), "JPEG"),
        _encode(rgb, "BMP"),
        _encode(pal, "GIF"),
        _encode(rgb, "TIFF"),
        _encode(wide, "TIFF"),
        _encode(gray.convert("I"), "TIFF"),
        _encode(gray.convert("F"), "TIFF"),
        _encode(rgb, "PPM"),
        _encode(rgb, "WEBP"),
    ]
    return tuple(bases)


IMAGE_INPUTS = st.one_of(
    st.deferred(lambda: mutated(image_bases())),
    png_headers(),
    st.binary(max_size=256),
)


def _load_image(data: bytes, workdir: Path) -> Any:
    from deeplab.data.image_io import load_image

    path = workdir / "image.bin"
    path.write_bytes(data)
    return load_image(path)


def _load_label(data: bytes, workdir: Path) -> Any:
    from deeplab.data.image_io import load_label

    path = workdir / "label.bin"
    path.write_bytes(data)
    return load_label(path)


def _check_image(_: Any, image: Any) -> None:
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3, f"shape {image.shape}"
    assert image.shape[0] * image.shape[1] <= Image.MAX_IMAGE_PIXELS, "over the pixel limit"


def _check_label(_: Any, label: Any) -> None:
    assert isinstance(label, np.ndarray) and label.dtype == np.uint8
    assert label.ndim == 2, f"shape {label.shape}"
    assert label.shape[0] * label.shape[1] <= Image.MAX_IMAGE_PIXELS, "over the pixel limit"


LOAD_IMAGE = Target(
    "load-image",
    "data.image_io.load_image: edited images (19 formats/modes), crafted PNG headers, bytes",
    IMAGE_INPUTS,
    _load_image,
    _check_image,
    risky=True,
)
LOAD_LABEL = Target(
    "load-label",
    "data.image_io.load_label: the same inputs as label masks",
    IMAGE_INPUTS,
    _load_label,
    _check_label,
    risky=True,
)

# -- SBD .mat ------------------------------------------------------------------------------


def _gtcls(segmentation: np.ndarray) -> dict[str, Any]:
    """An SBD-like GTcls: Segmentation, Boundaries (a cell of sparse), CategoriesPresent."""
    import scipy.sparse

    boundaries = np.empty((2, 1), dtype=object)
    for k in range(2):
        boundaries[k, 0] = scipy.sparse.csc_matrix(segmentation == k + 1)
    present = np.unique(segmentation).astype(np.uint8)
    return {"Segmentation": segmentation, "Boundaries": boundaries, "CategoriesPresent": present}


def _savemat(contents: dict[str, Any], **kwargs: Any) -> bytes:
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, contents, **kwargs)
    return buf.getvalue()


@cache
def mat_bases() -> tuple[bytes, ...]:
    seg = np.random.default_rng(2).integers(0, 3, (6, 5)).astype(np.uint8)
    return (
        _savemat({"GTcls": _gtcls(seg)}),
        _savemat({"GTcls": _gtcls(seg)}, do_compression=True),
        _savemat({"GTcls": {"Segmentation": seg.astype(np.float64)}}),
        _savemat({"GTcls": seg}, format="4"),
    )


def _load_sbd(data: bytes, workdir: Path) -> Any:
    from deeplab.data.sbd import load_sbd_label

    path = workdir / "label.mat"
    path.write_bytes(data)
    return load_sbd_label(path)


def _check_sbd_bytes(_: Any, label: Any) -> None:
    _check_label(None, label)


SBD_BYTES = Target(
    "sbd-mat-bytes",
    "data.sbd.load_sbd_label: edited .mat files (v5, compressed, v4) and random bytes",
    st.one_of(st.deferred(lambda: mutated(mat_bases())), st.binary(max_size=256)),
    _load_sbd,
    _check_sbd_bytes,
    risky=True,
)

_SEG_DTYPES = (
    "uint8",
    "int16",
    "int32",
    "int64",
    "uint16",
    "float32",
    "float64",
    "bool",
    "complex128",
)


@st.composite
def _segmentations(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(_SEG_DTYPES)))
    dims = mostly(
        st.lists(st.integers(1, 6), min_size=2, max_size=2),
        st.lists(st.integers(0, 3), min_size=1, max_size=3),
    )
    shape = tuple(draw(dims))
    size = math.prod(shape)
    if dtype.kind == "f":
        values = mostly(
            st.sampled_from((0.0, 1.0, 20.0, 255.0)),
            st.sampled_from((256.0, -1.0, 0.5, np.nan, np.inf)),
        )
    else:
        values = mostly(st.sampled_from((0, 1, 20, 255)), st.sampled_from((256, -1, 70000)))
    with np.errstate(all="ignore"):
        # Invalid values show up in one pixel, as they would in a damaged file.
        array = np.full(size, draw(st.sampled_from((0, 1, 20, 255))), np.float64)
        if size:
            array[draw(st.integers(0, size - 1))] = draw(values)
        return array.astype(dtype).reshape(shape)


def _gtcls_values() -> st.SearchStrategy[Any]:
    seg = _segmentations()
    other = st.one_of(seg, st.text(max_size=5), st.integers(-5, 5), st.just({"a": np.zeros(2)}))
    structs = st.fixed_dictionaries(
        {"Segmentation": mostly(seg, other)}, optional={"Boundaries": other, "x": other}
    )
    return mostly(structs, st.one_of(other, st.just({"Boundaries": np.zeros(2)})))


def _load_sbd_struct(value: dict[str, Any], workdir: Path) -> Any:
    try:
        data = _savemat(value)
    except Exception:
        return None
    return _load_sbd(data, workdir)


def _check_sbd_struct(value: dict[str, Any], label: Any) -> None:
    if label is None:
        return
    _check_label(None, label)
    gt = value.get("GTcls")
    seg = gt.get("Segmentation") if isinstance(gt, dict) else None
    # MATLAB has no scalars: a number is a 1 x 1 array, a vector a 1 x N one.
    assert isinstance(seg, np.ndarray | int), f"accepted a GTcls without a Segmentation: {gt!r}"
    want = np.atleast_2d(seg)
    assert want.shape == label.shape, f"shape {label.shape}, written {want.shape}"
    assert np.array_equal(want.astype(np.float64), label.astype(np.float64)), "values differ"


SBD_STRUCT = Target(
    "sbd-mat-struct",
    "data.sbd.load_sbd_label: GTcls with wrong fields, dtypes, shapes and values",
    st.fixed_dictionaries({"GTcls": _gtcls_values()}),
    _load_sbd_struct,
    _check_sbd_struct,
    risky=True,
)

# -- config files --------------------------------------------------------------------------


def _recipe_fields() -> dict[str, st.SearchStrategy[Any]]:
    from deeplab.models import list_models
    from deeplab.train import Recipe

    near = {
        int: st.one_of(st.integers(-3, 3000), st.sampled_from((10**30, 2**63))),
        float: st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 5)),
        bool: st.booleans(),
        str: st.text(max_size=10),
    }
    fields: dict[str, st.SearchStrategy[Any]] = {}
    hints = typing.get_type_hints(Recipe)
    for f in dataclasses.fields(Recipe):
        kinds = [a for a in typing.get_args(hints[f.name]) if a is not type(None)] or [
            hints[f.name]
        ]
        options = [near[k] for k in kinds if k in near] + [st.none()]
        fields[f.name] = st.one_of(*options)
    fields["model"] = st.one_of(st.sampled_from(list_models()), st.text(max_size=8))
    fields["amp"] = st.sampled_from(("auto", "none", "bf16", "fp16", "fp8"))
    return fields


def _check_recipe(_: Any, recipe: Any) -> None:
    from deeplab.train import Recipe

    assert isinstance(recipe, Recipe)
    hints = typing.get_type_hints(Recipe)
    for f in dataclasses.fields(Recipe):
        value = getattr(recipe, f.name)
        allowed = typing.get_args(hints[f.name]) or (hints[f.name],)
        if value is None:
            assert type(None) in allowed, f"{f.name} is None"
            continue
        kind = type(value)
        ok = (
            (kind is bool and bool in allowed)
            or (kind is int and (int in allowed or float in allowed))
            or (kind is float and float in allowed and math.isfinite(value))
            or (kind is str and str in allowed)
        )
        assert ok, f"{f.name} = {value!r} ({kind.__name__}) in a {hints[f.name]} field"


def _resolve_recipe(data: bytes, workdir: Path) -> Any:
    from deeplab.train import resolve_recipe

    path = workdir / "recipe.json"
    path.write_bytes(data)
    return resolve_recipe(config=path)


@cache
def _recipe_documents() -> st.SearchStrategy[bytes]:
    from deeplab.train import recipe_for

    return json_documents(_recipe_fields(), recipe_for("deeplab-largefov").to_dict())


RECIPE_CONFIG = Target(
    "recipe-config",
    "train.resolve_recipe(config=FILE): the training config JSON loader",
    st.deferred(lambda: _recipe_documents()),
    _resolve_recipe,
    _check_recipe,
)


def _crf_fields() -> dict[str, st.SearchStrategy[Any]]:
    number = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-3, 10**6),
        st.sampled_from((10**400, 1e-300, 1e300)),
        st.text(max_size=4),
    )
    return {
        "w1": number,
        "w2": number,
        "theta_alpha": number,
        "theta_beta": number,
        "theta_gamma": number,
        "iterations": st.one_of(
            st.integers(-2, 2000), st.floats(allow_nan=True), st.text(max_size=3)
        ),
        "normalization": st.sampled_from(("after", "symmetric", "before", "none", "bogus")),
    }


def _load_crf_params(data: bytes, workdir: Path) -> Any:
    from deeplab.crf import CRFParams

    path = workdir / "crf.json"
    path.write_bytes(data)
    return CRFParams.load(path)


def _check_crf_params(_: Any, params: Any) -> None:
    from deeplab.crf import NORMALIZATIONS, CRFParams

    assert isinstance(params, CRFParams)
    for name in ("w1", "w2"):
        v = getattr(params, name)
        assert type(v) is float and math.isfinite(v) and v >= 0, f"{name} = {v!r}"
    for name in ("theta_alpha", "theta_beta", "theta_gamma"):
        v = getattr(params, name)
        assert type(v) is float and math.isfinite(v) and v > 0, f"{name} = {v!r}"
    assert type(params.iterations) is int and 0 <= params.iterations <= 1000
    assert params.normalization in NORMALIZATIONS


@cache
def _crf_documents() -> st.SearchStrategy[bytes]:
    from deeplab.crf import CRFParams

    fields = _crf_fields()
    wrapped = st.fixed_dictionaries({}, optional=fields).map(
        lambda d: json.dumps({"params": d, "score": 1.0}).encode()
    )
    return st.one_of(json_documents(fields, CRFParams().to_dict()), wrapped)


CRF_PARAMS = Target(
    "crf-params",
    "crf.CRFParams.load: CRF parameter JSON (also the tune-crf result form)",
    st.deferred(lambda: _crf_documents()),
    _load_crf_params,
    _check_crf_params,
)

# -- checkpoints ---------------------------------------------------------------------------


@cache
def model_checkpoint_base() -> bytes:
    import torch
    from safetensors.torch import save

    from deeplab.models.weights import CheckpointMeta

    meta = CheckpointMeta("deeplab-largefov-tiny", 3, ("a", "b", "c"), source="test")
    tensors = {"fc8.weight": torch.arange(6.0).reshape(3, 2), "fc8.bias": torch.zeros(3)}
    return save(tensors, metadata=meta.to_header())


def _header_with(metadata: dict[str, str]) -> bytes:
    import torch
    from safetensors.torch import save

    return save({"w": torch.ones(2)}, metadata=metadata)


def _metadata() -> st.SearchStrategy[dict[str, str]]:
    meta_json = st.one_of(
        JSON_VALUES.map(json.dumps),
        st.fixed_dictionaries(
            {},
            optional={
                k: JSON_VALUES
                for k in (
                    "variant",
                    "num_classes",
                    "class_names",
                    "input_convention",
                    "source",
                    "extra",
                )
            },
        ).map(json.dumps),
        st.text(max_size=20),
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "format": st.sampled_from(("deeplab-checkpoint", "other")),
            "format_version": st.sampled_from(("1", "2", "")),
            "meta": meta_json,
        },
    )


def _load_model_checkpoint(data: bytes, workdir: Path) -> Any:
    from deeplab.models.weights import load_checkpoint

    path = workdir / "model.safetensors"
    path.write_bytes(data)
    return load_checkpoint(path)


def _check_model_checkpoint(_: Any, loaded: Any) -> None:
    import torch

    from deeplab.models.weights import CheckpointMeta

    tensors, meta = loaded
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    assert isinstance(meta, CheckpointMeta)
    assert isinstance(meta.variant, str) and type(meta.num_classes) is int
    assert all(isinstance(c, str) for c in meta.class_names)


MODEL_CHECKPOINT = Target(
    "model-checkpoint",
    "models.weights.load_checkpoint: edited safetensors, hostile header metadata",
    st.one_of(
        st.deferred(lambda: mutated([model_checkpoint_base()])),
        _metadata().map(_header_with),
    ),
    _load_model_checkpoint,
    _check_model_checkpoint,
)


@cache
def train_checkpoint_base() -> tuple[bytes, bytes]:
    """(record JSON, tensors) of a small training checkpoint at iteration 2."""
    import tempfile

    import torch

    from deeplab.train import TrainState, save_checkpoint

    state = TrainState(
        2,
        {"w": torch.arange(4.0)},
        {"w": torch.ones(4)},
        {"torch_cpu/0": torch.zeros(8, dtype=torch.uint8)},
        {"loss": 1.0},
    )
    with tempfile.TemporaryDirectory() as tmp:
        meta_path = save_checkpoint(tmp, state)
        return meta_path.read_bytes(), (Path(tmp) / "iter_000002.safetensors").read_bytes()


def _records() -> st.SearchStrategy[bytes]:
    record, _ = train_checkpoint_base()
    valid = json.loads(record)
    hostile_files = st.sampled_from(
        (
            "iter_000002.safetensors",
            "../iter_000002.safetensors",
            "/etc/hostname",
            "sub/x",
            "",
            ".",
            "..",
            "iter_000001",
        )
    )
    fields = {
        "format": st.sampled_from((valid["format"], "x")),
        "version": JSON_VALUES,
        "iteration": st.one_of(st.integers(-1, 10), JSON_VALUES),
        "file": st.one_of(hostile_files, JSON_VALUES),
        "size": st.one_of(st.just(valid["size"]), JSON_VALUES),
        "sha256": st.one_of(st.just(valid["sha256"]), JSON_VALUES),
        "meta": JSON_VALUES,
    }
    return json_documents(fields, valid)


def _train_inputs() -> st.SearchStrategy[tuple[bytes, bytes]]:
    record, tensors = train_checkpoint_base()
    return st.one_of(
        st.tuples(st.just(record), mutated([tensors])),
        st.tuples(_records(), st.just(tensors)),
        st.tuples(mutated([record]), mutated([tensors])),
    )


def _load_train_checkpoint(value: tuple[bytes, bytes], workdir: Path) -> Any:
    import shutil

    from deeplab.train import load_checkpoint

    folder = workdir / "ckpt"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    record, tensors = value
    (folder / "iter_000002.json").write_bytes(record)
    (folder / "iter_000002.safetensors").write_bytes(tensors)
    return load_checkpoint(folder / "iter_000002.json")


def _check_train_checkpoint(value: tuple[bytes, bytes], state: Any) -> None:
    import torch

    record, tensors = train_checkpoint_base()
    if value[0] == record:
        # The record is the original: only the original tensors may load.
        assert value[1] == tensors, "damaged tensors accepted"
    assert type(state.iteration) is int
    assert all(isinstance(t, torch.Tensor) for t in state.model.values())
    assert isinstance(state.meta, dict)


TRAIN_CHECKPOINT = Target(
    "train-checkpoint",
    "train.checkpoint.load_checkpoint: edited tensors, hostile JSON records",
    st.deferred(lambda: _train_inputs()),
    _load_train_checkpoint,
    _check_train_checkpoint,
)

# -- the CRF -------------------------------------------------------------------------------

SIGMAS = mostly(
    st.one_of(st.floats(-6, 6).map(lambda e: float(10**e)), st.sampled_from((1e-6, 1e6))),
    st.sampled_from((0.0, -1.0, float("nan"), float("inf"))),
)
WEIGHTS = mostly(
    st.one_of(st.floats(0, 6).map(lambda e: float(10**e)), st.sampled_from((0.0, 1e6))),
    st.sampled_from((1e7, -1.0, float("nan"))),
)


def _check_marginals(q: Any, labels: int, points: int) -> None:
    assert isinstance(q, np.ndarray) and q.dtype == np.float32, "not a float32 array"
    assert q.shape[0] == labels and q.size == labels * points, f"shape {q.shape}"
    assert np.isfinite(q).all(), "non-finite marginals"
    assert q.min() >= 0 and q.max() <= 1 + 1e-5, "marginals outside [0, 1]"
    sums = q.reshape(labels, -1).sum(0)
    assert np.allclose(sums, 1, atol=1e-3), f"marginals sum to {sums.min()}..{sums.max()}"


@st.composite
def _dense_crf_inputs(draw: st.DrawFn) -> dict[str, Any]:
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    labels = draw(mostly(st.integers(2, 4), st.just(1)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(
        mostly(st.sampled_from(("rgb", "gray")), st.sampled_from(("rgba", "float", "wrong-size")))
    )
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "gray":
        image = image[..., 0]
    elif kind == "rgba":
        image = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    elif kind == "float":
        image = image.astype(np.float32) / 255
    elif kind == "wrong-size":
        image = image[: max(h - 1, 1), :, :] if h > 1 else image[:, :0]
    maps = rng.random((labels, h, w)).astype(np.float32)
    special = draw(
        mostly(
            st.sampled_from(("none", "zeros", "huge")), st.sampled_from(("nan", "inf", "negative"))
        )
    )
    if special != "none":
        values = {"nan": np.nan, "inf": np.inf, "negative": -1.0, "zeros": 0.0, "huge": 1e30}
        maps.reshape(-1)[draw(st.integers(0, maps.size - 1))] = values[special]
    return {
        "entry": draw(st.sampled_from(("probs", "logits", "unary", "labels"))),
        "image": image,
        "maps": maps,
        "params": {
            "w1": draw(WEIGHTS),
            "w2": draw(WEIGHTS),
            "theta_alpha": draw(SIGMAS),
            "theta_beta": draw(SIGMAS),
            "theta_gamma": draw(SIGMAS),
            "iterations": draw(st.integers(0, 4)),
            "normalization": draw(st.sampled_from(("after", "symmetric", "before", "none"))),
        },
    }


def _dense_crf(value: dict[str, Any], _: Path) -> Any:
    from deeplab.crf import (
        CRFParams,
        dense_crf,
        dense_crf_from_labels,
        dense_crf_from_logits,
        dense_crf_from_unary,
    )

    params = CRFParams(**value["params"])
    image, maps = value["image"], value["maps"]
    entry = value["entry"]
    if entry == "probs":
        return dense_crf(image, maps, params)
    if entry == "logits":
        return dense_crf_from_logits(image, maps, params)
    if entry == "unary":
        return dense_crf_from_unary(image, maps, params)
    # Label values stay small here: a huge one asks for that many channels, which the
    # memory check refuses (tested on its own in test_memory.py) but only after numbers.
    labels = np.clip(np.nan_to_num(maps[0] * 3, posinf=0), 0, 6).astype(np.int64)
    q, refined = dense_crf_from_labels(image, labels, params)
    assert refined.shape == labels.shape, "refined labels of another shape"
    return q


def _check_dense_crf(value: dict[str, Any], q: Any) -> None:
    h, w = value["maps"].shape[1:]
    labels = q.shape[0] if value["entry"] == "labels" else value["maps"].shape[0]
    _check_marginals(q, labels, h * w)


DENSE_CRF = Target(
    "crf-image-api",
    "crf.dense_crf / _from_logits / _from_unary / _from_labels: shapes, dtypes, NaN, "
    "sigmas 1e-6..1e6, weights to 1e7",
    _dense_crf_inputs(),
    _dense_crf,
    _check_dense_crf,
    risky=True,
)


@st.composite
def _core_inputs(draw: st.DrawFn) -> dict[str, Any]:
    n, labels = draw(st.integers(1, 40)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kernels = []
    for _ in range(draw(st.integers(0, 3))):
        d = draw(st.integers(1, 6))
        scale = 10.0 ** draw(st.integers(-6, 8))
        feats = (rng.standard_normal((n, d)) * scale).astype(np.float64)
        if draw(st.integers(0, 9)) == 0:
            feats[0, 0] = draw(st.sampled_from((np.nan, np.inf)))
        compat: Any = draw(WEIGHTS)
        if draw(st.booleans()):
            compat = rng.standard_normal((labels, labels)) * draw(WEIGHTS)
        norm = draw(
            mostly(st.sampled_from(("after", "symmetric", "before", "none")), st.just("bad"))
        )
        kernels.append((feats, compat, norm))
    unary = rng.standard_normal((labels, n)) * 10.0 ** draw(st.integers(-3, 4))
    if draw(st.integers(0, 9)) == 0:
        unary[0, 0] = np.nan
    return {
        "unary": unary,
        "kernels": kernels,
        "iterations": draw(st.integers(0, 4)),
        "lattice": draw(st.booleans()),
    }


def _dense_crf_core(value: dict[str, Any], _: Path) -> Any:
    from deeplab.crf import DenseCRF, PermutohedralLattice

    if value["lattice"] and value["kernels"]:
        feats = value["kernels"][0][0]
        lattice = PermutohedralLattice(feats)
        out = lattice.filter(value["unary"].T)
        assert out.shape == value["unary"].T.shape and np.isfinite(out).all(), "bad filter"
    crf = DenseCRF(value["unary"])
    for feats, compat, norm in value["kernels"]:
        crf.add_kernel(feats, compat, norm)
    return crf.inference(value["iterations"])


def _check_core(value: dict[str, Any], q: Any) -> None:
    labels, n = value["unary"].shape
    _check_marginals(q, labels, n)


DENSE_CRF_CORE = Target(
    "crf-densecrf-lattice",
    "crf.DenseCRF and PermutohedralLattice: any points, features 1e-6..1e8, compat matrices",
    _core_inputs(),
    _dense_crf_core,
    _check_core,
    risky=True,
)


@st.composite
def _pydensecrf_inputs(draw: st.DrawFn) -> dict[str, Any]:
    w, h, labels = draw(st.integers(1, 8)), draw(st.integers(1, 8)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    unary = (rng.random((labels, w * h)) * 5).astype(np.float32)
    special = draw(st.sampled_from(("none", "none", "inf", "nan", "shape", "float64")))
    if special == "inf":
        unary[0, 0] = np.inf
    elif special == "nan":
        unary[0, 0] = np.nan
    elif special == "shape":
        unary = unary[:, :-1]
    elif special == "float64":
        unary = unary.astype(np.float64)
    sigma_pair = st.one_of(SIGMAS, st.tuples(SIGMAS, SIGMAS))
    calls = draw(st.lists(st.sampled_from(("gaussian", "bilateral", "energy")), max_size=3))
    kernels = [
        (c, draw(sigma_pair), draw(SIGMAS), draw(WEIGHTS), draw(st.integers(0, 3))) for c in calls
    ]
    return {
        "w": w,
        "h": h,
        "labels": labels,
        "unary": unary,
        "kernels": kernels,
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "steps": draw(st.integers(0, 4)),
        "seed": draw(st.integers(0, 9)),
    }


def _pydensecrf(value: dict[str, Any], _: Path) -> Any:
    import deeplab.crf.pydensecrf as dcrf
    from deeplab.crf.pydensecrf import utils

    crf = dcrf.DenseCRF2D(value["w"], value["h"], value["labels"])
    crf.setUnaryEnergy(value["unary"])
    for kind, sxy, srgb, compat, norm in value["kernels"]:
        if kind == "gaussian":
            crf.addPairwiseGaussian(sxy=sxy, compat=compat, normalization=norm)
        elif kind == "bilateral":
            crf.addPairwiseBilateral(
                sxy=sxy, srgb=srgb, rgbim=value["image"], compat=compat, normalization=norm
            )
        else:
            feats = utils.create_pairwise_bilateral(
                sdims=(srgb, srgb), schan=(srgb,) * 3, img=value["image"], chdim=2
            )
            crf.addPairwiseEnergy(feats, compat=compat, normalization=norm)
    if value["seed"] % 2:
        return np.asarray(crf.inference(value["steps"]))
    q, tmp1, tmp2 = crf.startInference()
    for _ in range(value["steps"]):
        crf.stepInference(q, tmp1, tmp2)
    crf.klDivergence(q)
    return np.ascontiguousarray(q)


def _check_pydensecrf(value: dict[str, Any], q: Any) -> None:
    _check_marginals(q, value["labels"], value["w"] * value["h"])


PYDENSECRF = Target(
    "crf-pydensecrf-dropin",
    "crf.pydensecrf DenseCRF2D: unary with inf/NaN, kernels with extreme sigmas and weights",
    _pydensecrf_inputs(),
    _pydensecrf,
    _check_pydensecrf,
    risky=True,
)

# -- the web demo's API -----------------------------------------------------------------

SERVE_MAX_UPLOAD = 64 * 1024


@cache
def _serve_client() -> tuple[Any, str]:
    """A TestClient on the demo app (untrained deeplab-largefov-tiny, 3 classes, 64 kB
    uploads) and the id of one uploaded image."""
    import torch
    from fastapi.testclient import TestClient

    from deeplab.models import load_network
    from deeplab.serve import SegmentService, create_app

    torch.manual_seed(0)
    net = load_network("deeplab-largefov-tiny", "none", num_classes=3)
    service = SegmentService(net.model, net.info, cache_size=4, max_pixels=200_000)
    client = TestClient(create_app(service, max_upload_bytes=SERVE_MAX_UPLOAD))
    image = np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    answer = client.post("/api/images", content=_encode(Image.fromarray(image), "PNG"))
    assert answer.status_code == 200, answer.text
    return client, answer.json()["id"]


def _multipart(parts: tuple[bytes, bytes, str]) -> tuple[bytes, str]:
    """(body, content type) of a form with the image under ``name``, sometimes mangled."""
    data, boundary, name = parts
    body = (
        b"--"
        + boundary
        + b"\r\n"
        + f'Content-Disposition: form-data; name="{name}"; filename="x.png"'.encode()
        + b"\r\nContent-Type: image/png\r\n\r\n"
        + data
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )
    return body, "multipart/form-data; boundary=" + boundary.decode("latin-1")


def _serve_requests() -> st.SearchStrategy[tuple[Any, ...]]:
    content_types = st.sampled_from(
        (
            "image/png",
            "",
            "application/octet-stream",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "text/plain; charset=utf-8",
        )
    )
    raw = st.tuples(st.just("upload"), IMAGE_INPUTS, content_types)
    boundaries = st.sampled_from((b"xyz", b"-----", b"a" * 70, b"\xff\xfe", b""))
    forms = st.tuples(IMAGE_INPUTS, boundaries, st.sampled_from(("file", "image", ""))).map(
        _multipart
    )
    multipart = forms.flatmap(
        lambda f: st.tuples(st.just("upload"), mutated([f[0]]) | st.just(f[0]), st.just(f[1]))
    )
    big = st.integers(SERVE_MAX_UPLOAD - 8, SERVE_MAX_UPLOAD + 64).map(
        lambda n: ("upload", b"\x89PNG" + b"\0" * n, "image/png")
    )
    fields = {
        k: st.one_of(
            st.integers(-2, 60), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4)
        )
        for k in ("w1", "theta_alpha", "theta_beta", "w2", "theta_gamma", "iterations")
    }
    fields["normalization"] = st.sampled_from(("after", "symmetric", "none", "sideways"))
    params = st.one_of(
        json_documents(fields, {"w1": 4.0, "iterations": 3}),
        # Nesting deep enough for a RecursionError yet under the endpoint's 4 kB cap.
        st.integers(500, 2000).map(lambda n: b"[" * n + b"]" * n),
        st.sampled_from((1e-300, 1e-6, 1e6)).map(lambda t: json.dumps({"theta_beta": t}).encode()),
    )
    ids = st.sampled_from(("valid", "valid", "unknown", "..%2F..%2Fetc"))
    crf = st.tuples(st.just("crf"), params, ids)
    return st.one_of(raw, multipart, big, crf)


class RefusedError(ValueError):
    """A 4xx answer with a message: the API's clear error."""


def _serve_call(value: tuple[Any, ...], _: Path) -> Any:
    client, image_id = _serve_client()
    if value[0] == "upload":
        _, body, content_type = value
        headers = {"content-type": content_type} if content_type else {}
        response = client.post("/api/images", content=body, headers=headers)
    else:
        _, body, which = value
        target = image_id if which == "valid" else which
        response = client.post(f"/api/images/{target}/crf", content=body)
    if response.status_code in (400, 404, 413, 415, 422):
        detail = response.json().get("detail")
        if isinstance(detail, str) and detail:
            raise RefusedError(f"HTTP {response.status_code}: {detail}")
    return response


def _check_serve(_: Any, response: Any) -> None:
    # Any answer that is not a refusal with a message must be a complete 200.
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text[:300]}"
    body = response.json()
    assert body.get("crf", "").startswith("data:image/png;base64,"), sorted(body)


SERVE_API = Target(
    "serve-api",
    "serve: POST /api/images (raw and multipart uploads) and /api/images/{id}/crf (JSON)",
    _serve_requests(),
    _serve_call,
    _check_serve,
    risky=True,
)

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        CAFFE_BYTES,
        CAFFE_FILE,
        LOAD_IMAGE,
        LOAD_LABEL,
        SBD_BYTES,
        SBD_STRUCT,
        RECIPE_CONFIG,
        CRF_PARAMS,
        MODEL_CHECKPOINT,
        TRAIN_CHECKPOINT,
        DENSE_CRF,
        DENSE_CRF_CORE,
        PYDENSECRF,
    )
}
"""Every fuzz target by name, in report order."""
# The web demo is an optional extra (fastapi; its TestClient needs httpx).
if importlib.util.find_spec("fastapi") and importlib.util.find_spec("httpx"):
    TARGETS[SERVE_API.name] = SERVE_API


# -- the engine's own checks ----------------------------------------------------------------


def _segfault_on_3(value: int, _: Path) -> int:
    if value == 3:
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV
    return value


def _hang_on_3(value: int, _: Path) -> int:
    if value == 3:
        import time

        time.sleep(3600)
    return value


SELF_TESTS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("selftest-segfault", "dies on input 3", st.integers(0, 9), _segfault_on_3),
        Target("selftest-hang", "hangs on input 3", st.integers(0, 9), _hang_on_3),
    )
}
"""Targets that crash on purpose, to show that a worker's death or hang is counted."""
