"""`fs fix` on object storage: scan the bucket, then quarantine each registry's orphan links.

The scan is the filesystem scan's (`scan_storage` with an `ObjectStoreReader`); the repair is
`verifier.storage.objectrepair.fix_objects`, run once per registry with what its rails need.
The report is the scan's, with each orphan layer link finding replaced by what the fix did to
it, so `fs fix s3://...` reports, counts and exits like `fs fix PATH`.
"""

from __future__ import annotations

from collections.abc import Iterable

from verifier.model.findings import Finding, Kind, Report
from verifier.storage.backend import StorageBackend
from verifier.storage.layout import StorageLayout
from verifier.storage.objectread import ObjectRegistry, ObjectStoreReader
from verifier.storage.objectrepair import (
    ObjectFixOptions,
    OrphanRef,
    OrphanScan,
    fix_objects,
)
from verifier.storage.records import RegistryStats, ScanResult, StorageScanOptions
from verifier.storage.repair import FixRefused
from verifier.storage.scan import scan_storage


def orphan_scan(result: ScanResult, stats: RegistryStats) -> OrphanScan:
    """What `fix_objects` needs of one registry's scan: its orphans and the rails' counts."""
    orphans = [
        OrphanRef(o.registry.label, o.repository, o.digest, o.finding)
        for o in result.orphan_links
        if o.registry.name == stats.name
    ]
    return OrphanScan(
        registry=next(r.label for r in result.layout.registries if r.name == stats.name),
        orphans=orphans,
        layer_links=stats.layer_links,
        links=stats.links,
        blobs=stats.blobs,
        blob_listing_complete=not stats.blob_gaps,
        blob_gaps=tuple(stats.blob_gaps),
    )


def _is_orphan_link(f: Finding) -> bool:
    return f.kind is Kind.ORPHAN_LAYER_LINK


def _merge(scan: Report, fixes: Iterable[Report]) -> Report:
    """The scan's report with its orphan link findings replaced by the fixes' outcomes."""
    fixed = list(fixes)
    scan.findings = [f for f in scan.findings if not _is_orphan_link(f)]
    for rep in fixed:
        scan.findings.extend(rep.findings)
        scan.notes.extend(rep.notes)
        for key, value in rep.counters.items():
            if key not in ("registries", "layer_links", "links", "blobs"):
                scan.counters[key] += value
        for key in ("quarantine", "journal", "refused"):
            if key in rep.extra:
                scan.extra.setdefault(f"{key}s", []).append(rep.extra[key])
    scan.counters["unrepaired"] = len(scan.defects)
    scan.incomplete = scan.incomplete or any(r.incomplete for r in fixed)
    return scan


def fix_object_storage(
    backend: StorageBackend,
    bucket: StorageBackend,
    prefix: str,
    layout: StorageLayout,
    scan_options: StorageScanOptions,
    options: ObjectFixOptions,
    *,
    workers: int = 16,
) -> Report:
    """Scan `layout` in `backend` and quarantine every registry's orphan layer link objects.

    `bucket` is the same storage rooted at the bucket and `prefix` the key of `backend`'s root
    in it: the quarantine lies beside the registry's root, outside `backend`. Raises
    `FixRefused` (with the scan's report) when a rail refuses for any registry: the rails of
    every registry are checked before the first change.
    """
    result = scan_storage(layout, scan_options, reader=ObjectStoreReader(backend, workers=workers))
    report = result.report
    report.mode = "fs-fix"
    plans = [
        ("/".join(p for p in (prefix.strip("/"), ObjectRegistry.of(s.name, "").v2_key) if p),
         orphan_scan(result, s))
        for s in result.stats
    ]
    # Every registry's rails first (a dry run changes nothing), so a refusal for one leaves all.
    refusals: list[Report] = []
    for v2, scan in plans:
        try:
            fix_objects(bucket, v2, scan,
                        ObjectFixOptions(options.quarantine, options.force,
                                         options.max_orphan_share, dry_run=True))
        except FixRefused as refused:
            refusals.append(refused.report)
    if refusals:
        merged = _merge(report, refusals)
        raise FixRefused(
            "fix refused, nothing was changed: " + "; ".join(
                str(r) for rep in refusals for r in rep.extra.get("refused", [])),
            merged,
        )
    fixes = [fix_objects(bucket, v2, scan, options)
             for v2, scan in plans if scan.orphans or options.dry_run]
    return _merge(report, fixes)
