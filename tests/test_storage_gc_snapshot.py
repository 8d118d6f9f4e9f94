"""The garbage-collect models on records built by hand: `assemble_snapshot`, `ManifestRefsCache`
and both lines run without touching a disk, as they will for an object-store reader."""

from __future__ import annotations

from tests.test_storage_checks import REGISTRY, V2, Memory, hex_of
from verifier.model.findings import Finding, Kind, Severity
from verifier.storage.defaults import GcVersion
from verifier.storage.gc.join import join_tags
from verifier.storage.gc.manifests import ManifestRefs, ManifestRefsCache, Unreadable
from verifier.storage.gc.options import GcOptions
from verifier.storage.gc.snapshot import assemble_snapshot
from verifier.storage.gc.v3 import mark_and_sweep as mark_and_sweep_3
from verifier.storage.gc.v28 import mark_and_sweep as mark_and_sweep_28
from verifier.storage.layout import Digest
from verifier.storage.records import FailReason, ReadFailure, RepoLinks, SweepListing


def _memory_with_index() -> tuple[Memory, str, str, list[str]]:
    mem = Memory()
    child, blobs = mem.image("arm")
    index = mem.index("multi", [child])
    mem.repo.has_layers_dir = mem.repo.has_manifests_dir = mem.repo.has_tags_dir = True
    return mem, child, index, blobs


def test_assemble_snapshot_sorts_repositories_and_keeps_upload_only_ones_apart() -> None:
    mem, _, _, _ = _memory_with_index()
    uploads = RepoLinks("app/0", f"{V2}/repositories/app/0")
    nested = RepoLinks("app/b", f"{V2}/repositories/app/b", has_manifests_dir=True)
    walk = [
        Finding(
            kind=Kind.UNREADABLE_FILE,
            severity=Severity.WARNING,
            message="cannot read",
            path=f"{V2}/repositories/x/_uploads/y",
        )
    ]
    snapshot = assemble_snapshot(
        REGISTRY, mem.blobs(), [nested, uploads, mem.repo], walk,
        SweepListing({"sha512:" + "ab" * 64: 5}, None), GcOptions(),
    )
    assert [r.name for r in snapshot.repositories] == ["app", "app/b"]
    assert [r.name for r in snapshot.other_repositories] == ["app/0"]
    assert snapshot.findings == []  # an _uploads finding is nothing garbage-collect reads
    assert snapshot.other_blobs == {"sha512:" + "ab" * 64: 5}


def test_both_lines_run_on_records_and_join_shows_display_paths() -> None:
    mem, child, index, child_blobs = _memory_with_index()
    snapshot = assemble_snapshot(
        REGISTRY, mem.blobs(), [mem.repo], [], SweepListing(), GcOptions()
    )
    lookup = ManifestRefsCache(REGISTRY, mem.read)
    options = GcOptions(GcVersion.V2_8, delete_untagged=True)
    plan = mark_and_sweep_28(snapshot, lookup, options)
    # 2.8 --delete-untagged: the untagged child's revision link goes, and its config and layer
    # are swept (the index marks the child's manifest blob, never what the child references).
    assert plan.deleted_revisions == {"app": {hex_of(child)}}
    assert plan.deleted_blobs == {hex_of(d) for d in child_blobs}
    outcome = join_tags(snapshot, plan, lookup, options)
    broken = [f for f in outcome.findings if f.kind is Kind.GC_WOULD_BREAK]
    assert [f.reference for f in broken] == ["multi"]
    assert broken[0].path == f"{V2}/repositories/app/_manifests/tags/multi/current/link"
    referenced = [f for f in outcome.findings if f.kind is Kind.GC_WOULD_DELETE_REFERENCED]
    assert referenced and all(f.path and f.path.startswith(V2 + "/") for f in referenced)
    plan3 = mark_and_sweep_3(snapshot, lookup, GcOptions(GcVersion.V3, delete_untagged=True))
    assert plan3.deleted_revisions == {} and plan3.deleted_blobs == set()
    assert lookup.reads == 2  # the index and the child, each parsed once across both runs
    assert index in {f.digest for f in broken}


def test_manifest_refs_cache_reads_through_any_reader() -> None:
    mem, child, _, _ = _memory_with_index()
    lookup = ManifestRefsCache(REGISTRY, mem.read)
    refs = lookup(hex_of(child))
    assert isinstance(refs, ManifestRefs) and [r.role for r in refs.references] == [
        "config",
        "layer",
    ]

    def denied(d: Digest) -> bytes | ReadFailure:
        return ReadFailure(FailReason.UNREADABLE, "AccessDenied")

    h = hex_of(child)
    failed = ManifestRefsCache(REGISTRY, denied)(h)
    assert failed == Unreadable(f"{V2}/blobs/sha256/{h[:2]}/{h}/data: unreadable: AccessDenied")
