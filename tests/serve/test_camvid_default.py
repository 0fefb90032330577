"""The web demo's default network is the shipped CamVid model, and the page says so."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from deeplab.data import camvid_palette
from deeplab.models import load_network
from deeplab.serve import SegmentService
from deeplab.serve.app import _palette, weights_note
from deeplab.serve.service import label_png


def test_default_network_note_and_colours() -> None:
    net = load_network(None, None)
    service = SegmentService(net.model, net.info)
    note = weights_note(service)
    assert "street scenes" in note and "11 classes" in note
    np.testing.assert_array_equal(service.palette, camvid_palette())
    assert _palette(net.info.class_names)[0] == [int(c) for c in camvid_palette()[0]]
    uri = label_png(np.array([[0, 8]], np.uint8), 11, service.palette)
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        rgb = np.array(im.convert("RGB"))
    np.testing.assert_array_equal(rgb[0], camvid_palette()[[0, 8]])
