"""The few low-level reads the storage scan needs: small files and whole blobs, never via symlinks.

Every open uses ``O_NOFOLLOW`` (a symlink is reported, not followed) and ``O_NONBLOCK`` (a FIFO
planted where a link file should be cannot hang the scan).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import stat
from collections.abc import Callable

# Re-exported: the records are where any backend takes them from.
from verifier.storage.records import FailReason as FailReason
from verifier.storage.records import ReadFailure as ReadFailure

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Blob data is read as distribution reads it: a symlinked ``data`` file is followed.
_FOLLOW_FLAGS = _OPEN_FLAGS & ~os.O_NOFOLLOW
CHUNK = 1024 * 1024


def _failure(exc: OSError) -> ReadFailure:
    if exc.errno == errno.ENOENT or exc.errno == errno.ENOTDIR:
        return ReadFailure(FailReason.MISSING, exc.strerror or "")
    if exc.errno == errno.ELOOP:
        return ReadFailure(FailReason.SYMLINK, "is a symlink")
    return ReadFailure(FailReason.UNREADABLE, exc.strerror or str(exc))


def read_link_file(path: str, limit: int = 128) -> bytes | ReadFailure:
    """At most `limit` bytes of a link file; the hot path of the scan (open, read, close)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        return _failure(exc)
    try:
        return os.read(fd, limit)
    except OSError as exc:
        return _failure(exc)
    finally:
        os.close(fd)


def read_regular_file(path: str, limit: int, *, follow: bool = False) -> bytes | ReadFailure:
    """The whole content of a regular file of at most `limit` bytes (a manifest's blob data).

    `follow` follows a symlink at the last component (blob data, as distribution does).
    """
    try:
        fd = os.open(path, _FOLLOW_FLAGS if follow else _OPEN_FLAGS)
    except OSError as exc:
        return _failure(exc)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ReadFailure(FailReason.UNREADABLE, "not a regular file")
        if st.st_size > limit:
            return ReadFailure(FailReason.TOO_LARGE, f"{st.st_size} bytes > {limit}")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                return ReadFailure(FailReason.TOO_LARGE, f"more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        return _failure(exc)
    finally:
        os.close(fd)


def sha256_file(
    path: str, on_bytes: Callable[[int], None] | None = None, *, follow: bool = False
) -> str | ReadFailure:
    """Hex sha256 of a regular file, streamed in 1 MiB chunks (bounded memory)."""
    try:
        fd = os.open(path, _FOLLOW_FLAGS if follow else _OPEN_FLAGS)
    except OSError as exc:
        return _failure(exc)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ReadFailure(FailReason.UNREADABLE, "not a regular file")
        h = hashlib.sha256()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = os.readv(fd, [buf])
            if n == 0:
                break
            h.update(view[:n])
            if on_bytes is not None:
                on_bytes(n)
        return h.hexdigest()
    except OSError as exc:
        return _failure(exc)
    finally:
        os.close(fd)


# --- moves that keep everything ---------------------------------------------------------------

#: Suffix of the temporary file a copy across filesystems writes before renaming it into place.
TMP_SUFFIX = ".regverify-tmp"
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_noreplace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """rename(2) that fails with EEXIST instead of replacing `dst` (a live registry may have
    written it meanwhile); falls back to link(2) + unlink(2) where renameat2 is unsupported."""
    s, d = os.fsencode(src), os.fsencode(dst)
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, s, _AT_FDCWD, d, _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), os.fsdecode(src), None, os.fsdecode(dst))
    os.link(s, d, follow_symlinks=False)
    os.unlink(s)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a folder, so a rename or unlink in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def same_file_state(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two stats show the same content state (size and mtime; a copy keeps both)."""
    return (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)


class SourceChanged(OSError):
    """The file changed while it was being moved; the move was undone."""


def copy_preserving(src: str, dst: str) -> os.stat_result:
    """Copy regular file `src` to new `dst` keeping mode, owner, times and xattrs, durably.

    Writes ``dst + TMP_SUFFIX``, fsyncs it, renames it into place (never replacing) and fsyncs
    the folder. Returns the source's stat taken before the copy. A metadata item that cannot
    be kept (an owner we may not give, xattrs the target refuses) fails the copy.
    """
    tmp = dst + TMP_SUFFIX
    sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(sfd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", src)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by a run that was killed: ours, never anyone else's name
        dfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600)
        try:
            while chunk := os.read(sfd, CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dfd, view):]
            for name in os.listxattr(sfd):
                os.setxattr(dfd, name, os.getxattr(sfd, name))
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(dfd, st.st_uid, st.st_gid)
            os.fchmod(dfd, stat.S_IMODE(st.st_mode))  # after fchown, which may clear set-id bits
            os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.fsync(dfd)
        except BaseException:
            os.close(dfd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(dfd)
    finally:
        os.close(sfd)
    try:
        rename_noreplace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(dst))
    return st


def move_preserving(src: str, dst: str) -> None:
    """Move a regular file to a new name: rename(2) on one filesystem (never replacing `dst`);
    across filesystems `copy_preserving`, then unlink the source only if it is unchanged."""
    # A rename is atomic: after a crash the file is in one place or the other, which the
    # journal's restore handles either way, so no fsync is needed on this path.
    try:
        rename_noreplace(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    before = copy_preserving(src, dst)  # durable, with its folder, before the source goes
    now = os.lstat(src)
    if not same_file_state(before, now) or now.st_ino != before.st_ino:
        os.unlink(dst)  # the source is the truth: someone wrote it while we copied
        raise SourceChanged(errno.EAGAIN, "changed while it was being moved", src)
    os.unlink(src)
