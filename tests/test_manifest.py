"""Manifest parsing: every shape the walk meets, and every bad body raising only ManifestError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.model.manifest import (
    ACCEPT,
    Descriptor,
    ImageIndex,
    ImageManifest,
    ManifestError,
    MediaType,
    Schema1Manifest,
    parse_descriptor,
    parse_manifest,
    sha256_digest,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _desc(
    digest: str = D1, size: int = 10, media_type: str = LAYER, **extra: Any
) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def _body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _image(media_type: str | None = MediaType.OCI_MANIFEST, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "config": _desc(D1, 100, "application/vnd.oci.image.config.v1+json"),
        "layers": [_desc(D2, 200), _desc(D3, 300)],
        **extra,
    }
    if media_type is not None:
        doc["mediaType"] = media_type
    return doc


def test_accept_lists_every_modern_type() -> None:
    for media_type in (MediaType.OCI_INDEX, MediaType.OCI_MANIFEST, MediaType.DOCKER_LIST,
                       MediaType.DOCKER_MANIFEST):
        assert media_type in ACCEPT


def test_sha256_digest() -> None:
    assert sha256_digest(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


@pytest.mark.parametrize("media_type", [MediaType.OCI_MANIFEST, MediaType.DOCKER_MANIFEST])
def test_image_manifest(media_type: MediaType) -> None:
    parsed = parse_manifest(_body(_image(media_type)))
    assert isinstance(parsed, ImageManifest)
    assert parsed.media_type == media_type
    assert parsed.config == Descriptor("application/vnd.oci.image.config.v1+json", D1, 100)
    assert [d.digest for d in parsed.layers] == [D2, D3]
    assert [d.size for d in parsed.layers] == [200, 300]


def test_oci_manifest_without_media_type_is_told_by_shape_or_header() -> None:
    assert isinstance(parse_manifest(_body(_image(None))), ImageManifest)
    index = {"schemaVersion": 2, "manifests": [_desc(D1, 5, MediaType.OCI_MANIFEST)]}
    assert isinstance(parse_manifest(_body(index)), ImageIndex)
    # The Content-Type header decides when the body does not say.
    parsed = parse_manifest(_body(_image(None)), f"{MediaType.DOCKER_MANIFEST}; charset=utf-8")
    assert parsed.media_type == MediaType.DOCKER_MANIFEST


def test_foreign_layer_urls_and_annotations() -> None:
    layer = _desc(D2, 7, "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                  urls=["https://example.com/layer"], annotations={"a": "b", "n": 1})
    parsed = parse_manifest(_body(_image(layers=[layer])))
    assert isinstance(parsed, ImageManifest)
    assert parsed.layers[0].urls == ("https://example.com/layer",)
    assert parsed.layers[0].annotations == {"a": "b", "n": "1"}


@pytest.mark.parametrize("media_type", [MediaType.OCI_INDEX, MediaType.DOCKER_LIST])
def test_index_with_platforms_and_attestation(media_type: MediaType) -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            _desc(D1, 500, MediaType.OCI_MANIFEST,
                  platform={"os": "linux", "architecture": "amd64"}),
            _desc(D2, 501, MediaType.OCI_MANIFEST,
                  platform={"os": "linux", "architecture": "arm64", "variant": "v8"}),
            _desc(D3, 502, MediaType.OCI_MANIFEST,
                  platform={"os": "unknown", "architecture": "unknown"},
                  annotations={"vnd.docker.reference.type": "attestation-manifest",
                               "vnd.docker.reference.digest": D1}),
        ],
    }
    parsed = parse_manifest(_body(doc))
    assert isinstance(parsed, ImageIndex)
    assert parsed.media_type == media_type
    assert [d.platform for d in parsed.manifests] == [
        "linux/amd64", "linux/arm64/v8", "unknown/unknown"]
    assert [d.is_attestation for d in parsed.manifests] == [False, False, True]


def test_platform_of_the_wrong_shape_is_just_absent() -> None:
    doc = {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX,
           "manifests": [_desc(D1, 1, platform="linux"), _desc(D2, 1, platform={"os": 1})]}
    parsed = parse_manifest(_body(doc))
    assert isinstance(parsed, ImageIndex)
    assert [d.platform for d in parsed.manifests] == [None, None]


def test_empty_index_is_valid() -> None:
    parsed = parse_manifest(_body({"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX,
                                   "manifests": []}))
    assert parsed == ImageIndex(MediaType.OCI_INDEX, ())


@pytest.mark.parametrize(
    ("doc", "content_type"),
    [
        ({"schemaVersion": 1, "name": "x", "fsLayers": []}, None),
        ({"schemaVersion": 1, "signatures": []}, MediaType.DOCKER_SCHEMA1_SIGNED),
        ({"mediaType": MediaType.DOCKER_SCHEMA1}, None),
    ],
)
def test_schema1_is_recognised_not_verified(doc: dict[str, Any], content_type: str | None) -> None:
    parsed = parse_manifest(_body(doc), content_type)
    assert isinstance(parsed, Schema1Manifest)
    assert parsed.media_type in (MediaType.DOCKER_SCHEMA1, MediaType.DOCKER_SCHEMA1_SIGNED)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"<html>502 Bad Gateway</html>", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b"1" * 5000, "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b"null", "not a JSON object"),
        (b'"manifest"', "not a JSON object"),
        (b"42", "not a JSON object"),
    ],
)
def test_not_json_or_not_an_object(body: bytes, match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        parse_manifest(body)


BAD_DOCS: list[tuple[dict[str, Any], str]] = [
    ({"mediaType": MediaType.OCI_MANIFEST, "config": _desc(), "layers": []},
     "unsupported schemaVersion"),
    ({**_image(), "schemaVersion": 3}, "unsupported schemaVersion"),
    ({**_image(), "schemaVersion": "2"}, "schemaVersion"),
    ({**_image(), "schemaVersion": True}, "schemaVersion"),
    ({**_image(), "schemaVersion": 1.0}, "schemaVersion"),
    ({**_image(), "schemaVersion": 2.0}, "schemaVersion"),
    ({**_image(), "mediaType": 7}, "mediaType"),
    ({**_image(), "mediaType": "application/json"}, "unknown manifest media type"),
    ({**_image(), "mediaType": "text/html"}, "unknown manifest media type"),
    ({k: v for k, v in _image().items() if k != "config"}, "'config'"),
    ({**_image(), "config": [_desc()]}, "'config'"),
    ({k: v for k, v in _image().items() if k != "layers"}, "'layers'"),
    ({**_image(), "layers": {"0": _desc()}}, "'layers'"),
    ({**_image(), "layers": [None]}, "not an object"),
    ({**_image(), "layers": ["sha256:" + "1" * 64]}, "not an object"),
    ({**_image(), "layers": [{"digest": D1, "size": 1}]}, "'mediaType'"),
    ({**_image(), "layers": [{**_desc(), "digest": None}]}, "'digest'"),
    ({**_image(), "layers": [{**_desc(), "size": "10"}]}, "'size'"),
    ({**_image(), "layers": [{**_desc(), "size": True}]}, "'size'"),
    ({**_image(), "layers": [{**_desc(), "size": 1.5}]}, "'size'"),
    ({**_image(), "layers": [{**_desc(), "size": -1}]}, "negative size"),
    ({**_image(), "layers": [{**_desc(), "urls": "https://x"}]}, "'urls'"),
    ({**_image(), "layers": [{**_desc(), "urls": [1]}]}, "'urls'"),
    ({**_image(), "layers": [{**_desc(), "annotations": ["a"]}]}, "'annotations'"),
    ({**_image(), "layers": [_desc("sha256:../../x")]}, "invalid digest"),
    ({**_image(), "layers": [_desc("sha256:" + "A" * 64)]}, "invalid digest"),
    ({**_image(), "layers": [_desc("md5:" + "a" * 32)]}, "invalid digest"),
    ({**_image(), "layers": [_desc("../../../etc/passwd")]}, "invalid digest"),
    ({**_image(), "config": _desc("sha256:" + "1" * 63)}, "invalid digest"),
    ({"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX}, "'manifests'"),
    ({"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX, "manifests": None}, "'manifests'"),
    ({"schemaVersion": 2, "mediaType": MediaType.DOCKER_LIST, "manifests": [_desc(D1, -5)]},
     "negative size"),
    ({"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX,
      "manifests": [_desc("sha256:/" + "a" * 63)]}, "invalid digest"),
]


@pytest.mark.parametrize(("doc", "match"), BAD_DOCS)
def test_wrong_shapes_raise_manifest_error(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        parse_manifest(_body(doc))


def test_error_message_does_not_echo_a_huge_digest() -> None:
    with pytest.raises(ManifestError) as info:
        parse_descriptor(_desc("x" * 10_000), "manifest.layers[0]")
    assert len(str(info.value)) < 200
    assert str(info.value).startswith("manifest.layers[0]:")


def test_manifest_error_is_a_value_error() -> None:
    # The walk catches ManifestError; being a ValueError keeps `except ValueError` callers working.
    assert issubclass(ManifestError, ValueError)


# -- property-based ------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=8,
)
_digest_like = st.one_of(
    st.just(D1), st.just("sha256:../../x"), st.text(max_size=80),
    st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex()),
)
_descriptor_like = st.fixed_dictionaries(
    {},
    optional={
        "mediaType": st.sampled_from([LAYER, MediaType.OCI_MANIFEST, ""]) | _json,
        "digest": _digest_like | _json,
        "size": st.integers(min_value=-5, max_value=1 << 40) | _json,
        "urls": st.lists(st.text(max_size=10), max_size=2) | _json,
        "annotations": st.dictionaries(st.text(max_size=5), st.text(max_size=5)) | _json,
        "platform": st.fixed_dictionaries({"os": st.text(max_size=5),
                                           "architecture": st.text(max_size=5)}) | _json,
    },
)
_manifest_like = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": st.sampled_from([1, 2, 2.0, True, "2"]) | _json,
        "mediaType": st.sampled_from([str(m) for m in MediaType] + ["x/y"]) | _json,
        "config": _descriptor_like | _json,
        "layers": st.lists(_descriptor_like, max_size=3) | _json,
        "manifests": st.lists(_descriptor_like, max_size=3) | _json,
    },
)


def _parse_or_manifest_error(body: bytes, content_type: str | None = None) -> None:
    try:
        parsed = parse_manifest(body, content_type)
    except ManifestError:
        return
    assert isinstance(parsed, ImageManifest | ImageIndex | Schema1Manifest)


@settings(max_examples=100, deadline=None)
@given(_json)
def test_arbitrary_json_raises_only_manifest_error(value: Any) -> None:
    _parse_or_manifest_error(json.dumps(value).encode())


@settings(max_examples=150, deadline=None)
@given(_manifest_like, st.none() | st.sampled_from([str(m) for m in MediaType]))
def test_manifest_shaped_json_raises_only_manifest_error(
    doc: dict[str, Any], content_type: str | None
) -> None:
    _parse_or_manifest_error(json.dumps(doc).encode(), content_type)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_manifest_error(body: bytes) -> None:
    _parse_or_manifest_error(body)
