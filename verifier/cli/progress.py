"""A one-line progress display for `regverify scan`, on stderr, only when stderr is a terminal.

It implements `verifier.scan.ScanObserver`: the scan reports events, a ticker redraws the line
a few times a second. Without a TTY every method is a no-op, so logs and CI output hold only
the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

from verifier.model.findings import ImageResult, ImageStatus

#: The request rate is averaged over this many seconds.
RATE_WINDOW = 5.0


class ScanProgress:
    """Repositories and images done, defects so far and the request rate, redrawn in place."""

    def __init__(self, label: str, stream: TextIO | None = None, *,
                 enabled: bool | None = None, interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_tty(self.stream) if enabled is None else enabled
        self.interval = interval
        self._clock = clock
        self.repositories = 0
        self.images = 0
        self.broken = 0
        self.defects = 0
        self._requests: Callable[[], int] = lambda: 0
        self._samples: deque[tuple[float, int]] = deque()
        self._ticker: asyncio.Task[None] | None = None
        self._drawn = False

    # -- ScanObserver -----------------------------------------------------------------------

    def scan_started(self, requests: Callable[[], int]) -> None:
        """Start redrawing (called inside the running event loop)."""
        self._requests = requests
        if self.enabled:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def repository_done(self, repository: str) -> None:
        """Count a finished repository."""
        self.repositories += 1

    def image_done(self, image: ImageResult, defects: int) -> None:
        """Count a verified image and its defects."""
        self.images += 1
        self.defects += defects
        if image.status is ImageStatus.BROKEN:
            self.broken += 1

    def scan_finished(self) -> None:
        """Stop the ticker and erase the line, so the report starts on a clean line."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._drawn:
            self._write("\r\x1b[K")
            self._drawn = False

    # -- drawing ----------------------------------------------------------------------------

    def rate(self) -> float:
        """Requests per second over the last `RATE_WINDOW` seconds."""
        now, count = self._clock(), self._requests()
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        first_time, first_count = self._samples[0]
        elapsed = now - first_time
        return (count - first_count) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """The text of the progress line (without cursor control)."""
        rate = self.rate()
        return (f"scanning {self.label}: {self.repositories} repositories, {self.images} images "
                f"({self.broken} broken), {self.defects} defects, {self._requests()} requests, "
                f"{rate:.0f} req/s")

    def draw(self) -> None:
        """Redraw the line in place, cut to the terminal width."""
        width = shutil.get_terminal_size((100, 20)).columns
        self._write("\r\x1b[K" + self.line()[: max(width - 1, 10)])
        self._drawn = True

    async def _tick(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(self.interval)

    def _write(self, text: str) -> None:
        # A closed or broken terminal must never fail the scan itself.
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
