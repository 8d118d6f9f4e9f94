"""Read distribution's storage from a local folder into records (`verifier.storage.records`).

Speed: each registry's blob store is listed once (``os.scandir`` plus one ``lstat`` of each
blob's ``data``) into a set, so every later link check is a set lookup and the cost grows
linearly with the number of files. Link files are read with ``O_NOFOLLOW``.

Reading only: what is wrong is decided by `verifier.storage.checks`, whose finding builders
word what this reader meets (symlinks, unreadable files, malformed links) the same way for
every backend. An object-store reader offers the same functions over its listings.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator

from verifier.model.findings import Finding, Kind
from verifier.storage.checks import (
    check_link,
    check_tag_link,
    invalid_name_finding,
    read_failure_finding,
    symlink_finding,
    unreadable_finding,
    unsupported_algorithm_finding,
)
from verifier.storage.fsio import read_link_file, read_regular_file, sha256_file
from verifier.storage.gc.snapshot import sweep_path_error
from verifier.storage.layout import (
    ALGORITHM,
    REPO_INTERNAL_DIRS,
    Digest,
    RegistryStorage,
    blob_data_path,
    blobs_dir,
    digest_from_hex,
    is_hex2,
    is_hex64,
    repositories_dir,
)
from verifier.storage.records import (
    ALL_LINKS,
    BlobStore,
    BlobStoreState,
    FailReason,
    ManifestReader,
    ReadFailure,
    RepoLinks,
    SweepListing,
)


def _scandir_sorted(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def _dangling(path: str) -> bool:
    """After a following stat said ENOENT: whether `path` itself is a symlink (dangling)."""
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def list_blobs(registry: RegistryStorage, *, with_sizes: bool = False) -> BlobStore:
    """List ``blobs/sha256`` once: one scandir per prefix folder, one stat per blob's data.

    Symlinks are followed here, as distribution's filesystem driver follows them (``os.Stat``):
    a prefix or blob folder moved to another disk and symlinked back holds present blobs.
    Anything that cannot be read (or a symlink whose target is missing: an unmounted disk)
    is a gap; the listing is then incomplete and absences under it are not proven.
    """
    root = str(blobs_dir(registry.v2))
    try:
        root_st = os.stat(root)
    except FileNotFoundError:
        if _dangling(root):
            store = BlobStore(BlobStoreState.UNREADABLE)
            store.findings.append(unreadable_finding(registry, root, "symlink target missing"))
            store.gaps.append(f"{root}: symlink target missing")
            return store
        return BlobStore(BlobStoreState.MISSING)
    except OSError as exc:
        store = BlobStore(BlobStoreState.UNREADABLE)
        store.findings.append(unreadable_finding(registry, root, exc.strerror or str(exc)))
        store.gaps.append(f"{root}: {exc.strerror or exc}")
        return store
    try:
        prefixes = _scandir_sorted(root)
    except OSError as exc:
        store = BlobStore(BlobStoreState.UNREADABLE)
        store.findings.append(unreadable_finding(registry, root, exc.strerror or str(exc)))
        store.gaps.append(f"{root}: {exc.strerror or exc}")
        return store
    store = BlobStore(BlobStoreState.OK)
    if not stat.S_ISDIR(root_st.st_mode):
        store.state = BlobStoreState.UNREADABLE
        store.gaps.append(f"{root}: not a directory")
        return store
    if os.path.islink(root):
        store.followed_symlinks.append(root)
    present, unknown, findings = store.present, store.unknown, store.findings

    def gap(path: str, detail: str) -> None:
        findings.append(unreadable_finding(registry, path, detail))
        store.gaps.append(f"{path}: {detail}")

    for prefix in prefixes:
        is_link = prefix.is_symlink()
        try:
            is_dir = prefix.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            if is_link:
                if is_hex2(prefix.name):
                    store.unlisted_prefixes.add(prefix.name)
                    gap(prefix.path, "symlink whose target is missing or not a folder")
                else:
                    findings.append(symlink_finding(registry, prefix.path))
            continue
        if not is_hex2(prefix.name):
            findings.append(invalid_name_finding(registry, prefix.path, "blob prefix"))
            continue
        if is_link:
            store.followed_symlinks.append(prefix.path)
        try:
            entries = _scandir_sorted(prefix.path)
        except OSError as exc:
            store.unlisted_prefixes.add(prefix.name)
            gap(prefix.path, exc.strerror or str(exc))
            continue
        for entry in entries:
            name = entry.name
            entry_link = entry.is_symlink()
            try:
                entry_dir = entry.is_dir()
            except OSError:
                entry_dir = False
            if not entry_dir:
                if entry_link:
                    if is_hex64(name) and name.startswith(prefix.name):
                        unknown.add(name)
                        gap(entry.path, "symlink whose target is missing or not a folder")
                    else:
                        findings.append(symlink_finding(registry, entry.path))
                continue
            if not is_hex64(name) or not name.startswith(prefix.name):
                findings.append(invalid_name_finding(registry, entry.path, "blob"))
                continue
            if entry_link:
                store.followed_symlinks.append(entry.path)
            data = entry.path + "/data"
            try:
                st = os.stat(data)
            except FileNotFoundError:
                if _dangling(data):
                    unknown.add(name)
                    gap(data, "symlink whose target is missing")
                continue
            except OSError as exc:
                unknown.add(name)
                gap(data, exc.strerror or str(exc))
                continue
            if stat.S_ISREG(st.st_mode):
                present.add(name)
                if with_sizes:
                    store.sizes[name] = st.st_size
            else:
                unknown.add(name)
                gap(data, "not a regular file")
    if not present and not unknown and not store.unlisted_prefixes:
        store.state = BlobStoreState.EMPTY
    return store


# --- repositories ---------------------------------------------------------------------------


def iter_repositories(registry: RegistryStorage, findings: list[Finding]) -> Iterator[RepoLinks]:
    """Walk ``repositories/`` (nested names allowed) and yield each repository, read.

    A folder is a repository when it holds ``_layers``, ``_manifests`` or ``_uploads``; its
    other sub-folders may be repositories too (``a`` and ``a/b`` can both exist).
    """
    root = str(repositories_dir(registry.v2))
    try:
        if stat.S_ISLNK(os.lstat(root).st_mode):
            findings.append(symlink_finding(registry, root))
            return
    except FileNotFoundError:
        return
    except OSError as exc:
        findings.append(unreadable_finding(registry, root, exc.strerror or str(exc)))
        return
    stack: list[tuple[str, str]] = [(root, "")]
    while stack:
        path, name = stack.pop()
        try:
            entries = _scandir_sorted(path)
        except OSError as exc:
            findings.append(unreadable_finding(registry, path, exc.strerror or str(exc), name))
            continue
        internal: dict[str, str] = {}
        children: list[tuple[str, str]] = []
        layers_unread = False
        for entry in entries:
            if entry.is_symlink():
                findings.append(symlink_finding(registry, entry.path, name))
                layers_unread = layers_unread or entry.name == "_layers"
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name.startswith("_"):
                if entry.name in REPO_INTERNAL_DIRS:
                    internal[entry.name] = entry.path
                continue
            child_name = f"{name}/{entry.name}" if name else entry.name
            children.append((entry.path, child_name))
        # Reverse so the stack pops children in sorted order.
        stack.extend(reversed(children))
        if (internal or layers_unread) and name:
            yield read_repository(registry, name, path, internal, layers_unread=layers_unread)


def _algo_dir(registry: RegistryStorage, parent: str, repo: RepoLinks) -> str | None:
    """``<parent>/sha256`` if it is a real folder; other entries are reported as invalid."""
    try:
        entries = _scandir_sorted(parent)
    except FileNotFoundError:
        return None
    except OSError as exc:
        repo.findings.append(
            unreadable_finding(registry, parent, exc.strerror or str(exc), repo.name)
        )
        return None
    found = None
    for entry in entries:
        if entry.is_symlink():
            repo.findings.append(symlink_finding(registry, entry.path, repo.name))
        elif entry.name == ALGORITHM and entry.is_dir(follow_symlinks=False):
            found = entry.path
        elif entry.is_dir(follow_symlinks=False):
            repo.findings.append(
                unsupported_algorithm_finding(registry, entry.path, entry.name, repo.name)
            )
    return found


def _read_links(
    registry: RegistryStorage,
    parent: str,
    repo: RepoLinks,
    what: str,
    bad: set[str] | None = None,
) -> tuple[dict[str, str], int]:
    """Read every ``<parent>/sha256/<hex>/link``; return valid hex -> path, and files read."""
    valid: dict[str, str] = {}
    seen = len(repo.findings)
    algo = _algo_dir(registry, parent, repo)
    if algo is None:
        if bad is not None and any(
            f.kind in (Kind.UNREADABLE_FILE, Kind.UNEXPECTED_SYMLINK) for f in repo.findings[seen:]
        ):
            bad.add(ALL_LINKS)
        return valid, 0
    try:
        entries = _scandir_sorted(algo)
    except OSError as exc:
        repo.findings.append(
            unreadable_finding(registry, algo, exc.strerror or str(exc), repo.name)
        )
        if bad is not None:
            bad.add(ALL_LINKS)
        return valid, 0
    files = 0
    for entry in entries:
        name = entry.name
        if not entry.is_dir(follow_symlinks=False):
            if entry.is_symlink():
                repo.findings.append(symlink_finding(registry, entry.path, repo.name))
            continue
        if not is_hex64(name):
            repo.findings.append(invalid_name_finding(registry, entry.path, what, repo.name))
            continue
        link = entry.path + "/link"
        content = read_link_file(link)
        if isinstance(content, ReadFailure):
            if content.reason is not FailReason.MISSING:
                repo.findings.append(read_failure_finding(registry, link, content, repo.name))
                if bad is not None:
                    bad.add(name)
            continue
        files += 1
        invalid = check_link(registry, repo.name, what, name, link, content)
        if invalid is None:
            valid[name] = link
        else:
            if bad is not None:
                bad.add(name)
            repo.findings.append(invalid)
    return valid, files


def _is_dir(path: str) -> bool:
    """A real folder (lstat: a symlink is not one)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def read_repository(
    registry: RegistryStorage,
    name: str,
    path: str,
    internal: dict[str, str],
    *,
    layers_unread: bool = False,
) -> RepoLinks:
    """Read one repository's `_layers` links, revision links and tags' ``current/link``, and
    which of distribution's folders it holds.

    `internal` maps each of ``_layers``/``_manifests``/``_uploads`` that is a real folder to its
    path. `layers_unread`: its `_layers` folder exists but was not read (a symlink), so no
    layer link may be judged missing.
    """
    repo = RepoLinks(name, path)
    repo.has_layers_dir = "_layers" in internal
    repo.has_manifests_dir = "_manifests" in internal
    repo.has_tags_dir = _is_dir(os.path.join(path, "_manifests", "tags"))
    if layers_unread:
        repo.bad_layer_links.add(ALL_LINKS)
    if "_layers" in internal:
        repo.layers, repo.layer_link_files = _read_links(
            registry, internal["_layers"], repo, "layer", repo.bad_layer_links
        )
    manifests = internal.get("_manifests")
    if manifests is not None:
        repo.revisions, _ = _read_links(registry, manifests + "/revisions", repo, "revision")
        _read_tags(registry, manifests + "/tags", repo)
    elif repo.has_tags_dir:
        # ``_manifests`` is a symlink (reported, not read) but its tags still stop Tags.Lookup.
        repo.stray_tag_entries = _stray_tag_entries(os.path.join(path, "_manifests", "tags"))
    if not repo.has_tags_dir:
        repo.stray_tag_entries = []
    return repo


def _stray_tag_entries(tags_dir: str) -> list[str]:
    """Entries of ``_manifests/tags`` that are neither folders nor symlinks."""
    try:
        with os.scandir(tags_dir) as it:
            return sorted(
                e.path for e in it if not e.is_dir(follow_symlinks=False) and not e.is_symlink()
            )
    except OSError:
        return []


def _read_tags(registry: RegistryStorage, tags_dir: str, repo: RepoLinks) -> None:
    try:
        entries = _scandir_sorted(tags_dir)
    except FileNotFoundError:
        return
    except OSError as exc:
        repo.findings.append(
            unreadable_finding(registry, tags_dir, exc.strerror or str(exc), repo.name)
        )
        return
    for entry in entries:
        if entry.is_symlink():
            repo.findings.append(symlink_finding(registry, entry.path, repo.name))
            continue
        if not entry.is_dir(follow_symlinks=False):
            repo.stray_tag_entries.append(entry.path)
            continue
        link = entry.path + "/current/link"
        content = read_link_file(link)
        if isinstance(content, ReadFailure):
            if content.reason is FailReason.MISSING:
                repo.tags[entry.name] = (None, link)
            else:
                repo.findings.append(read_failure_finding(registry, link, content, repo.name))
            continue
        named = check_tag_link(registry, repo.name, entry.name, link, content)
        if isinstance(named, Finding):
            repo.findings.append(named)
            continue
        repo.tags[entry.name] = (named, link)


# --- manifests and blob data -----------------------------------------------------------------


def manifest_reader(
    registry: RegistryStorage, limit: int, *, follow: bool = True
) -> ManifestReader:
    """Reads manifest blob data of at most `limit` bytes. `follow` (the scan) follows a
    symlinked ``data`` as distribution does; gc-preview reads without following."""

    def read(digest: Digest) -> bytes | ReadFailure:
        return read_regular_file(str(blob_data_path(registry.v2, digest)), limit, follow=follow)

    return read


def blob_sha256(
    registry: RegistryStorage, hex_: str, on_bytes: Callable[[int], None] | None = None
) -> str | ReadFailure:
    """The sha256 (hex) of a blob's data, streamed, following a symlinked ``data``."""
    path = str(blob_data_path(registry.v2, digest_from_hex(hex_)))
    return sha256_file(path, on_bytes, follow=True)


# --- what garbage-collect's sweep meets beyond blobs/sha256 ---------------------------------




def _other_algorithms(registry: RegistryStorage) -> tuple[dict[str, int], str | None]:
    """Blobs under ``blobs/<algorithm>`` for every algorithm but sha256, as ``blobStore.Enumerate``
    reads their paths (``digestFromPath`` then ``Validate``): a valid digest is a sweep
    candidate (digest -> size), anything else makes the enumeration fail (the first error)."""
    others: dict[str, int] = {}
    error: str | None = None
    root = os.path.join(str(registry.v2), "blobs")
    try:
        with os.scandir(root) as it:
            algos = sorted(e.name for e in it if e.name != ALGORITHM and e.is_dir())
    except OSError:
        return others, error
    for algo in algos:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, algo), followlinks=True):
            dirnames.sort()
            if "data" not in filenames:
                continue
            rel = os.path.relpath(dirpath, root).split(os.sep)
            why = sweep_path_error(rel)
            if why is None:
                try:
                    others[f"{algo}:{rel[-1]}"] = os.stat(os.path.join(dirpath, "data")).st_size
                except OSError:
                    continue
            elif error is None:
                error = f"{os.path.join(dirpath, 'data')}: {why}"
    return others, error


def _sha256_sweep_error(blobs: BlobStore) -> str | None:
    """A folder under ``blobs/sha256`` whose name is not a digest, holding data files, makes
    ``digestFromPath`` fail just the same."""
    for f in blobs.findings:
        path = f.path or ""
        if f.kind is Kind.INVALID_LINK and any(
            "data" in files for _, _, files in os.walk(path, followlinks=True)
        ):
            return f"{path}: invalid checksum digest format"
    return None


def read_sweep_listing(registry: RegistryStorage, blobs: BlobStore) -> SweepListing:
    """What garbage-collect's sweep meets besides `blobs` (the listed sha256 store): blobs of
    other algorithms, and the first path that would stop it."""
    others, error = _other_algorithms(registry)
    return SweepListing(others, error or _sha256_sweep_error(blobs))


class FilesystemReader:
    """The `StorageReader` of a registry on a local filesystem: this module's functions."""

    def list_blobs(self, registry: RegistryStorage, *, with_sizes: bool = False) -> BlobStore:
        """`list_blobs`."""
        return list_blobs(registry, with_sizes=with_sizes)

    def iter_repositories(
        self, registry: RegistryStorage, findings: list[Finding]
    ) -> Iterator[RepoLinks]:
        """`iter_repositories`."""
        return iter_repositories(registry, findings)

    def manifest_reader(
        self, registry: RegistryStorage, limit: int, *, follow: bool = True
    ) -> ManifestReader:
        """`manifest_reader`."""
        return manifest_reader(registry, limit, follow=follow)

    def read_sweep_listing(self, registry: RegistryStorage, blobs: BlobStore) -> SweepListing:
        """`read_sweep_listing`."""
        return read_sweep_listing(registry, blobs)
