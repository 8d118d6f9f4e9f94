"""The one HTTP transport: httpx's API over aiohttp's connections (httpx-aiohttp).

aiohttp brings what a scan needs from a client stack: llhttp's HTTP/1.1 parser, connection
pooling with a global limit and idle clean-up, Happy Eyeballs, TLS from the standard library
and forward proxies (plain and CONNECT). `AiohttpTransport` builds on
`httpx_aiohttp.AiohttpTransport` (its connector, limits and TLS set-up) but sends and streams
itself, so that every aiohttp failure becomes the httpx exception the client's retry loop
already understands -- the package maps only some, and lets others (a malformed status line,
a reset) escape as aiohttp errors:

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

Proxies come from the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, as
the standard library reads them), looked up once per origin. aiohttp's own `trust_env` is left
off: it would also read `~/.netrc` and send what it finds there to any host, storage included.
Bodies are never decompressed here (`auto_decompress=False`): verifier/registry/bodies.py decodes
them with a cap on what it holds.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport as _BaseTransport


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
            # still hand over the bytes that did come ("0 bytes received" must be true).
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise transport_error(exc, reading=True) from exc

    async def aclose(self) -> None:
        # An unread or partly read body makes aiohttp close the connection instead of
        # returning it to the pool, so the next request never reads this one's leftovers.
        self._response.release()


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment names for `url`, or None (direct, or excluded by NO_PROXY)."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy:
        return None
    host = url.host if url.port is None else f"{url.host}:{url.port}"
    if urllib.request.proxy_bypass(host) or urllib.request.proxy_bypass(url.host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


class AiohttpTransport(_BaseTransport):
    """`httpx_aiohttp.AiohttpTransport` with complete error mapping, unbuffered bodies and
    proxies from the environment."""

    _timeout_key: tuple[float | None, float | None, float | None] | None = None
    _timeout: aiohttp.ClientTimeout | None = None

    def __init__(self, verify: ssl.SSLContext | bool = True, *,
                 limits: httpx.Limits | None = None, trust_env: bool = True,
                 proxy: httpx.Proxy | None = None) -> None:
        super().__init__(verify=verify, limits=limits or httpx.Limits(), proxy=proxy)
        self._trust_env = trust_env
        self._proxies: dict[tuple[str, str, int | None], str | None] = {}

    def _proxy_for(self, url: httpx.URL) -> tuple[str | None, aiohttp.BasicAuth | None,
                                                  dict[str, str] | None]:
        proxy = self.proxy
        if proxy is not None:
            auth = aiohttp.BasicAuth(*proxy.auth) if proxy.auth else None
            return str(proxy.url), auth, dict(proxy.headers)
        if not self._trust_env:
            return None, None, None
        key = (url.scheme, url.host, url.port)
        if key not in self._proxies:
            self._proxies[key] = environment_proxy(url)
        return self._proxies[key], None, None

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
        session = aiohttp.ClientSession(connector=connector,
                                        cookie_jar=aiohttp.DummyCookieJar(),
                                        auto_decompress=False)
        # aiohttp resends an idempotent request once when the connection drops before an
        # answer, on a fresh connection as on a reused one. The client's retry loop already
        # retries such failures with backoff, and `--retries N` must mean N+1 requests reach
        # a failing server, not up to twice that. The switch is the one aiohttp's own test
        # client turns off (aiohttp.test_utils); no public option exists in 3.x.
        session._retry_connection = False
        return session

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
        proxy, proxy_auth, proxy_headers = self._proxy_for(request.url)
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
                proxy=proxy,
                proxy_auth=proxy_auth,
                proxy_headers=proxy_headers,
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
