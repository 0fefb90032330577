"""`deeplab train` killed with SIGKILL at random points, resumed each time: the final weights
equal those of a run that was never interrupted (bitwise, on the CPU), and every
iteration is logged exactly once.

Kills land anywhere: during start-up, in the middle of an iteration, while a checkpoint's
tensors or its record is being written, while old checkpoints are pruned. The fast test
kills once and then damages the newest checkpoint (the resume must report it and fall
back to the previous one); the slow one kills five times.

SIGTERM and SIGUSR1 (pre-emption) instead let the run finish its iteration and write a
checkpoint there: it exits with status 75 and no logged iteration is lost (the newest
checkpoint is at or past the iteration logged when the signal was sent).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from deeplab.models import load_model
from deeplab.train import DataSpec, list_checkpoints, read_log, resolve_recipe, train
from deeplab.train.preemption import PREEMPTED_EXIT_STATUS
from reliability.fuzzing import worker_env

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

DATA = DataSpec(kind="synthetic", synthetic_count=12, synthetic_size=(48, 48))
DATA_OPTIONS = ["--synthetic-count", "12", "--synthetic-size", "48", "48"]
TINY = dict(
    model="deeplab-largefov-tiny",
    batch=2,
    crop=41,
    lr=0.01,
    log_every=1,
    workers=0,
    checkpoint_every=4,
    keep_checkpoints=2,
)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # The subprocesses train with --threads 1; the reference must use one thread as well
    # for the sums to be bitwise equal.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _command(config: Path, run: Path, resume: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "deeplab",
        "train",
        "--config",
        str(config),
        "--out",
        str(run),
        "--threads",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        *DATA_OPTIONS,
        *(["--resume"] if resume else []),
    ]


def _logged(run: Path) -> int:
    records = read_log(run / "log.jsonl") if (run / "log.jsonl").exists() else []
    return records[-1]["iteration"] if records else 0


def _kill_at(
    cmd: list[str],
    run: Path,
    iteration: int,
    rng: random.Random,
    sig_name: str = "SIGKILL",
    group: bool = False,
) -> int | None:
    """Start ``cmd``; once ``iteration`` is logged, wait 0-60 ms more (an iteration takes
    about 40 ms, a checkpoint write a few ms) and send signal ``sig_name``, to every process
    of the run with ``group`` (data-loader workers too, as Slurm does). Returns the iteration
    logged when the signal was sent, or None if the run finished first. SIGKILL must end the
    process at once; a stop signal (SIGTERM, SIGUSR1) with status 75 and a checkpoint at or
    past that iteration."""
    sig = getattr(signal, sig_name)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=worker_env(),
        start_new_session=group,
    )
    deadline = time.monotonic() + 180
    try:
        while _logged(run) < iteration:
            if proc.poll() is not None:
                return None
            if time.monotonic() > deadline:
                pytest.fail(f"no iteration {iteration} within 180 s")
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.06))
        if proc.poll() is not None:
            return None
        logged = _logged(run)
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        stderr = proc.stderr.read().decode()[-2000:]
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL, stderr
            return _logged(run)
        if proc.returncode == 0:  # the signal came during the last iteration
            return None
        assert proc.returncode == PREEMPTED_EXIT_STATUS, stderr
        newest, _ = list_checkpoints(run / "checkpoints")[-1]
        # The iteration under way when the signal came, perhaps the next (the signal came
        # after this one's stop flag was exchanged); no more, no fewer.
        assert logged <= newest <= logged + 2, (logged, newest)
        assert _logged(run) == newest
        return logged
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        proc.stderr.close()


def _finish(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=worker_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def _assert_same_as_uninterrupted(run: Path, iterations: int, tmp_path: Path) -> None:
    recipe = resolve_recipe(overrides={**TINY, "iterations": iterations})
    reference = train(recipe, DATA, tmp_path / "reference")
    got = load_model(run / "model.safetensors").state_dict()
    want = load_model(reference.model_path).state_dict()
    assert got.keys() == want.keys()
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert different == []
    assert [r["iteration"] for r in read_log(run / "log.jsonl")] == list(range(1, iterations + 1))
    # A killed write leaves at most a temporary file, never a partial one under a real name.
    for path in (run / "checkpoints").iterdir():
        assert path.suffix in (".json", ".safetensors", ".tmp"), path


def _setup(tmp_path: Path, iterations: int, **overrides: object) -> tuple[Path, Path]:
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({**TINY, "iterations": iterations, **overrides}))
    return config, tmp_path / "run"


def test_one_kill_then_a_damaged_checkpoint_then_resume(tmp_path: Path) -> None:
    rng = random.Random(os.environ.get("DEEPLAB_KILL_SEED", "1"))
    iterations = 20
    config, run = _setup(tmp_path, iterations)
    at = _kill_at(_command(config, run, False), run, rng.randint(9, 15), rng)
    assert at is not None and at < iterations, "the run ended before the kill"
    assert not (run / "model.safetensors").exists()
    # Damage the newest checkpoint as a disk might: one flipped byte in its tensors. (The
    # newest with a record: a kill between the two writes leaves tensors without one.)
    newest, _ = list_checkpoints(run / "checkpoints")[-1]
    tensors = run / "checkpoints" / f"iter_{newest:06d}.safetensors"
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 0x01
    tensors.write_bytes(bytes(data))
    stderr = _finish(_command(config, run, True))
    assert f"checkpoint {newest} is damaged" in stderr and "sha256" in stderr
    _assert_same_as_uninterrupted(run, iterations, tmp_path)


def test_sigterm_at_a_random_point_checkpoints_there_and_resumes_to_the_same_weights(
    tmp_path: Path,
) -> None:
    rng = random.Random(os.environ.get("DEEPLAB_KILL_SEED", "3"))
    iterations = 12
    # Two data-loader workers, and the signal goes to them as well: they must outlive the
    # checkpoint. (The data do not depend on the number of workers.)
    config, run = _setup(tmp_path, iterations, workers=2)
    cmd = _command(config, run, False)
    at = _kill_at(cmd, run, rng.randint(3, 8), rng, "SIGTERM", group=True)
    assert at is not None, "the run ended before the signal"
    assert not (run / "model.safetensors").exists()
    # With its workers, the resumed run must also end (not wait for them forever).
    _finish(_command(config, run, True))
    _assert_same_as_uninterrupted(run, iterations, tmp_path)


@pytest.mark.slow
def test_stop_signals_and_kills_at_random_points_then_the_uninterrupted_weights(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("DEEPLAB_KILL_SEED", "4"))
    rng = random.Random(seed)
    iterations = 40
    config, run = _setup(tmp_path, iterations)
    targets = sorted(rng.sample(range(1, iterations - 6), 5))
    kinds = [rng.choice(["SIGTERM", "SIGUSR1", "SIGKILL"]) for _ in targets]
    for n, (target, sig) in enumerate(zip(targets, kinds, strict=True)):
        at = _kill_at(_command(config, run, n > 0), run, target, rng, sig)
        assert at is not None, f"run {n} finished before its {sig} at {target} (seed {seed})"
    _finish(_command(config, run, True))
    _assert_same_as_uninterrupted(run, iterations, tmp_path)
    print(f"seed {seed}: {kinds} at {targets}, resumed to identical weights")


@pytest.mark.slow
def test_five_kills_at_random_points_then_the_uninterrupted_weights(tmp_path: Path) -> None:
    seed = int(os.environ.get("DEEPLAB_KILL_SEED", "2"))
    rng = random.Random(seed)
    iterations = 48
    config, run = _setup(tmp_path, iterations)
    kills = []
    targets = sorted(rng.sample(range(1, iterations - 6), 5))
    for n, target in enumerate(targets):
        at = _kill_at(_command(config, run, n > 0), run, target, rng)
        assert at is not None, f"run {n} finished before its kill at {target} (seed {seed})"
        kills.append(at)
    _finish(_command(config, run, True))
    _assert_same_as_uninterrupted(run, iterations, tmp_path)
    print(f"seed {seed}: killed at logged iterations {kills}, resumed to identical weights")
