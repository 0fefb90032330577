"""A small fuzzing engine on top of hypothesis, shared by the tests and the fuzz report.

A :class:`Target` is one entry point that takes outside data: a hypothesis strategy of
inputs, a call that feeds one input to the entry point, and an optional check that a
success is a *correct* result. Every input ends in one of three outcomes:

``success``
    the call returned and the check (if any) passed;
``clear``
    the call raised one of the accepted types (ValueError, TypeError, FileNotFoundError,
    MemoryError by default) with a message that reads as a diagnosis: not empty, not huge,
    and not a raw interpreter message leaking from a code path nobody handled;
``crash``
    anything else: another exception type, a failed check, an input that took longer
    than the target's time limit, or (in a worker subprocess) the process dying or hanging.

:func:`fuzz` runs a target in this process and counts; :func:`run_isolated` runs it in a
worker subprocess (``python -m reliability.fuzzing``) so that a segfault or a hang in
native code is counted as a crash instead of taking the caller down. The worker writes
each input's repr to a file before calling the target, so the input that killed it is
known.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent

CLEAR_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    MemoryError,
)

# Messages that Python, NumPy or a library produce on their own when a code path was never
# meant to see such input: an error carrying one of them is an unhandled case, whatever
# its type.
_RAW_MESSAGES = re.compile(
    "|".join(
        (
            r"object is not subscriptable",
            r"not supported between instances of",
            r"object has no attribute",
            r"invalid literal for int\(\)",
            r"could not convert string to float",
            r"Exceeds the limit \(\d+ digits\)",
            r"index out of range",
            r"unhashable type",
            r"object is not iterable",
            r"codec can't decode",
            r"positional argument",
            r"dictionary update sequence",
            r"cannot convert float (NaN|infinity) to integer",
            r"int too large to convert",
            r"maximum recursion depth",
            r"argument must be a string or a number",
            r"^\d+$",  # a bare KeyError-like value
        )
    )
)
MAX_MESSAGE = 20_000  # echoing one long value back is fine; growing with the input is not


class Outcome:
    """Outcome names (plain strings, so that tallies serialise as JSON)."""

    SUCCESS = "success"
    CLEAR = "clear"
    CRASH = "crash"


@dataclass(frozen=True)
class Target:
    """One fuzzed entry point.

    call(value, workdir): feed one input; ``workdir`` is a scratch folder for files.
    check(value, result): raise AssertionError if a success is not a correct result.
    risky: native code (C decoders, compiled kernels) could crash the process; the tests
    run such targets in a subprocess.
    """

    name: str
    entry: str  # what is fuzzed, for the report table
    strategy: st.SearchStrategy[Any]
    call: Callable[[Any, Path], Any]
    check: Callable[[Any, Any], None] | None = None
    clear: tuple[type[BaseException], ...] = CLEAR_ERRORS
    risky: bool = False
    max_seconds: float = 20.0


@dataclass
class Tally:
    """What a fuzz run saw."""

    target: str
    tried: int = 0
    clear: int = 0
    success: int = 0
    crashes: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)  # clear-error types
    samples: list[str] = field(default_factory=list)  # first crash descriptions

    def add(self, outcome: str, detail: str, elapsed: float) -> None:
        self.tried += 1
        self.seconds += elapsed
        self.slowest = max(self.slowest, elapsed)
        if outcome == Outcome.SUCCESS:
            self.success += 1
        elif outcome == Outcome.CLEAR:
            self.clear += 1
            self.errors[detail] += 1
        else:
            self.crashes += 1
            if len(self.samples) < 5:
                self.samples.append(detail)

    def merge(self, other: Tally) -> None:
        for name in ("tried", "clear", "success", "crashes", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.slowest = max(self.slowest, other.slowest)
        self.errors.update(other.errors)
        self.samples.extend(other.samples[: max(0, 5 - len(self.samples))])

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "tried": self.tried,
            "clear": self.clear,
            "success": self.success,
            "crashes": self.crashes,
            "seconds": round(self.seconds, 3),
            "slowest": round(self.slowest, 3),
            "errors": dict(self.errors),
            "samples": self.samples,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tally:
        t = cls(d["target"])
        for name in ("tried", "clear", "success", "crashes", "seconds", "slowest"):
            setattr(t, name, d[name])
        t.errors = Counter(d["errors"])
        t.samples = list(d["samples"])
        return t


def short_repr(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def unclear_message(exc: BaseException) -> str | None:
    """Why the message of an accepted error type does not diagnose anything, or None.

    A message *leading* with an interpreter message (after any ``path:`` prefixes) is an
    unhandled case; one that explains first and quotes the low-level cause after it
    ("unreadable record ('utf-8' codec can't decode ...)") is fine.
    """
    message = str(exc)
    if not message.strip():
        return "empty message"
    if len(message) > MAX_MESSAGE:
        return f"a {len(message)}-character message"
    parts = message.split(": ")
    while len(parts) > 1 and _looks_like_path(parts[0]):
        parts.pop(0)
    match = _RAW_MESSAGES.search(parts[0])
    # Quoted names ('NoneType', 'utf-8') are part of the raw message; anything else
    # before it is an explanation.
    if match and not re.sub(r"'[^']*'|\"[^\"]*\"", "", parts[0][: match.start()]).strip():
        return f"raw interpreter message ({match.group(0)!r})"
    return None


def _looks_like_path(text: str) -> bool:
    # One word with a separator or an extension: "/tmp/x/label.mat", "crf.json".
    return bool(re.fullmatch(r"\S*[/\\]\S*|\S+\.\w{1,12}", text))


def classify(
    target: Target, value: Any, workdir: Path, timed: bool = True
) -> tuple[str, str, float]:
    """Run one input: (outcome, detail, seconds). ``detail`` is the error type for clear
    errors and a description (with the input) for crashes. ``timed=False`` skips the time
    limit (a process's first input pays for imports and JIT compilation)."""
    start = time.perf_counter()
    try:
        result = target.call(value, workdir)
    except target.clear as exc:
        elapsed = time.perf_counter() - start
        why = unclear_message(exc)
        if why is not None:
            detail = f"unclear {type(exc).__name__} ({why}): {str(exc)[:200]!r}"
            return Outcome.CRASH, f"{detail} on {short_repr(value)}", elapsed
        outcome, detail = Outcome.CLEAR, type(exc).__name__
    except Exception as exc:
        elapsed = time.perf_counter() - start
        detail = f"{type(exc).__name__}: {str(exc)[:200]} on {short_repr(value)}"
        return Outcome.CRASH, detail, elapsed
    else:
        elapsed = time.perf_counter() - start
        outcome, detail = Outcome.SUCCESS, ""
        if target.check is not None:
            try:
                target.check(value, result)
            except AssertionError as exc:
                return Outcome.CRASH, f"wrong result ({exc}) on {short_repr(value)}", elapsed
    if timed and elapsed > target.max_seconds:
        return Outcome.CRASH, f"took {elapsed:.1f} s on {short_repr(value)}", elapsed
    return outcome, detail, elapsed


def fuzz(
    target: Target,
    examples: int,
    *,
    seed: int | None = None,
    stop_on_crash: bool = True,
    before_each: Callable[[Any], None] | None = None,
    tally: Tally | None = None,
) -> Tally:
    """Run ``examples`` hypothesis inputs through ``target`` in this process.

    stop_on_crash: raise (after hypothesis has shrunk the input) on the first crash, as a
    test should; False counts crashes and goes on, as the report does.
    before_each(value): called before each input (the worker records it there).
    tally: count into this one (default: a new one).
    """
    tally = Tally(target.name) if tally is None else tally
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if stop_on_crash else [])
    seen: list[bool] = []
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target.name}-") as tmp:
        workdir = Path(tmp)

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=phases,
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
        )
        @given(target.strategy)
        def run(value: Any) -> None:
            if before_each is not None:
                before_each(value)
            outcome, detail, elapsed = classify(target, value, workdir, timed=bool(seen))
            seen.append(True)
            tally.add(outcome, detail, elapsed)
            if outcome == Outcome.CRASH and stop_on_crash:
                raise AssertionError(f"{target.name}: {detail}")

        if seed is not None:
            run = hypothesis_seed(seed)(run)
        run()
    return tally


# -- isolation: a worker subprocess per run -------------------------------------------------


def worker_env() -> dict[str, str]:
    """Environment of a worker: the tests folder importable, one numba/torch thread (the
    machine is shared, and results must not depend on threads)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TESTS_DIR), str(REPO / "src"), env.get("PYTHONPATH")) if p
    )
    env.setdefault("NUMBA_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_isolated(
    name: str,
    examples: int,
    *,
    seed: int = 0,
    input_timeout: float = 60.0,
    max_restarts: int = 20,
) -> Tally:
    """Fuzz target ``name`` in worker subprocesses; a worker that dies or hangs on an input
    counts as one crash (with that input), and a fresh worker goes on with the rest."""
    total = Tally(name)
    remaining, restarts = examples, 0
    with tempfile.TemporaryDirectory(prefix="fuzz-worker-") as tmp:
        current = Path(tmp) / "current.txt"
        result = Path(tmp) / "tally.json"
        log = Path(tmp) / "stderr.txt"
        while remaining > 0 and restarts <= max_restarts:
            current.unlink(missing_ok=True)
            result.unlink(missing_ok=True)
            cmd = [
                sys.executable,
                "-m",
                "reliability.fuzzing",
                name,
                str(remaining),
                str(seed + 7919 * restarts),
                str(current),
                str(result),
            ]
            # stderr to a file, not a pipe: a chatty worker must not block on a full pipe.
            with log.open("wb") as err:
                proc = subprocess.Popen(
                    cmd, env=worker_env(), stdout=subprocess.DEVNULL, stderr=err
                )
                death = _watch(proc, current, input_timeout)
            if death is None and result.is_file():
                total.merge(Tally.from_dict(json.loads(result.read_text())))
                break
            stderr = log.read_text(errors="replace")[-1000:]
            if not current.exists():
                raise RuntimeError(f"fuzz worker for {name} failed before any input: {stderr}")
            # The worker died (or was killed for hanging) on the input it last recorded;
            # the counts before that input are in the progress file.
            part = _progress_tally(current, name)
            why = death or f"worker exited {proc.returncode} without a result: {stderr}"
            part.add(Outcome.CRASH, f"{why} on {_last_input(current)}", 0.0)
            total.merge(part)
            remaining -= part.tried
            restarts += 1
    return total


def _watch(
    proc: subprocess.Popen[bytes], current: Path, input_timeout: float, startup: float = 120.0
) -> str | None:
    """Wait for the worker; None if it finished, else why it was lost. Until its first
    input, a worker gets ``startup`` seconds (imports are slow on a busy machine)."""
    last_change, last_seen = time.monotonic(), None
    while True:
        try:
            proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        else:
            if proc.returncode < 0:
                return f"worker killed by {signal.Signals(-proc.returncode).name}"
            return None if proc.returncode == 0 else f"worker exited {proc.returncode}"
        with contextlib.suppress(OSError):
            stamp = current.stat().st_mtime_ns
            if stamp != last_seen:
                last_seen, last_change = stamp, time.monotonic()
        limit = input_timeout if last_seen is not None else max(startup, input_timeout)
        if time.monotonic() - last_change > limit:
            proc.kill()
            proc.wait()
            return f"no progress for {limit:.0f} s (hang)"


def _progress_lines(current: Path) -> list[str]:
    try:
        return current.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _progress_tally(current: Path, name: str) -> Tally:
    lines = _progress_lines(current)
    if lines and lines[0].startswith("{"):
        return Tally.from_dict(json.loads(lines[0]))
    return Tally(name)


def _last_input(current: Path) -> str:
    lines = _progress_lines(current)
    return lines[1] if len(lines) > 1 else "(unknown input)"


def _worker(argv: list[str]) -> int:
    from reliability.targets import SELF_TESTS, TARGETS  # here: they import the package

    targets = {**TARGETS, **SELF_TESTS}

    p = argparse.ArgumentParser(description="fuzz worker (used by run_isolated)")
    p.add_argument("target", choices=sorted(targets))
    p.add_argument("examples", type=int)
    p.add_argument("seed", type=int)
    p.add_argument("current", type=Path)
    p.add_argument("result", type=Path)
    args = p.parse_args(argv)
    tally = Tally(args.target)

    def record(value: Any) -> None:
        # Before each call: the counts so far and the input, so that if the process dies
        # the parent knows both. Not atomic on purpose: cheap, and only the parent reads
        # it, after this process is gone.
        args.current.write_text(json.dumps(tally.to_dict()) + "\n" + short_repr(value, 2000))

    fuzz(
        targets[args.target],
        args.examples,
        seed=args.seed,
        stop_on_crash=False,
        before_each=record,
        tally=tally,
    )
    args.result.write_text(json.dumps(tally.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
