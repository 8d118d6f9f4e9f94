"""The real-registry harness itself: pushes round-trip, faults show, GC behaves as documented."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support.images import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    PushedImage,
    PushedIndex,
    push_blob,
    push_image,
    push_index,
    push_manifest_raw,
    sha256_digest,
)
from tests.support.registry import (
    RegistryServer,
    blob_data_path,
    layer_link_path,
    revision_link_path,
    tag_dir,
)
from tests.support.skopeo import skopeo_copy_all

pytestmark = pytest.mark.registry

# bcrypt("s3cret", cost 5), made once with libxcrypt; the registry only accepts bcrypt entries.
HTPASSWD_LINE = "tester:$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n"


def _get_manifest(server: RegistryServer, repo: str, ref: str) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=10) as client:
        return client.get(
            f"{server.url}/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT}
        )


def _head_blob(server: RegistryServer, repo: str, digest: str) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=10) as client:
        return client.head(f"{server.url}/v2/{repo}/blobs/{digest}")


def _push_all_kinds(server: RegistryServer) -> dict[str, PushedImage | PushedIndex]:
    return {
        "oci": push_image(server, "harness/oci", "v1"),
        "docker": push_image(server, "harness/docker", "v1", oci=False),
        "oci-index": push_index(server, "harness/index", "v1"),
        "docker-list": push_index(server, "harness/list", "v1", oci=False),
    }


def test_manifests_round_trip_by_tag_and_digest(registry: RegistryServer) -> None:
    pushed = _push_all_kinds(registry)
    expected_types = {
        "oci": OCI_MANIFEST,
        "docker": DOCKER_MANIFEST,
        "oci-index": OCI_INDEX,
        "docker-list": DOCKER_MANIFEST_LIST,
    }
    for kind, item in pushed.items():
        assert item.media_type == expected_types[kind]
        assert item.digest == sha256_digest(item.manifest_bytes)
        assert item.tag is not None
        by_tag = _get_manifest(registry, item.repository, item.tag)
        by_digest = _get_manifest(registry, item.repository, item.digest)
        for resp in (by_tag, by_digest):
            assert resp.status_code == 200, (kind, resp.text)
            assert resp.content == item.manifest_bytes, kind
            assert resp.headers["Docker-Content-Digest"] == item.digest, kind
            assert resp.headers["Content-Type"] == item.media_type, kind

    index = pushed["oci-index"]
    assert isinstance(index, PushedIndex)
    assert [c.platform for c in index.children] == ["linux/amd64", "linux/arm64"]
    assert len(index.attestations) == 2
    for child in index.manifests:
        resp = _get_manifest(registry, child.repository, child.digest)
        assert resp.status_code == 200 and resp.content == child.manifest_bytes
    docker_list = pushed["docker-list"]
    assert isinstance(docker_list, PushedIndex)
    assert docker_list.attestations == []
    assert all(c.media_type == DOCKER_MANIFEST for c in docker_list.children)


def test_storage_paths_match_what_the_registry_wrote(registry: RegistryServer) -> None:
    img = push_image(registry, "harness/paths", "v1")
    v2 = registry.v2
    assert (tag_dir(v2, img.repository, "v1") / "current" / "link").read_text() == img.digest
    assert revision_link_path(v2, img.repository, img.digest).read_text() == img.digest
    assert blob_data_path(v2, img.digest).read_bytes() == img.manifest_bytes
    for blob in img.blobs:
        assert blob_data_path(v2, blob.digest).read_bytes() == blob.data
        assert layer_link_path(v2, img.repository, blob.digest).read_text() == blob.digest


def test_pushes_are_deterministic_and_can_share_layers(registry: RegistryServer) -> None:
    a = push_image(registry, "harness/det", "a", seed="s")
    again = push_image(registry, "harness/det", "a", seed="s")
    other = push_image(registry, "harness/det", "a", seed="t")
    shared = push_image(registry, "harness/det", "b", layer_bytes=[a.layers[0].data])
    assert again.digest == a.digest
    assert other.digest != a.digest
    assert shared.layers[0].digest == a.layers[0].digest
    assert shared.config.digest != a.config.digest  # distinct images despite the shared layer


def test_raw_push_helpers(registry: RegistryServer) -> None:
    data = b"not a real layer"
    digest = push_blob(registry, "harness/raw", data)
    assert digest == sha256_digest(data)
    assert _head_blob(registry, "harness/raw", digest).status_code == 200
    img = push_image(registry, "harness/raw", "base")
    got = push_manifest_raw(registry.url, "harness/raw", "copy", img.manifest_bytes, OCI_MANIFEST)
    assert got == img.digest


@pytest.mark.skopeo
def test_skopeo_copies_every_kind(registry: RegistryServer, tmp_path: Path) -> None:
    for kind, item in _push_all_kinds(registry).items():
        result = skopeo_copy_all(f"{registry.host}/{item.repository}:{item.tag}", tmp_path / kind)
        assert result.ok, (kind, result.stderr)
        assert result.returncode == 0


@pytest.mark.skopeo
def test_deleted_layer_data_fails_skopeo_after_restart(
    registry: RegistryServer, tmp_path: Path
) -> None:
    img = push_image(registry, "harness/broken", "v1")
    victim = img.layers[0]
    assert _head_blob(registry, img.repository, victim.digest).status_code == 200  # warms cache
    blob_data_path(registry.v2, victim.digest).unlink()
    # Warm: the in-memory blob descriptor cache still vouches for the missing blob.
    assert _head_blob(registry, img.repository, victim.digest).status_code == 200
    ref = f"{registry.host}/{img.repository}:v1"
    warm = skopeo_copy_all(ref, tmp_path / "warm")
    assert not warm.ok and "unexpected EOF" in warm.stderr, warm.stderr  # 200, then 0 bytes
    registry.restart()
    assert _head_blob(registry, img.repository, victim.digest).status_code == 404
    result = skopeo_copy_all(ref, tmp_path / "cold")
    assert not result.ok
    assert result.returncode != 0
    assert victim.digest in result.stderr and "404" in result.stderr, result.stderr


def test_cache_off_sees_deleted_data_without_restart(tmp_path: Path, registry_bin: str) -> None:
    with RegistryServer(
        blobdescriptor_cache=False, workdir=tmp_path / "reg", registry_bin=registry_bin
    ) as server:
        img = push_image(server, "harness/cold", "v1")
        victim = img.layers[0]
        assert _head_blob(server, img.repository, victim.digest).status_code == 200
        blob_data_path(server.v2, victim.digest).unlink()
        assert _head_blob(server, img.repository, victim.digest).status_code == 404


def test_htpasswd_auth(tmp_path: Path, registry_bin: str) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(HTPASSWD_LINE)
    with RegistryServer(
        htpasswd=htpasswd, workdir=tmp_path / "reg", registry_bin=registry_bin
    ) as server:
        with httpx.Client(trust_env=False) as client:
            assert client.get(f"{server.url}/v2/").status_code == 401
            authed = client.get(f"{server.url}/v2/", auth=("tester", "s3cret"))
            assert authed.status_code == 200
        img = push_image(server, "harness/auth", "v1", auth=("tester", "s3cret"))
        assert img.digest.startswith("sha256:")


@pytest.mark.skopeo
def test_gc_delete_untagged_sweeps_children_of_tagged_index(
    registry: RegistryServer, tmp_path: Path
) -> None:
    index = push_index(registry, "harness/gc", "v1")
    ref = f"{registry.host}/{index.repository}:v1"
    assert skopeo_copy_all(ref, tmp_path / "before").ok
    v2 = registry.v2

    dry = registry.garbage_collect(delete_untagged=True, dry_run=True)
    assert dry.returncode == 0, dry.stdout
    for child in index.manifests:
        assert child.digest in dry.stdout  # listed as eligible for deletion beforehand
        assert revision_link_path(v2, index.repository, child.digest).exists()

    gc = registry.garbage_collect(delete_untagged=True)
    assert gc.returncode == 0, gc.stdout  # exits 0 although it just broke the image
    assert registry.running
    for child in index.manifests:
        assert not revision_link_path(v2, index.repository, child.digest).exists()
        # The children's manifest bytes survive; only their links and blobs go.
        assert blob_data_path(v2, child.digest).exists()
        assert _get_manifest(registry, index.repository, child.digest).status_code == 404
        for blob in child.blobs:
            assert not blob_data_path(v2, blob.digest).exists()
            assert layer_link_path(v2, index.repository, blob.digest).exists()  # orphan link
    assert revision_link_path(v2, index.repository, index.digest).exists()
    tagged = _get_manifest(registry, index.repository, "v1")
    assert tagged.status_code == 200
    assert tagged.content == index.manifest_bytes

    after = skopeo_copy_all(ref, tmp_path / "after")
    assert not after.ok
    assert "manifest unknown" in after.stderr.lower(), after.stderr


def test_registry_starts_fast_and_restarts_on_same_port(registry: RegistryServer) -> None:
    assert registry.last_start_seconds is not None
    assert registry.last_start_seconds < 5.0
    url = registry.url
    t0 = time.monotonic()
    registry.restart()
    assert time.monotonic() - t0 < 5.0
    assert registry.url == url
    assert registry.log_path.exists()
    with httpx.Client(trust_env=False) as client:
        assert client.get(f"{url}/v2/").status_code == 200
