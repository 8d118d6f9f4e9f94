"""Predict what distribution's ``garbage-collect`` would delete and which tags it would break.

One model per distribution line, chosen with ``--gc-version``, each re-running its line's
``MarkAndSweep`` (``registry/storage/garbagecollect.go``) without deleting anything:

* `verifier.storage.gc.v28` — ``release/2.8`` (Debian's ``docker-registry``, ``registry:2``);
* `verifier.storage.gc.v3` — ``main`` (``registry:3``).

Both read one `verifier.storage.gc.snapshot.RegistrySnapshot` (every link read once, the blob
store listed once, each manifest parsed at most once) and return a
`verifier.storage.gc.plan.GcPlan`; `verifier.storage.gc.join` then holds the plan against every
tag's reference graph. This module runs the three for each registry of a layout and builds the
report.

Speed: the real 2.8 ``--delete-untagged`` calls ``Tags.Lookup`` for every revision, and
``Lookup`` re-reads every tag's ``current/link`` (quadratic in a repository with thousands of
tags); here ``Lookup`` is a dictionary look-up.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from verifier.model.findings import Finding, Report, Severity
from verifier.storage.defaults import GcVersion
from verifier.storage.gc import v3, v28
from verifier.storage.gc.join import (
    ChainLink,
    RegistryOutcome,
    RepositoryOutcome,
    TagGraph,
    evaluate_graph,
    join_tags,
    list_deleted_blobs,
    summarize_chain,
)
from verifier.storage.gc.manifests import (
    ManifestLookup,
    ManifestRefs,
    ManifestRefsCache,
    ManifestShape,
    Reference,
    Unparseable,
    Unreadable,
    manifest_references,
)
from verifier.storage.gc.options import GcOptions
from verifier.storage.gc.plan import GcPlan
from verifier.storage.gc.snapshot import (
    GcRepository,
    RegistrySnapshot,
    assemble_snapshot,
    valid_repository_name,
)
from verifier.storage.layout import RegistryStorage, StorageLayout
from verifier.storage.read import FilesystemReader
from verifier.storage.records import BlobStoreState, StorageReader

#: At most this many repositories get their own note line (all are in the JSON `gc_preview`).
MAX_REPOSITORY_NOTES = 20

__all__ = [
    "ChainLink",
    "GcOptions",
    "GcPlan",
    "GcRepository",
    "GcVersion",
    "ManifestLookup",
    "ManifestRefs",
    "ManifestRefsCache",
    "ManifestShape",
    "Reference",
    "RegistryOutcome",
    "RegistrySnapshot",
    "RepositoryOutcome",
    "TagGraph",
    "Unparseable",
    "Unreadable",
    "assemble_snapshot",
    "evaluate_graph",
    "gather",
    "join_tags",
    "list_deleted_blobs",
    "manifest_references",
    "preview_registry",
    "preview_storage",
    "simulate_gc",
    "summarize_chain",
    "valid_repository_name",
]

_MODELS = {GcVersion.V2_8: v28.mark_and_sweep, GcVersion.V3: v3.mark_and_sweep}


def simulate_gc(snapshot: RegistrySnapshot, lookup: ManifestLookup, options: GcOptions) -> GcPlan:
    """The plan of the chosen line's garbage-collect on `snapshot`; deletes nothing."""
    return _MODELS[options.version](snapshot, lookup, options)


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def gather(
    registry: RegistryStorage, options: GcOptions, reader: StorageReader | None = None
) -> RegistrySnapshot:
    """Read a registry once (blob store, every repository, the rest of ``blobs/``) and
    assemble what garbage-collect would read; `reader` defaults to the filesystem's."""
    reader = reader or FilesystemReader()
    blobs = reader.list_blobs(registry, with_sizes=True)
    walk_findings: list[Finding] = []
    repos = list(reader.iter_repositories(registry, walk_findings))
    sweep = reader.read_sweep_listing(registry, blobs)
    return assemble_snapshot(registry, blobs, repos, walk_findings, sweep, options)


def preview_registry(
    registry: RegistryStorage, options: GcOptions, reader: StorageReader | None = None
) -> RegistryOutcome:
    """Gather, simulate and join for one registry (on a filesystem unless `reader` says)."""
    reader = reader or FilesystemReader()
    snapshot = gather(registry, options, reader)
    read = reader.manifest_reader(registry, options.max_manifest_bytes, follow=False)
    lookup = ManifestRefsCache(registry, read)
    plan = simulate_gc(snapshot, lookup, options)
    if plan.abort is not None:
        return RegistryOutcome(snapshot, plan)
    return join_tags(snapshot, plan, lookup, options)


def _registry_notes(outcome: RegistryOutcome, options: GcOptions) -> list[str]:
    snapshot, plan = outcome.snapshot, outcome.plan
    label = snapshot.registry.label
    notes: list[str] = []
    links = sum(len(r.links.revisions) + len(r.links.layers) for r in snapshot.repositories)
    if snapshot.blobs.state in (BlobStoreState.MISSING, BlobStoreState.EMPTY) and links:
        notes.append(
            f"registry {label}: blob store {snapshot.blobs.state} while {links} links exist "
            "(unmounted or half-synced volume?); do not run garbage-collect on it"
        )
    if plan.abort is not None:
        notes.append(
            f"registry {label}: the real {options.command} would stop with "
            f'"{plan.abort}" before deleting anything; repair that first (regverify fs scan)'
        )
        return notes
    if plan.sweep_error is not None:
        notes.append(
            f"registry {label}: the real {options.command} would remove the manifest revision "
            f'links listed, then stop with "{plan.sweep_error}" before deleting any blob '
            "(exit status 1); repair that first"
        )
    for reason in dict.fromkeys(plan.uncertain):
        notes.append(f"registry {label}: prediction uncertain: {reason}")
    if options.version is GcVersion.V2_8:
        unseen = [
            r.name for r in snapshot.repositories if r.links.revisions and not r.has_layers_dir
        ]
        if unseen:
            notes.append(
                f"registry {label}: {len(unseen)} repository(ies) without a _layers folder "
                f"({', '.join(unseen[:5])}{', ...' if len(unseen) > 5 else ''}): 2.8 never "
                "enumerates them, so everything only they reference is swept"
            )
    layer_part = (
        f", {plan.layer_links_deleted} layer link(s)" if options.version is GcVersion.V3 else ""
    )
    notes.append(
        f"registry {label}: {options.command} would delete {plan.blobs_deleted} blob(s) "
        f"({_human_bytes(outcome.bytes_freed)}), {plan.manifests_deleted} manifest revision "
        f"link(s){layer_part}; {outcome.tags_breaking} of {outcome.tags} tag(s) would become "
        "unpullable"
    )
    ranked = sorted(
        (r for r in outcome.repositories.values() if r.bytes_freed or r.manifests_deleted),
        key=lambda r: (-r.bytes_freed, r.name),
    )
    for r in ranked[:MAX_REPOSITORY_NOTES]:
        notes.append(
            f"  {label}/{r.name}: {_human_bytes(r.bytes_freed)} freed ({r.blobs_deleted} "
            f"blob(s)), {r.manifests_deleted} manifest(s) deleted, {r.tags_breaking} tag(s) "
            "breaking"
        )
    if len(ranked) > MAX_REPOSITORY_NOTES:
        notes.append(f"  ... {len(ranked) - MAX_REPOSITORY_NOTES} more (see --format json)")
    if outcome.unattributed_bytes:
        notes.append(
            f"  {label}: {_human_bytes(outcome.unattributed_bytes)} in blobs no repository links"
        )
    return notes


def _as_warning(f: Finding) -> Finding:
    details = dict(f.details)
    details["gc_preview"] = "garbage-collect reads this; the prediction may differ around it"
    return replace(f, severity=Severity.WARNING, details=details)


def preview_storage(
    layout: StorageLayout, options: GcOptions | None = None, reader: StorageReader | None = None
) -> Report:
    """Predict ``garbage-collect`` for every registry in `layout`; never changes anything.

    Exit code of the report: 1 when a tag would become unpullable or referenced data would be
    deleted, 3 when the prediction is uncertain or the real run would stop, else 0.
    """
    options = options or GcOptions()
    started = time.time()
    t0 = time.perf_counter()
    report = Report(mode="fs-gc-preview", target=layout.location, started_at=started)
    report.notes.append(f"layout: {layout.describe()}")
    report.notes.append(
        f"predicting {options.command}: mark phase of registry/storage/garbagecollect.go "
        "re-implemented; nothing is changed"
    )
    for name in layout.skipped_symlinks:
        report.notes.append(f"registry folder {name} is a symlink; not followed, not predicted")
        report.incomplete = True
    registries: list[dict[str, Any]] = []
    c = report.counters
    for registry in layout.registries:
        outcome = preview_registry(registry, options, reader)
        snapshot, plan = outcome.snapshot, outcome.plan
        for f in snapshot.findings:
            report.add(_as_warning(f))
        for f in outcome.findings:
            report.add(f)
        report.notes.extend(_registry_notes(outcome, options))
        if (
            plan.stops is not None
            or plan.uncertain
            or snapshot.findings
            or (
                snapshot.blobs.state in (BlobStoreState.MISSING, BlobStoreState.EMPTY)
                and any(r.links.revisions or r.links.layers for r in snapshot.repositories)
            )
        ):
            report.incomplete = True
        c["registries"] += 1
        c["repositories"] += len(snapshot.repositories)
        c["tags"] += outcome.tags
        c["manifests"] += plan.manifests_enumerated
        c["blobs"] += len(snapshot.blobs.present)
        c["tags_breaking"] += outcome.tags_breaking
        c["manifests_deleted"] += plan.manifests_deleted
        c["blobs_deleted"] += plan.blobs_deleted
        c["layer_links_deleted"] += plan.layer_links_deleted
        c["bytes_freed"] += outcome.bytes_freed
        registries.append(
            {
                "name": registry.name,
                "path": registry.location,
                # The real command ends with "failed to garbage collect: ..." and exit status 1
                # (registry/root.go) on any error; a mark-phase error deletes nothing.
                "gc_would_stop": plan.stops,
                "gc_exit_status": 1 if plan.stops else 0,
                "gc_stops_in": (
                    "mark" if plan.abort else "sweep" if plan.sweep_error else None
                ),
                "uncertain": list(dict.fromkeys(plan.uncertain)),
                "tags": outcome.tags,
                "tags_breaking": outcome.tags_breaking,
                "manifests_deleted": plan.manifests_deleted,
                "blobs_deleted": plan.blobs_deleted,
                "layer_links_deleted": plan.layer_links_deleted,
                "bytes_freed": outcome.bytes_freed,
                "unattributed_bytes": outcome.unattributed_bytes,
                "repositories": [r.to_dict() for _, r in sorted(outcome.repositories.items())],
                "deleted_blobs": outcome.deleted_blobs,
                "deleted_manifests": [
                    {"repository": repo, "digest": f"sha256:{h}"}
                    for repo, hexes in sorted(plan.deleted_revisions.items())
                    for h in sorted(hexes)
                ],
            }
        )
    if not report.defects and not report.incomplete:
        report.notes.append("every tagged image stays pullable: safe to run garbage-collect")
    report.findings.sort(
        key=lambda f: (f.registry or "", f.repository, str(f.kind), f.reference, f.digest or "")
    )
    report.extra["layout"] = str(layout.kind)
    report.extra["base"] = layout.location
    report.extra["gc_preview"] = {
        "gc_version": str(options.version),
        "delete_untagged": options.delete_untagged,
        "registries": registries,
    }
    report.duration_seconds = time.perf_counter() - t0
    return report
