"""RegistryClient: the one place that talks HTTP to a registry (Distribution v2 / OCI API).

Every request goes through `_exchange`: bounded concurrency, optional rate limit, and the retry
loop of `retry.py`, which retries what is temporary (connection errors, timeouts,
408/429/502/503/504, bodies cut short) and never a definite answer. Results are the plain records
of `answers.py`; judging them is `checks.py`'s job. Paging through listings is `listing.py`'s.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import TypeVar

import httpx

from verifier.errors import RegistryUnreachable, UsageError
from verifier.model.manifest import ACCEPT, DEFAULT_MAX_MANIFEST_BYTES
from verifier.registry.answers import BlobHead, BlobStream, JsonPage, ManifestFetch, RangeRead
from verifier.registry.auth import Credentials, RegistryAuth, TokenServiceUnavailable
from verifier.registry.bodies import (
    SMALL_BODY,
    STEP,
    BodyCutShort,
    BodyDecodingError,
    Decoder,
    content_codings,
    discard,
    raw_chunks,
    read_capped,
)
from verifier.registry.retry import (
    CutShort,
    RequestFailed,
    RetryPolicy,
    Transient,
    is_decimal,
    transient_status,
)

__all__ = ["ClientOptions", "RegistryClient", "RequestFailed", "Transport"]

REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
#: Redirects followed for one request (a blob GET is one hop to object storage, at most two).
MAX_REDIRECTS = 10
#: Largest JSON listing page read (catalog, tags list), after any content decoding.
MAX_JSON_BYTES = 16 * 1024 * 1024


#: A full blob read (`--deep`) may take `--timeout` plus one second per this many bytes; a
#: server that trickles bytes slower than that is given up on (and retried) rather than waited on
#: forever.
STREAM_MIN_RATE = 64 * 1024
T = TypeVar("T")


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
    if value is None or not is_decimal(value.strip()):
        return None
    return int(value)


def _content_range_total(value: str | None) -> int | None:
    # "bytes 5-5/6"
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if is_decimal(total) else None


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The `ssl.SSLError` behind a transport failure, if a TLS failure it was.

    aiohttp wraps OpenSSL's error in its own (itself an `ssl.SSLError`, without OpenSSL's
    `reason`): the innermost one, which says why, is preferred.
    """
    found: list[ssl.SSLError] = []
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:  # chains can loop
        visited.add(id(seen))
        if isinstance(seen, ssl.SSLError):
            found.append(seen)
        # aiohttp's certificate error keeps the ssl one as an attribute.
        inner = getattr(seen, "certificate_error", None)
        if isinstance(inner, ssl.SSLError):
            found.append(inner)
        seen = seen.__cause__ or seen.__context__
    for error in reversed(found):
        if isinstance(getattr(error, "reason", None), str) or isinstance(
                error, ssl.SSLCertVerificationError):
            return error
    return found[0] if found else None


#: OpenSSL's reasons for "the bytes that came back are not TLS at all": what a plain-HTTP
#: server's `HTTP/1.1 400 ...` looks like to a client expecting a TLS record.
_NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE",
                              "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL", "HTTP_REQUEST"})


def tls_failure_message(host: str, error: ssl.SSLError, *, insecure: bool) -> str:
    """One line naming the host whose TLS failed, why, and what to do about it."""
    reason = getattr(error, "reason", None)  # set by OpenSSL, absent on hand-made errors
    if reason in _NOT_TLS_REASONS:
        return (f"TLS handshake with {host} failed: this server speaks plain HTTP: "
                "use --plain-http")
    if isinstance(error, ssl.SSLCertVerificationError):
        why = getattr(error, "verify_message", None) or reason or "certificate not trusted"
        return (f"TLS verification failed for {host}: {why} "
                "(use --ca-cert FILE for a private CA, or --insecure)")
    why = reason or type(error).__name__
    advice = "" if insecure else " (--ca-cert FILE trusts a private CA)"
    return f"TLS handshake with {host} failed: {why}{advice}"


def _ssl_context(options: ClientOptions) -> ssl.SSLContext:
    """The TLS context: the system's trust store, plus `--ca-cert`'s CAs (as curl and skopeo
    add theirs); none of it with `--insecure`."""
    if options.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    # create_default_context() loads the system store (OpenSSL's default paths, which honour
    # SSL_CERT_FILE and SSL_CERT_DIR); --ca-cert is loaded on top, never instead.
    context = ssl.create_default_context()
    if options.ca_cert is not None:
        try:
            context.load_verify_locations(cafile=str(options.ca_cert))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load CA certificate {options.ca_cert}: {exc}") from None
    return context


Origin = tuple[str, str, int | None]
#: What a caller may hand the client to carry its requests instead of aiohttp (tests inject an
#: in-memory one); named here so that callers need not import httpx.
Transport = httpx.AsyncBaseTransport


def origin_of(url: httpx.URL) -> Origin:
    """(scheme, host, port) -- what decides where credentials may go."""
    return (url.scheme, url.host, url.port)


def _netloc(url: httpx.URL) -> str:
    return url.host if url.port is None else f"{url.host}:{url.port}"


class _HopFailed(Exception):
    """Internal: one exchange of a request failed at the transport level."""

    def __init__(self, url: httpx.URL, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.url = url
        self.error = error


def _no_cookies() -> CookieJar:
    """A cookie jar that accepts none: registries use no cookies (Docker's and containerd's
    clients keep none), and nothing set by one host is ever sent to another."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


class RegistryClient:
    """Async client for one registry host; `async with` it, then call the typed methods.

    Redirects and authentication are handled here, hop by hop, rather than by httpx's client:
    credentials (Basic, tokens) go only to the registry's own origin, and only the registry's
    own challenges are answered; a redirect to another origin (object storage) is followed
    with no Authorization at all. Every exchange is counted, redirect hops included, and no
    body is read whole unless a capped reader asked for it.
    """

    def __init__(
        self,
        host: str,
        options: ClientOptions | None = None,
        credentials: Credentials | None = None,
        *,
        transport: Transport | None = None,
    ) -> None:
        self.host = host
        self.options = options or ClientOptions()
        scheme = "http" if self.options.plain_http else "https"
        self.base_url = f"{scheme}://{host}"
        self._base = httpx.URL(self.base_url)
        self._origin = origin_of(self._base)
        context = _ssl_context(self.options)
        timeout = httpx.Timeout(self.options.timeout)
        limits = httpx.Limits(
            max_connections=self.options.concurrency,
            max_keepalive_connections=self.options.concurrency,
        )
        # aiohttp is imported when a client is built, not when the CLI starts: `fs` commands
        # and `--help` never need it.
        from verifier.registry.transport import AiohttpTransport

        self.requests_by_code: Counter[str] = Counter()
        #: Attempts by what they asked for (manifest, blob, tags, catalog, other).
        self.requests_by_kind: Counter[str] = Counter()
        # Token requests get their own connections: a token fetched while every connection
        # of the main pool is held by a request waiting for that token would never get one.
        self._token_client = httpx.AsyncClient(
            transport=transport or AiohttpTransport(context), timeout=timeout,
            cookies=_no_cookies(),
            headers={"User-Agent": "regverify/0.1", "Accept-Encoding": "identity"},
        )
        self.auth = RegistryAuth(credentials, self._token_client, origin=self._base,
                                 exchanges=self.requests_by_code)
        self._http = httpx.AsyncClient(
            transport=transport or AiohttpTransport(context, limits=limits),
            timeout=timeout,
            cookies=_no_cookies(),
            # Identity only: digests and sizes are of the bytes as stored. A server that
            # compresses anyway is decoded with a cap (verifier/registry/bodies.py).
            headers={"User-Agent": "regverify/0.1", "Accept-Encoding": "identity"},
        )
        self._slots = asyncio.Semaphore(self.options.concurrency)
        self._limiter = _RateLimiter(self.options.max_rps) if self.options.max_rps else None
        self.retry = RetryPolicy(retries=self.options.retries,
                                 backoff_base=self.options.backoff_base,
                                 backoff_max=self.options.backoff_max,
                                 deadline=self.options.deadline)

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

    async def _exchange(
        self,
        method: str,
        url: str,
        handle: Callable[[httpx.Response], Awaitable[T | CutShort[T]]],
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        budget: float | None = None,
    ) -> T:
        """Send one logical request with retries; `handle` reads the streamed response.

        Each attempt, headers and body together, must finish within `budget` seconds and within
        what is left of the deadline: httpx's timeout is per read, so a server trickling one
        byte at a time would otherwise hold a request open forever.
        """
        async def attempt() -> T | CutShort[T]:
            return await self._attempt_bounded(method, url, handle, headers, params, budget)

        return await self.retry.run(attempt, method=method, url=url)

    async def _attempt_bounded(
        self,
        method: str,
        url: str,
        handle: Callable[[httpx.Response], Awaitable[T | CutShort[T]]],
        headers: dict[str, str] | None,
        params: dict[str, str] | None,
        budget: float | None,
    ) -> T | CutShort[T]:
        """One attempt, headers and body, within the budget and what is left of the deadline."""
        async with self._slots:
            if self._limiter:
                await self._limiter.wait()
            limit = _smallest(budget, self.retry.deadline_left())
            try:
                async with asyncio.timeout(limit):
                    return await self._attempt(method, url, handle, headers, params)
            except TimeoutError:
                raise Transient(
                    f"no complete answer within {limit:.1f}s" if limit is not None
                    else "timed out"
                ) from None

    async def _attempt(
        self,
        method: str,
        url: str,
        handle: Callable[[httpx.Response], Awaitable[T | CutShort[T]]],
        headers: dict[str, str] | None,
        params: dict[str, str] | None,
    ) -> T | CutShort[T]:
        self.requests_by_kind[_request_kind(url)] += 1
        try:
            response = await self._send(method, url, headers, params)
        except TokenServiceUnavailable as exc:
            raise Transient(exc.message, status=exc.status,
                            retry_after=exc.retry_after) from None
        except _HopFailed as failed:
            self.requests_by_code["error"] += 1
            tls = _ssl_error(failed.error)
            if tls is not None:
                raise RegistryUnreachable(tls_failure_message(
                    _netloc(failed.url), tls, insecure=self.options.insecure)) from tls
            if isinstance(failed.error, httpx.UnsupportedProtocol):
                raise RequestFailed(f"{method} {url}: {failed.error}", method=method, url=url,
                                    status=None) from None
            error = failed.error
            raise Transient(f"{type(error).__name__}: {error}".rstrip(": ")) from None
        try:
            transient = transient_status(response.status_code,
                                         response.headers.get("retry-after"))
            if transient is not None:
                raise transient
            return await handle(response)
        except (httpx.TransportError, BodyDecodingError) as exc:
            # The headers came but the body stalled past the read timeout, or cannot be decoded
            # (a `Content-Encoding` that lies): transient as far as we can tell, never a verdict.
            raise Transient(f"{type(exc).__name__} while reading the body") from None
        except BodyCutShort as exc:
            raise Transient(exc.reason) from None
        finally:
            await response.aclose()

    async def _send(self, method: str, url: str, headers: dict[str, str] | None,
                    params: dict[str, str] | None) -> httpx.Response:
        """Send one request, following redirects hop by hop; the final response, streamed.

        Each hop is one counted exchange. The registry's own origin gets the auth flow
        (credentials, challenges answered); any other origin gets the request with our own
        headers only, and its 401 or 403 is the answer, never a challenge to meet.
        """
        target = httpx.URL(self.base_url + url) if url.startswith("/") else httpx.URL(url)
        request = self._http.build_request(method, target, headers=headers, params=params)
        for _ in range(MAX_REDIRECTS + 1):
            if origin_of(request.url) == self._origin:
                response = await self._send_authenticated(request)
            else:
                response = await self._exchange_once(request)
            location = response.headers.get("location")
            if response.status_code not in REDIRECT_STATUS or location is None:
                return response
            await discard(response)
            try:
                next_url = request.url.join(location.strip())
            except httpx.InvalidURL:
                next_url = None
            if next_url is None or next_url.scheme not in ("http", "https") or not next_url.host:
                raise RequestFailed(
                    f"{method} {url}: redirected to an unusable location "
                    f"{_printable(location, 100)!r}", method=method, url=url, status=None)
            # Built afresh from our own headers: whatever the auth flow added to the last
            # hop (Authorization) is not carried to the next one.
            request = self._http.build_request(method, next_url, headers=headers)
        raise RequestFailed(f"{method} {url}: too many redirects (a redirect loop?)",
                            method=method, url=url, status=None)

    async def _exchange_once(self, request: httpx.Request) -> httpx.Response:
        """One request, one response (streamed), counted; transport failures as _HopFailed."""
        try:
            response = await self._http.send(request, stream=True, follow_redirects=False)
        except httpx.TransportError as exc:
            raise _HopFailed(request.url, exc) from exc
        self.requests_by_code[str(response.status_code)] += 1
        return response

    async def _send_authenticated(self, request: httpx.Request) -> httpx.Response:
        """Drive the registry's auth flow (an `httpx.Auth`): send, answer a challenge, resend."""
        first: httpx.Response | None = None
        if not self.auth.challenged:
            # An open registry (or none of its challenges met yet): the flow would attach
            # nothing, so it is started only if this answer is a challenge.
            first = await self._exchange_once(request)
            if first.status_code != 401:
                return first
        flow = self.auth.async_auth_flow(request)
        try:
            request = await flow.__anext__()
            if first is not None and "Authorization" in request.headers:
                # Another request met the challenge meanwhile: send with what it got.
                await discard(first)
                first = None
            while True:
                if first is not None:
                    response, first = first, None
                else:
                    response = await self._exchange_once(request)
                try:
                    next_request = await flow.asend(response)
                except StopAsyncIteration:
                    return response
                except BaseException:
                    await response.aclose()
                    raise
                await discard(response)  # the challenge's body: a few KiB at most
                request = next_request
        finally:
            await flow.aclose()

    def storage_host(self, response: httpx.Response) -> str | None:
        """host[:port] that answered, when a redirect took the request off the registry."""
        url = response.request.url
        return None if origin_of(url) == self._origin else _netloc(url)

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
        """GET a manifest by tag or digest with the full Accept list, capped in size.

        The cap is on the bytes held after any `Content-Encoding` is decoded; the body (and so
        the digest) is the decoded one, as distribution stores it.
        """
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
                body = await _error_body(response)
                return ManifestFetch(status, error_codes=_error_codes(body), **common)
            if declared is not None and declared > cap + (STEP if content_codings(response)
                                                          else 0):
                return ManifestFetch(status, too_large=True, **common)
            body, received, too_large = await read_capped(response, cap)
            if too_large:
                return ManifestFetch(status, too_large=True, **common)
            # Content-Length counts the bytes as sent (encoded, if they were).
            if declared is not None and received != declared:
                raise Transient(f"manifest body cut short ({received} of {declared} bytes)")
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
        # answers 404 for OCI content by digest too.
        return await self._exchange("HEAD", f"/v2/{repository}/manifests/{digest}", handle,
                                    headers={"Accept": ACCEPT}, budget=self.options.timeout)

    async def head_blob(self, repository: str, digest: str) -> BlobHead:
        """HEAD a blob: status, Content-Length, Docker-Content-Digest."""
        async def handle(response: httpx.Response) -> BlobHead:
            return BlobHead(
                response.status_code,
                _int_header(response, "content-length"),
                response.headers.get("docker-content-digest"),
                storage_host=self.storage_host(response),
            )

        return await self._exchange("HEAD", f"/v2/{repository}/blobs/{digest}", handle,
                                    budget=self.options.timeout)

    async def read_last_byte(self, repository: str, digest: str, size: int) -> RangeRead:
        """GET `bytes=size-1-size-1` and count the bytes that really arrive."""
        async def handle(response: httpx.Response) -> RangeRead | CutShort[RangeRead]:
            status = response.status_code
            declared = _int_header(response, "content-length")
            total = _content_range_total(response.headers.get("content-range"))
            digest_header = response.headers.get("docker-content-digest")
            storage = self.storage_host(response)
            received = 0
            # An error page is not counted, and read only a little of; a 200 (a server that
            # ignores Range) is read up to the blob's size, to see that the bytes come.
            limit = 1 if status == 206 else size if status == 200 else SMALL_BODY
            try:
                async for chunk in raw_chunks(response):
                    received += len(chunk)
                    if received > limit:
                        break
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                return CutShort(f"body cut short: {type(exc).__name__}",
                                RangeRead(status, received, declared, total, truncated=True,
                                          digest_header=digest_header, storage_host=storage))
            if status not in (200, 206):
                received = 0
            return RangeRead(status, received, declared, total, digest_header=digest_header,
                             storage_host=storage)

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
        A `Content-Encoding` the server applied anyway is decoded as it streams: the hash and
        the size are of the blob, not of its transfer encoding.
        """
        async def handle(response: httpx.Response) -> BlobStream | CutShort[BlobStream]:
            status = response.status_code
            declared = _int_header(response, "content-length")
            storage = self.storage_host(response)
            if status != 200:
                # Not read at all: closing the response closes its connection.
                return BlobStream(status, declared_length=declared, storage_host=storage)
            decoder = Decoder(content_codings(response))
            hasher = hashlib.sha256()
            size = 0
            try:
                async for chunk in raw_chunks(response):
                    for piece in decoder.feed(chunk) if not decoder.identity else (chunk,):
                        hasher.update(piece)
                        size += len(piece)
                    if expected_size is not None and size > expected_size:
                        break  # already too long: a size mismatch, whatever follows
                else:
                    decoder.finish()
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                return CutShort(f"body cut short: {type(exc).__name__}",
                                BlobStream(status, size, None, declared, truncated=True,
                                           storage_host=storage))
            return BlobStream(status, size, "sha256:" + hasher.hexdigest(), declared,
                              storage_host=storage)

        budget = self.options.timeout + (expected_size or 0) / STREAM_MIN_RATE
        return await self._exchange("GET", f"/v2/{repository}/blobs/{digest}", handle,
                                    budget=budget if expected_size is not None else None)

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> JsonPage:
        """GET a JSON API page (catalog, tag list) with its `Link` header, capped in size."""
        import json

        async def handle(response: httpx.Response) -> JsonPage:
            link = response.headers.get("link")
            if response.status_code != 200:
                body = await _error_body(response)
                return JsonPage(response.status_code, link=link, error=",".join(_error_codes(body)))
            body, _, too_large = await read_capped(response, MAX_JSON_BYTES)
            if too_large:
                return JsonPage(200, None, link,
                                error=f"response larger than {MAX_JSON_BYTES} bytes")
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


async def _error_body(response: httpx.Response) -> bytes:
    """The first few KiB of an error answer, decoded: enough for distribution's `errors[]`."""
    try:
        body, _, too_large = await read_capped(response, SMALL_BODY)
    except (BodyCutShort, BodyDecodingError):
        return b""
    return b"" if too_large else body
