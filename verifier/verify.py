"""`verify_image` -> `Report`, and what every HTTP run shares (options, walker, cache, counters).

`scan.verify_registry` builds on the same pieces for a whole registry. Never prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from verifier.cache import VerifiedManifestCache
from verifier.errors import AuthRefused
from verifier.model.findings import Finding, ImageResult, Kind, Report, Severity, image_status
from verifier.model.reference import ImageReference
from verifier.registry.auth import Credentials
from verifier.registry.client import ClientOptions, RegistryClient, Transport
from verifier.walk import Walker, WalkOptions


@dataclass(frozen=True)
class RunOptions:
    """Everything a verification run needs besides the target."""

    client: ClientOptions = field(default_factory=ClientOptions)
    walk: WalkOptions = field(default_factory=WalkOptions)
    credentials: Credentials | None = None
    transport: Transport | None = None
    #: `--cache-dir`: manifests kept across runs (verifier/cache.py).
    cache_dir: Path | None = None


def open_cache(options: RunOptions) -> VerifiedManifestCache | None:
    """The run's manifest cache, when `--cache-dir` was given (UsageError if unusable)."""
    if options.cache_dir is None:
        return None
    return VerifiedManifestCache(options.cache_dir, options.client.max_manifest_bytes)


def open_walker(client: RegistryClient, options: RunOptions) -> Walker:
    """The run's `Walker`, with its cache and the manifest size cap the client applies."""
    return Walker(client, options.walk, open_cache(options),
                  max_manifest_bytes=options.client.max_manifest_bytes)


def run_counters(client: RegistryClient, walker: Walker) -> dict[str, int]:
    """Counters every HTTP run adds to its report: requests by kind, cache use."""
    out = {f"{kind}_requests": n for kind, n in client.requests_by_kind.items()}
    if walker.cache is not None:
        out.update(walker.cache.counters())
    return out


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
        walker = open_walker(client, options)
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
            report.counters.update(run_counters(client, walker))
        report.images.append(ImageResult(display_reference(ref), digest,
                                         image_status(report.findings), ref.repository, ref.tag))
    report.duration_seconds = time.monotonic() - started
    return report
