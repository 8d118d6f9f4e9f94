"""A builder for synthetic distribution storage trees, and proof that it writes what 2.8 writes.

The storage unit tests build their trees with `SyntheticStore`; the `registry`-marked test below
pushes the same image to the real registry and compares the two trees file by file, so the
synthetic trees cannot drift from the real layout.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.images import make_layer, push_image
from tests.support.registry import RegistryServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    """``sha256:<hex>`` of bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True)
class SynthImage:
    """A manifest written into a synthetic store."""

    repo: str
    digest: str
    config: str
    layers: list[str]
    body: bytes = field(repr=False)
    platform: str = "linux/amd64"

    @property
    def blobs(self) -> list[str]:
        """Config then layers."""
        return [self.config, *self.layers]


@dataclass(frozen=True)
class SynthIndex:
    """An index written into a synthetic store, with its children."""

    repo: str
    digest: str
    children: list[SynthImage]
    body: bytes = field(repr=False)


class SyntheticStore:
    """Writes a registry's storage the way distribution 2.8's filesystem driver does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.v2 = root / "docker" / "registry" / "v2"
        (self.v2 / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.v2 / "repositories").mkdir(parents=True, exist_ok=True)

    # -- paths ----------------------------------------------------------------------------------

    def data_path(self, digest: str) -> Path:
        """``blobs/sha256/<xx>/<hex>/data``."""
        hex_ = digest.split(":", 1)[1]
        return self.v2 / "blobs" / "sha256" / hex_[:2] / hex_ / "data"

    def repo_dir(self, repo: str) -> Path:
        """``repositories/<repo>``."""
        return self.v2 / "repositories" / repo

    def layer_link(self, repo: str, digest: str) -> Path:
        """``_layers/sha256/<hex>/link``."""
        return self.repo_dir(repo) / "_layers" / "sha256" / digest.split(":", 1)[1] / "link"

    def revision_link(self, repo: str, digest: str) -> Path:
        """``_manifests/revisions/sha256/<hex>/link``."""
        hex_ = digest.split(":", 1)[1]
        return self.repo_dir(repo) / "_manifests" / "revisions" / "sha256" / hex_ / "link"

    def tag_dir(self, repo: str, tag: str) -> Path:
        """``_manifests/tags/<tag>``."""
        return self.repo_dir(repo) / "_manifests" / "tags" / tag

    # -- writing --------------------------------------------------------------------------------

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def blob(self, data: bytes) -> str:
        """Write blob data; return its digest."""
        digest = sha(data)
        self._write(self.data_path(digest), data)
        return digest

    def link_layer(self, repo: str, digest: str) -> None:
        """Write a `_layers` link (what a blob upload into `repo` leaves)."""
        self._write(self.layer_link(repo, digest), digest.encode())
        (self.repo_dir(repo) / "_uploads").mkdir(parents=True, exist_ok=True)

    def link_revision(self, repo: str, digest: str) -> None:
        """Write a manifest revision link."""
        self._write(self.revision_link(repo, digest), digest.encode())

    def tag(self, repo: str, tag: str, digest: str) -> None:
        """Point `tag` at `digest` (current/link plus the index history link)."""
        hex_ = digest.split(":", 1)[1]
        self._write(self.tag_dir(repo, tag) / "current" / "link", digest.encode())
        self._write(self.tag_dir(repo, tag) / "index" / "sha256" / hex_ / "link", digest.encode())

    def image(
        self,
        repo: str,
        tag: str | None = None,
        *,
        layers: int = 2,
        seed: str = "",
        platform: str = "linux/amd64",
        layer_data: list[bytes] | None = None,
    ) -> SynthImage:
        """Write config, layers, manifest and their links, as a push would; tag it if asked."""
        data = layer_data or [
            f"layer {seed}|{repo}|{tag}|{platform}|{i}".encode() for i in range(layers)
        ]
        os_, arch = platform.split("/")[:2]
        config = _canonical(
            {"architecture": arch, "os": os_, "seed": f"{seed}|{repo}|{tag}|{platform}"}
        )
        config_digest = self.blob(config)
        self.link_layer(repo, config_digest)
        layer_digests = []
        for d in data:
            digest = self.blob(d)
            self.link_layer(repo, digest)
            layer_digests.append(digest)
        body = _canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [
                    {"mediaType": OCI_LAYER, "digest": dg, "size": len(d)}
                    for dg, d in zip(layer_digests, data, strict=True)
                ],
            }
        )
        digest = self.blob(body)
        self.link_revision(repo, digest)
        if tag is not None:
            self.tag(repo, tag, digest)
        return SynthImage(repo, digest, config_digest, layer_digests, body, platform)

    def index(
        self,
        repo: str,
        tag: str | None,
        *,
        platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64"),
        seed: str = "",
        extra_children: list[dict[str, Any]] | None = None,
    ) -> SynthIndex:
        """Write children (untagged) then an OCI index naming them; tag the index."""
        children = [self.image(repo, None, seed=f"{seed}|{tag}", platform=p) for p in platforms]
        manifests: list[dict[str, Any]] = []
        for child in children:
            os_, arch = child.platform.split("/")[:2]
            manifests.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": child.digest,
                    "size": len(child.body),
                    "platform": {"architecture": arch, "os": os_},
                }
            )
        manifests.extend(extra_children or [])
        body = _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
        digest = self.blob(body)
        self.link_revision(repo, digest)
        if tag is not None:
            self.tag(repo, tag, digest)
        return SynthIndex(repo, digest, children, body)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (content) and folder (None) under `root` by relative path; links unfollowed."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = (
                b"->" + os.readlink(p).encode() if os.path.islink(p) else Path(p).read_bytes()
            )
    return out


# --- tests of the builder itself ------------------------------------------------------------


def test_builder_writes_link_contents_like_distribution(tmp_path: Path) -> None:
    store = SyntheticStore(tmp_path)
    img = store.image("app/web", "v1")
    assert store.layer_link("app/web", img.layers[0]).read_bytes() == img.layers[0].encode()
    assert store.revision_link("app/web", img.digest).read_bytes() == img.digest.encode()
    assert (store.tag_dir("app/web", "v1") / "current" / "link").read_text() == img.digest
    assert sha(store.data_path(img.digest).read_bytes()) == img.digest


@pytest.mark.registry
def test_builder_tree_matches_a_real_push(registry: RegistryServer, tmp_path: Path) -> None:
    """Same image bytes, same set of files and link contents as the real registry writes."""
    layer_data = [make_layer("synthetic", str(i)) for i in range(2)]
    pushed = push_image(registry, "app/web", "v1", layer_bytes=layer_data)
    real = {
        k: v
        for k, v in snapshot(registry.v2).items()
        # distribution also keeps upload bookkeeping under _uploads; its content varies.
        if not ("/_uploads/" in k and not k.endswith("/_uploads/"))
    }
    store = SyntheticStore(tmp_path / "synthetic")
    # Rebuild the identical manifest by writing the pushed bytes through the builder's parts.
    for blob in pushed.blobs:
        store.blob(blob.data)
        store.link_layer("app/web", blob.digest)
    store.blob(pushed.manifest_bytes)
    store.link_revision("app/web", pushed.digest)
    store.tag("app/web", "v1", pushed.digest)
    synthetic = snapshot(store.v2)
    assert synthetic == real
