"""Data sources: DataSpec names one in JSON-able fields, build_dataset opens it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deeplab.data import DataSpec, SyntheticScenes, build_dataset, write_folder_dataset


def test_build_dataset_synthetic_folder_and_limit(tmp_path: Path) -> None:
    ds = build_dataset(DataSpec(synthetic_count=4, synthetic_size=(40, 40), synthetic_seed=2))
    assert len(ds) == 4 and ds.class_names[0] == "background"
    np.testing.assert_array_equal(ds[1].image, SyntheticScenes(4, (40, 40), 2)[1].image)
    root = write_folder_dataset(SyntheticScenes(3, (40, 40), 0), tmp_path / "f")
    spec = DataSpec(kind="folder", images=str(root / "images"), masks=str(root / "masks"),
                    classes=str(root / "classes.txt"), limit=2)  # fmt: skip
    folder = build_dataset(spec)
    assert len(folder) == 2 and folder.names == ["scene_000000", "scene_000001"]
    assert DataSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="--voc-root"):
        DataSpec(kind="voc")
    with pytest.raises(ValueError, match="unknown data field"):
        DataSpec.from_dict({"kind": "synthetic", "root": "x"})


def test_build_dataset_reads_the_real_voc_sample(shared_data: Path) -> None:
    ds = build_dataset(DataSpec(kind="voc", voc_root=str(shared_data / "voc_mini"), split="val"))
    assert ds.names == ["2007_000033"] and len(ds.class_names) == 21
    assert ds[0].image.shape[:2] == ds[0].label.shape
