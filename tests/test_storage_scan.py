"""verifier.storage.scan (reader and checks together) on synthetic trees: each check, each
layout, every odd file."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.images import MANIFEST_ACCEPT, PushedIndex, push_image, push_index
from tests.support.registry import RegistryServer, blob_data_path, tag_dir
from tests.test_storage_synthetic import OCI_MANIFEST, SyntheticStore, sha
from verifier.errors import ExitCode
from verifier.model.findings import Kind, Severity
from verifier.storage.checks import BLOB_DATA_GONE, BLOB_DATA_PRESENT
from verifier.storage.layout import detect_layout
from verifier.storage.read import list_blobs
from verifier.storage.records import BlobStoreState, ScanResult, StorageScanOptions
from verifier.storage.scan import scan_storage


def run(base: Path, **options: object) -> ScanResult:
    return scan_storage(
        detect_layout(base), StorageScanOptions(**options)  # type: ignore[arg-type]
    )


def kinds(result: ScanResult) -> list[tuple[str, str, str | None]]:
    return [(str(f.kind), f.repository, f.digest) for f in result.report.findings]


def defects(result: ScanResult) -> set[tuple[str, str, str | None]]:
    return {(str(f.kind), f.repository, f.digest) for f in result.report.defects}


@pytest.fixture
def store(tmp_path: Path) -> SyntheticStore:
    return SyntheticStore(tmp_path / "registry")


def test_clean_store_has_no_findings(store: SyntheticStore) -> None:
    store.image("app/web", "v1")
    store.index("app/multi", "v2")
    store.image("lib/base", "latest")
    result = run(store.root)
    assert result.report.findings == []
    assert result.report.exit_code is ExitCode.CLEAN
    c = result.report.counters
    assert c["registries"] == 1
    assert c["repositories"] == 3
    assert c["tags"] == 3
    # 3 each for web and base, 6 for the two children of multi
    assert c["layer_links"] == 12
    assert c["revision_links"] == 5
    assert result.report.extra["layout"] == "single-root"
    assert result.report.notes[0].startswith("layout: single registry root")


def test_orphan_layer_link(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    store.image("app/other", "v1")
    store.data_path(img.layers[1]).unlink()
    result = run(store.root)
    image, f = result.report.findings  # sorted by kind
    assert f.kind is Kind.ORPHAN_LAYER_LINK
    assert f.severity is Severity.ERROR
    assert (f.registry, f.repository, f.digest) == ("", "app/web", img.layers[1])
    assert f.path == str(store.layer_link("app/web", img.layers[1]).resolve())
    assert f.details["tags"] == ["v1"]
    assert result.report.exit_code is ExitCode.DEFECTS
    [orphan] = result.orphan_links
    assert orphan.finding is f
    assert result.stats[0].orphan_layer_links == 1
    # the image that uses the layer is broken too, and says what to do
    assert (image.kind, image.severity, image.digest) == (
        Kind.IMAGE_BLOB_MISSING,
        Severity.ERROR,
        img.layers[1],
    )
    assert image.details["tags"] == ["v1"]
    assert image.details["role"] == "layer"
    assert image.details["manifests"] == [img.digest]
    assert image.details["linked"] is True
    assert "app/web:v1" in image.message
    steps = image.details["next_steps"]
    assert "fs fix" in steps[0] and "restart the registry" in steps[1]
    assert steps[2] == "rebuild or re-push: app/web:v1"


def test_blob_folder_without_data_counts_as_gone(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    store.data_path(img.layers[0]).unlink()  # folder stays, as after a manual delete of data
    assert store.data_path(img.layers[0]).parent.is_dir()
    assert defects(run(store.root)) == {
        ("orphan_layer_link", "app/web", img.layers[0]),
        ("image_blob_missing", "app/web", img.layers[0]),
    }


def test_shared_layer_gone_is_orphan_in_every_repo(store: SyntheticStore) -> None:
    shared = [b"shared layer"]
    a = store.image("a", "v1", layer_data=shared)
    store.image("b", "v1", layer_data=shared)
    shutil.rmtree(store.data_path(a.layers[0]).parent)
    assert defects(run(store.root)) == {
        ("orphan_layer_link", "a", a.layers[0]),
        ("orphan_layer_link", "b", a.layers[0]),
        ("image_blob_missing", "a", a.layers[0]),
        ("image_blob_missing", "b", a.layers[0]),
    }


def test_layer_link_missing_while_data_exists_is_relinkable(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    store.tag("app/web", "latest", img.digest)
    store.image("app/other", "v1", layer_data=[b"one shared layer"])
    os.unlink(store.layer_link("app/web", img.config))
    result = run(store.root)
    [f] = result.report.findings
    assert (f.kind, f.severity, f.repository, f.digest) == (
        Kind.LAYER_LINK_MISSING,
        Severity.ERROR,
        "app/web",
        img.config,
    )
    assert f.details["tags"] == ["latest", "v1"]
    assert f.details["role"] == "config"
    assert f.details["repair"] == "relink"
    assert "relink" in f.details["next_steps"][0]
    assert "app/web:latest, app/web:v1" in f.message
    assert f.path == str(store.layer_link("app/web", img.config).resolve())


def test_index_child_blob_gone_names_the_index_tags(store: SyntheticStore) -> None:
    idx = store.index("app/multi", "v1")
    store.tag("app/multi", "stable", idx.digest)
    child = idx.children[1]
    store.data_path(child.config).unlink()
    os.unlink(store.layer_link("app/multi", child.config))  # link and data both gone
    result = run(store.root)
    [f] = result.report.findings
    assert (f.kind, f.digest) == (Kind.IMAGE_BLOB_MISSING, child.config)
    assert f.details["tags"] == ["stable", "v1"]
    assert f.details["manifests"] == [child.digest]
    assert f.details["linked"] is False
    assert not any("fs fix" in s for s in f.details["next_steps"])  # no orphan link to move
    # a pull-through cache is not walked into its index children
    assert run(store.root, proxy_caches=frozenset({"."})).report.findings == []


def test_untagged_manifests_are_not_judged_as_images(store: SyntheticStore) -> None:
    img = store.image("app/web", None)
    store.image("app/web", "v1")
    os.unlink(store.layer_link("app/web", img.layers[0]))
    assert run(store.root).report.findings == []


def test_dangling_revision_of_an_index_child_names_the_index_tags(store: SyntheticStore) -> None:
    idx = store.index("app/multi", "v1")
    child = idx.children[0]
    store.data_path(child.digest).unlink()
    result = run(store.root)
    [rev] = [f for f in result.report.findings if f.kind is Kind.DANGLING_REVISION]
    assert rev.details["tags"] == ["v1"]


def test_dangling_revision_and_tag(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    store.data_path(img.digest).unlink()
    result = run(store.root)
    assert defects(result) == {
        ("dangling_revision", "app/web", img.digest),
        ("dangling_tag", "app/web", img.digest),
    }
    tag = next(f for f in result.report.findings if f.kind is Kind.DANGLING_TAG)
    assert tag.reference == "v1"
    assert tag.details["reason"] == BLOB_DATA_GONE
    rev = next(f for f in result.report.findings if f.kind is Kind.DANGLING_REVISION)
    assert rev.details["tags"] == ["v1"]


def test_dangling_tag_without_revision_or_current_link(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    store.tag("app/web", "v2", img.digest)
    other = store.image("app/web", "v3")
    os.unlink(store.revision_link("app/web", other.digest))
    (store.tag_dir("app/web", "v2") / "current" / "link").unlink()
    result = run(store.root)
    reasons = {
        f.reference: f.details["reason"]
        for f in result.report.findings
        if f.kind is Kind.DANGLING_TAG
    }
    assert reasons == {"v2": "current-link-missing", "v3": "revision-missing"}
    assert len(result.report.findings) == 2


def test_removed_tag_folder_is_not_a_finding(store: SyntheticStore) -> None:
    store.image("app/web", "v1")
    shutil.rmtree(store.tag_dir("app/web", "v1"))
    assert run(store.root).report.findings == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"sha256:" + b"0" * 63, "not a well-formed"),
        (b"sha256:" + b"A" * 64, "not a well-formed"),
        (b"sha256:../../../../etc/passwd", "not a well-formed"),
        (b"\xff\xfe", "not ASCII"),
        (b"", "not a well-formed"),
    ],
)
def test_invalid_layer_link_content(store: SyntheticStore, content: bytes, problem: str) -> None:
    img = store.image("app/web", "v1")
    store.layer_link("app/web", img.layers[0]).write_bytes(content)
    result = run(store.root)
    [f] = result.report.findings
    assert f.kind is Kind.INVALID_LINK
    assert problem in f.message
    assert f.digest == img.layers[0]  # from the validated folder name, never from the content
    assert result.orphan_links == []


def test_link_content_naming_another_digest_is_invalid(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    store.revision_link("app/web", img.digest).write_bytes(img.layers[0].encode())
    result = run(store.root)
    found = {(str(f.kind), f.digest) for f in result.report.findings}
    assert ("invalid_link", img.digest) in found
    invalid = next(f for f in result.report.findings if f.kind is Kind.INVALID_LINK)
    assert (invalid.expected_digest, invalid.actual_digest) == (img.digest, img.layers[0])
    # the revision no longer counts, so the tag pointing at it dangles
    assert ("dangling_tag", img.digest) in found


def test_invalid_folder_names(store: SyntheticStore) -> None:
    store.image("app/web", "v1")
    (store.repo_dir("app/web") / "_layers" / "sha256" / ("AB" * 32)).mkdir()
    (store.repo_dir("app/web") / "_layers" / "sha256" / "...").mkdir()
    (store.repo_dir("app/web") / "_manifests" / "revisions" / "sha512").mkdir()
    (store.v2 / "blobs" / "sha256" / "zz").mkdir()
    (store.v2 / "blobs" / "sha256" / "ab" / ("cd" * 32)).mkdir(parents=True)  # wrong prefix
    result = run(store.root)
    names = sorted(Path(f.path or "").name for f in result.report.findings)
    assert [str(f.kind) for f in result.report.findings] == ["invalid_link"] * 5
    assert names == sorted(["AB" * 32, "...", "sha512", "zz", "cd" * 32])


def test_orphan_index_child_after_gc_incident(store: SyntheticStore) -> None:
    """What garbage-collect --delete-untagged does to a tagged index (as observed on 2.8)."""
    idx = store.index("app/multi", "v1")
    store.image("app/multi", "plain")
    amd64, arm64 = idx.children
    for child in idx.children:
        os.unlink(store.revision_link("app/multi", child.digest))
        for blob in child.blobs:
            shutil.rmtree(store.data_path(blob).parent)
    result = run(store.root)
    expected = {("orphan_index_child", "app/multi", c.digest) for c in idx.children} | {
        ("orphan_layer_link", "app/multi", b) for c in idx.children for b in c.blobs
    }
    assert defects(result) == expected
    child_findings = {
        f.digest: f for f in result.report.findings if f.kind is Kind.ORPHAN_INDEX_CHILD
    }
    f = child_findings[arm64.digest]
    assert f.platform == "linux/arm64"
    assert f.reference == idx.digest
    assert f.media_type == OCI_MANIFEST
    assert f.path == str(store.revision_link("app/multi", arm64.digest).resolve())
    assert f.details["blob_data"] == BLOB_DATA_PRESENT
    assert f.details["index_tags"] == ["v1"]
    assert f.details["relinkable"] is False
    assert f.details["child_blobs"] == [
        {"role": "config", "digest": arm64.config, "linked": True, "present": False},
        {"role": "layer", "digest": arm64.layers[0], "linked": True, "present": False},
        {"role": "layer", "digest": arm64.layers[1], "linked": True, "present": False},
    ]
    assert "rebuild required, see docs/runbook.md" in f.message
    assert "blob-data-present" in f.message
    assert {c.digest for c in result.orphan_children} == {amd64.digest, arm64.digest}
    assert not any(c.relinkable for c in result.orphan_children)


def test_orphan_index_child_blob_data_gone(store: SyntheticStore) -> None:
    idx = store.index("app/multi", "v1")
    child = idx.children[0]
    os.unlink(store.revision_link("app/multi", child.digest))
    store.data_path(child.digest).unlink()
    result = run(store.root)
    [f] = [f for f in result.report.findings if f.kind is Kind.ORPHAN_INDEX_CHILD]
    assert f.details["blob_data"] == BLOB_DATA_GONE
    assert f.details["child_blobs"] == []
    assert "blob-data-gone" in f.message


def test_orphan_child_with_everything_present_is_relinkable(store: SyntheticStore) -> None:
    idx = store.index("app/multi", "v1")
    child = idx.children[1]
    os.unlink(store.revision_link("app/multi", child.digest))
    result = run(store.root)
    [orphan] = result.orphan_children
    assert orphan.relinkable
    assert orphan.findings[0].details["relinkable"] is True
    assert "relinkable" in orphan.findings[0].message
    assert all(b["linked"] and b["present"] for b in orphan.findings[0].details["child_blobs"])


def test_orphan_child_not_relinkable_when_a_blob_is_unlinked(store: SyntheticStore) -> None:
    idx = store.index("app/multi", "v1")
    child = idx.children[0]
    os.unlink(store.revision_link("app/multi", child.digest))
    os.unlink(store.layer_link("app/multi", child.layers[0]))
    [orphan] = run(store.root).orphan_children
    assert not orphan.relinkable
    assert f"layer {child.layers[0]} not linked" in orphan.reason


def test_orphan_child_not_relinkable_when_data_does_not_match(store: SyntheticStore) -> None:
    idx = store.index("app/multi", "v1")
    child = idx.children[0]
    os.unlink(store.revision_link("app/multi", child.digest))
    store.data_path(child.digest).write_bytes(child.body + b" ")
    [orphan] = run(store.root).orphan_children
    assert not orphan.relinkable
    assert "does not match its digest" in orphan.reason


def test_one_child_in_two_indexes_is_one_orphan_two_findings(store: SyntheticStore) -> None:
    idx = store.index("app/multi", "v1")
    child = idx.children[0]
    second = SyntheticStore(store.root).blob(
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
        b'"manifests":[{"mediaType":"'
        + OCI_MANIFEST.encode()
        + b'","digest":"'
        + child.digest.encode()
        + b'","size":'
        + str(len(child.body)).encode()
        + b"}]}"
    )
    store.link_revision("app/multi", second)
    os.unlink(store.revision_link("app/multi", child.digest))
    result = run(store.root)
    [orphan] = result.orphan_children
    assert len(orphan.findings) == 2
    assert {f.reference for f in orphan.findings} == {idx.digest, second}


def test_index_child_with_traversal_digest_is_manifest_invalid(store: SyntheticStore) -> None:
    """A child digest like sha256:../../x must be a finding, never a path."""
    evil = {"mediaType": OCI_MANIFEST, "digest": "sha256:../../../../x", "size": 1}
    idx = store.index("app/multi", "v1", extra_children=[evil])
    result = run(store.root)
    [f] = result.report.findings
    assert f.kind is Kind.MANIFEST_INVALID
    assert f.digest == idx.digest
    assert f.path == str(store.data_path(idx.digest).resolve())


def test_index_child_with_other_algorithm_is_manifest_invalid(store: SyntheticStore) -> None:
    other = {"mediaType": OCI_MANIFEST, "digest": "sha512:" + "a" * 128, "size": 1}
    store.index("app/multi", "v1", extra_children=[other])
    [f] = run(store.root).report.findings
    assert f.kind is Kind.MANIFEST_INVALID
    assert "not a sha256 digest" in f.message


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"schemaVersion": 7}', b"\xff"])
def test_malformed_manifest_json_is_a_finding(store: SyntheticStore, body: bytes) -> None:
    digest = store.blob(body)
    store.link_revision("app/web", digest)
    store.tag("app/web", "bad", digest)
    result = run(store.root)
    [f] = result.report.findings
    assert f.kind is Kind.MANIFEST_INVALID
    assert f.digest == digest
    assert f.details["tags"] == ["bad"]


def test_oversized_manifest_is_unreadable_not_loaded(store: SyntheticStore) -> None:
    digest = store.blob(b" " * 2048)
    store.link_revision("app/web", digest)
    [f] = run(store.root, max_manifest_bytes=1024).report.findings
    assert f.kind is Kind.UNREADABLE_FILE
    assert "2048 bytes > 1024" in f.message


def test_proxy_cache_skips_index_check_and_says_so(tmp_path: Path) -> None:
    for name in ("private", "dockerhub"):
        s = SyntheticStore(tmp_path / name)
        idx = s.index("library/alpine", "3")
        os.unlink(s.revision_link("library/alpine", idx.children[0].digest))
    result = run(tmp_path, proxy_caches=frozenset({"dockerhub"}))
    assert [(f.registry, str(f.kind)) for f in result.report.findings] == [
        ("private", "orphan_index_child")
    ]
    assert any("skipped for proxy caches: dockerhub" in n for n in result.report.notes)
    assert [r["proxy_cache"] for r in result.report.extra["registries"]] == [True, False]


def test_proxy_cache_dot_names_a_single_root(store: SyntheticStore) -> None:
    assert run(store.root, proxy_caches=frozenset({"."})).stats[0].proxy_cache
    assert not run(store.root, proxy_caches=frozenset({"other"})).stats[0].proxy_cache


def test_multi_registry_findings_carry_registry_name(tmp_path: Path) -> None:
    stores = {name: SyntheticStore(tmp_path / name) for name in ("private", "ghcr")}
    imgs = {name: s.image("app/web", "v1") for name, s in stores.items()}
    for name, s in stores.items():
        s.data_path(imgs[name].layers[0]).unlink()
    result = run(tmp_path)
    assert [(f.registry, f.kind, f.digest) for f in result.report.findings] == [
        ("ghcr", Kind.IMAGE_BLOB_MISSING, imgs["ghcr"].layers[0]),
        ("ghcr", Kind.ORPHAN_LAYER_LINK, imgs["ghcr"].layers[0]),
        ("private", Kind.IMAGE_BLOB_MISSING, imgs["private"].layers[0]),
        ("private", Kind.ORPHAN_LAYER_LINK, imgs["private"].layers[0]),
    ]
    assert result.report.extra["layout"] == "multi-registry"
    assert [r["name"] for r in result.report.extra["registries"]] == ["ghcr", "private"]


def test_blob_stores_are_per_registry(tmp_path: Path) -> None:
    """A blob present in one registry does not satisfy another registry's link."""
    a = SyntheticStore(tmp_path / "a")
    b = SyntheticStore(tmp_path / "b")
    img = a.image("app", "v1")
    b.link_layer("app", img.layers[0])
    result = run(tmp_path)
    assert defects(result) == {("orphan_layer_link", "app", img.layers[0])}
    assert result.report.findings[0].registry == "b"


def test_nested_repositories(store: SyntheticStore) -> None:
    outer = store.image("team", "v1")
    inner = store.image("team/app/web", "v1")
    store.data_path(outer.layers[0]).unlink()
    store.data_path(inner.layers[0]).unlink()
    result = run(store.root)
    assert {(f.repository, f.digest) for f in result.report.findings} == {
        ("team", outer.layers[0]),
        ("team/app/web", inner.layers[0]),
    }
    assert len(result.report.findings) == 4  # an orphan link and a broken image each
    assert result.report.counters["repositories"] == 2


def test_symlinked_link_file_is_reported_not_followed(
    store: SyntheticStore, tmp_path: Path
) -> None:
    img = store.image("app/web", "v1")
    link = store.layer_link("app/web", img.layers[0])
    outside = tmp_path / "outside-link"
    outside.write_bytes(b"sha256:" + b"0" * 64)  # would be an orphan if followed
    link.unlink()
    os.symlink(outside, link)
    result = run(store.root)
    [f] = result.report.findings
    assert f.kind is Kind.UNEXPECTED_SYMLINK
    assert f.path == str(detect_layout(store.root).base / link.relative_to(store.root))
    assert result.orphan_links == []
    assert result.report.incomplete
    assert result.report.exit_code is ExitCode.INCOMPLETE


def test_symlinked_blob_data_is_followed_as_distribution_does(
    store: SyntheticStore, tmp_path: Path
) -> None:
    img = store.index("app/multi", "v1").children[0]
    for digest in (img.layers[0], img.digest):  # a layer and a manifest moved to another disk
        data = store.data_path(digest)
        data.rename(tmp_path / digest)
        os.symlink(tmp_path / digest, data)
    result = run(store.root)
    assert result.report.findings == []
    assert result.report.exit_code is ExitCode.CLEAN


def test_dangling_blob_symlink_is_a_gap_never_an_absence(
    store: SyntheticStore, tmp_path: Path
) -> None:
    """A symlink to a disk that is not mounted: the blob might exist, nothing is judged."""
    img = store.image("app/web", "v1")
    data = store.data_path(img.layers[0])
    data.unlink()
    os.symlink(tmp_path / "unmounted" / "data", data)
    result = run(store.root)
    assert [f.kind for f in result.report.findings] == [Kind.UNREADABLE_FILE]
    assert result.orphan_links == []
    assert result.stats[0].blob_gaps
    assert result.report.exit_code is ExitCode.INCOMPLETE


def test_symlinked_blob_store_is_followed(store: SyntheticStore, tmp_path: Path) -> None:
    img = store.image("app/web", "v1")
    blobs = store.v2 / "blobs" / "sha256"
    blobs.rename(tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", blobs)
    assert run(store.root).report.findings == []
    store.data_path(img.layers[0]).unlink()
    assert defects(run(store.root)) == {
        ("orphan_layer_link", "app/web", img.layers[0]),
        ("image_blob_missing", "app/web", img.layers[0]),
    }


def test_symlinked_blob_prefix_gives_no_false_orphans(
    store: SyntheticStore, tmp_path: Path
) -> None:
    """Prefix folders moved to another disk and symlinked back hold present blobs."""
    imgs = [store.image(f"app/img{i}", "v1") for i in range(8)]
    blobs = store.v2 / "blobs" / "sha256"
    moved = sorted(p.name for p in blobs.iterdir())[::2]
    (tmp_path / "disk2").mkdir()
    for name in moved:
        (blobs / name).rename(tmp_path / "disk2" / name)
        os.symlink(tmp_path / "disk2" / name, blobs / name)
    result = run(store.root)
    assert result.report.findings == []
    assert result.report.exit_code is ExitCode.CLEAN
    assert any("reached through a symlink" in n for n in result.report.notes)
    assert result.stats[0].blobs == sum(len(i.blobs) + 1 for i in imgs)


def test_symlinked_repository_folder_is_not_walked(store: SyntheticStore, tmp_path: Path) -> None:
    other = SyntheticStore(tmp_path / "other")
    img = other.image("app/web", "v1")
    other.data_path(img.layers[0]).unlink()
    os.symlink(other.repo_dir("app"), store.repo_dir("app"))
    result = run(store.root)
    assert [f.kind for f in result.report.findings] == [Kind.UNEXPECTED_SYMLINK]


def test_unreadable_link_is_a_finding_not_a_traceback(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    link = store.layer_link("app/web", img.layers[0])
    link.unlink()
    link.mkdir()  # reading a directory fails with EISDIR, like a permission error would
    result = run(store.root)
    [f] = result.report.findings
    assert f.kind is Kind.UNREADABLE_FILE
    assert f.severity is Severity.WARNING
    assert result.report.exit_code is ExitCode.INCOMPLETE


def test_fifo_in_place_of_a_link_does_not_hang(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    link = store.layer_link("app/web", img.layers[0])
    link.unlink()
    os.mkfifo(link)
    [f] = run(store.root).report.findings
    assert f.kind is Kind.INVALID_LINK


def test_verify_digests_finds_corrupt_and_truncated_blobs(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    layer = store.data_path(img.layers[0])
    data = layer.read_bytes()
    layer.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # same size, different bytes
    store.data_path(img.layers[1]).write_bytes(b"")
    assert run(store.root).report.findings == []  # not without --verify-digests
    seen: list[tuple[int, int]] = []
    result = scan_storage(
        detect_layout(store.root),
        StorageScanOptions(verify_digests=True),
        lambda d, t: seen.append((d, t)),
    )
    found = {(f.kind, f.digest) for f in result.report.findings}
    assert found == {(Kind.CORRUPT_BLOB, img.layers[0]), (Kind.CORRUPT_BLOB, img.layers[1])}
    corrupt = next(f for f in result.report.findings if f.digest == img.layers[1])
    assert corrupt.expected_digest == img.layers[1]
    assert corrupt.actual_digest == sha(b"")
    assert corrupt.actual_size == 0
    total = sum(p.stat().st_size for p in store.v2.joinpath("blobs").rglob("data"))
    assert seen and seen[-1] == (total, total)
    assert result.report.counters["blobs_verified"] == 4


def test_blob_store_missing_or_empty_is_noted(store: SyntheticStore) -> None:
    store.image("app/web", "v1")
    shutil.rmtree(store.v2 / "blobs")
    result = run(store.root)
    assert result.stats[0].blob_store is BlobStoreState.MISSING
    assert any("blob store missing while 5 links exist" in n for n in result.report.notes)
    (store.v2 / "blobs" / "sha256").mkdir(parents=True)
    assert list_blobs(detect_layout(store.root).registries[0]).state is BlobStoreState.EMPTY


def test_findings_are_sorted_and_stable(tmp_path: Path) -> None:
    s = SyntheticStore(tmp_path)
    for repo in ("zeta", "alpha", "mid"):
        img = s.image(repo, "v1")
        s.data_path(img.layers[0]).unlink()
    first = run(tmp_path).report.findings
    assert [f.repository for f in first] == ["alpha"] * 2 + ["mid"] * 2 + ["zeta"] * 2
    assert run(tmp_path).report.findings == first


def test_scan_never_changes_anything(store: SyntheticStore) -> None:
    from tests.test_storage_synthetic import snapshot

    idx = store.index("app/multi", "v1")
    os.unlink(store.revision_link("app/multi", idx.children[0].digest))
    store.data_path(idx.children[1].layers[0]).unlink()
    before = snapshot(store.root)
    run(store.root, verify_digests=True)
    assert snapshot(store.root) == before


# --- against the real registry -------------------------------------------------------------


def _expected_gc_findings(repo: str, pushed: PushedIndex) -> set[tuple[str, str, str | None]]:
    """garbage-collect --delete-untagged: every child orphaned, every child blob link left."""
    out: set[tuple[str, str, str | None]] = {
        ("orphan_index_child", repo, m.digest) for m in pushed.manifests
    }
    out |= {("orphan_layer_link", repo, b.digest) for m in pushed.manifests for b in m.blobs}
    return out


@pytest.mark.registry
def test_real_gc_incident_exact_findings(registry: RegistryServer) -> None:
    oci = push_index(registry, "app/multi", "v1")
    docker = push_index(registry, "app/legacy", "v1", oci=False, platforms=("linux/amd64",))
    plain = push_image(registry, "app/plain", "v1")
    assert scan_storage(detect_layout(registry.root)).report.findings == []
    gc = registry.garbage_collect(delete_untagged=True)
    assert gc.returncode == 0, gc.stdout

    result = scan_storage(detect_layout(registry.root))
    assert defects(result) == _expected_gc_findings("app/multi", oci) | _expected_gc_findings(
        "app/legacy", docker
    )
    assert len(result.report.findings) == len(result.report.defects)
    children = {f.digest: f for f in result.report.findings if f.kind is Kind.ORPHAN_INDEX_CHILD}
    for child in oci.manifests:
        f = children[child.digest]
        assert f.details["blob_data"] == BLOB_DATA_PRESENT  # GC keeps the children's data
        assert f.platform == child.platform
        assert f.details["attestation"] is (child.platform == "unknown/unknown")
        assert f.details["index"] == oci.digest
        assert f.details["index_tags"] == ["v1"]
        assert not f.details["relinkable"]
        assert {b["digest"] for b in f.details["child_blobs"]} == {b.digest for b in child.blobs}
        assert all(b["linked"] and b["present"] is False for b in f.details["child_blobs"])
    assert children[docker.children[0].digest].platform == "linux/amd64"
    assert not any(f.repository == "app/plain" for f in result.report.findings)
    assert plain.digest


@pytest.mark.registry
def test_real_production_damage(registry: RegistryServer) -> None:
    """Data files removed and tag folders removed, as found on damaged production storage."""
    a = push_image(registry, "team/a", "v1")
    b = push_image(registry, "team/b", "v1")
    c = push_image(registry, "team/c", "v1")
    push_image(registry, "team/c", "v2")
    blob_data_path(registry.v2, a.layers[1].digest).unlink()  # layer data gone, link kept
    blob_data_path(registry.v2, b.digest).unlink()  # manifest data gone
    shutil.rmtree(tag_dir(registry.v2, "team/c", "v1"))  # tag folder removed: not a defect
    result = scan_storage(detect_layout(registry.root))
    assert defects(result) == {
        ("orphan_layer_link", "team/a", a.layers[1].digest),
        ("image_blob_missing", "team/a", a.layers[1].digest),
        ("dangling_revision", "team/b", b.digest),
        ("dangling_tag", "team/b", b.digest),
    }
    assert c.digest


@pytest.mark.registry
def test_real_pull_through_cache_holds_partial_indexes(registry_bin: str, tmp_path: Path) -> None:
    """A real proxy cache of a real registry: partial index, skipped with --proxy-cache."""
    base = tmp_path / "base"

    def storage(name: str) -> dict[str, Any]:
        return {"storage": {"filesystem": {"rootdirectory": str(base / name)}}}

    with RegistryServer(
        workdir=tmp_path / "private", registry_bin=registry_bin, extra_config=storage("private")
    ) as private:
        pushed = push_index(private, "app/multi", "v1")
        mirror_config = {**storage("mirror"), "proxy": {"remoteurl": private.url}}
        with (
            RegistryServer(
                workdir=tmp_path / "mirror", registry_bin=registry_bin, extra_config=mirror_config
            ) as mirror,
            httpx.Client(
                base_url=mirror.url, headers={"Accept": MANIFEST_ACCEPT}, trust_env=False
            ) as client,
        ):
            # Pull the index and one platform only, as a single-arch host does.
            assert client.get("/v2/app/multi/manifests/v1").status_code == 200
            amd64 = pushed.children[0]
            assert client.get(f"/v2/app/multi/manifests/{amd64.digest}").status_code == 200
            for blob in amd64.blobs:
                assert client.get(f"/v2/app/multi/blobs/{blob.digest}").content == blob.data
            # The proxy commits a fetched blob to its storage after the client has the bytes;
            # stopping it before then would leave a partial cache this test does not mean.
            mirror_v2 = base / "mirror" / "docker" / "registry" / "v2"
            deadline = time.monotonic() + 20
            while not all(blob_data_path(mirror_v2, b.digest).exists() for b in amd64.blobs):
                assert time.monotonic() < deadline, "the proxy never stored the pulled blobs"
                time.sleep(0.05)

    layout = detect_layout(base)
    assert [r.name for r in layout.registries] == ["mirror", "private"]
    unskipped = scan_storage(layout)
    assert {(f.registry, str(f.kind), f.digest) for f in unskipped.report.findings} == {
        ("mirror", "orphan_index_child", m.digest) for m in pushed.manifests[1:]
    }
    assert all(f.details["blob_data"] == BLOB_DATA_GONE for f in unskipped.report.findings)
    skipped = scan_storage(layout, StorageScanOptions(proxy_caches=frozenset({"mirror"})))
    assert skipped.report.findings == []
    assert any("skipped for proxy caches: mirror" in n for n in skipped.report.notes)
