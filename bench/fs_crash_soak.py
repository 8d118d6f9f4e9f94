"""Soak for crash safety: `fs fix` killed with SIGKILL at seeded random moments, then restored.

Each seed builds a synthetic store (orphan layer links, relinkable index children, healthy
images; every link file given an owner, a mode, an old mtime and an xattr), starts
``regverify fs fix --force --relink-index-children`` in a subprocess, kills it when its journal
reaches a seeded line count, runs ``fs restore`` on the quarantine folder and compares every
file's content and metadata with the tree before. The suite runs a few seeds
(tests/test_storage_crash.py); this runs as many as asked and prints where each kill landed.

    python bench/fs_crash_soak.py --seeds 100
    python bench/fs_crash_soak.py --seeds 50 --cross-fs      # quarantine on a tmpfs (root)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_storage_crash import crash_then_restore  # noqa: E402


def main() -> int:
    """Run the seeds; exit 1 on the first tree that differs after restore."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--first", type=int, default=1000)
    parser.add_argument("--cross-fs", action="store_true", help="quarantine on a tmpfs")
    args = parser.parse_args()
    failures = 0
    for seed in range(args.first, args.first + args.seeds):
        top = Path(tempfile.mkdtemp(prefix="regverify-crash-"))
        quarantine = top / "q"
        try:
            if args.cross_fs:
                (top / "mnt").mkdir()
                subprocess.run(["mount", "-t", "tmpfs", "soak", str(top / "mnt")], check=True)
                quarantine = top / "mnt" / "q"
            try:
                landed = crash_then_restore(seed, top / "data", quarantine)
                print(f"seed {seed}: killed {landed}: restored tree identical", flush=True)
            except AssertionError as exc:
                failures += 1
                print(f"seed {seed}: FAILED: {exc}", flush=True)
        finally:
            if args.cross_fs:
                subprocess.run(["umount", "-l", str(top / "mnt")], check=False)
            shutil.rmtree(top, ignore_errors=True)
    print(f"{args.seeds - failures} of {args.seeds} seeds restored identically")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
