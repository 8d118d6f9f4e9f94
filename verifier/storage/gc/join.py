"""The join: every tag's reference graph against a `GcPlan`.

The same for both lines. For each tag, walk tag → manifest or index → children → config and
layers inside its repository (how the registry serves a pull) and compare today's storage with
the storage the plan leaves, to report the tags that would become unpullable (`gc_would_break`)
and the objects that would be deleted while a tag still references them
(`gc_would_delete_referenced`); then list every blob the plan deletes with its size and what
references it, and the bytes freed per repository.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from verifier.model.findings import Finding, Kind, Severity
from verifier.storage.defaults import GcVersion
from verifier.storage.gc.manifests import ManifestLookup, ManifestRefs
from verifier.storage.gc.options import GcOptions
from verifier.storage.gc.plan import PREFIX as _PREFIX
from verifier.storage.gc.plan import GcPlan
from verifier.storage.gc.snapshot import GcRepository, RegistrySnapshot
from verifier.storage.layout import (
    RegistryStorage,
    blob_data_rel,
    digest_from_hex,
    layer_link_rel,
    parse_digest,
    revision_link_rel,
)
from verifier.storage.records import BlobStore, RepoLinks

#: At most this many tags are listed in one finding's details (the count is always exact).
MAX_TAGS_LISTED = 50
#: At most this many chain entries are spelled out in a `gc_would_break` message.
MAX_CHAIN_IN_MESSAGE = 3


@dataclass(frozen=True)
class ChainLink:
    """One object in a tag's reference graph that the GC would delete something of."""

    #: digests from the tagged manifest down to this object's parent
    parents: tuple[str, ...]
    role: str
    digest: str
    platform: str | None
    #: what of it would go: "revision link", "layer link", "blob data"
    loses: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "parents": list(self.parents),
            "role": self.role,
            "digest": self.digest,
            "platform": self.platform,
            "loses": list(self.loses),
        }

    def describe(self) -> str:
        """E.g. ``layer sha256:1234567890ab of child sha256:abcdef012345 [linux/arm64]: blob
        data deleted``."""
        text = f"{self.role} {_short(self.digest)}"
        if len(self.parents) > 1:
            text += f" of {_short(self.parents[-1])}"
        if self.platform:
            text += f" [{self.platform}]"
        return f"{text}: {' and '.join(self.loses)} deleted"


def _short(digest: str) -> str:
    return digest[: len(_PREFIX) + 12]


def summarize_chain(losses: Sequence[ChainLink], limit: int = MAX_CHAIN_IN_MESSAGE) -> str:
    """One phrase per branch below the tagged manifest (a child and what of it goes, or a blob
    of a single-platform image), at most `limit` of them."""
    groups: dict[str, list[ChainLink]] = {}
    for link in losses:
        groups.setdefault(link.parents[1] if len(link.parents) > 1 else link.digest, []).append(
            link
        )
    parts: list[str] = []
    for key, links in groups.items():
        head = next((link for link in links if link.digest == key), None)
        below = [link for link in links if link is not head]
        if head is not None:
            text = head.describe()
        else:
            platform = below[0].platform
            text = f"child {_short(key)}{f' [{platform}]' if platform else ''} keeps its link"
        if below:
            kinds = sorted({name for link in below for name in link.loses})
            text += f", and {len(below)} of its blobs lose their {' and '.join(kinds)}"
        parts.append(text)
    shown = "; ".join(parts[:limit])
    if len(parts) > limit:
        shown += f"; +{len(parts) - limit} more"
    return shown


@dataclass
class TagGraph:
    """A tagged manifest's reference graph, judged before and after the GC."""

    pullable_now: bool = True
    pullable_after: bool = True
    losses: list[ChainLink] = field(default_factory=list)
    media_type: str | None = None


def evaluate_graph(
    repo: GcRepository,
    root_hex: str,
    blobs: BlobStore,
    lookup: ManifestLookup,
    plan: GcPlan,
    *,
    manifests_via_layers: bool = True,
) -> TagGraph:
    """Walk tag → manifest or index → children → config and layers inside one repository (how
    the registry serves a pull: every manifest needs its revision link and data, every blob its
    ``_layers`` link and data) and compare today's storage with the predicted one.

    2.8 also serves a manifest through a ``_layers`` link (`manifests_via_layers`):
    ``manifestLinkPathFns`` in ``registry/storage/registry.go`` tries the revision link, then
    the layer link, because 2.1.0 linked manifests into ``_layers``."""
    graph = TagGraph()
    deleted_revs = plan.deleted_revisions.get(repo.name, set())
    deleted_layers = plan.deleted_layer_links.get(repo.name, set())
    seen: set[tuple[str, str]] = set()
    # (digest, role, platform, parents)
    stack: list[tuple[str, str, str | None, tuple[str, ...]]] = [
        (_PREFIX + root_hex, "manifest", None, ())
    ]
    while stack:
        digest, role, platform, parents = stack.pop()
        is_manifest = role in ("manifest", "child", "attestation")
        if (digest, "m" if is_manifest else "b") in seen:
            continue
        seen.add((digest, "m" if is_manifest else "b"))
        valid = parse_digest(digest)
        if valid is None:
            # Nothing this storage can hold: broken before and after alike.
            graph.pullable_now = graph.pullable_after = False
            continue
        hex_ = valid[len(_PREFIX) :]
        data_now = blobs.has(hex_) is not False
        data_after = data_now and hex_ not in plan.deleted_blobs
        layer_now = hex_ in repo.links.layers
        layer_after = layer_now and hex_ not in deleted_layers
        loses: tuple[str, ...] = ()
        if is_manifest:
            revision_now = hex_ in repo.links.revisions
            revision_after = revision_now and hex_ not in deleted_revs
            link_now = revision_now or (manifests_via_layers and layer_now)
            link_after = revision_after or (manifests_via_layers and layer_after)
            if revision_now and not revision_after:
                loses += ("revision link",)
        else:
            link_now, link_after = layer_now, layer_after
        if layer_now and not layer_after:
            loses += ("layer link",)
        if data_now and not data_after:
            loses += ("blob data",)
        if loses:
            graph.losses.append(ChainLink(parents, role, digest, platform, loses))
        graph.pullable_now &= link_now and data_now
        graph.pullable_after &= link_after and data_after
        if not is_manifest or not data_now:
            continue
        result = lookup(hex_)
        if not isinstance(result, ManifestRefs):
            graph.pullable_now = graph.pullable_after = False
            continue
        if not parents:
            graph.media_type = result.media_type
        below = (*parents, digest)
        for ref in reversed(result.references):
            # A config or layer is shown with the platform of the child it belongs to.
            stack.append((ref.digest, ref.role, ref.platform or platform, below))
    # Show the chain top-down, the way it was declared.
    graph.losses.sort(key=lambda link: len(link.parents))
    return graph


@dataclass
class RepositoryOutcome:
    """Per-repository numbers for the report."""

    name: str
    tags: int = 0
    tags_breaking: int = 0
    manifests_deleted: int = 0
    layer_links_deleted: int = 0
    blobs_deleted: int = 0
    bytes_freed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "tags": self.tags,
            "tags_breaking": self.tags_breaking,
            "manifests_deleted": self.manifests_deleted,
            "layer_links_deleted": self.layer_links_deleted,
            "blobs_deleted": self.blobs_deleted,
            "bytes_freed": self.bytes_freed,
        }


@dataclass
class RegistryOutcome:
    """One registry's prediction: the plan, the findings and the numbers."""

    snapshot: RegistrySnapshot
    plan: GcPlan
    findings: list[Finding] = field(default_factory=list)
    repositories: dict[str, RepositoryOutcome] = field(default_factory=dict)
    bytes_freed: int = 0
    unattributed_bytes: int = 0
    tags: int = 0
    tags_breaking: int = 0
    #: (repository, tag) → (pullable now, pullable after the GC), as the storage model says
    tag_states: dict[tuple[str, str], tuple[bool, bool]] = field(default_factory=dict)
    #: every blob the plan deletes, with its size and what references it (JSON-ready)
    deleted_blobs: list[dict[str, Any]] = field(default_factory=list)
    #: digest → "repository:tag" of the tags whose graph reaches a deleted blob
    blob_tags: dict[str, set[str]] = field(default_factory=dict)


def _finding(
    kind: Kind,
    message: str,
    registry: RegistryStorage,
    repository: str,
    **kw: Any,
) -> Finding:
    return Finding(
        kind=kind,
        severity=Severity.ERROR,
        message=message,
        registry=registry.name,
        repository=repository,
        **kw,
    )


@dataclass
class _Referenced:
    """An object that would be deleted while tags of its repository still reference it."""

    role: str
    platform: str | None
    loses: set[str] = field(default_factory=set)
    tags: list[str] = field(default_factory=list)
    parents: tuple[str, ...] = ()


def join_tags(
    snapshot: RegistrySnapshot, plan: GcPlan, lookup: ManifestLookup, options: GcOptions
) -> RegistryOutcome:
    """Findings and numbers: which tags would break, what referenced data would go, bytes."""
    registry, blobs = snapshot.registry, snapshot.blobs
    outcome = RegistryOutcome(snapshot, plan)
    for repo in snapshot.repositories:
        result = outcome.repositories[repo.name] = RepositoryOutcome(repo.name)
        result.tags = len(repo.links.tags)
        result.manifests_deleted = len(plan.deleted_revisions.get(repo.name, ()))
        result.layer_links_deleted = len(plan.deleted_layer_links.get(repo.name, ()))
        outcome.tags += result.tags
        referenced: dict[str, _Referenced] = {}
        for root_hex, tags in sorted(repo.tags_by_hex().items()):
            graph = evaluate_graph(
                repo,
                root_hex,
                blobs,
                lookup,
                plan,
                manifests_via_layers=options.version is GcVersion.V2_8,
            )
            root = digest_from_hex(root_hex)
            for tag in tags:
                outcome.tag_states[(repo.name, tag)] = (graph.pullable_now, graph.pullable_after)
            for link in graph.losses:
                if "blob data" in link.loses:
                    outcome.blob_tags.setdefault(link.digest, set()).update(
                        f"{repo.name}:{t}" for t in tags
                    )
                entry = referenced.get(link.digest)
                if entry is None:
                    entry = referenced[link.digest] = _Referenced(
                        link.role, link.platform, parents=link.parents
                    )
                entry.loses.update(link.loses)
                entry.tags.extend(tags)
            if not (graph.pullable_now and not graph.pullable_after):
                continue
            chain = summarize_chain(graph.losses)
            for tag in tags:
                result.tags_breaking += 1
                outcome.findings.append(
                    _finding(
                        Kind.GC_WOULD_BREAK,
                        f"{options.command} would make {repo.name}:{tag} unpullable: {chain}",
                        registry,
                        repo.name,
                        reference=tag,
                        digest=root,
                        media_type=graph.media_type,
                        path=repo.links.tags[tag][1],
                        details={
                            "gc_version": str(options.version),
                            "delete_untagged": options.delete_untagged,
                            "chain": [link.to_dict() for link in graph.losses],
                        },
                    )
                )
        outcome.tags_breaking += result.tags_breaking
        for digest, entry in sorted(referenced.items()):
            outcome.findings.append(_referenced_finding(snapshot, repo, digest, entry, options))
    _account_bytes(snapshot, plan, outcome)
    outcome.deleted_blobs = list_deleted_blobs(snapshot, plan, lookup, outcome.blob_tags)
    return outcome


def list_deleted_blobs(
    snapshot: RegistrySnapshot,
    plan: GcPlan,
    lookup: ManifestLookup,
    blob_tags: dict[str, set[str]] | None = None,
) -> list[dict[str, Any]]:
    """Every blob the plan deletes: digest, size and what references it — the repositories
    whose revision or ``_layers`` links name it, the revisions whose ``References()`` list it
    (whatever their tags), and the tags whose graph reaches it — to compare with a real run."""
    sizes = snapshot.blobs.sizes
    entries: dict[str, dict[str, Any]] = {}
    for hex_ in sorted(plan.deleted_blobs):
        entries[_PREFIX + hex_] = {"digest": _PREFIX + hex_, "size": sizes.get(hex_)}
    for digest in sorted(plan.deleted_other_blobs):
        entries[digest] = {"digest": digest, "size": snapshot.other_blobs.get(digest)}
    for entry in entries.values():
        entry.update(revision_links=[], layer_links=[], referenced_by=[])
        entry["tags"] = sorted((blob_tags or {}).get(entry["digest"], ()))[:MAX_TAGS_LISTED]
    if not entries:
        return []
    for repo in snapshot.repositories:
        for hex_ in plan.deleted_blobs & repo.links.revisions.keys():
            entries[_PREFIX + hex_]["revision_links"].append(repo.name)
        for hex_ in plan.deleted_blobs & repo.links.layers.keys():
            entries[_PREFIX + hex_]["layer_links"].append(repo.name)
        for hex_ in sorted(repo.links.revisions):
            if snapshot.blobs.has(hex_) is not True:
                continue
            manifest = lookup(hex_)
            if not isinstance(manifest, ManifestRefs):
                continue
            for ref in manifest.references:
                target = entries.get(ref.digest)
                if target is not None and len(target["referenced_by"]) < MAX_TAGS_LISTED:
                    target["referenced_by"].append(
                        {"repository": repo.name, "manifest": _PREFIX + hex_, "role": ref.role}
                    )
    return list(entries.values())


def _referenced_finding(
    snapshot: RegistrySnapshot,
    repo: GcRepository,
    digest: str,
    entry: _Referenced,
    options: GcOptions,
) -> Finding:
    valid = parse_digest(digest)
    assert valid is not None  # only digests that passed parse_digest are ever losses
    loses = sorted(entry.loses)
    if "blob data" in entry.loses:
        rel = blob_data_rel(valid)
    elif "revision link" in entry.loses:
        rel = revision_link_rel(repo.name, valid)
    else:
        rel = layer_link_rel(repo.name, valid)
    tags = sorted(set(entry.tags))
    shown = ", ".join(tags[:3]) + (f" (+{len(tags) - 3} more)" if len(tags) > 3 else "")
    what = f"{entry.role} {_short(digest)}"
    if len(entry.parents) > 1:
        what += f" of {_short(entry.parents[-1])}"
    if entry.platform:
        what += f" [{entry.platform}]"
    return _finding(
        Kind.GC_WOULD_DELETE_REFERENCED,
        f"{options.command} would delete the {' and '.join(loses)} of {what}, still "
        f"referenced by {repo.name}:{shown}",
        snapshot.registry,
        repo.name,
        reference=tags[0] if tags else "",
        digest=digest,
        platform=entry.platform,
        path=snapshot.registry.display(rel),
        details={
            "role": entry.role,
            "loses": loses,
            "tags": tags[:MAX_TAGS_LISTED],
            "tags_total": len(tags),
            "parents": list(entry.parents),
            "size": snapshot.blobs.sizes.get(valid[len(_PREFIX) :]),
        },
    )


def _account_bytes(snapshot: RegistrySnapshot, plan: GcPlan, outcome: RegistryOutcome) -> None:
    """Bytes freed: each deleted blob counted once per registry, and once in every repository
    that links it (``_layers`` or revision link); blobs no repository links are unattributed."""
    sizes = snapshot.blobs.sizes
    outcome.bytes_freed = sum(sizes.get(h, 0) for h in plan.deleted_blobs) + sum(
        snapshot.other_blobs.get(d, 0) for d in plan.deleted_other_blobs
    )
    attributed: set[str] = set()
    all_repos: Iterable[tuple[str, RepoLinks]] = [
        *((r.name, r.links) for r in snapshot.repositories),
        *((links.name, links) for links in snapshot.other_repositories),
    ]
    for name, links in all_repos:
        linked = (plan.deleted_blobs & links.layers.keys()) | (
            plan.deleted_blobs & links.revisions.keys()
        )
        if not linked:
            continue
        result = outcome.repositories.setdefault(name, RepositoryOutcome(name))
        result.blobs_deleted = len(linked)
        result.bytes_freed = sum(sizes.get(h, 0) for h in linked)
        attributed |= linked
    outcome.unattributed_bytes = sum(
        sizes.get(h, 0) for h in plan.deleted_blobs - attributed
    ) + sum(snapshot.other_blobs.get(d, 0) for d in plan.deleted_other_blobs)


