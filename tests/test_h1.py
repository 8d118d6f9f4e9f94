"""verifier/h1.py: the lean HTTP/1.1 transport, against loopback servers speaking raw bytes.

`H1Transport` frames every answer a scan sees on its own (Content-Length, chunked, until
close), keeps connections alive, bounds the pool and maps every failure onto the httpx
exception the client's retry loop reads. A mistake there is silent: a body cut one byte
short, the leftovers of one answer read as the next, a POST sent twice. So each behaviour is
played here by a server that writes exactly the bytes in question, and every test runs on
both asyncio's loop and uvloop, which commands use by default (verifier/eventloop.py).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Protocol, TypeVar

import httpx
import pytest
import trustme

from tests.loopback import Serve, with_server
from verifier.h1 import HIGH_WATER, MAX_CHUNK_LINE, MAX_HEAD, H1Transport, LeanClient

T = TypeVar("T")
#: Most bytes one read hands to `data_received` (asyncio's selector loop and uvloop alike):
#: the buffer can overshoot HIGH_WATER by this much before reading pauses.
READ_SIZE = 256 * 1024


class Run(Protocol):
    def __call__(self, main: Coroutine[Any, Any, T]) -> T: ...


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Run a coroutine on a fresh loop of the parametrized kind."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if request.param == "uvloop":
        factory = pytest.importorskip("uvloop").new_event_loop

    def runner(main: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as loop:
            return loop.run(main)

    return runner


async def _stream_all(host: str) -> tuple[bytes, type[BaseException] | None]:
    """GET `/` streamed: the bytes that came, then the error that ended them (if any)."""
    async with httpx.AsyncClient(transport=H1Transport()) as client:
        got = b""
        error: type[BaseException] | None = None
        async with client.stream("GET", f"http://{host}/") as response:
            try:
                async for chunk in response.aiter_raw():
                    got += chunk
            except httpx.HTTPError as exc:
                error = type(exc)
        return got, error


async def _requests(reader: asyncio.StreamReader) -> AsyncIterator[tuple[bytes, bytes]]:
    """Each request on a connection (head, Content-Length body) until the client closes it."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        yield head, await reader.readexactly(length)


def _target(head: bytes) -> bytes:
    return head.split(b" ", 2)[1]


async def _wait_for_close(reader: asyncio.StreamReader) -> None:
    """Hold a connection open until the client closes it (so EOF cannot explain a result)."""
    while await reader.read(65536):
        pass


class Counting:
    """A server that counts the connections it accepts and answers each request in turn."""

    def __init__(self, answer: Callable[[int, bytes], bytes]) -> None:
        #: `answer(n, head)` is the raw response to the n-th request of the server (from 0).
        self.answer = answer
        self.accepted = 0
        self.requests = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        async for head, _ in _requests(reader):
            n = self.requests
            self.requests += 1
            writer.write(self.answer(n, head))
            await writer.drain()


def _ok(body: bytes, *extra: bytes) -> bytes:
    headers = b"".join(h + b"\r\n" for h in extra)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), headers, body)


# -- bodies: the three framings -------------------------------------------------------------


def test_content_length_body_arriving_in_pieces_is_streamed_whole(run: Run) -> None:
    parts = [b"first-", b"second-", b"third"]
    body_bytes = b"".join(parts)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for _ in _requests(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body_bytes))
            for part in parts:
                # Pauses between writes: the body is not in the buffer with the head, so it is
                # read off the socket as it comes (`_Body`), not handed over whole (`_Received`).
                await asyncio.sleep(0.02)
                writer.write(part)
                await writer.drain()

    async def body(host: str) -> tuple[list[bytes], bytes]:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            async with client.stream("GET", f"http://{host}/blob") as response:
                chunks = [chunk async for chunk in response.aiter_raw()]
            again = await client.get(f"http://{host}/blob")
            return chunks, again.content

    chunks, again = run(with_server(serve, body))
    assert b"".join(chunks) == body_bytes
    assert len(chunks) >= 2  # the streaming path, as meant
    assert again == body_bytes


def test_chunked_body_with_extensions_and_trailers_then_keep_alive(run: Run) -> None:
    accepted = 0
    # Split at the awkward places: inside a chunk, between CR and LF, inside a size line,
    # inside the trailers.
    pieces = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhel",
        b"lo\r\n",
        b"A ; name=\"quoted value\" ; flag\r",
        b"\n0123456789\r\n1",
        b"f\r\n" + b"z" * 31 + b"\r\n0;last=1\r\nX-Trai",
        b"ler: one\r\nY-Trailer: two\r\n\r\n",
    ]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        first = True
        async for _ in _requests(reader):
            if first:
                first = False
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)
            else:
                writer.write(_ok(b"second answer"))
                await writer.drain()

    async def body(host: str) -> tuple[bytes, bytes]:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            first = await client.get(f"http://{host}/chunked")
            second = await client.get(f"http://{host}/next")
            return first.content, second.content

    first, second = run(with_server(serve, body))
    assert first == b"hello" + b"0123456789" + b"z" * 31
    assert second == b"second answer"
    assert accepted == 1  # the trailers were consumed: the connection stayed usable


def test_body_delimited_by_close_is_read_to_the_end_and_not_reused(run: Run) -> None:
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"the end")
        await writer.drain()
        writer.close()

    async def body(host: str) -> list[bytes]:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            return [(await client.get(f"http://{host}/")).content for _ in range(2)]

    assert run(with_server(serve, body)) == [b"until the end"] * 2
    assert accepted == 2


# -- keep-alive -----------------------------------------------------------------------------


def test_sequential_requests_share_one_connection(run: Run) -> None:
    counting = Counting(lambda n, head: _ok(b"answer %d to %s" % (n, _target(head))))

    async def body(host: str) -> list[bytes]:
        async with LeanClient(base_url=f"http://{host}") as client:
            return [(await client.get(f"/r{i}")).content for i in range(5)]

    assert run(with_server(counting, body)) == [b"answer %d to /r%d" % (i, i) for i in range(5)]
    assert counting.accepted == 1


@pytest.mark.parametrize(("answer", "reused"), [
    (_ok(b"x", b"Connection: close"), False),
    (_ok(b"x", b"Connection: Keep-Alive, Close"), False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", True),
    (_ok(b"x", b"Connection: keep-alive"), True),
], ids=["close", "close-among-tokens", "http1.0", "http1.0-keep-alive", "keep-alive"])
def test_connection_header_and_version_decide_reuse(run: Run, answer: bytes,
                                                    reused: bool) -> None:
    # The server keeps every connection open whatever it said: only the header and the
    # version may make the client open a new one.
    counting = Counting(lambda n, head: answer)

    async def body(host: str) -> list[bytes]:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            return [(await client.get(f"http://{host}/")).content for _ in range(3)]

    assert run(with_server(counting, body)) == [b"x"] * 3
    assert counting.accepted == (1 if reused else 3)


def test_idle_connection_closed_by_the_server_is_replaced(run: Run) -> None:
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_ok(b"once"))
        await writer.drain()
        writer.close()  # an idle timeout on the server, as soon as the answer is out

    async def body(host: str) -> list[bytes]:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            first = await client.get(f"http://{host}/")
            await asyncio.sleep(0.05)  # the close has arrived by now
            second = await client.post(f"http://{host}/", content=b"data")
            return [first.content, second.content]

    assert run(with_server(serve, body)) == [b"once", b"once"]
    assert accepted == 2


def _race_server(seen: list[bytes]) -> Serve:
    """Answer the first request of a connection, then close upon reading the second, unanswered:
    the keep-alive race (the server's idle close crossing the client's reuse)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for head, _ in _requests(reader):
            seen.append(head.split(b"\r\n", 1)[0])
            if len(seen) == 2:
                writer.close()
                return
            writer.write(_ok(b"answer %d" % len(seen)))
            await writer.drain()

    return serve


def test_keep_alive_race_resends_an_idempotent_request(run: Run) -> None:
    seen: list[bytes] = []

    async def body(host: str) -> list[bytes]:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            return [(await client.get(f"http://{host}/{i}")).content for i in range(2)]

    assert run(with_server(_race_server(seen), body)) == [b"answer 1", b"answer 3"]
    assert seen == [b"GET /0 HTTP/1.1", b"GET /1 HTTP/1.1", b"GET /1 HTTP/1.1"]


def test_keep_alive_race_does_not_resend_a_post(run: Run) -> None:
    seen: list[bytes] = []

    async def body(host: str) -> type[BaseException]:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            await client.get(f"http://{host}/0")
            with pytest.raises(httpx.TransportError) as raised:
                await client.post(f"http://{host}/upload", content=b"once only")
            return raised.type

    # The server may have acted on it: a POST is never sent twice by the transport.
    assert run(with_server(_race_server(seen), body)) is httpx.RemoteProtocolError
    assert seen == [b"GET /0 HTTP/1.1", b"POST /upload HTTP/1.1"]


def test_expired_idle_connection_is_not_reused(run: Run) -> None:
    counting = Counting(lambda n, head: _ok(b"x"))

    async def body(host: str) -> None:
        limits = httpx.Limits(keepalive_expiry=0.05)
        async with LeanClient(limits=limits) as client:
            await client.get(f"http://{host}/")
            await client.get(f"http://{host}/")  # within the expiry: reused
            await asyncio.sleep(0.1)
            await client.get(f"http://{host}/")

    run(with_server(counting, body))
    assert counting.accepted == 2


def test_no_keep_alive_slots_means_no_reuse(run: Run) -> None:
    counting = Counting(lambda n, head: _ok(b"x"))

    async def body(host: str) -> None:
        async with LeanClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for _ in range(3):
                await client.get(f"http://{host}/")

    run(with_server(counting, body))
    assert counting.accepted == 3


# -- answers without a body -----------------------------------------------------------------


@pytest.mark.parametrize(("method", "answer"), [
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
    ("HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n"),
], ids=["head-length", "head-chunked", "204", "304"])
def test_answers_without_a_body_return_at_once_and_keep_the_connection(
        run: Run, method: str, answer: bytes) -> None:
    counting = Counting(lambda n, head: answer if n == 0 else _ok(b"next"))

    async def body(host: str) -> list[bytes]:
        # Waiting for the announced body would end in this ReadTimeout: the server sends none.
        timeout = httpx.Timeout(5, read=0.5)
        async with httpx.AsyncClient(transport=H1Transport(), timeout=timeout) as client:
            first = await client.request(method, f"http://{host}/")
            second = await client.get(f"http://{host}/")
            return [first.content, second.content]

    assert run(with_server(counting, body)) == [b"", b"next"]
    assert counting.accepted == 1


def test_interim_answers_are_skipped(run: Run) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for _ in _requests(reader):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(_ok(b"final", b"X-Final: yes"))
            await writer.drain()

    async def body(host: str) -> list[tuple[int, str | None, bytes]]:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            answers = []
            for _ in range(2):  # the second on the same connection: nothing left over
                response = await client.post(f"http://{host}/", content=b"payload")
                answers.append((response.status_code, response.headers.get("x-final"),
                                response.content))
            return answers

    assert run(with_server(serve, body)) == [(200, "yes", b"final")] * 2


# -- malformed answers ----------------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    b"garbage that is not HTTP\r\n\r\n",
    b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded onto the line above\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\tfolded with a tab\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A : space before the colon\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n: no name\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x10\r\n"
    + b"h" * 16 + b"\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
], ids=["not-http", "no-status-code", "http2", "four-digit-status", "header-without-colon",
        "obs-fold-space", "obs-fold-tab", "space-before-colon", "empty-name",
        "conflicting-lengths", "length-not-a-number", "length-negative", "length-plus-sign",
        "chunk-size-zz", "chunk-size-negative", "chunk-size-0x", "chunk-size-empty",
        "chunk-without-crlf"])
def test_malformed_answer_is_a_protocol_error_and_the_connection_is_dropped(
        run: Run, answer: bytes) -> None:
    # The server holds the connection open: the error comes from the bytes, not an EOF.
    counting = Counting(lambda n, head: answer if n == 0 else _ok(b"fine"))

    async def body(host: str) -> tuple[type[BaseException] | None, bytes]:
        async with httpx.AsyncClient(transport=H1Transport(),
                                     timeout=httpx.Timeout(5, read=1)) as client:
            error: type[BaseException] | None = None
            try:
                await client.get(f"http://{host}/")
            except httpx.HTTPError as exc:
                error = type(exc)
            return error, (await client.get(f"http://{host}/")).content

    error, after = run(with_server(counting, body))
    assert error is httpx.RemoteProtocolError
    # The next request has a clean connection of its own, not the rest of the bad answer.
    assert after == b"fine"
    assert counting.accepted == 2


@pytest.mark.parametrize("delivery", ["trickled-far-over", "whole-just-over"])
@pytest.mark.parametrize("part", ["head", "chunk-line"])
def test_head_or_chunk_line_over_its_limit_is_a_protocol_error(
        run: Run, part: str, delivery: str) -> None:
    limit = MAX_HEAD if part == "head" else MAX_CHUNK_LINE
    # Twice the limit, trickled: the limit is crossed before the line's end has come. Just
    # over it in one write: the whole line, end included, reaches the client in one read.
    filler = b"a" * (2 * limit if delivery == "trickled-far-over" else limit + 100)
    if part == "head":
        answer = b"HTTP/1.1 200 OK\r\nX-Big: " + filler + b"\r\nContent-Length: 2\r\n\r\nok"
    else:
        answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"2;ext=" + filler + b"\r\nok\r\n0\r\n\r\n")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if delivery == "trickled-far-over":
            step = limit // 16
            for start in range(0, len(answer), step):
                writer.write(answer[start:start + step])
                await writer.drain()
                await asyncio.sleep(0.001)
        else:
            writer.write(answer)
            await writer.drain()
        await _wait_for_close(reader)

    async def body(host: str) -> bytes:
        async with httpx.AsyncClient(transport=H1Transport(),
                                     timeout=httpx.Timeout(5, read=1)) as client:
            return (await client.get(f"http://{host}/")).content

    with pytest.raises(httpx.RemoteProtocolError):
        run(with_server(serve, body))


def test_headers_just_under_max_head_are_accepted(run: Run) -> None:
    filler = MAX_HEAD - 200  # with the status line and the other headers: still under

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_ok(b"ok", b"X-Big: " + b"a" * filler))
        await writer.drain()
        await _wait_for_close(reader)

    async def body(host: str) -> tuple[int, bytes]:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            response = await client.get(f"http://{host}/")
            return len(response.headers["x-big"]), response.content

    assert run(with_server(serve, body)) == (filler, b"ok")


# -- cut short, silent, unreachable ---------------------------------------------------------


@pytest.mark.parametrize(("answer", "sent"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 30, b"x" * 30),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + b"x" * 30, b"x" * 30),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1e\r\n" + b"x" * 30 + b"\r\n",
     b"x" * 30),
], ids=["length", "chunked-inside-a-chunk", "chunked-no-last-chunk"])
def test_body_cut_short_is_a_read_error_after_the_bytes_that_came(
        run: Run, answer: bytes, sent: bytes) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.02)  # the head is read first: the close comes mid-body
        writer.close()


    # The client counts what came (a truncated blob read), then sees the failure.
    assert run(with_server(serve, _stream_all)) == (sent, httpx.ReadError)


def test_reset_during_a_body_delimited_by_close_is_a_read_error(run: Run) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nsome of it")
        await writer.drain()
        await asyncio.sleep(0.02)
        # SO_LINGER 0: the close is a reset, not an end of body: the body is not whole.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


    got, error = run(with_server(serve, _stream_all))
    assert error is httpx.ReadError
    assert b"some of it".startswith(got)


def test_fresh_connection_closed_without_an_answer_is_a_protocol_error(run: Run) -> None:
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def body(host: str) -> None:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            await client.get(f"http://{host}/")

    with pytest.raises(httpx.RemoteProtocolError):
        run(with_server(serve, body))
    # A new connection was not reused: no keep-alive race, nothing resent.
    assert accepted == 1


def test_server_that_never_answers_is_a_read_timeout(run: Run) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)  # cancelled by the teardown

    async def body(host: str) -> float:
        async with httpx.AsyncClient(transport=H1Transport(),
                                     timeout=httpx.Timeout(5, read=0.2)) as client:
            start = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"http://{host}/")
            return time.monotonic() - start

    assert 0.15 < run(with_server(serve, body)) < 2


def test_body_that_stalls_is_a_read_timeout(run: Run) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(30)

    async def body(host: str) -> None:
        async with httpx.AsyncClient(transport=H1Transport(),
                                     timeout=httpx.Timeout(5, read=0.2)) as client:
            await client.get(f"http://{host}/")

    with pytest.raises(httpx.ReadTimeout):
        run(with_server(serve, body))


def test_closed_port_is_a_connect_error(run: Run) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Closed, and nothing listens there now (the kernel does not hand it out again at once).

    async def main() -> None:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            await client.get(f"http://127.0.0.1:{port}/")

    with pytest.raises(httpx.ConnectError):
        run(main())


def test_unsupported_scheme(run: Run) -> None:
    async def main() -> None:
        transport = H1Transport()
        try:
            with pytest.raises(httpx.UnsupportedProtocol):
                await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/x"))
            async with httpx.AsyncClient(transport=transport) as client:
                with pytest.raises(httpx.UnsupportedProtocol):
                    await client.get("ftp://127.0.0.1/x")
        finally:
            await transport.aclose()

    run(main())


@pytest.mark.parametrize("value", ["a\r\nInjected: yes", "a\nInjected: yes", "a\rb"])
def test_header_with_cr_or_lf_is_refused_before_anything_is_sent(run: Run, value: str) -> None:
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await _wait_for_close(reader)

    async def body(host: str) -> None:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            with pytest.raises(httpx.LocalProtocolError):
                await client.get(f"http://{host}/", headers={"X-Value": value})
            await asyncio.sleep(0.02)  # a connection, had one been made, is accepted by now

    run(with_server(serve, body))
    assert accepted == 0


# -- the pool -------------------------------------------------------------------------------


def test_pool_never_opens_more_than_max_connections(run: Run) -> None:
    open_now = 0
    most = 0
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, most, accepted
        accepted += 1
        open_now += 1
        most = max(most, open_now)
        try:
            async for head, _ in _requests(reader):
                await asyncio.sleep(0.005)
                target = _target(head)
                if target.endswith((b"0", b"5")):
                    # A body after a pause: the slot is held until it has been read.
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(target))
                    await writer.drain()
                    await asyncio.sleep(0.005)
                    writer.write(target)
                else:
                    writer.write(_ok(target))
                await writer.drain()
        finally:
            open_now -= 1

    async def body(host: str) -> list[bytes]:
        async with LeanClient(limits=httpx.Limits(max_connections=3)) as client:
            answers = await asyncio.gather(*(client.get(f"http://{host}/{i}")
                                             for i in range(30)))
            return [answer.content for answer in answers]

    assert run(with_server(serve, body)) == [b"/%d" % i for i in range(30)]
    assert 1 <= most <= 3
    assert accepted <= 3  # and kept them alive rather than reopening


def test_pool_wait_past_the_pool_timeout(run: Run) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")  # the body never comes
        await writer.drain()
        await _wait_for_close(reader)

    async def body(host: str) -> float:
        transport = H1Transport(limits=httpx.Limits(max_connections=1))
        async with httpx.AsyncClient(transport=transport) as client:
            async with client.stream("GET", f"http://{host}/held"):
                start = time.monotonic()
                with pytest.raises(httpx.PoolTimeout):
                    await client.get(f"http://{host}/waits",
                                     timeout=httpx.Timeout(5, pool=0.1))
                return time.monotonic() - start

    assert 0.05 < run(with_server(serve, body)) < 2


def test_abandoned_streamed_body_does_not_leak_into_the_next_answer(run: Run) -> None:
    large = b"L" * (2 * 1024 * 1024)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for head, _ in _requests(reader):
            target = _target(head)
            writer.write(_ok(large) if target == b"/large" else _ok(b"answer for " + target))
            await writer.drain()

    async def body(host: str) -> list[bytes]:
        limits = httpx.Limits(max_connections=1)  # one connection: any leftover would show
        async with LeanClient(limits=limits, timeout=httpx.Timeout(5, read=1)) as client:
            async with client.stream("GET", f"http://{host}/large") as response:
                assert response.status_code == 200  # headers only; the body is left
            async with client.stream("GET", f"http://{host}/large") as response:
                async for _ in response.aiter_raw():
                    break  # a little of it, then abandoned
            return [(await client.get(f"http://{host}/small{i}")).content for i in range(2)]

    assert run(with_server(serve, body)) == [b"answer for /small0", b"answer for /small1"]


@pytest.mark.filterwarnings("error::ResourceWarning")
def test_aclose_ends_every_connection_even_one_in_use(run: Run) -> None:
    ended = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal ended
        try:
            async for head, _ in _requests(reader):
                if _target(head) == b"/held":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
                else:
                    writer.write(_ok(b"done"))
                await writer.drain()
        finally:
            ended += 1

    async def body(host: str) -> tuple[type[BaseException] | None, int]:
        transport = H1Transport()
        client = httpx.AsyncClient(transport=transport)
        # One connection in use with a reader waiting on its body, one idle in the pool (in
        # that order: the other way round, the held request would reuse the idle connection).
        request = client.build_request("GET", f"http://{host}/held")
        response = await client.send(request, stream=True)
        await client.get(f"http://{host}/idle")
        reading = asyncio.create_task(response.aread())
        await asyncio.sleep(0.02)
        await transport.aclose()
        error: type[BaseException] | None = None
        try:
            await asyncio.wait_for(reading, 2)  # ended, not left hanging
        except httpx.HTTPError as exc:
            error = type(exc)
        await response.aclose()
        await client.aclose()
        for _ in range(50):  # the server sees both EOFs on its next iterations
            if ended == 2:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(httpx.ConnectError):
            await transport.handle_async_request(httpx.Request("GET", f"http://{host}/"))
        return error, ended

    assert run(with_server(serve, body)) == (httpx.ReadError, 2)
    gc.collect()  # an unclosed socket or transport would warn here, now an error


def test_large_body_with_flow_control_arrives_intact(run: Run) -> None:
    large = bytes(range(256)) * (5 * 1024 * 4)  # 5 MiB, not one repeated byte

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for _ in _requests(reader):
            writer.write(_ok(large))
            await writer.drain()

    async def body(host: str) -> tuple[str, int, bytes]:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            digest = hashlib.sha256()
            biggest = 0
            async with client.stream("GET", f"http://{host}/") as response:
                async for chunk in response.aiter_raw():
                    digest.update(chunk)
                    biggest = max(biggest, len(chunk))
                    await asyncio.sleep(0.002)  # a slow consumer: reading must pause
            # Paused and resumed, the connection is still good for the next answer.
            again = await client.get(f"http://{host}/")
            return digest.hexdigest(), biggest, hashlib.sha256(again.content).digest()

    hexdigest, biggest, again = run(with_server(serve, body))
    assert hexdigest == hashlib.sha256(large).hexdigest()
    assert again == hashlib.sha256(large).digest()
    # Without the pause the buffer would hold most of the 5 MiB by the first slow step.
    assert biggest <= HIGH_WATER + READ_SIZE


# -- what goes on the wire ------------------------------------------------------------------


def test_request_line_host_and_body_on_the_wire(run: Run) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for head, data in _requests(reader):
            seen.append((head, data))
            writer.write(_ok(b""))
            await writer.drain()

    async def body(host: str) -> str:
        async with LeanClient(base_url=f"http://{host}") as client:
            await client.get("/v2/x", params={"y": "1"})
            await client.post("/v2/upload", content=b"payload bytes",
                              headers={"Content-Type": "application/octet-stream"})
        return host

    host = run(with_server(serve, body))
    (get_head, get_body), (post_head, post_body) = seen
    get_lines = get_head.split(b"\r\n")
    assert get_lines[0] == b"GET /v2/x?y=1 HTTP/1.1"
    assert b"Host: " + host.encode() in get_lines
    assert not any(line.lower().startswith(b"content-length") for line in get_lines)
    assert get_body == b""
    post_lines = post_head.split(b"\r\n")
    assert post_lines[0] == b"POST /v2/upload HTTP/1.1"
    assert b"Host: " + host.encode() in post_lines
    lengths = [line for line in post_lines if line.lower().startswith(b"content-length:")]
    assert lengths == [b"Content-Length: 13"]
    assert post_body == b"payload bytes"


def test_streamed_request_body_is_framed_consistently(run: Run) -> None:
    """httpx marks a body from an async iterator `Transfer-Encoding: chunked`; whatever the
    transport sends, the server must be able to frame it (RFC 9112 6.2, 6.3)."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        writer.write(_ok(b""))
        await writer.drain()
        await _wait_for_close(reader)

    async def parts() -> AsyncIterator[bytes]:
        yield b"first "
        yield b"second"

    async def body(host: str) -> None:
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            await client.post(f"http://{host}/", content=parts())

    run(with_server(serve, body))
    names = [line.split(b":", 1)[0].lower() for line in seen[0].split(b"\r\n")[1:] if line]
    # A sender must not send Content-Length with Transfer-Encoding; and a body sent raw under
    # `Transfer-Encoding: chunked` is read by the server as garbage chunk sizes.
    assert not (b"content-length" in names and b"transfer-encoding" in names), seen[0]


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _tls_server(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)  # an IP SAN, as a loopback registry has
    return context


async def _tls_serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async for head, _ in _requests(reader):
        writer.write(_ok(b"over tls " + _target(head)))
        await writer.drain()


def test_tls_with_a_trusted_ca(run: Run, ca: trustme.CA) -> None:
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    async def body(host: str) -> list[bytes]:
        async with LeanClient(verify=trusting) as client:
            assert isinstance(client._transport, H1Transport)
            return [(await client.get(f"https://{host}/{i}")).content for i in range(2)]

    assert run(with_server(_tls_serve, body, tls=_tls_server(ca))) == [
        b"over tls /0", b"over tls /1"]


def test_tls_with_an_unknown_ca_is_a_connect_error_caused_by_ssl(run: Run,
                                                                 ca: trustme.CA) -> None:
    async def body(host: str) -> BaseException | None:
        async with LeanClient() as client:
            with pytest.raises(httpx.ConnectError) as raised:
                await client.get(f"https://{host}/")
            return raised.value.__cause__

    cause = run(with_server(_tls_serve, body, tls=_tls_server(ca)))
    # The client says "TLS verification failed" from this chain.
    assert isinstance(cause, ssl.SSLError), repr(cause)
