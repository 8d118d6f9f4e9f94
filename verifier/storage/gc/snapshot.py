"""One pass over a registry: everything either garbage-collect line reads, gathered once.

Each repository's tags, revision links and layer links are read once
(`verifier.storage.scan.iter_repositories`), the sha256 blob store is listed once
(`verifier.storage.scan.list_blobs`), and what the shared scanner does not look at is read here:
which of ``_layers``/``_manifests``/``_manifests/tags`` a repository folder holds (the two lines
discover repositories differently), stray files among the tags, and blobs stored under another
digest algorithm (the sweep walks all of ``blobs/``).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

from verifier.model.findings import Finding, Kind
from verifier.storage.defaults import GcVersion
from verifier.storage.gc.options import GcOptions
from verifier.storage.layout import ALGORITHM, RegistryStorage, parse_digest
from verifier.storage.scan import BlobStore, RepoLinks, iter_repositories, list_blobs

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
    has_manifests_dir: bool = True
    has_tags_dir: bool = True
    has_layers_dir: bool = True
    #: entries of ``_manifests/tags`` that are not folders (``Tags.Lookup`` fails on them)
    stray_tag_entries: list[str] = field(default_factory=list)
    #: tag ``current/link`` files whose content is not a digest (``Tags.Lookup`` fails on them)
    bad_tag_links: list[str] = field(default_factory=list)
    #: revision links whose content is not a digest (the revision enumeration fails on them)
    bad_revision_links: list[str] = field(default_factory=list)
    #: revision links naming another digest than their folder: folder hex → named hex
    redirected_revisions: dict[str, str] = field(default_factory=dict)

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


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


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


def _stray_tag_entries(tags_dir: str) -> list[str]:
    """Entries of ``_manifests/tags`` that are neither folders nor symlinks (those are reported
    by the shared scanner)."""
    try:
        with os.scandir(tags_dir) as it:
            return sorted(
                e.path for e in it if not e.is_dir(follow_symlinks=False) and not e.is_symlink()
            )
    except OSError:
        return []


# go-digest's algorithms the registry binary links in, and their hex lengths.
_GO_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX = re.compile(r"[a-f0-9]+")


def _other_algorithms(registry: RegistryStorage, snapshot: RegistrySnapshot) -> None:
    """Blobs under ``blobs/<algorithm>`` for every algorithm but sha256, as ``blobStore.Enumerate``
    reads their paths (``digestFromPath`` then ``Validate``): a valid digest is a sweep
    candidate, anything else makes the enumeration fail."""
    root = os.path.join(str(registry.v2), "blobs")
    try:
        with os.scandir(root) as it:
            algos = sorted(e.name for e in it if e.name != ALGORITHM and e.is_dir())
    except OSError:
        return
    for algo in algos:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, algo), followlinks=True):
            dirnames.sort()
            if "data" not in filenames:
                continue
            rel = os.path.relpath(dirpath, root).split(os.sep)
            hex_ = rel[-1]
            size = _GO_ALGORITHMS.get(algo)
            if (
                len(rel) == 3
                and size is not None
                and len(hex_) == size
                and _HEX.fullmatch(hex_)
                and rel[1] == hex_[:2]
            ):
                try:
                    snapshot.other_blobs[f"{algo}:{hex_}"] = os.stat(
                        os.path.join(dirpath, "data")
                    ).st_size
                except OSError:
                    continue
            elif snapshot.sweep_error is None:
                # go-digest's errors, as 2.8.2 prints them.
                why = "invalid checksum digest format" if size else "unsupported digest algorithm"
                snapshot.sweep_error = f"{os.path.join(dirpath, 'data')}: {why}"


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


def gather(registry: RegistryStorage, options: GcOptions) -> RegistrySnapshot:
    """List the blob store once and read every repository's links once."""
    blobs = list_blobs(registry, with_sizes=True)
    findings: list[Finding] = [f for f in blobs.findings if _relevant(f.path or "", options)]
    walk_findings: list[Finding] = []
    repos: list[GcRepository] = []
    others: list[RepoLinks] = []
    for links in iter_repositories(registry, walk_findings):
        manifests = os.path.join(links.path, "_manifests")
        layers = os.path.join(links.path, "_layers")
        repo = GcRepository(
            links.name,
            links,
            has_manifests_dir=_is_dir(manifests),
            has_tags_dir=_is_dir(os.path.join(manifests, "tags")),
            has_layers_dir=_is_dir(layers),
        )
        if not (repo.has_manifests_dir or repo.has_layers_dir):
            others.append(links)
            continue
        if repo.has_tags_dir:
            repo.stray_tag_entries = _stray_tag_entries(os.path.join(manifests, "tags"))
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
        repos.append(repo)
    findings.extend(f for f in walk_findings if _relevant(f.path or "", options))
    repos.sort(key=GcRepository.walk_key)
    snapshot = RegistrySnapshot(registry, blobs, repos, others, findings)
    _other_algorithms(registry, snapshot)
    snapshot.sweep_error = snapshot.sweep_error or _sha256_sweep_error(blobs)
    return snapshot
