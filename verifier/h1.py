"""A lean HTTP/1.1 transport for httpx: a registry scan's many small exchanges, cheaply.

A scan is thousands of requests whose answers fit in one packet (a ranged GET of one byte, a
manifest). Through httpx over aiohttp each cost about twice the CPU of a bare aiohttp loop,
and the client, not the registry, bounded a scan (issue 7). This transport, which alone
costs about what that bare loop does, is what such exchanges need and nothing more:
keep-alive connections on asyncio protocols, a bounded pool, the three ways HTTP/1.1 frames
a body (Content-Length, chunked, until close), TLS from asyncio, and httpx's timeouts and
exceptions. Everything above it -- auth, redirects and
their Authorization rules, headers -- is httpx's. Proxies are not handled here: a client
with a proxy uses the aiohttp transport (verifier/transport.py).

Failures become the httpx exceptions the client's retry loop already reads:

==========================================  =========================
what happened                               httpx exception
==========================================  =========================
connect refused / unreachable / TLS         ConnectError (TLS: cause)
connect or pool wait too long               ConnectTimeout / PoolTimeout
no byte of an answer, connection closed     RemoteProtocolError
malformed status line, headers or chunks    RemoteProtocolError
headers larger than MAX_HEAD                RemoteProtocolError
body cut short (close or reset)             ReadError
no byte within the read timeout             ReadTimeout
==========================================  =========================
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx

#: Largest status line plus headers accepted (aiohttp and Go's net/http allow about as much).
MAX_HEAD = 64 * 1024
#: Largest chunk-size line (with extensions) accepted in a chunked body.
MAX_CHUNK_LINE = 4096
#: Reading pauses while this much of a body is waiting to be consumed.
HIGH_WATER = 256 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
_NO_BODY_STATUS = frozenset({204, 304})
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
#: httpx's (private) `CertTypes`, spelled out.
CertTypes = str | tuple[str, str] | tuple[str, str, str]


class _Connection(asyncio.Protocol):
    """One socket: bytes in a buffer, a future to wake the reader, and how it ended."""

    def __init__(self, key: tuple[str, str, int], live: set[_Connection]) -> None:
        self.key = key
        self._live = live
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.lost = False
        self.error: BaseException | None = None
        self.paused = False
        self.idle_since = 0.0

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, but behaves as one).
        self.transport = cast(asyncio.Transport, transport)
        self._live.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.lost = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        self._live.discard(self)
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- used by the transport --------------------------------------------------------------

    async def more(self, timeout: float | None) -> None:
        """Wait until more bytes arrive or the connection ends; ReadTimeout after `timeout`."""
        if self.lost:
            return
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        # A timer on the future, not asyncio.timeout: this wait happens on every answer.
        timer = loop.call_later(timeout, _expire, waiter, timeout) if timeout is not None else None
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def reusable(self, now: float, expiry: float | None) -> bool:
        """An idle connection that is still open, has nothing unread, and has not expired."""
        return (not self.lost and not self.buffer and self.transport is not None
                and not self.transport.is_closing()
                and (expiry is None or now - self.idle_since < expiry))

    def close(self) -> None:
        """Close the socket (unread bytes and all)."""
        self.lost = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout(f"no data within {timeout}s"))


def _parse_head(head: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, reason and raw headers of a response head (without its final CRLF CRLF)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if (len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0")
            or len(parts[1]) != 3 or not parts[1].isdigit()):
        raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    return int(parts[1]), parts[2] if len(parts) > 2 else b"", headers


def _framing(method: str, status: int, version: bytes,
             headers: list[tuple[bytes, bytes]]) -> tuple[str, int, bool]:
    """How the body is framed ("none", "length", "chunked", "close"), its length, keep-alive."""
    length: int | None = None
    chunked = False
    encoded = False
    close = version == b"HTTP/1.0"
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise httpx.RemoteProtocolError(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif lowered == b"transfer-encoding":
            encoded = True
            chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
        elif lowered == b"connection":
            tokens = {token.strip() for token in value.lower().split(b",")}
            close = b"close" in tokens or (close and b"keep-alive" not in tokens)
    if method == "HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200:
        return "none", 0, not close
    if encoded:
        # RFC 9112 6.3: Transfer-Encoding wins over Content-Length; not ending in chunked
        # means "until close".
        return ("chunked", 0, not close) if chunked else ("close", 0, False)
    if length is not None:
        return "length", length, not close
    return "close", 0, False


class _Received(httpx.AsyncByteStream):
    """A body that arrived whole with the headers; its connection is already back in the pool."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._body:
            yield self._body


class _Body(httpx.AsyncByteStream):
    """A body still arriving when its headers did; the pool slot is freed at its end.

    Bodies that came whole with the headers (and answers without a body) are `_Received`.
    """

    def __init__(self, transport: H1Transport, connection: _Connection, framing: str,
                 length: int, keep_alive: bool, read_timeout: float | None) -> None:
        self._transport = transport
        self._connection = connection
        self._framing = framing
        self._left = length
        self._keep_alive = keep_alive
        self._timeout = read_timeout
        self._done = False
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            if self._framing == "length":
                async for chunk in self._by_length():
                    yield chunk
            elif self._framing == "chunked":
                async for chunk in self._chunked():
                    yield chunk
            else:
                async for chunk in self._until_close():
                    yield chunk
        except BaseException:
            self._release(reuse=False)
            raise
        self._done = True
        self._release()

    async def _by_length(self) -> AsyncIterator[bytes]:
        conn = self._connection
        while self._left:
            if not conn.buffer:
                if conn.lost:
                    raise _cut_short(conn, f"{self._left} byte(s) of the body never came")
                await conn.more(self._timeout)
                continue
            take = min(self._left, len(conn.buffer))
            chunk = bytes(conn.buffer[:take])
            del conn.buffer[:take]
            self._left -= take
            yield chunk

    async def _until_close(self) -> AsyncIterator[bytes]:
        conn = self._connection
        while True:
            if conn.buffer:
                chunk = bytes(conn.buffer)
                conn.buffer.clear()
                yield chunk
            elif conn.lost:
                if isinstance(conn.error, OSError):
                    raise _cut_short(conn, "connection reset while reading the body")
                return
            else:
                await conn.more(self._timeout)

    async def _line(self, limit: int) -> bytes:
        conn = self._connection
        while True:
            end = conn.buffer.find(b"\r\n")
            if end > limit:
                raise httpx.RemoteProtocolError("chunked body: line too long")
            if end >= 0:
                line = bytes(conn.buffer[:end])
                del conn.buffer[:end + 2]
                return line
            if len(conn.buffer) > limit:
                raise httpx.RemoteProtocolError("chunked body: line too long")
            if conn.lost:
                raise _cut_short(conn, "chunked body cut short")
            await conn.more(self._timeout)

    async def _chunked(self) -> AsyncIterator[bytes]:
        while True:
            size_text = (await self._line(MAX_CHUNK_LINE)).split(b";", 1)[0].strip()
            # Hex digits only: int(..., 16) would also take "0x10", "-1", "1_0" and spaces.
            if not size_text or size_text.strip(_HEX_DIGITS):
                raise httpx.RemoteProtocolError(f"bad chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                while await self._line(MAX_HEAD):  # trailers, until the empty line
                    pass
                return
            self._left = size
            async for chunk in self._by_length():
                yield chunk
            if await self._line(2):
                raise httpx.RemoteProtocolError("chunk not followed by CRLF")

    async def aclose(self) -> None:
        # A body left unread leaves its bytes on the socket: that connection is not reused.
        self._release(reuse=self._done)

    def _release(self, *, reuse: bool = True) -> None:
        if self._released:
            return
        self._released = True
        self._transport._give_back(self._connection, reuse=reuse and self._keep_alive)


def _cut_short(conn: _Connection, message: str) -> httpx.ReadError:
    error = httpx.ReadError(message)
    error.__cause__ = conn.error
    return error


class H1Transport(httpx.AsyncBaseTransport):
    """httpx transport: HTTP/1.1 keep-alive over asyncio, `limits.max_connections` at most."""

    def __init__(self, verify: ssl.SSLContext | str | bool = True,
                 cert: CertTypes | None = None, trust_env: bool = True,
                 limits: httpx.Limits | None = None) -> None:
        self._verify = verify
        self._cert = cert
        self._trust_env = trust_env
        self._ssl: ssl.SSLContext | None = verify if isinstance(verify, ssl.SSLContext) else None
        limits = limits or httpx.Limits()
        self._limit = limits.max_connections
        self._keep = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._slots: asyncio.Semaphore | None = None
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        #: Every socket not yet gone, closing ones included: `aclose` ends them all.
        self._live: set[_Connection] = set()
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        # Built on the first https request: a plain-http scan never loads the CA bundle.
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(verify=self._verify, cert=self._cert,
                                                 trust_env=self._trust_env)
        return self._ssl

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` on a pooled connection; the body streams from the socket."""
        if self._closed:
            raise httpx.ConnectError("transport closed")
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme!r}")
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        try:
            data = request.content
        except httpx.RequestNotRead:
            data = await request.aread()
        head = _request_head(request, data)
        if self._slots is None and self._limit is not None:
            self._slots = asyncio.Semaphore(self._limit)
        if self._slots is not None:
            if self._slots.locked():
                try:
                    async with asyncio.timeout(timeouts.get("pool")):
                        await self._slots.acquire()
                except TimeoutError:
                    raise httpx.PoolTimeout("no free connection within the pool timeout") from None
            else:
                await self._slots.acquire()  # a free slot: no wait, no timer
        key = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        try:
            return await self._exchange(request, key, head + data, timeouts)
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise

    async def _exchange(self, request: httpx.Request, key: tuple[str, str, int],
                        message: bytes, timeouts: dict[str, float | None]) -> httpx.Response:
        read_timeout = timeouts.get("read")
        while True:
            conn = self._idle_connection(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, request, timeouts.get("connect"))
            assert conn.transport is not None
            conn.transport.write(message)
            try:
                status, reason, version, headers = await self._read_head(conn, read_timeout)
            except _NoAnswer:
                conn.close()
                # The keep-alive race (RFC 9112 9.3.1): the server closed an idle connection
                # as we reused it. Nothing was answered, so an idempotent request goes again.
                if reused and request.method in _IDEMPOTENT:
                    continue
                raise httpx.RemoteProtocolError(
                    "server closed the connection without answering") from conn.error
            except BaseException:
                conn.close()
                raise
            break
        try:
            framing, length, keep_alive = _framing(request.method, status, version, headers)
        except BaseException:
            conn.close()
            raise
        extensions: dict[str, Any] = {"http_version": version}
        if reason:
            extensions["reason_phrase"] = reason
        stream: httpx.AsyncByteStream
        if framing == "none" or (framing == "length" and len(conn.buffer) >= length):
            # Most registry answers (a one-byte range, a manifest, an error) come whole with
            # their headers: hand the body over as bytes and the connection back at once.
            body = bytes(conn.buffer[:length])
            del conn.buffer[:length]
            self._give_back(conn, reuse=keep_alive)
            stream = _Received(body)
        else:
            stream = _Body(self, conn, framing, length, keep_alive, read_timeout)
        return httpx.Response(status_code=status, headers=headers, request=request,
                              extensions=extensions, stream=stream)

    async def _read_head(self, conn: _Connection, timeout: float | None
                         ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        searched = 0
        while True:
            end = conn.buffer.find(b"\r\n\r\n", max(0, searched - 3))
            if end > MAX_HEAD:
                raise httpx.RemoteProtocolError(f"response headers over {MAX_HEAD} bytes")
            if end >= 0:
                head = bytes(conn.buffer[:end])
                del conn.buffer[:end + 4]
                status, reason, headers = _parse_head(head)
                if 100 <= status < 200 and status != 101:
                    searched = 0  # an interim answer (100 Continue): the real one follows
                    continue
                return status, reason, head[:8], headers
            searched = len(conn.buffer)
            if searched > MAX_HEAD:
                raise httpx.RemoteProtocolError(f"response headers over {MAX_HEAD} bytes")
            if conn.lost:
                if not conn.buffer:
                    raise _NoAnswer
                raise httpx.RemoteProtocolError("connection closed inside the response headers")
            await conn.more(timeout)

    def _idle_connection(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.reusable(now, self._expiry):
                return conn
            conn.close()
        return None

    async def _connect(self, key: tuple[str, str, int], request: httpx.Request,
                       timeout: float | None) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        conn = _Connection(key, self._live)
        tls: ssl.SSLContext | None = None
        server_hostname: str | None = None
        if scheme == "https":
            tls = self._ssl_context()
            sni = request.extensions.get("sni_hostname")
            server_hostname = sni.decode() if isinstance(sni, bytes) else (sni or host)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: conn, host, port, ssl=tls,
                                             server_hostname=server_hostname)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect to {host}:{port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            # The ssl.SSLError stays reachable through __cause__ for the client's TLS check.
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return conn

    def _give_back(self, conn: _Connection, *, reuse: bool) -> None:
        if self._slots is not None:
            self._slots.release()
        idle = self._idle.setdefault(conn.key, deque())
        if (reuse and not self._closed and conn.reusable(time.monotonic(), None)
                and (self._keep is None or len(idle) < self._keep)):
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        """End every connection now, idle, in use or still closing."""
        self._closed = True
        self._idle.clear()
        for conn in list(self._live):
            conn.lost = True
            if conn.transport is not None:
                # abort, not close: a TLS close waits for the peer's close_notify, and the
                # event loop may be gone by then (an unclosed socket).
                conn.transport.abort()
        for _ in range(100):  # connection_lost runs on the next loop iterations
            if not self._live:
                break
            await asyncio.sleep(0)


class _NoAnswer(Exception):
    """The connection ended before a single byte of the answer."""


def _request_head(request: httpx.Request, data: bytes) -> bytes:
    target = request.url.raw_path
    lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name or b":" in name:
            raise httpx.LocalProtocolError(f"illegal header {name[:40]!r}")
        if name.lower() == b"transfer-encoding":
            continue  # a streamed body has been read whole: it goes with a Content-Length
        lines += (name, b": ", value, b"\r\n")
    if data and "content-length" not in request.headers:
        lines += (b"Content-Length: ", str(len(data)).encode(), b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing: parsing `Set-Cookie` cost ~15 µs a response, for no use."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Ignore the response's cookies."""


class LeanClient(httpx.AsyncClient):
    """An `httpx.AsyncClient` on `H1Transport`, and on aiohttp through environment proxies.

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
        return H1Transport(verify=verify, cert=cert, trust_env=trust_env, limits=limits)

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
        from verifier.transport import AiohttpTransport  # aiohttp: only when proxying

        built: httpx.AsyncBaseTransport = AiohttpTransport(
            verify=verify, cert=cert, trust_env=trust_env, limits=limits, proxy=proxy)
        return built
