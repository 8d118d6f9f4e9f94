"""RegistryClient: the one place that talks HTTP to a registry (Distribution v2 / OCI API).

Every request goes through `_exchange`: bounded concurrency, optional rate limit, retries with
backoff for what is temporary (connection errors, timeouts, 408/429/502/503/504, bodies cut short)
and never for a definite answer. Results are plain records; judging them is `checks.py`'s job.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import random
import re
import ssl
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, RetryError, retry_if_exception_type

from verifier.auth import Credentials, RegistryAuth, TokenServiceUnavailable
from verifier.errors import IncompleteError, RegistryUnreachable, UsageError
from verifier.h1 import LeanClient
from verifier.manifest import ACCEPT, DEFAULT_MAX_MANIFEST_BYTES

RETRYABLE_STATUS = frozenset({408, 429, 502, 503, 504})


#: Paths of only these characters need no quoting; every registry path built from a parsed
#: reference (repository names, tags, digests) is one.
_PLAIN_PATH = re.compile(r"/v2/[A-Za-z0-9._/:+-]*")


def plain_url(base: httpx.URL, path: str) -> httpx.URL | None:
    """`base` with a plain `path`, built without re-parsing; None when `path` is not plain.

    httpx validates every character of a URL string and re-parses the host on each request
    (~25 µs, issue 7); a plain path has nothing to validate, quote or normalise. Where httpx's
    URL internals are not what this expects, `_fast_urls_work` turns the shortcut off.
    """
    if not _FAST_URLS or not _PLAIN_PATH.fullmatch(path) or "/." in path:
        return None
    return _with_path(base, path)


def _with_path(base: httpx.URL, path: str) -> httpx.URL:
    url = httpx.URL.__new__(httpx.URL)
    url._uri_reference = base._uri_reference._replace(path=path, query=None, fragment=None)
    return url


def _fast_urls_work() -> bool:
    base = httpx.URL("https://registry.example:5000")
    path = "/v2/a/b-c_d.e/blobs/sha256:" + "0" * 64
    try:
        url = _with_path(base, path)
        return url == httpx.URL(str(base) + path) and url.raw_path == path.encode()
    except (AttributeError, TypeError, ValueError):
        return False


_FAST_URLS = _fast_urls_work()

#: A full blob read (`--deep`) may take `--timeout` plus one second per this many bytes; a
#: server that trickles bytes slower than that is given up on (and retried) rather than waited on
#: forever.
STREAM_MIN_RATE = 64 * 1024
T = TypeVar("T")


class RequestFailed(IncompleteError):
    """A request that kept failing transiently until the retries or the deadline ran out."""

    def __init__(self, message: str, *, method: str, url: str, status: int | None) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.status = status


@dataclass(frozen=True)
class ClientOptions:
    """How to reach the registry and how hard to try."""

    plain_http: bool = False
    insecure: bool = False
    ca_cert: Path | None = None
    concurrency: int = 8
    timeout: float = 30.0
    retries: int = 4
    deadline: float | None = None
    max_rps: float | None = None
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES
    backoff_base: float = 0.5
    backoff_max: float = 20.0


@dataclass(frozen=True)
class ManifestFetch:
    """What a manifest GET answered; `body` is empty when `too_large`."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    digest_header: str | None = None
    content_length: int | None = None
    too_large: bool = False
    error_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BlobHead:
    """What a blob HEAD answered."""

    status: int
    content_length: int | None = None
    digest_header: str | None = None


@dataclass(frozen=True)
class RangeRead:
    """What a ranged GET of a blob's last byte answered, and how many bytes really came."""

    status: int
    received: int = 0
    declared_length: int | None = None
    total_size: int | None = None
    truncated: bool = False
    #: distribution sends Docker-Content-Digest on blob GETs too, so one ranged GET answers
    #: everything a HEAD does (issue 7).
    digest_header: str | None = None


@dataclass(frozen=True)
class BlobStream:
    """A full streamed read of a blob: status, bytes that came, their sha256."""

    status: int
    size: int = 0
    digest: str | None = None
    declared_length: int | None = None
    truncated: bool = False


@dataclass(frozen=True)
class JsonPage:
    """A JSON API page (catalog, tags) with its `Link` header."""

    status: int
    data: Any = None
    link: str | None = None
    error: str | None = None


@dataclass
class _Attempt:
    retry_after: float | None = None
    last_status: int | None = None
    last_error: str | None = None


@dataclass
class _RateLimiter:
    rate: float
    _next: float = field(default=0.0)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + 1.0 / self.rate


def _retryable_of(state: RetryCallState | Future[Any]) -> _Retryable:
    """The `_Retryable` a failed attempt raised (the only exception tenacity retries)."""
    outcome = state.outcome if isinstance(state, RetryCallState) else state
    assert outcome is not None
    failed = outcome.exception()
    assert isinstance(failed, _Retryable)
    return failed


class _Retryable(Exception):
    """Internal: this attempt failed in a way worth another try."""

    def __init__(self, reason: str, *, status: int | None = None,
                 retry_after: float | None = None, result: object = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.result = result


def _is_decimal(text: str) -> bool:
    # str.isdigit() also accepts "²" and other Unicode digits that int() refuses: a header
    # decoded as latin-1 must not crash the client.
    return text.isascii() and text.isdigit()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if _is_decimal(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _printable(text: str, limit: int = 64) -> str:
    # Registry-supplied text ends up in messages: no terminal escapes, no XML-illegal bytes.
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in text[:limit])


def _error_codes(body: bytes) -> tuple[str, ...]:
    import json

    try:
        data = json.loads(body)
        return tuple(_printable(str(e.get("code")))
                     for e in data.get("errors", []) if isinstance(e, dict))
    except (ValueError, AttributeError, TypeError, RecursionError):
        return ()


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None or not _is_decimal(value.strip()):
        return None
    return int(value)


def _content_range_total(value: str | None) -> int | None:
    # "bytes 5-5/6"
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if _is_decimal(total) else None


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _ssl_context(options: ClientOptions) -> ssl.SSLContext | bool:
    if options.insecure:
        return False
    try:
        return ssl.create_default_context(
            cafile=str(options.ca_cert) if options.ca_cert else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load CA certificate {options.ca_cert}: {exc}") from None


def _respx_active() -> bool:
    """True while a respx router is started (tests only; respx is never imported here).

    respx patches httpcore's connection pool, below httpx's own transport; requests sent
    through `LeanClient`'s transports would bypass its mocks and reach the network.
    """
    mocks = sys.modules.get("respx.mocks")
    if mocks is None:
        return False
    return any(mocker.routers for mocker in mocks.Mocker.registry.values())


def http_client_class(transport: httpx.AsyncBaseTransport | None) -> type[httpx.AsyncClient]:
    """The httpx client class to build: httpx's API over lean connection handling.

    httpx's own async transport (httpcore) costs about three times the CPU per request of
    the minimum on this workload and made the client, not the registry, the bottleneck of a
    scan (issue 7). `LeanClient` keeps every httpx behaviour we rely on -- auth flow, redirects
    (Authorization dropped across origins), timeouts, limits, TLS context, proxies from the
    environment -- and only swaps the transport (verifier/transport.py, verifier/h1.py). An
    injected transport (tests) is used as is; under respx the stock transport keeps its mocks
    in the path.
    """
    if transport is not None or _respx_active():
        return httpx.AsyncClient
    return LeanClient


class RegistryClient:
    """Async client for one registry host; `async with` it, then call the typed methods."""

    def __init__(
        self,
        host: str,
        options: ClientOptions | None = None,
        credentials: Credentials | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.host = host
        self.options = options or ClientOptions()
        scheme = "http" if self.options.plain_http else "https"
        self.base_url = f"{scheme}://{host}"
        self._base = httpx.URL(self.base_url)
        verify = _ssl_context(self.options)
        timeout = httpx.Timeout(self.options.timeout)
        limits = httpx.Limits(
            max_connections=self.options.concurrency,
            max_keepalive_connections=self.options.concurrency,
        )
        client_class = http_client_class(transport)
        self._token_client = client_class(
            verify=verify, timeout=timeout, transport=transport, follow_redirects=True
        )
        self.auth = RegistryAuth(credentials, self._token_client)
        self._http = client_class(
            base_url=self.base_url,
            verify=verify,
            timeout=timeout,
            limits=limits,
            transport=transport,
            auth=self.auth,
            # Blob GETs are often answered 307 to object storage; httpx drops Authorization
            # when a redirect leaves the origin.
            follow_redirects=True,
            # Identity only: digests and sizes are of the bytes as stored, and a compressed
            # answer's Content-Length (and raw blob stream) would be of something else.
            headers={"User-Agent": "regverify/0.1", "Accept-Encoding": "identity"},
        )
        self._slots = asyncio.Semaphore(self.options.concurrency)
        self._limiter = _RateLimiter(self.options.max_rps) if self.options.max_rps else None
        self._started = time.monotonic()
        self.requests_by_code: Counter[str] = Counter()
        #: Attempts by what they asked for (manifest, blob, tags, catalog, other): the
        #: "requests per blob / per manifest" of issue 7 come from these.
        self.requests_by_kind: Counter[str] = Counter()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close connections."""
        await self._http.aclose()
        await self._token_client.aclose()

    @property
    def request_count(self) -> int:
        """Requests sent so far, retries and token requests included."""
        return sum(self.requests_by_code.values())

    # -- the one exchange loop -------------------------------------------------------------

    def _backoff(self, attempt: int, retry_after: float | None, *, quick: bool = False) -> float:
        if retry_after is not None:
            return min(retry_after, self.options.backoff_max * 3)
        # A body cut short after good headers is what a warm-cache missing blob looks like on
        # every attempt: retry it as often (a flaky proxy must not make a false verdict) but
        # without the long waits meant for an overloaded registry.
        base = self.options.backoff_base / 5 if quick else self.options.backoff_base
        ceiling = min(self.options.backoff_max, base * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)

    def _deadline_left(self) -> float | None:
        if self.options.deadline is None:
            return None
        return self.options.deadline - (time.monotonic() - self._started)

    async def _exchange(
        self,
        method: str,
        url: str,
        handle: Callable[[httpx.Response], Awaitable[T]],
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        budget: float | None = None,
    ) -> T:
        """Send one logical request with retries; `handle` reads the streamed response.

        Each attempt, headers and body together, must finish within `budget` seconds and within
        what is left of the deadline: httpx's timeout is per read, so a server trickling one
        byte at a time would otherwise hold a request open forever (issue 6, hostile input).
        """
        attempts = self.options.retries + 1
        left = self._deadline_left()
        if left is not None and left <= 0:
            raise RequestFailed(
                f"{method} {url} not sent: deadline exceeded before the request was sent",
                method=method, url=url, status=None,
            )

        try:
            # Most requests succeed at once: send the first attempt before building the retry
            # machinery (~25 µs a request, issue 7). A failure is replayed as tenacity's first
            # attempt, so waits, stops and attempt numbers are exactly as if it had sent it.
            return await self._attempt_bounded(method, url, handle, headers, params, budget)
        except _Retryable as exc:
            replay: list[_Retryable] = [exc]

        def wait(state: RetryCallState) -> float:
            failed = _retryable_of(state)
            # A body cut short after good headers is the registry's steady answer for a
            # warm-cache missing blob: retry it as often, without the long waits.
            return self._backoff(state.attempt_number, failed.retry_after,
                                 quick=failed.result is not None)

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= attempts:
                return True
            left = self._deadline_left()
            return left is not None and (state.upcoming_sleep or 0.0) >= left

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            wait=wait,
            stop=stop,
            # Looked up at call time, so tests can record the waits instead of sleeping them.
            sleep=lambda delay: asyncio.sleep(delay),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if replay:
                        raise replay.pop()
                    return await self._attempt_bounded(method, url, handle, headers, params,
                                                       budget)
        except RetryError as exc:
            last = _retryable_of(exc.last_attempt)
            tried = exc.last_attempt.attempt_number
        else:  # pragma: no cover - the loop above always returns or raises
            raise AssertionError("retry loop ended without an outcome")
        if last.result is not None:
            # A persistent answer that looked transient (a body cut short every time): that is
            # the registry's real behaviour, so hand it back for the checks to judge.
            return last.result  # type: ignore[return-value]
        raise RequestFailed(
            f"{method} {url} failed after {tried} attempts: "
            f"{last.reason}",
            method=method,
            url=url,
            status=last.status,
        )

    async def _attempt_bounded(
        self,
        method: str,
        url: str,
        handle: Callable[[httpx.Response], Awaitable[T]],
        headers: dict[str, str] | None,
        params: dict[str, str] | None,
        budget: float | None,
    ) -> T:
        """One attempt, headers and body, within the budget and what is left of the deadline."""
        async with self._slots:
            if self._limiter:
                await self._limiter.wait()
            limit = _smallest(budget, self._deadline_left())
            try:
                async with asyncio.timeout(limit):
                    return await self._attempt(method, url, handle, headers, params)
            except TimeoutError:
                raise _Retryable(
                    f"no complete answer within {limit:.1f}s" if limit is not None
                    else "timed out"
                ) from None

    async def _attempt(
        self,
        method: str,
        url: str,
        handle: Callable[[httpx.Response], Awaitable[T]],
        headers: dict[str, str] | None,
        params: dict[str, str] | None,
    ) -> T:
        self.requests_by_kind[_request_kind(url)] += 1
        try:
            # An absolute URL: httpx parses it once, where a path is parsed, merged with the
            # base URL and parsed again (~30 µs a request, issue 7); a plain one not at all.
            target: httpx.URL | str = url
            if url.startswith("/"):
                target = plain_url(self._base, url) or self.base_url + url
            request = self._http.build_request(method, target, headers=headers, params=params)
            response = await self._http.send(request, stream=True)
        except httpx.TooManyRedirects:
            # A definite answer (the redirects loop), not a transient one: no retry, and not a
            # verdict on the object either.
            self.requests_by_code["error"] += 1
            raise RequestFailed(f"{method} {url}: too many redirects (a redirect loop?)",
                                method=method, url=url, status=None) from None
        except TokenServiceUnavailable as exc:
            raise _Retryable(exc.message, status=exc.status,
                             retry_after=exc.retry_after) from None
        except httpx.TransportError as exc:
            self.requests_by_code["error"] += 1
            if _is_tls_failure(exc):
                raise RegistryUnreachable(
                    f"TLS verification failed for {self.host} "
                    "(use --ca-cert FILE for a private CA, or --insecure)"
                ) from None
            raise _Retryable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
        try:
            self.requests_by_code[str(response.status_code)] += 1
            if response.status_code in RETRYABLE_STATUS:
                raise _Retryable(
                    f"HTTP {response.status_code}",
                    status=response.status_code,
                    retry_after=parse_retry_after(response.headers.get("retry-after")),
                )
            return await handle(response)
        except (httpx.TransportError, httpx.DecodingError) as exc:
            # The headers came but the body stalled past the read timeout, or cannot be decoded
            # (a `Content-Encoding` that lies): transient as far as we can tell, never a verdict.
            raise _Retryable(f"{type(exc).__name__} while reading the body") from None
        finally:
            await response.aclose()

    # -- typed requests ---------------------------------------------------------------------

    async def ping(self) -> int:
        """GET /v2/: proves the registry answers; maps connection failures to exit 3."""
        async def handle(response: httpx.Response) -> int:
            return response.status_code

        try:
            return await self._exchange("GET", "/v2/", handle, budget=self.options.timeout)
        except RequestFailed as exc:
            raise RegistryUnreachable(f"registry {self.host} unreachable: {exc}") from None

    async def get_manifest(self, repository: str, ref: str) -> ManifestFetch:
        """GET a manifest by tag or digest with the full Accept list, capped in size."""
        cap = self.options.max_manifest_bytes

        async def handle(response: httpx.Response) -> ManifestFetch:
            status = response.status_code
            declared = _int_header(response, "content-length")
            common = {
                "content_type": response.headers.get("content-type"),
                "digest_header": response.headers.get("docker-content-digest"),
                "content_length": declared,
            }
            if status != 200:
                body = await _read_capped(response, 64 * 1024)
                return ManifestFetch(status, error_codes=_error_codes(body), **common)
            if declared is not None and declared > cap:
                return ManifestFetch(status, too_large=True, **common)
            body = await _read_capped(response, cap + 1)
            if len(body) > cap:
                return ManifestFetch(status, too_large=True, **common)
            if declared is not None and len(body) != declared:
                raise _Retryable(f"manifest body cut short ({len(body)} of {declared} bytes)")
            return ManifestFetch(status, body=body, **common)

        return await self._exchange(
            "GET", f"/v2/{repository}/manifests/{ref}", handle, headers={"Accept": ACCEPT},
            budget=self.options.timeout,
        )

    async def head_manifest(self, repository: str, digest: str) -> ManifestFetch:
        """HEAD a manifest by digest: is it still in the repository? (no body; `--cache-dir`)"""
        async def handle(response: httpx.Response) -> ManifestFetch:
            return ManifestFetch(
                response.status_code,
                content_type=response.headers.get("content-type"),
                digest_header=response.headers.get("docker-content-digest"),
                content_length=_int_header(response, "content-length"),
            )

        # The full Accept list matters here as for GET: without the OCI types, distribution
        # answers 404 for OCI content by digest too (REGISTRY-FACTS.md).
        return await self._exchange("HEAD", f"/v2/{repository}/manifests/{digest}", handle,
                                    headers={"Accept": ACCEPT}, budget=self.options.timeout)

    async def head_blob(self, repository: str, digest: str) -> BlobHead:
        """HEAD a blob: status, Content-Length, Docker-Content-Digest."""
        async def handle(response: httpx.Response) -> BlobHead:
            return BlobHead(
                response.status_code,
                _int_header(response, "content-length"),
                response.headers.get("docker-content-digest"),
            )

        return await self._exchange("HEAD", f"/v2/{repository}/blobs/{digest}", handle,
                                    budget=self.options.timeout)

    async def read_last_byte(self, repository: str, digest: str, size: int) -> RangeRead:
        """GET `bytes=size-1-size-1` and count the bytes that really arrive."""
        async def handle(response: httpx.Response) -> RangeRead:
            status = response.status_code
            declared = _int_header(response, "content-length")
            total = _content_range_total(response.headers.get("content-range"))
            digest_header = response.headers.get("docker-content-digest")
            received = 0
            limit = 1 if status == 206 else size
            try:
                async for chunk in _raw_chunks(response):
                    received += len(chunk)
                    if status not in (200, 206) or received > limit:
                        break
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                result = RangeRead(status, received, declared, total, truncated=True,
                                   digest_header=digest_header)
                raise _Retryable(f"body cut short: {type(exc).__name__}", result=result) from None
            return RangeRead(status, received, declared, total, digest_header=digest_header)

        return await self._exchange(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            handle,
            headers={"Range": f"bytes={size - 1}-{size - 1}"},
            budget=self.options.timeout,
        )

    async def stream_blob(self, repository: str, digest: str,
                          expected_size: int | None = None) -> BlobStream:
        """GET a whole blob, hashing it as it streams (never held in memory).

        With `expected_size`, reading stops once the body is longer than that (an endless body
        cannot keep us busy) and the attempt may take `--timeout` plus size / STREAM_MIN_RATE.
        """
        async def handle(response: httpx.Response) -> BlobStream:
            status = response.status_code
            declared = _int_header(response, "content-length")
            if status != 200:
                return BlobStream(status, declared_length=declared)
            hasher = hashlib.sha256()
            size = 0
            try:
                async for chunk in _raw_chunks(response):
                    hasher.update(chunk)
                    size += len(chunk)
                    if expected_size is not None and size > expected_size:
                        break  # already too long: a size mismatch, whatever follows
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                result = BlobStream(status, size, None, declared, truncated=True)
                raise _Retryable(f"body cut short: {type(exc).__name__}", result=result) from None
            return BlobStream(status, size, "sha256:" + hasher.hexdigest(), declared)

        budget = self.options.timeout + (expected_size or 0) / STREAM_MIN_RATE
        return await self._exchange("GET", f"/v2/{repository}/blobs/{digest}", handle,
                                    budget=budget if expected_size is not None else None)

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> JsonPage:
        """GET a JSON API page (catalog, tag list) with its `Link` header."""
        import json

        async def handle(response: httpx.Response) -> JsonPage:
            body = await _read_capped(response, 16 * 1024 * 1024)
            link = response.headers.get("link")
            if response.status_code != 200:
                return JsonPage(response.status_code, link=link, error=",".join(_error_codes(body)))
            try:
                return JsonPage(200, json.loads(body), link)
            except (ValueError, RecursionError):
                return JsonPage(200, None, link, error="response is not JSON")

        return await self._exchange("GET", path, handle, params=params,
                                    budget=self.options.timeout)


def _request_kind(url: str) -> str:
    """What a request path asks for, for the per-kind request counts."""
    if "/blobs/" in url:
        return "blob"
    if "/manifests/" in url:
        return "manifest"
    if url.endswith("/tags/list") or "/tags/list?" in url:
        return "tags"
    if "/_catalog" in url:
        return "catalog"
    return "other"


def _smallest(*limits: float | None) -> float | None:
    """The smallest of the limits that are set (None when none is), never below zero."""
    known = [limit for limit in limits if limit is not None]
    return max(0.0, min(known)) if known else None


async def _raw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as sent (no content decoding), also for responses built in memory by mocks."""
    if response.is_stream_consumed:
        yield response.content
        return
    # No chunk size: a re-chunking buffer would swallow the bytes that did arrive when the
    # connection drops, and a truncated read would then report 0 bytes received.
    async for chunk in response.aiter_raw():
        yield chunk


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    """Read at most `cap` bytes of a streamed body (a hostile server cannot fill our memory)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes(64 * 1024):
            chunks.append(chunk)
            size += len(chunk)
            if size >= cap:
                break
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise _Retryable(f"body cut short: {type(exc).__name__}") from None
    return b"".join(chunks)[:cap]
