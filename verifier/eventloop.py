"""The event loop every command runs on: uvloop where installed, asyncio's own otherwise.

A scan is thousands of small exchanges, and the event loop's own work (readiness polling,
callbacks, timers) is a share of the client's CPU per request: uvloop does it in C
(bench/scan_bench.py runs the scan on both loops; the difference it measured is within the
run-to-run noise of a shared two-core machine).
`REGVERIFY_EVENT_LOOP=asyncio` chooses the standard loop, for comparison or where uvloop
misbehaves.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's default (not installed, or opted out)."""
    if os.environ.get("REGVERIFY_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the chosen event loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
