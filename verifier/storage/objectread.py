"""Read distribution's storage from an object store into the records the filesystem reader makes.

`ObjectStoreReader` yields the same `BlobStore` and `RepoLinks` as the filesystem reader in
`verifier.storage.scan`, so the scan's checks run unchanged on a bucket. It reads through the
`StorageBackend` interface only, and at object-store speed: each blob prefix is one paginated
`walk`, the prefixes are walked concurrently, and each repository costs one `list_folder`, one
`walk` of ``_layers/``, one of ``_manifests/`` and one small read per link (read concurrently).

An object store has no empty folders, symlinks, permissions per file or FIFOs: a "folder" exists
exactly when some key lies below it, and the findings about symlinks never arise. A listing or
read that fails (any exception from the backend) becomes an ``unreadable_file`` finding and a
gap, exactly like an unreadable folder or file on disk; what was listed before a listing failed
is kept (it exists), and nothing under the failed part is judged absent.

Every finding's ``path`` reads ``<backend.location>/<key>``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from verifier.errors import StorageUnavailable, UsageError
from verifier.model.findings import Finding, Kind, Severity
from verifier.storage.backend import StorageBackend, StoredObject
from verifier.storage.checks import (
    check_link_content,
    invalid_name_finding,
    storage_finding,
    unreadable_finding,
)
from verifier.storage.fsio import FailReason, ReadFailure
from verifier.storage.gc.snapshot import sweep_path_error
from verifier.storage.layout import (
    ALGORITHM,
    REPO_INTERNAL_DIRS,
    V2_PARTS,
    Digest,
    LayoutKind,
    RegistryStorage,
    StorageLayout,
    digest_from_hex,
    digest_hex,
    is_hex2,
    is_hex64,
)
from verifier.storage.parallel import FolderWalk, walk_folders
from verifier.storage.records import (
    ALL_LINKS,
    BlobStore,
    BlobStoreState,
    ManifestReader,
    RepoLinks,
    SweepListing,
)

#: What the filesystem reader reads of a link file; longer content is judged on these bytes.
LINK_READ_LIMIT = 128
#: A link object up to this size is still read (and judged on its first bytes, as on disk);
#: a bigger one is reported as malformed without reading it.
OVERSIZED_LINK_READ_LIMIT = 4096
V2_KEY = "/".join(V2_PARTS)

_T = TypeVar("_T")
_R = TypeVar("_R")


# --- registries in a bucket ------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectRegistry:
    """One registry in an object store: `name` ("" for a single root) and where its keys live.

    `v2_key` is the key of its ``docker/registry/v2`` folder below the backend's root;
    `display_prefix` is how its root is named in findings (``s3://bucket/prefix[/name]``).
    """

    name: str
    v2_key: str
    display_prefix: str

    @classmethod
    def of(cls, name: str, location: str) -> ObjectRegistry:
        """The registry called `name` ("" for a single root) in the storage at `location`."""
        if name and (name in (".", "..") or "/" in name):
            raise ValueError(f"not a registry folder name: {name!r}")
        location = location.rstrip("/")
        if not name:
            return cls("", V2_KEY, location)
        return cls(name, f"{name}/{V2_KEY}", f"{location}/{name}" if location else name)

    def key(self, rel: str) -> str:
        """The backend key of `rel`, a path below ``docker/registry/v2`` ("" for v2 itself)."""
        return f"{self.v2_key}/{rel}" if rel else self.v2_key

    def display(self, rel: str) -> str:
        """How findings name `rel` (below ``docker/registry/v2``): ``<location>/<key>``."""
        v2 = f"{self.display_prefix}/{V2_KEY}" if self.display_prefix else V2_KEY
        return f"{v2}/{rel}" if rel else v2

    def key_of(self, display: str) -> str:
        """The backend key a displayed path of this registry names; ValueError if it is not one."""
        v2 = self.display("")
        if display != v2 and not display.startswith(v2 + "/"):
            raise ValueError(f"{display[:200]!r} is not inside {v2}")
        return self.key(display[len(v2) + 1 :])

    @property
    def storage(self) -> RegistryStorage:
        """The `RegistryStorage` the checks take: its `url` makes every path they show a
        ``<location>/docker/registry/v2/...`` one; its `root` is never read for a bucket."""
        return RegistryStorage(self.name, Path(self.name or "."), url=self.display_prefix)


def _has_keys_below(backend: StorageBackend, folder: str, name: str) -> bool:
    """Whether `folder` holds a sub-folder `name` (some key lies below ``folder/name/``)."""
    try:
        listing = backend.list_folder(folder)
    except Exception as exc:  # any backend error: the storage cannot be examined
        raise StorageUnavailable(
            f"{_join(backend.location, folder)}: cannot list: {_detail(exc)}"
        ) from exc
    return name in listing.folders


def detect_object_layout(backend: StorageBackend) -> list[ObjectRegistry]:
    """Find the registries below the backend's root (single root or multi-registry base).

    An empty or wrong prefix is refused like an unmounted volume (UsageError); a storage that
    cannot be listed raises StorageUnavailable.
    """
    location = backend.location.rstrip("/")
    expected = f"expected {location}/{V2_KEY} or {location}/<name>/{V2_KEY}"
    try:
        root = backend.list_folder("")
    except Exception as exc:  # any backend error: the storage cannot be examined
        raise StorageUnavailable(f"{location}: cannot list: {_detail(exc)}") from exc
    if not root.folders and not root.objects:
        raise UsageError(
            f"{location}: nothing stored there (empty bucket or wrong prefix?); {expected}"
        )
    if "docker" in root.folders and _has_keys_below(backend, "docker/registry", "v2"):
        return [ObjectRegistry.of("", location)]
    found = [
        ObjectRegistry.of(name, location)
        for name in root.folders
        if name not in ("", ".", "..") and _has_keys_below(backend, f"{name}/docker/registry", "v2")
    ]
    if found:
        return found
    hint = ""
    suffix = "/" + V2_KEY
    if location.endswith(suffix):
        hint = (
            f" (did you mean {location[: -len(suffix)]}? "
            "pass the prefix that holds docker/)"
        )
    raise UsageError(f"{location}: no registry storage found: {expected}{hint}")


def object_layout(backend: StorageBackend) -> StorageLayout:
    """`detect_object_layout` as the `StorageLayout` the scan, fix and gc-preview take."""
    found = detect_object_layout(backend)
    single = len(found) == 1 and not found[0].name
    return StorageLayout(
        Path("."),
        LayoutKind.SINGLE_ROOT if single else LayoutKind.MULTI_REGISTRY,
        tuple(r.storage for r in found),
        url=backend.location.rstrip("/"),
    )


# --- helpers ---------------------------------------------------------------------------------


def _join(location: str, key: str) -> str:
    location = location.rstrip("/")
    if not location:
        return key
    return f"{location}/{key}" if key else location


def _detail(exc: BaseException) -> str:
    """A one-line reason for a failed backend call (its message, else its type)."""
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def _ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[[_T], _R], items: Iterable[_T], window: int
) -> Iterator[_R]:
    """`fn` over `items` on the pool, results in input order, at most `window` in flight."""
    pending: deque[Future[_R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


@dataclass
class _LinkEntry:
    """A ``<hex>`` (or tag) folder seen in a listing: its link object, if any."""

    key: str | None = None
    size: int = 0
    #: keys lie below ``.../link/``: the link is a folder (unreadable, as on disk)
    link_is_folder: bool = False


@dataclass
class _LinkFolder:
    """One ``_layers`` or ``_manifests/revisions`` folder, as its keys showed it."""

    #: folder names other than sha256 directly inside (unsupported algorithms)
    other_algorithms: set[str] = field(default_factory=set)
    entries: dict[str, _LinkEntry] = field(default_factory=dict)

    def add(self, parts: list[str], obj: StoredObject) -> None:
        """Take one key, split below the folder (``sha256/<hex>/link`` -> 3 parts)."""
        if len(parts) < 2:
            return  # an object directly in the folder: not a folder, ignored as on disk
        if parts[0] != ALGORITHM:
            self.other_algorithms.add(parts[0])
            return
        if len(parts) < 3:
            return
        entry = self.entries.setdefault(parts[1], _LinkEntry())
        if parts[2] == "link":
            if len(parts) == 3:
                entry.key, entry.size = obj.path, obj.size
            else:
                entry.link_is_folder = True


@dataclass
class RepoDirs:
    """What garbage-collect needs to know of a repository folder beyond its `RepoLinks`.

    On an object store a folder exists exactly when some key lies below it. `has_tags_dir`
    is True when the ``_manifests`` listing failed (it cannot be disproved).
    """

    has_manifests_dir: bool
    has_tags_dir: bool
    has_layers_dir: bool
    #: objects directly in ``_manifests/tags`` (not tag folders), displayed paths, sorted
    stray_tag_entries: list[str] = field(default_factory=list)


@dataclass
class _RepoListing:
    """One repository's keys, as its two walks showed them (only what the records need)."""

    layers: _LinkFolder = field(default_factory=_LinkFolder)
    revisions: _LinkFolder = field(default_factory=_LinkFolder)
    tags: dict[str, _LinkEntry] = field(default_factory=dict)
    stray_tags: list[str] = field(default_factory=list)
    has_tags_dir: bool = False
    layers_error: str | None = None
    manifests_error: str | None = None


@dataclass
class _BlobEntry:
    data: StoredObject | None = None
    data_is_folder: bool = False


@dataclass
class _PrefixListing:
    prefix: str
    entries: dict[str, _BlobEntry]
    error: str | None = None


def _prefix_listing(prefix: str, walked: FolderWalk) -> _PrefixListing:
    """The blob folders one walk of ``blobs/sha256/<prefix>/`` found, and whether each holds
    a ``data`` object (or, wrongly, a ``data/`` folder)."""
    entries: dict[str, _BlobEntry] = {}
    start = len(walked.prefix) + 1
    for obj in walked.objects:
        parts = obj.path[start:].split("/")
        if len(parts) < 2 or not parts[-1]:
            continue  # an object directly in the prefix folder, or a folder marker
        entry = entries.setdefault(parts[0], _BlobEntry())
        if parts[1] == "data":
            if len(parts) == 2:
                entry.data = obj
            else:
                entry.data_is_folder = True
    error = None if walked.error is None else _detail(walked.error)
    return _PrefixListing(prefix, entries, error)


_ReadResult = bytes | ReadFailure


# --- the reader ------------------------------------------------------------------------------


class ObjectStoreReader:
    """The filesystem reader's three operations over a `StorageBackend`.

    `workers` bounds the threads listing blob prefixes and reading link objects.
    """

    def __init__(self, backend: StorageBackend, *, workers: int = 16) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.backend = backend
        self.workers = workers

    # -- registries -----------------------------------------------------------------------------

    def registry(self, registry: RegistryStorage | ObjectRegistry) -> ObjectRegistry:
        """Where `registry`'s keys live in this backend (derived from its name)."""
        if isinstance(registry, ObjectRegistry):
            return registry
        return ObjectRegistry.of(registry.name, self.backend.location)

    @staticmethod
    def _storage(registry: RegistryStorage | ObjectRegistry) -> RegistryStorage:
        return registry.storage if isinstance(registry, ObjectRegistry) else registry

    def _window(self) -> int:
        return self.workers * 4

    # -- blobs ----------------------------------------------------------------------------------

    def list_blobs(
        self, registry: RegistryStorage | ObjectRegistry, *, with_sizes: bool = False
    ) -> BlobStore:
        """List ``blobs/sha256`` once: one walk per prefix, the prefixes walked concurrently.

        A prefix that cannot be walked is a gap (`unlisted_prefixes`); a blob folder without
        a ``data`` object holds no blob. With no key below ``blobs/sha256`` the store is
        MISSING (an object store has no empty folder).
        """
        reg, storage = self.registry(registry), self._storage(registry)
        root_rel = f"blobs/{ALGORITHM}"
        try:
            top = self.backend.list_folder(reg.key(root_rel))
        except Exception as exc:  # any backend error is a gap, never a crash
            store = BlobStore(BlobStoreState.UNREADABLE)
            path = reg.display(root_rel)
            store.findings.append(unreadable_finding(storage, path, _detail(exc)))
            store.gaps.append(f"{path}: {_detail(exc)}")
            return store
        if not top.folders and not top.objects:
            return BlobStore(BlobStoreState.MISSING)
        store = BlobStore(BlobStoreState.OK)
        valid = [p for p in top.folders if is_hex2(p)]
        walks = walk_folders(
            self.backend, [reg.key(f"{root_rel}/{p}") for p in valid], self.workers
        )
        for prefix in top.folders:
            if not is_hex2(prefix):
                path = reg.display(f"{root_rel}/{prefix}")
                store.findings.append(invalid_name_finding(storage, path, "blob prefix"))
                continue
            listing = _prefix_listing(prefix, next(walks))
            self._take_prefix(reg, storage, store, listing, with_sizes=with_sizes)
        if not store.present and not store.unknown and not store.unlisted_prefixes:
            store.state = BlobStoreState.EMPTY
        return store

    @staticmethod
    def _take_prefix(
        reg: ObjectRegistry,
        storage: RegistryStorage,
        store: BlobStore,
        listing: _PrefixListing,
        *,
        with_sizes: bool,
    ) -> None:
        prefix = listing.prefix
        prefix_rel = f"blobs/{ALGORITHM}/{prefix}"
        for name in sorted(listing.entries):
            entry = listing.entries[name]
            if not is_hex64(name) or not name.startswith(prefix):
                store.findings.append(
                    invalid_name_finding(storage, reg.display(f"{prefix_rel}/{name}"), "blob")
                )
                continue
            if entry.data is not None:
                store.present.add(name)
                if with_sizes:
                    store.sizes[name] = entry.data.size
            elif entry.data_is_folder:
                store.unknown.add(name)
                path = reg.display(f"{prefix_rel}/{name}/data")
                store.findings.append(unreadable_finding(storage, path, "not a regular file"))
                store.gaps.append(f"{path}: not a regular file")
        if listing.error is not None:
            # What was listed before the failure exists; the rest of the prefix is unknown.
            path = reg.display(prefix_rel)
            store.unlisted_prefixes.add(prefix)
            store.findings.append(unreadable_finding(storage, path, listing.error))
            store.gaps.append(f"{path}: {listing.error}")

    # -- repositories ---------------------------------------------------------------------------

    def iter_repositories(
        self, registry: RegistryStorage | ObjectRegistry, findings: list[Finding]
    ) -> Iterator[RepoLinks]:
        """Walk ``repositories/`` (nested names allowed) and yield each repository, read.

        Same repositories, order and records as the filesystem reader's `iter_repositories`.
        """
        for links, _ in self.iter_repositories_with_dirs(registry, findings):
            yield links

    def iter_repositories_with_dirs(
        self, registry: RegistryStorage | ObjectRegistry, findings: list[Finding]
    ) -> Iterator[tuple[RepoLinks, RepoDirs]]:
        """`iter_repositories`, each repository paired with its `RepoDirs` (for GC models).

        One repository is read at a time: its listings are dropped once it is yielded.
        """
        reg, storage = self.registry(registry), self._storage(registry)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="objread-repos") as pool:
            stack: list[str] = [""]
            while stack:
                name = stack.pop()
                rel = f"repositories/{name}" if name else "repositories"
                try:
                    listing = self.backend.list_folder(reg.key(rel))
                except Exception as exc:  # any backend error: this folder is a gap
                    findings.append(
                        unreadable_finding(storage, reg.display(rel), _detail(exc), name)
                    )
                    continue
                internal = {f for f in listing.folders if f in REPO_INTERNAL_DIRS}
                children = [
                    f"{name}/{f}" if name else f
                    for f in listing.folders
                    if f and not f.startswith("_") and f not in (".", "..")
                ]
                # Reverse so the stack pops children in sorted order.
                stack.extend(reversed(children))
                if internal and name:
                    yield self._read_repository(pool, reg, storage, name, internal)

    def read_repository(
        self, registry: RegistryStorage | ObjectRegistry, name: str
    ) -> tuple[RepoLinks, RepoDirs]:
        """Read one repository by name (its folder listed afresh; a listing error propagates)."""
        reg, storage = self.registry(registry), self._storage(registry)
        listing = self.backend.list_folder(reg.key(f"repositories/{name}"))
        internal = {f for f in listing.folders if f in REPO_INTERNAL_DIRS}
        with ThreadPoolExecutor(self.workers, thread_name_prefix="objread-repo") as pool:
            return self._read_repository(pool, reg, storage, name, internal)

    def _read_repository(
        self,
        pool: ThreadPoolExecutor,
        reg: ObjectRegistry,
        storage: RegistryStorage,
        name: str,
        internal: set[str],
    ) -> tuple[RepoLinks, RepoDirs]:
        base = f"repositories/{name}"
        repo = RepoLinks(name, reg.display(base))
        walks: list[Future[None]] = []
        seen = _RepoListing()
        if "_layers" in internal:
            walks.append(pool.submit(self._walk_layers, reg, base, seen))
        if "_manifests" in internal:
            walks.append(pool.submit(self._walk_manifests, reg, base, seen))
        for walk in walks:
            walk.result()
        dirs = RepoDirs(
            has_manifests_dir="_manifests" in internal,
            has_tags_dir=seen.has_tags_dir
            or ("_manifests" in internal and seen.manifests_error is not None),
            has_layers_dir="_layers" in internal,
            stray_tag_entries=sorted(
                reg.display(f"{base}/_manifests/tags/{s}") for s in seen.stray_tags
            ),
        )
        # The records the checks and the GC model read carry the same flags.
        repo.has_manifests_dir = dirs.has_manifests_dir
        repo.has_tags_dir = dirs.has_tags_dir
        repo.has_layers_dir = dirs.has_layers_dir
        repo.stray_tag_entries = list(dirs.stray_tag_entries)
        jobs: list[_LinkEntry] = []
        jobs.extend(e for e in seen.layers.entries.values() if e.key is not None)
        jobs.extend(e for e in seen.revisions.entries.values() if e.key is not None)
        jobs.extend(e for e in seen.tags.values() if e.key is not None)
        # Sorted so the reads go out in key order whatever the walks' interleaving.
        jobs.sort(key=lambda e: e.key or "")
        contents: dict[str, _ReadResult] = {}
        for entry, content in zip(
            jobs, _ordered_map(pool, self._read_link, jobs, self._window()), strict=True
        ):
            contents[entry.key or ""] = content
        if "_layers" in internal:
            if seen.layers_error is not None:
                path = reg.display(f"{base}/_layers")
                repo.findings.append(unreadable_finding(storage, path, seen.layers_error, name))
                repo.bad_layer_links.add(ALL_LINKS)
            repo.layers, repo.layer_link_files = self._judge_links(
                reg, storage, repo, f"{base}/_layers", seen.layers, contents, "layer",
                repo.bad_layer_links,
            )
        if "_manifests" in internal:
            if seen.manifests_error is not None:
                path = reg.display(f"{base}/_manifests")
                repo.findings.append(
                    unreadable_finding(storage, path, seen.manifests_error, name)
                )
            repo.revisions, _ = self._judge_links(
                reg, storage, repo, f"{base}/_manifests/revisions", seen.revisions, contents,
                "revision",
            )
            self._judge_tags(
                reg, storage, repo, f"{base}/_manifests/tags", seen, contents,
                complete=seen.manifests_error is None,
            )
        return repo, dirs

    def _walk_layers(self, reg: ObjectRegistry, base: str, seen: _RepoListing) -> None:
        """One walk of ``_layers/`` (runs on the pool)."""
        folder = reg.key(f"{base}/_layers")
        start = len(folder) + 1
        try:
            for obj in self.backend.walk(folder):
                parts = obj.path[start:].split("/")
                if parts[-1]:
                    seen.layers.add(parts, obj)
        except Exception as exc:  # any backend error: the rest of the folder is a gap
            seen.layers_error = _detail(exc)

    def _walk_manifests(self, reg: ObjectRegistry, base: str, seen: _RepoListing) -> None:
        """One walk of ``_manifests/`` (runs on the pool): revisions, tags, stray tag files."""
        folder = reg.key(f"{base}/_manifests")
        start = len(folder) + 1
        try:
            for obj in self.backend.walk(folder):
                parts = obj.path[start:].split("/")
                if len(parts) < 2 or not parts[-1]:
                    continue
                if parts[0] == "revisions":
                    seen.revisions.add(parts[1:], obj)
                elif parts[0] == "tags":
                    seen.has_tags_dir = True
                    if len(parts) == 2:
                        seen.stray_tags.append(parts[1])
                        continue
                    entry = seen.tags.setdefault(parts[1], _LinkEntry())
                    if parts[2:4] == ["current", "link"]:
                        if len(parts) == 4:
                            entry.key, entry.size = obj.path, obj.size
                        else:
                            entry.link_is_folder = True
        except Exception as exc:  # any backend error: the rest of the folder is a gap
            seen.manifests_error = _detail(exc)

    def _read_link(self, entry: _LinkEntry) -> _ReadResult:
        """A link object's first bytes, as the filesystem reader reads them (runs on the pool)."""
        assert entry.key is not None
        if entry.size > OVERSIZED_LINK_READ_LIMIT:
            return ReadFailure(FailReason.TOO_LARGE, f"{entry.size} bytes")
        try:
            data = self.backend.read(entry.key, max(LINK_READ_LIMIT, entry.size))
        except Exception as exc:  # any backend error: this link is unreadable
            return ReadFailure(FailReason.UNREADABLE, _detail(exc))
        if data is None:
            return ReadFailure(FailReason.MISSING, "gone since it was listed")
        return data[:LINK_READ_LIMIT]

    @staticmethod
    def _link_content(
        entry: _LinkEntry, contents: dict[str, _ReadResult]
    ) -> _ReadResult:
        if entry.key is not None:
            return contents[entry.key]
        if entry.link_is_folder:
            return ReadFailure(FailReason.UNREADABLE, "Is a directory")
        return ReadFailure(FailReason.MISSING)

    def _judge_links(
        self,
        reg: ObjectRegistry,
        storage: RegistryStorage,
        repo: RepoLinks,
        folder_rel: str,
        folder: _LinkFolder,
        contents: dict[str, _ReadResult],
        what: str,
        bad: set[str] | None = None,
    ) -> tuple[dict[str, str], int]:
        """The filesystem reader's `_read_links` over listed keys: valid hex -> path, files."""
        for algo in sorted(folder.other_algorithms):
            repo.findings.append(
                storage_finding(
                    Kind.INVALID_LINK,
                    Severity.ERROR,
                    f"unsupported digest algorithm folder {algo[:80]!r}",
                    storage,
                    repository=repo.name,
                    path=reg.display(f"{folder_rel}/{algo}"),
                )
            )
        valid: dict[str, str] = {}
        files = 0
        algo_rel = f"{folder_rel}/{ALGORITHM}"
        for name in sorted(folder.entries):
            if not is_hex64(name):
                path = reg.display(f"{algo_rel}/{name}")
                repo.findings.append(invalid_name_finding(storage, path, what, repo.name))
                continue
            link = reg.display(f"{algo_rel}/{name}/link")
            content = self._link_content(folder.entries[name], contents)
            if isinstance(content, ReadFailure):
                if content.reason is FailReason.MISSING:
                    continue
                if content.reason is FailReason.TOO_LARGE:
                    files += 1  # it exists and was examined, as its first bytes are on disk
                if bad is not None:
                    bad.add(name)
                repo.findings.append(
                    self._failure_finding(storage, link, content, what, repo.name, name)
                )
                continue
            files += 1
            problem = check_link_content(content, name)
            if problem is None:
                valid[name] = link
                continue
            if bad is not None:
                bad.add(name)
            repo.findings.append(
                storage_finding(
                    Kind.INVALID_LINK,
                    Severity.ERROR,
                    f"{what} link {problem}",
                    storage,
                    repository=repo.name,
                    digest=digest_from_hex(name),
                    path=link,
                    expected_digest=digest_from_hex(name),
                    actual_digest=content[:80].decode("ascii", "replace"),
                )
            )
        return valid, files

    @staticmethod
    def _failure_finding(
        storage: RegistryStorage,
        path: str,
        failure: ReadFailure,
        what: str,
        repository: str,
        hex_: str | None = None,
        tag: str = "",
    ) -> Finding:
        if failure.reason is FailReason.TOO_LARGE:
            # On disk only its first bytes would be read, and they are not a digest either.
            digest = digest_from_hex(hex_) if hex_ is not None else None
            return storage_finding(
                Kind.INVALID_LINK,
                Severity.ERROR,
                f"{what} link content is {failure.detail}, longer than any digest",
                storage,
                repository=repository,
                digest=digest,
                path=path,
                reference=tag,
                expected_digest=digest,
            )
        return unreadable_finding(storage, path, failure.detail, repository)

    def _judge_tags(
        self,
        reg: ObjectRegistry,
        storage: RegistryStorage,
        repo: RepoLinks,
        tags_rel: str,
        seen: _RepoListing,
        contents: dict[str, _ReadResult],
        *,
        complete: bool,
    ) -> None:
        """The filesystem reader's `_read_tags` over listed keys."""
        for tag in sorted(seen.tags):
            link = reg.display(f"{tags_rel}/{tag}/current/link")
            content = self._link_content(seen.tags[tag], contents)
            if isinstance(content, ReadFailure):
                if content.reason is FailReason.MISSING:
                    # A tag listed before a failed listing may have had its link unlisted.
                    if complete:
                        repo.tags[tag] = (None, link)
                else:
                    repo.findings.append(
                        self._failure_finding(
                            storage, link, content, f"tag {tag!r} current", repo.name, tag=tag
                        )
                    )
                continue
            problem = check_link_content(content, None)
            if problem is not None:
                repo.findings.append(
                    storage_finding(
                        Kind.INVALID_LINK,
                        Severity.ERROR,
                        f"tag {tag!r} current link {problem}",
                        storage,
                        repository=repo.name,
                        path=link,
                        reference=tag,
                        actual_digest=content[:80].decode("ascii", "replace"),
                    )
                )
                continue
            repo.tags[tag] = (content.decode("ascii")[len(ALGORITHM) + 1 :], link)

    # -- manifests ------------------------------------------------------------------------------

    def read_sweep_listing(
        self, registry: RegistryStorage | ObjectRegistry, blobs: BlobStore
    ) -> SweepListing:
        """What garbage-collect's sweep meets besides `blobs`: blobs under other algorithms
        (``blobs/<algorithm>/<xx>/<hex>/data``) and the first key that would stop it."""
        reg = self.registry(registry)
        others: dict[str, int] = {}
        error: str | None = None
        try:
            folders = self.backend.list_folder(reg.key("blobs")).folders
            algos = [a for a in folders if a != ALGORITHM]
        except Exception:  # the scan reports the blob store itself; the sweep sees nothing more
            algos = []
        for algo in sorted(algos):
            try:
                objects = list(self.backend.walk(reg.key(f"blobs/{algo}")))
            except Exception:  # as on disk: an unlistable folder adds no candidate
                continue
            base = reg.key("blobs") + "/"
            for obj in objects:
                parts = obj.path[len(base) :].split("/")
                if parts[-1] != "data":
                    continue
                why = sweep_path_error(parts[:-1])
                if why is None:
                    others[f"{algo}:{parts[-2]}"] = obj.size
                elif error is None:
                    error = f"{_join(self.backend.location, obj.path)}: {why}"
        if error is None:
            for f in blobs.findings:
                if f.kind is not Kind.INVALID_LINK or not f.path:
                    continue
                try:
                    key = reg.key_of(f.path)
                    if any(o.path.endswith("/data") for o in self.backend.walk(key)):
                        error = f"{f.path}: invalid checksum digest format"
                        break
                except Exception:  # not provable either way: no sweep error claimed
                    continue
        return SweepListing(others, error)

    def manifest_reader(
        self, registry: RegistryStorage | ObjectRegistry, limit: int, *, follow: bool = True
    ) -> ManifestReader:
        """Reads a manifest's blob data by digest, at most `limit` bytes, as the checks need
        (`follow` is for the filesystem's symlinks; an object store has none)."""
        reg = self.registry(registry)
        backend = self.backend

        def read(digest: Digest) -> bytes | ReadFailure:
            hex_ = digest_hex(digest)
            key = reg.key(f"blobs/{ALGORITHM}/{hex_[:2]}/{hex_}/data")
            try:
                data = backend.read(key, limit)
            except Exception as exc:  # any backend error: unreadable, or too large
                try:
                    st = backend.stat(key)
                except Exception:  # the stat only refines the reason
                    st = None
                if st is not None and st.size > limit:
                    return ReadFailure(FailReason.TOO_LARGE, f"{st.size} bytes > {limit}")
                return ReadFailure(FailReason.UNREADABLE, _detail(exc))
            if data is None:
                return ReadFailure(FailReason.MISSING, "no such object")
            return data

        return read


__all__ = [
    "LINK_READ_LIMIT",
    "OVERSIZED_LINK_READ_LIMIT",
    "ObjectRegistry",
    "ObjectStoreReader",
    "RepoDirs",
    "detect_object_layout",
]
