"""httpx's API over aiohttp's connections: the registry, not the client, must be the bottleneck.

On a scan, httpx's own async transport (httpcore on anyio) costs two to three times the CPU per
request of aiohttp and capped the client at one core well below what distribution serves
(issue 7). `AiohttpClient` is an `httpx.AsyncClient` whose transports -- direct, and one per
proxy taken from the environment -- are `AiohttpTransport`: everything above the transport
(auth flow, redirects and their Authorization rules, timeouts, limits, the TLS context) stays
httpx's.

The transport builds on `httpx_aiohttp.AiohttpTransport` (its connector, limits and TLS
set-up) but sends and streams itself, so that every aiohttp failure becomes the httpx
exception the client's retry loop already understands -- the package maps only some, and
lets others (a malformed status line, a reset) escape as aiohttp errors:

=====================================  ===========================  ========================
aiohttp                                httpx                        client.py reads it as
=====================================  ===========================  ========================
ClientPayloadError (body cut short)    ReadError                    truncated body, judged
ServerDisconnectedError                RemoteProtocolError          truncated if mid-body
connection reset (ClientOSError)       ReadError mid-body, else     truncated if mid-body,
                                       ConnectError                 else retry
ClientConnectorError (incl. TLS)       ConnectError (TLS cause)     retry; TLS -> unreachable
ServerTimeoutError, TimeoutError       ReadTimeout / ConnectTimeout retry
ClientResponseError (bad status line)  RemoteProtocolError          retry
InvalidURL, non-HTTP URL               UnsupportedProtocol          failed request
=====================================  ===========================  ========================
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport as _BaseTransport

_DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
#: httpx's (private) `CertTypes`, spelled out.
CertTypes = str | tuple[str, str] | tuple[str, str, str]


def transport_error(exc: BaseException, *, reading: bool = False) -> httpx.TransportError:
    """The httpx exception for an aiohttp (or socket) failure; `reading`: after the headers."""
    message = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.ReadError(message)
    if isinstance(exc, aiohttp.ClientHttpProxyError | aiohttp.ClientProxyConnectionError):
        return httpx.ProxyError(message)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, TimeoutError):  # ServerTimeoutError and SocketTimeoutError too
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        # The ssl.SSLError stays reachable through __cause__: the client maps it to
        # "TLS verification failed" (RegistryUnreachable), never to a retry.
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(message)
    return httpx.ReadError(message) if reading else httpx.ConnectError(message)


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body as httpx streams it: chunks as they arrive, errors mapped."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            # iter_any: whatever the socket delivered, no re-chunking -- a body cut short must
            # still hand over the bytes that did come (issue 2: "0 bytes received").
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise transport_error(exc, reading=True) from exc

    async def aclose(self) -> None:
        # An unread or partly read body makes aiohttp close the connection instead of
        # returning it to the pool, so the next request never reads this one's leftovers.
        self._response.release()


class AiohttpTransport(_BaseTransport):
    """`httpx_aiohttp.AiohttpTransport` with complete error mapping and unbuffered bodies."""

    _timeout_key: tuple[float | None, float | None, float | None] | None = None
    _timeout: aiohttp.ClientTimeout | None = None

    def get_client(self) -> aiohttp.ClientSession:
        """The aiohttp session: the package's connector (limits, TLS), no cookie jar.

        Registries do not use cookies (Docker's and containerd's clients keep none); aiohttp's
        jar would be parsed on every answer for nothing.
        """
        limits: httpx.Limits = self.limits
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0,  # 0: aiohttp's "no limit", as httpx's None
            keepalive_timeout=limits.keepalive_expiry,
            ssl=self.ssl_context,
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     auto_decompress=False)

    def _client_timeout(self, timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
        # Every request of a client carries the same httpx timeouts: build the aiohttp
        # object once, not per request.
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        if key != self._timeout_key or self._timeout is None:
            self._timeout_key = key
            self._timeout = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1],
                                                  connect=key[2])
        return self._timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request over aiohttp; redirects and auth stay with httpx above us."""
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        # Redirected requests carry the original's (empty or in-memory) stream unread; reading
        # it is cheap, and the client never sends a body that does not fit in memory.
        data: bytes | None = await request.aread() or None
        proxy = self.proxy
        try:
            response = await self.client.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                timeout=self._client_timeout(request.extensions.get("timeout", {})),
                server_hostname=request.extensions.get("sni_hostname"),
                proxy=str(proxy.url) if proxy else None,
                proxy_auth=aiohttp.BasicAuth(*proxy.auth) if proxy and proxy.auth else None,
                proxy_headers=proxy.headers if proxy else None,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise transport_error(exc) from exc
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response),
            request=request,
            extensions=extensions,
        )


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing: parsing `Set-Cookie` cost ~15 µs a response, for no use."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Ignore the response's cookies."""


class AiohttpClient(httpx.AsyncClient):
    """An `httpx.AsyncClient` whose connections (direct and through env proxies) are aiohttp's.

    httpx builds a transport per proxy from the environment only when no `transport=` is
    given; these two hooks are where it does so (the same hooks `httpx_aiohttp` overrides).
    Cookies are not kept, as by the Docker and containerd clients.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The public setter would copy into a plain `Cookies`; the attribute is httpx's own.
        self._cookies = _NoCookies()

    def _init_transport(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = _DEFAULT_LIMITS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> httpx.AsyncBaseTransport:
        if transport is not None:
            return transport
        built: httpx.AsyncBaseTransport = AiohttpTransport(
            verify=verify, cert=cert, trust_env=trust_env, limits=limits)
        return built

    def _init_proxy_transport(
        self,
        proxy: httpx.Proxy,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = _DEFAULT_LIMITS,
    ) -> httpx.AsyncBaseTransport:
        built: httpx.AsyncBaseTransport = AiohttpTransport(
            verify=verify, cert=cert, trust_env=trust_env, limits=limits, proxy=proxy)
        return built
