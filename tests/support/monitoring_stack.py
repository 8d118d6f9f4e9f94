"""The real monitoring stack on loopback: Prometheus, Alertmanager, Pushgateway, node_exporter.

Each server runs as its own process on a free 127.0.0.1 port with its storage and config in a
test's temporary folder, is polled until ready, and is stopped (SIGTERM, then SIGKILL) by
`Stack.close()`. Intervals are short (scrape and rule evaluation every second) so an alert goes
from damage to Alertmanager in seconds; `rules_with_durations` makes the copy of the shipped
alert rules that changes nothing but their durations.

A missing binary fails the test, like a missing registry binary does, unless
$REGVERIFY_ALLOW_SKIP=1 asks for a skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

ALLOW_SKIP_ENV = "REGVERIFY_ALLOW_SKIP"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
#: Scrape and rule-evaluation interval of the test Prometheus.
INTERVAL = "1s"

T = TypeVar("T")

#: Debian's binary names first, then upstream's.
BINARIES: dict[str, tuple[tuple[str, ...], str]] = {
    "prometheus": (("prometheus",), "prometheus"),
    "alertmanager": (("prometheus-alertmanager", "alertmanager"), "prometheus-alertmanager"),
    "amtool": (("amtool",), "prometheus-alertmanager"),
    "pushgateway": (("prometheus-pushgateway", "pushgateway"), "prometheus-pushgateway"),
    "node_exporter": (("prometheus-node-exporter", "node_exporter"),
                      "prometheus-node-exporter"),
}


def require_binary(what: str) -> str:
    """Path of a stack binary; fails the test (skips when $REGVERIFY_ALLOW_SKIP=1) if absent."""
    names, package = BINARIES[what]
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    reason = f"{what} is not installed (Debian package {package!r})"
    if os.environ.get(ALLOW_SKIP_ENV) == "1":
        pytest.skip(reason)
    pytest.fail(f"{reason} (set {ALLOW_SKIP_ENV}=1 to skip instead of failing)", pytrace=False)


def free_port() -> int:
    """A currently unused loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(probe: Callable[[], T | None], timeout: float, what: str,
               diagnose: Callable[[], str] = lambda: "") -> T:
    """Call `probe` every 0.2 s until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            result = probe()
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            result, last_error = None, f"{type(exc).__name__}: {exc}"
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = diagnose()
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}"
                        f"{f' (last error: {last_error})' if last_error else ''}\n{detail}",
                        pytrace=False)
        time.sleep(0.2)


def http() -> httpx.Client:
    """A client that never goes through an ambient proxy (loopback only)."""
    return httpx.Client(trust_env=False, timeout=5.0)


class Service:
    """One server process on 127.0.0.1 with its own folder; `start()` waits until ready."""

    name = "service"
    ready_path = "/-/ready"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return f"http://{self.address}"

    def args(self) -> list[str]:
        """The command line after the binary."""
        raise NotImplementedError

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the process's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return f"--- {self.name} log ---\n" + "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """Start the process and poll its readiness endpoint (bounded)."""
        with open(self.log_path, "ab") as log:
            # No ambient proxy may stand between loopback servers (Go and Python both honour
            # HTTP_PROXY for anything not in NO_PROXY).
            env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1"}
            self.proc = subprocess.Popen([self.binary, *self.args()], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                         env=env)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}\n{self.log_tail()}",
                            pytrace=False)
            with http() as client:
                return client.get(self.url + self.ready_path).status_code == 200

        wait_until(ready, READY_TIMEOUT, f"{self.name} to be ready", self.log_tail)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Pushgateway(Service):
    """The Prometheus Pushgateway, in-memory (no persistence file)."""

    name = "pushgateway"

    def args(self) -> list[str]:
        """Loopback only, memory only: Debian's build persists to a shared file by default,
        which would carry one test's groups into the next."""
        return [f"--web.listen-address={self.address}", "--persistence.file="]


class NodeExporter(Service):
    """node_exporter with only the textfile collector, reading `textfile_dir`."""

    name = "node_exporter"
    ready_path = "/metrics"

    def __init__(self, binary: str, workdir: Path) -> None:
        super().__init__(binary, workdir)
        self.textfile_dir = workdir / "textfile"
        self.textfile_dir.mkdir(exist_ok=True)

    def args(self) -> list[str]:
        """Only the textfile collector: the host's own metrics are no business of these tests."""
        return [f"--web.listen-address={self.address}", "--collector.disable-defaults",
                "--collector.textfile",
                f"--collector.textfile.directory={self.textfile_dir}"]


@dataclass
class Notification:
    """One webhook notification Alertmanager delivered, with its arrival time."""

    received_at: float
    body: dict[str, Any]


class WebhookReceiver:
    """The on-call's pager: an HTTP server recording what Alertmanager's webhook sends."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with receiver._lock:
                    receiver.notifications.append(Notification(time.time(), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alert"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def received(self, alertname: str,
                 status: str = "firing") -> list[tuple[float, dict[str, Any]]]:
        """(arrival time, alert) of every notified alert with this name and status."""
        with self._lock:
            return [(n.received_at, alert) for n in self.notifications
                    for alert in n.body.get("alerts", [])
                    if alert.get("labels", {}).get("alertname") == alertname
                    and alert.get("status") == status]

    def stop(self) -> None:
        """Shut the server down."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=STOP_TIMEOUT)


class Alertmanager(Service):
    """Alertmanager without clustering, routing as examples/prometheus/alertmanager.yml does.

    The example's routing and receiver are kept; only its durations are shortened and its
    webhook points at the test's `WebhookReceiver`.
    """

    name = "alertmanager"

    def __init__(self, binary: str, workdir: Path, example: Path,
                 webhook: WebhookReceiver, group_wait: str = "1s") -> None:
        super().__init__(binary, workdir)
        self.group_wait = group_wait
        config = yaml.safe_load(example.read_text())
        route = config["route"]
        self.shipped_group_wait = str(route.get("group_wait", "30s"))
        route.update(group_wait=group_wait, group_interval="1s", repeat_interval="1h")
        hooks = [hook for receiver in config["receivers"]
                 for hook in receiver.get("webhook_configs", [])]
        assert hooks, f"{example}: no webhook receiver to point at the test's"
        for hook in hooks:
            hook["url"] = webhook.url
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config))

    def args(self) -> list[str]:
        """Clustering off (it would bind a fixed port on every interface)."""
        return [f"--config.file={self.config_path}", f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address={self.address}", "--cluster.listen-address="]

    def alerts(self, alertname: str) -> list[dict[str, Any]]:
        """Active alerts of this name as `GET /api/v2/alerts` lists them."""
        with http() as client:
            response = client.get(f"{self.url}/api/v2/alerts",
                                  params={"filter": f'alertname="{alertname}"'})
        response.raise_for_status()
        return [a for a in response.json() if a.get("status", {}).get("state") == "active"]


class Prometheus(Service):
    """Prometheus configured as examples/prometheus/prometheus.yml, with test intervals.

    `targets` maps job names of the example to the test's addresses; only those jobs are kept.
    Intervals become `INTERVAL`, the rule file and the Alertmanager are the test's; every
    other setting (honor_labels included) is the example's.
    """

    name = "prometheus"

    def __init__(self, binary: str, workdir: Path, example: Path, targets: dict[str, str],
                 rules: Path | None, alertmanager: Alertmanager | None) -> None:
        super().__init__(binary, workdir)
        config = yaml.safe_load(example.read_text())
        config["global"].update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL,
                                scrape_timeout=INTERVAL)
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        assert set(targets) <= set(jobs), f"{example} has no job {sorted(set(targets) - set(jobs))}"
        config["scrape_configs"] = [
            {**jobs[name], "static_configs": [{"targets": [address]}]}
            for name, address in targets.items()
        ]
        config["rule_files"] = [str(rules)] if rules is not None else []
        if alertmanager is not None:
            config["alerting"] = {"alertmanagers": [
                {"static_configs": [{"targets": [alertmanager.address]}]}]}
        else:
            config.pop("alerting", None)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))

    def args(self) -> list[str]:
        """Temporary TSDB; alerts re-sent every second so a resolved one is told at once."""
        return [f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.address}", "--rules.alert.resend-delay=1s"]

    def api(self, path: str, **params: str) -> Any:
        """`data` of a Prometheus HTTP API answer; raises on an error answer."""
        with http() as client:
            response = client.get(f"{self.url}/api/v1/{path}", params=params)
        payload = response.json()
        if payload.get("status") != "success":
            raise ValueError(f"{path} {params}: {payload.get('errorType')}: "
                             f"{payload.get('error')}")
        return payload["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector result of `expr` now."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result

    def targets_up(self) -> bool:
        """True once every scrape target has been scraped successfully."""
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t.get("health") == "up" for t in active)


@dataclass
class Stack:
    """Servers started for one test; `close()` stops every one of them, in reverse order."""

    workdir: Path
    services: list[Service] = field(default_factory=list)
    webhook: WebhookReceiver | None = None

    def add(self, service: Service) -> Service:
        """Start `service` and remember it for `close()`."""
        self.services.append(service)
        service.start()
        return service

    def diagnose(self) -> str:
        """Every service's log tail, for a failure message."""
        return "\n".join(s.log_tail() for s in self.services)

    def close(self) -> None:
        """Stop every process and the webhook receiver."""
        for service in reversed(self.services):
            service.stop()
        if self.webhook is not None:
            self.webhook.stop()


# --- the alert rules, with test durations ---------------------------------------------------

_STALE_THRESHOLD = re.compile(r">\s*(\d+)\s*$")


def rules_with_durations(source: Path, destination: Path, *, for_: str = "2s",
               stale_after: Iterable[tuple[str, int]] = ()) -> Path:
    """A copy of the alert rules in `source` in which only durations differ.

    Every `for:` becomes `for_`; each (alert, seconds) in `stale_after` replaces the
    age threshold at the end of that alert's expression (`... > 1800`). Nothing else changes:
    the expressions, labels and annotations are the shipped ones.
    """
    document = yaml.safe_load(source.read_text())
    stale = dict(stale_after)
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_
            name = rule.get("alert")
            if name in stale:
                expr, count = _STALE_THRESHOLD.subn(f"> {stale.pop(name)}", rule["expr"].strip())
                assert count == 1, f"{name}: no '> SECONDS' threshold at the end of {expr!r}"
                rule["expr"] = expr
    assert not stale, f"no such alerts in {source}: {sorted(stale)}"
    destination.write_text(yaml.safe_dump(document, sort_keys=False))
    return destination


def shipped_durations(source: Path) -> dict[str, str]:
    """alert name -> its `for:` in `source` (the real durations the docs quote)."""
    document = yaml.safe_load(source.read_text())
    return {rule["alert"]: rule.get("for", "0s") for group in document["groups"]
            for rule in group["rules"] if "alert" in rule}
