"""Walk: reference -> manifest or index -> children -> config and layers, with shared work.

A `Walker` lives for one run. It remembers, per (repository, digest), the verdict of every blob
and manifest subtree it has checked, so a layer shared by ten images costs one check, and a
manifest reached from several tags is walked once. Findings are stored without labels and
relabelled for each place that reaches them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from verifier.cache import VerifiedManifestCache
from verifier.checks import (
    Context,
    check_blob_head,
    check_blob_stream,
    check_last_byte,
    check_manifest,
    check_range_probe,
    finding,
    relabel_replacing_chain,
)
from verifier.model.findings import Finding, Kind, Severity
from verifier.model.manifest import (
    DEFAULT_MAX_MANIFEST_BYTES,
    Descriptor,
    ImageIndex,
    ImageManifest,
    Schema1Manifest,
)
from verifier.registry.answers import ManifestFetch
from verifier.registry.client import RegistryClient, RequestFailed

MAX_INDEX_DEPTH = 8


class BlobProbe(StrEnum):
    """How a blob is proved servable (without `--deep`).

    `range`: one ranged GET of the last byte. Its status, `Content-Range` total, the byte's
    arrival and `Docker-Content-Digest` answer everything a HEAD does, so it catches every
    defect class HEAD + range does, for one request instead of two (docs/performance.md).
    `head+range`: HEAD first, then the ranged GET, as the first versions did.
    """

    RANGE = "range"
    HEAD_RANGE = "head+range"


@dataclass(frozen=True)
class WalkOptions:
    """What to check beyond the defaults."""

    deep: bool = False
    blob_probe: BlobProbe = BlobProbe.RANGE


@dataclass(frozen=True)
class TagResult:
    """The outcome of walking one tag or digest: the digest it resolved to and the findings."""

    digest: str | None
    findings: list[Finding]


def _short(digest: str) -> str:
    return digest[:19]


class Walker:
    """Verifies references against one registry, sharing work across the whole run."""

    def __init__(self, client: RegistryClient, options: WalkOptions | None = None,
                 cache: VerifiedManifestCache | None = None, *,
                 max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES) -> None:
        self.client = client
        self.options = options or WalkOptions()
        self.cache = cache
        #: The client's manifest size cap, named in the finding for a manifest over it.
        self.max_manifest_bytes = max_manifest_bytes
        self.counters: Counter[str] = Counter()
        self._blobs: dict[tuple[str, str], asyncio.Task[list[Finding]]] = {}
        self._manifests: dict[tuple[str, str], asyncio.Task[list[Finding]]] = {}

    def forget(self, repository: str) -> None:
        """Drop the memoised verdicts of a finished repository (a scan's memory stays bounded)."""
        for memo in (self._blobs, self._manifests):
            for key in [k for k in memo if k[0] == repository]:
                del memo[key]

    async def _guard(self, ctx: Context, what: str, digest: str | None,
                     run: Callable[[], Awaitable[list[Finding]]]) -> list[Finding]:
        """Turn a request that kept failing into a `request_failed` finding, never a defect."""
        try:
            return await run()
        except RequestFailed as exc:
            return [finding(ctx, Kind.REQUEST_FAILED, f"{what}: {exc}", digest=digest,
                            http_status=exc.status)]

    async def verify(self, repository: str, ref: str) -> TagResult:
        """Resolve a tag or digest and walk everything below it."""
        ctx = Context(repository, ref, chain=(f"{'tag' if ':' not in ref else 'digest'} {ref}",))
        requested = ref if ":" in ref else None
        resolved: list[str | None] = [requested]

        async def run() -> list[Finding]:
            self.counters["manifests"] += 1
            fetch, cached = await self._fetch_manifest(repository, ref, requested)
            found, manifest, digest = check_manifest(
                ctx, fetch, requested_digest=requested, expected=None,
                max_bytes=self.max_manifest_bytes,
            )
            if not cached:
                self._remember(fetch, manifest, found)
            resolved[0] = digest
            if manifest is None or digest is None:
                return found
            return found + await self._subtree(ctx, repository, digest, manifest, ())

        found = await self._guard(ctx, "manifest GET", requested, run)
        return TagResult(resolved[0], found)

    async def _fetch_manifest(self, repository: str, ref: str,
                              digest: str | None) -> tuple[ManifestFetch, bool]:
        """GET a manifest, or, when `--cache-dir` holds it, HEAD it and use the cached body.

        The HEAD is not optional: the body never changes under its digest, but the manifest
        can vanish from the repository (a removed revision link, GC's deleted index children),
        and only asking the registry tells. Anything but 200 with the expected digest and
        length falls back to a GET, so the findings are exactly those of a run without cache.
        Returns the answer and whether it came from the cache.
        """
        cached = self.cache.get(digest) if self.cache is not None and digest else None
        if cached is not None and digest is not None:
            head = await self.client.head_manifest(repository, digest)
            if head.status == 200 and head.digest_header in (None, digest) and \
                    head.content_length in (None, len(cached.body)):
                self.counters["manifests_cached"] += 1
                return ManifestFetch(200, cached.body, cached.media_type or head.content_type,
                                     digest, len(cached.body)), True
        return await self.client.get_manifest(repository, ref), False

    def _remember(self, fetch: ManifestFetch, manifest: object, found: list[Finding]) -> None:
        """Keep a fetched manifest that parsed and matched its digests for the next run."""
        if self.cache is not None and manifest is not None and fetch.body and not any(
                f.kind in (Kind.DIGEST_MISMATCH, Kind.MANIFEST_INVALID) for f in found):
            self.cache.put(fetch.body, fetch.content_type)

    async def _subtree(self, ctx: Context, repository: str, digest: str,
                       manifest: ImageIndex | ImageManifest | Schema1Manifest,
                       ancestors: tuple[str, ...]) -> list[Finding]:
        """Walk below an already-fetched manifest once per (repository, digest)."""
        if digest in ancestors:
            # Only a registry serving bodies that do not match their digests can make a cycle;
            # waiting on our own memo entry would hang, so report it instead.
            return [finding(ctx, Kind.MANIFEST_INVALID, "index refers back to itself (cycle)",
                            digest=digest)]
        ancestors = (*ancestors, digest)
        key = (repository, digest)
        task = self._manifests.get(key)
        if task is None:
            base = Context(repository, ctx.reference)
            task = asyncio.ensure_future(self._walk_body(base, repository, manifest, ancestors))
            self._manifests[key] = task
        return relabel_extending_chain(await task, ctx)

    async def _walk_body(self, ctx: Context, repository: str,
                         manifest: ImageIndex | ImageManifest | Schema1Manifest,
                         ancestors: tuple[str, ...]) -> list[Finding]:
        if isinstance(manifest, Schema1Manifest):
            return [finding(ctx, Kind.SCHEMA1_UNVERIFIED,
                            "schema1 manifest: deprecated, its blobs are not verified",
                            severity=Severity.WARNING, media_type=manifest.media_type)]
        if isinstance(manifest, ImageIndex):
            return await self.walk_index(ctx, repository, manifest, ancestors)
        return await self.walk_image(ctx, repository, manifest)

    async def walk_index(self, ctx: Context, repository: str, index: ImageIndex,
                         ancestors: tuple[str, ...]) -> list[Finding]:
        """Walk every child of an index, attestation manifests and nested indexes included."""
        if len(ancestors) > MAX_INDEX_DEPTH:
            return [finding(ctx, Kind.MANIFEST_INVALID,
                            f"indexes nested deeper than {MAX_INDEX_DEPTH} levels (a cycle?)")]
        results = await asyncio.gather(
            *(self._walk_child(ctx, repository, child, ancestors) for child in index.manifests)
        )
        return [f for found in results for f in found]

    async def _walk_child(self, ctx: Context, repository: str, child: Descriptor,
                          ancestors: tuple[str, ...]) -> list[Finding]:
        platform = child.platform
        if child.is_attestation:
            subject = child.annotations.get("vnd.docker.reference.digest", "?")
            platform = f"attestation for {_short(subject)}"
        cctx = ctx.child(f"{platform or 'child'} {_short(child.digest)}", platform)

        async def run() -> list[Finding]:
            self.counters["manifests"] += 1
            fetch, cached = await self._fetch_manifest(repository, child.digest, child.digest)
            found, manifest, _ = check_manifest(
                cctx, fetch, requested_digest=child.digest, expected=child,
                max_bytes=self.max_manifest_bytes,
            )
            if not cached:
                self._remember(fetch, manifest, found)
            if manifest is None:
                return found
            return found + await self._subtree(cctx, repository, child.digest, manifest,
                                               ancestors)

        return await self._guard(cctx, "manifest GET", child.digest, run)

    async def walk_image(self, ctx: Context, repository: str,
                         manifest: ImageManifest) -> list[Finding]:
        """Check the config and every layer of one image manifest."""
        blobs = [("config", manifest.config)] + [("layer", d) for d in manifest.layers]
        results = await asyncio.gather(
            *(self.check_blob(ctx.child(f"{role} {_short(d.digest)}"), repository, d)
              for role, d in blobs)
        )
        return [f for found in results for f in found]

    async def check_blob(self, ctx: Context, repository: str, desc: Descriptor) -> list[Finding]:
        """Check one blob, once per (repository, digest) for the whole run."""
        if desc.urls:
            return [finding(ctx, Kind.FOREIGN_LAYER,
                            "non-distributable layer with external URLs: not expected in the "
                            "registry, not checked", severity=Severity.INFO,
                            digest=desc.digest, media_type=desc.media_type)]
        key = (repository, desc.digest)
        task = self._blobs.get(key)
        if task is None:
            base = Context(repository, ctx.reference)
            task = asyncio.ensure_future(self._check_blob_once(base, repository, desc))
            self._blobs[key] = task
        return relabel_replacing_chain(await task, ctx)

    async def _check_blob_once(self, ctx: Context, repository: str,
                               desc: Descriptor) -> list[Finding]:
        self.counters["blobs"] += 1

        async def run() -> list[Finding]:
            if self.options.deep:
                stream = await self.client.stream_blob(repository, desc.digest, desc.size)
                return check_blob_stream(ctx, desc, stream)
            if self.options.blob_probe is BlobProbe.RANGE and desc.size > 0:
                read = await self.client.read_last_byte(repository, desc.digest, desc.size)
                found = check_range_probe(ctx, desc, read)
                if found or read.status != 206 or read.total_size is not None:
                    return found
                # A 206 without a readable Content-Range total proves the blob is at least
                # `size` bytes, not that it is exactly that: ask HEAD for the length.
            head = await self.client.head_blob(repository, desc.digest)
            found = check_blob_head(ctx, desc, head)
            if found or desc.size == 0 or self.options.blob_probe is BlobProbe.RANGE:
                return found
            read = await self.client.read_last_byte(repository, desc.digest, desc.size)
            return check_last_byte(ctx, desc, read)

        return await self._guard(ctx, "blob check", desc.digest, run)


def relabel_extending_chain(found: list[Finding], ctx: Context) -> list[Finding]:
    """Relabel a subtree's findings for the context that reached it, keeping deeper chains.

    Each finding's own chain (the steps below the subtree's root) is put after the context's,
    and a platform found deeper is kept; `checks.relabel_replacing_chain` replaces both.
    """
    out = []
    for f in found:
        chain = list(ctx.chain) + list(f.details.get("chain", []))
        platform = f.platform or ctx.platform
        out.append(relabel_replacing_chain(
            [f], Context(ctx.repository, ctx.reference, platform, tuple(chain)))[0])
    return out
