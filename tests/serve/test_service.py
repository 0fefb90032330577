"""SegmentService without a server: the CRF's size cap, the cache's pins, slider ranges,
the weights note."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab.crf import CRFParams
from deeplab.data import SyntheticScenes
from deeplab.models import load_network
from deeplab.serve.service import JobCancelledError, SegmentService, slider_ranges


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _size(uri: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size


@pytest.fixture(scope="module")
def service_factory(tiny_weights: Path):
    net = load_network(None, tiny_weights)

    def make(**kwargs: object) -> SegmentService:
        return SegmentService(net.model, net.info, **kwargs)

    return make


def test_large_images_get_their_crf_on_a_scaled_copy(service_factory) -> None:
    service = service_factory(crf_max_pixels=1200)
    image = SyntheticScenes(1, size=(60, 80), seed=1)[0].image
    _, result = service.add_image(_png(image))
    assert result["crf_size"] == [40, 30]  # 1200 pixels, the image's aspect
    assert _size(result["crf"]) == _size(result["dcnn"]) == (80, 60)
    assert result["params"]["theta_alpha"] == service.default_crf.theta_alpha  # as asked
    small = service_factory()
    _, full = small.add_image(_png(image))
    assert full["crf_size"] == [80, 60]


def test_entries_in_use_are_not_evicted(service_factory) -> None:
    service = service_factory(cache_size=1)
    image = _png(SyntheticScenes(1, size=(40, 48), seed=2)[0].image)
    first, _ = service.add_image(image)
    entry = service._pin(first)  # as a running CRF job holds it
    second, result = service.add_image(image)  # answered in full, then the only one to go
    assert result["crf"].startswith("data:image/png")
    assert service.has_image(first) and not service.has_image(second)
    service._unpin(entry)
    third, _ = service.add_image(image)  # nothing in use: plain least recently used
    assert not service.has_image(first) and service.has_image(third)
    assert service.stats()["cached_images"] == 1


def test_a_cancelled_job_stops_and_unpins(service_factory) -> None:
    service = service_factory(cache_size=2)
    image_id, _ = service.add_image(_png(SyntheticScenes(1, size=(40, 48), seed=3)[0].image))
    cancel = threading.Event()
    cancel.set()
    before = service.stats()["crf_runs"]
    with pytest.raises(JobCancelledError):
        service.run_crf(image_id, service.default_crf, cancel=cancel)
    assert service.stats()["crf_runs"] == before
    assert service._cache[image_id].pins == 0


def test_slider_ranges_contain_their_starting_values_on_the_grid() -> None:
    for params in (
        CRFParams(w1=25.0, theta_alpha=300.0, theta_beta=3.3, w2=0.0, theta_gamma=0.3),
        CRFParams.preset("deeplab-largefov"),
        CRFParams.preset("krahenbuhl2013"),
    ):
        for name, (low, high, step) in slider_ranges(params).items():
            value = float(getattr(params, name))
            assert low <= value <= high, (name, low, value, high)
            k = (value - low) / step
            assert abs(k - round(k)) < 1e-6, (name, low, step, value)
