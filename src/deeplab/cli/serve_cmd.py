"""`deeplab serve`: the web demo (upload an image, DCNN vs DCNN+CRF, CRF sliders).

::

    deeplab serve                     # http://127.0.0.1:8000, the shipped CamVid model
    deeplab serve --model deeplab-largefov --weights deeplab-largefov-voc12 --port 8080
    deeplab serve --queue 4 --timeout 60    # admit 4 jobs at once (503 beyond), 60 s each
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from deeplab.cli.data_args import add_threads_option, apply_threads
from deeplab.cli.network_args import add_network_options


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="web demo: upload an image, compare DCNN and DCNN+CRF, tune the CRF live",
        description="Serve one page where you upload an image and see the network's result "
        "and the CRF-refined one side by side; sliders change the CRF parameters and re-run "
        "only the CRF (the network's scores are cached per image). Needs the 'app' extra: "
        "pip install 'deeplab[app]'. Nothing is written to disk.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_network_options(p)
    p.add_argument(
        "--crf",
        default="auto",
        metavar="PRESET|FILE",
        help="the sliders' starting values: a preset or JSON file (default auto: tuned "
        "parameters shipped for the CamVid or synthetic model, else the model's preset)",
    )
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="upload limit (MiB)")
    p.add_argument("--max-pixels", type=int, default=4_000_000, help="image size limit")
    p.add_argument("--cache", type=int, default=8, help="images whose scores are kept")
    p.add_argument(
        "--crf-max-pixels",
        type=int,
        default=1_500_000,
        help="larger images get their CRF on a scaled-down copy (bounds its memory, about "
        "0.4 GB per megapixel; default 1500000)",
    )
    p.add_argument(
        "--queue",
        type=int,
        default=None,
        metavar="N",
        help="uploads and CRF runs admitted at once (one runs, the rest wait); more are "
        "refused with 503 and Retry-After. Default: one per CPU core, 2 to 16",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="seconds a request may take, waiting included (504 beyond; default 120)",
    )
    add_threads_option(p)
    p.set_defaults(func=run)
    return p


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from deeplab.cli.feedback import prepare_crf
    from deeplab.cli.network_args import network_from_args, pick_device
    from deeplab.crf import CRFParams
    from deeplab.models import resolve_crf

    try:
        from deeplab.serve import SegmentService, create_app, serve
    except ImportError as exc:
        print(f"deeplab serve: {exc}; pip install 'deeplab[app]'", file=sys.stderr)
        return 1
    if args.max_upload_mb <= 0:
        raise ValueError("--max-upload-mb must be > 0")
    if args.queue is not None and args.queue < 1:
        raise ValueError("--queue must be >= 1")
    if not args.timeout > 0:
        raise ValueError("--timeout must be > 0 seconds")
    if str(args.crf).lower() == "none":
        raise ValueError("--crf none: the web demo always shows the CRF; pick a preset")
    if args.crf != "auto":
        CRFParams.resolve(args.crf)  # a wrong name or file fails before the network loads
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port}: must be 1..65535")
    apply_threads(args)
    device = pick_device(args.device)
    network = network_from_args(args)
    crf = resolve_crf(args.crf, network.info)
    prepare_crf(crf)
    service = SegmentService(
        network.model,
        network.info,
        crf,
        device=device,
        cache_size=args.cache,
        max_pixels=args.max_pixels,
        crf_max_pixels=args.crf_max_pixels,
    )
    try:
        app = create_app(
            service,
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            queue_size=args.queue,
            time_limit=args.timeout,
        )
    except ImportError as exc:
        print(f"deeplab serve: {exc}; pip install 'deeplab[app]'", file=sys.stderr)
        return 1
    if not _is_loopback(args.host):
        print(
            f"deeplab serve: WARNING: binding {args.host}: anyone who can reach this machine "
            "can use the demo (there is no authentication)",
            file=sys.stderr,
        )
    print(
        f"serving on http://{args.host}:{args.port}/ (Ctrl-C or SIGTERM stops; "
        f"{app.state.jobs.capacity} jobs admitted at once)",
        file=sys.stderr,
    )
    serve(app, args.host, args.port)
    return 0
