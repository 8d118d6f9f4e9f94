"""What distribution's ``manifestStore.Get`` and ``Manifest.References()`` make of a manifest blob.

Shared by both garbage-collect lines (``registry/storage/manifeststore.go``): the 2.8 line reads
schema1 manifests; the 3.x line refuses them in ``Get`` (``distribution.ErrSchemaV1Unsupported``),
which the 3.x model turns into a stop of its mark phase.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from verifier.model.manifest import ManifestError, MediaType, parse_descriptor
from verifier.storage.layout import RegistryStorage, blob_data_rel, digest_from_hex
from verifier.storage.records import ManifestReader, ReadFailure


class ManifestShape(StrEnum):
    """What kind of manifest a revision holds, as distribution's manifest store dispatches it."""

    INDEX = "index"
    IMAGE = "image"
    SCHEMA1 = "schema1"


@dataclass(frozen=True)
class Reference:
    """One descriptor of ``manifest.References()``: a child manifest, a config or a layer."""

    digest: str
    role: str  # "child", "attestation", "config", "layer"
    platform: str | None = None
    media_type: str | None = None


@dataclass(frozen=True)
class ManifestRefs:
    """A parsed manifest: its shape, media type and references, in distribution's order."""

    shape: ManifestShape
    media_type: str
    references: tuple[Reference, ...]


@dataclass(frozen=True)
class Unparseable:
    """distribution's ``manifestStore.Get`` would fail on this content too (the GC stops)."""

    reason: str


@dataclass(frozen=True)
class Unreadable:
    """We could not read the content; what distribution would do with it is unknown."""

    reason: str


ManifestResult = ManifestRefs | Unparseable | Unreadable
#: Looks a manifest up by the hex of its digest.
ManifestLookup = Callable[[str], ManifestResult]

_IMAGE_TYPES = {str(MediaType.DOCKER_MANIFEST), str(MediaType.OCI_MANIFEST)}
_INDEX_TYPES = {str(MediaType.DOCKER_LIST), str(MediaType.OCI_INDEX)}


def _go_descriptor(raw: Any, role: str, where: str) -> Reference:
    """One descriptor the way Go's ``json.Unmarshal`` reads it: missing fields are zero values,
    fields of the wrong JSON type are an error. Digests are *not* validated (``digest.Digest``
    is a plain string type), so a malformed one is simply marked and never found."""
    if raw is None:
        return Reference("", role)
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: cannot unmarshal {type(raw).__name__} into a descriptor")
    digest = raw.get("digest", "")
    media_type = raw.get("mediaType", "")
    size = raw.get("size", 0)
    if digest is not None and not isinstance(digest, str):
        raise ValueError(f"{where}: digest is not a string")
    if media_type is not None and not isinstance(media_type, str):
        raise ValueError(f"{where}: mediaType is not a string")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise ValueError(f"{where}: size is not an integer")
    platform = None
    if role in ("child", "attestation"):
        # Only for messages: the shared strict parser knows platforms and attestations.
        try:
            parsed = parse_descriptor(raw, where)
        except ManifestError:
            pass
        else:
            platform = parsed.platform
            if parsed.is_attestation:
                role = "attestation"
    return Reference(digest or "", role, platform, media_type or None)


def _go_list(doc: dict[str, Any], key: str, where: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}: {key} is not a list")
    return value


def manifest_references(body: bytes) -> ManifestRefs | Unparseable:
    """Parse a manifest the way distribution's ``manifestStore.Get`` dispatches it, and list
    ``References()``.

    Mirrors ``registry/storage/manifeststore.go`` (both lines): unmarshal ``schemaVersion`` and
    ``mediaType``; schema 1 → its ``fsLayers``; schema 2 with a Docker/OCI image type → config
    then layers; a list/index type → its manifests; no ``mediaType`` → an index if
    ``manifests`` is present, else an OCI image manifest; any other type or schema version is
    an error ("unrecognized manifest content type"), which makes ``garbage-collect`` stop.
    More lenient than `verifier.model.manifest.parse_manifest` on purpose: Go does not validate
    digests or require sizes.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Unparseable(f"not JSON: {exc}")
    if not isinstance(doc, dict):
        return Unparseable("manifest is not a JSON object")
    version = doc.get("schemaVersion", 0)
    media_type = doc.get("mediaType", "")
    if version is None:
        version = 0
    if not isinstance(version, int) or isinstance(version, bool):
        return Unparseable("schemaVersion is not an integer")
    if media_type is None:
        media_type = ""
    if not isinstance(media_type, str):
        return Unparseable("mediaType is not a string")
    try:
        if version == 1:
            layers = _go_list(doc, "fsLayers", "schema1")
            refs = []
            for i, layer in enumerate(layers):
                if not isinstance(layer, dict) or not isinstance(layer.get("blobSum", ""), str):
                    raise ValueError(f"fsLayers[{i}] is not an object with a string blobSum")
                refs.append(Reference(layer.get("blobSum") or "", "layer"))
            return ManifestRefs(
                ManifestShape.SCHEMA1, media_type or str(MediaType.DOCKER_SCHEMA1), tuple(refs)
            )
        if version != 2:
            return Unparseable(f"unrecognized manifest schema version {version}")
        if media_type in _INDEX_TYPES or (media_type == "" and doc.get("manifests") is not None):
            children = _go_list(doc, "manifests", "index")
            return ManifestRefs(
                ManifestShape.INDEX,
                media_type or str(MediaType.OCI_INDEX),
                tuple(
                    _go_descriptor(c, "child", f"manifests[{i}]") for i, c in enumerate(children)
                ),
            )
        if media_type in _IMAGE_TYPES or media_type == "":
            config = _go_descriptor(doc.get("config"), "config", "config")
            layer_refs = [
                _go_descriptor(d, "layer", f"layers[{i}]")
                for i, d in enumerate(_go_list(doc, "layers", "manifest"))
            ]
            return ManifestRefs(
                ManifestShape.IMAGE,
                media_type or str(MediaType.OCI_MANIFEST),
                (config, *layer_refs),
            )
    except ValueError as exc:
        return Unparseable(str(exc))
    return Unparseable(f"unrecognized manifest content type {media_type[:80]}")


class ManifestRefsCache:
    """`ManifestLookup` over one registry: reads each manifest blob through `read` (any
    backend's `ManifestReader`) and parses its references at most once."""

    def __init__(self, registry: RegistryStorage, read: ManifestReader) -> None:
        self._registry = registry
        self._read = read
        self._cache: dict[str, ManifestResult] = {}
        self.reads = 0

    def __call__(self, hex_: str) -> ManifestResult:
        """The manifest whose digest has this hex (validated before any path is built)."""
        hit = self._cache.get(hex_)
        if hit is not None:
            return hit
        self.reads += 1
        digest = digest_from_hex(hex_)
        body = self._read(digest)
        result: ManifestResult
        if isinstance(body, ReadFailure):
            path = self._registry.display(blob_data_rel(digest))
            result = Unreadable(f"{path}: {body.reason}{': ' + body.detail if body.detail else ''}")
        else:
            result = manifest_references(body)
        self._cache[hex_] = result
        return result
