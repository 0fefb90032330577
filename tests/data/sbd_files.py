"""Tiny SBD folders for the tests: MATLAB ``cls`` files as SBD writes them, and the layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse

from deeplab.data.image_io import load_label, save_image
from deeplab.data.voc import write_name_list


def write_gtcls(path: Path, segmentation: np.ndarray) -> None:
    """An SBD-style cls .mat: struct GTcls with Segmentation, Boundaries, CategoriesPresent."""
    present = np.unique(segmentation)
    present = present[present > 0].astype(np.uint8)
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        edge = np.zeros(segmentation.shape, dtype=bool)
        if k + 1 in present:
            region = segmentation == k + 1
            edge[:, 1:] |= region[:, 1:] != region[:, :-1]
        boundaries[k, 0] = scipy.sparse.csc_matrix(edge)
    gtcls = {
        "Segmentation": segmentation,
        "Boundaries": boundaries,
        "CategoriesPresent": present,
    }
    scipy.io.savemat(path, {"GTcls": gtcls})


def make_sbd(root: Path, train: dict[str, np.ndarray], val: dict[str, np.ndarray]) -> Path:
    """Fake ``benchmark_RELEASE/dataset`` with images and cls .mat files; returns the top."""
    dataset = root / "benchmark_RELEASE" / "dataset"
    (dataset / "img").mkdir(parents=True)
    (dataset / "cls").mkdir()
    for split, items in (("train", train), ("val", val)):
        write_name_list(dataset / f"{split}.txt", list(items))
        for name, seg in items.items():
            write_gtcls(dataset / "cls" / f"{name}.mat", seg)
            image = np.zeros((*seg.shape, 3), dtype=np.uint8)
            image[..., 1] = seg * 10
            save_image(dataset / "img" / f"{name}.jpg", image)
    return root


def sbd_for_voc_sample(voc_root: Path, out: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A tiny SBD under ``out`` covering both images of the VOC sample at ``voc_root``
    (2007_000032 train, 2007_000033 val) plus two of its own, 2008_000001 and 2008_000002,
    whose photos are copied into the VOC folder's JPEGImages as in the real data.

    Returns the SBD root and the labels to expect: VOC's own for 2007_000032 (255s kept)
    and SBD's for the two new images.
    """
    voc_32 = load_label(voc_root / "SegmentationClass" / "2007_000032.png")
    voc_33 = load_label(voc_root / "SegmentationClass" / "2007_000033.png")
    new_a = np.full((20, 30), 7, dtype=np.uint8)
    new_b = np.zeros((25, 15), dtype=np.uint8)
    new_b[5:10] = 12
    root = make_sbd(
        out,
        {"2008_000001": new_a, "2007_000033": np.where(voc_33 == 255, 0, voc_33)},
        {"2008_000002": new_b, "2007_000032": np.where(voc_32 == 255, 0, voc_32)},
    )
    sbd_img = root / "benchmark_RELEASE" / "dataset" / "img"
    for name in ("2008_000001", "2008_000002"):
        shutil.copy(sbd_img / f"{name}.jpg", voc_root / "JPEGImages" / f"{name}.jpg")
    return root, {"2007_000032": voc_32, "2008_000001": new_a, "2008_000002": new_b}
