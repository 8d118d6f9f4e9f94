"""The few low-level reads the storage scan needs: small files and whole blobs, never via symlinks.

Every open uses ``O_NOFOLLOW`` (a symlink is reported, not followed) and ``O_NONBLOCK`` (a FIFO
planted where a link file should be cannot hang the scan).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Blob data is read as distribution reads it: a symlinked ``data`` file is followed.
_FOLLOW_FLAGS = _OPEN_FLAGS & ~os.O_NOFOLLOW
CHUNK = 1024 * 1024


class FailReason(StrEnum):
    """Why a read did not return content."""

    MISSING = "missing"
    SYMLINK = "symlink"
    UNREADABLE = "unreadable"
    TOO_LARGE = "too-large"


@dataclass(frozen=True)
class ReadFailure:
    """A read that produced no content, and why; `detail` is the OS message."""

    reason: FailReason
    detail: str = ""


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
