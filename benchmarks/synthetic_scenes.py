"""How long one synthetic training scene takes to generate, in milliseconds.

    python benchmarks/synthetic_scenes.py                  # 200x200, 40 scenes, 5 repeats
    python benchmarks/synthetic_scenes.py --size 321 321 --scenes 20

Each repeat generates ``--scenes`` scenes of one seed (indices 0..N-1, after one warm-up
scene) and divides the wall time by N; the median and the range over the repeats are
printed. Training reads these scenes on the fly, so a scene should cost well under an
iteration of the tiny network (about 20 ms for 200x200 was the target when it was a test).
Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

from deeplab.data.synthetic import generate_scene


def ms_per_scene(size: tuple[int, int], scenes: int, seed: int) -> float:
    """Wall milliseconds per scene over ``scenes`` consecutive indices of ``seed``."""
    start = time.perf_counter()
    for index in range(scenes):
        generate_scene(seed, index, size=size)
    return 1000 * (time.perf_counter() - start) / scenes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(200, 200), metavar=("H", "W"))
    parser.add_argument("--scenes", type=int, default=40, help="scenes per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = (args.size[0], args.size[1])
    generate_scene(args.seed, 0, size=size)  # imports and first-call costs stay out
    times = [ms_per_scene(size, args.scenes, args.seed) for _ in range(args.repeats)]
    print(
        f"{size[0]}x{size[1]} synthetic scene: {statistics.median(times):.2f} ms median "
        f"(min {min(times):.2f}, max {max(times):.2f}; {args.repeats} repeats of "
        f"{args.scenes} scenes)"
    )


if __name__ == "__main__":
    main()
