"""A real training process killed with SIGKILL, then resumed: same weights as a run that was
never interrupted (bitwise, on the CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from deeplab.cli import main
from deeplab.models import load_model
from deeplab.train import DataSpec, Recipe, read_log, train

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

DATA_OPTIONS = ["--synthetic-count", "12", "--synthetic-size", "48", "48"]


def test_sigkill_at_a_checkpoint_then_resume_gives_the_uninterrupted_weights(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe], tiny_data: DataSpec
) -> None:
    recipe = tiny_recipe(iterations=60, checkpoint_every=4, keep_checkpoints=2)
    assert tiny_data == DataSpec(synthetic_count=12, synthetic_size=(48, 48))
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps(recipe.to_dict()))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "deeplab", "train", "--config", str(config), "--out", str(run),
           "--threads", "1", "--device", "cpu", "--no-progress", *DATA_OPTIONS]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = run / "checkpoints" / "iter_000004.json"
    deadline = time.monotonic() + 120
    try:
        while not first.exists():
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 120 s")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists()  # it really died mid-run

    # Resume through the CLI: recipe and data come from the run's config.json.
    assert main(["train", "--out", str(run), "--resume", "--threads", "1", "--no-progress"]) == 0
    reference = train(recipe, tiny_data, tmp_path / "reference")

    resumed = load_model(run / "model.safetensors").state_dict()
    expected = load_model(reference.model_path).state_dict()
    assert resumed.keys() == expected.keys()
    for key in expected:
        assert torch.equal(resumed[key], expected[key]), key
    iterations = [r["iteration"] for r in read_log(run / "log.jsonl")]
    assert iterations == list(range(1, 61))
