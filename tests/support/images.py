"""Build images and push them to the real registry over its HTTP API (no client library)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.registry import HarnessError, RegistryServer

# --- media types -------------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"

# All four must be sent: without the OCI types 2.8 answers 404 for OCI content, and without the
# list types it silently downgrades a tag to one child (observed on distribution 2.8).
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])



# --- image building and pushing ----------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """A pushed blob and its descriptor fields."""

    digest: str
    size: int
    media_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class PushedImage:
    """A pushed single-platform manifest (``tag`` is None for index children)."""

    repository: str
    tag: str | None
    digest: str
    size: int
    media_type: str
    manifest_bytes: bytes = field(repr=False)
    config: Blob
    layers: list[Blob]
    platform: str | None

    @property
    def blobs(self) -> list[Blob]:
        """Config then layers."""
        return [self.config, *self.layers]


@dataclass(frozen=True)
class PushedIndex:
    """A pushed OCI index or Docker manifest list with its children and attestations."""

    repository: str
    tag: str | None
    digest: str
    size: int
    media_type: str
    manifest_bytes: bytes = field(repr=False)
    children: list[PushedImage]
    attestations: list[PushedImage]

    @property
    def manifests(self) -> list[PushedImage]:
        """Children then attestation manifests, in index order."""
        return [*self.children, *self.attestations]


ServerOrUrl = RegistryServer | str
Auth = tuple[str, str] | None


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _base_url(server_or_url: ServerOrUrl) -> str:
    if isinstance(server_or_url, RegistryServer):
        return server_or_url.url
    url = server_or_url.rstrip("/")
    return url if "://" in url else f"http://{url}"


def _client(server_or_url: ServerOrUrl, auth: Auth) -> httpx.Client:
    # trust_env=False: an ambient HTTP(S)_PROXY must never intercept loopback test traffic.
    return httpx.Client(base_url=_base_url(server_or_url), auth=auth, trust_env=False, timeout=30.0)


def _check(resp: httpx.Response, what: str) -> None:
    if resp.status_code >= 300:
        raise HarnessError(
            f"{what}: {resp.request.method} {resp.request.url} -> {resp.status_code} {resp.text}"
        )


def _push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    digest = sha256_digest(data)
    resp = client.post(f"/v2/{repo}/blobs/uploads/")
    _check(resp, "start blob upload")
    # Location may be relative or absolute and carries _state query params to keep.
    location = resp.url.join(resp.headers["Location"])
    put_url = location.copy_merge_params({"digest": digest})
    resp = client.put(
        put_url,
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    _check(resp, "finish blob upload")
    got = resp.headers.get("Docker-Content-Digest", digest)
    if got != digest:
        raise HarnessError(f"registry stored blob as {got}, expected {digest}")
    return digest


def _push_manifest(client: httpx.Client, repo: str, ref: str, body: bytes, media_type: str) -> str:
    resp = client.put(
        f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type}
    )
    _check(resp, f"push manifest {repo}:{ref}")
    return resp.headers.get("Docker-Content-Digest") or sha256_digest(body)


def push_blob(server_or_url: ServerOrUrl, repo: str, data: bytes, *, auth: Auth = None) -> str:
    """Upload ``data`` monolithically (POST then PUT ?digest=) and return its digest."""
    with _client(server_or_url, auth) as client:
        return _push_blob(client, repo, data)


def push_manifest_raw(
    server_or_url: ServerOrUrl,
    repo: str,
    ref: str,
    body: bytes,
    media_type: str,
    *,
    auth: Auth = None,
) -> str:
    """PUT ``body`` as a manifest under tag or digest ``ref``; return the registry's digest."""
    with _client(server_or_url, auth) as client:
        return _push_manifest(client, repo, ref, body, media_type)


def _rng(*parts: str) -> random.Random:
    # Seeded from a hash so contents are stable across runs and Python versions.
    seed = hashlib.sha256("\x00".join(parts).encode()).digest()
    return random.Random(int.from_bytes(seed, "big"))


def make_layer(*seed_parts: str, size: int = 2048) -> bytes:
    """A real, deterministic tar+gzip layer holding one file of pseudo-random bytes."""
    rng = _rng(*seed_parts)
    payload = rng.randbytes(size)
    name = f"regverify/{hashlib.sha256(payload).hexdigest()[:16]}.bin"
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mtime = 0
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(payload))
    # mtime=0 keeps the gzip header, hence the digest, reproducible.
    return gzip.compress(tar_buf.getvalue(), mtime=0)


def _diff_id(layer: bytes) -> str:
    """The uncompressed digest a config lists; for non-gzip test bytes, the bytes themselves."""
    if layer[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError):
            return sha256_digest(gzip.decompress(layer))
    return sha256_digest(layer)


def _platform_dict(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform must be os/arch[/variant], got {platform!r}")
    out = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


def _descriptor(media_type: str, digest: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def _push_image(
    client: httpx.Client,
    repo: str,
    ref: str | None,
    *,
    tag: str | None,
    oci: bool,
    layer_data: list[bytes],
    platform: str,
    seed_label: str,
) -> PushedImage:
    plat = _platform_dict(platform)
    layer_type = OCI_LAYER if oci else DOCKER_LAYER
    config_type = OCI_CONFIG if oci else DOCKER_CONFIG
    config_obj: dict[str, Any] = {
        "created": "1970-01-01T00:00:00Z",
        **plat,
        # The label makes each (seed, repo, tag, platform) config unique, so images that share
        # every layer still get distinct manifests.
        "config": {"Labels": {"org.regverify.test.seed": seed_label}},
        "rootfs": {"type": "layers", "diff_ids": [_diff_id(b) for b in layer_data]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "regverify harness"}]
        * len(layer_data),
    }
    config_bytes = _canonical_json(config_obj)
    config = Blob(sha256_digest(config_bytes), len(config_bytes), config_type, config_bytes)
    _push_blob(client, repo, config_bytes)
    layers = []
    for data in layer_data:
        layers.append(Blob(_push_blob(client, repo, data), len(data), layer_type, data))
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": _descriptor(config_type, config.digest, config.size),
        "layers": [_descriptor(b.media_type, b.digest, b.size) for b in layers],
    }
    body = _canonical_json(manifest)
    digest = sha256_digest(body)
    pushed = _push_manifest(client, repo, ref or digest, body, media_type)
    if pushed != digest:
        raise HarnessError(f"registry digested manifest as {pushed}, expected {digest}")
    return PushedImage(repo, tag, digest, len(body), media_type, body, config, layers, platform)


def push_image(
    server_or_url: ServerOrUrl,
    repo: str,
    tag: str,
    *,
    oci: bool = True,
    layers: int | list[bytes] = 2,
    platform: str = "linux/amd64",
    seed: str = "",
    layer_bytes: list[bytes] | None = None,
    auth: Auth = None,
) -> PushedImage:
    """Push a single-platform image under ``tag`` (OCI by default, Docker v2 with oci=False).

    Layers are deterministic tar.gz from seed+repo+tag unless given as bytes (``layer_bytes``
    or a list in ``layers``), which is how two images share blobs.
    """
    data = _layer_list(layers, layer_bytes, seed, repo, tag, platform)
    with _client(server_or_url, auth) as client:
        return _push_image(
            client,
            repo,
            tag,
            tag=tag,
            oci=oci,
            layer_data=data,
            platform=platform,
            seed_label=f"{seed}|{repo}|{tag}|{platform}",
        )


def _layer_list(
    layers: int | list[bytes],
    layer_bytes: list[bytes] | None,
    seed: str,
    repo: str,
    tag: str,
    platform: str,
) -> list[bytes]:
    if layer_bytes is not None:
        return list(layer_bytes)
    if isinstance(layers, list):
        return list(layers)
    return [make_layer(seed, repo, tag, platform, str(i)) for i in range(layers)]


def _push_attestation(
    client: httpx.Client, repo: str, child: PushedImage, seed_label: str
) -> PushedImage:
    """Push a buildx-style in-toto attestation manifest for ``child`` (by digest, untagged)."""
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": f"{repo}@{child.digest}", "digest": {"sha256": child.digest[7:]}}],
        "predicate": {"builder": {"id": "regverify-harness"}, "seed": seed_label},
    }
    layer_data = _canonical_json(statement)
    layer = Blob(sha256_digest(layer_data), len(layer_data), IN_TOTO, layer_data)
    config_obj = {
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    }
    config_bytes = _canonical_json(config_obj)
    config = Blob(sha256_digest(config_bytes), len(config_bytes), OCI_CONFIG, config_bytes)
    _push_blob(client, repo, config_bytes)
    _push_blob(client, repo, layer_data)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor(OCI_CONFIG, config.digest, config.size),
        "layers": [
            _descriptor(
                IN_TOTO,
                layer.digest,
                layer.size,
                annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
            )
        ],
    }
    body = _canonical_json(manifest)
    digest = _push_manifest(client, repo, sha256_digest(body), body, OCI_MANIFEST)
    return PushedImage(
        repo, None, digest, len(body), OCI_MANIFEST, body, config, [layer], "unknown/unknown"
    )


def push_index(
    server_or_url: ServerOrUrl,
    repo: str,
    tag: str,
    *,
    oci: bool = True,
    platforms: Iterable[str] = ("linux/amd64", "linux/arm64"),
    attestation: bool = True,
    seed: str = "",
    auth: Auth = None,
) -> PushedIndex:
    """Push children by digest, then (OCI only) attestations, then the index under ``tag``.

    ``oci=False`` pushes Docker v2 children and a Docker manifest list (never attestations).
    """
    children: list[PushedImage] = []
    attestations: list[PushedImage] = []
    with _client(server_or_url, auth) as client:
        for platform in platforms:
            label = f"{seed}|{repo}|{tag}|{platform}"
            data = _layer_list(2, None, seed, repo, tag, platform)
            children.append(
                _push_image(
                    client,
                    repo,
                    None,
                    tag=None,
                    oci=oci,
                    layer_data=data,
                    platform=platform,
                    seed_label=label,
                )
            )
            if oci and attestation:
                attestations.append(_push_attestation(client, repo, children[-1], label))
        descriptors = [
            _descriptor(c.media_type, c.digest, c.size, platform=_platform_dict(c.platform or ""))
            for c in children
        ]
        for child, att in zip(children, attestations, strict=False):
            descriptors.append(
                _descriptor(
                    att.media_type,
                    att.digest,
                    att.size,
                    annotations={
                        "vnd.docker.reference.digest": child.digest,
                        "vnd.docker.reference.type": "attestation-manifest",
                    },
                    platform={"architecture": "unknown", "os": "unknown"},
                )
            )
        media_type = OCI_INDEX if oci else DOCKER_MANIFEST_LIST
        body = _canonical_json(
            {"schemaVersion": 2, "mediaType": media_type, "manifests": descriptors}
        )
        digest = _push_manifest(client, repo, tag, body, media_type)
    return PushedIndex(repo, tag, digest, len(body), media_type, body, children, attestations)
