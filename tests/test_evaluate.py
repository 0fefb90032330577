"""Evaluation (paper section 5): confusion matrices with and without the CRF, saved scores,
CRF worker processes, sharding over processes, report files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deeplab.crf import CRFParams
from deeplab.data import SyntheticScenes
from deeplab.distributed import DistContext, shard
from deeplab.evaluate import ScoreStore, evaluate, evaluate_saved, score_image
from deeplab.metrics import ConfusionMatrix
from deeplab.models import build_model, save_model
from deeplab.predict import Predictor
from deeplab.saved_scores import iter_saved_logits, save_logits

CRF = CRFParams(w1=4, theta_alpha=12, theta_beta=8, iterations=5)


# One thread for torch and numba (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


class ColourStub(nn.Module):
    """A fixed stride-8 classifier of the colour at each cell centre (6 classes)."""

    num_classes = 6

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(6, 3, generator=g) * 0.05, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kc,bchw->bkhw", self.weight, x[:, :, ::8, ::8])


@pytest.fixture(scope="module")
def scenes() -> SyntheticScenes:
    return SyntheticScenes(5, size=(48, 56), seed=5)


def _by_hand(model: nn.Module, scenes: SyntheticScenes, crf: CRFParams | None) -> np.ndarray:
    predictor = Predictor(model, crf=crf)
    cm = ConfusionMatrix(6)
    for s in scenes:
        cm.update(predictor.predict(s.image), s.label)
    return cm.matrix


def test_one_pass_gives_both_confusions_exactly(scenes: SyntheticScenes) -> None:
    model = ColourStub()
    result = evaluate(model, scenes, crf=CRF)
    assert result.num_images == 5
    np.testing.assert_array_equal(result.plain.matrix, _by_hand(model, scenes, None))
    np.testing.assert_array_equal(result.crf.matrix, _by_hand(model, scenes, CRF))
    # Void (255) pixels are not scored.
    valid = sum(int((s.label != 255).sum()) for s in scenes)
    assert result.plain.num_pixels == valid == result.crf.num_pixels
    assert result.mean_iou_crf != result.mean_iou  # the CRF did something
    plain_only = evaluate(model, scenes)
    assert plain_only.crf is None and plain_only.mean_iou_crf is None


def test_saved_logits_rescore_without_the_network(tmp_path: Path, scenes: SyntheticScenes) -> None:
    model = ColourStub()
    live = evaluate(model, scenes, crf=CRF, save_logits_dir=tmp_path / "l32",
                    logits_dtype="float32")  # fmt: skip
    saved = list(iter_saved_logits(tmp_path / "l32"))
    assert [s.name for s in saved] == scenes.names
    assert saved[0].size == (48, 56) and saved[0].padded == (49, 57)
    assert saved[0].logits.shape == (6, 7, 8)
    again = evaluate_saved(tmp_path / "l32", scenes, CRF)
    np.testing.assert_array_equal(again.plain.matrix, live.plain.matrix)
    np.testing.assert_array_equal(again.crf.matrix, live.crf.matrix)
    other = evaluate_saved(tmp_path / "l32", scenes, CRF.replace(w1=0.0, w2=0.0))
    np.testing.assert_array_equal(other.crf.matrix, live.plain.matrix)  # no pairwise: argmax
    # float16 (the default) keeps the scores to ~3 digits.
    evaluate(model, scenes, save_logits_dir=tmp_path / "l16")
    with np.load(tmp_path / "l16" / f"{scenes.names[0]}.npz") as f:
        assert f["logits"].dtype == np.float16
    half = next(iter_saved_logits(tmp_path / "l16", [scenes.names[0]]))
    np.testing.assert_allclose(half.logits, saved[0].logits, rtol=2e-3, atol=1e-3)


def test_saved_logits_errors(tmp_path: Path, scenes: SyntheticScenes) -> None:
    with pytest.raises(FileNotFoundError):
        list(iter_saved_logits(tmp_path / "nope"))
    save_logits(tmp_path, scenes.names[0], np.zeros((6, 7, 8)), (40, 56), (41, 57))
    with pytest.raises(FileNotFoundError, match="scene_000001"):
        list(iter_saved_logits(tmp_path, scenes.names[:2]))
    with pytest.raises(ValueError, match="saved scores are for"):
        evaluate_saved(tmp_path, scenes, None, limit=1)
    with pytest.raises(ValueError, match="file name"):
        save_logits(tmp_path, "../x", np.zeros((1, 2, 2)), (9, 9), (9, 9))


def test_crf_workers_agree_with_inline_scoring(scenes: SyntheticScenes) -> None:
    model = ColourStub()
    inline = evaluate(model, scenes, crf=CRF, trimap=True)
    pooled = evaluate(model, scenes, crf=CRF, trimap=True, workers=2)
    np.testing.assert_array_equal(pooled.plain.matrix, inline.plain.matrix)
    np.testing.assert_array_equal(pooled.crf.matrix, inline.crf.matrix)
    np.testing.assert_array_equal(pooled.trimap_crf.matrices, inline.trimap_crf.matrices)


def test_a_score_store_keeps_each_image_and_a_resumed_run_reuses_them(
    tmp_path: Path, scenes: SyntheticScenes
) -> None:
    model = ColourStub()
    whole = evaluate(model, scenes, crf=CRF)

    class StopError(Exception):
        pass

    def stop_after_three(done: int) -> None:
        if done == 3:
            raise StopError

    folder = tmp_path / "partial"
    store = ScoreStore(folder, {"crf": CRF.to_dict()}, resume=False)
    with pytest.raises(StopError):  # with workers: results come back after submission
        evaluate(model, scenes, crf=CRF, workers=2, store=store, progress=stop_after_three)
    kept = sorted(p.stem for p in folder.glob("*.npz"))
    assert kept == scenes.names[:3]
    for name in kept:  # each file holds its own image's counts
        sample = scenes[scenes.names.index(name)]
        logits = Predictor(model).stride8_logits(sample.image)
        want = score_image(sample.image, sample.label, logits, 6, CRF)
        got = store.load(name)
        assert got is not None and got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])

    with pytest.raises(FileExistsError, match="--resume"):
        ScoreStore(folder, {"crf": CRF.to_dict()}, resume=False)
    with pytest.raises(ValueError, match="differs in crf"):
        ScoreStore(folder, {"crf": None}, resume=True)
    calls = []
    resumed = evaluate(model, scenes, crf=CRF, store=ScoreStore(folder, {"crf": CRF.to_dict()},
                       resume=True), progress=calls.append)  # fmt: skip
    assert calls == [1, 2, 3, 4, 5] and resumed.num_images == 5
    np.testing.assert_array_equal(resumed.plain.matrix, whole.plain.matrix)
    np.testing.assert_array_equal(resumed.crf.matrix, whole.crf.matrix)


class _SummingContext(DistContext):
    """Stands in for a process group: all_reduce adds what every "process" contributed."""

    def __init__(self, rank: int, world_size: int, board: list[torch.Tensor]) -> None:
        super().__init__(rank=rank, world_size=world_size)
        self.board = board

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        self.board.append(tensor.clone())
        return tensor.clone()


def test_shards_partition_the_split_and_their_sum_is_the_whole(scenes: SyntheticScenes) -> None:
    assert [list(shard(5, r, 2)) for r in range(2)] == [[0, 2, 4], [1, 3]]
    assert sorted(i for r in range(3) for i in shard(7, r, 3)) == list(range(7))
    model = ColourStub()
    whole = evaluate(model, scenes, crf=CRF)
    parts = [evaluate(model, scenes, crf=CRF, ctx=_SummingContext(r, 2, [])) for r in range(2)]
    assert [p.num_images for p in parts] == [3, 2]
    np.testing.assert_array_equal(sum(p.plain.matrix for p in parts), whole.plain.matrix)
    np.testing.assert_array_equal(sum(p.crf.matrix for p in parts), whole.crf.matrix)


def test_score_image_counts_upsampled_argmax_against_the_label(scenes: SyntheticScenes) -> None:
    image = scenes[0].image[:41, :49]
    label = np.full((41, 49), 3, dtype=np.uint8)
    label[:, 40:] = 1
    label[:, 38:40] = 255  # void: not scored
    # Cells (stride 8, pixels 0, 8, ..., 48) say 3 up to column 32 and 1 from column 40.
    logits = np.zeros((6, 6, 7), dtype=np.float32)
    logits[3, :, :5] = 5.0
    logits[1, :, 5:] = 5.0
    out = score_image(image, label, logits, 6, trimap_widths=(1, 2))
    cm = out["plain"]
    # Bilinear scores: class 3 wins up to column 35; from 36 (a tie, which argmax gives to
    # the lower index) class 1. So labelled-3 columns 36 and 37 are wrong.
    assert cm[3, 3] == 41 * 36 and cm[3, 1] == 41 * 2
    assert cm[1, 1] == 41 * 9 and cm.sum() == 41 * 47
    assert out["trimap_plain"].shape == (2, 6, 6)
    assert out["trimap_plain"][0].sum() == 41 * 2  # one pixel either side of the void band


def test_results_files(tmp_path: Path, scenes: SyntheticScenes) -> None:
    result = evaluate(ColourStub(), scenes, crf=CRF, trimap=True)
    paths = result.write(tmp_path / "out", "Stub", model="stub")
    data = json.loads(paths["json"].read_text())
    assert data["model"] == "stub" and data["num_images"] == 5
    assert data["with_crf"]["mean_iou"] == pytest.approx(result.crf.mean_iou())
    assert data["crf_params"] == CRF.to_dict()
    assert len(data["trimap"]["with_crf"]["mean_iou"]) == 40
    table = paths["markdown"].read_text()
    assert "| Stub |" in table and "| Stub-CRF |" in table and "| disc |" in table
    for key in ("confusion", "confusion_crf", "trimap"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"


def test_two_processes_under_torchrun_sum_their_confusions(
    tmp_path: Path, scenes: SyntheticScenes
) -> None:
    torch.manual_seed(0)
    model = build_model("deeplab-largefov-tiny", num_classes=6)
    save_model(model, tmp_path / "m.safetensors")
    args = ["evaluate", "--weights", str(tmp_path / "m.safetensors"), "--device", "cpu",
            "--synthetic-count", "5", "--synthetic-size", "48", "56", "--synthetic-seed", "5",
            "--crf", "none", "--threads", "1", "--no-progress"]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "deeplab", *args, "--out", str(tmp_path / "two")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["world_size"] == 2 and two["num_images"] == 5
    one = evaluate(model, scenes)
    assert two["without_crf"]["confusion_matrix"] == one.plain.matrix.tolist()
