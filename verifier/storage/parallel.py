"""Listing many folders of one storage at once, with a bounded pool of threads.

One sequential walk of a big bucket is a chain of ListObjectsV2 pages, each waiting for the one
before (the continuation token). distribution's layout splits into independent subtrees --
``blobs/sha256/00`` ... ``ff`` and one per top-level repository folder -- whose page chains can
run side by side. `walk_parallel` runs at most `workers` of them at a time and hands back each
folder's objects as soon as that folder is complete, so memory holds only the folders in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

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


def walk_parallel(backend: StorageBackend, prefixes: Iterable[str],
                  workers: int = 16) -> Iterator[tuple[str, list[StoredObject]]]:
    """(prefix, its objects in key order) for each folder, in completion order.

    At most `workers` folders are walked at once (each one paginated, as `backend.walk`); the
    first error stops the rest and is raised here. Closing the iterator early stops the
    running walks at their next object and waits for them.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    stop = threading.Event()

    def walk_one(prefix: str) -> list[StoredObject]:
        out: list[StoredObject] = []
        for obj in backend.walk(prefix):
            if stop.is_set():
                raise _Stopped()
            out.append(obj)
        return out

    pending = iter(prefixes)
    running: dict[Future[list[StoredObject]], str] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="storage-list") as pool:
        try:
            for prefix in pending:
                running[pool.submit(walk_one, prefix)] = prefix
                if len(running) >= workers:
                    break
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: running[f]):
                    prefix = running.pop(future)
                    objects = future.result()  # re-raises the walk's error here
                    for nxt in pending:
                        running[pool.submit(walk_one, nxt)] = nxt
                        break
                    yield prefix, objects
        finally:
            stop.set()
            for future in running:
                future.cancel()
