"""verifier.storage.fsio: reads that never follow a symlink unless asked, bounded reads, and
moves that never replace and keep a file's metadata."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from verifier.storage import fsio
from verifier.storage.fsio import FailReason, ReadFailure


def test_read_link_file_reads_at_most_the_limit(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.write_bytes(b"sha256:" + b"a" * 64 + b"trailing")
    assert fsio.read_link_file(str(link), limit=71) == b"sha256:" + b"a" * 64


def test_reads_report_missing_symlink_and_not_regular(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"data")
    (tmp_path / "sym").symlink_to(target)
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")

    missing = fsio.read_link_file(str(tmp_path / "nope"))
    assert isinstance(missing, ReadFailure) and missing.reason is FailReason.MISSING
    # A missing parent folder (ENOTDIR through a file) is "missing" too, not "unreadable".
    through_file = fsio.read_link_file(str(target / "child"))
    assert isinstance(through_file, ReadFailure) and through_file.reason is FailReason.MISSING
    for read in (fsio.read_link_file(str(tmp_path / "sym")),
                 fsio.read_regular_file(str(tmp_path / "sym"), 100)):
        assert isinstance(read, ReadFailure) and read.reason is FailReason.SYMLINK
    # A FIFO planted where a file should be is refused at once, never waited on.
    fifo = fsio.read_regular_file(str(tmp_path / "fifo"), 100)
    assert isinstance(fifo, ReadFailure) and fifo.reason is FailReason.UNREADABLE
    folder = fsio.sha256_file(str(tmp_path / "dir"))
    assert isinstance(folder, ReadFailure) and folder.reason is FailReason.UNREADABLE


def test_follow_reads_through_a_symlink_as_distribution_does(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"blob bytes")
    (tmp_path / "data").symlink_to(target)
    assert fsio.read_regular_file(str(tmp_path / "data"), 100, follow=True) == b"blob bytes"
    assert fsio.sha256_file(str(tmp_path / "data"), follow=True) == hashlib.sha256(
        b"blob bytes").hexdigest()


def test_read_regular_file_refuses_more_than_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    too_large = fsio.read_regular_file(str(big), 100)
    assert isinstance(too_large, ReadFailure) and too_large.reason is FailReason.TOO_LARGE
    assert fsio.read_regular_file(str(big), 101) == b"x" * 101


def test_sha256_file_streams_and_counts_bytes(tmp_path: Path) -> None:
    content = os.urandom(fsio.CHUNK * 2 + 17)
    blob = tmp_path / "blob"
    blob.write_bytes(content)
    seen: list[int] = []
    assert fsio.sha256_file(str(blob), seen.append) == hashlib.sha256(content).hexdigest()
    assert sum(seen) == len(content) and len(seen) == 3


def test_rename_noreplace_never_replaces(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"mine")
    dst.write_bytes(b"theirs")
    with pytest.raises(OSError) as raised:
        fsio.rename_noreplace(src, dst)
    assert raised.value.errno == errno.EEXIST
    assert src.read_bytes() == b"mine" and dst.read_bytes() == b"theirs"
    fresh = tmp_path / "fresh"
    fsio.rename_noreplace(src, fresh)
    assert fresh.read_bytes() == b"mine" and not src.exists()


def test_copy_preserving_keeps_mode_times_and_xattrs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"sha256:" + b"b" * 64)
    os.chmod(src, 0o644)
    os.utime(src, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    try:
        os.setxattr(src, "user.regverify", b"kept")
        xattrs = True
    except OSError:  # a filesystem without user xattrs: the rest still holds
        xattrs = False
    old_umask = os.umask(0o077)
    try:
        dst = tmp_path / "sub" / "dst"
        dst.parent.mkdir()
        before = fsio.copy_preserving(str(src), str(dst))
    finally:
        os.umask(old_umask)
    after = os.stat(dst)
    assert dst.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(after.st_mode) == 0o644  # not the umask's 0600
    assert after.st_mtime_ns == before.st_mtime_ns == 1_600_000_000_123_456_789
    assert not Path(str(dst) + fsio.TMP_SUFFIX).exists()
    if xattrs:
        assert os.getxattr(dst, "user.regverify") == b"kept"
    with pytest.raises(OSError):  # never replaces what is there
        fsio.copy_preserving(str(src), str(dst))


def test_copy_preserving_refuses_a_symlink_source(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"x")
    (tmp_path / "sym").symlink_to(target)
    with pytest.raises(OSError):
        fsio.copy_preserving(str(tmp_path / "sym"), str(tmp_path / "dst"))
    assert not (tmp_path / "dst").exists()


def test_move_preserving_on_one_filesystem_is_a_rename(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"link")
    inode = os.stat(src).st_ino
    fsio.move_preserving(str(src), str(dst))
    assert not src.exists() and os.stat(dst).st_ino == inode


def test_same_file_state_compares_size_and_mtime(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"one")
    a = os.stat(f)
    assert fsio.same_file_state(a, os.stat(f))
    f.write_bytes(b"two!")
    assert not fsio.same_file_state(a, os.stat(f))
