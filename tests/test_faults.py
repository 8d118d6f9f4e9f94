"""Transient faults never change a verdict: retries, Retry-After, deadlines, a registry gone.

The acceptance test scans one damaged real registry directly and then through `FaultProxy`
(503/429/502/504 with and without Retry-After, connection resets, bodies cut short, delays,
stalls longer than --timeout) and demands the same broken images, the same defects and no
healthy image reported broken. The unit half pins the retry policy with an in-memory transport
and a recorded `asyncio.sleep`, so nothing here asserts wall-clock time.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.cli import CliResult, run_cli
from tests.support.faultproxy import FAULTS, FaultPlan, FaultProxy, describe, run_proxy_requests
from tests.support.images import make_layer, push_image, push_index
from tests.support.registry import RegistryServer, blob_data_path, revision_link_path
from verifier.errors import RegistryUnreachable
from verifier.registry import client as client_module
from verifier.registry.client import ClientOptions, RegistryClient, RequestFailed
from verifier.registry.retry import parse_retry_after


def scan(host: str, *args: str) -> CliResult:
    """`regverify scan HOST --plain-http --format json ARGS`, in-process, no traceback."""
    return run_cli("scan", host, "--plain-http", "--format", "json", *args, no_traceback=True)


def verdicts(doc: dict[str, Any]) -> dict[str, str]:
    """`repo:tag` -> status, independent of the host the scan went through."""
    return {f"{i['repository']}:{i['tag']}": i["status"] for i in doc["images"]}


def defects(doc: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(kind, repository, reference, digest) of every defect."""
    return {(f["kind"], f["repository"], f["reference"], f["digest"] or "")
            for f in doc["findings"] if f["severity"] == "error"
            and f["kind"] not in ("request_failed", "auth_failed", "catalog_inaccessible")}


# --- the damaged registry ----------------------------------------------------------------------


@dataclass
class Damaged:
    """A registry with healthy and damaged images, and the verdict of a direct scan."""

    server: RegistryServer
    broken: set[str]
    healthy: set[str]
    baseline: dict[str, Any]
    deep_baseline: dict[str, Any]


@pytest.fixture(scope="module")
def damaged(registry_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Damaged]:
    """Eleven images of every kind; five damaged the ways production damages them."""
    server = RegistryServer(workdir=tmp_path_factory.mktemp("faults") / "registry",
                            registry_bin=registry_bin)
    server.start()
    try:
        yield _damage(server)
    finally:
        server.stop()


def _damage(server: RegistryServer) -> Damaged:
    base = make_layer("faults-base", size=64 * 1024)
    healthy = {"app/web:v1", "legacy/api:v1", "multi/arch:v1", "multi/list:v1",
               "shared/base:v1", "shared/base:v2"}
    push_image(server, "app/web", "v1", layers=[base, make_layer("web-v1")])
    push_image(server, "legacy/api", "v1", oci=False)
    push_index(server, "multi/arch", "v1")
    push_index(server, "multi/list", "v1", oci=False)
    push_image(server, "shared/base", "v1", layers=[base])
    push_image(server, "shared/base", "v2", layers=[base, make_layer("shared-v2")])
    cold_missing = push_image(server, "app/web", "v2")
    config_gone = push_image(server, "legacy/api", "v2", oci=False)
    child_gone = push_index(server, "multi/arch", "v2")
    truncated = push_image(server, "app/web", "v3", layers=[make_layer("v3", size=32 * 1024)])
    warm = push_image(server, "app/warm", "v1")
    broken = {"app/web:v2", "legacy/api:v2", "multi/arch:v2", "app/web:v3", "app/warm:v1"}

    blob_data_path(server.v2, cold_missing.layers[1].digest).unlink()
    blob_data_path(server.v2, config_gone.config.digest).unlink()
    revision_link_path(server.v2, "multi/arch", child_gone.children[1].digest).unlink()
    path = blob_data_path(server.v2, truncated.layers[0].digest)
    path.write_bytes(path.read_bytes()[:1000])
    server.restart()
    run = scan(server.host)  # warms the blob descriptor cache for every healthy blob
    doc = run.json()
    assert run.exit_code == 1, doc
    blob_data_path(server.v2, warm.layers[0].digest).unlink()  # the real incident: warm, gone

    run = scan(server.host)
    baseline = run.json()
    assert run.exit_code == 1
    assert {r for r, s in verdicts(baseline).items() if s == "broken"} == broken, baseline
    assert {r for r, s in verdicts(baseline).items() if s == "ok"} == healthy
    run = scan(server.host, "--deep")
    deep_baseline = run.json()
    assert run.exit_code == 1
    assert verdicts(deep_baseline) == verdicts(baseline)
    return Damaged(server, broken, healthy, baseline, deep_baseline)


# --- acceptance: same verdicts through a flaky network -----------------------------------------


@pytest.mark.registry
@pytest.mark.parametrize("seed", [1, 2])
def test_scan_through_faults_reports_exactly_the_same_broken_images(
    damaged: Damaged, seed: int
) -> None:
    plan = FaultPlan(seed=seed, rate=0.35, max_streak=2)
    with FaultProxy(damaged.server.url, plan) as proxy:
        run = scan(proxy.host)
    doc = run.json()
    note = describe(proxy.events)
    assert run.exit_code == 1, (note, doc["findings"])
    assert verdicts(doc) == verdicts(damaged.baseline), note
    assert defects(doc) == defects(damaged.baseline), note
    assert not any(f["kind"] == "request_failed" for f in doc["findings"]), note
    # The run really went through a flaky network: most kinds of fault were injected.
    assert len(proxy.injected) >= 8 and sum(proxy.injected.values()) >= 20, note
    # Retries show in the request counts: more requests than the direct scan needed.
    assert doc["summary"]["requests"] > damaged.baseline["summary"]["requests"]


@pytest.mark.registry
def test_deep_scan_through_faults_matches(damaged: Damaged) -> None:
    plan = FaultPlan(seed=11, rate=0.35, faults=("truncate", "reset", "503", "delay"))
    with FaultProxy(damaged.server.url, plan) as proxy:
        run = scan(proxy.host, "--deep")
    doc = run.json()
    assert run.exit_code == 1
    assert verdicts(doc) == verdicts(damaged.deep_baseline), describe(proxy.events)
    assert defects(doc) == defects(damaged.deep_baseline)
    assert proxy.injected["truncate"] > 0


@pytest.mark.registry
def test_stalls_longer_than_the_timeout_are_retried(damaged: Damaged) -> None:
    # Each stalled answer comes after the client's --timeout: it gives up, then tries again.
    plan = FaultPlan(seed=5, rate=0.2, faults=("delay",), delay=(1.0, 1.2), max_streak=1)
    with FaultProxy(damaged.server.url, plan) as proxy:
        run = scan(proxy.host, "--timeout", "0.5")
    doc = run.json()
    assert run.exit_code == 1
    assert verdicts(doc) == verdicts(damaged.baseline), describe(proxy.events)
    assert defects(doc) == defects(damaged.baseline)
    assert proxy.injected["delay"] > 0


@pytest.mark.registry
@pytest.mark.parametrize("fault", ["503", "429-retry-after-seconds", "reset", "502"])
def test_faults_outlasting_the_retries_are_errors_never_defects(
    damaged: Damaged, fault: str
) -> None:
    """Every request fails every time: nothing is verified, nothing is called broken, exit 3."""
    plan = FaultPlan(seed=0, rate=1.0, faults=(fault,), max_streak=10**6,
                     retry_after_seconds=(0,))
    with FaultProxy(damaged.server.url, plan) as proxy:
        run = run_cli("scan", proxy.host, "--plain-http", "--format", "json", "--retries", "1",
                      no_traceback=True)
    assert run.exit_code == 3
    assert "unreachable" in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert run.stdout == ""  # no report, so no image can be called broken


@pytest.mark.registry
def test_blob_faults_outlasting_the_retries_make_images_error_not_broken(
    damaged: Damaged,
) -> None:
    """Manifests come through; every blob request answers 503: every image is `error`."""

    async def blobs_unavailable(exchange: Any) -> None:
        if "/blobs/" in exchange.request.path:
            await exchange.respond(503, b"busy\n", [("Retry-After", "0")])

    with FaultProxy(damaged.server.url, intercept=blobs_unavailable) as proxy:
        run = scan(proxy.host, "--retries", "1", "--tag", "v1")
    doc = run.json()
    assert run.exit_code == 3
    for ref, status in verdicts(doc).items():
        assert status == "error", (ref, doc["findings"])
    assert {f["kind"] for f in doc["findings"]} == {"request_failed"}
    assert all(f["http_status"] == 503 for f in doc["findings"])


@pytest.mark.registry
def test_registry_lost_mid_scan_never_calls_a_healthy_image_broken(damaged: Damaged) -> None:
    true = verdicts(damaged.baseline)
    with FaultProxy(damaged.server.url) as proxy:
        proxy.gone_after = 40  # the registry vanishes after 40 requests
        run = scan(proxy.host, "--retries", "1", "--concurrency", "2")
    got = verdicts(run.json())
    assert run.exit_code in (1, 3)
    assert "error" in got.values()
    for ref, status in got.items():
        assert status in (true[ref], "error"), (ref, status)
    if run.exit_code == 1:
        assert "broken" in got.values()
    else:
        assert "broken" not in got.values()


@pytest.mark.registry
def test_registry_gone_entirely(damaged: Damaged) -> None:
    """Connection refused, a proxy answering 502, a proxy resetting: exit 3, one clear line."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    with FaultProxy(f"http://{dead}") as bad_gateway, FaultProxy(damaged.server.url) as resets:
        resets.upstream_gone = True
        for command in (["scan", dead], ["image", f"{dead}/app/web:v1"],
                        ["scan", bad_gateway.host], ["image", f"{resets.host}/app/web:v1"]):
            # The first in a real process, as CI runs it; the others in-process.
            real = command[0] == "scan" and command[1] == dead
            run = run_cli(*command, "--plain-http", "--format", "json", "--retries", "1",
                          subprocess=real, no_traceback=True)
            err = run.stderr
            assert run.exit_code == 3, (command, err)
            assert run.stdout == ""
            assert err.startswith("regverify: error: registry ") and "unreachable" in err
            assert err.count("\n") == 1


# --- the proxy itself ----------------------------------------------------------------------------


@pytest.mark.registry
def test_fault_proxy_is_deterministic_per_seed(damaged: Damaged) -> None:
    requests = [("GET", "/v2/"), ("HEAD", "/v2/app/web/manifests/v1"),
                ("GET", "/v2/_catalog")] * 8
    runs = []
    for seed in (7, 7, 8):
        with FaultProxy(damaged.server.url, FaultPlan(seed=seed, rate=0.5)) as proxy:
            runs.append(run_proxy_requests(proxy, requests))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert set(runs[0]) - {"none"} <= set(FAULTS)


# --- the retry policy, without a network ---------------------------------------------------------


class _Script:
    """An in-memory registry answering from a list of responses, recording every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _run_head(script: _Script, monkeypatch: pytest.MonkeyPatch,
              **options: Any) -> tuple[Any, list[float]]:
    """HEAD a blob through `script`; return the result (or the exception) and the sleeps."""
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    monkeypatch.setattr(client_module.asyncio, "sleep", fake_sleep)

    async def main() -> Any:
        opts = ClientOptions(plain_http=True, **options)
        async with RegistryClient("r.test", opts, transport=httpx.MockTransport(script)) as c:
            try:
                return await c.head_blob("app", "sha256:" + "a" * 64)
            except RequestFailed as exc:
                return exc

    return asyncio.run(main()), sleeps


def test_retry_after_seconds_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    script = _Script(httpx.Response(503, headers={"Retry-After": "7"}),
                     httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200))
    result, sleeps = _run_head(script, monkeypatch)
    assert result.status == 200
    assert sleeps == [7.0, 3.0]


def test_retry_after_http_date_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    script = _Script(httpx.Response(503, headers={"Retry-After": when}), httpx.Response(200))
    result, sleeps = _run_head(script, monkeypatch)
    assert result.status == 200
    assert len(sleeps) == 1 and 27 <= sleeps[0] <= 31


def test_retry_after_beyond_the_deadline_gives_up_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = _Script(httpx.Response(503, headers={"Retry-After": "3600"}))
    result, sleeps = _run_head(script, monkeypatch, deadline=30.0)
    assert isinstance(result, RequestFailed) and result.status == 503
    assert sleeps == [] and len(script.seen) == 1


def test_backoff_grows_with_jitter_and_stops_at_the_attempt_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = _Script(httpx.Response(502))
    result, sleeps = _run_head(script, monkeypatch, retries=4, backoff_base=1.0)
    assert isinstance(result, RequestFailed)
    assert len(script.seen) == 5 and len(sleeps) == 4
    for attempt, delay in enumerate(sleeps, start=1):
        ceiling = 2.0 ** (attempt - 1)
        assert ceiling / 2 <= delay <= ceiling
    assert "5 attempts" in str(result) and "HTTP 502" in str(result)


@pytest.mark.parametrize("status", [404, 500, 400, 403, 200])
def test_definite_answers_are_never_retried(monkeypatch: pytest.MonkeyPatch,
                                            status: int) -> None:
    script = _Script(httpx.Response(status))
    result, sleeps = _run_head(script, monkeypatch)
    assert result.status == status
    assert len(script.seen) == 1 and sleeps == []


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                                   httpx.RemoteProtocolError("cut")])
def test_connection_errors_and_timeouts_are_retried(monkeypatch: pytest.MonkeyPatch,
                                                    error: Exception) -> None:
    script = _Script(error, error, httpx.Response(200))
    result, sleeps = _run_head(script, monkeypatch)
    assert result.status == 200 and len(sleeps) == 2


def test_unreachable_ping_is_a_registry_unreachable_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = _Script(httpx.ConnectError("[Errno 111] Connection refused"))
    monkeypatch.setattr(client_module.asyncio, "sleep", _no_sleep)

    async def main() -> None:
        opts = ClientOptions(plain_http=True, retries=2)
        async with RegistryClient("r.test", opts, transport=httpx.MockTransport(script)) as c:
            await c.ping()

    with pytest.raises(RegistryUnreachable, match="registry r.test unreachable"):
        asyncio.run(main())
    assert len(script.seen) == 3


async def _no_sleep(delay: float) -> None:
    return None


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0.0), ("12", 12.0), (" 5 ", 5.0), ("", None), (None, None), ("soon", None),
    ("-3", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected
