"""Soak: gc-preview against the real ``garbage-collect`` on hundreds of seeded damaged stores.

The same code as ``tests/test_gc_differential.py`` (which runs a few seeds in the suite): each
seed pushes a random mix of images, indexes and lists to the real registry, damages the storage
the way production storage gets damaged, predicts plain and ``--delete-untagged`` GC, runs the
real ``docker-registry garbage-collect`` on copies and compares the blobs deleted, the revision
links removed, whether the run stopped, and every tag's pullability (skopeo) before and after.

    python bench/gc_soak.py --seeds 200            # seeds 1..200
    python bench/gc_soak.py --start 1000 --seeds 50 --jobs 2
    python bench/gc_soak.py --minutes 30           # as many seeds as fit

Prints one line per mismatch (with the damage that seed did), then the totals; exit 1 when any
prediction differed from the real run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.test_gc_differential import Built, Mismatch, run_seed  # noqa: E402


def _one(seed: int, base: Path) -> tuple[Built, list[Mismatch]]:
    work = base / f"seed-{seed}"
    try:
        return run_seed(seed, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    """Run the seeds, print mismatches and totals."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--start", type=int, default=1, help="first seed")
    p.add_argument("--seeds", type=int, default=200, help="how many seeds at most")
    p.add_argument("--minutes", type=float, default=0, help="stop starting seeds after this")
    p.add_argument("--jobs", type=int, default=2, help="seeds run at once")
    args = p.parse_args()
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
    base = Path(tempfile.mkdtemp(prefix="regverify-gc-soak-"))
    t0 = time.monotonic()
    ran = 0
    failed_seeds: list[int] = []
    mismatches: list[Mismatch] = []
    damage: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    seeds = iter(range(args.start, args.start + args.seeds))
    try:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            running: dict[Future[tuple[Built, list[Mismatch]]], int] = {}

            def submit() -> None:
                if deadline is not None and time.monotonic() > deadline:
                    return
                seed = next(seeds, None)
                if seed is not None:
                    running[pool.submit(_one, seed, base)] = seed

            for _ in range(args.jobs):
                submit()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    seed = running.pop(future)
                    built, found = future.result()
                    ran += 1
                    damage.update(d.split(":", 1)[0] for d in built.damage)
                    stats.update(built.stats)
                    if found:
                        failed_seeds.append(seed)
                        mismatches.extend(found)
                        for m in found:
                            print(m, flush=True)
                        print(f"  damage of seed {seed}: {'; '.join(built.damage)}", flush=True)
                    submit()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    elapsed = time.monotonic() - t0
    print(
        f"seeds run: {ran} (from {args.start}), seeds with a mismatch: {len(failed_seeds)}, "
        f"mismatches: {len(mismatches)}, in {elapsed:.0f}s"
    )
    print("damage applied: " + ", ".join(f"{k} x{v}" for k, v in sorted(damage.items())))
    print("real runs: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
