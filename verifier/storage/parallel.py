"""Listing many folders of one storage at once, with a bounded pool of threads.

One sequential walk of a big bucket is a chain of ListObjectsV2 pages, each waiting for the one
before (the continuation token). distribution's layout splits into independent subtrees --
``blobs/sha256/00`` ... ``ff`` and one per top-level repository folder -- whose page chains can
run side by side. `walk_folders` runs at most `workers` of them at a time and hands back each
folder's objects in order, so memory holds only the folders in flight. The object-store reader
lists every blob store this way.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from verifier.storage.backend import StorageBackend, StoredObject, folder_path, join
from verifier.storage.layout import ALGORITHM, V2_PARTS

#: Where distribution's tree starts below a storage root.
V2 = "/".join(V2_PARTS)


class _Stopped(Exception):
    """The consumer went away: a walk still running gives up between objects."""


def blob_prefixes(root: str = "") -> list[str]:
    """The 256 blob folders ``<root>/docker/registry/v2/blobs/sha256/<00..ff>/`` in key order."""
    base = join(folder_path(root), f"{V2}/blobs/{ALGORITHM}")
    return [f"{base}/{i:02x}/" for i in range(256)]


def repository_prefixes(backend: StorageBackend, root: str = "") -> list[str]:
    """One folder per top-level name under ``repositories/`` (one listing request or scan)."""
    base = join(folder_path(root), f"{V2}/repositories")
    return [f"{base}/{name}/" for name in backend.list_folder(base).folders]


def registry_prefixes(backend: StorageBackend, root: str = "") -> list[str]:
    """Every blob folder and top-level repository folder of one registry root."""
    return blob_prefixes(root) + repository_prefixes(backend, root)


@dataclass(frozen=True)
class FolderWalk:
    """One folder's walk: its objects in key order, and the error that cut it short, if any
    (what was listed before the error is kept)."""

    prefix: str
    objects: list[StoredObject]
    error: Exception | None = None


def walk_folders(backend: StorageBackend, prefixes: Iterable[str],
                 workers: int = 16) -> Iterator[FolderWalk]:
    """Each folder's `FolderWalk`, in the order given, at most `workers` walks running.

    Each walk is paginated (`backend.walk`); a folder that fails does not stop the others.
    Results are handed back in order, so at most `workers` folders' objects are held at once.
    Closing the iterator early stops the running walks at their next object and waits for
    them.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    stop = threading.Event()

    def walk_one(prefix: str) -> FolderWalk:
        out: list[StoredObject] = []
        try:
            for obj in backend.walk(prefix):
                if stop.is_set():
                    raise _Stopped()
                out.append(obj)
        except _Stopped:
            raise
        except Exception as exc:  # the caller decides what a failed folder means
            return FolderWalk(prefix, out, exc)
        return FolderWalk(prefix, out)

    pending = iter(prefixes)
    running: deque[Future[FolderWalk]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="storage-list") as pool:
        try:
            for prefix in pending:
                running.append(pool.submit(walk_one, prefix))
                if len(running) >= workers:
                    break
            while running:
                walked = running.popleft().result()
                for nxt in pending:
                    running.append(pool.submit(walk_one, nxt))
                    break
                yield walked
        finally:
            stop.set()
            for future in running:
                future.cancel()


def walk_parallel(backend: StorageBackend, prefixes: Iterable[str],
                  workers: int = 16) -> Iterator[tuple[str, list[StoredObject]]]:
    """(prefix, its objects in key order) for each folder, in the order given
    (`walk_folders`); the first folder that fails raises its error here and stops the rest."""
    for walked in walk_folders(backend, prefixes, workers):
        if walked.error is not None:
            raise walked.error
        yield walked.prefix, walked.objects
