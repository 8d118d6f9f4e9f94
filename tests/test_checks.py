"""Pure checks: every branch of the manifest and blob judgements gives the right Kind."""

from __future__ import annotations

import hashlib
import json

import pytest

from verifier.checks import (
    Context,
    check_blob_head,
    check_blob_stream,
    check_last_byte,
    check_manifest,
    digest_of,
    finding,
    relabel_replacing_chain,
)
from verifier.model.findings import Finding, Kind, Severity
from verifier.model.manifest import Descriptor, ImageManifest, MediaType
from verifier.registry.answers import BlobHead, BlobStream, ManifestFetch, RangeRead

CTX = Context("team/app", "v1")
SIZE = 1234
DIGEST = "sha256:" + "b" * 64
BLOB = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", DIGEST, SIZE)
CAP = 4 * 1024 * 1024

MANIFEST_BODY = json.dumps({
    "schemaVersion": 2,
    "mediaType": MediaType.OCI_MANIFEST,
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": "sha256:" + "c" * 64, "size": 10},
    "layers": [{"mediaType": BLOB.media_type, "digest": DIGEST, "size": SIZE}],
}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST_BODY).hexdigest()


def kinds(found: list[Finding]) -> list[Kind]:
    return [f.kind for f in found]


# -- context and labelling -----------------------------------------------------------------


def test_findings_carry_the_context() -> None:
    ctx = CTX.child("index", platform="linux/amd64").child("layer")
    f = finding(ctx, Kind.BLOB_MISSING, "gone", digest=DIGEST, details={"note": 1})
    assert (f.repository, f.reference, f.platform) == ("team/app", "v1", "linux/amd64")
    assert f.details == {"note": 1, "chain": ["index", "layer"]}
    assert f.severity is Severity.ERROR
    assert finding(CTX, Kind.FOREIGN_LAYER, "x", severity=Severity.INFO).details == {}


def test_relabel_moves_a_shared_finding() -> None:
    original = finding(CTX.child("a"), Kind.BLOB_MISSING, "gone", digest=DIGEST)
    other = Context("team/other", "v9", "linux/arm64", ("b", "c"))
    [moved] = relabel_replacing_chain([original], other)
    assert (moved.repository, moved.reference, moved.platform) == ("team/other", "v9",
                                                                   "linux/arm64")
    assert moved.details["chain"] == ["b", "c"]
    assert original.details["chain"] == ["a"]


def test_digest_of() -> None:
    assert digest_of(b"", "sha256") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert (digest_of(b"x", "sha512") or "").startswith("sha512:")
    assert digest_of(b"x", "md5") is None


# -- check_manifest ------------------------------------------------------------------------


def _fetch(status: int = 200, body: bytes = MANIFEST_BODY, **kw: object) -> ManifestFetch:
    defaults: dict[str, object] = {"content_type": MediaType.OCI_MANIFEST,
                                   "digest_header": MANIFEST_DIGEST,
                                   "content_length": len(body)}
    defaults.update(kw)
    return ManifestFetch(status, body, **defaults)  # type: ignore[arg-type]


def test_healthy_manifest() -> None:
    expected = Descriptor(MediaType.OCI_MANIFEST, MANIFEST_DIGEST, len(MANIFEST_BODY))
    found, manifest, digest = check_manifest(CTX, _fetch(), requested_digest=MANIFEST_DIGEST,
                                             expected=expected, max_bytes=CAP)
    assert found == []
    assert isinstance(manifest, ImageManifest)
    assert digest == MANIFEST_DIGEST


def test_manifest_without_digest_header_gets_its_computed_digest() -> None:
    found, manifest, digest = check_manifest(CTX, _fetch(digest_header=None),
                                             requested_digest=None, expected=None, max_bytes=CAP)
    assert found == []
    assert manifest is not None
    assert digest == MANIFEST_DIGEST


def test_manifest_missing() -> None:
    fetch = ManifestFetch(404, error_codes=("MANIFEST_UNKNOWN",))
    found, manifest, _ = check_manifest(CTX, fetch, requested_digest=None, expected=None,
                                        max_bytes=CAP)
    assert kinds(found) == [Kind.MANIFEST_MISSING]
    assert found[0].http_status == 404
    assert "MANIFEST_UNKNOWN" in found[0].message
    assert manifest is None


@pytest.mark.parametrize(("status", "kind"), [(401, Kind.AUTH_FAILED), (403, Kind.AUTH_FAILED),
                                              (500, Kind.REQUEST_FAILED),
                                              (400, Kind.REQUEST_FAILED)])
def test_manifest_other_statuses(status: int, kind: Kind) -> None:
    found, manifest, digest = check_manifest(CTX, ManifestFetch(status), requested_digest=DIGEST,
                                             expected=None, max_bytes=CAP)
    assert kinds(found) == [kind]
    assert found[0].http_status == status
    assert not found[0].is_defect  # could not tell; never "broken"
    assert manifest is None
    assert digest == DIGEST


def test_manifest_too_large() -> None:
    fetch = ManifestFetch(200, too_large=True, content_length=CAP + 1)
    found, manifest, _ = check_manifest(CTX, fetch, requested_digest=None, expected=None,
                                        max_bytes=CAP)
    assert kinds(found) == [Kind.MANIFEST_INVALID]
    assert found[0].actual_size == CAP + 1
    assert str(CAP) in found[0].message
    assert manifest is None


def test_manifest_digest_header_mismatch() -> None:
    found, manifest, _ = check_manifest(CTX, _fetch(digest_header=DIGEST), requested_digest=None,
                                        expected=None, max_bytes=CAP)
    assert kinds(found) == [Kind.DIGEST_MISMATCH]
    assert (found[0].expected_digest, found[0].actual_digest) == (DIGEST, MANIFEST_DIGEST)
    assert manifest is not None  # still walked: the problem is recorded, the walk goes on


def test_manifest_requested_digest_mismatch() -> None:
    found, _, digest = check_manifest(CTX, _fetch(digest_header=None), requested_digest=DIGEST,
                                      expected=None, max_bytes=CAP)
    assert kinds(found) == [Kind.DIGEST_MISMATCH]
    assert "requested digest" in found[0].message
    assert digest == DIGEST


def test_manifest_with_sha512_digest_header() -> None:
    sha512 = "sha512:" + hashlib.sha512(MANIFEST_BODY).hexdigest()
    found, _, _ = check_manifest(CTX, _fetch(digest_header=sha512), requested_digest=sha512,
                                 expected=None, max_bytes=CAP)
    assert found == []


@pytest.mark.parametrize("header", ["md5:" + "a" * 32, "sha256:xyz", "garbage",
                                    "sha256:../../" + "x" * 4000])
def test_manifest_unsupported_digest_header(header: str) -> None:
    found, manifest, digest = check_manifest(CTX, _fetch(digest_header=header),
                                             requested_digest=None, expected=None,
                                             max_bytes=CAP)
    assert kinds(found) == [Kind.MANIFEST_INVALID]
    assert len(found[0].message) < 200
    # The bogus header never names the manifest: the report shows what the body hashes to.
    assert digest == MANIFEST_DIGEST
    assert found[0].digest == MANIFEST_DIGEST
    assert manifest is not None


def test_manifest_error_status_with_bogus_digest_header() -> None:
    fetch = ManifestFetch(404, digest_header="garbage")
    found, _, digest = check_manifest(CTX, fetch, requested_digest=None, expected=None,
                                      max_bytes=CAP)
    assert digest is None
    assert found[0].digest is None


def test_manifest_size_differs_from_descriptor() -> None:
    expected = Descriptor(MediaType.OCI_MANIFEST, MANIFEST_DIGEST, len(MANIFEST_BODY) + 1)
    found, _, _ = check_manifest(CTX, _fetch(), requested_digest=MANIFEST_DIGEST,
                                 expected=expected, max_bytes=CAP)
    assert kinds(found) == [Kind.SIZE_MISMATCH]
    assert (found[0].expected_size, found[0].actual_size) == (len(MANIFEST_BODY) + 1,
                                                              len(MANIFEST_BODY))
    assert found[0].media_type == MediaType.OCI_MANIFEST


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[]", b'{"schemaVersion": 2}', b""])
def test_manifest_unparseable(body: bytes) -> None:
    found, manifest, digest = check_manifest(CTX, _fetch(body=body, digest_header=None),
                                             requested_digest=None, expected=None, max_bytes=CAP)
    assert kinds(found) == [Kind.MANIFEST_INVALID]
    assert found[0].message.startswith("manifest unusable:")
    assert manifest is None
    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()


# -- check_blob_head -----------------------------------------------------------------------


def test_healthy_head() -> None:
    assert check_blob_head(CTX, BLOB, BlobHead(200, SIZE, DIGEST)) == []
    assert check_blob_head(CTX, BLOB, BlobHead(200, None, None)) == []


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (BlobHead(404), [Kind.BLOB_MISSING]),
        (BlobHead(401), [Kind.AUTH_FAILED]),
        (BlobHead(403), [Kind.AUTH_FAILED]),
        (BlobHead(500), [Kind.BLOB_UNREADABLE]),
        (BlobHead(200, 0, DIGEST), [Kind.SIZE_MISMATCH]),
        (BlobHead(200, SIZE + 1, None), [Kind.SIZE_MISMATCH]),
        (BlobHead(200, SIZE, "sha256:" + "e" * 64), [Kind.DIGEST_MISMATCH]),
        (BlobHead(200, 1, "sha256:" + "e" * 64), [Kind.SIZE_MISMATCH, Kind.DIGEST_MISMATCH]),
    ],
)
def test_head_problems(head: BlobHead, expected: list[Kind]) -> None:
    found = check_blob_head(CTX, BLOB, head)
    assert kinds(found) == expected
    assert all(f.digest == DIGEST and f.http_status == head.status for f in found)


def test_head_size_mismatch_fields() -> None:
    [f] = check_blob_head(CTX, BLOB, BlobHead(200, 0))
    assert (f.expected_size, f.actual_size) == (SIZE, 0)
    assert f.is_defect


# -- check_last_byte -----------------------------------------------------------------------


def test_healthy_last_byte() -> None:
    assert check_last_byte(CTX, BLOB, RangeRead(206, 1, 1, SIZE)) == []
    assert check_last_byte(CTX, BLOB, RangeRead(206, 1, 1, None)) == []
    assert check_last_byte(CTX, BLOB, RangeRead(200, SIZE, SIZE)) == []


@pytest.mark.parametrize(
    ("read", "kind"),
    [
        (RangeRead(404), Kind.BLOB_MISSING),
        (RangeRead(401), Kind.AUTH_FAILED),
        (RangeRead(403), Kind.AUTH_FAILED),
        (RangeRead(416), Kind.SIZE_MISMATCH),
        (RangeRead(206, 1, 1, SIZE - 1), Kind.SIZE_MISMATCH),
        (RangeRead(206, 0, 1, SIZE), Kind.BLOB_UNREADABLE),
        (RangeRead(206, 0, 1, SIZE, truncated=True), Kind.BLOB_UNREADABLE),
        (RangeRead(200, 0, SIZE), Kind.BLOB_UNREADABLE),
        (RangeRead(200, 10, SIZE, truncated=True), Kind.BLOB_UNREADABLE),
        (RangeRead(200, 10, 10), Kind.SIZE_MISMATCH),
        (RangeRead(200, SIZE + 1, None), Kind.SIZE_MISMATCH),
        (RangeRead(500), Kind.BLOB_UNREADABLE),
        (RangeRead(302), Kind.BLOB_UNREADABLE),
    ],
)
def test_last_byte_problems(read: RangeRead, kind: Kind) -> None:
    found = check_last_byte(CTX, BLOB, read)
    assert kinds(found) == [kind]
    assert found[0].http_status == read.status
    assert found[0].digest == DIGEST


def test_warm_cache_fault_message() -> None:
    [f] = check_last_byte(CTX, BLOB, RangeRead(206, 0, 1, SIZE, truncated=True))
    assert (f.expected_size, f.actual_size) == (SIZE, 0)
    assert "sent no bytes" in f.message
    assert f.is_defect


# -- check_blob_stream ---------------------------------------------------------------------


def test_healthy_stream() -> None:
    assert check_blob_stream(CTX, BLOB, BlobStream(200, SIZE, DIGEST, SIZE)) == []


def test_stream_of_a_non_sha256_digest_checks_the_size_only() -> None:
    desc = Descriptor(BLOB.media_type, "sha512:" + "a" * 128, SIZE)
    assert check_blob_stream(CTX, desc, BlobStream(200, SIZE, "sha256:" + "f" * 64)) == []


def test_empty_blob_stream_is_healthy() -> None:
    empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    desc = Descriptor(BLOB.media_type, empty, 0)
    assert check_blob_stream(CTX, desc, BlobStream(200, 0, empty, 0)) == []


@pytest.mark.parametrize(
    ("stream", "kind"),
    [
        (BlobStream(404), Kind.BLOB_MISSING),
        (BlobStream(401), Kind.AUTH_FAILED),
        (BlobStream(403), Kind.AUTH_FAILED),
        (BlobStream(500), Kind.BLOB_UNREADABLE),
        (BlobStream(206, 1), Kind.BLOB_UNREADABLE),
        (BlobStream(200, 0, None, SIZE), Kind.BLOB_UNREADABLE),
        (BlobStream(200, 10, None, SIZE, truncated=True), Kind.BLOB_UNREADABLE),
        (BlobStream(200, SIZE - 1, "sha256:" + "f" * 64), Kind.SIZE_MISMATCH),
        (BlobStream(200, SIZE + 1, "sha256:" + "f" * 64), Kind.SIZE_MISMATCH),
        (BlobStream(200, SIZE, "sha256:" + "f" * 64), Kind.DIGEST_MISMATCH),
    ],
)
def test_stream_problems(stream: BlobStream, kind: Kind) -> None:
    found = check_blob_stream(CTX, BLOB, stream)
    assert kinds(found) == [kind]
    assert found[0].http_status == stream.status


def test_stream_digest_mismatch_fields() -> None:
    actual = "sha256:" + "f" * 64
    [f] = check_blob_stream(CTX, BLOB, BlobStream(200, SIZE, actual))
    assert (f.expected_digest, f.actual_digest) == (DIGEST, actual)


def test_every_check_marks_auth_and_request_failures_incomplete() -> None:
    found = (check_blob_head(CTX, BLOB, BlobHead(401))
             + check_last_byte(CTX, BLOB, RangeRead(403))
             + check_blob_stream(CTX, BLOB, BlobStream(401))
             + check_manifest(CTX, ManifestFetch(503), requested_digest=None, expected=None,
                              max_bytes=CAP)[0])
    assert [f.is_incomplete for f in found] == [True] * 4
    assert not any(f.is_defect for f in found)
