"""A small web demo: upload an image, compare DCNN and DCNN+CRF, tune the CRF with sliders.

::

    from deeplab.models import load_network
    from deeplab.serve import SegmentService, create_app

    net = load_network(None, None)
    app = create_app(SegmentService(net.model, net.info))   # any ASGI server runs it

or ``deeplab serve`` (uvicorn, 127.0.0.1:8000). One HTML page with plain JavaScript
(``static/``) talks to a JSON API:

- ``POST /api/images``: the image, as the raw request body or as the ``file`` field of a
  multipart form. Runs the network once and keeps its stride-8 logits in a small LRU
  cache under a random id; answers the id, the image and the DCNN and DCNN+CRF label maps
  in the VOC colours (PNG data URIs).
- ``POST /api/images/{id}/crf``: CRF parameters (JSON) -> the new DCNN+CRF labels. Only
  the CRF runs: a slider change never re-runs the network.
- ``GET /api/info`` (classes, colours, defaults, limits, the weights in use),
  ``GET /api/stats`` (network and CRF runs so far), ``GET /api/health`` (200, or 503
  while shutting down; the job queue's state).

Load: both POSTs are jobs of a bounded queue (:mod:`deeplab.serve.jobs`): beyond its size
the answer is 503 with ``Retry-After`` at once, before the body is read; decoding, the
network, the CRF and encoding run one job at a time in a worker thread, so memory is
bounded by the queue and the event loop stays free for ``/api/info`` and the page. A
client that disconnects gives its place back and its work is dropped; a request past the
time limit gets 504. An admitted upload's cache entry is held until its answer is built.

Safety: uploads over ``max_upload_bytes`` are refused with 413, by their Content-Length
before the body is read and otherwise as soon as the stream passes the limit; images over
``max_pixels`` or too large for the CRF's memory get 413 too; anything that is not a
raster image (PNG, JPEG, BMP, PPM, TIFF, GIF, WEBP) gets 415. Uploads are parsed in
memory: the server writes nothing to disk. The page is served with a Content Security
Policy that allows only its own script and ``data:`` images.
"""

# fastapi and uvicorn (the optional 'app' extra) are imported by create_app and serve only.
from deeplab.serve.app import create_app, serve
from deeplab.serve.service import SegmentService, ServiceError, decode_image

__all__ = ["SegmentService", "ServiceError", "create_app", "decode_image", "serve"]
