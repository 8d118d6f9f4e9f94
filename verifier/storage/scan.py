"""Scan distribution's filesystem storage and turn what it holds into findings.

Speed: each registry's blob store is listed once (``os.scandir`` plus one
``lstat`` of each blob's ``data``) into a set, and every link check is a set lookup, so the cost
grows linearly with the number of files. Link files are read with ``O_NOFOLLOW``.

Gathering (I/O) and checking (pure functions over what was gathered) are kept apart: `list_blobs`
and `read_repository` read, the ``check_*`` functions decide.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from verifier.model.findings import Finding, Kind, Report, Severity
from verifier.model.manifest import (
    DEFAULT_MAX_MANIFEST_BYTES,
    ImageIndex,
    ImageManifest,
    Manifest,
    ManifestError,
    parse_manifest,
    sha256_digest,
)
from verifier.storage.fsio import FailReason, ReadFailure, read_link_file, read_regular_file
from verifier.storage.fsio import sha256_file as _sha256_file
from verifier.storage.images import (
    RELINK_STEP,
    Needs,
    gather_needs,
    rebuild_steps,
    tags_text,
)
from verifier.storage.layout import (
    ALGORITHM,
    REPO_INTERNAL_DIRS,
    Digest,
    RegistryStorage,
    StorageLayout,
    blob_data_path,
    blobs_dir,
    digest_from_hex,
    is_hex2,
    is_hex64,
    layer_link_path,
    parse_digest,
    repositories_dir,
    revision_link_path,
)

RUNBOOK = "docs/runbook.md"
BLOB_DATA_PRESENT = "blob-data-present"
BLOB_DATA_GONE = "blob-data-gone"
BLOB_DATA_UNKNOWN = "blob-data-unknown"

#: ``progress(bytes_done, bytes_total)`` while ``--verify-digests`` hashes blobs.
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class ScanOptions:
    """What `scan_storage` checks; `proxy_caches` names registries that skip the index check."""

    verify_digests: bool = False
    proxy_caches: frozenset[str] = frozenset()
    #: Off only for the benchmark's like-for-like comparison: link checks alone, no manifest
    #: is parsed (neither the index check nor the image walk runs).
    index_children: bool = True
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES


# --- the blob store --------------------------------------------------------------------------


class BlobStoreState(StrEnum):
    """What listing a registry's blob store found."""

    OK = "ok"
    MISSING = "missing"
    EMPTY = "empty"
    UNREADABLE = "unreadable"


@dataclass
class BlobStore:
    """One registry's blobs, listed once: `present` holds the hex of every blob with a data file.

    Blobs in `unknown` (data could not be examined) and every blob under a prefix folder in
    `unlisted_prefixes` (the folder could not be listed) are never judged either way: the
    listing is then incomplete (`complete` is False) and `fs fix` moves nothing.
    """

    state: BlobStoreState
    present: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    sizes: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    #: two-hex prefix folders that exist but could not be listed
    unlisted_prefixes: set[str] = field(default_factory=set)
    #: why the listing is incomplete, one line per gap (for the refusal message)
    gaps: list[str] = field(default_factory=list)
    #: folders reached through a symlink (followed, as distribution's filesystem driver does)
    followed_symlinks: list[str] = field(default_factory=list)

    def has(self, hex_: str) -> bool | None:
        """True if the blob's data exists, False if it does not, None if we cannot tell."""
        if self.state is BlobStoreState.UNREADABLE or hex_ in self.unknown:
            return None
        if hex_ in self.present:
            return True
        if self.unlisted_prefixes and hex_[:2] in self.unlisted_prefixes:
            return None
        return False

    @property
    def complete(self) -> bool:
        """Whether every part of the listing was read: only then is an absence proven."""
        return self.state is not BlobStoreState.UNREADABLE and not self.gaps


def _finding(
    kind: Kind,
    severity: Severity,
    message: str,
    registry: RegistryStorage,
    *,
    repository: str = "",
    digest: str | None = None,
    path: str | Path | None = None,
    reference: str = "",
    platform: str | None = None,
    media_type: str | None = None,
    expected_digest: str | None = None,
    actual_digest: str | None = None,
    actual_size: int | None = None,
    details: dict[str, Any] | None = None,
) -> Finding:
    """Every filesystem finding carries registry, repository, digest and path."""
    return Finding(
        kind=kind,
        severity=severity,
        message=message,
        registry=registry.name,
        repository=repository,
        reference=reference,
        digest=digest,
        media_type=media_type,
        platform=platform,
        expected_digest=expected_digest,
        actual_digest=actual_digest,
        actual_size=actual_size,
        path=str(path) if path is not None else None,
        details=details or {},
    )


def _symlink_finding(registry: RegistryStorage, path: str, repository: str = "") -> Finding:
    return _finding(
        Kind.UNEXPECTED_SYMLINK,
        Severity.WARNING,
        f"{path} is a symlink; not followed, so what it points at was not checked",
        registry,
        repository=repository,
        path=path,
    )


def _unreadable_finding(
    registry: RegistryStorage, path: str, detail: str, repository: str = ""
) -> Finding:
    return _finding(
        Kind.UNREADABLE_FILE,
        Severity.WARNING,
        f"cannot read {path}: {detail}",
        registry,
        repository=repository,
        path=path,
    )


def _invalid_name(registry: RegistryStorage, path: str, what: str, repository: str = "") -> Finding:
    return _finding(
        Kind.INVALID_LINK,
        Severity.ERROR,
        f"{what} folder name {os.path.basename(path)[:80]!r} is not 64 lowercase hex",
        registry,
        repository=repository,
        path=path,
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
            store.findings.append(_unreadable_finding(registry, root, "symlink target missing"))
            store.gaps.append(f"{root}: symlink target missing")
            return store
        return BlobStore(BlobStoreState.MISSING)
    except OSError as exc:
        store = BlobStore(BlobStoreState.UNREADABLE)
        store.findings.append(_unreadable_finding(registry, root, exc.strerror or str(exc)))
        store.gaps.append(f"{root}: {exc.strerror or exc}")
        return store
    try:
        prefixes = _scandir_sorted(root)
    except OSError as exc:
        store = BlobStore(BlobStoreState.UNREADABLE)
        store.findings.append(_unreadable_finding(registry, root, exc.strerror or str(exc)))
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
        findings.append(_unreadable_finding(registry, path, detail))
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
                    findings.append(_symlink_finding(registry, prefix.path))
            continue
        if not is_hex2(prefix.name):
            findings.append(_invalid_name(registry, prefix.path, "blob prefix"))
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
                        findings.append(_symlink_finding(registry, entry.path))
                continue
            if not is_hex64(name) or not name.startswith(prefix.name):
                findings.append(_invalid_name(registry, entry.path, "blob"))
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


# --- one repository --------------------------------------------------------------------------


@dataclass
class RepoLinks:
    """What one repository folder holds; only well-formed links land in the maps."""

    name: str
    path: str
    #: hex of each `_layers` link whose content is well-formed and matches its folder -> link path
    layers: dict[str, str] = field(default_factory=dict)
    #: same for ``_manifests/revisions``
    revisions: dict[str, str] = field(default_factory=dict)
    #: tag -> (hex its ``current/link`` names, or None when that link is missing; link path)
    tags: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    layer_link_files: int = 0
    findings: list[Finding] = field(default_factory=list)
    #: hex of each `_layers` link file that exists but is unreadable or malformed;
    #: `ALL_LINKS` when a folder on the way could not be listed
    bad_layer_links: set[str] = field(default_factory=set)


#: In `RepoLinks.bad_layer_links`: the `_layers` folder itself could not be read.
ALL_LINKS = "*"


def iter_repositories(registry: RegistryStorage, findings: list[Finding]) -> Iterator[RepoLinks]:
    """Walk ``repositories/`` (nested names allowed) and yield each repository, read.

    A folder is a repository when it holds ``_layers``, ``_manifests`` or ``_uploads``; its
    other sub-folders may be repositories too (``a`` and ``a/b`` can both exist).
    """
    root = str(repositories_dir(registry.v2))
    try:
        if stat.S_ISLNK(os.lstat(root).st_mode):
            findings.append(_symlink_finding(registry, root))
            return
    except FileNotFoundError:
        return
    except OSError as exc:
        findings.append(_unreadable_finding(registry, root, exc.strerror or str(exc)))
        return
    stack: list[tuple[str, str]] = [(root, "")]
    while stack:
        path, name = stack.pop()
        try:
            entries = _scandir_sorted(path)
        except OSError as exc:
            findings.append(_unreadable_finding(registry, path, exc.strerror or str(exc), name))
            continue
        internal: dict[str, str] = {}
        children: list[tuple[str, str]] = []
        layers_unread = False
        for entry in entries:
            if entry.is_symlink():
                findings.append(_symlink_finding(registry, entry.path, name))
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
            _unreadable_finding(registry, parent, exc.strerror or str(exc), repo.name)
        )
        return None
    found = None
    for entry in entries:
        if entry.is_symlink():
            repo.findings.append(_symlink_finding(registry, entry.path, repo.name))
        elif entry.name == ALGORITHM and entry.is_dir(follow_symlinks=False):
            found = entry.path
        elif entry.is_dir(follow_symlinks=False):
            repo.findings.append(
                _finding(
                    Kind.INVALID_LINK,
                    Severity.ERROR,
                    f"unsupported digest algorithm folder {entry.name[:80]!r}",
                    registry,
                    repository=repo.name,
                    path=entry.path,
                )
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
            _unreadable_finding(registry, algo, exc.strerror or str(exc), repo.name)
        )
        if bad is not None:
            bad.add(ALL_LINKS)
        return valid, 0
    files = 0
    prefix = ALGORITHM.encode("ascii") + b":"
    for entry in entries:
        name = entry.name
        if not entry.is_dir(follow_symlinks=False):
            if entry.is_symlink():
                repo.findings.append(_symlink_finding(registry, entry.path, repo.name))
            continue
        if not is_hex64(name):
            repo.findings.append(_invalid_name(registry, entry.path, what, repo.name))
            continue
        link = entry.path + "/link"
        content = read_link_file(link)
        if isinstance(content, ReadFailure):
            if content.reason is not FailReason.MISSING:
                repo.findings.append(_read_failure_finding(registry, link, content, repo.name))
                if bad is not None:
                    bad.add(name)
            continue
        files += 1
        # Fast path: `name` is validated hex, so the exact expected bytes need no parsing.
        if content == prefix + name.encode("ascii"):
            valid[name] = link
            continue
        problem = check_link_content(content, name)
        if problem is None:
            valid[name] = link
        else:
            if bad is not None:
                bad.add(name)
            repo.findings.append(
                _finding(
                    Kind.INVALID_LINK,
                    Severity.ERROR,
                    f"{what} link {problem}",
                    registry,
                    repository=repo.name,
                    digest=digest_from_hex(name),
                    path=link,
                    expected_digest=digest_from_hex(name),
                    actual_digest=content[:80].decode("ascii", "replace"),
                )
            )
    return valid, files


def _read_failure_finding(
    registry: RegistryStorage, path: str, failure: ReadFailure, repository: str
) -> Finding:
    if failure.reason is FailReason.SYMLINK:
        return _symlink_finding(registry, path, repository)
    return _unreadable_finding(registry, path, failure.detail, repository)


def check_link_content(content: bytes, folder_hex: str | None) -> str | None:
    """None if `content` is ``sha256:<hex>`` naming `folder_hex`; else what is wrong with it."""
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError:
        return "content is not ASCII"
    digest = parse_digest(text)
    if digest is None:
        return f"content {text[:80]!r} is not a well-formed sha256:<64 hex> digest"
    if folder_hex is not None and digest[len(ALGORITHM) + 1 :] != folder_hex:
        return f"content {text!r} does not match its folder {folder_hex}"
    return None


def read_repository(
    registry: RegistryStorage,
    name: str,
    path: str,
    internal: dict[str, str],
    *,
    layers_unread: bool = False,
) -> RepoLinks:
    """Read one repository's `_layers` links, revision links and tags' ``current/link``.

    `layers_unread`: its `_layers` folder exists but was not read (a symlink), so no layer
    link may be judged missing.
    """
    repo = RepoLinks(name, path)
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
    return repo


def _read_tags(registry: RegistryStorage, tags_dir: str, repo: RepoLinks) -> None:
    try:
        entries = _scandir_sorted(tags_dir)
    except FileNotFoundError:
        return
    except OSError as exc:
        repo.findings.append(
            _unreadable_finding(registry, tags_dir, exc.strerror or str(exc), repo.name)
        )
        return
    for entry in entries:
        if entry.is_symlink():
            repo.findings.append(_symlink_finding(registry, entry.path, repo.name))
            continue
        if not entry.is_dir(follow_symlinks=False):
            continue
        link = entry.path + "/current/link"
        content = read_link_file(link)
        if isinstance(content, ReadFailure):
            if content.reason is FailReason.MISSING:
                repo.tags[entry.name] = (None, link)
            else:
                repo.findings.append(_read_failure_finding(registry, link, content, repo.name))
            continue
        problem = check_link_content(content, None)
        if problem is not None:
            repo.findings.append(
                _finding(
                    Kind.INVALID_LINK,
                    Severity.ERROR,
                    f"tag {entry.name!r} current link {problem}",
                    registry,
                    repository=repo.name,
                    path=link,
                    reference=entry.name,
                    actual_digest=content[:80].decode("ascii", "replace"),
                )
            )
            continue
        repo.tags[entry.name] = (content.decode("ascii")[len(ALGORITHM) + 1 :], link)


# --- pure checks over what was read -----------------------------------------------------------


@dataclass(frozen=True)
class OrphanLink:
    """A `_layers` link whose blob data is gone: what `fs fix` quarantines."""

    registry: RegistryStorage
    repository: str
    digest: Digest
    path: Path
    finding: Finding


def check_layer_links(
    registry: RegistryStorage, repo: RepoLinks, blobs: BlobStore, needs: Needs | None = None
) -> list[OrphanLink]:
    """Every well-formed `_layers` link whose blob data does not exist is an orphan.

    With `needs`, each finding names the tags that use the blob (they stay broken after the
    link is quarantined: the data is gone).
    """
    orphans: list[OrphanLink] = []
    if blobs.state is BlobStoreState.UNREADABLE:
        return orphans
    present = blobs.present
    for hex_, link in repo.layers.items():
        if hex_ in present or blobs.has(hex_) is not False:
            continue
        digest = digest_from_hex(hex_)
        tags = sorted(needs.reach.get(hex_, ())) if needs is not None else []
        used = f"; used by {tags_text(repo.name, tags)}" if tags else ""
        finding = _finding(
            Kind.ORPHAN_LAYER_LINK,
            Severity.ERROR,
            f"layer link without blob data: {repo.name}@{digest} (served as 200 with no bytes "
            f"while the registry's cache is warm, then 404; a re-push skips it){used}",
            registry,
            repository=repo.name,
            digest=digest,
            path=link,
            details={"tags": tags},
        )
        orphans.append(OrphanLink(registry, repo.name, digest, Path(link), finding))
    return orphans


def check_revisions(
    registry: RegistryStorage, repo: RepoLinks, blobs: BlobStore, needs: Needs | None = None
) -> list[Finding]:
    """A revision link whose manifest blob data is gone is `dangling_revision`.

    ``details["tags"]`` names the tags it breaks (with `needs`: also through an index).
    """
    out: list[Finding] = []
    tags_by_hex = _tags_by_hex(repo)
    if needs is not None:
        tags_by_hex = {h: sorted(t) for h, t in needs.reach.items()}
    for hex_, link in repo.revisions.items():
        if blobs.has(hex_) is not False:
            continue
        digest = digest_from_hex(hex_)
        out.append(
            _finding(
                Kind.DANGLING_REVISION,
                Severity.ERROR,
                f"manifest revision {repo.name}@{digest} has no blob data",
                registry,
                repository=repo.name,
                digest=digest,
                path=link,
                details={"tags": tags_by_hex.get(hex_, [])},
            )
        )
    return out


def check_tags(registry: RegistryStorage, repo: RepoLinks, blobs: BlobStore) -> list[Finding]:
    """A tag whose ``current/link`` is missing, names a missing revision, or data that is gone."""
    out: list[Finding] = []
    for tag, (hex_, link) in repo.tags.items():
        digest = digest_from_hex(hex_) if hex_ is not None else None
        if hex_ is None:
            reason, why = "current-link-missing", "has no current/link"
        elif hex_ not in repo.revisions:
            reason, why = "revision-missing", f"points at {digest}, which has no revision link"
        elif blobs.has(hex_) is False:
            reason, why = BLOB_DATA_GONE, f"points at {digest}, whose blob data is gone"
        else:
            continue
        out.append(
            _finding(
                Kind.DANGLING_TAG,
                Severity.ERROR,
                f"tag {repo.name}:{tag} {why}; pulling it fails",
                registry,
                repository=repo.name,
                digest=digest,
                path=link,
                reference=tag,
                details={"reason": reason},
            )
        )
    return out


def check_images(
    registry: RegistryStorage, repo: RepoLinks, blobs: BlobStore, needs: Needs
) -> list[Finding]:
    """For every config and layer a tag needs: its data (`image_blob_missing`, rebuild) and
    this repository's layer link to it (`layer_link_missing`, relinkable), naming the tags."""
    out: list[Finding] = []
    for hex_, need in sorted(needs.blobs.items()):
        digest = digest_from_hex(hex_)
        has = blobs.has(hex_)
        linked = hex_ in repo.layers
        tags = sorted(need.tags)
        common: dict[str, object] = {
            "tags": tags,
            "role": need.role,
            "manifests": sorted(need.manifests),
            "linked": linked,
        }
        if has is False:
            link_note = "; its layer link remains (an orphan)" if linked else ""
            out.append(
                _finding(
                    Kind.IMAGE_BLOB_MISSING,
                    Severity.ERROR,
                    f"{need.role} {digest} of {repo.name} has no blob data{link_note}; "
                    f"pulling {tags_text(repo.name, tags)} fails; needs a rebuild",
                    registry,
                    repository=repo.name,
                    digest=digest,
                    path=blob_data_path(registry.v2, digest),
                    details={
                        **common,
                        "repair": "rebuild",
                        "next_steps": rebuild_steps(repo.name, tags, orphan_link=linked),
                    },
                )
            )
        elif has is True and not linked and not repo.bad_layer_links & {hex_, ALL_LINKS}:
            out.append(
                _finding(
                    Kind.LAYER_LINK_MISSING,
                    Severity.ERROR,
                    f"{need.role} {digest} has blob data but no layer link in {repo.name}; "
                    f"pulling {tags_text(repo.name, tags)} fails once the registry's cache is "
                    "cold; repairable by relinking",
                    registry,
                    repository=repo.name,
                    digest=digest,
                    path=layer_link_path(registry.v2, repo.name, digest),
                    details={**common, "repair": "relink", "next_steps": [RELINK_STEP]},
                )
            )
    return out


def _tags_by_hex(repo: RepoLinks) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for tag, (hex_, _) in sorted(repo.tags.items()):
        if hex_ is not None:
            out.setdefault(hex_, []).append(tag)
    return out


@dataclass(frozen=True)
class OrphanChild:
    """An index child without a revision link in its repository (one per repository and child)."""

    registry: RegistryStorage
    repository: str
    digest: Digest
    link_path: Path
    relinkable: bool
    reason: str
    findings: tuple[Finding, ...]


#: Reads a manifest's blob data by digest: bytes, or why it could not be read.
ManifestReader = Callable[[Digest], bytes | ReadFailure]


@dataclass(frozen=True)
class ChildAssessment:
    """What is known about an orphan child: data state, referenced blobs, whether relinkable."""

    blob_data: str
    media_type: str | None
    blobs: tuple[dict[str, object], ...]
    relinkable: bool
    reason: str


def assess_child(
    child: Digest, repo: RepoLinks, blobs: BlobStore, read: ManifestReader
) -> ChildAssessment:
    """Decide whether an orphan child can be relinked losslessly.

    Only when its manifest data is present, parses, matches its digest, and every blob it
    references is present and linked in this repository.
    """
    hex_ = child[len(ALGORITHM) + 1 :]
    has = blobs.has(hex_)
    if has is None:
        return ChildAssessment(BLOB_DATA_UNKNOWN, None, (), False, "blob data not examinable")
    if not has:
        return ChildAssessment(BLOB_DATA_GONE, None, (), False, "manifest blob data is gone")
    body = read(child)
    if isinstance(body, ReadFailure):
        return ChildAssessment(
            BLOB_DATA_PRESENT, None, (), False, f"manifest data unreadable: {body.detail}"
        )
    if sha256_digest(body) != child:
        return ChildAssessment(
            BLOB_DATA_PRESENT, None, (), False, "manifest data does not match its digest"
        )
    try:
        manifest = parse_manifest(body)
    except ManifestError as exc:
        return ChildAssessment(BLOB_DATA_PRESENT, None, (), False, f"manifest invalid: {exc}")
    refs: list[tuple[str, str, bool]] = []  # (role, digest, is_manifest)
    if isinstance(manifest, ImageManifest):
        refs.append(("config", manifest.config.digest, False))
        refs.extend(("layer", d.digest, False) for d in manifest.layers)
    elif isinstance(manifest, ImageIndex):
        refs.extend(("manifest", d.digest, True) for d in manifest.manifests)
    else:
        return ChildAssessment(
            BLOB_DATA_PRESENT, manifest.media_type, (), False, "schema1 manifest: not assessed"
        )
    described: list[dict[str, object]] = []
    problems: list[str] = []
    for role, raw, is_manifest in refs:
        ref = parse_digest(raw)
        if ref is None:
            described.append({"role": role, "digest": raw, "linked": False, "present": False})
            problems.append(f"{role} digest {raw[:80]!r} is not sha256")
            continue
        ref_hex = ref[len(ALGORITHM) + 1 :]
        linked = ref_hex in (repo.revisions if is_manifest else repo.layers)
        present = blobs.has(ref_hex)
        described.append({"role": role, "digest": ref, "linked": linked, "present": present})
        if not linked:
            problems.append(f"{role} {ref} not linked")
        if present is not True:
            problems.append(f"{role} {ref} data {'gone' if present is False else 'unknown'}")
    reason = "; ".join(problems) if problems else "all referenced blobs present and linked"
    return ChildAssessment(
        BLOB_DATA_PRESENT, manifest.media_type, tuple(described), not problems, reason
    )


def check_index_children(
    registry: RegistryStorage,
    repo: RepoLinks,
    blobs: BlobStore,
    read: ManifestReader,
    parsed: dict[str, Manifest | None] | None = None,
) -> tuple[list[Finding], list[OrphanChild]]:
    """Parse every revision; for each index, report children without a revision link.

    Also reports revisions whose manifest data is unreadable or not a valid manifest. Each
    parse result (None when unusable) is left in `parsed`, for the image check to reuse.
    """
    findings: list[Finding] = []
    by_child: dict[str, list[Finding]] = {}
    assessments: dict[str, ChildAssessment] = {}
    tags_by_hex = _tags_by_hex(repo)
    for hex_, link in repo.revisions.items():
        if blobs.has(hex_) is not True:
            continue
        digest = digest_from_hex(hex_)
        data_path = str(blob_data_path(registry.v2, digest))
        body = read(digest)
        if isinstance(body, ReadFailure):
            if parsed is not None:
                parsed[hex_] = None
            findings.append(_read_failure_finding(registry, data_path, body, repo.name))
            continue
        try:
            manifest = parse_manifest(body)
            if parsed is not None:
                parsed[hex_] = manifest
        except ManifestError as exc:
            if parsed is not None:
                parsed[hex_] = None
            findings.append(
                _finding(
                    Kind.MANIFEST_INVALID,
                    Severity.ERROR,
                    f"manifest {repo.name}@{digest} is not a valid manifest: {exc}",
                    registry,
                    repository=repo.name,
                    digest=digest,
                    path=data_path,
                    details={"revision_link": link, "tags": tags_by_hex.get(hex_, [])},
                )
            )
            continue
        if not isinstance(manifest, ImageIndex):
            continue
        for desc in manifest.manifests:
            child = parse_digest(desc.digest)
            if child is None:
                findings.append(
                    _finding(
                        Kind.MANIFEST_INVALID,
                        Severity.ERROR,
                        f"index {repo.name}@{digest} names child {desc.digest[:80]!r}, which "
                        "is not a sha256 digest this storage can hold",
                        registry,
                        repository=repo.name,
                        digest=digest,
                        path=data_path,
                        actual_digest=desc.digest[:80],
                    )
                )
                continue
            child_hex = child[len(ALGORITHM) + 1 :]
            if child_hex in repo.revisions:
                continue
            assessment = assessments.get(child_hex)
            if assessment is None:
                assessment = assess_child(child, repo, blobs, read)
                assessments[child_hex] = assessment
            findings_for_child = by_child.setdefault(child_hex, [])
            finding = _orphan_child_finding(
                registry,
                repo,
                digest,
                desc.platform,
                desc.media_type,
                desc.is_attestation,
                child,
                assessment,
                tags_by_hex.get(hex_, []),
            )
            findings_for_child.append(finding)
            findings.append(finding)
    orphans = [
        OrphanChild(
            registry,
            repo.name,
            digest_from_hex(child_hex),
            revision_link_path(registry.v2, repo.name, digest_from_hex(child_hex)),
            assessments[child_hex].relinkable,
            assessments[child_hex].reason,
            tuple(child_findings),
        )
        for child_hex, child_findings in by_child.items()
    ]
    return findings, orphans


def _orphan_child_finding(
    registry: RegistryStorage,
    repo: RepoLinks,
    index: Digest,
    platform: str | None,
    media_type: str,
    attestation: bool,
    child: Digest,
    a: ChildAssessment,
    index_tags: list[str],
) -> Finding:
    gone = sum(1 for b in a.blobs if b["present"] is False)
    unlinked = sum(1 for b in a.blobs if not b["linked"])
    if a.relinkable:
        action = "relinkable: fs fix --relink-index-children restores it losslessly"
    else:
        action = f"rebuild required, see {RUNBOOK}"
    blob_note = (
        f"; {gone} of {len(a.blobs)} referenced blobs gone, {unlinked} unlinked" if a.blobs else ""
    )
    where = f" (tags: {', '.join(index_tags)})" if index_tags else ""
    return _finding(
        Kind.ORPHAN_INDEX_CHILD,
        Severity.ERROR,
        f"index {repo.name}@{index}{where} references {platform or 'unknown platform'} child "
        f"{child} whose revision link is missing; {a.blob_data}{blob_note}; {action}",
        registry,
        repository=repo.name,
        digest=child,
        path=revision_link_path(registry.v2, repo.name, child),
        reference=index,
        platform=platform,
        media_type=media_type,
        details={
            "index": index,
            "index_tags": index_tags,
            "blob_data": a.blob_data,
            "attestation": attestation,
            "child_blobs": list(a.blobs),
            "relinkable": a.relinkable,
            "reason": a.reason,
            "action": action,
        },
    )


def check_blob_digests(
    registry: RegistryStorage,
    blobs: BlobStore,
    on_bytes: Callable[[int], None] | None = None,
) -> list[Finding]:
    """`corrupt_blob` for every present blob whose sha256 differs from its folder name."""
    out: list[Finding] = []
    for hex_ in sorted(blobs.present):
        digest = digest_from_hex(hex_)
        path = str(blob_data_path(registry.v2, digest))
        actual = _sha256_file(path, on_bytes, follow=True)
        if isinstance(actual, ReadFailure):
            if actual.reason is not FailReason.MISSING:
                out.append(_read_failure_finding(registry, path, actual, ""))
            continue
        if actual != hex_:
            out.append(
                _finding(
                    Kind.CORRUPT_BLOB,
                    Severity.ERROR,
                    f"blob data of {digest} hashes to sha256:{actual}",
                    registry,
                    digest=digest,
                    path=path,
                    expected_digest=digest,
                    actual_digest=f"{ALGORITHM}:{actual}",
                    actual_size=blobs.sizes.get(hex_),
                )
            )
    return out


# --- the whole scan -------------------------------------------------------------------------


@dataclass
class RegistryStats:
    """Per-registry counts the safety rails of `fs fix` decide on."""

    name: str
    blob_store: BlobStoreState
    blobs: int = 0
    repositories: int = 0
    layer_links: int = 0
    orphan_layer_links: int = 0
    revision_links: int = 0
    tags: int = 0
    proxy_cache: bool = False
    #: parts of the blob listing that could not be read (any makes absences unproven)
    blob_gaps: list[str] = field(default_factory=list)

    @property
    def links(self) -> int:
        """Every link file of this registry that was read."""
        return self.layer_links + self.revision_links + self.tags


@dataclass
class ScanResult:
    """A scan's `report`, plus what `fs fix` acts on and decides with."""

    layout: StorageLayout
    report: Report
    orphan_links: list[OrphanLink] = field(default_factory=list)
    orphan_children: list[OrphanChild] = field(default_factory=list)
    stats: list[RegistryStats] = field(default_factory=list)
    #: `image_blob_missing` and `layer_link_missing` findings, for `fs fix` to follow up
    image_findings: list[Finding] = field(default_factory=list)


def _manifest_reader(registry: RegistryStorage, limit: int) -> ManifestReader:
    """Reads manifest data as distribution reads it: a symlinked ``data`` is followed."""

    def read(digest: Digest) -> bytes | ReadFailure:
        return read_regular_file(str(blob_data_path(registry.v2, digest)), limit, follow=True)

    return read


def _sort_key(f: Finding) -> tuple[str, str, str, str, str]:
    return (f.registry or "", f.repository, str(f.kind), f.digest or "", f.path or "")


def scan_storage(
    layout: StorageLayout, options: ScanOptions | None = None, progress: ProgressFn | None = None
) -> ScanResult:
    """Scan every registry in `layout` and return findings; never changes anything.

    Names in ``options.proxy_caches`` that match no registry here are ignored (the CLI checks
    them against the whole layout before ``--registry`` narrows it).
    """
    options = options or ScanOptions()
    started = time.time()
    t0 = time.perf_counter()
    report = Report(mode="fs-scan", target=str(layout.base), started_at=started)
    result = ScanResult(layout, report)
    report.notes.append(f"layout: {layout.describe()}")
    for name in layout.skipped_symlinks:
        skipped = RegistryStorage(name, layout.base / name)
        report.add(_symlink_finding(skipped, str(skipped.root)))
    proxies = sorted(
        r.label for r in layout.registries if any(r.matches(p) for p in options.proxy_caches)
    )
    if proxies and options.index_children:
        report.notes.append(
            f"orphan_index_child check skipped for proxy caches: {', '.join(proxies)} "
            "(pull-through caches legitimately hold partial indexes)"
        )
    verify_total = 0
    stores: list[tuple[RegistryStorage, BlobStore]] = []
    for registry in layout.registries:
        is_proxy = any(registry.matches(p) for p in options.proxy_caches)
        blobs = list_blobs(registry, with_sizes=options.verify_digests)
        stats = RegistryStats(
            registry.name, blobs.state, blobs=len(blobs.present), proxy_cache=is_proxy
        )
        result.stats.append(stats)
        stats.blob_gaps = list(blobs.gaps)
        findings: list[Finding] = list(blobs.findings)
        if blobs.followed_symlinks:
            report.notes.append(
                f"registry {registry.label}: {len(blobs.followed_symlinks)} blob folder(s) "
                f"reached through a symlink, followed as distribution follows them (first: "
                f"{blobs.followed_symlinks[0]})"
            )
        read = _manifest_reader(registry, options.max_manifest_bytes)
        for repo in iter_repositories(registry, findings):
            stats.repositories += 1
            stats.layer_links += repo.layer_link_files
            stats.revision_links += len(repo.revisions)
            stats.tags += len(repo.tags)
            findings.extend(repo.findings)
            children_too = options.index_children and not is_proxy
            # Index check first: it parses every revision, and the image walk reuses that.
            parsed: dict[str, Manifest | None] = {}
            if children_too:
                index_findings, children = check_index_children(
                    registry, repo, blobs, read, parsed
                )
                findings.extend(index_findings)
                result.orphan_children.extend(children)
            needs = Needs()
            if options.index_children:
                needs = gather_needs(
                    {t: h for t, (h, _) in repo.tags.items() if h is not None},
                    repo.revisions,
                    blobs.has,
                    read,
                    index_children=children_too,
                    memo=parsed,
                )
            orphans = check_layer_links(registry, repo, blobs, needs)
            stats.orphan_layer_links += len(orphans)
            result.orphan_links.extend(orphans)
            findings.extend(o.finding for o in orphans)
            findings.extend(check_revisions(registry, repo, blobs, needs))
            findings.extend(check_tags(registry, repo, blobs))
            image_findings = check_images(registry, repo, blobs, needs)
            result.image_findings.extend(image_findings)
            findings.extend(image_findings)
        if blobs.state in (BlobStoreState.MISSING, BlobStoreState.EMPTY) and stats.links:
            report.notes.append(
                f"registry {registry.label}: blob store {blobs.state} while {stats.links} links "
                "exist (unmounted or half-synced volume?); fs fix will refuse to touch it"
            )
        for f in findings:
            report.add(f)
        stores.append((registry, blobs))
        verify_total += sum(blobs.sizes.values())
    if options.verify_digests:
        done = 0

        def on_bytes(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, verify_total)

        for registry, blobs in stores:
            for f in check_blob_digests(registry, blobs, on_bytes):
                report.add(f)
            report.counters["blobs_verified"] += len(blobs.present)
        report.counters["bytes_verified"] = done
    report.findings.sort(key=_sort_key)
    _fill_counters(result)
    if any(f.kind in (Kind.UNREADABLE_FILE, Kind.UNEXPECTED_SYMLINK) for f in report.findings):
        report.incomplete = True
    report.duration_seconds = time.perf_counter() - t0
    return result


def _fill_counters(result: ScanResult) -> None:
    report = result.report
    c = report.counters
    c["registries"] = len(result.stats)
    for s in result.stats:
        c["repositories"] += s.repositories
        c["blobs"] += s.blobs
        c["layer_links"] += s.layer_links
        c["revision_links"] += s.revision_links
        c["tags"] += s.tags
        c["links"] += s.links
    report.extra["layout"] = str(result.layout.kind)
    report.extra["base"] = str(result.layout.base)
    report.extra["registries"] = [
        {
            "name": s.name,
            "path": str(r.root),
            "blob_store": str(s.blob_store),
            "proxy_cache": s.proxy_cache,
            "blobs": s.blobs,
            "repositories": s.repositories,
            "layer_links": s.layer_links,
            "orphan_layer_links": s.orphan_layer_links,
            "revision_links": s.revision_links,
            "tags": s.tags,
            "blob_listing_complete": not s.blob_gaps,
        }
        for s, r in zip(result.stats, result.layout.registries, strict=True)
    ]
