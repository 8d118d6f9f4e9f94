"""verifier.storage.read: the filesystem reader fills the records the checks judge."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_storage_scan import run
from tests.test_storage_synthetic import SyntheticStore
from verifier.model.findings import Finding, Kind
from verifier.storage import read as read_mod
from verifier.storage.layout import RegistryStorage, detect_layout, digest_from_hex
from verifier.storage.read import (
    blob_sha256,
    iter_repositories,
    list_blobs,
    manifest_reader,
    read_sweep_listing,
)
from verifier.storage.records import BlobStoreState, FailReason, ReadFailure, RepoLinks


@pytest.fixture
def store(tmp_path: Path) -> SyntheticStore:
    return SyntheticStore(tmp_path / "registry")


def registry_of(store: SyntheticStore) -> RegistryStorage:
    return detect_layout(store.root).registries[0]


def repos_of(store: SyntheticStore) -> tuple[dict[str, RepoLinks], list[Finding]]:
    findings: list[Finding] = []
    repos = {r.name: r for r in iter_repositories(registry_of(store), findings)}
    return repos, findings


def test_list_blobs_lists_present_blobs_with_sizes(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    blobs = list_blobs(registry_of(store), with_sizes=True)
    assert blobs.state is BlobStoreState.OK and blobs.complete
    assert blobs.present == {d.split(":")[1] for d in [*img.blobs, img.digest]}
    assert blobs.sizes[img.digest.split(":")[1]] == len(img.body)


def test_read_repository_fills_links_tags_and_folder_flags(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    store.link_layer("uploads/only", img.layers[0])
    (store.repo_dir("uploads/only") / "_layers").rename(store.repo_dir("uploads/only") / "_x")
    repos, findings = repos_of(store)
    assert findings == []
    web = repos["app/web"]
    link = str(store.layer_link("app/web", img.layers[0]).resolve())
    assert web.layers[img.layers[0].split(":")[1]] == link
    assert set(web.revisions) == {img.digest.split(":")[1]}
    assert web.tags["v1"][0] == img.digest.split(":")[1]
    assert (web.has_layers_dir, web.has_manifests_dir, web.has_tags_dir) == (True, True, True)
    assert web.stray_tag_entries == []
    only = repos["uploads/only"]
    assert (only.has_layers_dir, only.has_manifests_dir, only.has_tags_dir) == (False,) * 3


def test_stray_tag_entries_are_recorded_only_in_a_real_tags_folder(
    store: SyntheticStore, tmp_path: Path
) -> None:
    store.image("app/web", "v1")
    tags = store.repo_dir("app/web") / "_manifests" / "tags"
    (tags / "zz-stray").write_text("x")
    repos, _ = repos_of(store)
    assert repos["app/web"].stray_tag_entries == [str((tags / "zz-stray").resolve())]
    moved = tmp_path / "elsewhere"
    tags.rename(moved)
    tags.symlink_to(moved)
    repos, _ = repos_of(store)
    assert repos["app/web"].has_tags_dir is False
    assert repos["app/web"].stray_tag_entries == []


def test_manifest_reader_follows_only_when_asked(store: SyntheticStore, tmp_path: Path) -> None:
    img = store.image("app/web", "v1")
    data = store.data_path(img.digest)
    outside = tmp_path / "outside"
    data.rename(outside)
    data.symlink_to(outside)
    registry = registry_of(store)
    digest = digest_from_hex(img.digest.split(":")[1])
    assert manifest_reader(registry, 1 << 20)(digest) == img.body
    failed = manifest_reader(registry, 1 << 20, follow=False)(digest)
    assert isinstance(failed, ReadFailure) and failed.reason is FailReason.SYMLINK
    too_small = manifest_reader(registry, 4)(digest)
    assert isinstance(too_small, ReadFailure) and too_small.reason is FailReason.TOO_LARGE


def test_blob_sha256_streams_the_data(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    seen: list[int] = []
    hex_ = img.digest.split(":")[1]
    assert blob_sha256(registry_of(store), hex_, seen.append) == hex_
    assert sum(seen) == len(img.body)


def test_sweep_listing_names_other_algorithms_and_the_first_bad_path(
    store: SyntheticStore,
) -> None:
    store.image("app/web", "v1")
    hex512 = "ab" * 64
    good = store.v2 / "blobs" / "sha512" / hex512[:2] / hex512 / "data"
    good.parent.mkdir(parents=True)
    good.write_bytes(b"12345")
    registry = registry_of(store)
    listing = read_sweep_listing(registry, list_blobs(registry))
    assert listing.other_blobs == {f"sha512:{hex512}": 5}
    assert listing.sweep_error is None
    bad = store.v2 / "blobs" / "sha256" / "zz" / "nothex" / "data"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"x")
    listing = read_sweep_listing(registry, list_blobs(registry))
    assert listing.sweep_error == (
        f"{(store.v2 / 'blobs' / 'sha256' / 'zz').resolve()}: invalid checksum digest format"
    )


def test_unlistable_folder_is_a_finding(
    store: SyntheticStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.image("app/web", "v1")
    real = read_mod._scandir_sorted
    target = str(store.repo_dir("app/web").resolve() / "_layers")

    def failing(path: str) -> list[os.DirEntry[str]]:
        if path == target:
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(read_mod, "_scandir_sorted", failing)
    result = run(store.root)
    [f] = result.report.findings  # and no layer_link_missing: the links were not read
    assert (f.kind, f.path) == (Kind.UNREADABLE_FILE, target)
    assert "Permission denied" in f.message


def test_unlistable_blob_prefix_makes_the_listing_incomplete(
    store: SyntheticStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    img = store.image("app/web", "v1")
    hex_ = img.layers[0].split(":")[1]
    store.data_path(img.layers[1]).unlink()  # a real orphan in another prefix
    real = read_mod._scandir_sorted
    target = str(store.v2.resolve() / "blobs" / "sha256" / hex_[:2])

    def failing(path: str) -> list[os.DirEntry[str]]:
        if path == target:
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(read_mod, "_scandir_sorted", failing)
    result = run(store.root)
    assert {(f.kind, f.digest) for f in result.report.findings if f.digest} >= {
        (Kind.ORPHAN_LAYER_LINK, img.layers[1])
    }
    assert img.layers[0] not in {o.digest for o in result.orphan_links}
    assert result.stats[0].blob_gaps == [f"{target}: Permission denied"]
    assert result.report.extra["registries"][0]["blob_listing_complete"] is False
