"""Two processes under torchrun (gloo, CPU) train the same weights as one process with the
same global batch; a stop signal to one of them stops both after the same iteration."""

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
import torch.distributed as dist

from deeplab.models import load_model
from deeplab.train import DataSpec, Recipe, initial_model, list_checkpoints, read_log, train

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed/gloo"
)


def torchrun(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node 2 -m deeplab ARGS`` (free port, local)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "deeplab", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_gloo_processes_match_one_process(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe], tiny_data: DataSpec
) -> None:
    recipe = tiny_recipe(iterations=3, batch=4, checkpoint_every=2)
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps(recipe.to_dict()))
    run = tmp_path / "ddp"
    done = torchrun(["train", "--config", str(config), "--out", str(run), "--device", "cpu",
                     "--threads", "1", "--no-progress", "--synthetic-count", "12",
                     "--synthetic-size", "48", "48"])  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    ckpt = json.loads((run / "checkpoints" / "iter_000003.json").read_text())
    assert ckpt["meta"]["world_size"] == 2

    # One process, the same global batch of 4 in two micro-batches of 2: each process's
    # share. (Scaling by the power-of-two world size is exact, so the two runs even add
    # the same gradients in the same order; a batch of 4 in one pass would differ by float
    # rounding, which a few SGD steps can amplify through max-pooling ties.)
    single = train(recipe.replace(accumulate=2), tiny_data, tmp_path / "single")
    two = load_model(run / "model.safetensors").state_dict()
    one = load_model(single.model_path).state_dict()
    assert two.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-7)
    # And they did train: the weights left the shared initialisation.
    torch.manual_seed(recipe.seed)
    start = initial_model(recipe, 6).state_dict()
    assert not torch.allclose(start["fc8.weight"], two["fc8.weight"], atol=1e-6)


def _worker_of_rank(launcher: int, rank: int) -> int | None:
    """The pid of torchrun's worker with ``RANK=rank`` (Linux /proc), or None yet."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children")
    for pid in children.read_text().split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds workers through /proc")
def test_a_stop_signal_to_one_rank_stops_every_rank_at_the_same_iteration(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe], tiny_data: DataSpec
) -> None:
    recipe = tiny_recipe(iterations=16, batch=4, checkpoint_every=100)
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps(recipe.to_dict()))
    run = tmp_path / "ddp"
    args = ["train", "--config", str(config), "--out", str(run), "--device", "cpu",
            "--threads", "1", "--no-progress", "--synthetic-count", "12",
            "--synthetic-size", "48", "48"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "deeplab", *args]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 180
    try:
        while not read_log(run / "log.jsonl") or read_log(run / "log.jsonl")[-1]["iteration"] < 3:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no iteration 3 within 180 s"
            time.sleep(0.01)
        logged = read_log(run / "log.jsonl")[-1]["iteration"]
        worker = _worker_of_rank(proc.pid, 1)
        assert worker is not None
        # Only rank 1 hears it (rank 0 writes the files): both must stop after one iteration.
        os.kill(worker, signal.SIGUSR1)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and b"75" in stderr, stderr.decode()[-3000:]
    checkpoints = [it for it, _ in list_checkpoints(run / "checkpoints")]
    assert len(checkpoints) == 1 and logged <= checkpoints[0] <= logged + 2 < 16, checkpoints
    assert read_log(run / "log.jsonl")[-1]["iteration"] == checkpoints[0]
    assert not (run / "model.safetensors").exists()

    done = torchrun([*args, "--resume"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["iteration"] for r in read_log(run / "log.jsonl")] == list(range(1, 17))
    single = train(recipe.replace(accumulate=2), tiny_data, tmp_path / "single")
    two = load_model(run / "model.safetensors").state_dict()
    one = load_model(single.model_path).state_dict()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-7)
