"""Crash safety: `fs fix` killed with SIGKILL at a random moment, then `fs restore`.

Whatever moment the kill lands on (before the journal, between a journal batch and its moves,
half-way through a copy to another filesystem, during a relink), restoring the quarantine
folder gives back the tree as it was: content and metadata of every file. A few seeds run in
the suite; ``bench/fs_crash_soak.py`` runs as many as asked.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_storage_safety import dress, meta_snapshot, tmpfs
from tests.test_storage_synthetic import SyntheticStore
from verifier.errors import ExitCode
from verifier.storage.repair import JOURNAL_NAME, restore_quarantine

ORPHAN_IMAGES = 60  # two orphan layer links each
RELINKABLE = 4  # index children whose revision link is gone but everything else is there


def build(root: Path) -> SyntheticStore:
    """Orphan layer links, relinkable index children, and healthy images around them."""
    store = SyntheticStore(root)
    for i in range(8):
        store.image(f"lib/img{i}", "v1")
    for i in range(ORPHAN_IMAGES):
        img = store.image(f"app/gone{i % 7}", None, seed=str(i))
        for layer in img.layers:
            store.data_path(layer).unlink()
    for i in range(RELINKABLE):
        idx = store.index(f"app/multi{i}", "v1")
        shutil.rmtree(store.revision_link(idx.repo, idx.children[0].digest).parent)
    dress(root)
    return store


def _journal_lines(quarantine: Path) -> int:
    try:
        runs = list(quarantine.iterdir())
    except FileNotFoundError:
        return 0
    total = 0
    for run in runs:
        try:
            with open(run / JOURNAL_NAME, "rb") as fh:
                total += fh.read().count(b"\n")
        except FileNotFoundError:
            pass
    return total


def crash_then_restore(seed: int, store_root: Path, quarantine: Path) -> str:
    """Kill one `fs fix` at a seeded moment; restore; return where the kill landed."""
    rng = random.Random(seed)
    build(store_root)
    before = meta_snapshot(store_root)
    expected_lines = 1 + 2 * 2 * ORPHAN_IMAGES + 2 * RELINKABLE
    kill_at = rng.randint(0, expected_lines)
    extra = rng.random() * 0.002
    cmd = [
        sys.executable, "-m", "verifier", "fs", "fix", str(store_root),
        "--quarantine", str(quarantine), "--force", "--relink-index-children", "-f", "json",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and _journal_lines(quarantine) < kill_at:
            time.sleep(0.0002)
        time.sleep(extra)
        finished = proc.poll() is not None
        if not finished:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    landed = "after the end" if finished else f"at journal line {_journal_lines(quarantine)}"
    if quarantine.exists() and any(quarantine.iterdir()):
        report = restore_quarantine(quarantine)
        assert report.exit_code is ExitCode.CLEAN, (landed, [f.message for f in report.findings])
    after = meta_snapshot(store_root)
    assert after == before, f"seed {seed}: killed {landed}: tree differs after restore"
    return landed


@pytest.mark.parametrize("seed", [1, 2])
def test_fix_killed_then_restored_same_filesystem(tmp_path: Path, seed: int) -> None:
    crash_then_restore(seed, tmp_path / "data", tmp_path / "q")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs")
@pytest.mark.parametrize("seed", [11])
def test_fix_killed_then_restored_across_filesystems(tmp_path: Path, seed: int) -> None:
    with tmpfs(tmp_path / "mnt"):
        crash_then_restore(seed, tmp_path / "data", tmp_path / "mnt" / "q")
