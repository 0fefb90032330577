"""A small web demo: upload an image, compare DCNN and DCNN+CRF, tune the CRF with sliders.

::

    from deeplab.segment import load_network
    from deeplab.serve import SegmentService, create_app

    net = load_network(None, None)
    app = create_app(SegmentService(net.model, net.info))   # any ASGI server runs it

or ``deeplab serve`` (uvicorn, 127.0.0.1:8000). One HTML page with plain JavaScript
talks to a JSON API:

- ``POST /api/images``: the image, as the raw request body or as the ``file`` field of a
  multipart form. Runs the network once and keeps its stride-8 logits in a small LRU
  cache under a random id; answers the id, the DCNN and DCNN+CRF overlays (PNG data URIs).
- ``POST /api/images/{id}/crf``: CRF parameters (JSON) -> the new DCNN+CRF overlay. Only
  the CRF runs: a slider change never re-runs the network.
- ``GET /api/info`` (classes, defaults, limits, the weights in use), ``GET /api/stats``
  (how many network and CRF runs served so far).

Safety: uploads over ``max_upload_bytes`` are refused with 413, by their Content-Length
before the body is read and otherwise as soon as the stream passes the limit; images over
``max_pixels`` or too large for the CRF's memory get 413 too; anything that is not a
raster image (PNG, JPEG, BMP, PPM, TIFF, GIF, WEBP) gets 415. Uploads are parsed in
memory: the server writes nothing to disk. The page is served with a Content Security
Policy that allows only its own script and ``data:`` images.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at
# run time, and `Request` is imported inside create_app (fastapi is an optional extra).
import io
import json
import logging
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

from deeplab.crf import CRFParams, dense_crf_from_logits
from deeplab.crf import dense as crf_dense
from deeplab.data.image_io import READ_FORMATS
from deeplab.predict import Predictor, upsample_logits
from deeplab.report import png_data_uri
from deeplab.segment import NetworkInfo, overlay, real_weights_hint

__all__ = ["SegmentService", "ServiceError", "create_app", "decode_image", "serve"]

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD = 10 * 2**20
DEFAULT_MAX_PIXELS = 4_000_000
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
    """A request the service refuses: an HTTP status and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Uploaded bytes -> (H, W, 3) uint8 RGB, in memory. ServiceError 415 for anything
    that is not a raster image, 413 for more than ``max_pixels`` pixels (checked from the
    header, before decoding)."""
    if not data:
        raise ServiceError(400, "the upload is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=READ_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ServiceError(413, f"the image is too large to decode safely: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ServiceError(
            415,
            f"not a readable image ({type(exc).__name__}); upload a {', '.join(READ_FORMATS)} file",
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


@dataclass
class _Entry:
    image: np.ndarray
    logits: torch.Tensor  # (L, h, w) stride-8 scores


class SegmentService:
    """The model, the logits cache and the counters behind the app; thread-safe.

    ``cache_size`` images are kept (least recently used dropped first); the network and
    the CRF run one request at a time, which keeps a small machine responsive.
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
    ) -> None:
        if cache_size < 1 or max_pixels < 1:
            raise ValueError("cache_size and max_pixels must be >= 1")
        self.predictor = Predictor(model, device)
        self.info = info
        self.default_crf = crf or CRFParams.preset("deeplab-largefov")
        self.cache_size = cache_size
        self.max_pixels = max_pixels
        self.network_runs = 0
        self.crf_runs = 0
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def add_image(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Decode, run the network, cache; returns the id and the first results (DCNN and
        DCNN+CRF with the default parameters)."""
        image = decode_image(data, self.max_pixels)
        h, w = image.shape[:2]
        try:
            crf_dense.check_memory(h, w, self.info.num_classes)
        except MemoryError as exc:
            raise ServiceError(413, str(exc)) from None
        start = time.perf_counter()
        with self._lock:
            logits = torch.from_numpy(self.predictor.stride8_logits(image))
            self.network_runs += 1
            image_id = secrets.token_urlsafe(16)
            self._cache[image_id] = _Entry(image, logits)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        full = upsample_logits(logits, (h, w)).numpy()
        dcnn = np.asarray(full.argmax(0), dtype=np.uint8)
        result = {
            "id": image_id,
            "width": w,
            "height": h,
            "image": png_data_uri(image),
            "dcnn": png_data_uri(overlay(image, dcnn)),
            "dcnn_seconds": time.perf_counter() - start,
            "classes": _present(dcnn, self.info.class_names),
        }
        result.update(self.run_crf(image_id, self.default_crf))
        return image_id, result

    def run_crf(self, image_id: str, params: CRFParams) -> dict[str, Any]:
        """The DCNN+CRF overlay of a cached image with ``params`` (no network run)."""
        if params.iterations > MAX_ITERATIONS:
            raise ServiceError(422, f"iterations must be at most {MAX_ITERATIONS}")
        with self._lock:
            entry = self._cache.get(image_id)
            if entry is None:
                raise ServiceError(404, "unknown or expired image id: upload the image again")
            self._cache.move_to_end(image_id)
            start = time.perf_counter()
            h, w = entry.image.shape[:2]
            full = upsample_logits(entry.logits, (h, w)).numpy()
            try:
                q = dense_crf_from_logits(entry.image, full, params)
            except ValueError as exc:  # valid fields the CRF cannot use, e.g. theta 1e-30
                raise ServiceError(
                    422, f"the CRF cannot run with these parameters: {exc}"
                ) from None
            labels = np.asarray(q.argmax(0), dtype=np.uint8)
            self.crf_runs += 1
            runs = self.crf_runs
        return {
            "crf": png_data_uri(overlay(entry.image, labels)),
            "crf_seconds": time.perf_counter() - start,
            "crf_runs": runs,
            "params": params.to_dict(),
            "crf_classes": _present(labels, self.info.class_names),
        }

    def stats(self) -> dict[str, int]:
        return {
            "network_runs": self.network_runs,
            "crf_runs": self.crf_runs,
            "cached_images": len(self._cache),
        }


def _present(labels: np.ndarray, names: tuple[str, ...]) -> list[str]:
    values = np.unique(labels)
    return [names[v] if v < len(names) else str(v) for v in values.tolist()]


def _params_from_json(body: Any, base: CRFParams) -> CRFParams:
    if not isinstance(body, dict):
        raise ServiceError(422, "expected a JSON object of CRF parameters")
    allowed = set(SLIDERS) | {"normalization"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ServiceError(422, f"unknown CRF parameter(s) {unknown}; known: {sorted(allowed)}")
    try:
        values = {k: (int(v) if k == "iterations" else v) for k, v in body.items()}
        return base.replace(**values)
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(Infinity)
        raise ServiceError(422, f"invalid CRF parameters: {exc}") from None


def _multipart_file(body: bytes, content_type: str, field: str = "file") -> bytes:
    """The ``field`` part of a multipart/form-data body, parsed in memory."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ServiceError(400, "multipart upload without a boundary")
    parts: list[tuple[dict[bytes, bytes], bytes]] = []
    cur: dict[str, Any] = {}

    def on_part_begin() -> None:
        cur.update(headers={}, name=b"", value=b"", data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        cur["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        cur["value"] += data[start:end]

    def on_header_end() -> None:
        cur["headers"][cur["name"].lower()] = cur["value"]
        cur["name"], cur["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        cur["data"] += data[start:end]

    def on_part_end() -> None:
        parts.append((cur["headers"], bytes(cur["data"])))

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # python-multipart raises its own error classes
        raise ServiceError(400, f"malformed multipart upload: {exc}") from None
    for headers, data in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition.get(b"name") == field.encode():
            return data
    raise ServiceError(400, f"the multipart upload has no '{field}' field")


def create_app(service: SegmentService, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD) -> Any:
    """The FastAPI application (module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    if max_upload_bytes < 1:
        raise ValueError("max_upload_bytes must be >= 1")
    app = FastAPI(title="deeplab", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'self'; style-src 'self'; "
            "img-src 'self' data:; connect-src 'self'; form-action 'none'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        return response

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/app.js")
    def script() -> Response:
        return Response(SCRIPT, media_type="text/javascript")

    @app.get("/app.css")
    def style() -> Response:
        return Response(STYLE, media_type="text/css")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {
            "network": service.info.describe(),
            "weights_kind": service.info.kind,
            "weights_hint": ""
            if service.info.kind == "real"
            else real_weights_hint(service.info.variant),
            "classes": list(service.info.class_names),
            "palette": _palette(len(service.info.class_names)),
            "defaults": service.default_crf.to_dict(),
            "sliders": {k: list(v) for k, v in SLIDERS.items()},
            "max_upload_bytes": max_upload_bytes,
            "max_pixels": service.max_pixels,
        }

    @app.get("/api/stats")
    def stats() -> dict[str, int]:
        return service.stats()

    @app.post("/api/images")
    async def upload(request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise ServiceError(400, "invalid Content-Length") from None
            if declared > max_upload_bytes:
                raise ServiceError(413, _too_large(declared, max_upload_bytes))
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_upload_bytes:
                raise ServiceError(413, _too_large(len(body), max_upload_bytes, at_least=True))
        content_type = request.headers.get("content-type", "")
        data = bytes(body)
        if content_type.lower().startswith("multipart/form-data"):
            data = _multipart_file(data, content_type)
        _, result = await run_in_threadpool(service.add_image, data)
        return result

    @app.post("/api/images/{image_id}/crf")
    async def crf(image_id: str, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > 4096:
            raise ServiceError(413, "CRF parameters: the request is too large")
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError):  # also bytes that are not UTF-8, deep nesting
            raise ServiceError(400, "CRF parameters must be JSON") from None
        params = _params_from_json(body, service.default_crf)
        return await run_in_threadpool(service.run_crf, image_id, params)

    return app


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return (
        f"the upload is {more}{size / 2**20:.1f} MiB; this server takes at most "
        f"{limit / 2**20:.1f} MiB (deeplab serve --max-upload-mb)"
    )


def _palette(n: int) -> list[list[int]]:
    from deeplab.data.classes import VOC_PALETTE

    return [[int(c) for c in VOC_PALETTE[i]] for i in range(min(n, 256))]


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run ``app`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DeepLab v1: DCNN and fully connected CRF</title>
<link rel="stylesheet" href="/app.css"></head>
<body>
<h1>DeepLab v1: DCNN and fully connected CRF</h1>
<p id="network">loading...</p>
<p id="warning" hidden></p>
<p><label>Image: <input type="file" id="file" accept="image/*"></label></p>
<p id="status" data-crf-runs="0">Choose an image.</p>
<div class="results">
  <figure><img id="img-input" alt="input image"><figcaption>image</figcaption></figure>
  <figure><img id="img-dcnn" alt="DCNN result"><figcaption>DCNN</figcaption></figure>
  <figure><img id="img-crf" alt="DCNN+CRF result"><figcaption>DCNN + CRF</figcaption></figure>
</div>
<p id="legend"></p>
<fieldset id="sliders"><legend>CRF parameters (paper eq. 3)</legend></fieldset>
<script src="/app.js"></script>
</body></html>
"""

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1300px;padding:0 1em}
.results{display:flex;gap:1em;flex-wrap:wrap}figure{margin:0}
figure img{max-width:400px;min-width:100px;min-height:60px;border:1px solid #ccc}
figcaption{text-align:center;color:#555}#warning{background:#fdd;padding:.5em;
border:1px solid #c00;white-space:pre-wrap}fieldset{margin-top:1em;max-width:640px}
.slider{display:grid;grid-template-columns:9em 1fr 4em;gap:.5em;align-items:center}
.swatch{display:inline-block;width:1em;height:1em;border:1px solid #999;
vertical-align:middle;margin:0 .3em 0 1em}
"""

SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
let imageId = null, pending = null, inflight = false, queued = false;
const values = {};

function setStatus(text) { $("status").textContent = text; }

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = {detail: response.statusText}; }
  if (!response.ok) throw new Error(`${response.status}: ${body.detail}`);
  return body;
}

function showLegend(info) {
  const legend = $("legend");
  legend.textContent = "";
  info.classes.forEach((name, i) => {
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    const [r, g, b] = info.palette[i];
    swatch.style.background = `rgb(${r},${g},${b})`;
    legend.append(swatch, document.createTextNode(name));
  });
}

function addSlider(name, range, value) {
  const [min, max, step] = range;
  const row = document.createElement("label");
  row.className = "slider";
  const input = document.createElement("input");
  Object.assign(input, {type: "range", min, max, step, value, id: `slider-${name}`});
  const shown = document.createElement("output");
  shown.id = `value-${name}`;
  shown.textContent = value;
  values[name] = Number(value);
  input.addEventListener("input", () => {
    values[name] = Number(input.value);
    shown.textContent = input.value;
    clearTimeout(pending);
    pending = setTimeout(rerunCrf, 150);
  });
  row.append(document.createTextNode(name), input, shown);
  $("sliders").append(row);
}

function showCrf(result) {
  $("img-crf").src = result.crf;
  $("status").dataset.crfRuns = String(result.crf_runs);
  setStatus(`CRF: ${result.crf_seconds.toFixed(2)} s (${result.params.iterations} iterations);`
    + ` classes ${result.crf_classes.join(", ")}; CRF runs so far: ${result.crf_runs}`);
}

async function rerunCrf() {
  if (!imageId) return;
  if (inflight) { queued = true; return; }
  inflight = true;
  setStatus("running the CRF...");
  try {
    showCrf(await api(`/api/images/${imageId}/crf`, {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(values)}));
  } catch (e) {
    setStatus(`error: ${e.message}`);
  } finally {
    inflight = false;
    if (queued) { queued = false; rerunCrf(); }
  }
}

async function upload(file) {
  const info = window.deeplabInfo;
  if (file.size > info.max_upload_bytes) {
    setStatus(`error: ${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MiB; the limit is `
      + `${(info.max_upload_bytes / 2 ** 20).toFixed(1)} MiB`);
    return;
  }
  setStatus(`uploading ${file.name} and running the network...`);
  const form = new FormData();
  form.append("file", file);
  try {
    const result = await api("/api/images", {method: "POST", body: form});
    imageId = result.id;
    $("img-input").src = result.image;
    $("img-dcnn").src = result.dcnn;
    showCrf(result);
    // Sliders moved before this upload: show their CRF rather than the defaults'.
    if (Object.keys(values).some((k) => values[k] !== result.params[k])) rerunCrf();
  } catch (e) {
    setStatus(`error: ${e.message}`);
  }
}

async function start() {
  const info = await api("/api/info");
  window.deeplabInfo = info;
  $("network").textContent = `Network: ${info.network}`;
  if (info.weights_kind !== "real") {
    const warning = $("warning");
    warning.hidden = false;
    warning.textContent = (info.weights_kind === "synthetic"
      ? "These weights were trained on synthetic shapes, not on photographs: results on "
        + "real images are meaningless."
      : "These weights are untrained (random): results are meaningless.")
      + "\n" + info.weights_hint;
  }
  showLegend(info);
  for (const [name, range] of Object.entries(info.sliders)) {
    addSlider(name, range, info.defaults[name]);
  }
  $("file").addEventListener("change", (event) => {
    if (event.target.files.length) upload(event.target.files[0]);
  });
}

start().catch((e) => setStatus(`error: ${e.message}`));
"""
