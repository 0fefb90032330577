"""The FastAPI application and the uvicorn runner (see the package docstring)."""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at
# run time, and `Request` is imported inside create_app (fastapi is an optional extra).
import asyncio
import json
import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any

from deeplab.data.image_io import READ_FORMATS
from deeplab.serve.jobs import DEFAULT_TIME_LIMIT, JobQueue, default_queue_size
from deeplab.serve.service import (
    DEFAULT_MAX_UPLOAD,
    SegmentService,
    ServiceError,
    params_from_json,
    slider_ranges,
    to_json,
)

log = logging.getLogger(__name__)

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
]
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
CRF_BODY_LIMIT = 4096


def _static(name: str) -> bytes:
    return resources.files("deeplab.serve").joinpath("static").joinpath(name).read_bytes()


def weights_note(service: SegmentService) -> str:
    """One or two sentences for the page: what the weights know, how to get others."""
    info = service.info
    if info.kind == "real":
        return f"{info.note[0].upper()}{info.note[1:]}." if info.note else ""
    if info.kind == "synthetic":
        classes = ", ".join(info.class_names[1:])
        knows = (
            f"These weights know only synthetic shapes ({classes}) on plain backgrounds: "
            "on photographs their labels mean nothing."
        )
    else:
        knows = "These weights are untrained (random): their labels mean nothing."
    return (
        f"{knows} For photographs, convert the authors' Caffe model with `deeplab convert` "
        'and restart with --weights (README, "Weights").'
    )


class _SecurityHeaders:
    """Pure ASGI middleware (no body buffering, disconnects pass through untouched)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    service: SegmentService,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    queue_size: int | None = None,
    time_limit: float = DEFAULT_TIME_LIMIT,
    workers: int = 1,
) -> Any:
    """The FastAPI application (package docstring). queue_size: jobs admitted at once
    (default :func:`deeplab.serve.jobs.default_queue_size`); time_limit: seconds per
    request; workers: jobs that run at once (each uses all the cores it is given)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.requests import ClientDisconnect

    if max_upload_bytes < 1:
        raise ValueError("max_upload_bytes must be >= 1")
    jobs = JobQueue(
        queue_size if queue_size is not None else default_queue_size(max_upload_bytes),
        workers=workers,
        time_limit=time_limit,
    )
    app = FastAPI(title="deeplab", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.state.jobs = jobs
    app.add_middleware(_SecurityHeaders)
    pages = {path: (_static(name), media) for path, (name, media) in STATIC.items()}
    # Built once: the answer is the same for every request and costs no work while busy.
    info_body = json.dumps(
        {
            "network": service.info.describe(),
            "weights_kind": service.info.kind,
            "weights_hint": weights_note(service),
            "classes": list(service.info.class_names),
            "palette": _palette(service.info.class_names),
            "defaults": service.default_crf.to_dict(),
            "sliders": slider_ranges(service.default_crf),
            "max_upload_bytes": max_upload_bytes,
            "max_pixels": service.max_pixels,
            "formats": list(READ_FORMATS),
            "crf_max_pixels": service.crf_max_pixels,
            "queue_size": jobs.capacity,
            "time_limit_s": jobs.time_limit,
        }
    ).encode()

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)

    def static_page(path: str) -> Any:
        body, media = pages[path]

        async def page() -> Response:
            return Response(body, media_type=media)

        return page

    for path in STATIC:
        app.get(path, include_in_schema=False)(static_page(path))

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/api/info")
    async def info() -> Response:
        return Response(info_body, media_type="application/json")

    @app.get("/api/stats")
    async def stats() -> dict[str, int]:
        return service.stats()

    @app.get("/api/health")
    async def health() -> JSONResponse:
        state = jobs.state()
        body = {"status": "shutting down" if jobs.closing else "ok", "jobs": state}
        return JSONResponse(body, status_code=503 if jobs.closing else 200)

    async def admitted(request: Request, read: Any, work: Any) -> Response:
        """Admit (or 503), read the body, run ``work(body, cancel)`` in a worker while
        watching for the client leaving and the time limit."""
        ticket = jobs.admit()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + jobs.time_limit
        try:
            try:
                body = await asyncio.wait_for(read(request), jobs.time_limit)
            except ClientDisconnect:
                jobs.counts["dropped"] += 1
                return Response(status_code=499)
            except asyncio.TimeoutError:
                jobs.counts["timed_out"] += 1
                raise ServiceError(
                    408, f"the upload did not arrive within {jobs.time_limit:.0f} s"
                ) from None
            run = asyncio.ensure_future(jobs.run(lambda cancel: work(body, cancel)))
            gone = asyncio.ensure_future(_disconnected(request))
            try:
                done, _ = await asyncio.wait(
                    {run, gone},
                    timeout=max(deadline - loop.time(), 0.0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                gone.cancel()
                if not run.done():
                    run.cancel()
            if run in done:
                try:
                    content = run.result()
                except ServiceError:
                    raise
                except Exception:
                    jobs.counts["failed"] += 1
                    log.exception("job failed")
                    raise ServiceError(
                        500, "the server failed on this image (the log has the details)"
                    ) from None
                jobs.counts["served"] += 1
                return Response(content, media_type="application/json")
            if gone in done:
                jobs.counts["dropped"] += 1
                return Response(status_code=499)  # nobody is listening any more
            jobs.counts["timed_out"] += 1
            raise ServiceError(
                504,
                f"the server did not finish within {jobs.time_limit:.0f} s (it is busy or the "
                "image is large); try again later or with a smaller image",
            )
        finally:
            ticket.release()

    async def read_upload(request: Request) -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_upload_bytes:
                raise ServiceError(413, _too_large(len(body), max_upload_bytes, at_least=True))
        return bytes(body)

    @app.post("/api/images")
    async def upload(request: Request) -> Response:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise ServiceError(400, "invalid Content-Length") from None
            if declared > max_upload_bytes:
                raise ServiceError(413, _too_large(declared, max_upload_bytes))
        content_type = request.headers.get("content-type", "")

        def work(data: bytes, cancel: Any) -> bytes:
            if content_type.lower().startswith("multipart/form-data"):
                data = multipart_file(data, content_type)
            _, result = service.add_image(data, cancel=cancel)
            return to_json(result)

        return await admitted(request, read_upload, work)

    @app.post("/api/images/{image_id}/crf")
    async def crf(image_id: str, request: Request) -> Response:
        # Counted as it arrives: a large body is refused without being held in memory.
        received = bytearray()
        async for chunk in request.stream():
            received += chunk
            if len(received) > CRF_BODY_LIMIT:
                raise ServiceError(413, "CRF parameters: the request is too large")
        raw = bytes(received)
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError):  # also bytes that are not UTF-8, deep nesting
            raise ServiceError(400, "CRF parameters must be JSON") from None
        params = params_from_json(body, service.default_crf)
        if not service.has_image(image_id):
            raise ServiceError(404, "unknown or expired image id: upload the image again")

        async def already_read(_: Request) -> bytes:
            return raw

        def work(_: bytes, cancel: Any) -> bytes:
            return to_json(service.run_crf(image_id, params, cancel=cancel))

        return await admitted(request, already_read, work)

    return app


async def _disconnected(request: Any) -> None:
    """Returns when the client has gone (the body has been read: only a disconnect, or
    nothing, can arrive now)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def multipart_file(body: bytes, content_type: str, field: str = "file") -> bytes:
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


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return (
        f"the upload is {more}{size / 2**20:.1f} MiB; this server takes at most "
        f"{limit / 2**20:.1f} MiB (deeplab serve --max-upload-mb)"
    )


def _palette(class_names: Sequence[str]) -> list[list[int]]:
    from deeplab.data.palettes import palette_for

    colours = palette_for(class_names)
    return [[int(c) for c in colours[i]] for i in range(min(len(class_names), 256))]


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, *, grace: float = 3.0) -> None:
    """Run ``app`` with uvicorn until interrupted. On SIGTERM or SIGINT: stop accepting,
    refuse waiting jobs, give running ones ``grace`` seconds, then stop them and exit."""
    import uvicorn

    jobs: JobQueue = app.state.jobs

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            drain = asyncio.ensure_future(jobs.drain(grace))
            try:
                await super().shutdown(sockets)
            finally:
                drain.cancel()

    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", timeout_graceful_shutdown=int(grace) + 2
    )
    _Server(config).run()
