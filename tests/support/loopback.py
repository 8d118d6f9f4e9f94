"""A raw-bytes HTTP server on 127.0.0.1 for transport tests (test_transport.py).

Each test's `serve` writes exactly the bytes it is about; `with_server` runs `body(host)`
against it and closes every connection afterwards.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def with_server(serve: Serve, body: Callable[[str], Awaitable[T]],
                      tls: ssl.SSLContext | None = None) -> T:
    """Run `body(host)` against a loopback server; every connection is closed afterwards."""
    handlers: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await serve(reader, writer)
        except asyncio.CancelledError:
            pass  # the teardown below: a cancelled handler would be logged as an error
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away, which several tests make it do on purpose

    server = await asyncio.start_server(tracked, "127.0.0.1", 0, ssl=tls)
    host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        return await body(host)
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for writer in writers:
            writer.close()
        await server.wait_closed()
