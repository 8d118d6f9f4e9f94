"""fs fix on unusual stores: unreadable parts, symlinked blob folders, other filesystems, locks.

Some tests need root (we mount a tmpfs, switch to an unprivileged user, give files away); they
skip when not run as root.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.test_storage_synthetic import SyntheticStore, SynthImage
from verifier.errors import ExitCode, SafetyRefusal
from verifier.model.findings import Kind, Report, Severity
from verifier.storage.layout import detect_layout
from verifier.storage.repair import (
    LOCK_NAME,
    FixOptions,
    FixRefused,
    fix_storage,
    layout_lock,
    restore_quarantine,
)
from verifier.storage.scan import scan_storage

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTED = datetime(2026, 11, 28, 7, 0, 0, tzinfo=UTC)
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, setpriv, chown)")


# --- a snapshot that includes metadata ---------------------------------------------------------


def meta_snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every file and folder under `root`: content, mode, owner, mtime (files), xattrs.

    Folder mtimes are left out: moving a file out of a folder and back changes them.
    """
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            st = os.lstat(p)
            out[os.path.relpath(p, root) + "/"] = (oct(st.st_mode), st.st_uid, st.st_gid)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if f == LOCK_NAME:
                continue
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[os.path.relpath(p, root)] = ("->" + os.readlink(p),)
                continue
            xattrs = {n: os.getxattr(p, n, follow_symlinks=False) for n in os.listxattr(p)}
            out[os.path.relpath(p, root)] = (
                Path(p).read_bytes(),
                oct(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                tuple(sorted(xattrs.items())),
            )
    return out


def dress(root: Path) -> None:
    """Give every link file the metadata a copy could lose: owner, mode, old mtime, an xattr."""
    for p in root.rglob("link"):
        os.chown(p, 1234, 5678)
        os.chmod(p, 0o644)
        os.utime(p, ns=(1_600_000_000_123_456_789, 1_600_000_000_987_654_321))
        os.setxattr(p, "user.regverify-test", b"kept")


@contextlib.contextmanager
def tmpfs(where: Path) -> Iterator[Path]:
    """A tmpfs mounted at `where` for the duration (another filesystem than tmp_path)."""
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "regverify-test", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def healthy(store: SyntheticStore, n: int = 6) -> list[SynthImage]:
    return [store.image(f"lib/img{i}", "v1") for i in range(n)]


def fix(base: Path, quarantine: Path | None, **opts: Any) -> Report:
    return fix_storage(
        detect_layout(base), None, FixOptions(quarantine=quarantine, **opts), started=STARTED
    )


# --- never move a link whose blob might exist -----------------------------------------------

#: Runs the fix engine as whoever runs this script; stdlib only, so any python3 >= 3.11 will do.
_DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from verifier.storage.layout import detect_layout
from verifier.storage.repair import FixOptions, FixRefused, fix_storage
try:
    report = fix_storage(detect_layout(Path(sys.argv[2])), None, FixOptions(Path(sys.argv[3])))
except FixRefused as exc:
    print(json.dumps({"refused": str(exc), "quarantined": exc.report.counters["quarantined"]}))
    sys.exit(int(exc.exit_code))
print(json.dumps({"quarantined": report.counters["quarantined"]}))
sys.exit(int(report.exit_code))
"""


def _run_as_nobody(store: Path, quarantine: Path) -> tuple[int, dict[str, Any], str]:
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    cmd = [
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
        python, "-c", _DRIVER, str(REPO_ROOT), str(store), str(quarantine),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, doc, proc.stderr


@needs_root
def test_unreadable_blob_prefix_as_unprivileged_user_moves_nothing() -> None:
    """One prefix folder the user cannot list: the registry is incomplete, exit 3, no move."""
    top = Path(tempfile.mkdtemp(prefix="regverify-nobody-"))
    try:
        os.chmod(top, 0o755)
        store = SyntheticStore(top / "data")
        imgs = healthy(store, 8)
        orphan = store.image("app/web", "v1")
        store.data_path(orphan.layers[0]).unlink()  # a real orphan elsewhere
        (top / "q").mkdir()
        for p in [top / "data", top / "q", *(top / "data").rglob("*")]:
            os.chown(p, NOBODY, NOBODY, follow_symlinks=False)
        victim = imgs[0].layers[0]
        prefix = store.data_path(victim).parent.parent
        before = meta_snapshot(top / "data")
        os.chmod(prefix, 0)

        code, doc, err = _run_as_nobody(top / "data", top / "q")
        assert code == ExitCode.INCOMPLETE, err
        assert "blob listing is incomplete" in doc["refused"]
        assert f"{prefix}: Permission denied" in doc["refused"]
        assert doc["quarantined"] == 0
        os.chmod(prefix, 0o755)
        assert meta_snapshot(top / "data") == before  # not one link moved
        assert store.layer_link(imgs[0].repo, victim).exists()

        # with the prefix readable again, the same user repairs the real orphan only
        code, doc, err = _run_as_nobody(top / "data", top / "q")
        assert doc == {"quarantined": 1}, err
        assert not store.layer_link("app/web", orphan.layers[0]).exists()
        assert store.layer_link(imgs[0].repo, victim).exists()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_recheck_counts_any_error_but_enoent_as_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last look before a move: EACCES on the blob's data means "it might be there"."""
    store = SyntheticStore(tmp_path / "data")
    healthy(store)
    img = store.image("app/web", None)
    data = store.data_path(img.layers[0])
    data.unlink()
    real_stat = os.stat

    def stat_eacces(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path).endswith(str(data.relative_to(store.root))) and fixing:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    fixing = False
    real_scan = scan_storage

    def scan_then_deny(*args: Any) -> Any:
        nonlocal fixing
        result = real_scan(*args)
        fixing = True
        return result

    monkeypatch.setattr("verifier.storage.repair.scan_storage", scan_then_deny)
    monkeypatch.setattr(os, "stat", stat_eacces)
    report = fix(store.root, tmp_path / "q")
    monkeypatch.undo()
    assert store.layer_link("app/web", img.layers[0]).exists()
    [f] = [f for f in report.findings if f.kind is Kind.ORPHAN_LAYER_LINK]
    assert f.severity is Severity.INFO and f.details["repaired"] is False
    assert "Permission denied" in f.details["skipped"] and "might exist" in f.details["skipped"]


def test_symlinked_blob_prefix_fix_keeps_its_links(tmp_path: Path) -> None:
    """Prefix folders on another disk, symlinked back: their blobs exist; no link moves."""
    store = SyntheticStore(tmp_path / "data")
    imgs = healthy(store, 8)
    blobs = store.v2 / "blobs" / "sha256"
    (tmp_path / "disk2").mkdir()
    moved = sorted(p.name for p in blobs.iterdir())[::2]
    for name in moved:
        (blobs / name).rename(tmp_path / "disk2" / name)
        os.symlink(tmp_path / "disk2" / name, blobs / name)
    orphan = store.image("app/web", None)
    store.data_path(orphan.layers[0]).unlink()
    before = meta_snapshot(store.root)
    report = fix(store.root, tmp_path / "q")
    assert report.exit_code is ExitCode.CLEAN
    assert report.counters["quarantined"] == 1
    after = meta_snapshot(store.root)
    gone = set(before) - set(after)
    assert gone == {str(store.layer_link("app/web", orphan.layers[0]).relative_to(store.root))}
    assert all(store.layer_link(i.repo, d).exists() for i in imgs for d in i.blobs)


def test_dangling_blob_prefix_symlink_refuses_the_fix(tmp_path: Path) -> None:
    """A prefix symlinked to a disk that is not mounted: its blobs might exist."""
    store = SyntheticStore(tmp_path / "data")
    imgs = healthy(store, 8)
    prefix = store.data_path(imgs[0].layers[0]).parent.parent
    shutil.rmtree(prefix)
    os.symlink(tmp_path / "unmounted" / prefix.name, prefix)
    before = meta_snapshot(store.root)
    with pytest.raises(FixRefused, match="blob listing is incomplete") as info:
        fix(store.root, tmp_path / "q", force=True)
    assert info.value.exit_code is ExitCode.INCOMPLETE
    assert meta_snapshot(store.root) == before


# --- moves that keep everything --------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("where", ["explicit", "default"])
def test_fix_and_restore_across_filesystems_keep_metadata(tmp_path: Path, where: str) -> None:
    """Under umask 077, quarantine on another filesystem: mode, owner, times, xattrs survive."""
    mnt = tmp_path / "mnt"
    with tmpfs(mnt), umask(0o077):
        if where == "explicit":
            base, quarantine = tmp_path / "data", mnt / "q"
        else:  # PATH is a mount point: the default quarantine (its parent) is another fs
            base, quarantine = mnt, None
        store = SyntheticStore(base)
        healthy(store)
        img = store.image("app/web", None)
        for layer in img.layers:
            store.data_path(layer).unlink()
        dress(base)
        before = meta_snapshot(base)
        report = fix(base, quarantine)
        assert report.counters["quarantined"] == 2, report.findings
        run = Path(report.extra["quarantine"])
        assert os.lstat(run).st_dev != os.lstat(base).st_dev
        for f in report.findings:
            if f.kind is Kind.ORPHAN_LAYER_LINK:
                copy = Path(f.details["quarantined_to"])
                st = os.lstat(copy)
                assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o644, 1234, 5678)
                assert st.st_mtime_ns == 1_600_000_000_987_654_321
                assert os.getxattr(copy, "user.regverify-test") == b"kept"
        assert not list(run.rglob("*.regverify-tmp"))
        restored = restore_quarantine(run)
        assert restored.counters["links_put_back"] == 2
        assert meta_snapshot(base) == before


def test_same_filesystem_moves_stay_renames(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path / "data")
    healthy(store)
    img = store.image("app/web", None)
    store.data_path(img.layers[0]).unlink()
    link = store.layer_link("app/web", img.layers[0])
    inode = os.lstat(link).st_ino
    report = fix(store.root, tmp_path / "q")
    [f] = [f for f in report.findings if f.kind is Kind.ORPHAN_LAYER_LINK]
    assert os.lstat(f.details["quarantined_to"]).st_ino == inode
    restore_quarantine(Path(report.extra["quarantine"]))
    assert os.lstat(link).st_ino == inode


def test_relinked_folders_and_links_ignore_the_umask(tmp_path: Path) -> None:
    """What fs fix creates in the store is readable by a registry running as another user."""
    store = SyntheticStore(tmp_path / "data")
    healthy(store)
    idx = store.index("app/multi", "v1")
    link = store.revision_link("app/multi", idx.children[0].digest)
    shutil.rmtree(link.parent)
    with umask(0o077):
        report = fix(store.root, tmp_path / "q", relink_index_children=True)
    assert report.counters["relinked"] == 1
    assert stat.S_IMODE(os.lstat(link).st_mode) == 0o644
    assert stat.S_IMODE(os.lstat(link.parent).st_mode) == stat.S_IMODE(
        os.lstat(link.parent.parent).st_mode
    )


# --- the lock ---------------------------------------------------------------------------------


def test_two_spellings_of_one_store_exclude_each_other(tmp_path: Path) -> None:
    """A multi-registry base and one registry of it given as a single root, or via a symlink."""
    base = tmp_path / "base"
    for name in ("a", "b"):
        store = SyntheticStore(base / name)
        healthy(store)
        img = store.image("app/web", None)
        store.data_path(img.layers[0]).unlink()
    os.symlink(base / "a", tmp_path / "alias")
    with layout_lock(detect_layout(base)):
        for spelling in (base / "a", tmp_path / "alias"):
            with pytest.raises(SafetyRefusal, match="holds"):
                fix(spelling, tmp_path / "q")
    with layout_lock(detect_layout(tmp_path / "alias")):
        with pytest.raises(SafetyRefusal, match="holds"):
            fix(base, tmp_path / "q")
        # another registry of the same base is not locked by it
        assert fix(base / "b", tmp_path / "q").counters["quarantined"] == 1
