"""gc-preview: verifier.storage.gc_preview, its models (verifier.storage.gc), the command.

Two halves:

* pure tests on synthetic trees (`SyntheticStore`): the mark phase of each line and mode, the
  join with the tags, the cases where the real run would stop, bytes, the CLI contract, and that
  every link file is read exactly once (the linear-time claim, without a clock);
* `registry`-marked tests that build storage with the real distribution 2.8 registry, predict,
  then run the real ``docker-registry garbage-collect`` on a COPY of the storage and check that
  the predicted deletions are exactly the real ones and that each tag's predicted pullability
  before and after matches ``skopeo copy --all`` (the reference client) on that copy.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from tests.support.cli import CliResult, run_cli
from tests.support.images import PushedIndex, make_layer, push_image, push_index, push_manifest_raw
from tests.support.registry import RegistryServer, revision_link_path
from tests.support.skopeo import skopeo_copy_all
from tests.test_storage_synthetic import SyntheticStore
from verifier.cli.gc_preview import register
from verifier.errors import ExitCode
from verifier.model.findings import Finding, Kind, Report, Severity
from verifier.output import Format
from verifier.storage import gc_preview as gc_mod
from verifier.storage import read as read_mod
from verifier.storage.gc_preview import (
    GcOptions,
    GcVersion,
    ManifestRefs,
    ManifestShape,
    RegistryOutcome,
    Unparseable,
    manifest_references,
    preview_registry,
    preview_storage,
    valid_repository_name,
)
from verifier.storage.layout import RegistryStorage, detect_layout

V28 = GcVersion.V2_8
V3 = GcVersion.V3

# Mounted the way verifier.cli.main mounts the fs sub-app, on a private app (no global mutation).
_fs = typer.Typer()
register(_fs)
app = typer.Typer()
app.add_typer(_fs, name="fs")


def preview_cli(*args: str | Path) -> CliResult:
    """`regverify fs gc-preview ARGS`, in-process on the sub-app alone."""
    return run_cli("fs", "gc-preview", *args, app=app)


def predict(root: Path, version: GcVersion = V28, delete_untagged: bool = False) -> RegistryOutcome:
    return preview_registry(RegistryStorage("", root), GcOptions(version, delete_untagged))


def report_for(root: Path, version: GcVersion = V28, delete_untagged: bool = False) -> Report:
    return preview_storage(detect_layout(root), GcOptions(version, delete_untagged))


def hexes(digests: Iterable[str]) -> set[str]:
    return {d.split(":", 1)[1] for d in digests}


def of_kind(findings: Iterable[Finding], kind: Kind) -> list[Finding]:
    return [f for f in findings if f.kind is kind]


def breaking(outcome: RegistryOutcome) -> set[tuple[str, str]]:
    return {(f.repository, f.reference) for f in of_kind(outcome.findings, Kind.GC_WOULD_BREAK)}


def referenced(outcome: RegistryOutcome) -> dict[str, list[str]]:
    """digest → what of it goes, for every gc_would_delete_referenced finding."""
    return {
        f.digest or "": f.details["loses"]
        for f in of_kind(outcome.findings, Kind.GC_WOULD_DELETE_REFERENCED)
    }


@pytest.fixture
def store(tmp_path: Path) -> SyntheticStore:
    return SyntheticStore(tmp_path / "registry")


# --- distribution's manifest dispatch ------------------------------------------------------------


def test_manifest_references_follow_distributions_dispatch() -> None:
    image = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"digest": "sha256:" + "c" * 64},
            "layers": [{"digest": "sha256:" + "1" * 64}, {"digest": "not-a-digest"}],
        }
    ).encode()
    refs = manifest_references(image)
    # No mediaType and no "manifests": an OCI image manifest; config first, digests unchecked.
    assert isinstance(refs, ManifestRefs) and refs.shape is ManifestShape.IMAGE
    assert [(r.role, r.digest) for r in refs.references] == [
        ("config", "sha256:" + "c" * 64),
        ("layer", "sha256:" + "1" * 64),
        ("layer", "not-a-digest"),
    ]
    index = manifest_references(b'{"schemaVersion": 2, "manifests": []}')
    assert isinstance(index, ManifestRefs) and index.shape is ManifestShape.INDEX
    schema1 = manifest_references(
        b'{"schemaVersion": 1, "fsLayers": [{"blobSum": "sha256:' + b"a" * 64 + b'"}]}'
    )
    assert isinstance(schema1, ManifestRefs) and schema1.shape is ManifestShape.SCHEMA1
    assert [r.digest for r in schema1.references] == ["sha256:" + "a" * 64]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"schemaVersion": 3}',
        b'{"schemaVersion": "2"}',
        b'{"schemaVersion": 2, "mediaType": "application/x-foo"}',
        b'{"schemaVersion": 2, "layers": [{"digest": 5}]}',
        b'{"schemaVersion": 2, "layers": [{"size": "5"}]}',
    ],
)
def test_manifest_references_fail_where_distribution_fails(body: bytes) -> None:
    assert isinstance(manifest_references(body), Unparseable)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("app", True),
        ("lib/app-x_y.z", True),
        ("Upper/app", True),  # a domain may hold capitals
        ("localhost:5000/app", True),
        ("Upper", False),
        ("app/Upper", False),
        ("a" * 256, False),
    ],
)
def test_valid_repository_name(name: str, ok: bool) -> None:
    assert valid_repository_name(name) is ok


def test_repositories_are_in_distributions_walk_order(store: SyntheticStore) -> None:
    for repo in ("a", "a/b", "a/0x", "a-b"):
        store.image(repo, "v1")
    snapshot = gc_mod.gather(RegistryStorage("", store.root), GcOptions())
    # "0x" sorts before "_manifests", "b" after it; "a" is a prefix of "a-b".
    assert [r.name for r in snapshot.repositories] == ["a/0x", "a", "a/b", "a-b"]


# --- 2.8: the incident ---------------------------------------------------------------------------


def test_28_delete_untagged_breaks_every_tagged_index(store: SyntheticStore) -> None:
    index = store.index("app", "v1")
    store.tag("app", "stable", index.digest)
    image = store.image("app", "single")
    outcome = predict(store.root, V28, delete_untagged=True)
    plan = outcome.plan
    children = [c.digest for c in index.children]
    # Children are untagged: their revision links go (manifestArr) ...
    assert plan.deleted_revisions == {"app": hexes(children)}
    # ... their manifest blobs stay (marked as References() of the index), their configs and
    # layers are swept; the single-platform image is untouched.
    assert plan.deleted_blobs == hexes(b for c in index.children for b in c.blobs)
    assert not hexes(children) & plan.deleted_blobs
    assert not hexes(image.blobs) & plan.deleted_blobs
    assert breaking(outcome) == {("app", "v1"), ("app", "stable")}
    assert outcome.tag_states[("app", "single")] == (True, True)
    brk = next(f for f in outcome.findings if f.reference == "v1")
    assert brk.severity is Severity.ERROR and brk.digest == index.digest
    assert "linux/arm64" in brk.message and "revision link deleted" in brk.message
    chain = brk.details["chain"]
    assert {c["digest"] for c in chain} == set(children) | {
        b for c in index.children for b in c.blobs
    }
    layer = next(c for c in chain if c["digest"] == index.children[1].layers[0])
    assert layer["parents"] == [index.digest, index.children[1].digest]
    assert layer["platform"] == "linux/arm64" and layer["loses"] == ["blob data"]
    gone = referenced(outcome)
    assert gone[children[0]] == ["revision link"]
    assert gone[index.children[0].config] == ["blob data"]
    child = next(f for f in outcome.findings if f.digest == children[0])
    assert child.kind is Kind.GC_WOULD_DELETE_REFERENCED
    assert child.details["tags"] == ["stable", "v1"] and child.platform == "linux/amd64"


def test_3x_delete_untagged_keeps_index_children(store: SyntheticStore) -> None:
    index = store.index("app", "v1")
    old = store.image("app", None, seed="untagged")
    outcome = predict(store.root, V3, delete_untagged=True)
    plan = outcome.plan
    # markManifestReferences recursed into the children; unmarkReferencedManifest kept them.
    assert plan.deleted_revisions == {"app": hexes([old.digest])}
    assert plan.deleted_blobs == hexes([old.digest, *old.blobs])
    # ... and the untagged image's _layers links go with its blobs (3.x only).
    assert plan.deleted_layer_links == {"app": hexes(old.blobs)}
    assert not outcome.findings
    assert outcome.tag_states[("app", "v1")] == (True, True)
    assert hexes(c.digest for c in index.children).isdisjoint(plan.deleted_blobs)


@pytest.mark.parametrize("version", [V28, V3])
def test_plain_gc_on_healthy_storage_breaks_nothing(
    store: SyntheticStore, version: GcVersion
) -> None:
    store.index("app", "v1")
    store.image("app", None, seed="untagged")  # untagged but has a revision: kept by plain GC
    orphan = store.blob(b"nobody links this")
    report = report_for(store.root, version)
    assert report.exit_code is ExitCode.CLEAN
    assert not report.findings
    outcome = predict(store.root, version)
    assert outcome.plan.deleted_blobs == hexes([orphan])
    assert outcome.bytes_freed == outcome.unattributed_bytes == len(b"nobody links this")
    assert any("safe to run garbage-collect" in n for n in report.notes)


@pytest.mark.parametrize("version", [V28, V3])
def test_child_link_missing_plain_gc_sweeps_its_blobs(
    store: SyntheticStore, version: GcVersion
) -> None:
    """A repairable link problem becomes lost data: reported, exit 1, though the tag was
    already unpullable (so no gc_would_break)."""
    index = store.index("app", "v1")
    lost = index.children[1]
    shutil.rmtree(store.revision_link(lost.repo, lost.digest).parent)
    outcome = predict(store.root, version)
    assert outcome.plan.deleted_blobs == hexes(lost.blobs)
    assert outcome.plan.deleted_revisions == {}
    assert outcome.tag_states[("app", "v1")] == (False, False)
    assert breaking(outcome) == set()
    loses = ["blob data", "layer link"] if version is V3 else ["blob data"]
    assert referenced(outcome) == {b: loses for b in lost.blobs}
    report = report_for(store.root, version)
    assert report.exit_code is ExitCode.DEFECTS
    assert {f.platform for f in report.defects} == {"linux/arm64"}


def test_child_tagged_on_its_own_survives_28(store: SyntheticStore) -> None:
    index = store.index("app", "v1")
    amd64, arm64 = index.children
    store.tag("app", "amd64", amd64.digest)
    outcome = predict(store.root, V28, delete_untagged=True)
    assert outcome.plan.deleted_revisions == {"app": hexes([arm64.digest])}
    assert outcome.plan.deleted_blobs == hexes(arm64.blobs)
    assert outcome.tag_states[("app", "amd64")] == (True, True)
    assert breaking(outcome) == {("app", "v1")}
    brk = of_kind(outcome.findings, Kind.GC_WOULD_BREAK)[0]
    assert {c["digest"] for c in brk.details["chain"]} == {arm64.digest, *arm64.blobs}


def test_dangling_tag_plain_gc_deletes_what_it_names(store: SyntheticStore) -> None:
    image = store.image("app", "v1")
    shutil.rmtree(store.revision_link("app", image.digest).parent)
    outcome = predict(store.root, V28)
    assert outcome.plan.deleted_blobs == hexes([image.digest, *image.blobs])
    # Relinking the revision would have restored the tag; after the GC nothing can.
    assert referenced(outcome) == {d: ["blob data"] for d in [image.digest, *image.blobs]}
    assert breaking(outcome) == set()


def test_3x_marking_order_across_repositories(store: SyntheticStore) -> None:
    """main's markManifestReferences skips an already-marked reference *with its subtree*.

    Repository ``a`` (walked first) holds the index but not the amd64 child's revision, so the
    child is marked there as a plain digest; in ``b`` the same index is tagged, the child is
    untagged, and its config and layers are never marked: swept. Mirrored from the code.
    """
    index = store.index("b", "v1")
    store.blob(index.body)
    store.link_revision("a", index.digest)
    store.tag("a", "v1", index.digest)
    (store.repo_dir("a") / "_layers").mkdir()
    outcome = predict(store.root, V3, delete_untagged=True)
    swept = hexes(b for c in index.children for b in c.blobs)
    assert outcome.plan.deleted_blobs == swept
    assert ("b", "v1") in breaking(outcome)
    # Walked the other way round (b's copy first) nothing would break: rename a → c.
    os.rename(store.repo_dir("a"), store.repo_dir("c"))
    assert predict(store.root, V3, delete_untagged=True).plan.deleted_blobs == set()


# --- when the real run would stop, or the prediction is uncertain -------------------------------


def test_28_delete_untagged_without_tags_folder_stops_the_real_run(store: SyntheticStore) -> None:
    store.index("app", "v1")
    store.image("notags", None)  # an untagged revision, no _manifests/tags at all
    outcome = predict(store.root, V28, delete_untagged=True)
    assert outcome.plan.abort is not None and "unknown repository name=notags" in outcome.plan.abort
    assert not outcome.plan.deleted_blobs and not outcome.findings
    report = report_for(store.root, V28, delete_untagged=True)
    assert report.exit_code is ExitCode.INCOMPLETE
    assert any("would stop with" in n for n in report.notes)
    # main skips such a manifest instead: not marked, not deleted, so its blobs are swept.
    v3 = predict(store.root, V3, delete_untagged=True)
    assert v3.plan.abort is None and v3.plan.deleted_revisions == {}
    # Plain GC never reads tags.
    assert predict(store.root, V28).plan.abort is None


def test_invalid_tag_link_stops_only_delete_untagged(store: SyntheticStore) -> None:
    store.image("app", "v1")
    (store.tag_dir("app", "v1") / "current" / "link").write_text("garbage")
    assert "failed to retrieve tags" in (
        predict(store.root, V28, delete_untagged=True).plan.abort or ""
    )
    plain = report_for(store.root, V28)
    assert plain.exit_code is ExitCode.CLEAN and not plain.findings


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("bad-name", "failed to parse repo name Upper"),
        ("bad-revision-link", "invalid checksum digest format"),
        ("bad-manifest", "failed to retrieve manifest for digest"),
    ],
)
def test_mark_phase_errors_stop_the_real_run(
    store: SyntheticStore, damage: str, expected: str
) -> None:
    image = store.image("app", "v1")
    if damage == "bad-name":
        store.image("Upper", "v1")
    elif damage == "bad-revision-link":
        store.revision_link("app", image.digest).write_text("garbage")
    else:
        store.data_path(image.digest).write_text('{"schemaVersion": 2, "mediaType": "x/y"}')
    outcome = predict(store.root, V28)
    assert outcome.plan.abort is not None and expected in outcome.plan.abort
    assert report_for(store.root).exit_code is ExitCode.INCOMPLETE


def test_3x_repository_without_layers_folder_stops(store: SyntheticStore) -> None:
    store.index("app", "v1")
    shutil.rmtree(store.repo_dir("app") / "_layers")
    assert "_layers" in (predict(store.root, V3).plan.abort or "")
    assert predict(store.root, V28).plan.abort is None


def test_symlink_where_gc_reads_makes_it_incomplete(store: SyntheticStore, tmp_path: Path) -> None:
    image = store.image("app", "v1")
    link = store.revision_link("app", image.digest)
    target = tmp_path / "elsewhere"
    target.write_bytes(link.read_bytes())
    link.unlink()
    link.symlink_to(target)
    report = report_for(store.root)
    assert report.exit_code is ExitCode.INCOMPLETE
    assert [f.kind for f in report.findings] == [Kind.UNEXPECTED_SYMLINK]
    assert report.findings[0].severity is Severity.WARNING
    # distribution follows the symlink: the prediction assumes a well-formed link behind it.
    assert predict(store.root).plan.deleted_blobs == set()


def test_layer_link_findings_matter_only_to_3x(store: SyntheticStore) -> None:
    image = store.image("app", "v1")
    store.layer_link("app", image.layers[0]).write_text("garbage")
    assert report_for(store.root, V28).exit_code is ExitCode.CLEAN
    assert report_for(store.root, V3).exit_code is ExitCode.INCOMPLETE


def test_empty_blob_store_under_links_is_flagged(store: SyntheticStore) -> None:
    store.image("app", "v1")
    shutil.rmtree(store.v2 / "blobs")
    report = report_for(store.root)
    assert report.exit_code is ExitCode.INCOMPLETE
    assert any("unmounted" in n for n in report.notes)


# --- what each line reads, from its own source -------------------------------------------------


def test_28_never_enumerates_a_repository_without_layers_folder(store: SyntheticStore) -> None:
    """catalog.go on release/2.8 discovers repositories by their _layers folder: one that lost
    it is never marked, so plain GC sweeps everything only it references (3.x discovers by
    _manifests, and stops on the missing _layers instead)."""
    kept = store.image("kept", "v1")
    lost = store.index("lost", "v1")
    shutil.rmtree(store.repo_dir("lost") / "_layers")
    outcome = predict(store.root, V28)
    everything = [lost.digest, *(c.digest for c in lost.children)]
    everything += [b for c in lost.children for b in c.blobs]
    assert outcome.plan.deleted_blobs == hexes(everything)
    assert not hexes([kept.digest, *kept.blobs]) & outcome.plan.deleted_blobs
    # Its tag was already unpullable (no layer links): reported as lost data, not a new break.
    assert outcome.tag_states[("lost", "v1")] == (False, False)
    assert set(referenced(outcome)) == set(everything)
    assert "_layers" in (predict(store.root, V3).plan.abort or "")
    notes = report_for(store.root, V28).notes
    assert any("without a _layers folder (lost): 2.8 never enumerates" in n for n in notes)


def test_28_enumerates_a_repository_with_only_layers(store: SyntheticStore) -> None:
    """A _layers-only folder is a repository to 2.8 (its name is parsed, nothing is marked)."""
    store.image("app", "v1")
    digest = store.blob(b"uploaded, never used by a manifest")
    store.link_layer("Upper", digest)
    assert "failed to parse repo name Upper" in (predict(store.root, V28).plan.abort or "")
    outcome = predict(store.root, V3)
    assert outcome.plan.abort is None and outcome.plan.deleted_blobs == hexes([digest])


@pytest.mark.parametrize("version", [V28, V3])
def test_sweep_walks_every_digest_algorithm(store: SyntheticStore, version: GcVersion) -> None:
    """blobStore.Enumerate walks all of blobs/: a sha512 blob nothing marks is deleted."""
    store.image("app", "v1")
    hex512 = "ab" * 64
    data = store.v2 / "blobs" / "sha512" / hex512[:2] / hex512 / "data"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"x" * 7)
    outcome = predict(store.root, version)
    assert outcome.plan.deleted_other_blobs == {f"sha512:{hex512}"}
    assert outcome.deleted_blobs == [
        {
            "digest": f"sha512:{hex512}",
            "size": 7,
            "revision_links": [],
            "layer_links": [],
            "referenced_by": [],
            "tags": [],
        }
    ]
    assert outcome.bytes_freed == outcome.unattributed_bytes == 7


def test_invalid_digest_path_under_blobs_stops_the_sweep(store: SyntheticStore) -> None:
    """digestFromPath fails on a data file whose path is not a digest: the real run has already
    removed the untagged manifests, then stops before deleting any blob (exit status 1)."""
    image = store.image("app", None)
    store.image("app", "v1")
    (store.repo_dir("app") / "_manifests" / "tags").mkdir(exist_ok=True)
    bad = store.v2 / "blobs" / "md5" / "ab" / ("ab" * 16) / "data"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"?")
    outcome = predict(store.root, V28, delete_untagged=True)
    assert outcome.plan.abort is None and "error enumerating blobs" in (outcome.plan.stops or "")
    assert outcome.plan.deleted_revisions == {"app": hexes([image.digest])}
    assert outcome.plan.blobs_deleted == 0
    doc = report_for(store.root, V28, True).extra["gc_preview"]["registries"][0]
    assert doc["gc_exit_status"] == 1 and doc["gc_stops_in"] == "sweep"


@pytest.mark.parametrize("version", [V28, V3])
def test_stray_file_among_tags_stops_delete_untagged(
    store: SyntheticStore, version: GcVersion
) -> None:
    """Tags.Lookup reads <entry>/current/link for every entry of _manifests/tags: under a file
    that fails with "not a directory", which is not "not found"."""
    store.image("app", "v1")
    (store.repo_dir("app") / "_manifests" / "tags" / "README").write_text("notes")
    plan = predict(store.root, version, delete_untagged=True).plan
    assert "tags/README/current/link: not a directory" in (plan.abort or "")
    assert predict(store.root, version).plan.abort is None


def test_3x_refuses_schema1_in_its_mark_phase(store: SyntheticStore) -> None:
    layer = store.blob(b"schema1 layer")
    store.link_layer("old", layer)
    body = json.dumps({"schemaVersion": 1, "fsLayers": [{"blobSum": layer}]}).encode()
    digest = store.blob(body)
    store.link_revision("old", digest)
    store.tag("old", "v1", digest)
    assert "manifest schema v1 unsupported" in (predict(store.root, V3).plan.abort or "")
    outcome = predict(store.root, V28)
    assert outcome.plan.abort is None and outcome.plan.deleted_blobs == set()


def test_28_serves_a_manifest_through_its_layer_link(store: SyntheticStore) -> None:
    """manifestLinkPathFns (release/2.8 registry.go) tries the revision link, then _layers: a
    child whose revision link is gone but which was also uploaded as a blob still pulls."""
    index = store.index("app", "v1")
    child = index.children[0]
    store.link_layer("app", child.digest)
    shutil.rmtree(store.revision_link("app", child.digest).parent)
    outcome = predict(store.root, V28)
    assert outcome.tag_states[("app", "v1")] == (True, False)  # its blobs are not marked
    assert ("app", "v1") in breaking(outcome)


def test_revision_link_naming_another_digest_is_enumerated_as_that_digest(
    store: SyntheticStore,
) -> None:
    """linkedBlobStore.Enumerate reads each link and Stats the digest it names; on 2.8 that
    Stat also finds a manifest through its _layers link, so the child below is marked."""
    index = store.index("app", "v1")
    child = index.children[0]
    shutil.rmtree(store.revision_link("app", child.digest).parent)
    store.link_layer("app", child.digest)
    stray = store.revision_link("app", "sha256:" + "e" * 64)
    stray.parent.mkdir(parents=True)
    stray.write_text(child.digest)
    assert predict(store.root, V28).plan.deleted_blobs == set()
    # 3.x Stats manifests through revision links only: the child is not enumerated.
    assert predict(store.root, V3).plan.deleted_blobs == hexes(child.blobs)


def test_json_lists_each_deleted_blob_with_what_references_it(store: SyntheticStore) -> None:
    index = store.index("app", "v1")
    run = preview_cli(store.root, "-m", "--format", "json")
    assert run.exit_code == ExitCode.DEFECTS
    doc = run.json()["gc_preview"]["registries"][0]
    child = index.children[1]
    entry = next(b for b in doc["deleted_blobs"] if b["digest"] == child.layers[0])
    assert entry["size"] == store.data_path(child.layers[0]).stat().st_size
    assert entry["layer_links"] == ["app"] and entry["revision_links"] == []
    assert entry["referenced_by"] == [
        {"repository": "app", "manifest": child.digest, "role": "layer"}
    ]
    assert entry["tags"] == ["app:v1"]
    assert {b["digest"] for b in doc["deleted_blobs"]} == {
        b for c in index.children for b in c.blobs
    }
    assert {(m["repository"], m["digest"]) for m in doc["deleted_manifests"]} == {
        ("app", c.digest) for c in index.children
    }
    assert doc["gc_exit_status"] == 0 and doc["gc_stops_in"] is None


# --- numbers, layouts, speed ---------------------------------------------------------------------


def test_bytes_freed_per_repository(store: SyntheticStore) -> None:
    shared = b"shared layer"
    a = store.image("a", None, layer_data=[shared, b"only a"])
    b = store.image("b", None, layer_data=[shared, b"only b"])
    store.image("c", "v1")
    store.blob(b"loose")
    for repo in ("a", "b"):  # a tag was deleted there once: the folder stays
        (store.repo_dir(repo) / "_manifests" / "tags").mkdir()
    outcome = predict(store.root, V28, delete_untagged=True)
    sizes = {d: store.data_path(d).stat().st_size for d in [a.digest, *a.blobs, b.digest, *b.blobs]}
    assert outcome.repositories["a"].bytes_freed == sum(sizes[d] for d in [a.digest, *a.blobs])
    assert outcome.repositories["b"].bytes_freed == sum(sizes[d] for d in [b.digest, *b.blobs])
    assert outcome.repositories["c"].bytes_freed == 0
    # The registry total counts the shared layer once.
    assert outcome.bytes_freed == sum(sizes.values()) + len(b"loose")
    assert outcome.unattributed_bytes == len(b"loose")


def test_every_link_file_is_read_once(
    store: SyntheticStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The linear-time claim, counted instead of timed: 2.8's --delete-untagged re-reads every
    tag per manifest; the preview reads each tag, revision and layer link exactly once and each
    manifest blob at most once."""
    n = 150
    for i in range(n):
        store.image("many", f"t{i}", layers=1)
    index = store.index("many", "multi")
    reads: list[str] = []
    real = read_mod.read_link_file

    def counting(path: str, limit: int = 128) -> bytes | read_mod.ReadFailure:
        reads.append(path)
        return real(path, limit)

    monkeypatch.setattr(read_mod, "read_link_file", counting)
    manifest_reads: list[int] = []
    real_preview = gc_mod.join_tags

    def spy(
        snapshot: gc_mod.RegistrySnapshot,
        plan: gc_mod.GcPlan,
        lookup: gc_mod.ManifestRefsCache,
        options: GcOptions,
    ) -> RegistryOutcome:
        out = real_preview(snapshot, plan, lookup, options)
        manifest_reads.append(lookup.reads)
        return out

    monkeypatch.setattr(gc_mod, "join_tags", spy)
    outcome = predict(store.root, V28, delete_untagged=True)
    tags, revisions = n + 1, n + 1 + len(index.children)
    layer_links = n * 2 + len(index.children) * 3
    assert len(reads) == len(set(reads)) == tags + revisions + layer_links
    assert manifest_reads == [revisions]
    assert len(outcome.tag_states) == tags


def test_multi_registry_base_with_registry_filter(tmp_path: Path) -> None:
    private = SyntheticStore(tmp_path / "base" / "private")
    private.index("app", "v1")
    cache = SyntheticStore(tmp_path / "base" / "cache")
    cache.image("lib", "v1")
    run = preview_cli(tmp_path / "base", "--delete-untagged", "--format", "json")
    doc = run.json()
    assert run.exit_code == ExitCode.DEFECTS
    assert {f["registry"] for f in doc["findings"]} == {"private"}
    assert [r["name"] for r in doc["gc_preview"]["registries"]] == ["cache", "private"]
    run = preview_cli(tmp_path / "base", "-m", "--registry", "cache", "--format", "json")
    assert run.exit_code == ExitCode.CLEAN
    assert [r["name"] for r in run.json()["gc_preview"]["registries"]] == ["cache"]


# --- the command line ----------------------------------------------------------------------------


def test_cli_exit_codes_and_json(store: SyntheticStore, tmp_path: Path) -> None:
    store.index("app", "v1")
    run = preview_cli(store.root)
    assert (run.exit_code, run.stderr) == (0, "")
    assert "safe to run garbage-collect" in run.stdout
    run = preview_cli(store.root, "--delete-untagged")
    assert run.exit_code == ExitCode.DEFECTS and "gc_would_break" in run.stdout
    run = preview_cli(store.root, "--delete-untagged", "--gc-version", "3")
    assert run.exit_code == ExitCode.CLEAN
    report_path = tmp_path / "out" / "gc.json"
    run = preview_cli(store.root, "-m", "-f", "json", "-o", report_path)
    assert run.exit_code == ExitCode.DEFECTS and run.stdout == ""
    doc = json.loads(report_path.read_text())
    assert doc["mode"] == "fs-gc-preview" and doc["exit_code"] == 1
    assert doc["gc_preview"]["gc_version"] == "2.8" and doc["gc_preview"]["delete_untagged"]
    repo = doc["gc_preview"]["registries"][0]["repositories"][0]
    assert repo["name"] == "app" and repo["tags_breaking"] == 1 and repo["bytes_freed"] > 0
    assert doc["summary"]["tags_breaking"] == 1


@pytest.mark.parametrize("fmt", list(Format))
def test_every_format_renders(store: SyntheticStore, fmt: Format) -> None:
    store.index("app", "v1")
    run = preview_cli(store.root, "-m", "--format", fmt)
    assert run.exit_code == ExitCode.DEFECTS and "gc_would_break" in run.stdout


def test_cli_textfile_records_the_prediction(store: SyntheticStore, tmp_path: Path) -> None:
    """`--textfile` works on gc-preview as on every command, and passes `promtool check metrics`."""
    from tests.support.promtool import check_metrics

    store.index("app", "v1")
    textfile = tmp_path / "metrics" / "gc.prom"
    run = preview_cli(store.root, "-m", "--format", "json", "--textfile", textfile)
    assert run.exit_code == ExitCode.DEFECTS
    text = textfile.read_text()
    check_metrics(text)
    labels = f'kind="gc_would_break",mode="fs-gc-preview",registry="{store.root}"'
    assert f"regverify_defects{{{labels}" in text
    assert "regverify_last_success_timestamp_seconds{" in text


def test_cli_usage_errors_exit_2_in_one_line(store: SyntheticStore, tmp_path: Path) -> None:
    store.image("app", "v1")
    run = preview_cli(tmp_path / "nowhere")
    assert run.exit_code == ExitCode.USAGE
    assert run.stderr.startswith("regverify: error:") and run.stderr.count("\n") == 1
    run = preview_cli(store.root, "--gc-version", "2.7")
    assert run.exit_code == ExitCode.USAGE
    run = preview_cli(store.root, "--registry", "other")
    assert run.exit_code == ExitCode.USAGE and "unknown registry" in run.stderr


def test_cli_incomplete_exits_3(store: SyntheticStore) -> None:
    store.image("app", "v1")
    store.image("Upper", "v1")
    run = preview_cli(store.root)
    assert run.exit_code == ExitCode.INCOMPLETE and "failed to parse repo name Upper" in run.stdout


def test_cli_internal_error_is_one_line_exit_3(
    store: SyntheticStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.image("app", "v1")

    def boom(*_: object) -> Report:
        raise RuntimeError("kaput")

    # The command imports the engine when it runs: patch it where it is looked up.
    monkeypatch.setattr("verifier.storage.gc_preview.preview_storage", boom)
    run = preview_cli(store.root)
    assert run.exit_code == ExitCode.INCOMPLETE and run.stdout == ""
    assert run.stderr == (
        "regverify: error: internal error: RuntimeError: kaput (rerun with --verbose)\n")


# --- against the real garbage-collect ------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """What garbage-collect can delete, read straight from a storage tree."""

    blobs: frozenset[str]
    revisions: frozenset[tuple[str, str]]
    layers: frozenset[tuple[str, str]]


def read_tree(v2: Path) -> Tree:
    repos = v2 / "repositories"

    def links(pattern: str, depth: int) -> frozenset[tuple[str, str]]:
        out = set()
        for link in repos.rglob(pattern):
            parts = link.relative_to(repos).parts
            out.add(("/".join(parts[:-depth]), link.parent.name))
        return frozenset(out)

    return Tree(
        frozenset(p.parent.name for p in (v2 / "blobs" / "sha256").glob("*/*/data")),
        links("_manifests/revisions/sha256/*/link", 5),
        links("_layers/sha256/*/link", 4),
    )


def pullable(
    server: RegistryServer, tags: Iterable[tuple[str, str]], scratch: Path
) -> dict[tuple[str, str], bool]:
    """skopeo copy --all for each tag, a few at a time; tag → whether it succeeded."""

    def one(tag: tuple[str, str]) -> bool:
        dest = scratch / uuid.uuid4().hex
        try:
            return skopeo_copy_all(f"{server.host}/{tag[0]}:{tag[1]}", dest).ok
        finally:
            shutil.rmtree(dest, ignore_errors=True)

    tags = list(tags)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(tags, pool.map(one, tags), strict=True))


def compare_with_real_gc(
    registry: RegistryServer,
    tmp_path: Path,
    delete_untagged: bool,
    *,
    skopeo_sample: int | None = None,
) -> RegistryOutcome:
    """Predict, then run the real garbage-collect on a copy and hold the prediction to it."""
    outcome = predict(registry.root, V28, delete_untagged)
    plan = outcome.plan
    assert plan.abort is None and not plan.uncertain
    mode = "m" if delete_untagged else "plain"
    work = tmp_path / f"copy-{mode}"
    shutil.copytree(registry.root, work / "storage", symlinks=True)
    copy = RegistryServer(workdir=work, registry_bin=registry.bin)
    tags = sorted(outcome.tag_states)
    if skopeo_sample is not None and len(tags) > skopeo_sample:
        # Every tag the prediction says changes, plus an even spread of the rest.
        changing = [t for t in tags if len(set(outcome.tag_states[t])) > 1]
        rest = [t for t in tags if t not in changing]
        step = max(1, len(rest) // skopeo_sample)
        tags = sorted({*changing, *rest[::step]})
    scratch = tmp_path / f"skopeo-{mode}"
    before_tree = read_tree(copy.v2)
    copy.start()
    try:
        before = pullable(copy, tags, scratch)
        run = copy.garbage_collect(delete_untagged=delete_untagged)  # stops, collects, restarts
        assert run.returncode == 0 and "failed" not in run.stdout, run.stdout[-2000:]
        after = pullable(copy, tags, scratch)
    finally:
        copy.stop()
    after_tree = read_tree(copy.v2)
    # Exactly what was predicted was deleted, nothing else ...
    assert before_tree.blobs - after_tree.blobs == plan.deleted_blobs
    assert before_tree.revisions - after_tree.revisions == {
        (repo, h) for repo, hs in plan.deleted_revisions.items() for h in hs
    }
    assert before_tree.layers == after_tree.layers  # 2.8 never touches _layers
    # ... every predicted break happened and nothing else broke (skopeo is the judge) ...
    for tag in tags:
        assert outcome.tag_states[tag] == (before[tag], after[tag]), tag
    predicted_breaks = breaking(outcome)
    assert {t for t in tags if before[t] and not after[t]} == predicted_breaks & set(tags)
    # ... and every "deleted while referenced" object really went.
    for f in of_kind(outcome.findings, Kind.GC_WOULD_DELETE_REFERENCED):
        h = (f.digest or "").split(":", 1)[1]
        if "blob data" in f.details["loses"]:
            assert h not in after_tree.blobs
        if "revision link" in f.details["loses"]:
            assert (f.repository, h) not in after_tree.revisions
    return outcome


@pytest.mark.registry
@pytest.mark.skopeo
@pytest.mark.parametrize("delete_untagged", [True, False], ids=["delete-untagged", "plain"])
def test_real_oci_index_with_attestations(
    registry: RegistryServer, tmp_path: Path, delete_untagged: bool
) -> None:
    index = push_index(registry, "app", "v1", attestation=True)
    push_image(registry, "app", "single")
    push_image(registry, "lib/base", "latest")
    outcome = compare_with_real_gc(registry, tmp_path, delete_untagged)
    if delete_untagged:
        assert breaking(outcome) == {("app", "v1")}
        assert {
            c["digest"]
            for c in of_kind(outcome.findings, Kind.GC_WOULD_BREAK)[0].details["chain"]
            if c["role"] in ("child", "attestation")
        } == {m.digest for m in index.manifests}
    else:
        assert not outcome.findings


@pytest.mark.registry
@pytest.mark.skopeo
@pytest.mark.parametrize("delete_untagged", [True, False], ids=["delete-untagged", "plain"])
def test_real_docker_manifest_list(
    registry: RegistryServer, tmp_path: Path, delete_untagged: bool
) -> None:
    listed = push_index(registry, "app", "v1", oci=False, platforms=("linux/amd64", "linux/arm/v7"))
    outcome = compare_with_real_gc(registry, tmp_path, delete_untagged)
    assert breaking(outcome) == ({("app", "v1")} if delete_untagged else set())
    if delete_untagged:
        assert set(referenced(outcome)) == {
            *(c.digest for c in listed.children),
            *(b.digest for c in listed.children for b in c.blobs),
        }


@pytest.mark.registry
@pytest.mark.skopeo
@pytest.mark.parametrize("delete_untagged", [True, False], ids=["delete-untagged", "plain"])
def test_real_index_child_also_tagged(
    registry: RegistryServer, tmp_path: Path, delete_untagged: bool
) -> None:
    index = push_index(registry, "app", "v1", attestation=False)
    amd64 = index.children[0]
    push_manifest_raw(registry, "app", "amd64", amd64.manifest_bytes, amd64.media_type)
    outcome = compare_with_real_gc(registry, tmp_path, delete_untagged)
    assert outcome.tag_states[("app", "amd64")] == (True, True)
    if delete_untagged:
        assert breaking(outcome) == {("app", "v1")}
        assert outcome.plan.deleted_revisions == {"app": hexes([index.children[1].digest])}


@pytest.mark.registry
@pytest.mark.skopeo
@pytest.mark.parametrize("delete_untagged", [True, False], ids=["delete-untagged", "plain"])
def test_real_child_revision_link_already_missing(
    registry: RegistryServer, tmp_path: Path, delete_untagged: bool
) -> None:
    index = push_index(registry, "app", "v1", attestation=False)
    push_image(registry, "app", "single")
    lost = index.children[1]
    shutil.rmtree(revision_link_path(registry.v2, "app", lost.digest).parent)
    outcome = compare_with_real_gc(registry, tmp_path, delete_untagged)
    # The plain GC sweeps exactly the orphan child's config and layers.
    if not delete_untagged:
        assert outcome.plan.deleted_blobs == hexes(b.digest for b in lost.blobs)
    assert outcome.tag_states[("app", "v1")] == (False, False)
    assert {b.digest for b in lost.blobs} <= set(referenced(outcome))
    report = report_for(registry.root, V28, delete_untagged)
    assert report.exit_code is ExitCode.DEFECTS  # the gate blocks the GC


def _push_many(registry: RegistryServer, n_images: int, n_indexes: int) -> list[PushedIndex]:
    """Push in a few threads; an overwritten tag's two pushes stay in order in one task."""
    base = make_layer("many", "base")

    def image(i: int) -> None:
        tag = f"t{i:03d}"
        if i % 12 == 0:
            push_image(registry, "many", tag, layers=[base, make_layer("old", tag)], seed="old")
        push_image(registry, "many", tag, layers=[base, make_layer("many", tag)])

    def index(j: int) -> PushedIndex:
        pushed = push_index(registry, "many", f"idx{j}", oci=j % 2 == 0, attestation=j % 4 == 0)
        push_manifest_raw(
            registry, "many", f"idx{j}-alias", pushed.manifest_bytes, pushed.media_type
        )
        return pushed

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(image, range(n_images)))
        return list(pool.map(index, range(n_indexes)))


@pytest.mark.registry
@pytest.mark.skopeo
def test_real_repository_with_many_tags(registry: RegistryServer, tmp_path: Path) -> None:
    """A few hundred tags in one repository (the bench does thousands): single images sharing a
    base layer, overwritten tags leaving untagged manifests, and indexes tagged twice."""
    n_images, n_indexes = 200, 10
    indexes = _push_many(registry, n_images, n_indexes)
    m = compare_with_real_gc(registry, tmp_path, True, skopeo_sample=40)
    assert breaking(m) == {("many", f"idx{j}{s}") for j in range(n_indexes) for s in ("", "-alias")}
    assert len(m.tag_states) == n_images + 2 * n_indexes
    overwritten = len(range(0, n_images, 12))
    children = sum(len(i.manifests) for i in indexes)
    assert m.plan.manifests_deleted == overwritten + children
    plain = compare_with_real_gc(registry, tmp_path, False, skopeo_sample=40)
    assert not plain.findings and not plain.plan.deleted_blobs


@pytest.mark.registry
@pytest.mark.skopeo
@pytest.mark.parametrize("delete_untagged", [True, False], ids=["delete-untagged", "plain"])
def test_real_repository_without_layers_folder(
    registry: RegistryServer, tmp_path: Path, delete_untagged: bool
) -> None:
    """The cause of predicted 2 / real 6 deleted blobs: 2.8 never enumerates a repository that
    lost its _layers folder, so all it references is swept."""
    push_image(registry, "kept", "v1")
    lost = push_index(registry, "lost", "v1", attestation=True)
    shutil.rmtree(registry.v2 / "repositories" / "lost" / "_layers")
    outcome = compare_with_real_gc(registry, tmp_path, delete_untagged)
    assert hexes([lost.digest, *(m.digest for m in lost.manifests)]) <= outcome.plan.deleted_blobs
    assert hexes(b.digest for m in lost.manifests for b in m.blobs) <= outcome.plan.deleted_blobs


def _real_gc_on_copy(
    registry: RegistryServer, tmp_path: Path, delete_untagged: bool
) -> tuple[int, str, set[str], set[str]]:
    """Run the real garbage-collect on a copy: exit status, output, data files before, after."""
    copy = RegistryServer(workdir=tmp_path / f"copy-{delete_untagged}", registry_bin=registry.bin)
    shutil.copytree(registry.root, copy.root, symlinks=True, dirs_exist_ok=True)

    def files() -> set[str]:
        return {str(p.relative_to(copy.v2)) for p in copy.v2.rglob("*") if p.is_file()}

    before = files()
    run = copy.garbage_collect(delete_untagged=delete_untagged)
    return run.returncode, run.stdout, before, files()


@pytest.mark.registry
def test_real_stray_file_among_tags_stops_delete_untagged(
    registry: RegistryServer, tmp_path: Path
) -> None:
    push_image(registry, "app", "v1")
    registry.stop()
    (registry.v2 / "repositories" / "app" / "_manifests" / "tags" / "README").write_text("x")
    outcome = predict(registry.root, V28, delete_untagged=True)
    assert outcome.plan.abort is not None
    code, out, before, after = _real_gc_on_copy(registry, tmp_path, True)
    # "failed to garbage collect: failed to mark: ...", exit status 1, nothing deleted.
    assert code == 1 and "not a directory" in out and before == after
    # The real message carries the driver's prefixes ("filesystem: ..."); the digest and the
    # cause are the same.
    digest = outcome.plan.abort.split("for digest ")[1].split(":")[:2]
    assert "failed to retrieve tags for digest " + ":".join(digest) in out
    code, _, before, after = _real_gc_on_copy(registry, tmp_path, False)
    assert code == 0 and predict(registry.root, V28).plan.abort is None


@pytest.mark.registry
def test_real_sweep_deletes_blobs_of_every_algorithm(
    registry: RegistryServer, tmp_path: Path
) -> None:
    push_image(registry, "app", "v1")
    registry.stop()
    hex512 = "cd" * 64
    data = registry.v2 / "blobs" / "sha512" / hex512[:2] / hex512 / "data"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"stale")
    outcome = predict(registry.root, V28)
    assert outcome.plan.deleted_other_blobs == {f"sha512:{hex512}"}
    code, _, before, after = _real_gc_on_copy(registry, tmp_path, False)
    assert code == 0
    assert before - after == {f"blobs/sha512/cd/{hex512}/data"}


@pytest.mark.registry
def test_real_invalid_digest_path_stops_after_removing_manifests(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """2.8.2 removes the untagged revision links, then fails enumerating blobs (exit 1)."""
    old = push_image(registry, "app", "v1", layers=1, seed="old")
    push_image(registry, "app", "v1", layers=1, seed="new")
    registry.stop()
    bad = registry.v2 / "blobs" / "md5" / "ab" / ("ab" * 16) / "data"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"?")
    plan = predict(registry.root, V28, delete_untagged=True).plan
    assert "unsupported digest algorithm" in (plan.sweep_error or "")
    assert plan.deleted_revisions == {"app": hexes([old.digest])} and plan.blobs_deleted == 0
    code, out, before, after = _real_gc_on_copy(registry, tmp_path, True)
    assert code == 1 and "error enumerating blobs" in out and "unsupported digest algorithm" in out
    hex_ = old.digest.split(":")[1]
    # vacuum.RemoveManifest: the revision link and the tag's history entry for it.
    assert before - after == {
        f"repositories/app/_manifests/revisions/sha256/{hex_}/link",
        f"repositories/app/_manifests/tags/v1/index/sha256/{hex_}/link",
    }
