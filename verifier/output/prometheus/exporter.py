"""`regverify serve`: scan a registry on a schedule and serve the results to Prometheus.

One scan at a time, never overlapping: the scheduler awaits each scan before it waits for the
next slot, the first scan runs at start-up, and a scan that overruns its interval is followed by
the next one at once rather than by a pile-up. `/metrics` serves the metrics of the last scan
that finished (the same families as `--format prometheus`, with the rules of `destinations` for
scans that could not complete) plus the exporter's own process metrics; `/healthz` says whether
the scheduler is alive. SIGTERM or SIGINT stop it within a few seconds, a scan in progress
included: the scan is cancelled, not waited for.

The HTTP server runs in a thread; the scheduler and the scans share one asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from verifier import eventloop
from verifier.errors import UsageError, VerifierError
from verifier.model.findings import Report
from verifier.output.prometheus.metrics import (
    DEFAULT_MAX_BROKEN_SERIES,
    Identity,
    failure_families,
    merge_families,
    report_families,
    run_completed,
)

log = logging.getLogger("regverify.serve")

#: How long a cancelled scan may take to unwind before the exporter exits anyway.
STOP_GRACE = 3.0

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> float:
    """`15m`, `90s`, `1h30m`, `2h` or plain seconds (`900`) -> seconds; UsageError otherwise."""
    value = text.strip().lower()
    match = _DURATION_RE.match(value)
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        seconds = float(value)
    elif value and match is not None and any(match.groups()):
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise UsageError(f"--interval {text!r}: expected a duration like 15m, 90s or 1h30m")
    if seconds < 1:
        raise UsageError(f"--interval {text!r}: must be at least one second")
    return seconds


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (every interface) -> (host, port)."""
    parts = urlsplit(f"//{text.strip()}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9731")
    return parts.hostname or "0.0.0.0", port


class ScanState(Collector):
    """What `/metrics` shows: the latest scan families and the exporter's own counters.

    Written by the scheduler, read by HTTP threads: every access holds the lock, and readers
    get a snapshot of the lists.
    """

    def __init__(self, identity: Identity, max_broken_series: int) -> None:
        self.identity = identity
        self.max_broken_series = max_broken_series
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self._requests: Counter[str] = Counter()
        self._scans: Counter[str] = Counter({"complete": 0, "incomplete": 0, "failed": 0})
        self._in_progress = False
        self.healthy = False

    def begin(self) -> None:
        """A scan started."""
        with self._lock:
            self._in_progress = True

    def abandon(self) -> None:
        """A scan was cancelled (shutdown): it changes nothing."""
        with self._lock:
            self._in_progress = False

    def record(self, report: Report) -> str:
        """A scan finished with a report; returns `complete` or `incomplete`."""
        with self._lock:
            # Running totals: the counter must only grow over the exporter's life.
            self._requests.update(report.requests_by_code)
            update = report_families(report, self.identity,
                                     max_broken_series=self.max_broken_series,
                                     requests_by_code=self._requests)
            outcome = "complete" if run_completed(report) else "incomplete"
            if outcome == "complete":
                self._families = update
            else:
                self._families = merge_families(self._families, update, self.identity)
            self._scans[outcome] += 1
            self._in_progress = False
            return outcome

    def record_failure(self, duration: float) -> None:
        """A scan raised before producing a report: timestamp, duration, catalog 0."""
        with self._lock:
            update = failure_families(self.identity, ended=time.time(), duration=duration)
            self._families = merge_families(self._families, update, self.identity)
            self._scans["failed"] += 1
            self._in_progress = False

    def collect(self) -> Iterator[Metric]:
        """The latest scan's families, then the exporter's own."""
        with self._lock:
            families = list(self._families)
            scans = dict(self._scans)
            in_progress = self._in_progress
        names, values = self.identity.label_names, self.identity.label_values
        total = CounterMetricFamily("regverify_scans", "Scans the exporter ran, by result "
                                    "(complete, incomplete, failed).", labels=[*names, "result"])
        for result, count in sorted(scans.items()):
            total.add_metric([*values, result], count)
        busy = GaugeMetricFamily("regverify_scan_in_progress",
                                 "1 while the exporter is scanning.", labels=names)
        busy.add_metric(values, 1 if in_progress else 0)
        return iter([*families, total, busy])


class Exporter:
    """Runs `scan` every `interval` seconds into a `ScanState`, until told to stop."""

    def __init__(self, scan: Callable[[], Awaitable[Report]], identity: Identity,
                 interval: float, *, max_broken_series: int = DEFAULT_MAX_BROKEN_SERIES) -> None:
        self.scan = scan
        self.interval = interval
        self.state = ScanState(identity, max_broken_series)

    async def scan_once(self) -> None:
        """One scan; its outcome goes to the state. Only cancellation escapes."""
        self.state.begin()
        started = time.monotonic()
        try:
            report = await self.scan()
        except asyncio.CancelledError:
            self.state.abandon()
            raise
        except VerifierError as exc:
            self.state.record_failure(time.monotonic() - started)
            log.warning("scan could not complete: %s", exc)
        except Exception:
            # A bug must not kill the exporter: record the failed run, keep the schedule.
            self.state.record_failure(time.monotonic() - started)
            log.exception("scan failed with an internal error")
        else:
            outcome = self.state.record(report)
            summary = report.summary()
            log.info("scan %s: %d images, %d broken, %d defects, %d requests in %.1fs",
                     outcome, summary["images"], summary["images_broken"], summary["defects"],
                     summary["requests"], report.duration_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """Scan now, then every `interval` seconds, until `stop` is set (mid-scan included)."""
        self.state.healthy = True
        try:
            while not stop.is_set():
                began = time.monotonic()
                if not await self._scan_or_stop(stop):
                    return
                wait = self.interval - (time.monotonic() - began)
                if wait <= 0:
                    log.warning("scan took longer than the interval (%.0fs); next scan now",
                                self.interval)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
        finally:
            self.state.healthy = False

    async def _scan_or_stop(self, stop: asyncio.Event) -> bool:
        scan = asyncio.create_task(self.scan_once())
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({scan, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if scan in done:
            stopping.cancel()
            scan.result()
            return True
        log.info("stopping: cancelling the scan in progress")
        scan.cancel()
        await asyncio.wait({scan}, timeout=STOP_GRACE)
        return False


def metrics_registry(state: ScanState) -> CollectorRegistry:
    """The exporter's registry: scan metrics plus its own process, platform and GC metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(state)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _handler(registry: CollectorRegistry, state: ScanState) -> type[MetricsHandler]:
    class Handler(MetricsHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/metrics":
                super().do_GET()
            elif path == "/healthz":
                # Liveness of the exporter, not the registry's health: a broken registry
                # must raise alerts, not restart the pod that reports it.
                ok = state.healthy
                self._text(200 if ok else 503, "ok\n" if ok else "stopping\n")
            elif path == "/":
                self._text(200, "regverify exporter: /metrics, /healthz\n")
            else:
                self._text(404, "not found\n")

        def _text(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    Handler.registry = registry
    return Handler


def bind(listen: tuple[str, int], exporter: Exporter) -> ThreadingHTTPServer:
    """The HTTP server on `listen` (not yet serving); UsageError if it cannot bind."""
    host, port = listen
    handler = _handler(metrics_registry(exporter.state), exporter.state)

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    try:
        return Server((host, port), handler)
    except OSError as exc:
        raise UsageError(f"--listen {host}:{port}: {exc.strerror or exc}") from None


def serve(exporter: Exporter, listen: tuple[str, int]) -> None:
    """Serve HTTP and run the schedule until SIGTERM/SIGINT; returns once both are stopped."""
    server = bind(listen, exporter)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="regverify-http", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    log.info("listening on %s:%s; scanning every %.0fs", host, port, exporter.interval)
    try:
        eventloop.run(_run_until_signalled(exporter))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=STOP_GRACE)
    log.info("stopped")


async def _run_until_signalled(exporter: Exporter) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await exporter.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
