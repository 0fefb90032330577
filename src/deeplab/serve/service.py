"""The demo's work: decode an upload, run the network, the CRF, encode the answer.

The network and the CRF are :class:`deeplab.predict.Predictor` and
:func:`deeplab.predict.refine` (paper sections 3 and 4); this module caches scores, checks
limits and packages the answers. Everything here is synchronous and CPU-bound;
:mod:`deeplab.serve.jobs` decides when and in which thread it runs. Each heavy step checks a
cancel flag first, and the CRF checks it after every mean-field iteration, so a dropped job
stops within one step.
"""

from __future__ import annotations

import base64
import io
import json
import math
import secrets
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from deeplab.crf import CRFParams
from deeplab.crf import dense as crf_dense
from deeplab.data.classes import VOC_PALETTE
from deeplab.data.image_io import READ_FORMATS
from deeplab.data.palettes import palette_for
from deeplab.models.network import NetworkInfo
from deeplab.predict import Predictor, crf_size, refine

DEFAULT_MAX_UPLOAD = 10 * 2**20
DEFAULT_MAX_PIXELS = 4_000_000
# The CPU CRF needs about 0.4 GB per megapixel on photographs (more on noisy images);
# larger images get their CRF on a scaled-down copy so one job stays well under 1 GB.
DEFAULT_CRF_MAX_PIXELS = 1_500_000
MAX_ITERATIONS = 50
# Slider ranges shown on the page (the API accepts any valid CRFParams within them).
SLIDERS: dict[str, tuple[float, float, float]] = {
    "w1": (0.0, 20.0, 0.5),
    "theta_alpha": (1.0, 200.0, 1.0),
    "theta_beta": (1.0, 50.0, 0.5),
    "w2": (0.0, 10.0, 0.5),
    "theta_gamma": (0.5, 20.0, 0.5),
    "iterations": (0, MAX_ITERATIONS, 1),
}


class ServiceError(Exception):
    """A request the service refuses: an HTTP status, a message for the user and any
    headers the answer needs (``Retry-After`` on 503)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class JobCancelledError(Exception):
    """The job's client left, its time ran out or the server is stopping."""


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise JobCancelledError


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Uploaded bytes -> (H, W, 3) uint8 RGB, in memory. ServiceError 415 for anything
    that is not a raster image, 413 for more than ``max_pixels`` pixels (checked from the
    header, before decoding)."""
    if not data:
        raise ServiceError(400, "the upload is empty")
    formats = ", ".join(READ_FORMATS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=READ_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ServiceError(413, "the image is too large to decode safely") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ServiceError(
            415, f"not a readable image: the file is not one of {formats}, or it is damaged"
        ) from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ServiceError(
                413,
                f"the image is {width}x{height} = {width * height:,} pixels; this server "
                f"takes at most {max_pixels:,}: downscale it",
            )
        try:
            image.load()
            rgb = image.convert("RGB")
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ServiceError(415, f"the image is truncated or corrupt: {exc}") from None
    return np.array(rgb, dtype=np.uint8)  # a writable copy: torch refuses read-only arrays


def _png(image: Image.Image) -> str:
    """A PNG data URI; compression level 1: a 4 MP photo encodes in a fraction of a
    second and the answer is only a little larger."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def label_png(labels: np.ndarray, num_classes: int, palette: np.ndarray | None = None) -> str:
    """(H, W) uint8 labels -> a palette PNG data URI in ``palette``'s colours (default VOC;
    the page lays it over the image with an opacity slider; never transparent)."""
    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    colours = VOC_PALETTE if palette is None else np.asarray(palette, np.uint8)
    image.putpalette(colours[: max(num_classes, 1)].reshape(-1).tolist())
    return _png(image)


@dataclass
class _Entry:
    image: np.ndarray  # (H, W, 3) uint8
    logits: torch.Tensor  # (L, h, w) stride-8 scores
    pins: int = 0  # jobs using the entry now: it is not evicted until they finish


class SegmentService:
    """The model, the logits cache and the counters behind the app; thread-safe.

    ``cache_size`` images are kept (least recently used dropped first, never one a job is
    using). The CRF runs on at most ``crf_max_pixels`` pixels: larger images are scaled
    down for it (theta_alpha and theta_gamma scaled alike) and its labels scaled back up,
    which bounds its memory and time. The service does not limit how many calls run at
    once: :class:`deeplab.serve.jobs.JobQueue` does.
    """

    def __init__(
        self,
        model: nn.Module,
        info: NetworkInfo,
        crf: CRFParams | None = None,
        *,
        device: str | torch.device = "cpu",
        cache_size: int = 8,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        crf_max_pixels: int = DEFAULT_CRF_MAX_PIXELS,
    ) -> None:
        if cache_size < 1 or max_pixels < 1 or crf_max_pixels < 1:
            raise ValueError("cache_size, max_pixels and crf_max_pixels must be >= 1")
        self.predictor = Predictor(model, device=device)
        self.info = info
        self.palette = palette_for(info.class_names)
        self.default_crf = crf or CRFParams.preset("deeplab-largefov")
        self.cache_size = cache_size
        self.max_pixels = max_pixels
        self.crf_max_pixels = crf_max_pixels
        self.network_runs = 0
        self.crf_runs = 0
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    # -- cache ---------------------------------------------------------------------------

    def _insert_pinned(self, entry: _Entry) -> str:
        with self._lock:
            image_id = secrets.token_urlsafe(16)
            entry.pins = 1
            self._cache[image_id] = entry
            self._trim()
            return image_id

    def _pin(self, image_id: str) -> _Entry:
        with self._lock:
            entry = self._cache.get(image_id)
            if entry is None:
                raise ServiceError(404, "unknown or expired image id: upload the image again")
            entry.pins += 1
            self._cache.move_to_end(image_id)
            return entry

    def _unpin(self, entry: _Entry) -> None:
        with self._lock:
            entry.pins -= 1
            self._trim()

    def _trim(self) -> None:
        """Drop least recently used entries no job holds until ``cache_size`` are left (more
        while that many jobs hold theirs)."""
        excess = len(self._cache) - self.cache_size
        for key in [k for k, e in self._cache.items() if e.pins == 0][: max(excess, 0)]:
            del self._cache[key]

    def has_image(self, image_id: str) -> bool:
        with self._lock:
            return image_id in self._cache

    # -- jobs ------------------------------------------------------------------------------

    def add_image(
        self, data: bytes, *, cancel: threading.Event | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Decode, run the network, cache; returns the id and the first results (DCNN and
        DCNN+CRF with the default parameters, label colours as palette PNGs)."""
        image = decode_image(data, self.max_pixels)
        del data
        h, w = image.shape[:2]
        ch, cw = self.crf_size(h, w)
        try:
            crf_dense.check_memory(ch, cw, self.info.num_classes)
        except MemoryError as exc:
            raise ServiceError(413, str(exc)) from None
        _check(cancel)
        start = time.perf_counter()
        logits = torch.from_numpy(self.predictor.scores(image))
        with self._lock:
            self.network_runs += 1
        entry = _Entry(image, logits)
        image_id = self._insert_pinned(entry)
        try:
            _check(cancel)
            dcnn = refine(image, logits, None)
            result: dict[str, Any] = {
                "id": image_id,
                "width": w,
                "height": h,
                "dcnn_seconds": time.perf_counter() - start,
                "classes": _present(dcnn, self.info.class_names),
            }
            _check(cancel)
            result["dcnn"] = label_png(dcnn, self.info.num_classes, self.palette)
            del dcnn
            result["image"] = _png(Image.fromarray(image))
            result.update(self._crf(entry, self.default_crf, cancel))
        finally:
            self._unpin(entry)
        return image_id, result

    def run_crf(
        self, image_id: str, params: CRFParams, *, cancel: threading.Event | None = None
    ) -> dict[str, Any]:
        """The DCNN+CRF labels of a cached image with ``params`` (no network run)."""
        if params.iterations > MAX_ITERATIONS:
            raise ServiceError(422, f"iterations must be at most {MAX_ITERATIONS}")
        entry = self._pin(image_id)
        try:
            return self._crf(entry, params, cancel)
        finally:
            self._unpin(entry)

    def crf_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the CRF runs at for an image of this size (:func:`deeplab.predict.crf_size`)."""
        return crf_size(height, width, self.crf_max_pixels)

    def _crf(
        self, entry: _Entry, params: CRFParams, cancel: threading.Event | None
    ) -> dict[str, Any]:
        _check(cancel)
        start = time.perf_counter()
        ch, cw = self.crf_size(*entry.image.shape[:2])
        try:
            labels = refine(
                entry.image,
                entry.logits,
                params,
                max_pixels=self.crf_max_pixels,
                callback=None if cancel is None else (lambda _it, _q: _check(cancel)),
            )
        except ValueError as exc:  # valid fields the CRF cannot use, e.g. theta 1e-30
            raise ServiceError(422, f"the CRF cannot run with these parameters: {exc}") from None
        except MemoryError as exc:
            raise ServiceError(413, str(exc)) from None
        _check(cancel)
        with self._lock:
            self.crf_runs += 1
            runs = self.crf_runs
        return {
            "crf": label_png(labels, self.info.num_classes, self.palette),
            "crf_seconds": time.perf_counter() - start,
            "crf_runs": runs,
            "crf_size": [cw, ch],
            "params": params.to_dict(),
            "crf_classes": _present(labels, self.info.class_names),
        }

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "network_runs": self.network_runs,
                "crf_runs": self.crf_runs,
                "cached_images": len(self._cache),
            }


def to_json(result: dict[str, Any]) -> bytes:
    """The answer's body, built in the worker thread (its data URIs are megabytes)."""
    return json.dumps(result, separators=(",", ":")).encode()


def _present(labels: np.ndarray, names: tuple[str, ...]) -> list[str]:
    counts = np.bincount(labels.reshape(-1), minlength=1)
    return [names[v] if v < len(names) else str(v) for v in np.flatnonzero(counts).tolist()]


def params_from_json(body: Any, base: CRFParams) -> CRFParams:
    """A JSON object of slider values over ``base`` -> CRFParams; ServiceError 422."""
    if not isinstance(body, dict):
        raise ServiceError(422, "expected a JSON object of CRF parameters")
    allowed = set(SLIDERS) | {"normalization"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ServiceError(422, f"unknown CRF parameter(s) {unknown}; known: {sorted(allowed)}")
    try:
        values = {k: (int(v) if k == "iterations" else v) for k, v in body.items()}
        params = base.replace(**values)
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(Infinity)
        raise ServiceError(422, f"invalid CRF parameters: {exc}") from None
    if params.iterations > MAX_ITERATIONS:
        raise ServiceError(422, f"iterations must be at most {MAX_ITERATIONS}")
    return params


def slider_ranges(defaults: CRFParams) -> dict[str, list[float]]:
    """:data:`SLIDERS` widened where a starting value lies outside (or off the step grid)."""
    out: dict[str, list[float]] = {}
    start = defaults.to_dict()
    for name, (lo, hi, step) in SLIDERS.items():
        value = float(start[name])
        lo, hi = min(lo, value), max(hi, value)
        # Put the value on the grid lo + k * step, or the browser snaps it to a neighbour.
        k = math.floor((value - lo) / step + 1e-9)
        lo = round(value - k * step, 9)
        out[name] = [lo, hi, step]
    return out
