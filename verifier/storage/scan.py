"""Scan distribution's storage and turn what it holds into findings: the orchestration.

Reading (`verifier.storage.read`: each blob store listed once, each repository's links read
once) and judging (`verifier.storage.checks`: pure functions over the records of
`verifier.storage.records`, every link check a set lookup) are kept apart; this module runs
one after the other for every registry of a layout and builds the `ScanResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from verifier.errors import UsageError
from verifier.model.findings import Finding, Kind, Report
from verifier.storage.checks import (
    check_blob_digest,
    check_repository,
    symlink_finding,
)
from verifier.storage.layout import RegistryStorage, StorageLayout
from verifier.storage.read import FilesystemReader, blob_sha256
from verifier.storage.records import (
    BlobStore,
    BlobStoreState,
    ProgressFn,
    RegistryStats,
    ScanResult,
    StorageReader,
    StorageScanOptions,
)

__all__ = ["ProgressFn", "StorageScanOptions", "check_blob_digests", "scan_storage"]


def check_blob_digests(
    registry: RegistryStorage,
    blobs: BlobStore,
    on_bytes: Callable[[int], None] | None = None,
) -> list[Finding]:
    """`corrupt_blob` for every present blob whose sha256 differs from its folder name."""
    out: list[Finding] = []
    for hex_ in sorted(blobs.present):
        found = check_blob_digest(registry, blobs, hex_, blob_sha256(registry, hex_, on_bytes))
        if found is not None:
            out.append(found)
    return out


def _sort_key(f: Finding) -> tuple[str, str, str, str, str]:
    return (f.registry or "", f.repository, str(f.kind), f.digest or "", f.path or "")


def scan_storage(
    layout: StorageLayout,
    options: StorageScanOptions | None = None,
    progress: ProgressFn | None = None,
    reader: StorageReader | None = None,
) -> ScanResult:
    """Scan every registry in `layout` and return findings; never changes anything.

    `reader` reads the storage (default: the filesystem's; `ObjectStoreReader` for a bucket);
    the checks are the same whichever reads. ``--verify-digests`` hashes local files only.

    Names in ``options.proxy_caches`` that match no registry here are ignored (the CLI checks
    them against the whole layout before ``--registry`` narrows it).
    """
    options = options or StorageScanOptions()
    reader = reader or FilesystemReader()
    if options.verify_digests and not isinstance(reader, FilesystemReader):
        raise UsageError(
            "--verify-digests reads every blob in full; it is available for local storage only"
        )
    started = time.time()
    t0 = time.perf_counter()
    report = Report(mode="fs-scan", target=layout.location, started_at=started)
    result = ScanResult(layout, report)
    report.notes.append(f"layout: {layout.describe()}")
    for name in layout.skipped_symlinks:
        skipped = RegistryStorage(name, layout.base / name)
        report.add(symlink_finding(skipped, str(skipped.root)))
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
        blobs = reader.list_blobs(registry, with_sizes=options.verify_digests)
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
        read = reader.manifest_reader(registry, options.max_manifest_bytes)
        for repo in reader.iter_repositories(registry, findings):
            stats.repositories += 1
            stats.layer_links += repo.layer_link_files
            stats.revision_links += len(repo.revisions)
            stats.tags += len(repo.tags)
            findings.extend(repo.findings)
            checked = check_repository(
                registry,
                repo,
                blobs,
                read,
                index_children=options.index_children,
                proxy_cache=is_proxy,
            )
            stats.orphan_layer_links += len(checked.orphan_links)
            result.orphan_links.extend(checked.orphan_links)
            result.orphan_children.extend(checked.orphan_children)
            result.image_findings.extend(checked.image_findings)
            findings.extend(checked.findings)
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
    report.extra["base"] = result.layout.location
    report.extra["registries"] = [
        {
            "name": s.name,
            "path": r.location,
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
