"""An in-memory `StorageBackend`: the storage interface's contract over a dict of key -> bytes.

Not a mock of any SDK: it behaves as the interface promises (folders exist exactly when a key
lies below them, listings sorted, `walk` paginated and in key order, `read` bounded), counts
its calls, tracks how many run at once, and fails on request for chosen key prefixes.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from verifier.errors import StorageUnavailable
from verifier.storage.backend import Listing, StoredObject


class MemoryBackend:
    """Objects in a dict; keys are ``/``-separated paths below the root, no leading slash."""

    def __init__(
        self,
        objects: dict[str, bytes] | None = None,
        *,
        location: str = "mem://bucket/prefix",
        page_size: int = 3,
        delay: float = 0.0,
    ) -> None:
        self.location = location
        self.objects: dict[str, bytes] = dict(objects or {})
        self.page_size = page_size
        #: seconds each call sleeps (to make concurrency observable)
        self.delay = delay
        #: key prefix -> (message, operations or None for all): calls touching it raise
        self.failures: dict[str, tuple[str, frozenset[str] | None]] = {}
        self.calls: Counter[str] = Counter()
        #: every path passed to each call, in order
        self.paths: dict[str, list[str]] = {}
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    # -- failure injection and accounting --------------------------------------------------------

    def fail(
        self, prefix: str, message: str = "injected failure", *, ops: set[str] | None = None
    ) -> None:
        """Make calls on `prefix` or below raise StorageUnavailable(`message`).

        `ops` limits it to some operations (``read``, ``walk``, ...); a walk also fails when
        it reaches a key below `prefix`, after yielding the keys before it.
        """
        self.failures[prefix] = (message, frozenset(ops) if ops is not None else None)

    def _check(self, op: str, path: str) -> None:
        for prefix, (message, ops) in self.failures.items():
            if ops is not None and op not in ops:
                continue
            if not prefix or path == prefix or path.startswith(prefix + "/"):
                raise StorageUnavailable(f"{message}: {path}")

    def _enter(self, op: str, path: str) -> None:
        with self._lock:
            self.calls[op] += 1
            self.paths.setdefault(op, []).append(path)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        if self.delay:
            time.sleep(self.delay)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    # -- the interface -----------------------------------------------------------------------------

    def _below(self, path: str) -> list[str]:
        prefix = path + "/" if path else ""
        return sorted(k for k in self.objects if k.startswith(prefix))

    def list_folder(self, path: str) -> Listing:
        """One level below `path`: sub-folder names and the objects directly in it, sorted."""
        self._enter("list_folder", path)
        try:
            self._check("list_folder", path)
            start = len(path) + 1 if path else 0
            folders: set[str] = set()
            objects: list[StoredObject] = []
            for key in self._below(path):
                rest = key[start:]
                head, sep, _ = rest.partition("/")
                if sep:
                    folders.add(head)
                else:
                    objects.append(StoredObject(key, len(self.objects[key])))
            return Listing(sorted(folders), objects)
        finally:
            self._leave()

    def walk(self, path: str) -> Iterator[StoredObject]:
        """Every object below `path` in key order, one page at a time (fails mid-walk too)."""
        self._enter("walk", path)
        try:
            self._check("walk", path)
            keys = self._below(path)
        finally:
            self._leave()
        for i in range(0, len(keys), self.page_size):
            self._enter("walk_page", path)
            try:
                page = keys[i : i + self.page_size]
                for key in page:
                    self._check("walk", key)
            finally:
                self._leave()
            for key in page:
                yield StoredObject(key, len(self.objects[key]))

    def read(self, path: str, limit: int) -> bytes | None:
        """The object's bytes or None; more than `limit` bytes raises ValueError."""
        self._enter("read", path)
        try:
            self._check("read", path)
            data = self.objects.get(path)
            if data is not None and len(data) > limit:
                raise ValueError(f"{path}: {len(data)} bytes > {limit}")
            return data
        finally:
            self._leave()

    def stat(self, path: str) -> StoredObject | None:
        """The object's size, or None."""
        self._enter("stat", path)
        try:
            self._check("stat", path)
            data = self.objects.get(path)
            return None if data is None else StoredObject(path, len(data))
        finally:
            self._leave()

    def copy(self, src: str, dst: str) -> None:
        """Copy one object."""
        self._enter("copy", src)
        try:
            self._check("copy", src)
            self._check("copy", dst)
            self.objects[dst] = self.objects[src]
        finally:
            self._leave()

    def write(self, path: str, data: bytes) -> None:
        """Create or replace one object."""
        self._enter("write", path)
        try:
            self._check("write", path)
            self.objects[path] = bytes(data)
        finally:
            self._leave()

    def delete(self, path: str) -> None:
        """Delete one object (missing is fine)."""
        self._enter("delete", path)
        try:
            self._check("delete", path)
            self.objects.pop(path, None)
        finally:
            self._leave()


def load_tree(
    root: Path, *, location: str = "mem://bucket/prefix", page_size: int = 3
) -> MemoryBackend:
    """Every regular file below `root` as an object keyed by its path relative to `root`."""
    objects: dict[str, bytes] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                objects[path.relative_to(root).as_posix()] = path.read_bytes()
    return MemoryBackend(objects, location=location, page_size=page_size)
