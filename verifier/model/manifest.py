"""Manifest media types, the Accept list, and parsing of manifests and indexes; pure.

Parsing never raises on bad content from a registry: it raises `ManifestError`, which the walk
turns into a `manifest_invalid` finding for that one object.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from verifier.model.reference import is_valid_digest


class MediaType(StrEnum):
    """Manifest media types the walk understands."""

    OCI_INDEX = "application/vnd.oci.image.index.v1+json"
    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
    DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"


INDEX_TYPES = frozenset({MediaType.OCI_INDEX, MediaType.DOCKER_LIST})
IMAGE_TYPES = frozenset({MediaType.OCI_MANIFEST, MediaType.DOCKER_MANIFEST})
SCHEMA1_TYPES = frozenset({MediaType.DOCKER_SCHEMA1, MediaType.DOCKER_SCHEMA1_SIGNED})

#: All four modern types, always: without the OCI ones distribution 2.8 answers 404 for OCI
#: content, and without the Docker ones it silently downgrades.
ACCEPT = ", ".join(
    [
        MediaType.OCI_INDEX,
        MediaType.OCI_MANIFEST,
        MediaType.DOCKER_LIST,
        MediaType.DOCKER_MANIFEST,
        f"{MediaType.DOCKER_SCHEMA1_SIGNED};q=0.5",
    ]
)

DEFAULT_MAX_MANIFEST_BYTES = 4 * 1024 * 1024
ATTESTATION_REFERENCE_TYPE = "attestation-manifest"


class ManifestError(ValueError):
    """The manifest body is not a usable manifest (not JSON, wrong shape, bad digest)."""


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about a blob or a child manifest."""

    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    platform: str | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_attestation(self) -> bool:
        """A buildx attestation manifest (platform unknown/unknown, reference type set)."""
        return self.annotations.get("vnd.docker.reference.type") == ATTESTATION_REFERENCE_TYPE


@dataclass(frozen=True)
class ImageManifest:
    """A single-platform image manifest: a config blob and layer blobs."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageIndex:
    """An OCI image index or Docker manifest list: descriptors of child manifests."""

    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Schema1Manifest:
    """A deprecated schema1 manifest: recognised, reported, not verified."""

    media_type: str


Manifest = ImageManifest | ImageIndex | Schema1Manifest


def sha256_digest(body: bytes) -> str:
    """`sha256:<hex>` of the bytes."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"{where}: field {key!r} missing or of the wrong type")
    return value


def _platform(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return None
    os_ = raw.get("os")
    arch = raw.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str):
        return None
    variant = raw.get("variant")
    return f"{os_}/{arch}/{variant}" if isinstance(variant, str) and variant else f"{os_}/{arch}"


def parse_descriptor(raw: Any, where: str) -> Descriptor:
    """Validate one descriptor object; digests must be well-formed before any use."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: descriptor is not an object")
    media_type = _require(raw, "mediaType", str, where)
    digest = _require(raw, "digest", str, where)
    size = _require(raw, "size", int, where)
    if not is_valid_digest(digest):
        raise ManifestError(f"{where}: invalid digest {digest[:80]!r}")
    if size < 0:
        raise ManifestError(f"{where}: negative size {size}")
    urls_raw = raw.get("urls") or []
    if not isinstance(urls_raw, list) or not all(isinstance(u, str) for u in urls_raw):
        raise ManifestError(f"{where}: field 'urls' is not a list of strings")
    annotations_raw = raw.get("annotations") or {}
    if not isinstance(annotations_raw, dict):
        raise ManifestError(f"{where}: field 'annotations' is not an object")
    annotations = {str(k): str(v) for k, v in annotations_raw.items()}
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        urls=tuple(urls_raw),
        platform=_platform(raw.get("platform")),
        annotations=annotations,
    )


def parse_manifest(body: bytes, content_type: str | None = None) -> Manifest:
    """Parse a manifest body into an index, an image manifest or a schema1 marker."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        # JSONDecodeError, UnicodeDecodeError, and an integer over Python's 4300-digit limit.
        raise ManifestError(f"not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise ManifestError("not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ManifestError("manifest is not a JSON object")
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestError("field 'mediaType' is not a string")
    header_type = (content_type or "").split(";")[0].strip() or None
    media_type = declared or header_type
    schema_version = doc.get("schemaVersion")
    if schema_version is not None and (
        isinstance(schema_version, bool) or not isinstance(schema_version, int)
    ):
        # `true == 1` and `2.0 == 2` in Python: without this a malformed manifest would pass
        # as schema1 (a warning) instead of `manifest_invalid`.
        raise ManifestError("field 'schemaVersion' is not an integer")
    if schema_version == 1 or media_type in SCHEMA1_TYPES:
        return Schema1Manifest(media_type or MediaType.DOCKER_SCHEMA1)
    if schema_version != 2:
        raise ManifestError(f"unsupported schemaVersion {schema_version!r}")
    if media_type is None:
        # OCI allows omitting mediaType; the shape tells which it is.
        media_type = MediaType.OCI_INDEX if "manifests" in doc else MediaType.OCI_MANIFEST
    if media_type in INDEX_TYPES:
        children = _require(doc, "manifests", list, "index")
        return ImageIndex(
            media_type,
            tuple(parse_descriptor(c, f"index.manifests[{i}]") for i, c in enumerate(children)),
        )
    if media_type in IMAGE_TYPES:
        config = parse_descriptor(_require(doc, "config", dict, "manifest"), "manifest.config")
        layers = _require(doc, "layers", list, "manifest")
        return ImageManifest(
            media_type,
            config,
            tuple(parse_descriptor(d, f"manifest.layers[{i}]") for i, d in enumerate(layers)),
        )
    raise ManifestError(f"unknown manifest media type {media_type!r}")
