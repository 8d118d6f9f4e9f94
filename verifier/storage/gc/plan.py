"""What both garbage-collect models share: the plan, ``MarkAndSweep``'s skeleton, the sweep.

A model (`verifier.storage.gc.v28`, `verifier.storage.gc.v3`) re-runs the mark phase of its
line's ``MarkAndSweep`` (``registry/storage/garbagecollect.go``) over a `RegistrySnapshot` and
returns a `GcPlan`: what the real run would delete, or the error it would stop with. The loop
both lines run is `run_mark_and_sweep`; each line is a `GcLine` saying only what differs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from verifier.storage.gc.manifests import (
    ManifestLookup,
    ManifestRefs,
    ManifestShape,
    Unparseable,
    Unreadable,
)
from verifier.storage.gc.options import GcOptions
from verifier.storage.gc.snapshot import GcRepository, RegistrySnapshot
from verifier.storage.layout import ALGORITHM, parse_digest

PREFIX = ALGORITHM + ":"


@dataclass
class GcPlan:
    """What the real garbage-collect would do to one registry."""

    #: digests in ``markSet``
    marked: set[str] = field(default_factory=set)
    #: repository → hex of revisions whose revision link would be removed (``RemoveManifest``)
    deleted_revisions: dict[str, set[str]] = field(default_factory=dict)
    #: hex of sha256 blobs whose ``blobs/sha256/<xx>/<hex>`` folder would be removed
    deleted_blobs: set[str] = field(default_factory=set)
    #: digests of blobs stored under another algorithm (``blobs/sha512/...``) that would go
    deleted_other_blobs: set[str] = field(default_factory=set)
    #: 3.x only: repository → hex of ``_layers`` links that would be removed (``RemoveLayer``)
    deleted_layer_links: dict[str, set[str]] = field(default_factory=dict)
    #: the error the real run would stop with during the mark phase (then nothing is deleted)
    abort: str | None = None
    #: the error the real run would stop with after removing the manifests (blobs survive)
    sweep_error: str | None = None
    #: reasons the prediction may differ from the real run
    uncertain: list[str] = field(default_factory=list)
    #: revisions the enumeration would hand to the mark function
    manifests_enumerated: int = 0

    @property
    def manifests_deleted(self) -> int:
        """Revision links the run would remove."""
        return sum(len(v) for v in self.deleted_revisions.values())

    @property
    def layer_links_deleted(self) -> int:
        """``_layers`` links the run would remove (3.x)."""
        return sum(len(v) for v in self.deleted_layer_links.values())

    @property
    def blobs_deleted(self) -> int:
        """Blob folders the run would remove, every algorithm."""
        return len(self.deleted_blobs) + len(self.deleted_other_blobs)

    @property
    def stops(self) -> str | None:
        """The error the real run would end with, if any (exit status 1)."""
        return self.abort or self.sweep_error


class GcAbort(Exception):
    """The real garbage-collect would return this error from its mark phase."""


def manifest_exists(repo: GcRepository, snapshot: RegistrySnapshot, digest: str) -> bool:
    """3.x's ``manifestService.Exists``: a revision link in this repository and the blob data.

    Only the revision link: were 2.8's ``_layers`` fallback (``manifestLinkPathFns``) still
    consulted, ``markManifestReferences`` would descend into every config and layer (they all
    have ``_layers`` links) and fail to parse them, i.e. no 3.x collection would ever finish.
    An invalid digest cannot name a link path; distribution's error is ignored by the caller
    (``if ok, _ := manifestService.Exists(...)``), i.e. it counts as "does not exist".
    """
    valid = parse_digest(digest)
    if valid is None:
        return False
    hex_ = valid[len(PREFIX) :]
    return hex_ in repo.links.revisions and snapshot.blobs.has(hex_) is True


def get_manifest(
    lookup: ManifestLookup, hex_: str, plan: GcPlan, *, schema1: bool = True
) -> ManifestRefs | None:
    """``manifestService.Get`` in the mark phase: an unparseable manifest (and on 3.x a schema1
    one) stops the real run; one we could not read makes the prediction uncertain."""
    result = lookup(hex_)
    reason = None
    if isinstance(result, Unparseable):
        reason = result.reason
    elif isinstance(result, ManifestRefs) and not schema1 and result.shape is ManifestShape.SCHEMA1:
        reason = "manifest schema v1 unsupported"
    if reason is not None:
        raise GcAbort(
            f"failed to mark: failed to retrieve manifest for digest {PREFIX}{hex_}: {reason}"
        )
    if isinstance(result, Unreadable):
        plan.uncertain.append(f"cannot read manifest {PREFIX}{hex_} ({result.reason})")
        return None
    assert isinstance(result, ManifestRefs)
    return result


def tags_lookup_error(repo: GcRepository, digest: str) -> str | None:
    """Why ``Tags.Lookup`` (``registry/storage/tagstore.go``) would fail in this repository.

    ``Lookup`` lists ``_manifests/tags`` and reads every entry's ``current/link``: a stray file
    there cannot hold one (the read fails with "not a directory", not "not found"), and a link
    that is not a digest fails ``digest.Parse``. Either stops ``--delete-untagged``.
    """
    if repo.stray_tag_entries:
        return (
            f"failed to mark: failed to retrieve tags for digest {digest}: open "
            f"{repo.stray_tag_entries[0]}/current/link: not a directory"
        )
    if repo.bad_tag_links:
        return (
            f"failed to mark: failed to retrieve tags for digest {digest}: "
            f"{repo.bad_tag_links[0]}: invalid checksum digest format"
        )
    return None


def check_repository(repo: GcRepository) -> None:
    """What stops the mark phase as soon as a repository is enumerated: a name
    ``reference.WithName`` refuses, or a revision link that is not a digest
    (``linkedBlobStore.Enumerate`` → ``readlink`` → ``digest.Parse``)."""
    if not repo.valid_name:
        raise GcAbort(f"failed to mark: failed to parse repo name {repo.name}")
    if repo.bad_revision_links:
        raise GcAbort(
            f"failed to mark: {repo.bad_revision_links[0]}: invalid checksum digest format"
        )


def enumerated_revisions(
    repo: GcRepository, snapshot: RegistrySnapshot, plan: GcPlan, *, via_layers: bool
) -> list[str]:
    """``linkedBlobStore.Enumerate`` over ``_manifests/revisions``: in the walk's sorted order,
    the hex each link *names*, when ``Stat`` resolves it — through that digest's revision link
    or, on 2.8 (`via_layers`, ``manifestLinkPathFns``), its ``_layers`` link — and its blob data
    exists (``ErrBlobUnknown`` → "we expect this error to occur so we move on")."""
    out: list[str] = []
    seen: set[str] = set()
    folders = sorted({*repo.links.revisions, *repo.redirected_revisions})
    for folder in folders:
        hex_ = repo.redirected_revisions.get(folder, folder)
        linked = hex_ in repo.links.revisions or (via_layers and hex_ in repo.links.layers)
        if not linked or hex_ in seen:
            continue
        present = snapshot.blobs.has(hex_)
        if present is None:
            plan.uncertain.append(
                f"{repo.name}: blob data of revision {PREFIX}{hex_} not examinable"
            )
        elif present:
            seen.add(hex_)
            out.append(hex_)
    plan.manifests_enumerated += len(out)
    return out


def sweep(snapshot: RegistrySnapshot, plan: GcPlan) -> None:
    """The sweep of both lines: ``blobStore.Enumerate`` walks everything under ``blobs/`` (every
    digest algorithm) and every blob whose digest is not in ``markSet`` is deleted."""
    blobs = snapshot.blobs
    plan.deleted_blobs = {h for h in blobs.present if PREFIX + h not in plan.marked}
    plan.deleted_other_blobs = {d for d in snapshot.other_blobs if d not in plan.marked}
    if snapshot.sweep_error is not None:
        # ``digestFromPath`` fails on a path that is not a valid digest: the run stops with
        # "error enumerating blobs" after removing the manifests and before deleting any blob.
        plan.sweep_error = f"error enumerating blobs: {snapshot.sweep_error}"
        plan.deleted_blobs = set()
        plan.deleted_other_blobs = set()
    if blobs.unknown:
        plan.uncertain.append(
            f"{len(blobs.unknown)} blob(s) whose data could not be examined (symlink or "
            "unreadable); distribution may delete or keep them"
        )


class GcLine(ABC):
    """What one distribution line's ``MarkAndSweep`` does differently from the other."""

    #: ``manifestLinkPathFns``: whether a revision also resolves through its ``_layers`` link
    via_layers: bool
    #: ``unmarkReferencedManifest``: whether an untagged revision that ended up marked (an
    #: index child) is kept
    unmark_referenced: bool

    @abstractmethod
    def enumerates(self, repo: GcRepository) -> bool:
        """Whether ``registry.Enumerate`` (``catalog.go``) discovers this repository folder."""

    @abstractmethod
    def untagged_without_tags_folder(self, repo: GcRepository) -> None:
        """``--delete-untagged`` meets an untagged revision in a repository without
        ``_manifests/tags``: raise `GcAbort` to stop, return to leave the revision alone."""

    @abstractmethod
    def mark_references(
        self,
        hex_: str,
        repo: GcRepository,
        snapshot: RegistrySnapshot,
        lookup: ManifestLookup,
        plan: GcPlan,
    ) -> None:
        """Mark what the marked manifest `hex_` references."""

    @abstractmethod
    def after_manifests(
        self, repo: GcRepository, snapshot: RegistrySnapshot, plan: GcPlan
    ) -> None:
        """What the line does in a repository once its manifests are marked (3.x: layers)."""


def run_mark_and_sweep(
    snapshot: RegistrySnapshot, lookup: ManifestLookup, options: GcOptions, line: GcLine
) -> GcPlan:
    """``MarkAndSweep`` of `line` on `snapshot`: mark every enumerated repository's revisions
    (with ``--delete-untagged`` collect the untagged ones in ``manifestArr`` instead), remove
    ``manifestArr``'s revision links, sweep unmarked blobs. Deletes nothing."""
    plan = GcPlan()
    manifest_arr: list[tuple[str, str]] = []
    try:
        for repo in snapshot.repositories:
            if not line.enumerates(repo):
                continue
            check_repository(repo)
            tags_by_hex = repo.tags_by_hex() if options.delete_untagged else {}
            for hex_ in enumerated_revisions(repo, snapshot, plan, via_layers=line.via_layers):
                digest = PREFIX + hex_
                if options.delete_untagged:
                    error = tags_lookup_error(repo, digest)
                    if error is not None:
                        raise GcAbort(error)
                    if not tags_by_hex.get(hex_):
                        if repo.has_tags_dir:
                            manifest_arr.append((repo.name, hex_))
                        else:
                            line.untagged_without_tags_folder(repo)
                        continue
                plan.marked.add(digest)
                line.mark_references(hex_, repo, snapshot, lookup, plan)
            line.after_manifests(repo, snapshot, plan)
    except GcAbort as exc:
        return GcPlan(abort=str(exc), uncertain=plan.uncertain)
    for repo_name, hex_ in manifest_arr:
        if line.unmark_referenced and PREFIX + hex_ in plan.marked:
            continue
        plan.deleted_revisions.setdefault(repo_name, set()).add(hex_)
    sweep(snapshot, plan)
    return plan


__all__ = [
    "GcAbort",
    "GcLine",
    "GcOptions",
    "GcPlan",
    "PREFIX",
    "check_repository",
    "enumerated_revisions",
    "get_manifest",
    "manifest_exists",
    "run_mark_and_sweep",
    "sweep",
    "tags_lookup_error",
]
