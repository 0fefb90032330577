"""Every entry point that takes outside data, fuzzed: clear errors or correct results only.

``DEEPLAB_FUZZ_EXAMPLES`` inputs per target (default 50 here; ``benchmarks/fuzz_report.py``
runs 2000). Targets that reach native code (Pillow's decoders, scipy's MAT reader, the
compiled CRF kernels) run in a worker subprocess, so a segfault or a hang is a counted
crash with its input rather than the end of the test session.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from reliability.conftest import TALLIES
from reliability.fuzzing import (
    Outcome,
    Target,
    classify,
    fuzz,
    run_isolated,
    unclear_message,
)
from reliability.targets import TARGETS

EXAMPLES = int(os.environ.get("DEEPLAB_FUZZ_EXAMPLES", "50"))
SEED = int(os.environ.get("DEEPLAB_FUZZ_SEED", random.randrange(2**32)))


@pytest.mark.parametrize("name", list(TARGETS))
def test_fuzz_target_ends_in_clear_errors_or_correct_results(name: str) -> None:
    target = TARGETS[name]
    if target.risky:
        tally = run_isolated(name, EXAMPLES, seed=SEED)
    else:
        # In this process: on a crash hypothesis shrinks the input and the test fails.
        tally = fuzz(target, EXAMPLES, seed=SEED)
    TALLIES.append(tally)
    assert tally.crashes == 0, (
        f"{name}: {tally.crashes} crashes in {tally.tried} inputs (seed {SEED}, reproduce "
        f"with DEEPLAB_FUZZ_SEED={SEED}):\n" + "\n".join(tally.samples)
    )
    # Ran what it was asked to (hypothesis stops early only on an exhausted input space).
    assert tally.tried >= EXAMPLES
    assert tally.clear + tally.success == tally.tried


# -- the engine itself: a fuzz test that cannot see a crash would prove nothing ------------


def _target(call: object, check: object = None) -> Target:
    from hypothesis import strategies as st

    return Target("t", "test", st.just(0), call, check)  # type: ignore[arg-type]


def _raise(exc: BaseException) -> object:
    def call(_: object, __: Path) -> None:
        raise exc

    return call


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (ValueError("image x.png is truncated"), Outcome.CLEAR),
        (FileNotFoundError("label file not found: y.png"), Outcome.CLEAR),
        (MemoryError("needs 9.1 GiB, 1.0 GiB available"), Outcome.CLEAR),
        (KeyError("format_version"), Outcome.CRASH),
        (AttributeError("'list' object has no attribute 'get'"), Outcome.CRASH),
        (RecursionError("maximum recursion depth exceeded"), Outcome.CRASH),
        (ValueError(""), Outcome.CRASH),
        (TypeError("'NoneType' object is not iterable"), Outcome.CRASH),
        (ValueError("/tmp/c.json: could not convert string to float: 'x'"), Outcome.CRASH),
        (ValueError("unreadable record ('utf-8' codec can't decode byte 0x80)"), Outcome.CLEAR),
    ],
)
def test_outcomes_are_classified(tmp_path: Path, exc: BaseException, outcome: str) -> None:
    got, detail, _ = classify(_target(_raise(exc)), 0, tmp_path)
    assert got == outcome, detail


def test_a_wrong_result_is_a_crash(tmp_path: Path) -> None:
    def check(_: object, result: object) -> None:
        assert result == 1, "expected 1"

    got, detail, _ = classify(_target(lambda v, _: v, check), 0, tmp_path)
    assert got == Outcome.CRASH and "expected 1" in detail


def test_messages_leading_with_interpreter_text_are_unclear() -> None:
    assert unclear_message(TypeError("'<=' not supported between instances of 'int' and 'str'"))
    assert unclear_message(ValueError("Exceeds the limit (4300 digits) for integer string"))
    assert unclear_message(ValueError("x" * 30_000))
    assert unclear_message(ValueError("momentum must be in [0, 1), got 'x'")) is None


def test_in_process_fuzz_shrinks_and_fails_on_a_crash() -> None:
    from hypothesis import strategies as st

    def fragile(value: int, _: Path) -> int:
        return 10 // (value - 7)  # ZeroDivisionError at 7

    target = Target("fragile", "test", st.integers(0, 100), fragile)
    with pytest.raises(AssertionError, match=r"ZeroDivisionError.* on 7"):
        fuzz(target, 200, seed=0)


def test_a_worker_that_segfaults_is_counted_and_replaced() -> None:
    tally = run_isolated("selftest-segfault", 10, seed=0, max_restarts=1)
    assert tally.crashes >= 1
    assert any("SIGSEGV" in s and "3" in s for s in tally.samples), tally.samples
    assert tally.success >= 1  # the other inputs were still tried


def test_a_worker_that_hangs_is_killed_and_counted() -> None:
    tally = run_isolated("selftest-hang", 10, seed=0, input_timeout=3, max_restarts=0)
    assert tally.crashes == 1 and "hang" in tally.samples[0], tally.samples
