"""verifier.storage.checks on records built by hand: no disk, and paths an object store shows.

Every record here is what an object-store reader would fill from its listings; the registry has
a `url`, so every path a finding shows must come from the records or from
`RegistryStorage.display`, never from a local folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.test_storage_synthetic import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, sha
from verifier.model.findings import Kind
from verifier.storage.checks import (
    BLOB_DATA_GONE,
    BLOB_DATA_PRESENT,
    assess_child,
    check_blob_digest,
    check_images,
    check_index_children,
    check_layer_links,
    check_link,
    check_link_content,
    check_repository,
    check_revisions,
    check_tag_link,
    check_tags,
)
from verifier.storage.images import gather_needs
from verifier.storage.layout import Digest, RegistryStorage, digest_from_hex
from verifier.storage.records import (
    ALL_LINKS,
    BlobStore,
    BlobStoreState,
    FailReason,
    ReadFailure,
    RepoLinks,
)

URL = "s3://bucket/prefix"
V2 = f"{URL}/docker/registry/v2"
REGISTRY = RegistryStorage("mirror", Path("/nonexistent"), url=URL)


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1]


class Memory:
    """Blobs kept in a dictionary, and a repository's records written as a reader would."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.repo = RepoLinks("app", f"{V2}/repositories/app")

    def blob(self, body: bytes) -> str:
        digest = sha(body)
        self.data[hex_of(digest)] = body
        return digest

    def link_layer(self, digest: str) -> None:
        self.repo.layers[hex_of(digest)] = f"{self.repo.path}/_layers/sha256/{hex_of(digest)}/link"

    def link_revision(self, digest: str) -> None:
        h = hex_of(digest)
        self.repo.revisions[h] = f"{self.repo.path}/_manifests/revisions/sha256/{h}/link"

    def tag(self, tag: str, digest: str | None) -> None:
        link = f"{self.repo.path}/_manifests/tags/{tag}/current/link"
        self.repo.tags[tag] = (hex_of(digest) if digest else None, link)

    def image(self, seed: str, tag: str | None = None) -> tuple[str, list[str]]:
        config = self.blob(json.dumps({"os": "linux", "seed": seed}).encode())
        layer = self.blob(f"layer {seed}".encode())
        for d in (config, layer):
            self.link_layer(d)
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config, "size": 1},
                "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": 1}],
            }
        ).encode()
        digest = self.blob(body)
        self.link_revision(digest)
        if tag is not None:
            self.tag(tag, digest)
        return digest, [config, layer]

    def index(self, tag: str, children: list[str]) -> str:
        manifests: list[dict[str, Any]] = [
            {
                "mediaType": OCI_MANIFEST,
                "digest": c,
                "size": len(self.data[hex_of(c)]),
                "platform": {"architecture": "amd64", "os": "linux"},
            }
            for c in children
        ]
        body = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        ).encode()
        digest = self.blob(body)
        self.link_revision(digest)
        self.tag(tag, digest)
        return digest

    def blobs(self) -> BlobStore:
        return BlobStore(BlobStoreState.OK, present=set(self.data))

    def read(self, digest: Digest) -> bytes | ReadFailure:
        body = self.data.get(hex_of(digest))
        return ReadFailure(FailReason.MISSING) if body is None else body


def test_display_joins_the_url_and_the_v2_relative_path() -> None:
    assert REGISTRY.display("blobs/sha256/ab/x/data") == f"{V2}/blobs/sha256/ab/x/data"
    local = RegistryStorage("", Path("/srv/reg"))
    expected = str(local.v2 / "repositories/a/_layers")
    assert local.display("repositories/a/_layers") == expected == (
        "/srv/reg/docker/registry/v2/repositories/a/_layers"
    )


def test_check_link_content() -> None:
    hex_ = "ab" * 32
    assert check_link_content(f"sha256:{hex_}".encode(), hex_) is None
    assert check_link_content(f"sha256:{hex_}".encode(), None) is None
    assert "does not match" in (check_link_content(f"sha256:{hex_}".encode(), "cd" * 32) or "")
    assert "not a well-formed" in (check_link_content(f"sha256:{hex_}\n".encode(), hex_) or "")


def test_check_link_and_check_tag_link_judge_content() -> None:
    hex_ = "ab" * 32
    path = f"{V2}/repositories/app/_layers/sha256/{hex_}/link"
    assert check_link(REGISTRY, "app", "layer", hex_, path, f"sha256:{hex_}".encode()) is None
    bad = check_link(REGISTRY, "app", "layer", hex_, path, b"sha256:nope")
    assert bad is not None and bad.kind is Kind.INVALID_LINK and bad.path == path
    assert bad.message.startswith("layer link content")
    assert check_tag_link(REGISTRY, "app", "v1", path, f"sha256:{hex_}".encode()) == hex_
    tag = check_tag_link(REGISTRY, "app", "v1", path, b"\xff")
    assert not isinstance(tag, str) and tag.reference == "v1"


def test_orphan_layer_link_carries_the_records_path_and_a_relative_one() -> None:
    mem = Memory()
    _, (_, layer) = mem.image("a", "v1")
    del mem.data[hex_of(layer)]
    [orphan] = check_layer_links(REGISTRY, mem.repo, mem.blobs())
    assert orphan.digest == layer
    assert orphan.finding.path == f"{V2}/repositories/app/_layers/sha256/{hex_of(layer)}/link"
    assert orphan.rel == f"repositories/app/_layers/sha256/{hex_of(layer)}/link"
    incomplete = BlobStore(BlobStoreState.UNREADABLE, present=set(mem.data))
    assert check_layer_links(REGISTRY, mem.repo, incomplete) == []


def test_dangling_revision_and_tags() -> None:
    mem = Memory()
    digest, _ = mem.image("a", "v1")
    mem.tag("ghost", None)
    mem.tag("unlinked", sha(b"never pushed"))
    del mem.data[hex_of(digest)]
    [revision] = check_revisions(REGISTRY, mem.repo, mem.blobs())
    assert (revision.kind, revision.details["tags"]) == (Kind.DANGLING_REVISION, ["v1"])
    tags = check_tags(REGISTRY, mem.repo, mem.blobs())
    reasons = {f.reference: f.details["reason"] for f in tags}
    assert reasons == {
        "v1": BLOB_DATA_GONE,
        "ghost": "current-link-missing",
        "unlinked": "revision-missing",
    }


def test_image_checks_show_display_paths() -> None:
    mem = Memory()
    _, (config, layer) = mem.image("a", "v1")
    del mem.repo.layers[hex_of(config)]
    del mem.data[hex_of(layer)]
    blobs = mem.blobs()
    needs = gather_needs(
        {"v1": mem.repo.tags["v1"][0] or ""}, mem.repo.revisions, blobs.has, mem.read,
        index_children=True,
    )
    found = {f.kind: f for f in check_images(REGISTRY, mem.repo, blobs, needs)}
    assert found[Kind.LAYER_LINK_MISSING].path == (
        f"{V2}/repositories/app/_layers/sha256/{hex_of(config)}/link"
    )
    h = hex_of(layer)
    assert found[Kind.IMAGE_BLOB_MISSING].path == f"{V2}/blobs/sha256/{h[:2]}/{h}/data"
    mem.repo.bad_layer_links.add(ALL_LINKS)  # the _layers folder was not listed: no judgement
    assert Kind.LAYER_LINK_MISSING not in {
        f.kind for f in check_images(REGISTRY, mem.repo, blobs, needs)
    }


def test_orphan_index_child_is_assessed_from_the_reader() -> None:
    mem = Memory()
    child, _ = mem.image("arm")
    index = mem.index("multi", [child])
    del mem.repo.revisions[hex_of(child)]
    findings, [orphan] = check_index_children(REGISTRY, mem.repo, mem.blobs(), mem.read)
    assert orphan.relinkable and orphan.digest == child
    assert orphan.rel == f"repositories/app/_manifests/revisions/sha256/{hex_of(child)}/link"
    [f] = findings
    assert (f.kind, f.reference, f.details["blob_data"]) == (
        Kind.ORPHAN_INDEX_CHILD, index, BLOB_DATA_PRESENT,
    )
    assert f.path == f"{V2}/{orphan.rel}"
    mem.data[hex_of(child)] = b"tampered"
    assessment = assess_child(digest_from_hex(hex_of(child)), mem.repo, mem.blobs(), mem.read)
    assert not assessment.relinkable and "does not match" in assessment.reason


def test_unreadable_manifest_names_its_display_path() -> None:
    mem = Memory()
    digest, _ = mem.image("a", "v1")

    def failing(d: Digest) -> bytes | ReadFailure:
        return ReadFailure(FailReason.UNREADABLE, "AccessDenied")

    findings, _ = check_index_children(REGISTRY, mem.repo, mem.blobs(), failing)
    h = hex_of(digest)
    [f] = findings
    assert (f.kind, f.path) == (Kind.UNREADABLE_FILE, f"{V2}/blobs/sha256/{h[:2]}/{h}/data")


def test_check_blob_digest() -> None:
    mem = Memory()
    digest, _ = mem.image("a")
    blobs = mem.blobs()
    h = hex_of(digest)
    assert check_blob_digest(REGISTRY, blobs, h, h) is None
    assert check_blob_digest(REGISTRY, blobs, h, ReadFailure(FailReason.MISSING)) is None
    corrupt = check_blob_digest(REGISTRY, blobs, h, "00" * 32)
    assert corrupt is not None and corrupt.kind is Kind.CORRUPT_BLOB
    assert corrupt.path == f"{V2}/blobs/sha256/{h[:2]}/{h}/data"


def test_check_repository_runs_every_check_and_honours_proxy_caches() -> None:
    mem = Memory()
    child, (_, layer) = mem.image("arm")
    mem.index("multi", [child])
    del mem.repo.revisions[hex_of(child)]
    del mem.data[hex_of(layer)]
    checked = check_repository(REGISTRY, mem.repo, mem.blobs(), mem.read)
    kinds = {f.kind for f in checked.findings}
    assert {Kind.ORPHAN_INDEX_CHILD, Kind.ORPHAN_LAYER_LINK} <= kinds
    assert [o.digest for o in checked.orphan_links] == [layer]
    assert [c.digest for c in checked.orphan_children] == [child]
    proxy = check_repository(REGISTRY, mem.repo, mem.blobs(), mem.read, proxy_cache=True)
    assert Kind.ORPHAN_INDEX_CHILD not in {f.kind for f in proxy.findings}
    links_only = check_repository(REGISTRY, mem.repo, mem.blobs(), mem.read, index_children=False)
    assert {f.kind for f in links_only.findings} == {Kind.ORPHAN_LAYER_LINK}


def test_checks_and_gc_models_import_no_reader() -> None:
    """The pure modules load without the filesystem reader or its I/O primitives."""
    pure = [
        "verifier.storage.records",
        "verifier.storage.checks",
        "verifier.storage.images",
        "verifier.storage.gc.snapshot",
        "verifier.storage.gc.manifests",
        "verifier.storage.gc.plan",
        "verifier.storage.gc.v28",
        "verifier.storage.gc.v3",
        "verifier.storage.gc.join",
    ]
    code = (
        "import importlib, json, sys\n"
        f"for name in {pure!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('verifier.'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert not loaded & {
        "verifier.storage.fsio",
        "verifier.storage.read",
        "verifier.storage.scan",
        "verifier.storage.repair",
        "verifier.storage.gc_preview",
    }, loaded
