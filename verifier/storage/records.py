"""What a storage reader hands to the checks: plain records, no I/O.

A reader (`verifier.storage.read` for a local folder, or one over an object store) lists a
registry's blob store into a `BlobStore`, reads each repository into a `RepoLinks`, and offers a
`ManifestReader` for manifest blob data. The checks (`verifier.storage.checks`), the
garbage-collect models (`verifier.storage.gc`) and `fs fix` work on these records only.

Path strings inside the records (link paths, gaps, stray tag entries) are display strings: a
filesystem reader stores local paths, an object-store reader stores what
`verifier.storage.layout.RegistryStorage.display` gives (``s3://bucket/prefix/docker/...``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from verifier.model.findings import Finding, Report
from verifier.model.manifest import DEFAULT_MAX_MANIFEST_BYTES
from verifier.storage.layout import Digest, RegistryStorage, StorageLayout


class FailReason(StrEnum):
    """Why a read did not return content."""

    MISSING = "missing"
    SYMLINK = "symlink"
    UNREADABLE = "unreadable"
    TOO_LARGE = "too-large"


@dataclass(frozen=True)
class ReadFailure:
    """A read that produced no content, and why; `detail` is the OS (or storage) message."""

    reason: FailReason
    detail: str = ""


#: Reads a manifest's blob data by digest: bytes, or why it could not be read.
ManifestReader = Callable[[Digest], bytes | ReadFailure]

#: ``progress(bytes_done, bytes_total)`` while ``--verify-digests`` hashes blobs.
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class StorageScanOptions:
    """What a storage scan checks; `proxy_caches` names registries that skip the index check."""

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


@dataclass(frozen=True)
class SweepListing:
    """What garbage-collect's sweep (``blobStore.Enumerate`` over all of ``blobs/``) meets
    besides the sha256 store: the reader lists it, `verifier.storage.gc.snapshot` uses it."""

    #: blobs under another digest algorithm (``blobs/sha512/...``): digest -> size
    other_blobs: dict[str, int] = field(default_factory=dict)
    #: ``<display path>: <go-digest error>`` for the first path under ``blobs/`` that is not a
    #: valid digest yet holds ``data`` (the real sweep stops there), else None
    sweep_error: str | None = None


# --- one repository --------------------------------------------------------------------------


@dataclass
class RepoLinks:
    """What one repository folder holds; only well-formed links land in the maps.

    `path` and every link path are display strings (see the module docstring). The
    ``has_*_dir`` flags and `stray_tag_entries` say which of distribution's folders exist as
    real folders (a symlink is not one): garbage-collect discovers repositories by them.
    """

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
    #: ``<repo>/_layers`` is a real folder
    has_layers_dir: bool = False
    #: ``<repo>/_manifests`` is a real folder
    has_manifests_dir: bool = False
    #: ``<repo>/_manifests/tags`` is a real folder
    has_tags_dir: bool = False
    #: display paths of the entries of ``_manifests/tags`` that are neither folders nor
    #: symlinks, sorted (``Tags.Lookup`` fails on them); filled only when `has_tags_dir`
    stray_tag_entries: list[str] = field(default_factory=list)


#: In `RepoLinks.bad_layer_links`: the `_layers` folder itself could not be read.
ALL_LINKS = "*"


# --- what the checks found that fs fix acts on ----------------------------------------------


@dataclass(frozen=True)
class OrphanLink:
    """A `_layers` link whose blob data is gone: what `fs fix` quarantines.

    `rel` is the link's path relative to the v2 folder (any backend); `path` is that link on a
    filesystem registry.
    """

    registry: RegistryStorage
    repository: str
    digest: Digest
    rel: str
    finding: Finding

    @property
    def path(self) -> Path:
        """The link file of a filesystem registry."""
        return self.registry.v2 / self.rel


@dataclass(frozen=True)
class ChildAssessment:
    """What is known about an orphan child: data state, referenced blobs, whether relinkable."""

    blob_data: str
    media_type: str | None
    blobs: tuple[dict[str, object], ...]
    relinkable: bool
    reason: str


@dataclass(frozen=True)
class OrphanChild:
    """An index child without a revision link in its repository (one per repository and child).

    `rel` is the missing revision link's path relative to the v2 folder; `link_path` is that
    path on a filesystem registry.
    """

    registry: RegistryStorage
    repository: str
    digest: Digest
    rel: str
    relinkable: bool
    reason: str
    findings: tuple[Finding, ...]

    @property
    def link_path(self) -> Path:
        """The revision link to create, on a filesystem registry."""
        return self.registry.v2 / self.rel


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


@dataclass
class RepositoryChecks:
    """What the checks found in one repository (`verifier.storage.checks.check_repository`)."""

    findings: list[Finding] = field(default_factory=list)
    orphan_links: list[OrphanLink] = field(default_factory=list)
    orphan_children: list[OrphanChild] = field(default_factory=list)
    #: `image_blob_missing` and `layer_link_missing` findings (also in `findings`)
    image_findings: list[Finding] = field(default_factory=list)


class StorageReader(Protocol):
    """What the scan and the GC preview read a registry through: the filesystem reader
    (`verifier.storage.read.FilesystemReader`) or the object-store one
    (`verifier.storage.objectread.ObjectStoreReader`); both fill the same records."""

    def list_blobs(self, registry: RegistryStorage, *, with_sizes: bool = False) -> BlobStore:
        """The registry's ``blobs/sha256`` store, listed once."""
        ...

    def iter_repositories(
        self, registry: RegistryStorage, findings: list[Finding]
    ) -> Iterator[RepoLinks]:
        """Every repository, read, one at a time; problems on the way go to `findings`."""
        ...

    def manifest_reader(
        self, registry: RegistryStorage, limit: int, *, follow: bool = True
    ) -> ManifestReader:
        """Reads a blob's data by digest, at most `limit` bytes."""
        ...

    def read_sweep_listing(self, registry: RegistryStorage, blobs: BlobStore) -> SweepListing:
        """What garbage-collect's sweep meets besides the sha256 store."""
        ...
