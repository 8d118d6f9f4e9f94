"""The storage a registry keeps its data in, seen through one small interface.

distribution's storage drivers (``filesystem``, ``s3``, ...) all offer the same few operations
over slash-separated paths below the driver's root; the object-store mode reads and repairs
through the same few, so the readers, checks, GC models and repair logic never know whether they
run on a local folder or a bucket. Paths here are always relative to the backend's root and use
``/`` (for example ``docker/registry/v2/blobs/sha256/ab/<hex>/data``).

The contract every backend keeps (tests/test_storage_backend.py runs it against each one):

* An object path is ``/``-separated, relative, with no empty, ``.`` or ``..`` part and no NUL;
  anything else raises ValueError before any I/O (`object_path`). A folder path follows the
  same rules, may end in one ``/`` (ignored) and is ``""`` for the root (`folder_path`).
* Listings are in key order: the order of the full path strings (S3's order), so a walk of one
  folder is a contiguous, sorted run of a walk of its parent.
* A missing object reads and stats as None and deletes silently; `copy` from a missing source
  raises `ObjectMissing`; `copy` and `write` create or replace the target.
* Errors about the storage as a whole (no bucket, access denied, endpoint down, credentials
  refused) raise `verifier.errors.StorageUnavailable`; errors about one object raise an
  `ObjectError`.
* Every method may be called from several threads at once (`verifier.storage.parallel` does).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from verifier.errors import IncompleteError


@dataclass(frozen=True)
class StoredObject:
    """One object (a file, on a filesystem): its path below the root and its size in bytes."""

    path: str
    size: int


@dataclass(frozen=True)
class Listing:
    """One level of a folder: the sub-folder names and the objects directly in it, both sorted."""

    folders: list[str]
    objects: list[StoredObject]


class ObjectError(IncompleteError):
    """One object could not be read or changed (a symlink or FIFO on a filesystem, ...)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class ObjectMissing(ObjectError):
    """The object an operation needs (a copy's source) does not exist."""


class ObjectTooLarge(ObjectError):
    """The object is larger than the caller's limit; it was not read whole."""


class StorageBackend(Protocol):
    """What the object-store mode needs from a storage: list, read, stat, copy, delete."""

    #: How this storage is named in findings and messages (``s3://bucket/prefix``, a path).
    location: str

    def list_folder(self, path: str) -> Listing:
        """One level below `path` (a folder path, see `folder_path`; "" for the root)."""
        ...

    def walk(self, path: str) -> Iterator[StoredObject]:
        """Every object below `path`, recursively, in key order, paginated (never all at once)."""
        ...

    def read(self, path: str, limit: int) -> bytes | None:
        """The object's bytes, or None when it does not exist; more than `limit` bytes raises
        `ObjectTooLarge` without reading them all."""
        ...

    def stat(self, path: str) -> StoredObject | None:
        """The object's size, or None when it does not exist."""
        ...

    def copy(self, src: str, dst: str) -> None:
        """Copy one object to `dst`, created or replaced (server-side where the storage can)."""
        ...

    def write(self, path: str, data: bytes) -> None:
        """Create or replace one small object (journals, links put back)."""
        ...

    def delete(self, path: str) -> None:
        """Delete one object; deleting a missing object is not an error."""
        ...


@runtime_checkable
class SupportsWriteNew(Protocol):
    """Optional beside `StorageBackend`: create an object only where none exists, atomically.

    Kept out of `StorageBackend` so a backend without it still is one; callers test
    ``isinstance(backend, SupportsWriteNew)`` and fall back to check-then-write.
    """

    def write_new(self, path: str, data: bytes) -> bool:
        """Create `path` holding `data` only if no object is there (S3: a PUT with
        ``IfNoneMatch='*'``); True if created, False if an object already existed."""
        ...


def object_path(path: str) -> str:
    """`path` checked as an object path (relative, no empty/``.``/``..`` part, no NUL)."""
    if not path or "\0" in path or path.startswith("/") or any(
            part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"unsafe storage path {path[:200]!r}")
    return path


def folder_path(path: str) -> str:
    """`path` checked as a folder path and returned without a trailing ``/`` ("" is the root)."""
    if path == "":
        return ""
    return object_path(path[:-1] if path.endswith("/") else path)


def join(folder: str, name: str) -> str:
    """A folder path and a name below it joined with ``/`` (the root is "")."""
    return f"{folder}/{name}" if folder else name
