"""Tiny SBD folders for the tests: MATLAB ``cls`` files as SBD writes them, and the layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse

from deeplab.data.image_io import save_image
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
