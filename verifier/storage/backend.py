"""The storage a registry keeps its data in, seen through one small interface.

distribution's storage drivers (``filesystem``, ``s3``, ...) all offer the same few operations
over slash-separated paths below the driver's root; the object-store mode reads and repairs
through the same few, so the readers, checks, GC models and repair logic never know whether they
run on a local folder or a bucket. Paths here are always relative to the backend's root and use
``/`` (for example ``docker/registry/v2/blobs/sha256/ab/<hex>/data``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


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


class StorageBackend(Protocol):
    """What the object-store mode needs from a storage: list, read, stat, copy, delete."""

    #: How this storage is named in findings and messages (``s3://bucket/prefix``, a path).
    location: str

    def list_folder(self, path: str) -> Listing:
        """One level below `path` (a folder path, no trailing slash; "" for the root)."""
        ...

    def walk(self, path: str) -> Iterator[StoredObject]:
        """Every object below `path`, recursively, in key order, paginated (never all at once)."""
        ...

    def read(self, path: str, limit: int) -> bytes | None:
        """The object's bytes, or None when it does not exist; more than `limit` bytes raises."""
        ...

    def stat(self, path: str) -> StoredObject | None:
        """The object's size, or None when it does not exist."""
        ...

    def copy(self, src: str, dst: str) -> None:
        """Copy one object to a new path (server-side where the storage can)."""
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
