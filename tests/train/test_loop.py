"""The training loop: determinism, stop/resume, accumulation, run-directory contents."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from deeplab.data import SYNTHETIC_CLASSES
from deeplab.models import build_model, load_model, save_model
from deeplab.train import DataSpec, Recipe, initial_model, load_latest, read_log, train


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_model(run / "model.safetensors").state_dict()


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_weights_other_seed_other_weights(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe], tiny_data: DataSpec
) -> None:
    r1 = train(tiny_recipe(iterations=2), tiny_data, tmp_path / "a")
    r2 = train(tiny_recipe(iterations=2), tiny_data, tmp_path / "b")
    r3 = train(tiny_recipe(iterations=2, seed=1), tiny_data, tmp_path / "c")
    _assert_same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert r1.last_loss == r2.last_loss
    assert not torch.equal(
        _weights(tmp_path / "a")["fc8.weight"], _weights(tmp_path / "c")["fc8.weight"]
    )
    assert r3.finished and r3.iteration == 2


def test_stop_and_resume_ends_bitwise_like_an_uninterrupted_run(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe], tiny_data: DataSpec
) -> None:
    recipe = tiny_recipe(iterations=5, checkpoint_every=2, accumulate=2, batch=4)
    full = train(recipe, tiny_data, tmp_path / "full")
    part = train(recipe, tiny_data, tmp_path / "cut", stop_at=3)
    assert not part.finished and part.iteration == 3
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        train(recipe, tiny_data, tmp_path / "cut")
    rest = train(recipe, tiny_data, tmp_path / "cut", resume=True)
    assert rest.finished and rest.last_loss == full.last_loss
    _assert_same(_weights(tmp_path / "full"), _weights(tmp_path / "cut"))
    # Momentum buffers too: the final checkpoints agree tensor for tensor.
    a, b = (
        load_latest(tmp_path / "full" / "checkpoints"),
        load_latest(tmp_path / "cut" / "checkpoints"),
    )
    assert a is not None and b is not None
    _assert_same(a.momentum, b.momentum)
    # The log reads as one run: every iteration once, in order.
    assert [r["iteration"] for r in read_log(tmp_path / "cut" / "log.jsonl")] == [1, 2, 3, 4, 5]


def test_resume_skips_a_corrupt_latest_checkpoint(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe], tiny_data: DataSpec
) -> None:
    recipe = tiny_recipe(iterations=4, checkpoint_every=1)
    train(recipe, tiny_data, tmp_path / "full")
    train(recipe, tiny_data, tmp_path / "cut", stop_at=3)
    latest = tmp_path / "cut" / "checkpoints" / "iter_000003.safetensors"
    latest.write_bytes(latest.read_bytes()[:-10] + b"0123456789")
    train(recipe, tiny_data, tmp_path / "cut", resume=True)  # from iteration 2
    _assert_same(_weights(tmp_path / "full"), _weights(tmp_path / "cut"))


def test_accumulation_matches_one_big_batch(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe], tiny_data: DataSpec
) -> None:
    # The loss is normalised by the valid pixels of the whole global batch, so micro-batches
    # change nothing but the float summation order.
    train(tiny_recipe(iterations=3, batch=4), tiny_data, tmp_path / "one")
    train(tiny_recipe(iterations=3, batch=4, accumulate=4), tiny_data, tmp_path / "four")
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "four")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_run_directory_contents(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe], tiny_data: DataSpec
) -> None:
    events: list[dict] = []
    recipe = tiny_recipe(iterations=4, checkpoint_every=3, keep_checkpoints=2, log_every=2)
    result = train(recipe, tiny_data, tmp_path / "run", callback=events.append)
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == recipe.to_dict() and config["data"] == tiny_data.to_dict()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "iter_000003.json", "iter_000003.safetensors", "iter_000004.json",
        "iter_000004.safetensors",
    ]  # fmt: skip
    records = read_log(run / "log.jsonl")
    assert [r["iteration"] for r in records] == [2, 4]
    assert all(r["loss"] > 0 and r["images_per_s"] > 0 and r["lr"] == 0.01 for r in records)
    assert (run / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("step") == 4
    assert kinds.count("checkpoint") == 2
    model = load_model(result.model_path)
    assert model.class_names == SYNTHETIC_CLASSES and model.num_classes == 6
    _assert_same(model.state_dict(), {k: v.cpu() for k, v in result.model.state_dict().items()})


def test_diverging_runs_stop_with_a_clear_error(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe], tiny_data: DataSpec
) -> None:
    with pytest.raises(ValueError, match="diverged"):
        train(tiny_recipe(iterations=30, lr=1e4), tiny_data, tmp_path / "run")


def test_init_from_weights_with_another_class_count_keeps_a_fresh_classifier(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe]
) -> None:
    torch.manual_seed(3)
    source = build_model("deeplab-largefov-tiny", num_classes=21)
    with torch.no_grad():
        source.fc8.weight.add_(1.0)
    save_model(source, tmp_path / "voc.safetensors")
    torch.manual_seed(0)
    model = initial_model(tiny_recipe(init=str(tmp_path / "voc.safetensors")), 6)
    mine, theirs = model.state_dict(), source.state_dict()
    for key in mine:
        if key.startswith("fc8."):
            assert mine[key].shape[0] == 6 and mine[key].abs().max() < 0.5  # fresh N(0, 0.01)
        else:
            assert torch.equal(mine[key], theirs[key]), key
    with pytest.raises(FileNotFoundError, match="--init none"):
        initial_model(tiny_recipe(init=str(tmp_path / "missing.safetensors")), 6)


def test_class_balance_weights_are_counted_and_recorded(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe], tiny_data: DataSpec
) -> None:
    import json

    import numpy as np

    from deeplab.data import build_dataset
    from deeplab.data.balance import class_counts, class_weights

    plain = train(tiny_recipe(iterations=1), tiny_data, tmp_path / "plain")
    run = train(tiny_recipe(iterations=1, class_balance="median_frequency"), tiny_data,
                tmp_path / "balanced")  # fmt: skip
    record = json.loads((tmp_path / "balanced" / "class_weights.json").read_text())
    dataset = build_dataset(tiny_data)
    expected = class_weights(class_counts(dataset, dataset.num_classes), "median_frequency")
    np.testing.assert_allclose(record["weights"], expected)
    assert record["classes"] == list(dataset.class_names)
    assert not (tmp_path / "plain" / "class_weights.json").exists()
    # The same data and initialisation: only the weighting differs the loss.
    assert run.last_loss != plain.last_loss
    with pytest.raises(ValueError, match="class_balance must be one of"):
        tiny_recipe(class_balance="inverse")
