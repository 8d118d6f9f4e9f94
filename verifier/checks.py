"""Pure judgements: (what the manifest said, what the registry answered) -> findings.

Nothing here does I/O. Each function takes a `Context` (where in the walk we are) and returns a
list of findings, empty when the object is healthy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from verifier.model.findings import Finding, Kind, Severity
from verifier.model.manifest import Descriptor, Manifest, ManifestError, parse_manifest
from verifier.model.reference import is_valid_digest
from verifier.registry.answers import BlobAnswer, BlobHead, BlobStream, ManifestFetch, RangeRead


@dataclass(frozen=True)
class Context:
    """Where a finding was made: repository, the reference asked about, and the walk chain."""

    repository: str
    reference: str
    platform: str | None = None
    chain: tuple[str, ...] = field(default=())

    def child(self, step: str, platform: str | None = None) -> Context:
        """The context one step deeper in the walk."""
        return replace(self, chain=(*self.chain, step), platform=platform or self.platform)


def finding(
    ctx: Context, kind: Kind, message: str, *, severity: Severity = Severity.ERROR, **fields: Any
) -> Finding:
    """A finding labelled with the context's repository, reference, platform and chain."""
    details = dict(fields.pop("details", None) or {})
    if ctx.chain:
        details["chain"] = list(ctx.chain)
    return Finding(
        kind=kind,
        severity=severity,
        message=message,
        repository=ctx.repository,
        reference=ctx.reference,
        platform=ctx.platform,
        details=details,
        **fields,
    )


def relabel_replacing_chain(found: list[Finding], ctx: Context) -> list[Finding]:
    """Findings computed once for a shared object, labelled for another place that uses it.

    Repository, reference, platform and chain all become the context's: right for an object
    with nothing below it (a blob). `walk.relabel_extending_chain` keeps a subtree's deeper
    chain and platforms instead.
    """
    out = []
    for f in found:
        details = dict(f.details)
        if ctx.chain:
            details["chain"] = list(ctx.chain)
        out.append(
            replace(f, repository=ctx.repository, reference=ctx.reference,
                    platform=ctx.platform, details=details)
        )
    return out


def digest_of(body: bytes, algorithm: str) -> str | None:
    """`algorithm:hex` of body for sha256/sha384/sha512, None for anything else."""
    if algorithm not in ("sha256", "sha384", "sha512"):
        return None
    return f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"


def _auth_or_other(ctx: Context, status: int, what: str, **fields: Any) -> Finding:
    if status in (401, 403):
        return finding(ctx, Kind.AUTH_FAILED, f"{what}: access refused (HTTP {status})",
                       http_status=status, **fields)
    return finding(ctx, Kind.REQUEST_FAILED, f"{what}: unexpected HTTP {status}",
                   http_status=status, **fields)


def _storage_refused(ctx: Context, desc: Descriptor, status: int, host: str,
                     what: str) -> Finding:
    """Object storage that a blob was redirected to refused it: a real pull fails there too.

    Never an authentication question for us: credentials are for the registry alone, so the
    refusal is the storage's answer about this blob (an expired or mis-signed URL, a bucket
    policy), and the blob cannot be pulled.
    """
    return finding(ctx, Kind.BLOB_UNREADABLE,
                   f"{what}: object storage {host} refused the blob (HTTP {status}) "
                   "after the registry redirected there",
                   digest=desc.digest, media_type=desc.media_type, http_status=status,
                   details={"storage_host": host})


def _refused(ctx: Context, desc: Descriptor, answer: BlobAnswer, what: str) -> list[Finding]:
    """A blob request answered 401 or 403: the object storage's refusal, or the registry's."""
    if answer.storage_host:
        return [_storage_refused(ctx, desc, answer.status, answer.storage_host, what)]
    return [_auth_or_other(ctx, answer.status, what, digest=desc.digest,
                           media_type=desc.media_type)]


def check_manifest(
    ctx: Context,
    fetch: ManifestFetch,
    *,
    requested_digest: str | None,
    expected: Descriptor | None,
    max_bytes: int,
) -> tuple[list[Finding], Manifest | None, str | None]:
    """Judge a manifest GET; return findings, the parsed manifest (when usable) and its digest."""
    # A malformed Docker-Content-Digest is reported below, never used as the manifest's name
    # (it would become the image's digest in the report and a key of the walk's memo).
    header_digest = fetch.digest_header if is_valid_digest(fetch.digest_header) else None
    digest = requested_digest or header_digest
    media_type = expected.media_type if expected else None
    common: dict[str, Any] = {"digest": digest, "media_type": media_type}
    if fetch.status == 404:
        codes = ",".join(fetch.error_codes) or "no error code"
        return [finding(ctx, Kind.MANIFEST_MISSING, f"manifest not found (404 {codes})",
                        http_status=404, **common)], None, digest
    if fetch.status != 200:
        return [_auth_or_other(ctx, fetch.status, "manifest", **common)], None, digest
    if fetch.too_large:
        size = fetch.content_length
        return [finding(ctx, Kind.MANIFEST_INVALID,
                        f"manifest larger than the {max_bytes}-byte cap; not read",
                        http_status=200, actual_size=size, **common)], None, digest
    found: list[Finding] = []
    computed = digest_of(fetch.body, "sha256")
    assert computed is not None
    digest = digest or computed
    common["digest"] = digest
    for label, claimed in (("Docker-Content-Digest", fetch.digest_header),
                           ("requested digest", requested_digest)):
        if not claimed:
            continue
        algorithm = claimed.partition(":")[0]
        actual = digest_of(fetch.body, algorithm)
        if actual is None or not is_valid_digest(claimed):
            found.append(finding(ctx, Kind.MANIFEST_INVALID,
                                 f"{label} {claimed[:80]!r} is not a supported digest",
                                 http_status=200, **common))
        elif actual != claimed:
            found.append(finding(ctx, Kind.DIGEST_MISMATCH,
                                 f"manifest body does not match its {label}",
                                 http_status=200, expected_digest=claimed, actual_digest=actual,
                                 **common))
    if expected is not None and expected.size != len(fetch.body):
        found.append(finding(ctx, Kind.SIZE_MISMATCH,
                             "manifest size differs from its descriptor",
                             http_status=200, expected_size=expected.size,
                             actual_size=len(fetch.body), **common))
    try:
        manifest = parse_manifest(fetch.body, fetch.content_type)
    except ManifestError as exc:
        found.append(finding(ctx, Kind.MANIFEST_INVALID, f"manifest unusable: {exc}",
                             http_status=200, **common))
        return found, None, digest
    return found, manifest, digest


def check_blob_head(ctx: Context, desc: Descriptor, head: BlobHead) -> list[Finding]:
    """HEAD must answer 200 with the descriptor's size and, where sent, its digest."""
    common: dict[str, Any] = {"digest": desc.digest, "media_type": desc.media_type,
                                 "http_status": head.status}
    if head.status == 404:
        return [finding(ctx, Kind.BLOB_MISSING, "blob not found (HEAD 404)", **common)]
    if head.status in (401, 403):
        return _refused(ctx, desc, head, "blob HEAD")
    if head.status != 200:
        return [finding(ctx, Kind.BLOB_UNREADABLE, f"blob HEAD answered HTTP {head.status}",
                        **common)]
    found = []
    if head.content_length is not None and head.content_length != desc.size:
        found.append(finding(ctx, Kind.SIZE_MISMATCH, "blob size differs from its descriptor",
                             expected_size=desc.size, actual_size=head.content_length, **common))
    if head.digest_header and head.digest_header != desc.digest:
        found.append(finding(ctx, Kind.DIGEST_MISMATCH,
                             "registry reports another digest for this blob",
                             expected_digest=desc.digest, actual_digest=head.digest_header,
                             **common))
    return found


def check_last_byte(ctx: Context, desc: Descriptor, read: RangeRead) -> list[Finding]:
    """The blob's last byte must really arrive: a warm-cache HEAD 200 proves nothing."""
    common: dict[str, Any] = {"digest": desc.digest, "media_type": desc.media_type,
                                 "http_status": read.status}
    if read.status == 404:
        return [finding(ctx, Kind.BLOB_MISSING, "blob not found (GET 404)", **common)]
    if read.status in (401, 403):
        return _refused(ctx, desc, read, "blob GET")
    if read.status == 416:
        return [finding(ctx, Kind.SIZE_MISMATCH,
                        "registry cannot serve the blob's last byte (416): blob is shorter",
                        expected_size=desc.size, **common)]
    if read.status == 206:
        if read.total_size is not None and read.total_size != desc.size:
            return [finding(ctx, Kind.SIZE_MISMATCH, "blob size differs from its descriptor",
                            expected_size=desc.size, actual_size=read.total_size, **common)]
        if read.received < 1:
            return [finding(ctx, Kind.BLOB_UNREADABLE,
                            "registry answered 206 for the last byte but sent no bytes "
                            "(blob data missing behind a cached descriptor)",
                            expected_size=desc.size, actual_size=0, **common)]
        return []
    if read.status == 200:
        if read.received != desc.size:
            kind = Kind.BLOB_UNREADABLE if read.truncated or read.received == 0 else (
                Kind.SIZE_MISMATCH)
            return [finding(ctx, kind, f"blob GET delivered {read.received} of {desc.size} bytes",
                            expected_size=desc.size, actual_size=read.received, **common)]
        return []
    return [finding(ctx, Kind.BLOB_UNREADABLE, f"blob GET answered HTTP {read.status}", **common)]


def check_blob_stream(ctx: Context, desc: Descriptor, stream: BlobStream) -> list[Finding]:
    """`--deep`: the whole blob must arrive and hash to its digest."""
    common: dict[str, Any] = {"digest": desc.digest, "media_type": desc.media_type,
                                 "http_status": stream.status}
    if stream.status == 404:
        return [finding(ctx, Kind.BLOB_MISSING, "blob not found (GET 404)", **common)]
    if stream.status in (401, 403):
        return _refused(ctx, desc, stream, "blob GET")
    if stream.status != 200:
        return [finding(ctx, Kind.BLOB_UNREADABLE, f"blob GET answered HTTP {stream.status}",
                        **common)]
    if stream.truncated or (stream.size == 0 and desc.size > 0):
        return [finding(ctx, Kind.BLOB_UNREADABLE,
                        f"blob GET delivered {stream.size} of {desc.size} bytes",
                        expected_size=desc.size, actual_size=stream.size, **common)]
    if stream.size != desc.size:
        return [finding(ctx, Kind.SIZE_MISMATCH, "blob size differs from its descriptor",
                        expected_size=desc.size, actual_size=stream.size, **common)]
    algorithm = desc.digest.partition(":")[0]
    if algorithm == "sha256" and stream.digest != desc.digest:
        return [finding(ctx, Kind.DIGEST_MISMATCH, "blob content does not hash to its digest",
                        expected_digest=desc.digest, actual_digest=stream.digest, **common)]
    return []


def check_range_probe(ctx: Context, desc: Descriptor, read: RangeRead) -> list[Finding]:
    """The default blob probe, one ranged GET: `check_last_byte`, plus the digest header.

    distribution sends `Docker-Content-Digest` on GET as on HEAD, so nothing a HEAD would have
    shown goes unchecked (docs/performance.md).
    """
    found = check_last_byte(ctx, desc, read)
    if not found and read.digest_header and read.digest_header != desc.digest:
        found.append(finding(ctx, Kind.DIGEST_MISMATCH,
                             "registry reports another digest for this blob",
                             digest=desc.digest, media_type=desc.media_type,
                             http_status=read.status, expected_digest=desc.digest,
                             actual_digest=read.digest_header))
    return found
