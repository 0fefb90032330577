"""SBD ``.mat`` labels: damaged type codes (a scipy segfault), bombs, wrong structures."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from deeplab.data.sbd import check_mat_file, load_sbd_label
from reliability.fuzzing import worker_env

# Type codes scipy's MAT-5 reader has no dtype for: a NULL slot of its table (0, 8, 10,
# 11, 14, 15, 19 where a numeric element is expected) or past its end (>= 20).
BAD_CODES = (0, 8, 10, 11, 19, 20, 130, 0xFFFF)


def _mat(contents: dict, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, contents, **kwargs)
    return buf.getvalue()


def _load_all_in_a_subprocess(paths: list[Path]) -> dict[str, int]:
    """Load every file in one fresh process (state corrupted by one bad file crashed the
    next load); returns outcome counts. The process must exit normally."""
    code = (
        "import json, sys\n"
        "from deeplab.data.sbd import load_sbd_label\n"
        "counts = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        load_sbd_label(p); k = 'ok'\n"
        "    except ValueError:\n"
        "        k = 'ValueError'\n"
        "    counts[k] = counts.get(k, 0) + 1\n"
        "print(json.dumps(counts))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        env=worker_env(),
    )
    assert done.returncode == 0, f"loader died ({done.returncode}): {done.stderr[-2000:]}"
    return json.loads(done.stdout)


def test_unknown_type_codes_never_crash_the_process(tmp_path: Path) -> None:
    """Regression: Segmentation's data tag 2 -> 130 (one bit) made scipy raise
    ZeroDivisionError once and segfault or die with SIGBUS on the next load."""
    seg = np.random.default_rng(0).integers(0, 21, (6, 5)).astype(np.uint8)
    files = {
        "plain": _mat({"GTcls": {"Segmentation": seg, "CategoriesPresent": np.unique(seg)}}),
        "compressed": _mat({"GTcls": {"Segmentation": seg}}, do_compression=True),
    }
    paths = []
    for kind, data in files.items():
        for offset in range(128, len(data) - 3, 4):
            for code in BAD_CODES:
                damaged = bytearray(data)
                damaged[offset : offset + 4] = code.to_bytes(4, "little")
                path = tmp_path / f"{kind}-{offset}-{code}.mat"
                path.write_bytes(bytes(damaged))
                paths.append(path)
    # The exact regression first, twice: the second load was the one that died.
    regression = bytearray(files["plain"])
    pos = regression.index(bytes([2, 0, 0, 0, 30, 0, 0, 0]))  # Segmentation's uint8 data tag
    regression[pos] = 0x82
    (tmp_path / "regression.mat").write_bytes(bytes(regression))
    paths = [tmp_path / "regression.mat"] * 2 + paths
    counts = _load_all_in_a_subprocess(paths)
    assert sum(counts.values()) == len(paths)
    assert counts["ValueError"] >= 2
    with pytest.raises(ValueError, match="unknown MATLAB data type code 130"):
        load_sbd_label(tmp_path / "regression.mat")


def test_a_compressed_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    """Regression: kilobytes of compressed zeros declaring a label over Pillow's pixel limit
    inflated in full before anything was checked (389 kB for 20000 x 20000: 818 MB peak).
    Here 9500 x 9500 (just over the limit) in 88 kB."""
    path = tmp_path / "bomb.mat"
    seg = np.zeros((9500, 9500), np.uint8)
    path.write_bytes(_mat({"GTcls": {"Segmentation": seg}}, do_compression=True))
    del seg
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"bomb\.mat.*90250000 elements.*MAX_IMAGE_PIXELS"):
            load_sbd_label(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_inflation_is_capped_even_when_the_dimensions_look_small(tmp_path: Path) -> None:
    # Dimensions patched to 10 x 10 over 16 MB of compressed zeros: the walk inflates a
    # megabyte at a time and stops at its budget (8 bytes per pixel of Pillow's limit, here
    # lowered to 1M pixels: 9 MB).
    from PIL import Image

    data = _mat({"GTcls": {"Segmentation": np.zeros((4000, 4000), np.uint8)}}, do_compression=True)
    size = int.from_bytes(data[132:136], "little")
    inner = zlib.decompress(data[136 : 136 + size])
    inner = inner.replace(struct.pack("<ii", 4000, 4000), struct.pack("<ii", 10, 10))
    packed = zlib.compress(inner)
    path = tmp_path / "long.mat"
    path.write_bytes(data[:128] + struct.pack("<II", 15, len(packed)) + packed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
        tracemalloc.start()
        try:
            with pytest.raises(ValueError, match=r"long\.mat.*inflate to more than"):
                load_sbd_label(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 4 * 2**20  # never the 16 MB, nor the 9 MB budget


@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (1, 1)])
def test_thin_labels_keep_their_shape(tmp_path: Path, shape: tuple[int, int]) -> None:
    """Regression: squeeze_me made a 1 x W label a vector and a 1 x 1 label a scalar,
    both refused as not (H, W)."""
    seg = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    path = tmp_path / "thin.mat"
    path.write_bytes(_mat({"GTcls": {"Segmentation": seg}}))
    out = load_sbd_label(path)
    assert out.shape == shape
    np.testing.assert_array_equal(out, seg)


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        ({"other": np.zeros(3)}, "no GTcls"),
        ({"GTcls": np.zeros((2, 2))}, "no Segmentation"),
        ({"GTcls": {"Boundaries": np.zeros(2)}}, "no Segmentation"),
        ({"GTcls": {"Segmentation": "text"}}, "Segmentation has"),
        ({"GTcls": {"Segmentation": np.zeros((2, 2, 2))}}, r"shape \(2, 2, 2\)"),
        ({"GTcls": {"Segmentation": np.zeros((0, 3))}}, r"shape \(0, 3\)"),
        ({"GTcls": {"Segmentation": np.ones((2, 2), complex)}}, "dtype complex"),
        ({"GTcls": {"Segmentation": np.full((2, 2), 0.5)}}, "non-integer"),
        ({"GTcls": {"Segmentation": np.full((2, 2), np.nan)}}, "non-integer"),
        ({"GTcls": {"Segmentation": np.full((2, 2), -1)}}, r"-1\.\.-1"),
        ({"GTcls": {"Segmentation": np.full((2, 2), 256)}}, r"0\.\.255"),
        ({"GTcls": {"Segmentation": {"inner": np.zeros(2)}}}, "dtype object"),
        (
            {"GTcls": np.array([{"Segmentation": np.zeros((2, 2))}] * 2, dtype=object)},
            "no Segmentation",
        ),
    ],
)
def test_wrong_structures_dtypes_and_shapes(tmp_path: Path, contents: dict, message: str) -> None:
    path = tmp_path / "wrong.mat"
    path.write_bytes(_mat(contents))
    with pytest.raises(ValueError, match=message) as info:
        load_sbd_label(path)
    assert "wrong.mat" in str(info.value)


@pytest.mark.parametrize(
    "data",
    [b"", b"MATLAB 5.0", b"\0" * 200, b"\xff" * 200, _mat({"GTcls": np.eye(2)}, format="4")],
)
def test_not_matlab_5(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "junk.mat"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"junk\.mat"):
        load_sbd_label(path)


def _scipy_test_files() -> list[Path]:
    folder = Path(scipy.io.__file__).parent / "matlab" / "tests" / "data"
    return sorted(folder.glob("*.mat")) if folder.is_dir() else []


@pytest.mark.skipif(not _scipy_test_files(), reason="scipy's MATLAB test files not installed")
def test_matlab_written_files_pass_the_element_walk() -> None:
    """scipy ships files written by MATLAB 5 to 7.4 (structs, cells, objects, function
    handles, sparse, unicode): every MATLAB 5 one scipy can read must pass the walk, so
    real SBD labels are never refused by it."""
    import warnings

    checked = 0
    for path in _scipy_test_files():
        data = path.read_bytes()
        if 0 in data[:4]:
            continue  # MATLAB 4: refused on purpose (no structs, so never an SBD label)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scipy.io.loadmat(io.BytesIO(data))
        except Exception:  # files scipy itself cannot read are not ours to judge
            continue
        check_mat_file(data)
        checked += 1
    assert checked >= 50
