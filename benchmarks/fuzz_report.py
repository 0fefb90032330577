"""Fuzz every entry point that takes outside data and print what happened.

::

    .venv/bin/python benchmarks/fuzz_report.py                  # 2000 inputs per target
    .venv/bin/python benchmarks/fuzz_report.py --examples 200 --targets caffemodel-bytes

Each target (tests/reliability/targets.py) runs in worker subprocesses: a worker that
segfaults or makes no progress for ``--input-timeout`` seconds counts as one crash, with
the input it was on, and a fresh worker goes on with the remaining inputs. The table lists
per target the inputs tried, the clear errors (ValueError/TypeError/FileNotFoundError/
MemoryError with a diagnosing message), the successes (results that passed the target's
correctness check) and the crashes (anything else). The exit status is 1 if any target
crashed. ``DEEPLAB_FUZZ_EXAMPLES`` sets the default count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))

from reliability.fuzzing import Tally, fuzz, run_isolated  # noqa: E402
from reliability.targets import TARGETS  # noqa: E402


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(tallies: list[Tally]) -> str:
    """A markdown table of the tallies, with a total row."""
    head = ["target", "inputs tried", "clear errors", "successes", "crashes", "s/input (max)"]
    lines = [_row(head), _row(["---"] + ["---:"] * (len(head) - 1))]
    for t in tallies:
        per = t.seconds / max(t.tried, 1)
        lines.append(
            _row(
                [
                    t.target,
                    str(t.tried),
                    str(t.clear),
                    str(t.success),
                    str(t.crashes),
                    f"{per:.4f} ({t.slowest:.2f})",
                ]
            )
        )
    total = [sum(getattr(t, k) for t in tallies) for k in ("tried", "clear", "success", "crashes")]
    lines.append(_row(["**total**", *(f"**{v}**" for v in total), ""]))
    return "\n".join(lines)


def caffe_memory_table(size: int) -> str:
    """Peak Python allocation and time of the .caffemodel reader on hostile files of about
    ``size`` bytes (tests/reliability/adversarial.py)."""
    from reliability.adversarial import FAMILIES, measure

    head = ["hostile .caffemodel", "bytes", "peak / input", "seconds", "outcome"]
    lines = [_row(head), _row(["---", "---:", "---:", "---:", "---"])]
    for family in FAMILIES:
        m = measure(family, size)
        outcome = m.outcome if len(m.outcome) <= 60 else m.outcome[:57] + "..."
        lines.append(
            _row([family, str(m.size), f"{m.peak / m.size:.2f}", f"{m.seconds:.2f}", outcome])
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--examples",
        type=int,
        default=int(os.environ.get("DEEPLAB_FUZZ_EXAMPLES", "2000")),
        help="inputs per target (default 2000 or $DEEPLAB_FUZZ_EXAMPLES)",
    )
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    p.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=list(TARGETS))
    p.add_argument("--input-timeout", type=float, default=60.0, help="seconds without progress")
    p.add_argument(
        "--in-process", action="store_true", help="no worker subprocesses (faster, no isolation)"
    )
    p.add_argument("--json", type=Path, help="also write the tallies here")
    p.add_argument(
        "--caffe-size",
        type=int,
        default=2**20,
        help="size of the hostile .caffemodel files measured after the fuzzing (0: skip)",
    )
    args = p.parse_args(argv)

    tallies = []
    start = time.perf_counter()
    for name in args.targets:
        t0 = time.perf_counter()
        if args.in_process:
            tally = fuzz(TARGETS[name], args.examples, seed=args.seed, stop_on_crash=False)
        else:
            tally = run_isolated(
                name, args.examples, seed=args.seed, input_timeout=args.input_timeout
            )
        tallies.append(tally)
        print(
            f"{name}: {tally.tried} inputs, {tally.crashes} crashes "
            f"({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
        )
    print(
        f"\n{args.examples} inputs per target, seed {args.seed}, "
        f"{time.perf_counter() - start:.0f} s\n"
    )
    print(table(tallies))
    print("\nEntry points:")
    for name in args.targets:
        print(f"- {name}: {TARGETS[name].entry}")
    crashed = [t for t in tallies if t.crashes]
    for t in crashed:
        print(f"\nCrashes of {t.target} (first {len(t.samples)}):")
        for sample in t.samples:
            print(f"  - {sample[:600]}")
    if args.caffe_size:
        print(f"\nThe .caffemodel reader on hostile files of about {args.caffe_size} bytes:\n")
        print(caffe_memory_table(args.caffe_size))
    if args.json is not None:
        args.json.write_text(json.dumps([t.to_dict() for t in tallies], indent=2) + "\n")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
