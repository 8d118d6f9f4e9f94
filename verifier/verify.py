"""The core API: `verify_image` (and, later, `verify_registry`) -> `Report`. Never prints."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from verifier.auth import Credentials
from verifier.client import ClientOptions, RegistryClient
from verifier.errors import AuthRefused
from verifier.findings import Finding, ImageResult, Kind, Report, Severity, image_status
from verifier.reference import ImageReference
from verifier.walk import Walker, WalkOptions


@dataclass(frozen=True)
class RunOptions:
    """Everything a verification run needs besides the target."""

    client: ClientOptions = field(default_factory=ClientOptions)
    walk: WalkOptions = field(default_factory=WalkOptions)
    credentials: Credentials | None = None
    transport: httpx.AsyncBaseTransport | None = None


def display_reference(ref: ImageReference) -> str:
    """`host/repo:tag` (or `host/repo@digest`) as shown in reports."""
    if ref.tag and not ref.digest:
        return f"{ref.name}:{ref.tag}"
    return str(ref)


async def verify_image(ref: ImageReference, options: RunOptions) -> Report:
    """Verify one image reference end to end; the report's exit code tells the verdict."""
    report = Report(mode="image", target=display_reference(ref), started_at=time.time())
    started = time.monotonic()
    async with RegistryClient(ref.api_host, options.client, options.credentials,
                              transport=options.transport) as client:
        walker = Walker(client, options.walk)
        digest = ref.digest
        try:
            await client.ping()
            result = await walker.verify(ref.repository, ref.manifest_ref)
            digest = result.digest or digest
            report.findings.extend(result.findings)
        except AuthRefused as exc:
            report.add(Finding(kind=Kind.AUTH_FAILED, severity=Severity.ERROR, message=str(exc),
                               repository=ref.repository, reference=ref.manifest_ref))
        finally:
            report.requests_by_code.update(client.requests_by_code)
            report.counters.update(walker.counters)
        report.images.append(ImageResult(display_reference(ref), digest,
                                         image_status(report.findings), ref.repository, ref.tag))
    report.duration_seconds = time.monotonic() - started
    return report
