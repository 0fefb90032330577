"""`deeplab crf3d` on small NIfTI and .npy volumes."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from deeplab.cli import COMMAND_MODULES, main
from deeplab.crf import CRFParams, dense_crf_3d

nib = pytest.importorskip("nibabel")

THETAS = ["--theta-alpha", "5", "--theta-beta", "20", "--theta-gamma", "2", "--iterations", "4"]
PARAMS = CRFParams(theta_alpha=5, theta_beta=20, theta_gamma=2, iterations=4)


def ball_case(tmp_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An int16 (X, Y, Z) CT-like volume of a ball, its noisy (2, X, Y, Z) probabilities,
    and a NIfTI affine with anisotropic voxels (0.8 x 0.8 x 2 mm) and an offset."""
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(np.arange(16), np.arange(18), np.arange(10), indexing="ij")
    ball = (x - 8) ** 2 + (y - 9) ** 2 + ((z - 5) * 2.5) ** 2 < 6**2
    vol = (ball * 100 + rng.normal(size=ball.shape) * 10).astype(np.int16)
    p1 = np.clip(ball * 0.6 + 0.2 + rng.normal(size=ball.shape) * 0.2, 0.01, 0.99)
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    return vol, probs, affine


def test_registered() -> None:
    assert "deeplab.cli.crf3d_cmd" in COMMAND_MODULES


def test_nifti_in_nifti_out_keeps_header(tmp_path, capsys) -> None:
    vol, probs, affine = ball_case(tmp_path)
    img = nib.Nifti1Image(vol, affine)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"test CT"
    nib.save(img, tmp_path / "ct.nii.gz")
    np.save(tmp_path / "p.npy", probs)
    out = tmp_path / "seg" / "labels.nii.gz"
    code = main(
        ["crf3d", str(tmp_path / "ct.nii.gz"), "--probs", str(tmp_path / "p.npy"),
         "--out", str(out), "--save-probs", str(tmp_path / "q.npy"), *THETAS]
    )  # fmt: skip
    assert code == 0
    assert "0.8x0.8x2" in capsys.readouterr().out
    with open(out, "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"  # gzip-compressed, as the name says
    seg = nib.load(out)
    np.testing.assert_allclose(seg.affine, affine)
    assert seg.header.get_xyzt_units() == ("mm", "unknown")
    assert seg.header["descrip"].tobytes().startswith(b"test CT")
    assert seg.header.get_intent()[0] == "label"
    labels = np.asarray(seg.dataobj)
    assert labels.dtype == np.uint8 and labels.shape == vol.shape
    # The header's voxel sizes were the spacing: the library call with them agrees.
    q = dense_crf_3d(vol, probs, PARAMS, spacing=(0.8, 0.8, 2.0))
    np.testing.assert_array_equal(labels, q.argmax(0))
    np.testing.assert_allclose(np.load(tmp_path / "q.npy"), q, atol=1e-6)


def test_npy_in_npy_out_with_spacing_and_nifti_probs(tmp_path) -> None:
    vol, probs, _ = ball_case(tmp_path)
    two = np.stack([vol, -vol], -1).astype(np.float32)
    np.save(tmp_path / "v.npy", two)
    # Probabilities as NIfTI store the labels last.
    nib.save(nib.Nifti1Image(np.moveaxis(probs, 0, 3), np.eye(4)), tmp_path / "p.nii")
    out = tmp_path / "labels.npy"
    code = main(
        ["crf3d", str(tmp_path / "v.npy"), "--probs", str(tmp_path / "p.nii"), "--out",
         str(out), "--spacing", "1", "1", "2.5", "--channel-scale", "1", "0.5", *THETAS]
    )  # fmt: skip
    assert code == 0
    q = dense_crf_3d(two, probs, PARAMS, spacing=(1, 1, 2.5), channel_scale=(1, 0.5))
    np.testing.assert_array_equal(np.load(out), q.argmax(0))


def test_npy_volume_to_nifti_gets_a_spacing_affine(tmp_path) -> None:
    vol, probs, _ = ball_case(tmp_path)
    np.save(tmp_path / "v.npy", vol)
    np.save(tmp_path / "p.npy", probs)
    out = tmp_path / "labels.nii"
    code = main(
        ["crf3d", str(tmp_path / "v.npy"), "--probs", str(tmp_path / "p.npy"), "--out",
         str(out), "--spacing", "2", "1", "0.5", *THETAS]
    )  # fmt: skip
    assert code == 0
    with open(out, "rb") as fh:
        assert fh.read(2) != b"\x1f\x8b"
    np.testing.assert_allclose(nib.load(out).affine, np.diag([2.0, 1.0, 0.5, 1.0]))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no such file"),
        ("text_volume", "not a .npy file"),
        ("bad_nifti", "not a readable NIfTI file"),
        ("mismatch", r"shape \(2, 16, 18, 9\), expected \(L, 16, 18, 10\)"),
        ("out_suffix", "expected .nii, .nii.gz or .npy"),
        ("spacing", r"spacing\[1\] must be a finite number > 0"),
        ("nan", "NaN or infinite intensities"),
        ("flat_volume", r"shape \(16, 18\), expected \(D, H, W\)"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, case, message) -> None:
    vol, probs, affine = ball_case(tmp_path)
    volume, probs_path, out = tmp_path / "v.npy", tmp_path / "p.npy", tmp_path / "o.nii.gz"
    np.save(volume, vol)
    np.save(probs_path, probs)
    extra: list[str] = []
    if case == "missing":
        volume = tmp_path / "absent.nii.gz"
    elif case == "text_volume":
        volume.write_text("not an array")
    elif case == "bad_nifti":
        volume = tmp_path / "broken.nii.gz"
        volume.write_bytes(gzip.compress(b"\x00" * 100))
    elif case == "mismatch":
        np.save(probs_path, probs[..., :9])
    elif case == "out_suffix":
        out = tmp_path / "o.png"
    elif case == "spacing":
        extra = ["--spacing", "1", "0", "1"]
    elif case == "nan":
        bad = vol.astype(np.float32)
        bad[0, 0, 0] = np.nan
        nib.save(nib.Nifti1Image(bad, affine), tmp_path / "nan.nii.gz")
        volume = tmp_path / "nan.nii.gz"
    elif case == "flat_volume":
        np.save(volume, vol[:, :, 0])
    code = main(
        ["crf3d", str(volume), "--probs", str(probs_path), "--out", str(out), *THETAS, *extra]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("deeplab crf3d: error:"), err
    assert re.search(message, err[0]), err[0]
    assert not out.exists()
