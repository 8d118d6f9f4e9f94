"""Loopback HTTP servers for tests that need a misbehaving network: a seeded fault proxy.

`LoopbackHTTPServer` is a tiny HTTP/1.1 server on 127.0.0.1 running its own asyncio loop in a
background thread, so the CLI under test can run in a subprocess (or in-process) while the
server answers. Handlers get an `Exchange` and may answer normally, stall, trickle, cut the body
short or reset the connection. The hostile-input and security tests build their servers on it.

`FaultProxy` forwards to an upstream (the real registry) and, from a seeded random stream,
answers a share of requests with 503/429/502/504 (with and without `Retry-After`, in seconds and
as an HTTP date), resets connections, truncates bodies and delays responses. Decisions depend
only on the seed, the request (method, target, Range) and how many times that request has been
seen, never on arrival order, so a run is deterministic per seed even with concurrency. At most
`max_streak` faults in a row hit the same request: the proxy is flaky, never broken, which is
what lets a test demand that verdicts through it equal verdicts without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade",
})
_MAX_HEAD = 64 * 1024


@dataclass
class Request:
    """One request as a loopback server received it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    received_at: float = field(default_factory=time.monotonic)

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    @property
    def path(self) -> str:
        """The target without its query."""
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        """The query string of the target ('' when none)."""
        return urlsplit(self.target).query


class Exchange:
    """The answering side of one request: write a response, or misbehave on purpose."""

    def __init__(self, request: Request, writer: asyncio.StreamWriter) -> None:
        self.request = request
        self._writer = writer
        self.closed = False
        self.status: int | None = None

    async def respond(self, status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = (),
                      *, content_length: int | None = None) -> None:
        """A complete response; `content_length` may lie (a HEAD keeps the body's length)."""
        await self.send_head(status, headers,
                             content_length=len(body) if content_length is None else content_length)
        if self.request.method != "HEAD" and body:
            await self.send(body)

    async def send_head(self, status: int, headers: Iterable[tuple[str, str]] = (), *,
                        content_length: int | None = None, chunked: bool = False) -> None:
        """Status line and headers; the body is up to the caller."""
        self.status = status
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        names = set()
        for key, value in headers:
            names.add(key.lower())
            lines.append(f"{key}: {value}")
        if content_length is not None and "content-length" not in names:
            lines.append(f"Content-Length: {content_length}")
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        if "date" not in names:
            lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def send(self, data: bytes) -> None:
        """Raw bytes on the connection."""
        self._writer.write(data)
        await self._writer.drain()

    def close(self) -> None:
        """Close the connection after what was sent (a body cut short if it was not complete)."""
        self.closed = True
        self._writer.close()

    def reset(self) -> None:
        """Abort the connection with a TCP RST, nothing more sent."""
        self.closed = True
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()


Handler = Callable[[Exchange], Awaitable[None]]


def _reason(status: int) -> str:
    return {200: "OK", 206: "Partial Content", 307: "Temporary Redirect", 401: "Unauthorized",
            404: "Not Found", 429: "Too Many Requests", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}.get(status, "Status")


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers = []
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers.append((key.strip(), value.strip()))
    request = Request(parts[0], parts[1], headers)
    length = request.header("content-length")
    if length and length.isdigit() and int(length):
        try:
            request.body = await reader.readexactly(int(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
    return request


class LoopbackHTTPServer:
    """An HTTP/1.1 server on 127.0.0.1 in a thread of its own; `with` it or start()/stop()."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None,
                 address: str = "127.0.0.1") -> None:
        self.handler = handler
        self.tls = tls
        self.address = address
        self.requests: list[Request] = []
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None

    @property
    def host(self) -> str:
        """`ADDRESS:PORT` (127.0.0.1 unless another loopback address was asked for)."""
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL (http or https)."""
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def start(self) -> None:
        """Bind a free loopback port and serve in a background thread."""
        self._thread = threading.Thread(target=self._run, name=f"loopback-{id(self)}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"loopback server did not start: {self._error!r}")

    def stop(self) -> None:
        """Close the listener and every open connection, end the loop, join the thread."""
        if self.loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> LoopbackHTTPServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start() when it happens before ready
            self._error = exc
            self._ready.set()

    async def setup(self) -> None:
        """Hook run in the server's loop before serving (subclasses open clients here)."""

    async def teardown(self) -> None:
        """Hook run in the server's loop after serving."""

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.setup()
        server = await asyncio.start_server(self._connection, self.address, 0, ssl=self.tls,
                                            limit=_MAX_HEAD)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()
            await self.teardown()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                exchange = Exchange(request, writer)
                await self.handler(exchange)
                if exchange.closed or (request.header("connection") or "").lower() == "close":
                    break
        except (ConnectionError, asyncio.CancelledError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


# --- the fault proxy -----------------------------------------------------------------------------

#: Every fault the proxy can inject; `none` forwards untouched.
FAULTS = (
    "503", "503-retry-after-seconds", "503-retry-after-date",
    "429", "429-retry-after-seconds", "429-retry-after-date",
    "502", "504", "reset", "truncate", "delay",
)


@dataclass(frozen=True)
class FaultPlan:
    """How often and how the proxy misbehaves."""

    seed: int | str = 0
    rate: float = 0.3
    faults: tuple[str, ...] = FAULTS
    max_streak: int = 2
    delay: tuple[float, float] = (0.01, 0.15)
    retry_after_seconds: tuple[int, ...] = (0, 1)


@dataclass(frozen=True)
class FaultEvent:
    """What the proxy did with one request."""

    method: str
    target: str
    fault: str
    status: int | None
    request: Request | None = field(default=None, compare=False, repr=False)


class FaultProxy(LoopbackHTTPServer):
    """A proxy in front of `upstream` that injects the faults of a `FaultPlan`."""

    def __init__(self, upstream: str, plan: FaultPlan | None = None, *,
                 intercept: Handler | None = None, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(self._handle, tls=tls)
        self.upstream = upstream.rstrip("/")
        self.plan = plan or FaultPlan(rate=0.0)
        self.intercept = intercept
        self.events: list[FaultEvent] = []
        self.upstream_gone = False
        self.gone_after: int | None = None
        self._seen: Counter[str] = Counter()
        self._streak: Counter[str] = Counter()
        self._client: httpx.AsyncClient | None = None

    @property
    def injected(self) -> Counter[str]:
        """How many times each fault was injected."""
        return Counter(e.fault for e in self.events if e.fault != "none")

    async def setup(self) -> None:
        """Open the upstream client in the proxy's own loop."""
        self._client = httpx.AsyncClient(base_url=self.upstream, follow_redirects=False,
                                         trust_env=False, timeout=30.0)

    async def teardown(self) -> None:
        """Close the upstream client."""
        if self._client is not None:
            await self._client.aclose()

    def decide(self, request: Request) -> tuple[str, random.Random]:
        """The fault for this request: a function of the seed, the request and its repeat count."""
        key = f"{request.method} {request.target} {request.header('range') or ''}"
        n = self._seen[key]
        self._seen[key] += 1
        rng = random.Random(f"{self.plan.seed}|{key}|{n}")
        fault = "none"
        if self.plan.faults and rng.random() < self.plan.rate:
            fault = rng.choice(self.plan.faults)
        if fault != "none" and self._streak[key] >= self.plan.max_streak:
            fault = "none"
        self._streak[key] = self._streak[key] + 1 if fault != "none" else 0
        return fault, rng

    async def _handle(self, exchange: Exchange) -> None:
        request = exchange.request
        if self.gone_after is not None and len(self.requests) > self.gone_after:
            self.upstream_gone = True
        if self.upstream_gone:
            self.events.append(FaultEvent(request.method, request.target, "gone", None, request))
            exchange.reset()
            return
        fault, rng = self.decide(request)
        try:
            await self._apply(exchange, fault, rng)
        finally:
            self.events.append(FaultEvent(request.method, request.target, fault, exchange.status,
                                          request))

    async def _apply(self, exchange: Exchange, fault: str, rng: random.Random) -> None:
        if fault == "reset":
            exchange.reset()
            return
        status_fault = fault.split("-", 1)
        if status_fault[0] in ("429", "502", "503", "504"):
            headers = [("Content-Type", "text/plain")]
            if fault.endswith("retry-after-seconds"):
                headers.append(("Retry-After", str(rng.choice(self.plan.retry_after_seconds))))
            elif fault.endswith("retry-after-date"):
                when = time.time() + rng.choice(self.plan.retry_after_seconds)
                headers.append(("Retry-After", email.utils.formatdate(when, usegmt=True)))
            await exchange.respond(int(status_fault[0]), b"injected fault\n", headers)
            return
        if fault == "delay":
            await asyncio.sleep(rng.uniform(*self.plan.delay))
        if self.intercept is not None:
            await self.intercept(exchange)
            if exchange.status is not None or exchange.closed:
                return
        await self.forward(exchange, truncate=rng if fault == "truncate" else None)

    async def forward(self, exchange: Exchange, *, truncate: random.Random | None = None) -> None:
        """Send the request upstream and relay the answer (cut short when `truncate`)."""
        assert self._client is not None
        request = exchange.request
        headers = [(k, v) for k, v in request.headers if k.lower() not in _HOP_BY_HOP]
        upstream_request = self._client.build_request(
            request.method, request.target, headers=headers, content=request.body or None)
        try:
            response = await self._client.send(upstream_request, stream=True)
        except httpx.TransportError:
            await exchange.respond(502, b"upstream unreachable\n",
                                   [("Content-Type", "text/plain")])
            return
        try:
            await self._relay(exchange, response, truncate)
        finally:
            await response.aclose()

    async def _relay(self, exchange: Exchange, response: httpx.Response,
                     truncate: random.Random | None) -> None:
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in _HOP_BY_HOP]
        declared = response.headers.get("content-length")
        is_head = exchange.request.method == "HEAD"
        if declared is None and not is_head:
            body = await response.aread()
            headers.append(("Content-Length", str(len(body))))
            if truncate is not None and body:
                await exchange.send_head(response.status_code, headers)
                await exchange.send(body[: truncate.randrange(len(body))])
                exchange.close()
                return
            await exchange.send_head(response.status_code, headers)
            await exchange.send(body)
            return
        await exchange.send_head(response.status_code, headers)
        if is_head:
            if truncate is not None:
                exchange.close()  # nothing to cut: drop the connection after the headers
            return
        length = int(declared or 0)
        cut = truncate.randrange(length) if truncate is not None and length else None
        sent = 0
        try:
            async for chunk in response.aiter_raw():
                if cut is not None and sent + len(chunk) >= cut:
                    await exchange.send(chunk[: cut - sent])
                    exchange.close()
                    return
                await exchange.send(chunk)
                sent += len(chunk)
        except httpx.TransportError:
            exchange.close()  # upstream cut its body short: so do we, as it did
            return
        if sent < length or cut is not None:
            exchange.close()


def run_proxy_requests(proxy: FaultProxy, requests: list[tuple[str, str]]) -> list[str]:
    """Send `requests` (method, path) one at a time, each on a new connection; return faults."""
    out: list[str] = []
    with httpx.Client(base_url=proxy.url, trust_env=False, timeout=10.0) as client:
        for method, path in requests:
            before = len(proxy.events)
            with contextlib.suppress(httpx.TransportError):
                client.request(method, path, headers={"Connection": "close"})
            deadline = time.monotonic() + 5
            while len(proxy.events) == before and time.monotonic() < deadline:
                time.sleep(0.001)
            out.append(proxy.events[-1].fault if len(proxy.events) > before else "?")
    return out


def describe(events: list[FaultEvent]) -> dict[str, Any]:
    """A summary of what a proxy did, for assertion messages."""
    return {"requests": len(events), "faults": dict(Counter(e.fault for e in events))}
