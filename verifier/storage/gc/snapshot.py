"""Everything either garbage-collect line reads from one registry, assembled from records.

Pure: a reader hands over the listed sha256 blob store (`BlobStore`), every repository read once
(`RepoLinks`, with which of ``_layers``/``_manifests``/``_manifests/tags`` it holds: the two
lines discover repositories differently, and the stray files among its tags) and what the sweep
meets beyond ``blobs/sha256`` (`SweepListing`); `assemble_snapshot` turns them into the
`RegistrySnapshot` both models run on. On a filesystem `verifier.storage.gc_preview.gather`
reads them through `verifier.storage.read`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from verifier.model.findings import Finding, Kind
from verifier.storage.defaults import GcVersion
from verifier.storage.gc.options import GcOptions
from verifier.storage.layout import ALGORITHM, RegistryStorage, parse_digest
from verifier.storage.records import BlobStore, RepoLinks, SweepListing

# distribution/reference's anchored name grammar (reference.WithName): an optional domain,
# then lowercase path components; at most 255 characters. garbage-collect stops with "failed to
# parse repo name" on a repository folder that does not match it.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
_REPO_NAME = re.compile(rf"(?:{_DOMAIN}/)?{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*")
_NAME_TOTAL_LENGTH_MAX = 255


def valid_repository_name(name: str) -> bool:
    """Whether distribution's ``reference.WithName`` accepts `name`."""
    return len(name) <= _NAME_TOTAL_LENGTH_MAX and _REPO_NAME.fullmatch(name) is not None


@dataclass
class GcRepository:
    """One repository as garbage-collect sees it, read once."""

    name: str
    links: RepoLinks
    #: tag ``current/link`` files whose content is not a digest (``Tags.Lookup`` fails on them)
    bad_tag_links: list[str] = field(default_factory=list)
    #: revision links whose content is not a digest (the revision enumeration fails on them)
    bad_revision_links: list[str] = field(default_factory=list)
    #: revision links naming another digest than their folder: folder hex → named hex
    redirected_revisions: dict[str, str] = field(default_factory=dict)

    @property
    def has_manifests_dir(self) -> bool:
        """``_manifests`` is a real folder (3.x discovers repositories by it)."""
        return self.links.has_manifests_dir

    @property
    def has_tags_dir(self) -> bool:
        """``_manifests/tags`` is a real folder."""
        return self.links.has_tags_dir

    @property
    def has_layers_dir(self) -> bool:
        """``_layers`` is a real folder (2.8 discovers repositories by it)."""
        return self.links.has_layers_dir

    @property
    def stray_tag_entries(self) -> list[str]:
        """Entries of ``_manifests/tags`` that are not folders (``Tags.Lookup`` fails on them)."""
        return self.links.stray_tag_entries

    @property
    def valid_name(self) -> bool:
        """Whether ``reference.WithName`` accepts the folder's name."""
        return valid_repository_name(self.name)

    def walk_key(self) -> tuple[str, ...]:
        """distribution walks ``repositories/`` depth-first with sorted names and takes a folder
        as a repository when it meets its ``_layers`` (2.8) or ``_manifests`` (3.x)
        (``handleRepository`` in ``registry/storage/catalog.go``); both sort between the names
        below ``_`` and the lowercase ones, so ``a/0x`` comes before ``a`` but ``a/b`` after."""
        return (*self.name.split("/"), "_")

    def tags_by_hex(self) -> dict[str, list[str]]:
        """hex → the tags whose ``current/link`` names it: ``Tags.Lookup`` as one dictionary."""
        out: dict[str, list[str]] = {}
        for tag, (hex_, _) in sorted(self.links.tags.items()):
            if hex_ is not None:
                out.setdefault(hex_, []).append(tag)
        return out


@dataclass
class RegistrySnapshot:
    """Everything garbage-collect would read from one registry, gathered in one pass."""

    registry: RegistryStorage
    blobs: BlobStore
    #: folders holding ``_layers`` or ``_manifests``, in distribution's walk order; each line
    #: enumerates only some of them
    repositories: list[GcRepository]
    #: folders holding only ``_uploads`` (never enumerated by garbage-collect)
    other_repositories: list[RepoLinks]
    #: storage findings that touch what garbage-collect reads (turned into warnings)
    findings: list[Finding]
    #: blobs under another digest algorithm: digest → size
    other_blobs: dict[str, int] = field(default_factory=dict)
    #: why ``blobStore.Enumerate`` would fail on a path under ``blobs/``, if it would
    sweep_error: str | None = None


def _relevant(path: str, options: GcOptions) -> bool:
    """Whether a storage finding at `path` is about something this garbage-collect reads."""
    if "/_uploads/" in path or path.endswith("/_uploads"):
        return False
    if "/_layers/" in path or path.endswith("/_layers"):
        # Only the 3.x line enumerates _layers (to delete links of unmarked blobs).
        return options.version is GcVersion.V3
    if "/_manifests/tags/" in path or path.endswith("/_manifests/tags"):
        # Tags are read only by --delete-untagged (Tags.Lookup / Tags.All).
        return options.delete_untagged
    return True


_UNFOLLOWED_LINK = re.compile(r"/(_manifests/revisions|_layers)/sha256/([0-9a-f]{64})/link$")


def _assume_link(links: RepoLinks, f: Finding) -> bool:
    """A revision or layer link we did not read (a symlink, or unreadable) is assumed to be the
    well-formed link distribution would read through it, so the prediction follows the common
    case; the finding still makes the report incomplete."""
    if f.kind not in (Kind.UNEXPECTED_SYMLINK, Kind.UNREADABLE_FILE):
        return False
    match = _UNFOLLOWED_LINK.search(f.path or "")
    if match is None:
        return False
    target = links.revisions if match.group(1) == "_manifests/revisions" else links.layers
    target[match.group(2)] = f.path or ""
    return True


def assemble_snapshot(
    registry: RegistryStorage,
    blobs: BlobStore,
    repos: Iterable[RepoLinks],
    walk_findings: list[Finding],
    sweep: SweepListing,
    options: GcOptions,
) -> RegistrySnapshot:
    """The snapshot garbage-collect would read: `blobs` (listed with sizes), every repository
    as the reader read it, the findings of the repository walk (read after `repos` is
    consumed, so a reader may append to it while yielding) and the sweep's extra listing."""
    findings: list[Finding] = [f for f in blobs.findings if _relevant(f.path or "", options)]
    gc_repos: list[GcRepository] = []
    others: list[RepoLinks] = []
    for links in repos:
        repo = GcRepository(links.name, links)
        if not (repo.has_manifests_dir or repo.has_layers_dir):
            others.append(links)
            continue
        for f in links.findings:
            path = f.path or ""
            if not _relevant(path, options):
                continue
            findings.append(f)
            if _assume_link(links, f) or f.kind is not Kind.INVALID_LINK:
                continue
            if path.endswith("/current/link"):
                repo.bad_tag_links.append(path)
            elif "/_manifests/revisions/" in path and path.endswith("/link"):
                named = parse_digest(f.actual_digest or "")
                if named is None:
                    repo.bad_revision_links.append(path)
                elif f.digest:
                    # distribution enumerates the digest the link names, not its folder's.
                    repo.redirected_revisions[f.digest[len(ALGORITHM) + 1 :]] = named[
                        len(ALGORITHM) + 1 :
                    ]
        gc_repos.append(repo)
    findings.extend(f for f in walk_findings if _relevant(f.path or "", options))
    gc_repos.sort(key=GcRepository.walk_key)
    return RegistrySnapshot(
        registry, blobs, gc_repos, others, findings, dict(sweep.other_blobs), sweep.sweep_error
    )


# go-digest's algorithms the registry binary links in, and their hex lengths.
_GO_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX = re.compile(r"[a-f0-9]+")


def sweep_path_error(parts: list[str]) -> str | None:
    """How ``blobStore.Enumerate`` takes a ``data`` file at ``blobs/<parts...>/data``
    (``digestFromPath`` then ``Validate``): None for a valid digest (a sweep candidate), else
    go-digest's error as 2.8.2 prints it (the enumeration, and the sweep, stop on it)."""
    algo, hex_ = parts[0], parts[-1]
    size = _GO_ALGORITHMS.get(algo)
    if (
        len(parts) == 3
        and size is not None
        and len(hex_) == size
        and _HEX.fullmatch(hex_)
        and parts[1] == hex_[:2]
    ):
        return None
    return "invalid checksum digest format" if size else "unsupported digest algorithm"
