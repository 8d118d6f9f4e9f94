"""`regverify serve`: the schedule (one scan at a time, first at start-up, stop mid-scan), the
metrics it keeps between scans, and the real process on loopback scraped and stopped with
SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cli import RunCli
from tests.support.images import push_image
from tests.support.promtool import check_metrics
from tests.support.registry import RegistryServer, blob_data_path
from tests.test_prometheus import broken_images, samples, scan_report, value
from verifier.errors import RegistryUnreachable, UsageError
from verifier.model.findings import Finding, Kind, Report, Severity
from verifier.output.prometheus.exporter import (
    Exporter,
    ScanState,
    bind,
    parse_duration,
    parse_listen,
)
from verifier.output.prometheus.metrics import Identity, exposition

IDENTITY = Identity("reg.example.com", "scan")

# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("15m", 900), ("90s", 90), ("1h30m", 5400), ("2h", 7200), ("900", 900), ("2.5m", 150),
    (" 10S ", 10),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "15x", "-5m", "0s", "0.5", "1d"])
def test_bad_duration_is_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--interval"):
        parse_duration(text)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9731") == ("127.0.0.1", 9731)
    assert parse_listen(":9731") == ("0.0.0.0", 9731)
    assert parse_listen("[::1]:9731") == ("::1", 9731)
    for bad in ("127.0.0.1", "host:port", "1.2.3.4:99999"):
        with pytest.raises(UsageError, match="--listen"):
            parse_listen(bad)


# --- the state between scans ------------------------------------------------------------------


def _text(state: ScanState) -> str:
    return exposition(list(state.collect()))


def test_state_complete_failed_incomplete() -> None:
    state = ScanState(IDENTITY, 500)
    assert value(_text(state), "regverify_scan_in_progress") == 0
    assert "regverify_last_run_timestamp_seconds" not in samples(_text(state))

    assert state.record(scan_report(broken=2)) == "complete"
    first = _text(state)
    check_metrics(first)
    assert broken_images(first) == {("app/b0", "v1"), ("app/b1", "v1")}
    success = value(first, "regverify_last_success_timestamp_seconds")

    state.record_failure(1.5)
    failed = _text(state)
    assert value(failed, "regverify_catalog_accessible") == 0
    assert value(failed, "regverify_last_success_timestamp_seconds") == success
    assert broken_images(failed) == broken_images(first)

    incomplete = scan_report(broken=0)
    incomplete.add(Finding(Kind.REQUEST_FAILED, Severity.ERROR, "503", "app/x", "v1"))
    assert state.record(incomplete) == "incomplete"
    text = _text(state)
    check_metrics(text)
    assert value(text, "regverify_last_success_timestamp_seconds") == success
    # Requests add up over the exporter's life: a counter never goes down between scrapes.
    assert value(text, "regverify_requests_total", code="200") == 14
    assert {lab["result"]: v for lab, v in samples(text)["regverify_scans_total"]} == {
        "complete": 1, "incomplete": 1, "failed": 1}


# --- the schedule (fake scans; no wall-clock assertions) ---------------------------------------


class FakeScans:
    """Scans that record how many run at once; `gate` holds a scan until released."""

    def __init__(self, *, hold: bool = False, fail_first: bool = False) -> None:
        self.started = 0
        self.running = 0
        self.max_running = 0
        self.cancelled = False
        self.hold = hold
        self.fail_first = fail_first
        self.first_started = asyncio.Event()

    async def __call__(self) -> Report:
        self.started += 1
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.first_started.set()
        try:
            if self.hold:
                await asyncio.Event().wait()  # until cancelled
            await asyncio.sleep(0.01)
            if self.fail_first and self.started == 1:
                raise RegistryUnreachable("registry reg.example.com unreachable")
            return scan_report()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.running -= 1


def test_scans_never_overlap_and_the_first_runs_at_start_up() -> None:
    scans = FakeScans(fail_first=True)
    # An interval shorter than a scan: each next scan must still wait for the previous one.
    exporter = Exporter(scans, IDENTITY, interval=0.001)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(exporter.run(stop))
        await scans.first_started.wait()  # no wait before the first scan
        while scans.started < 5:
            await asyncio.sleep(0.005)
        stop.set()
        await task

    asyncio.run(main())
    assert scans.max_running == 1
    text = _text(exporter.state)
    results = {lab["result"]: v for lab, v in samples(text)["regverify_scans_total"]}
    assert results["failed"] == 1 and results["complete"] >= 3
    assert not exporter.state.healthy


def test_stop_cancels_a_scan_in_progress() -> None:
    scans = FakeScans(hold=True)
    exporter = Exporter(scans, IDENTITY, interval=3600)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(exporter.run(stop))
        await scans.first_started.wait()
        assert value(_text(exporter.state), "regverify_scan_in_progress") == 1
        stop.set()
        await asyncio.wait_for(task, timeout=30)

    asyncio.run(main())
    assert scans.cancelled and scans.started == 1
    text = _text(exporter.state)
    assert value(text, "regverify_scan_in_progress") == 0
    assert "regverify_last_run_timestamp_seconds" not in samples(text)


def test_stop_between_scans_does_not_wait_for_the_interval() -> None:
    scans = FakeScans()
    exporter = Exporter(scans, IDENTITY, interval=3600)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(exporter.run(stop))
        while "regverify_last_run_timestamp_seconds" not in samples(_text(exporter.state)):
            await asyncio.sleep(0.005)
        stop.set()
        await asyncio.wait_for(task, timeout=30)

    asyncio.run(main())
    assert scans.started == 1


def test_a_port_in_use_is_a_usage_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match="--listen"):
            bind(("127.0.0.1", port), Exporter(FakeScans(), IDENTITY, 60))


# --- the real process ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """`regverify serve` as a real process on loopback; always stopped by the fixture."""

    def __init__(self, *args: str, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "verifier", "serve", *args,
                 "--listen", f"127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "NO_PROXY": "127.0.0.1"},
            )

    def get(self, path: str) -> httpx.Response:
        with httpx.Client(trust_env=False, timeout=5) as client:
            return client.get(self.url + path)

    def wait_for(self, predicate_path: str, contains: str, attempts: int = 300) -> str:
        """Poll `path` until its body contains `contains` (bounded; fails with the log)."""
        for _ in range(attempts):
            assert self.proc.poll() is None, self.log.read_text()
            try:
                response = self.get(predicate_path)
                if response.status_code == 200 and contains in response.text:
                    return response.text
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"{predicate_path} never showed {contains!r}:\n{self.log.read_text()}")

    def terminate(self) -> int:
        """SIGTERM and wait; a process that does not stop is killed and fails the test."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"serve ignored SIGTERM:\n{self.log.read_text()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.close()


@pytest.mark.registry
def test_serve_scrape_and_sigterm(registry: RegistryServer, tmp_path: Path,
                                  serve_process: list[ServeProcess]) -> None:
    web = push_image(registry, "app/web", "v1")
    push_image(registry, "app/web", "v2")
    blob_data_path(registry.v2, web.layers[0].digest).unlink()
    registry.restart()
    server = ServeProcess(registry.host, "--plain-http", "--interval", "1h",
                          log=tmp_path / "serve.log")
    serve_process.append(server)

    text = server.wait_for("/metrics", "regverify_last_run_timestamp_seconds")
    check_metrics(text)
    assert broken_images(text) == {("app/web", "v1")}
    assert value(text, "regverify_images_checked", registry=registry.host, mode="scan") == 2
    assert value(text, "regverify_scans_total", result="complete") == 1
    assert "process_cpu_seconds_total" in samples(text)  # the exporter's own metrics
    health = server.get("/healthz")
    assert (health.status_code, health.text) == (200, "ok\n")
    assert server.get("/nope").status_code == 404

    assert server.terminate() == 0
    assert "stopped" in (tmp_path / "serve.log").read_text()


@pytest.mark.registry
def test_serve_stops_mid_scan_on_sigterm(registry: RegistryServer, tmp_path: Path,
                                         serve_process: list[ServeProcess]) -> None:
    for i in range(3):
        push_image(registry, f"app/r{i}", "v1")
    # 0.2 requests a second: the first scan lasts well over a minute, so it is in progress.
    server = ServeProcess(registry.host, "--plain-http", "--interval", "1h", "--max-rps", "0.2",
                          log=tmp_path / "serve.log")
    serve_process.append(server)
    # The gauge exists from start-up at 0; wait until the first scan has really begun.
    text = server.wait_for("/metrics", "regverify_scan_in_progress{")
    for _ in range(300):
        if value(text, "regverify_scan_in_progress") == 1:
            break
        time.sleep(0.1)
        text = server.get("/metrics").text
    assert value(text, "regverify_scan_in_progress") == 1
    assert "regverify_last_run_timestamp_seconds" not in samples(text)

    assert server.terminate() == 0
    log = (tmp_path / "serve.log").read_text()
    assert "cancelling the scan in progress" in log and "Traceback" not in log


def test_serve_records_an_unreachable_registry(tmp_path: Path,
                                               serve_process: list[ServeProcess]) -> None:
    server = ServeProcess(f"127.0.0.1:{_free_port()}", "--plain-http", "--retries", "0",
                          "--interval", "1h", log=tmp_path / "serve.log")
    serve_process.append(server)
    text = server.wait_for("/metrics", "regverify_catalog_accessible{")
    check_metrics(text)
    assert value(text, "regverify_catalog_accessible") == 0
    assert value(text, "regverify_scans_total", result="failed") == 1
    assert server.get("/healthz").status_code == 200  # the exporter itself is fine
    assert server.terminate() == 0


def test_serve_bad_options_exit_2(tmp_path: Path, run_cli: RunCli) -> None:
    for args in (["--interval", "soon"], ["--listen", "nowhere"]):
        # A real process: were the options accepted, the exporter would serve until killed.
        run = run_cli("serve", "127.0.0.1:5000", *args, subprocess=True, timeout=60)
        assert run.exit_code == 2 and "regverify: error:" in run.stderr
