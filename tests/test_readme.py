"""Every code block of README.md runs as written.

The rule: a ```python block runs as a script and a ```bash block under ``bash -euo
pipefail``, each in a fresh folder that holds what the checkout ships (``examples/``,
``src/``, ``configs/`` and ``.venv``: the environment running these tests, so
``source .venv/bin/activate`` and ``deeplab`` work), and must exit 0. A block may be
preceded by a marker line:

- ``<!-- readme-test: slow -->``: it runs in the slow suite (more than ~20 s);
- ``<!-- readme-test: skip: REASON -->``: it is not run, for the reason given, and the
  README's own text must say why too (it needs the user's data, runs for minutes, serves
  until stopped, or is the set-up that runs this test).

Blocks in other languages (the layout tree) are not code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHIPPED = ("examples", "src", "configs")
TIMEOUT_S = 900

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
MARKER = re.compile(r"<!-- readme-test: (slow|skip: (.+?)) -->\s*$")


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int
    mark: str  # "", "slow" or "skip"
    reason: str

    @property
    def name(self) -> str:
        return f"README.md:{self.line}:{self.language}"


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        mark, reason = "", ""
        if marker:
            mark = "slow" if marker.group(1) == "slow" else "skip"
            reason = marker.group(2) or ""
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(match.group(1), match.group(2), line, mark, reason))
    return blocks


BLOCKS = [b for b in readme_blocks() if b.language in ("python", "bash")]


def _params() -> list[object]:
    out = []
    for b in BLOCKS:
        marks: list[pytest.MarkDecorator] = []
        if b.mark == "slow":
            marks.append(pytest.mark.slow)
        elif b.mark == "skip":
            marks.append(pytest.mark.skip(reason=f"README says: {b.reason}"))
        out.append(pytest.param(b, id=b.name, marks=marks))
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding what the checkout ships, linked, and the running environment as
    ``.venv``; what the blocks write stays here."""
    folder = tmp_path_factory.mktemp("readme")
    for name in SHIPPED:
        (folder / name).symlink_to(ROOT / name, target_is_directory=True)
    venv = folder / ".venv"
    bin_dir = Path(sys.executable).parent
    if (bin_dir / "activate").is_file():
        venv.symlink_to(bin_dir.parent, target_is_directory=True)
    else:  # not a virtual environment: an activate script that does what one would
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    return folder


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # As after `source .venv/bin/activate`: `deeplab` and `python` are the environment's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


@pytest.mark.parametrize("block", _params())
def test_readme_block_runs_as_written(block: Block, workspace: Path) -> None:
    if block.language == "python":
        script = workspace / f"block_{block.line}.py"
        script.write_text(block.code, encoding="utf-8")
        argv = [sys.executable, script.name]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", block.code]
    done = subprocess.run(argv, cwd=workspace, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)  # fmt: skip
    assert done.returncode == 0, (
        f"{block.name} failed ({done.returncode}):\n{block.code}\n--- stdout\n"
        f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def test_the_rule_is_kept() -> None:
    """Every code block is python or bash, skipped blocks give a reason, and the README
    says near each skipped block what it needs."""
    text = README.read_text(encoding="utf-8").splitlines()
    blocks = readme_blocks()
    assert {b.language for b in blocks} <= {"python", "bash"}
    for b in blocks:
        if b.mark == "skip":
            assert len(b.reason) > 10, b.name
    runnable = [b for b in BLOCKS if b.mark != "skip"]
    assert len(runnable) >= 10  # most of the README runs in the tests
    # The first screen tells how to call the command and what the shipped model knows.
    first = "\n".join(text[:80])
    assert ".venv/bin/deeplab" in first and "source .venv/bin/activate" in first
    assert "What the shipped model knows" in first and "photographs" in first
    assert "Predictor" in first


def test_first_example_snaps_labels_to_the_edge() -> None:
    (block,) = [b for b in BLOCKS if "dense_crf(image, probs, CRFParams" in b.code]
    scope: dict = {}
    exec(compile(block.code, "README.md", "exec"), scope)
    labels = scope["labels"]
    assert labels.shape == (240, 320)
    assert np.all(labels[:, :160] == 0) and np.all(labels[:, 160:] == 1)


def test_predictor_example_uses_the_shipped_model(workspace: Path) -> None:
    (block,) = [b for b in BLOCKS if "Predictor(model" in b.code]
    cwd = os.getcwd()
    os.chdir(workspace)
    try:
        scope: dict = {}
        exec(compile(block.code, "README.md", "exec"), scope)
    finally:
        os.chdir(cwd)
    labels, plain = scope["labels"], scope["network_only"]
    assert labels.shape == plain.shape == (360, 480)  # a CamVid photo
    assert scope["model"].class_names[0] == "sky"
    # A street scene: road and sky both found, by the network and after the CRF.
    for found in (labels, plain):
        assert {0, 3} <= set(np.unique(found).tolist())
