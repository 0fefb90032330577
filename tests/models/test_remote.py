"""Weights by name: download (from a loopback server), convert, cache; never the network."""

from __future__ import annotations

import hashlib

import pytest
import torch

from deeplab.cli import main
from deeplab.download import DownloadError, hash_prefix_of
from deeplab.models import WEIGHTS, WeightsRecord, build_model, load_checkpoint, load_model
from deeplab.models.remote import converted_checkpoint, downloadable
from deeplab.models.surgery import fold_torchvision_input
from deeplab.train.initial import resolve_init
from download_server import Route, loopback_server

from .reference import torchvision_vgg16_state

NAME = "test:narrow-vgg16"


def test_published_files_the_package_knows() -> None:
    assert sorted(downloadable()) == ["torchvision:vgg16", "vgg16_128", "vgg16_20M"]
    tv = WEIGHTS["torchvision:vgg16"]
    assert tv.url == "https://download.pytorch.org/models/vgg16-397923af.pth"
    assert tv.sha256 == hash_prefix_of(tv.url) == "397923af"
    assert tv.file_format == "pth" and tv.class_names == ()
    assert tv.filename == "torchvision-vgg16.safetensors"
    assert tv.checkpoint_name("deeplab-largefov", 21) == tv.filename
    assert tv.checkpoint_name("deeplab", 6) == "torchvision-vgg16.deeplab.6classes.safetensors"
    # The released DeepLab nets keep their own name whatever is asked.
    voc = WEIGHTS["deeplab-largefov-voc12"]
    assert voc.checkpoint_name("deeplab", 6) == "deeplab-largefov-voc12.safetensors"


@pytest.fixture
def narrow_vgg16(tmp_path_factory) -> tuple[bytes, dict[str, torch.Tensor]]:
    """A torchvision-VGG-16-shaped .pth narrow enough for deeplab-largefov-tiny."""
    torch.manual_seed(1)
    state = torchvision_vgg16_state((16, 32, 64, 64, 64), 512)
    path = tmp_path_factory.mktemp("pth") / "narrow.pth"
    torch.save(state, path)
    return path.read_bytes(), state


@pytest.fixture
def served(narrow_vgg16, monkeypatch, tmp_path):
    """NAME registered with a loopback URL (hash in the file name, as torchvision's)."""
    body, _ = narrow_vgg16
    monkeypatch.setenv("DEEPLAB_WEIGHTS_DIR", str(tmp_path / "cache"))
    digest = hashlib.sha256(body).hexdigest()
    with loopback_server() as server:
        path = f"/models/narrow-{digest[:8]}.pth"
        url = server.add(path, Route(body))
        record = WeightsRecord(
            NAME,
            "deeplab-largefov-tiny",
            url,
            "pth",
            class_names=(),
            url=url,
            sha256=hash_prefix_of(url),
        )
        monkeypatch.setitem(WEIGHTS, NAME, record)
        yield server.routes[path], record


def test_build_model_downloads_converts_and_caches(served, narrow_vgg16, tmp_path) -> None:
    route, record = served
    _, state = narrow_vgg16
    model = build_model("deeplab-largefov-tiny", num_classes=5, weights=NAME)
    w, b = fold_torchvision_input(state["features.0.weight"], state["features.0.bias"])
    torch.testing.assert_close(model.conv1_1.weight, w)
    torch.testing.assert_close(model.conv1_1.bias, b)
    cache = tmp_path / "cache"
    converted = cache / "test-narrow-vgg16.deeplab-largefov-tiny.5classes.safetensors"
    assert sorted(p.name for p in cache.iterdir()) == ["downloads", converted.name]
    assert [p.name for p in (cache / "downloads").iterdir()] == [record.url.rsplit("/", 1)[1]]
    _, meta = load_checkpoint(converted)
    assert meta.extra["weights_name"] == NAME and meta.source == NAME
    # Cached: no second request, the same (once initialised) fc8.
    again = build_model("deeplab-largefov-tiny", num_classes=5, weights=NAME)
    assert len(route.requests) == 1
    torch.testing.assert_close(again.fc8.weight, model.fc8.weight)
    # Another network reuses the download.
    converted_checkpoint(NAME, "deeplab-largefov-tiny", 3)
    assert len(route.requests) == 1


def test_a_bad_download_leaves_the_cache_empty(served, tmp_path) -> None:
    route, _ = served
    route.body = route.body[:-100]  # truncated: the hash in the name no longer matches
    with pytest.raises(DownloadError, match="sha256 of the downloaded file"):
        build_model("deeplab-largefov-tiny", num_classes=5, weights=NAME)
    cache = tmp_path / "cache"
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_cli_convert_by_name_shows_progress(served, tmp_path, capsys) -> None:
    out = tmp_path / "init.safetensors"
    argv = [
        "convert",
        NAME,
        "--variant",
        "deeplab-largefov-tiny",
        "--out",
        str(out),
        "--num-classes",
        "4",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"downloading {NAME}" in captured.err
    assert "source format: torchvision-vgg16" in captured.out
    assert load_model(out).num_classes == 4
    _, meta = load_checkpoint(out)
    assert meta.extra["url"] == WEIGHTS[NAME].url


def test_unknown_hash_is_printed_and_kept(served, monkeypatch, tmp_path, capsys) -> None:
    route, record = served
    monkeypatch.setitem(
        WEIGHTS,
        NAME,
        WeightsRecord(NAME, record.variant, record.source, "pth", class_names=(), url=record.url),
    )
    out = tmp_path / "init.safetensors"
    assert main(["convert", NAME, "--variant", "deeplab-largefov-tiny", "--out", str(out)]) == 0
    digest = hashlib.sha256(route.body).hexdigest()
    assert f"its sha256 is {digest}" in capsys.readouterr().out
    sums = list((tmp_path / "cache" / "downloads").glob("*.sha256"))
    assert len(sums) == 1 and sums[0].read_text().startswith(digest)


def test_names_without_a_url_say_where_to_get_the_file(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DEEPLAB_WEIGHTS_DIR", str(tmp_path))
    out = tmp_path / "x.safetensors"
    assert main(["convert", "deeplab-voc12", "--variant", "deeplab", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no known file URL" in err and "liangchiehchen.com" in err
    assert list(tmp_path.iterdir()) == []


def test_training_init_by_name_downloads_the_file(served) -> None:
    path = resolve_init(NAME)
    assert path.parent.name == "downloads" and path.suffix == ".pth" and path.is_file()
