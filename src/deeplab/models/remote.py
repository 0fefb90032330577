"""Registered weights by name: download the published file, convert it, cache both.

Only on request (``deeplab convert NAME``, ``build_model(..., weights=NAME)``, a training
``--init NAME``), and only for records that know the file's URL
(:attr:`~deeplab.models.weights.WeightsRecord.url`): torchvision's ImageNet VGG-16 and the
authors' reduced ImageNet init nets. The cache is :func:`~deeplab.models.weights.weights_dir`
(``$DEEPLAB_WEIGHTS_DIR``, else ``~/.cache/deeplab``): the downloaded file under
``downloads/`` (hash-checked, see :mod:`deeplab.download`), the converted checkpoint beside
it as :meth:`~deeplab.models.weights.WeightsRecord.checkpoint_name` names it. Both are
written atomically, so an interrupted run leaves either nothing or a complete file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from deeplab.download import ProgressCallback, fetch
from deeplab.models.weights import WEIGHTS, WeightsRecord, get_weights_record, weights_dir

__all__ = ["converted_checkpoint", "download_weights", "downloadable"]

log = logging.getLogger(__name__)


def downloadable() -> list[str]:
    """Names of the registered weights this package can download."""
    return [name for name, record in WEIGHTS.items() if record.url]


def _logging_progress(url: str) -> ProgressCallback:
    """Progress for library callers: a log line at every tenth of the file."""
    last = [-1]

    def report(done: int, total: int | None) -> None:
        if total:
            tenth = 10 * done // total
            if tenth > last[0]:
                last[0] = tenth
                log.info("%s: %d%% of %.1f MB", url, 10 * tenth, total / 1e6)

    return report


def download_weights(
    name: str | WeightsRecord,
    *,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
) -> Path:
    """The published file of a registered weights name, downloaded into
    ``weights_dir()/downloads`` if it is not there yet; checked against the record's
    sha256 (or the hash prefix in the file name, as torch.hub does), else its digest is
    written beside it. Raises ValueError for a name without a URL and
    :class:`~deeplab.download.DownloadError` (an OSError) when the download fails."""
    record = name if isinstance(name, WeightsRecord) else get_weights_record(name)
    if not record.url:
        raise ValueError(
            f"weights {record.name!r} have no known file URL; fetch the {record.file_format} "
            f"from {record.source} yourself, then `deeplab convert FILE --variant "
            f"{record.variant} --out {weights_dir() / record.filename}`"
        )
    filename = os.path.basename(urlparse(record.url).path)
    if not filename:
        raise ValueError(f"weights {record.name!r}: URL {record.url} names no file")
    dest = weights_dir() / "downloads" / filename
    fetch(
        record.url,
        dest,
        sha256=record.sha256,
        timeout=timeout,
        progress=progress or _logging_progress(record.url),
    )
    return dest


def converted_checkpoint(
    name: str | WeightsRecord,
    variant: str | None = None,
    num_classes: int | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> Path:
    """The converted checkpoint of a registered name: taken from the cache, else downloaded
    (:func:`download_weights`), converted (:func:`convert_file`) and cached.

    A trained net is converted as it is (its record's variant and classes); an ImageNet
    init onto ``variant`` (default: the record's) with ``num_classes`` (default 21), its new
    fc8 initialised once, at conversion, and kept in the cache."""
    from deeplab.models.loading import convert_file, save_model

    record = name if isinstance(name, WeightsRecord) else get_weights_record(name)
    if record.class_names:
        variant, num_classes = record.variant, len(record.class_names)
    variant = variant or record.variant
    num_classes = num_classes or 21
    path = weights_dir() / record.checkpoint_name(variant, num_classes)
    if path.exists():
        return path
    source = download_weights(record, progress=progress)
    model, report = convert_file(source, variant, num_classes)
    extra = {
        "source_format": report.source_format,
        "weights_name": record.name,
        "url": record.url or "",
    }
    if record.train_split:
        extra["train_split"] = record.train_split
    save_model(model, path, source=record.name, extra=extra)
    log.info("converted %s onto %s (%d classes): %s", record.name, variant, num_classes, path)
    return path
