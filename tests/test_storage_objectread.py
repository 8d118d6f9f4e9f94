"""The object-store reader against the filesystem reader, on the same storage trees.

The strongest tests are differential: a tree is built on disk (synthetic, or pushed to the real
registry) and damaged, every file is loaded into the in-memory backend, and both readers, and
then the scan's checks over both readers' records, must agree exactly (paths compared after
mapping the disk root to the backend's location). Empty folders are pruned from the disk tree
first: an object store cannot hold them, so they are the one thing the two cannot share.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from tests.support.images import push_image, push_index
from tests.support.memory_backend import MemoryBackend, load_tree
from tests.support.registry import RegistryServer
from tests.test_storage_synthetic import SyntheticStore, sha
from verifier.errors import StorageUnavailable, UsageError
from verifier.model.findings import Finding, Kind
from verifier.model.manifest import DEFAULT_MAX_MANIFEST_BYTES
from verifier.storage import checks as storage_checks
from verifier.storage import read as fs_reader
from verifier.storage import records, scan
from verifier.storage.fsio import FailReason, ReadFailure
from verifier.storage.layout import RegistryStorage, detect_layout
from verifier.storage.objectread import (
    OVERSIZED_LINK_READ_LIMIT,
    ObjectRegistry,
    ObjectStoreReader,
    RepoDirs,
    detect_object_layout,
)

LOCATION = "s3://bucket/prefix"
V2 = "docker/registry/v2"

Mapper = Callable[[Any], Any]


# --- helpers ---------------------------------------------------------------------------------


def prune_empty_dirs(root: Path) -> None:
    """Remove every empty folder below `root` (bottom-up), as an object store cannot hold one."""
    for dirpath, _dirnames, _filenames in os.walk(root, topdown=False):
        if Path(dirpath) != root and not os.listdir(dirpath):
            os.rmdir(dirpath)


def mapper(root: Path) -> Mapper:
    """Rewrite every string naming a path under `root` to name the same key in the bucket."""
    prefix = str(root)

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(prefix, LOCATION)
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, tuple):
            return tuple(convert(v) for v in value)
        if isinstance(value, set):
            return {convert(v) for v in value}
        if isinstance(value, dict):
            return {convert(k): convert(v) for k, v in value.items()}
        return value

    return convert


def finding_dict(f: Finding, convert: Mapper) -> dict[str, Any]:
    out: dict[str, Any] = convert(f.to_dict())
    return out


def blob_record(store: records.BlobStore, convert: Mapper) -> dict[str, Any]:
    return {
        "state": store.state,
        "present": store.present,
        "unknown": store.unknown,
        "sizes": store.sizes,
        "unlisted_prefixes": store.unlisted_prefixes,
        "gaps": convert(store.gaps),
        "followed_symlinks": store.followed_symlinks,
        "findings": [finding_dict(f, convert) for f in store.findings],
    }


def repo_record(repo: records.RepoLinks, convert: Mapper) -> dict[str, Any]:
    return {
        "name": repo.name,
        "path": convert(repo.path),
        "layers": list(convert(repo.layers).items()),
        "revisions": list(convert(repo.revisions).items()),
        "tags": list(convert(repo.tags).items()),
        "layer_link_files": repo.layer_link_files,
        "bad_layer_links": repo.bad_layer_links,
        "findings": [finding_dict(f, convert) for f in repo.findings],
    }


def run_checks(
    registry: RegistryStorage,
    blobs: records.BlobStore,
    repos: list[records.RepoLinks],
    walk_findings: list[Finding],
    read: records.ManifestReader,
) -> list[Finding]:
    """The body of `scan_storage`'s loop for one registry, over records either reader made."""
    findings: list[Finding] = [*blobs.findings, *walk_findings]
    for repo in repos:
        findings.extend(repo.findings)
        findings.extend(storage_checks.check_repository(registry, repo, blobs, read).findings)
    return findings


def finding_set(findings: list[Finding], convert: Mapper) -> list[str]:
    return sorted(json.dumps(finding_dict(f, convert), sort_keys=True) for f in findings)


def read_fs(root: Path) -> tuple[records.BlobStore, list[records.RepoLinks], list[Finding]]:
    registry = RegistryStorage("", root)
    walk: list[Finding] = []
    repos = list(fs_reader.iter_repositories(registry, walk))
    return fs_reader.list_blobs(registry, with_sizes=True), repos, walk


def read_obj(
    backend: MemoryBackend, root: Path, workers: int = 4
) -> tuple[records.BlobStore, list[records.RepoLinks], list[Finding]]:
    reader = ObjectStoreReader(backend, workers=workers)
    registry = RegistryStorage("", root)
    walk: list[Finding] = []
    repos = list(reader.iter_repositories(registry, walk))
    return reader.list_blobs(registry, with_sizes=True), repos, walk


def assert_same(root: Path, *, expect_kinds: set[Kind] | None = None) -> list[Finding]:
    """Both readers, then the scan's checks over both, agree on the tree at `root`."""
    prune_empty_dirs(root)
    convert = mapper(root)
    backend = load_tree(root, location=LOCATION)
    fs_blobs, fs_repos, fs_walk = read_fs(root)
    ob_blobs, ob_repos, ob_walk = read_obj(backend, root)
    assert blob_record(ob_blobs, convert) == blob_record(fs_blobs, convert)
    assert [r.name for r in ob_repos] == [r.name for r in fs_repos]
    for ob, fs in zip(ob_repos, fs_repos, strict=True):
        assert repo_record(ob, convert) == repo_record(fs, convert)
    assert [finding_dict(f, convert) for f in ob_walk] == [
        finding_dict(f, convert) for f in fs_walk
    ]
    # Same records whatever the pool size.
    one = read_obj(load_tree(root, location=LOCATION, page_size=1), root, workers=1)
    eight = read_obj(load_tree(root, location=LOCATION, page_size=50), root, workers=8)
    for other in (one, eight):
        assert blob_record(other[0], convert) == blob_record(ob_blobs, convert)
        assert [repo_record(r, convert) for r in other[1]] == [
            repo_record(r, convert) for r in ob_repos
        ]

    registry = RegistryStorage("", root)
    fs_read = fs_reader.manifest_reader(registry, DEFAULT_MAX_MANIFEST_BYTES)
    ob_read = ObjectStoreReader(backend).manifest_reader(registry, DEFAULT_MAX_MANIFEST_BYTES)
    fs_findings = run_checks(registry, fs_blobs, fs_repos, fs_walk, fs_read)
    ob_findings = run_checks(registry, ob_blobs, ob_repos, ob_walk, ob_read)
    assert finding_set(ob_findings, convert) == finding_set(fs_findings, convert)
    # The helper is the scan's loop: the real scan of the disk tree finds the same.
    whole = scan.scan_storage(detect_layout(root))
    assert finding_set(whole.report.findings, convert) == finding_set(fs_findings, convert)
    if expect_kinds is not None:
        assert {f.kind for f in ob_findings} == expect_kinds
    return ob_findings


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1]


# --- differential: synthetic trees ------------------------------------------------------------


def healthy(store: SyntheticStore) -> None:
    store.image("app/web", "v1")
    store.image("app/web", "v2", seed="2")
    store.index("app/multi", "latest")
    store.image("team/a", "1")
    store.image("team/a/b", "1")
    store.image("team/a/b/c", "x")


def test_differential_healthy_tree_with_nested_names(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    healthy(store)
    findings = assert_same(tmp_path, expect_kinds=set())
    assert findings == []
    _, repos, _ = read_obj(load_tree(tmp_path, location=LOCATION), tmp_path)
    assert [r.name for r in repos] == ["app/multi", "app/web", "team/a", "team/a/b", "team/a/b/c"]


def test_differential_deleted_blob_data(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    healthy(store)
    img = store.image("app/broken", "v1")
    store.data_path(img.layers[0]).unlink()
    store.data_path(img.digest).unlink()
    findings = assert_same(tmp_path)
    kinds = {f.kind for f in findings}
    assert {Kind.ORPHAN_LAYER_LINK, Kind.DANGLING_REVISION, Kind.DANGLING_TAG} <= kinds


def test_differential_deleted_revision_links(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    idx = store.index("app/multi", "latest")
    img = store.image("app/web", "v1")
    store.revision_link("app/multi", idx.children[0].digest).unlink()
    store.revision_link("app/web", img.digest).unlink()
    findings = assert_same(tmp_path)
    kinds = {f.kind for f in findings}
    assert {Kind.ORPHAN_INDEX_CHILD, Kind.DANGLING_TAG} <= kinds


def test_differential_malformed_and_redirected_links(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    a = store.image("app/web", "v1")
    b = store.image("app/web", "v2", seed="b")
    store.layer_link("app/web", a.layers[0]).write_bytes(b"garbage\n")
    store.layer_link("app/web", a.layers[1]).write_bytes(b"\xff\xfe not ascii")
    # A link naming another digest than its folder.
    store.layer_link("app/web", a.config).write_bytes(b.config.encode())
    store.revision_link("app/web", b.digest).write_bytes(b"sha256:XYZ")
    (store.tag_dir("app/web", "v2") / "current" / "link").write_bytes(b"nonsense")
    # Longer than a link read: judged on its first bytes, on disk and in the bucket alike.
    store.layer_link("app/web", b.layers[0]).write_bytes(b.layers[0].encode() + b"x" * 300)
    findings = assert_same(tmp_path)
    invalid = [f for f in findings if f.kind is Kind.INVALID_LINK]
    assert len(invalid) == 6
    _, repos, _ = read_obj(load_tree(tmp_path, location=LOCATION), tmp_path)
    (repo,) = repos
    assert {hex_of(a.layers[0]), hex_of(a.layers[1]), hex_of(a.config)} <= repo.bad_layer_links
    assert repo.layer_link_files == 6


def test_differential_tag_without_current_link(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    store.image("app/web", "v1")
    store.image("app/web", "v2", seed="2")
    (store.tag_dir("app/web", "v1") / "current" / "link").unlink()
    findings = assert_same(tmp_path)
    dangling = [f for f in findings if f.kind is Kind.DANGLING_TAG]
    assert [f.details["reason"] for f in dangling] == ["current-link-missing"]
    assert dangling[0].path == (
        f"{LOCATION}/{V2}/repositories/app/web/_manifests/tags/v1/current/link"
    )


def test_differential_invalid_names_and_odd_entries(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    img = store.image("app/web", "v1")
    v2 = store.v2
    blobs = v2 / "blobs" / "sha256"
    other = sha(b"elsewhere")
    for rel, data in {
        "zz/whatever/data": b"x",  # prefix folder name not hex
        f"ab/{'c' * 64}/data": b"x",  # blob folder under the wrong prefix
        "ab/NOTHEX/data": b"x",
        f"{hex_of(other)[:2]}/{hex_of(other)}/notdata": b"x",  # blob folder without data
        "stray-file": b"x",  # a file directly in blobs/sha256
    }.items():
        (blobs / rel).parent.mkdir(parents=True, exist_ok=True)
        (blobs / rel).write_bytes(data)
    repo = store.repo_dir("app/web")
    for rel, data in {
        "_layers/sha512/abc/link": b"x",  # unsupported algorithm
        "_layers/sha256/NOTHEX/link": b"x",
        f"_layers/sha256/{'d' * 64}/notlink": b"x",  # link folder without link
        "_manifests/revisions/md5/abc/link": b"x",
        "_manifests/tags/stray": b"x",  # a file among the tags
        "_manifests/tags/v9/index/sha256/x/link": b"x",  # tag without current/link
        "_private/thing": b"x",
    }.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)
    (v2 / "repositories" / "file-not-folder").write_bytes(b"x")
    (v2 / "repositories" / "_hidden" / "_layers" / "x").parent.mkdir(parents=True)
    (v2 / "repositories" / "_hidden" / "_layers" / "x").write_bytes(b"x")
    assert img.layers
    findings = assert_same(tmp_path)
    assert sum(f.kind is Kind.INVALID_LINK for f in findings) == 6


def test_differential_missing_blobs_folder(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    healthy(store)
    shutil.rmtree(store.v2 / "blobs")
    assert_same(tmp_path)
    blobs, _, _ = read_obj(load_tree(tmp_path, location=LOCATION), tmp_path)
    assert blobs.state is records.BlobStoreState.MISSING


def test_empty_blob_store(tmp_path: Path) -> None:
    """An empty ``blobs/sha256`` folder cannot exist in a bucket: there it reads as MISSING,
    and a prefix holding only non-blob keys is EMPTY, as on disk."""
    store = SyntheticStore(tmp_path)
    store.image("app/web", "v1")
    shutil.rmtree(store.v2 / "blobs" / "sha256")
    (store.v2 / "blobs" / "sha256").mkdir()
    fs_blobs, _, _ = read_fs(tmp_path)
    assert fs_blobs.state is records.BlobStoreState.EMPTY
    ob_blobs, _, _ = read_obj(load_tree(tmp_path, location=LOCATION), tmp_path)
    assert ob_blobs.state is records.BlobStoreState.MISSING
    (store.v2 / "blobs" / "sha256" / "stray").write_bytes(b"x")
    assert_same(tmp_path)
    ob_blobs, _, _ = read_obj(load_tree(tmp_path, location=LOCATION), tmp_path)
    assert ob_blobs.state is records.BlobStoreState.EMPTY


def test_oversized_link_is_invalid_without_being_read(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    img = store.image("app/web", "v1")
    big = img.layers[0].encode() + b"x" * (OVERSIZED_LINK_READ_LIMIT + 1)
    store.layer_link("app/web", img.layers[0]).write_bytes(big)
    backend = load_tree(tmp_path, location=LOCATION)
    _, (fs_repo,), _ = read_fs(tmp_path)
    _, (ob_repo,), _ = read_obj(backend, tmp_path)
    convert = mapper(tmp_path)
    keep = ("kind", "repository", "digest", "path", "expected_digest")

    def brief(r: records.RepoLinks) -> list[tuple[Any, ...]]:
        return [tuple(finding_dict(f, convert).get(k) for k in keep) for f in r.findings]

    assert brief(ob_repo) == brief(fs_repo)
    assert ob_repo.bad_layer_links == fs_repo.bad_layer_links == {hex_of(img.layers[0])}
    assert ob_repo.layer_link_files == fs_repo.layer_link_files
    link_key = f"{V2}/repositories/app/web/_layers/sha256/{hex_of(img.layers[0])}/link"
    assert link_key not in backend.paths["read"]


# --- differential: trees the real registry wrote ----------------------------------------------


@pytest.mark.registry
def test_differential_real_registry(registry: RegistryServer) -> None:
    img = push_image(registry, "app/web", "v1")
    push_image(registry, "app/web", "v2", seed="2")
    idx = push_index(registry, "lib/multi/arch", "latest")
    push_image(registry, "lib/multi", "base")
    registry.stop()
    v2 = registry.v2
    hex_ = hex_of(img.layers[0].digest)
    (v2 / "blobs" / "sha256" / hex_[:2] / hex_ / "data").unlink()
    child = hex_of(idx.children[0].digest)
    (
        v2 / "repositories" / "lib/multi/arch" / "_manifests" / "revisions" / "sha256" / child
        / "link"
    ).unlink()
    (v2 / "repositories" / "app/web" / "_manifests" / "tags" / "v2" / "current" / "link").unlink()
    findings = assert_same(registry.root)
    kinds = {f.kind for f in findings}
    assert {Kind.ORPHAN_LAYER_LINK, Kind.ORPHAN_INDEX_CHILD, Kind.DANGLING_TAG} <= kinds


# --- failures ---------------------------------------------------------------------------------


def test_failing_blob_prefix_is_a_gap(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    img = store.image("app/web", "v1")
    prefix = hex_of(img.layers[0])[:2]
    backend = load_tree(tmp_path, location=LOCATION)
    backend.fail(f"{V2}/blobs/sha256/{prefix}", "AccessDenied")
    blobs = ObjectStoreReader(backend).list_blobs(RegistryStorage("", tmp_path))
    path = f"{LOCATION}/{V2}/blobs/sha256/{prefix}"
    assert blobs.unlisted_prefixes == {prefix}
    assert blobs.gaps == [f"{path}: AccessDenied: {V2}/blobs/sha256/{prefix}"]
    assert [(f.kind, f.path) for f in blobs.findings] == [(Kind.UNREADABLE_FILE, path)]
    assert blobs.has(hex_of(img.layers[0])) is None
    assert not blobs.complete
    others = {hex_of(d) for d in [*img.blobs, img.digest]} - {
        h for h in map(hex_of, [*img.blobs, img.digest]) if h.startswith(prefix)
    }
    assert others <= blobs.present


def test_failure_mid_walk_keeps_what_was_listed(tmp_path: Path) -> None:
    backend = MemoryBackend(location=LOCATION, page_size=1)
    first, second = "ab" + "0" * 62, "ab" + "1" * 62
    backend.objects[f"{V2}/blobs/sha256/ab/{first}/data"] = b"1"
    backend.objects[f"{V2}/blobs/sha256/ab/{second}/data"] = b"2"
    backend.fail(f"{V2}/blobs/sha256/ab/{second}", "timeout")
    blobs = ObjectStoreReader(backend).list_blobs(RegistryStorage("", tmp_path))
    assert blobs.present == {first}
    assert blobs.unlisted_prefixes == {"ab"}
    assert blobs.has(first) is True and blobs.has(second) is None


def test_unreadable_blob_store(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    store.image("app/web", "v1")
    backend = load_tree(tmp_path, location=LOCATION)
    backend.fail(f"{V2}/blobs/sha256", "endpoint down")
    blobs = ObjectStoreReader(backend).list_blobs(RegistryStorage("", tmp_path))
    assert blobs.state is records.BlobStoreState.UNREADABLE
    assert blobs.findings[0].path == f"{LOCATION}/{V2}/blobs/sha256"


def test_failing_repository_listing_is_unreadable(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    healthy(store)
    backend = load_tree(tmp_path, location=LOCATION)
    backend.fail(f"{V2}/repositories/team/a")
    walk: list[Finding] = []
    repos = list(ObjectStoreReader(backend).iter_repositories(RegistryStorage("", tmp_path), walk))
    assert [r.name for r in repos] == ["app/multi", "app/web"]
    assert [(f.kind, f.repository, f.path) for f in walk] == [
        (Kind.UNREADABLE_FILE, "team/a", f"{LOCATION}/{V2}/repositories/team/a")
    ]


def test_failing_layers_walk_marks_all_links_unknown(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    store.image("app/web", "v1")
    backend = load_tree(tmp_path, location=LOCATION)
    backend.fail(f"{V2}/repositories/app/web/_layers")
    reader = ObjectStoreReader(backend)
    registry = RegistryStorage("", tmp_path)
    (repo,) = list(reader.iter_repositories(registry, []))
    assert repo.bad_layer_links == {records.ALL_LINKS}
    assert [(f.kind, f.path) for f in repo.findings] == [
        (Kind.UNREADABLE_FILE, f"{LOCATION}/{V2}/repositories/app/web/_layers")
    ]
    blobs = reader.list_blobs(registry)
    read = reader.manifest_reader(registry, DEFAULT_MAX_MANIFEST_BYTES)
    kinds = {f.kind for f in run_checks(registry, blobs, [repo], [], read)}
    # No layer link is judged missing when _layers could not be read.
    assert kinds == {Kind.UNREADABLE_FILE}


def test_failing_link_read(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    img = store.image("app/web", "v1")
    backend = load_tree(tmp_path, location=LOCATION)
    key = f"{V2}/repositories/app/web/_layers/sha256/{hex_of(img.config)}/link"
    backend.fail(key, "slow down", ops={"read"})
    (repo,) = list(ObjectStoreReader(backend).iter_repositories(RegistryStorage("", tmp_path), []))
    assert repo.bad_layer_links == {hex_of(img.config)}
    assert [(f.kind, f.path) for f in repo.findings] == [
        (Kind.UNREADABLE_FILE, f"{LOCATION}/{key}")
    ]
    assert hex_of(img.config) not in repo.layers


def test_failing_manifests_walk(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    store.image("app/web", "v1")
    backend = load_tree(tmp_path, location=LOCATION)
    backend.fail(f"{V2}/repositories/app/web/_manifests")
    reader = ObjectStoreReader(backend)
    ((repo, dirs),) = list(reader.iter_repositories_with_dirs(RegistryStorage("", tmp_path), []))
    assert repo.tags == {} and repo.revisions == {}
    assert [f.kind for f in repo.findings] == [Kind.UNREADABLE_FILE]
    assert dirs.has_tags_dir and dirs.has_manifests_dir


def test_manifest_reader(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    img = store.image("app/web", "v1")
    backend = load_tree(tmp_path, location=LOCATION)
    registry = RegistryStorage("", tmp_path)
    reader = ObjectStoreReader(backend)
    assert reader.manifest_reader(registry, 1 << 20)(img.digest) == img.body  # type: ignore[arg-type]
    small = reader.manifest_reader(registry, 10)(img.digest)  # type: ignore[arg-type]
    assert small == ReadFailure(FailReason.TOO_LARGE, f"{len(img.body)} bytes > 10")
    gone = reader.manifest_reader(registry, 1 << 20)(sha(b"none"))  # type: ignore[arg-type]
    assert isinstance(gone, ReadFailure) and gone.reason is FailReason.MISSING
    backend.fail(f"{V2}/blobs")
    failed = reader.manifest_reader(registry, 1 << 20)(img.digest)  # type: ignore[arg-type]
    assert isinstance(failed, ReadFailure) and failed.reason is FailReason.UNREADABLE


# --- speed and bounds -------------------------------------------------------------------------


def test_one_walk_per_prefix_and_per_repository_folder(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    healthy(store)
    (store.repo_dir("app/web") / "_uploads" / "u1" / "data").parent.mkdir(parents=True)
    (store.repo_dir("app/web") / "_uploads" / "u1" / "data").write_bytes(b"partial")
    backend = load_tree(tmp_path, location=LOCATION)
    reader = ObjectStoreReader(backend, workers=4)
    registry = RegistryStorage("", tmp_path)
    blobs = reader.list_blobs(registry)
    prefixes = {h[:2] for h in blobs.present}
    assert sorted(backend.paths["walk"]) == sorted(
        f"{V2}/blobs/sha256/{p}" for p in prefixes
    )
    assert backend.calls["list_folder"] == 1
    backend.paths.clear()
    backend.calls.clear()
    repos = list(reader.iter_repositories(registry, []))
    walked = backend.paths["walk"]
    assert sorted(walked) == sorted(
        f"{V2}/repositories/{r.name}/{d}" for r in repos for d in ("_layers", "_manifests")
    )
    assert not any("_uploads" in p for ps in backend.paths.values() for p in ps)
    links = sum(r.layer_link_files + len(r.revisions) + len(r.tags) for r in repos)
    assert backend.calls["read"] == links


def test_concurrency_is_bounded_by_workers(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    for i in range(6):
        store.image(f"app/r{i}", "v1", layers=3)
    backend = load_tree(tmp_path, location=LOCATION)
    backend.delay = 0.005
    reader = ObjectStoreReader(backend, workers=3)
    registry = RegistryStorage("", tmp_path)
    reader.list_blobs(registry)
    list(reader.iter_repositories(registry, []))
    assert 1 < backend.max_in_flight <= 3


def test_repositories_are_yielded_one_at_a_time(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    healthy(store)
    backend = load_tree(tmp_path, location=LOCATION)
    it = ObjectStoreReader(backend).iter_repositories(RegistryStorage("", tmp_path), [])
    first = next(it)
    assert first.name == "app/multi"
    # Nothing of the next repositories has been walked yet.
    assert all("app/multi/" in p for p in backend.paths["walk"])
    assert isinstance(it, Generator)
    it.close()


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ObjectStoreReader(MemoryBackend(), workers=0)


# --- garbage-collect's folder flags ------------------------------------------------------------


def test_repo_dirs_match_the_folders_on_disk(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    healthy(store)
    store.image("only/manifests", "v1")
    shutil.rmtree(store.repo_dir("only/manifests") / "_layers")
    store.image("only/layers", None)
    shutil.rmtree(store.repo_dir("only/layers") / "_manifests")
    store.image("no/tags", None)
    stray = store.repo_dir("app/web") / "_manifests" / "tags" / "stray"
    stray.write_bytes(b"x")
    (store.repo_dir("uploads/only") / "_uploads" / "u" / "data").parent.mkdir(parents=True)
    (store.repo_dir("uploads/only") / "_uploads" / "u" / "data").write_bytes(b"x")
    prune_empty_dirs(tmp_path)
    backend = load_tree(tmp_path, location=LOCATION)
    pairs = list(
        ObjectStoreReader(backend).iter_repositories_with_dirs(RegistryStorage("", tmp_path), [])
    )
    convert = mapper(tmp_path)
    for links, dirs in pairs:
        folder = store.repo_dir(links.name)
        expected = RepoDirs(
            has_manifests_dir=(folder / "_manifests").is_dir(),
            has_tags_dir=(folder / "_manifests" / "tags").is_dir(),
            has_layers_dir=(folder / "_layers").is_dir(),
            stray_tag_entries=sorted(
                convert(str(p))
                for p in (folder / "_manifests" / "tags").glob("*")
                if p.is_file()
            )
            if (folder / "_manifests" / "tags").is_dir()
            else [],
        )
        assert dirs == expected, links.name
    by_name = {links.name: dirs for links, dirs in pairs}
    assert by_name["app/web"].stray_tag_entries == [
        f"{LOCATION}/{V2}/repositories/app/web/_manifests/tags/stray"
    ]
    assert not by_name["no/tags"].has_tags_dir
    assert by_name["uploads/only"] == RepoDirs(False, False, False)


# --- layouts ----------------------------------------------------------------------------------


def test_detect_single_root() -> None:
    backend = MemoryBackend({f"{V2}/blobs/sha256/ab/x/data": b"x"}, location=LOCATION)
    assert detect_object_layout(backend) == [ObjectRegistry("", V2, LOCATION)]


def test_detect_multi_registry_base() -> None:
    backend = MemoryBackend(
        {
            f"b/{V2}/repositories/x/_layers/sha256/a/link": b"x",
            f"a/{V2}/blobs/sha256/ab/x/data": b"x",
            "c/docker/registry/other": b"x",
            "notes.txt": b"x",
        },
        location=LOCATION + "/",
    )
    found = detect_object_layout(backend)
    assert [r.name for r in found] == ["a", "b"]
    assert found[0] == ObjectRegistry("a", f"a/{V2}", f"{LOCATION}/a")
    assert found[0].display("blobs") == f"{LOCATION}/a/{V2}/blobs"
    assert found[0].key_of(f"{LOCATION}/a/{V2}/blobs/x") == f"a/{V2}/blobs/x"
    with pytest.raises(ValueError):
        found[0].key_of(f"{LOCATION}/b/{V2}/blobs/x")


def test_detect_refuses_an_empty_prefix() -> None:
    with pytest.raises(UsageError, match=r"s3://bucket/prefix: nothing stored there"):
        detect_object_layout(MemoryBackend(location=LOCATION))


def test_detect_refuses_a_prefix_without_a_registry() -> None:
    backend = MemoryBackend({"some/thing": b"x", "docker/registry/v1/x": b"x"}, location=LOCATION)
    with pytest.raises(UsageError, match="no registry storage found: expected"):
        detect_object_layout(backend)


def test_detect_hints_at_the_root_when_given_v2() -> None:
    backend = MemoryBackend({"blobs/sha256/ab/x/data": b"x"}, location=f"{LOCATION}/{V2}")
    with pytest.raises(UsageError, match=r"did you mean s3://bucket/prefix\?"):
        detect_object_layout(backend)


def test_detect_unreadable_storage() -> None:
    backend = MemoryBackend({f"{V2}/x": b"x"}, location=LOCATION)
    backend.fail("", "NoSuchBucket")
    with pytest.raises(StorageUnavailable, match="s3://bucket/prefix: cannot list: NoSuchBucket"):
        detect_object_layout(backend)


def test_multi_registry_records_and_paths() -> None:
    hex_ = "ab" + "0" * 62
    backend = MemoryBackend(
        {
            f"r1/{V2}/blobs/sha256/ab/{hex_}/data": b"data",
            f"r1/{V2}/repositories/app/_layers/sha256/{hex_}/link": f"sha256:{hex_}".encode(),
            f"r1/{V2}/repositories/app/_layers/sha256/{'f' * 64}/link": b"bad",
        },
        location=LOCATION,
    )
    (reg,) = detect_object_layout(backend)
    reader = ObjectStoreReader(backend)
    blobs = reader.list_blobs(reg.storage, with_sizes=True)
    assert blobs.present == {hex_} and blobs.sizes == {hex_: 4}
    (repo,) = list(reader.iter_repositories(reg, []))
    assert repo.path == f"{LOCATION}/r1/{V2}/repositories/app"
    assert repo.layers == {hex_: f"{LOCATION}/r1/{V2}/repositories/app/_layers/sha256/{hex_}/link"}
    (bad,) = repo.findings
    assert bad.registry == "r1" and bad.kind is Kind.INVALID_LINK
    assert reg.key_of(bad.path or "") == f"r1/{V2}/repositories/app/_layers/sha256/{'f' * 64}/link"


def test_failure_mid_manifests_walk_keeps_what_was_listed(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    a = store.image("app/web", "a")
    store.image("app/web", "b", seed="b")
    (store.tag_dir("app/web", "a") / "current" / "link").unlink()
    prune_empty_dirs(tmp_path)
    backend = load_tree(tmp_path, location=LOCATION, page_size=1)
    backend.fail(f"{V2}/repositories/app/web/_manifests/tags/b", "reset", ops={"walk"})
    (repo,) = list(ObjectStoreReader(backend).iter_repositories(RegistryStorage("", tmp_path), []))
    # Both revisions sort before the tags, so they were listed; tag "a" lost its current link
    # but the listing failed, so its absence is not claimed.
    assert len(repo.revisions) == 2 and hex_of(a.digest) in repo.revisions
    assert repo.tags == {}
    assert [(f.kind, f.path) for f in repo.findings] == [
        (Kind.UNREADABLE_FILE, f"{LOCATION}/{V2}/repositories/app/web/_manifests")
    ]


def test_failing_tag_link_read(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    store.image("app/web", "v1")
    backend = load_tree(tmp_path, location=LOCATION)
    key = f"{V2}/repositories/app/web/_manifests/tags/v1/current/link"
    backend.fail(key, "throttled", ops={"read"})
    (repo,) = list(ObjectStoreReader(backend).iter_repositories(RegistryStorage("", tmp_path), []))
    assert repo.tags == {}
    assert [(f.kind, f.path, f.message) for f in repo.findings] == [
        (Kind.UNREADABLE_FILE, f"{LOCATION}/{key}", f"cannot read {LOCATION}/{key}: "
         f"throttled: {key}")
    ]


# --- the in-memory backend keeps the storage interface's contract ------------------------------


def test_memory_backend_contract() -> None:
    backend = MemoryBackend(
        {"a/b/c": b"1", "a/b/d": b"22", "a/e": b"333", "f": b"4", "ab/x": b"5"}, page_size=2
    )
    top = backend.list_folder("")
    assert top.folders == ["a", "ab"] and [o.path for o in top.objects] == ["f"]
    a = backend.list_folder("a")
    assert a.folders == ["b"] and [(o.path, o.size) for o in a.objects] == [("a/e", 3)]
    assert backend.list_folder("nothing") == type(a)([], [])
    assert [o.path for o in backend.walk("a")] == ["a/b/c", "a/b/d", "a/e"]
    assert backend.calls["walk_page"] == 2
    assert backend.read("a/e", 3) == b"333" and backend.read("zz", 3) is None
    with pytest.raises(ValueError):
        backend.read("a/e", 2)
    stat = backend.stat("a/b/d")
    assert stat is not None and stat.size == 2
    backend.copy("f", "g")
    backend.write("h", b"x")
    backend.delete("f")
    backend.delete("missing")
    assert sorted(backend.objects) == ["a/b/c", "a/b/d", "a/e", "ab/x", "g", "h"]
    backend.fail("a/b", "down", ops={"walk"})
    walked: list[str] = []
    with pytest.raises(StorageUnavailable):
        for o in backend.walk(""):
            walked.append(o.path)
    assert walked == []  # the first page already holds a/b/c
    assert backend.read("a/b/c", 10) == b"1"
