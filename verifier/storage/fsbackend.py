"""`StorageBackend` over a local folder: distribution's ``filesystem`` driver's tree.

Symlinks are never followed: a symlink (to a file or a folder) is an object of its own whose
read raises `ObjectError`, and nothing is listed, read or written through it -- the same view
an object store gives of a key that happens to be a prefix of nothing. Reads go through
verifier/storage/fsio.py (``O_NOFOLLOW``, ``O_NONBLOCK``, bounded); writes and copies go to a
temporary file in the target's folder, fsynced, then renamed over the target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path

from verifier.storage import fsio
from verifier.storage.backend import (
    Listing,
    ObjectError,
    ObjectMissing,
    ObjectTooLarge,
    StoredObject,
    folder_path,
    join,
    object_path,
)

#: Fills an open temporary file descriptor with the new content.
_Fill = Callable[[int], None]


class _Parents(Enum):
    """What lies on the way to a path: real folders, a missing one, or a non-folder."""

    OK = "ok"
    MISSING = "missing"
    BLOCKED = "blocked"


def _fsync_dir_quietly(path: str) -> None:
    # Durability of a rename or unlink is best effort after the operation itself succeeded.
    with contextlib.suppress(OSError):
        fsio.fsync_dir(path)


class FsBackend:
    """A local folder as a `StorageBackend`; `root` is the registry's ``rootdirectory``."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.abspath(root)
        self.location = self.root

    # --- helpers ----------------------------------------------------------------------------

    def _full(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _parents(self, rel: str, *, include_last: bool = False) -> _Parents:
        """Whether every folder on the way to `rel` (below the root) is a real folder."""
        parts = rel.split("/") if rel else []
        if not include_last:
            parts = parts[:-1]
        current = self.root
        for part in parts:
            current = os.path.join(current, part)
            try:
                mode = os.lstat(current).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return _Parents.MISSING
            if not stat.S_ISDIR(mode):
                return _Parents.BLOCKED
        return _Parents.OK

    def _make_parents(self, rel: str) -> str:
        """Create the folders on the way to `rel` (never through a symlink); return the last."""
        try:
            os.makedirs(self.root, 0o755, exist_ok=True)  # the root itself is the user's
        except OSError as exc:
            raise ObjectError(f"{self.location}: cannot create the root folder: "
                              f"{exc.strerror or exc}", rel) from None
        current = self.root
        for part in rel.split("/")[:-1]:
            current = os.path.join(current, part)
            try:
                os.mkdir(current, 0o755)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(current).st_mode):
                    raise ObjectError(
                        f"{self.location}: {current} is not a folder (a symlink or file); "
                        "refusing to write through it", rel) from None
            except OSError as exc:
                raise self._error(exc, rel) from None
        return current

    def _tmp_name(self, full: str) -> str:
        return f"{full}.{os.getpid()}-{threading.get_ident()}{fsio.TMP_SUFFIX}"

    # --- the protocol -----------------------------------------------------------------------

    def list_folder(self, path: str) -> Listing:
        """One level below `path`: real sub-folders, and every other entry as an object."""
        folder = folder_path(path)
        if self._parents(folder, include_last=True) is not _Parents.OK:
            return Listing([], [])
        folders: list[str] = []
        objects: list[StoredObject] = []
        try:
            with os.scandir(self._full(folder)) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.name)
                    else:
                        size = entry.stat(follow_symlinks=False).st_size
                        objects.append(StoredObject(join(folder, entry.name), size))
        except (FileNotFoundError, NotADirectoryError):
            return Listing([], [])
        except OSError as exc:
            raise ObjectError(f"{self.location}: cannot list {folder or '.'}: "
                              f"{exc.strerror or exc}", folder) from None
        folders.sort()
        objects.sort(key=lambda o: o.path)
        return Listing(folders, objects)

    def walk(self, path: str) -> Iterator[StoredObject]:
        """Every object below `path` in key order, one folder in memory at a time."""
        folder = folder_path(path)
        if self._parents(folder, include_last=True) is not _Parents.OK:
            return
        yield from self._walk(folder)

    def _walk(self, folder: str) -> Iterator[StoredObject]:
        try:
            with os.scandir(self._full(folder)) as it:
                # Sorting a folder as `name/` keeps full paths in key order: "a/x" < "a-b".
                entries = sorted(
                    ((e.name + "/", e) if e.is_dir(follow_symlinks=False) else (e.name, e)
                     for e in it), key=lambda pair: pair[0])
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise ObjectError(f"{self.location}: cannot list {folder or '.'}: "
                              f"{exc.strerror or exc}", folder) from None
        for key, entry in entries:
            rel = join(folder, entry.name)
            if key.endswith("/"):
                yield from self._walk(rel)
            else:
                try:
                    size = entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # deleted while we walked: as a later listing would show
                yield StoredObject(rel, size)

    def read(self, path: str, limit: int) -> bytes | None:
        """At most `limit` bytes of a regular file; None when missing; a symlink raises."""
        rel = object_path(path)
        if self._parents(rel) is not _Parents.OK:
            return None
        full = self._full(rel)
        got = fsio.read_regular_file(full, limit)
        if isinstance(got, bytes):
            return got
        if got.reason is fsio.FailReason.MISSING or self._is_real_dir(full):
            return None
        if got.reason is fsio.FailReason.TOO_LARGE:
            raise ObjectTooLarge(f"{self.location}: {rel}: {got.detail}", rel)
        raise ObjectError(f"{self.location}: {rel}: {got.reason.value}"
                          + (f" ({got.detail})" if got.detail else ""), rel)

    @staticmethod
    def _is_real_dir(full: str) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(full).st_mode)
        except OSError:
            return False

    def stat(self, path: str) -> StoredObject | None:
        """The entry's size (lstat: a symlink's own size); None when missing or a folder."""
        rel = object_path(path)
        if self._parents(rel) is not _Parents.OK:
            return None
        try:
            st = os.lstat(self._full(rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISDIR(st.st_mode):
            return None
        return StoredObject(rel, st.st_size)

    def copy(self, src: str, dst: str) -> None:
        """Copy a regular file's bytes to `dst` (created or replaced), durably."""
        src_rel, dst_rel = object_path(src), object_path(dst)
        if self._parents(src_rel) is not _Parents.OK:
            raise ObjectMissing(f"{self.location}: copy source {src_rel} does not exist", src_rel)
        try:
            sfd = os.open(self._full(src_rel),
                          os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectMissing(f"{self.location}: copy source {src_rel} does not exist",
                                src_rel) from None
        except OSError as exc:
            raise self._error(exc, src_rel) from None
        try:
            if not stat.S_ISREG(os.fstat(sfd).st_mode):
                raise ObjectError(f"{self.location}: {src_rel}: not a regular file", src_rel)

            def fill(dfd: int) -> None:
                while chunk := os.read(sfd, fsio.CHUNK):
                    _write_all(dfd, chunk)

            self._replace(dst_rel, fill)
        finally:
            os.close(sfd)

    def write(self, path: str, data: bytes) -> None:
        """Create or replace a file with `data`, durably (temporary file, fsync, rename)."""
        rel = object_path(path)
        self._replace(rel, lambda dfd: _write_all(dfd, data))

    def _replace(self, rel: str, fill: _Fill) -> None:
        parent = self._make_parents(rel)
        full = self._full(rel)
        tmp = self._tmp_name(full)
        try:
            dfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o644)
        except OSError as exc:
            raise self._error(exc, rel) from None
        try:
            try:
                fill(dfd)
                os.fsync(dfd)
            finally:
                os.close(dfd)
            os.replace(tmp, full)  # rename(2) replaces a symlink itself, never its target
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self._error(exc, rel) from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir_quietly(parent)

    def delete(self, path: str) -> None:
        """Unlink the entry (a symlink itself, never its target); missing or a folder: no-op."""
        rel = object_path(path)
        if self._parents(rel) is not _Parents.OK:
            return
        full = self._full(rel)
        try:
            os.unlink(full)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            if self._is_real_dir(full):
                return  # a folder is not an object, as a key prefix is not one in a bucket
            raise self._error(exc, rel) from None
        _fsync_dir_quietly(os.path.dirname(full))

    def _error(self, exc: OSError, rel: str) -> ObjectError:
        if exc.errno == errno.ELOOP:
            return ObjectError(f"{self.location}: {rel}: is a symlink; not followed", rel)
        return ObjectError(f"{self.location}: {rel}: {exc.strerror or exc}", rel)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
