"""The CRF-only install: without PyTorch (and the networks' other packages) `deeplab crf`,
deeplab.crf and the pydensecrf drop-in work, and every other command answers one line
naming the extra to install. The missing packages are simulated by an import blocker in a
fresh interpreter, so this runs in the full environment too."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

from deeplab.cli import COMMAND_MODULES, COMMAND_NAMES
from deeplab.extras import EXTRA_MODULES, extra_for, missing_extra_message

DATA = Path(__file__).resolve().parents[1] / "data" / "crf_examples"

# Runs before anything else in the child: every networks package import fails as it would
# when not installed.
BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {EXTRA_MODULES["networks"]!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip


def run_cli_blocked(*argv: str) -> subprocess.CompletedProcess[str]:
    code = (f"import sys\nsys.argv = ['deeplab', *{list(argv)!r}]\n"
            "from deeplab.cli import main\nrc = main()\n"
            "leaked = [m for m in ('torch', 'scipy', 'matplotlib') if m in sys.modules]\n"
            "assert not leaked, leaked\nsys.exit(rc)\n")  # fmt: skip
    return run_blocked(code)


def test_the_crf_and_its_drop_in_import_without_the_networks() -> None:
    done = run_blocked(
        "import deeplab, deeplab.crf, deeplab.crf.pydensecrf as dcrf, deeplab.data\n"
        "import deeplab.crf.pydensecrf.utils, deeplab.download, deeplab.extras\n"
        "from deeplab.data import load_image, write_label_png, VOC_CLASSES\n"
        "import numpy as np\n"
        "d = dcrf.DenseCRF2D(8, 6, 2)\n"
        "d.setUnaryEnergy(np.ones((2, 48), np.float32))\n"
        "d.addPairwiseGaussian(sxy=3, compat=3)\n"
        "assert np.asarray(d.inference(2)).shape == (2, 48)\n"
        "import sys\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in BLOCKED]\n"
    )
    assert done.returncode == 0, done.stderr


def test_deeplab_crf_runs_without_the_networks(tmp_path: Path) -> None:
    out = tmp_path / "refined.png"
    done = run_cli_blocked(
        "crf",
        str(DATA / "im1.png"),
        "--labels",
        str(DATA / "anno1.png"),
        "--unknown",
        "black",
        "--iterations",
        "2",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file()


NETWORK_COMMANDS = [
    ["train", "--help"],
    ["convert", "torchvision:vgg16", "--variant", "deeplab", "--out", "x.safetensors"],
    ["segment", "x.png"],
    ["demo"],
    ["evaluate"],
    ["tune-crf"],
    ["serve"],
    ["export-onnx", "--out", "x.onnx"],
]


def test_network_commands_name_the_extra_in_one_line() -> None:
    # One child runs every command (one start-up), each with its own stderr.
    code = (
        "import contextlib, io, json\nfrom deeplab.cli import main\nanswers = []\n"
        f"for argv in {NETWORK_COMMANDS!r}:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        rc = main(argv)\n"
        "    answers.append((rc, err.getvalue()))\n"
        "print(json.dumps(answers))\n"
        "assert not [m for m in ('torch', 'scipy', 'matplotlib') if m in sys.modules]\n"
    )
    done = run_blocked(code)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    for argv, (rc, err) in zip(NETWORK_COMMANDS, answers, strict=True):
        # (Under load a slow start-up adds its "loading" notice first: not an error line.)
        lines = [
            line for line in err.strip().splitlines() if not line.startswith("deeplab: loading")
        ]
        assert rc == 1 and len(lines) == 1, (argv, rc, err)
        assert lines[0].startswith(f"deeplab {argv[0]}: error: needs PyTorch"), lines
        assert lines[0].endswith("pip install 'deeplab[networks]'"), lines


def test_help_lists_every_command_and_what_to_install() -> None:
    done = run_cli_blocked("--help")
    assert done.returncode == 0, done.stderr
    for command in COMMAND_NAMES.values():
        assert command in done.stdout
    assert "(not installed: pip install 'deeplab[networks]')" in done.stdout


def test_command_names_match_the_modules() -> None:
    # The stand-ins use COMMAND_NAMES; the real parsers must register the same names.
    assert set(COMMAND_NAMES) == set(COMMAND_MODULES)
    for module, command in COMMAND_NAMES.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        assert list(sub.choices) == [command]


def test_missing_packages_map_to_their_extra() -> None:
    assert extra_for("torch.nn") == "networks" and extra_for("fastapi") == "app"
    assert extra_for("onnxruntime") == "onnx" and extra_for("numpy") is None
    assert extra_for(None) is None
    message = missing_extra_message(ModuleNotFoundError("x", name="scipy.io"))
    assert message is not None and message.endswith("pip install 'deeplab[networks]'")
    assert "scipy.io is not installed" in message
    assert missing_extra_message(ModuleNotFoundError("x", name="nope")) is None
    assert missing_extra_message(ValueError("torch")) is None
