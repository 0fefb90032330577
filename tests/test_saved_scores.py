"""The saved-scores folder: per-image score files and the meta.json record, read and
written in one place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deeplab.saved_scores import (
    LOGITS_META,
    iter_saved_logits,
    load_saved_logits,
    read_meta,
    save_logits,
    saved_num_classes,
    saved_path,
    update_meta,
    write_meta,
)


def test_scores_round_trip(tmp_path: Path) -> None:
    logits = np.linspace(-2, 2, 3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    path = save_logits(tmp_path / "new", "a", logits, (30, 38), (33, 41), dtype="float32")
    assert path == saved_path(tmp_path / "new", "a")
    saved = load_saved_logits(path)
    assert saved.name == "a" and saved.size == (30, 38) and saved.padded == (33, 41)
    np.testing.assert_array_equal(saved.logits, logits)
    assert [s.name for s in iter_saved_logits(tmp_path / "new")] == ["a"]
    with pytest.raises(ValueError, match="cannot be a file name"):
        save_logits(tmp_path, "../b", logits, (30, 38), (33, 41))


def test_meta_is_read_and_updated(tmp_path: Path) -> None:
    assert read_meta(tmp_path) == {} and saved_num_classes(tmp_path) is None
    write_meta(tmp_path / "logits", {"num_classes": 21, "model": "deeplab-largefov"})
    update_meta(tmp_path / "logits", data={"kind": "synthetic"})
    assert read_meta(tmp_path / "logits") == {
        "num_classes": 21,
        "model": "deeplab-largefov",
        "data": {"kind": "synthetic"},
    }
    assert saved_num_classes(tmp_path / "logits") == 21


@pytest.mark.parametrize("text", ["[1, 2]", "{not json"])
def test_meta_that_is_not_an_object_is_an_error(tmp_path: Path, text: str) -> None:
    (tmp_path / LOGITS_META).write_text(text)
    with pytest.raises(ValueError, match="not a JSON object"):
        read_meta(tmp_path)
