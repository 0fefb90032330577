"""Install checks run by `make test` (not collected by pytest): each makes a fresh virtual
environment outside the checkout's and uses the package as a user would get it.

    python tests/install_check.py crf-only   # `pip install deeplab` (the CRF alone)
    python tests/install_check.py wheel      # the built wheel + sdist, with [networks,nifti]

crf-only: installs the checkout with its base dependencies (numpy, numba, llvmlite, Pillow)
and the `test-crf` extra only, checks that torch, scipy, matplotlib, safetensors and tqdm
are absent, and runs the CRF tests, the pydensecrf drop-in tests and the `deeplab crf`
tests from there; no test may skip.

wheel: `python -m build` (sdist + wheel), checks that the package data (src/deeplab/assets,
the web page) and the licence are in both, installs the wheel with its `networks` extra into
a fresh environment and, from a temporary folder, runs `deeplab demo` and the README's
Python blocks (tests/test_readme.py's runner) with that environment's Python.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "install-check"
NETWORKS_ONLY = ("torch", "scipy", "matplotlib", "safetensors", "tqdm")
# The CRF tests that need PyTorch (its backend): not part of the CRF-only install.
TORCH_TESTS = (
    "test_torch_backend.py",
    "test_torch_cpu.py",
    "test_torch_lattice.py",
    "test_torch_volume.py",
)


def run(argv: list[str | os.PathLike[str]], **kwargs: object) -> None:
    print("+", " ".join(str(a) for a in argv), flush=True)
    subprocess.run([str(a) for a in argv], check=True, **kwargs)  # type: ignore[call-overload]


def fresh_venv(name: str) -> Path:
    venv = WORK / name
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", venv])
    return venv / "bin" / "python"


def pip_install(python: Path, *requirements: str) -> None:
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-c", ROOT / "constraints.txt", *requirements])  # fmt: skip


def installed_from(python: Path, venv: Path) -> None:
    """deeplab must be imported from the environment, never from the checkout."""
    out = subprocess.run(
        [python, "-c", "import deeplab; print(deeplab.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    where = Path(out.stdout.strip()).resolve()
    if not where.is_relative_to(venv.resolve()):
        raise SystemExit(f"deeplab imported from {where}, not from {venv}")


def crf_only() -> None:
    python = fresh_venv("crf-only")
    venv = python.parents[1]
    pip_install(python, f"{ROOT}[test-crf]")
    installed_from(python, venv)
    absent = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u, sys; "
            f"print([m for m in {NETWORKS_ONLY!r} if u.find_spec(m)])",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if absent != "[]":
        raise SystemExit(f"the CRF-only install pulled in {absent}")
    report = WORK / "crf-only.xml"
    tests = ROOT / "tests"
    ignore = [f"--ignore={tests / 'crf' / name}" for name in TORCH_TESTS]
    # It imports every command module for real: the full install's test. (A node id is
    # relative to the rootdir, the checkout, whatever the working folder.)
    ignore.append("--deselect=tests/cli/test_extras.py::test_command_names_match_the_modules")
    run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
         f"--junitxml={report}", *ignore, tests / "crf", tests / "cli" / "test_crf_cmd.py",
         tests / "cli" / "test_extras.py"], cwd=tempfile.gettempdir())  # fmt: skip
    skipped = [case.get("name") for case in ET.parse(report).iter("testcase")
               if case.find("skipped") is not None]  # fmt: skip
    if skipped:
        raise SystemExit(f"tests skipped in the CRF-only install: {skipped}")
    print("crf-only install: CRF, drop-in and `deeplab crf` tests passed without torch")


def check_archives(dist: Path) -> Path:
    (wheel,) = dist.glob("deeplab-*.whl")
    (sdist,) = dist.glob("deeplab-*.tar.gz")
    shipped = [p.relative_to(ROOT / "src").as_posix()
               for folder in ("assets", "serve/static")
               for p in (ROOT / "src" / "deeplab" / folder).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]  # fmt: skip
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    missing = [f for f in shipped if f not in names]
    if not any(
        n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names
    ):
        missing.append("LICENSE (dist-info)")
    if any(n.startswith("tests/") for n in names):
        raise SystemExit(f"{wheel.name} ships tests/")
    with tarfile.open(sdist) as t:
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name}
    missing += [
        f"sdist: {f}"
        for f in ("LICENSE", "README.md", "pyproject.toml", *(f"src/{s}" for s in shipped))
        if f not in members
    ]
    if missing:
        raise SystemExit(f"missing from the distributions: {missing}")
    print(f"{wheel.name}: {len(shipped)} package data files, LICENSE; {sdist.name} complete")
    return wheel


def wheel() -> None:
    dist = WORK / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    run([sys.executable, "-m", "build", "--outdir", dist, ROOT])
    built = check_archives(dist)
    python = fresh_venv("wheel")
    venv = python.parents[1]
    pip_install(python, f"{built}[networks,nifti]", "pytest")
    installed_from(python, venv)
    with tempfile.TemporaryDirectory(prefix="deeplab-wheel-") as tmp:
        env = {**os.environ, "MPLBACKEND": "Agg", "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
        start = time.perf_counter()
        run([venv / "bin" / "deeplab", "demo", "--out", "demo_out"], cwd=tmp, env=env)
        if not (Path(tmp) / "demo_out" / "report.html").is_file():
            raise SystemExit("deeplab demo wrote no report.html")
        print(f"deeplab demo from the wheel: {time.perf_counter() - start:.0f} s")
        run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
             "-k", "python", ROOT / "tests" / "test_readme.py"], cwd=tmp, env=env)  # fmt: skip
    print("wheel: installs on its own; deeplab demo and the README's Python blocks ran")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=("crf-only", "wheel"))
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    crf_only() if args.check == "crf-only" else wheel()


if __name__ == "__main__":
    main()
