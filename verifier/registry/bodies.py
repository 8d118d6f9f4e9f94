"""Reading response bodies with a cap on the bytes held, after any content decoding.

Every body the client reads goes through here. The client asks for `Accept-Encoding: identity`,
but a server or a proxy may compress anyway; Go's clients decode such answers, so a manifest
sent gzip-encoded is still a manifest (its digest is over the decoded bytes, as distribution
stores it). Decoding is incremental, with zlib's own output limit (`max_length`), so a small
compressed body that inflates to hundreds of megabytes stops at the cap instead of filling
memory first: the bytes held never exceed the cap plus one decoder step.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator

import httpx

#: Largest piece one decoder step may produce (zlib's `max_length`).
STEP = 64 * 1024
#: What is read of a body nobody needs whole (redirects, challenges, error pages).
SMALL_BODY = 4 * 1024
#: zlib's window bits for each encoding: gzip header, zlib header; raw deflate is tried when
#: a server sends `deflate` without the zlib header (several do, and browsers accept it).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class BodyDecodingError(Exception):
    """The body does not decode as its `Content-Encoding` says (or the encoding is unknown)."""


class BodyCutShort(Exception):
    """The connection failed before the body was complete; `received` raw bytes did arrive."""

    def __init__(self, reason: str, received: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.received = received


def content_codings(response: httpx.Response) -> list[str]:
    """The `Content-Encoding` codings in the order they were applied, identity left out."""
    value = response.headers.get("content-encoding", "")
    codings = [c.strip().lower() for c in value.split(",")]
    return [c for c in codings if c and c != "identity"]


class _Inflater:
    """One zlib coding, fed piece by piece, never producing more than STEP bytes at a time."""

    def __init__(self, coding: str) -> None:
        if coding not in _WBITS:
            raise BodyDecodingError(f"unsupported Content-Encoding {coding[:40]!r}")
        self._coding = coding
        self._zlib = zlib.decompressobj(_WBITS[coding])
        self._first = True

    def feed(self, data: bytes | memoryview) -> Iterator[bytes]:
        """Decoded pieces of `data` (each at most STEP bytes); bytes after the stream's end are
        ignored, never kept."""
        while data and not self._zlib.eof:
            try:
                out = self._zlib.decompress(data, STEP)
            except zlib.error as exc:
                if self._first and self._coding == "deflate":
                    # No zlib header: raw deflate, as some servers send it.
                    self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._first = False
                    continue
                raise BodyDecodingError(f"{self._coding} body does not decode: {exc}") from None
            self._first = False
            data = self._zlib.unconsumed_tail
            if out:
                yield out

    def finish(self) -> None:
        """Raise when the compressed stream ended early (a body cut short or a lie)."""
        if not self._zlib.eof:
            raise BodyDecodingError(f"{self._coding} body ends before its compressed stream")


def _decode(pieces: Iterator[bytes | memoryview], inflater: _Inflater) -> Iterator[bytes]:
    for piece in pieces:
        yield from inflater.feed(piece)


class Decoder:
    """Decodes a body's codings (last applied, first undone) a piece at a time."""

    def __init__(self, codings: list[str]) -> None:
        self._inflaters = [_Inflater(c) for c in reversed(codings)]

    @property
    def identity(self) -> bool:
        """True when there is nothing to decode."""
        return not self._inflaters

    def feed(self, data: bytes | memoryview) -> Iterator[bytes]:
        """Decoded pieces of the next raw chunk."""
        if not self._inflaters:
            yield bytes(data)
            return
        pieces: Iterator[bytes] = _decode(iter((data,)), self._inflaters[0])
        for inflater in self._inflaters[1:]:
            pieces = _decode(pieces, inflater)
        yield from pieces

    def finish(self) -> None:
        """Check that every coding's stream ended."""
        for inflater in self._inflaters:
            inflater.finish()


async def raw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as sent, as it arrives (no re-chunking, no decoding).

    No chunk size: a re-chunking buffer would swallow the bytes that did arrive when the
    connection drops, and a truncated read would then report 0 bytes received.
    """
    if response.is_stream_consumed:  # a response built in memory (tests)
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


def _decoded(raw: bytes, codings: list[str]) -> Iterator[bytes]:
    decoder = Decoder(codings)
    view = memoryview(raw)
    for start in range(0, len(raw), STEP):  # small slices: zlib copies the unconsumed tail
        yield from decoder.feed(view[start:start + STEP])
    decoder.finish()


async def read_capped(response: httpx.Response, cap: int) -> tuple[bytes, int, bool]:
    """(decoded body, raw bytes received, over the cap) for a streamed response.

    At most `cap` bytes of the body as sent are held. A body with a `Content-Encoding` is then
    decoded twice: once counting what it inflates to, holding nothing, and only when that fits
    under `cap` once more to keep -- so a 200 KB body that inflates to 200 MB costs 200 KB of
    memory and some CPU, never the cap. Raises BodyCutShort when the connection fails mid-body,
    BodyDecodingError when the body does not decode as its coding says.
    """
    if response.is_stream_consumed:
        # A response built in memory (tests): httpx has already decoded it.
        body = response.content
        return (b"", len(body), True) if len(body) > cap else (body, len(body), False)
    codings = content_codings(response)
    # Deflate adds 5 bytes per 64 KiB stored block: an encoded body within the cap is raw
    # within the cap plus a step.
    raw_cap = cap + STEP if codings else cap
    raw = bytearray()
    try:
        async for chunk in raw_chunks(response):
            raw += chunk
            if len(raw) > raw_cap:
                return b"", len(raw), True
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise BodyCutShort(f"body cut short: {type(exc).__name__}", len(raw)) from None
    if not codings:
        return bytes(raw), len(raw), False
    size = 0
    for piece in _decoded(bytes(raw), codings):
        size += len(piece)
        if size > cap:
            return b"", len(raw), True
    return b"".join(_decoded(bytes(raw), codings)), len(raw), False


async def discard(response: httpx.Response) -> None:
    """Read at most SMALL_BODY raw bytes of a body nobody needs, then close the response.

    A small body read to its end keeps the connection for the next request; anything longer
    is not worth reading, and closing an unfinished response closes its connection.
    """
    received = 0
    try:
        async for chunk in raw_chunks(response):
            received += len(chunk)
            if received > SMALL_BODY:
                break
    except (httpx.TransportError, httpx.StreamError):
        pass  # nothing of this body was wanted
    finally:
        await response.aclose()
