"""The operator's promise, end to end, with the real Prometheus, Alertmanager, Pushgateway and
node_exporter on loopback: damage made on a real registry's disk reaches Alertmanager (and the
on-call's webhook) as the alert the runbook names, through each way the metrics can travel.

The rules are a copy of examples/prometheus/alerts.yml in which only durations differ (every
`for:` is 2 s, the staleness threshold 10 s), so every expression, label and annotation
tested here is the shipped one. Prometheus scrapes and evaluates every second. Every wait polls an
API against a deadline; every server is stopped when the test ends.
"""

from __future__ import annotations

import configparser
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import run_cli
from tests.support.images import push_image, push_index
from tests.support.monitoring_stack import (
    INTERVAL,
    Alertmanager,
    NodeExporter,
    Prometheus,
    Pushgateway,
    Service,
    Stack,
    WebhookReceiver,
    http,
    require_binary,
    rules_with_durations,
    shipped_durations,
    wait_until,
)
from tests.support.promtool import check_expressions, label_names, metric_names, run_promtool
from tests.support.registry import RegistryServer, blob_data_path, revision_link_path
from tests.support.skopeo import skopeo_copy_all
from tests.support.tokenserver import TokenServer
from verifier.output.prometheus.exporter import parse_duration

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "prometheus"
ALERTS = EXAMPLES / "alerts.yml"
TEST_FOR = "2s"
#: RegistryIntegrityProbeStale's threshold in the test copy, in seconds (1800 as shipped).
STALE_AFTER = 10
#: Alert deadline: scan + scrape + evaluation + `for:` + group_wait take a few seconds here;
#: the margin is for a loaded two-core machine.
ALERT_TIMEOUT = 40.0

pytestmark = pytest.mark.registry


# --- the probe (one run: tests.support.cli.run_cli) ---------------------------------------------


class Serve(Service):
    """`regverify serve` as a real process, scanning every second."""

    name = "regverify-serve"
    ready_path = "/healthz"

    def __init__(self, workdir: Path, registry: str) -> None:
        super().__init__(sys.executable, workdir)
        self.registry = registry

    def args(self) -> list[str]:
        """Scan `registry` every second, over plain HTTP, without retries."""
        return ["-m", "verifier", "serve", self.registry, "--plain-http", "--retries", "0",
                "--interval", "1s", "--listen", self.address]


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """An empty stack; whatever a test adds is stopped afterwards, logs shown on failure."""
    for what in ("prometheus", "alertmanager", "pushgateway", "node_exporter"):
        require_binary(what)
    started = Stack(tmp_path / "stack")
    try:
        yield started
    finally:
        started.close()
        request.node.add_report_section("teardown", "monitoring stack logs", started.diagnose())


def start_alerting(stack: Stack, targets: dict[str, str], *,
                   stale_after: int | None = None) -> tuple[Prometheus, Alertmanager]:
    """Webhook, Alertmanager and Prometheus as the examples configure them, with test
    durations, evaluating the test copy of the shipped rules; `targets`: job -> address."""
    stack.webhook = WebhookReceiver()
    alertmanager = Alertmanager(require_binary("alertmanager"), stack.workdir / "alertmanager",
                                EXAMPLES / "alertmanager.yml", stack.webhook)
    stack.add(alertmanager)
    rules = rules_with_durations(
        ALERTS, stack.workdir / "alerts.yml", for_=TEST_FOR,
        stale_after=[("RegistryIntegrityProbeStale", stale_after)] if stale_after else [])
    prometheus = Prometheus(require_binary("prometheus"), stack.workdir / "prometheus",
                            EXAMPLES / "prometheus.yml", targets, rules, alertmanager)
    stack.add(prometheus)
    wait_until(prometheus.targets_up, ALERT_TIMEOUT, "every scrape target up", stack.diagnose)
    return prometheus, alertmanager


def rules_evaluated_since(prometheus: Prometheus, since: float) -> bool:
    """True once every rule group was evaluated after `since` and every rule is healthy."""
    groups = prometheus.api("rules")["groups"]
    for group in groups:
        for rule in group["rules"]:
            assert rule.get("health") in ("ok", "unknown"), (rule["name"], rule.get("lastError"))
    stamps = [group.get("lastEvaluation", "") for group in groups]
    return bool(stamps) and all(_rfc3339(s) > since for s in stamps)


def _rfc3339(stamp: str) -> float:
    # Prometheus gives nanoseconds; fromisoformat takes at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def quiet_for(prometheus: Prometheus, alertmanager: Alertmanager, alertname: str,
              healthy_since: float, seconds: float) -> None:
    """Assert `alertname` neither fires nor is pending after the rules had `seconds` (longer
    than `for:`) of healthy data to judge: were the data bad, it would be firing by now."""
    wait_until(lambda: rules_evaluated_since(prometheus, healthy_since + seconds),
               ALERT_TIMEOUT, f"rules evaluated {seconds:g}s past healthy data")
    assert prometheus.query(f'ALERTS{{alertname="{alertname}"}}') == []
    assert alertmanager.alerts(alertname) == []


def await_alert(stack: Stack, alertmanager: Alertmanager, alertname: str,
                match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Wait for an active `alertname` at Alertmanager that satisfies `match`; return it."""
    def found() -> dict[str, Any] | None:
        return next((a for a in alertmanager.alerts(alertname) if match(a)), None)

    return wait_until(found, ALERT_TIMEOUT, f"{alertname} at Alertmanager", stack.diagnose)


def await_notification(stack: Stack, alertname: str, status: str = "firing") -> float:
    """Wait until the webhook received `alertname` with `status`; return its arrival time."""
    assert stack.webhook is not None
    webhook = stack.webhook
    arrivals = wait_until(lambda: webhook.received(alertname, status), ALERT_TIMEOUT,
                          f"a {status} {alertname} notification", stack.diagnose)
    return arrivals[0][0]


def report_timing(request: pytest.FixtureRequest, text: str) -> None:
    """Shown with `pytest -rA`: measured times are reported, never asserted."""
    request.node.add_report_section("call", "time to alert", text)


# --- 1. `regverify serve`, scraped --------------------------------------------------------------


@pytest.mark.skopeo
def test_serve_broken_layer_alerts_and_resolves(registry: RegistryServer, stack: Stack,
                                                request: pytest.FixtureRequest,
                                                tmp_path: Path) -> None:
    web = push_image(registry, "app/web", "v1")
    push_image(registry, "app/web", "v2")
    push_image(registry, "team/api", "1.0", oci=False)
    serve = Serve(stack.workdir / "serve", registry.host)
    stack.add(serve)
    prometheus, alertmanager = start_alerting(stack, {"regverify": serve.address})
    selector = f'{{registry="{registry.host}",mode="scan"}}'

    # Healthy: the scans are scraped, the rules judge them, nothing fires.
    wait_until(lambda: prometheus.query(f"regverify_images_checked{selector} == 3"),
               ALERT_TIMEOUT, "a healthy scan scraped", stack.diagnose)
    healthy_since = time.time()
    assert prometheus.query(f"regverify_images_broken{selector} > 0") == []
    quiet_for(prometheus, alertmanager, "RegistryImageIntegrityFailure", healthy_since, 4)

    # A layer's data disappears from disk (the registry still advertises the blob).
    layer = blob_data_path(registry.v2, web.layers[0].digest)
    saved = layer.read_bytes()
    damaged_at = time.time()
    layer.unlink()

    alert = await_alert(stack, alertmanager, "RegistryImageIntegrityFailure",
                        lambda a: a["labels"].get("registry") == registry.host)
    at_alertmanager = time.time()
    notified = await_notification(stack, "RegistryImageIntegrityFailure")
    labels, notes = alert["labels"], alert["annotations"]
    assert labels["severity"] == "critical"
    assert "app/web:v1" in notes["description"]
    assert "app/web:v2" not in notes["description"] and "team/api" not in notes["description"]
    assert f"regverify image {registry.host}/app/web:v1" in notes["action"]
    assert notes["runbook_url"].endswith("#registryimageintegrityfailure")
    # The same worst case as docs/monitoring.md computes for the shipped durations.
    bound = sum(parse_duration(d) for d in ("1s", INTERVAL, INTERVAL, TEST_FOR,
                                            alertmanager.group_wait))
    report_timing(request, (
        f"serve path: damage -> Alertmanager {at_alertmanager - damaged_at:.1f}s, "
        f"-> webhook {notified - damaged_at:.1f}s; worst case {bound:g}s + one scan (scan "
        f"every 1s, scrape and evaluation {INTERVAL}, for: {TEST_FOR}, group_wait "
        f"{alertmanager.group_wait})"))
    # The reference client agrees: the image the alert names cannot be pulled.
    assert not skopeo_copy_all(f"{registry.host}/app/web:v1", tmp_path / "pull-broken").ok
    # The dashboard, queried against this Prometheus, shows it too.
    shown = dashboard_on(prometheus)
    assert {(row["metric"]["repository"], row["metric"]["tag"])
            for row in shown[BROKEN_IMAGES_PANEL]} == {("app/web", "v1")}

    # Repaired: the next scan is clean, the alert resolves, the on-call is told.
    repaired_at = time.time()
    layer.write_bytes(saved)
    wait_until(lambda: not alertmanager.alerts("RegistryImageIntegrityFailure"), ALERT_TIMEOUT,
               "the alert to resolve", stack.diagnose)
    resolved = await_notification(stack, "RegistryImageIntegrityFailure", "resolved")
    report_timing(request, f"serve path: repair -> resolved notification "
                           f"{resolved - repaired_at:.1f}s")
    assert skopeo_copy_all(f"{registry.host}/app/web:v1", tmp_path / "pull-repaired").ok


# --- 2. the CronJob path: `scan --pushgateway`, the probe stops ---------------------------------


def test_pushgateway_probe_stops_and_goes_stale(registry: RegistryServer, stack: Stack) -> None:
    push_image(registry, "app/web", "v1")
    gateway = Pushgateway(require_binary("pushgateway"), stack.workdir / "pushgateway")
    stack.add(gateway)
    # The example's job scrapes with honor_labels: the pushed registry/mode labels stay.
    # Stale after 10 s: long enough that a run starting on a loaded machine is never late.
    prometheus, alertmanager = start_alerting(
        stack, {"pushgateway": gateway.address}, stale_after=STALE_AFTER)

    selector = f'{{registry="{registry.host}",mode="scan"}}'
    # The probe runs like a CronJob would, twice, each run a fresh process.
    last_run = 0.0
    for _ in range(2):
        run = run_cli("scan", registry.host, "--plain-http", "--retries", "0",
                      "--pushgateway", gateway.url, "--format", "json", subprocess=True)
        assert run.exit_code == 0, run.stderr
        newer = f"regverify_last_run_timestamp_seconds{selector} > {last_run}"
        [sample] = wait_until(lambda q=newer: prometheus.query(q), ALERT_TIMEOUT,
                              "the pushed run scraped", stack.diagnose)
        last_run = float(sample["value"][1])
        # honor_labels: the pushing job's name, not the Pushgateway's scrape job.
        assert sample["metric"]["job"] == "regverify" and "exported_job" not in sample["metric"]
        assert prometheus.query(f"regverify_images_checked{selector}")[0]["value"][1] == "1"
    assert alertmanager.alerts("RegistryIntegrityProbeStale") == []
    assert prometheus.query('ALERTS{alertname="RegistryIntegrityProbeStale"}') == []

    # The probe stops: its last metrics stay in the Pushgateway and age.
    alert = await_alert(stack, alertmanager, "RegistryIntegrityProbeStale",
                        lambda a: a["labels"].get("registry") == registry.host)
    # Not before the last run is older than the (test) threshold.
    assert time.time() - last_run > STALE_AFTER
    assert alert["labels"]["mode"] == "scan"
    assert f"regverify scan {registry.host}" in alert["annotations"]["action"]
    assert alert["annotations"]["runbook_url"].endswith("#registryintegrityprobestale")
    # Nothing else is wrong with the registry.
    assert alertmanager.alerts("RegistryImageIntegrityFailure") == []
    assert alertmanager.alerts("RegistryCatalogInaccessible") == []


# --- 3. the catalog refused to the probe's credentials ------------------------------------------


class NoCatalogTokens(TokenServer):
    """A token server that grants pull on repositories but never `registry:catalog:*`: the
    usual misconfiguration of a probe account."""

    def make_token(self, subject: str, scopes: tuple[str, ...]) -> str:
        """The token, minus any catalog scope."""
        return super().make_token(
            subject, tuple(s for s in scopes if not s.startswith("registry:catalog:")))


def test_refused_catalog_alerts(registry_bin: str, stack: Stack, tmp_path: Path) -> None:
    # Content first, pushed without auth; then the same storage behind the token server.
    workdir = tmp_path / "registry"
    with RegistryServer(workdir=workdir, registry_bin=registry_bin) as open_registry:
        push_image(open_registry, "app/web", "v1")
    tokens = NoCatalogTokens(tmp_path / "tokens", users={"probe": "probe-secret"})
    tokens.start()
    server = RegistryServer(workdir=workdir, registry_bin=registry_bin,
                            extra_config=tokens.registry_config())
    try:
        server.start()
        gateway = Pushgateway(require_binary("pushgateway"), stack.workdir / "pushgateway")
        stack.add(gateway)
        _, alertmanager = start_alerting(
            stack, {"pushgateway": gateway.address})

        # The probe's credentials are good for pulling, but the catalog is refused to them.
        with httpx.Client(trust_env=False) as client:
            token = tokens.make_token("probe", ("registry:catalog:*",))
            refused = client.get(f"{server.url}/v2/_catalog",
                                 headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401
        run = run_cli("scan", server.host, "--plain-http", "--retries", "0",
                      "--pushgateway", gateway.url, "--format", "json",
                      env={"REGVERIFY_USERNAME": "probe", "REGVERIFY_PASSWORD": "probe-secret"},
                      subprocess=True)
        assert run.exit_code == 3, (run.stdout, run.stderr)
        assert "catalog" in run.stdout

        alert = await_alert(stack, alertmanager, "RegistryCatalogInaccessible",
                            lambda a: a["labels"].get("registry") == server.host)
        assert alert["labels"]["mode"] == "scan"
        assert server.host in alert["annotations"]["summary"]
        assert f"regverify scan {server.host}" in alert["annotations"]["action"]
        assert alert["annotations"]["runbook_url"].endswith("#registrycataloginaccessible")
        assert alertmanager.alerts("RegistryImageIntegrityFailure") == []
    finally:
        server.stop()
        tokens.stop()


# --- 4. `fs scan --textfile` through node_exporter -----------------------------------------------


@pytest.mark.skopeo
def test_fs_scan_textfile_orphan_index_child_alerts(registry: RegistryServer, stack: Stack,
                                                    tmp_path: Path) -> None:
    push_image(registry, "app/web", "v1")
    index = push_index(registry, "multi/tool", "latest")
    node = NodeExporter(require_binary("node_exporter"), stack.workdir / "node_exporter")
    stack.add(node)
    prometheus, alertmanager = start_alerting(stack, {"node": node.address})
    textfile = node.textfile_dir / "regverify-fs.prom"
    storage = str(registry.root)
    selector = f'{{registry="{storage}",mode="fs-scan"}}'

    clean = run_cli("fs", "scan", storage, "--textfile", str(textfile), "--format", "json",
                    subprocess=True)
    assert clean.exit_code == 0, clean.stderr
    wait_until(lambda: prometheus.query(f"regverify_fs_orphan_index_children{selector} == 0"),
               ALERT_TIMEOUT, "the clean fs scan scraped", stack.diagnose)
    quiet_for(prometheus, alertmanager, "RegistryStorageDamage", time.time(), 4)

    # What `garbage-collect --delete-untagged` does to a tagged index: the child's revision
    # link goes, the index still answers 200.
    revision_link_path(registry.v2, "multi/tool", index.children[0].digest).unlink()
    damaged = run_cli("fs", "scan", storage, "--textfile", str(textfile), "--format", "json",
                      subprocess=True)
    assert damaged.exit_code == 1, damaged.stderr
    alert = await_alert(stack, alertmanager, "RegistryStorageDamage",
                        lambda a: a["labels"].get("registry") == storage)
    notes = alert["annotations"]
    assert storage in notes["summary"]
    assert "multi/tool (orphan_index_child)" in notes["description"]
    assert "app/web" not in notes["description"]
    # The reference client agrees: the index the alert points at no longer pulls.
    assert not skopeo_copy_all(f"{registry.host}/multi/tool:latest", tmp_path / "pull").ok
    assert f"regverify fs scan {storage}" in notes["action"]
    assert notes["runbook_url"].endswith("#registrystoragedamage")



# --- every metric the rules, the dashboard, the examples and the docs name is emitted -----------

DASHBOARD = ROOT / "examples" / "grafana" / "regverify-dashboard.json"
#: Texts that name metrics: an alert, panel or sentence about a metric no command emits is wrong.
NAMING_METRICS = [
    ALERTS, ALERTS.with_name("alerts.test.yml"), DASHBOARD, ROOT / "README.md",
    *sorted((ROOT / "examples" / "kubernetes").glob("*.yaml")),
    *sorted((ROOT / "examples" / "systemd").glob("regverify*")),
    *sorted((ROOT / "docs").glob("*.md")),
]
#: Grafana's own variables, replaced by something of the same type before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
_METRIC_WORD = re.compile(r"\bregverify_[a-z0-9_]*[a-z0-9]\b(?![*_])")


def emitted_names(text: str) -> set[str]:
    """Sample names of an exposition text (counters with their `_total`), and `label:NAME` for
    each label name on them."""
    samples = [sample for family in text_string_to_metric_families(text)
               for sample in family.samples]
    return ({sample.name for sample in samples}
            | {f"label:{label}" for sample in samples for label in sample.labels})


#: Labels Prometheus itself adds to every scraped series, and the one Alertmanager groups by.
SCRAPE_LABELS = {"label:job", "label:instance", "label:alertname"}


@pytest.fixture
def real_run_names(registry: RegistryServer, tmp_path: Path) -> set[str]:
    """Every metric (and `label:NAME`) `scan`, `image`, `fs scan` and `serve` emit on a damaged
    registry."""
    web = push_image(registry, "app/web", "v1")
    push_image(registry, "app/web", "v2")
    index = push_index(registry, "multi/tool", "latest")
    blob_data_path(registry.v2, web.layers[0].digest).unlink()
    revision_link_path(registry.v2, "multi/tool", index.children[0].digest).unlink()
    registry.restart()
    names: set[str] = set()
    scan = run_cli("scan", registry.host, "--plain-http", "--retries", "0", "--format",
                   "prometheus", subprocess=True)
    # A sharded scan carries `shard`, which the staleness alert keeps apart.
    shard = run_cli("scan", registry.host, "--plain-http", "--retries", "0", "--shard", "0/2",
                    "--format", "prometheus", subprocess=True)
    image = run_cli("image", f"{registry.host}/app/web:v1", "--plain-http", "--retries", "0",
                    "--format", "prometheus", subprocess=True)
    textfile = tmp_path / "fs.prom"
    fs = run_cli("fs", "scan", str(registry.root), "--textfile", str(textfile), subprocess=True)
    assert (scan.exit_code, image.exit_code, fs.exit_code) == (1, 1, 1), (scan.stderr,
                                                                            fs.stderr)
    assert shard.exit_code in (0, 1), shard.stderr
    names |= emitted_names(scan.stdout) | emitted_names(image.stdout)
    names |= emitted_names(shard.stdout)
    names |= emitted_names(textfile.read_text())
    serve = Serve(tmp_path / "serve", registry.host)
    try:
        serve.start()
        with http() as client:
            metrics = wait_until(
                lambda: (lambda t: t if "regverify_last_run_timestamp_seconds" in t else None)(
                    client.get(f"{serve.url}/metrics").text),
                ALERT_TIMEOUT, "the exporter's first scan", serve.log_tail)
    finally:
        serve.stop()
    names |= emitted_names(metrics)
    return names


def dashboard_expressions() -> dict[str, str]:
    """refId-qualified PromQL of every panel target and query variable of the dashboard."""
    model = json.loads(DASHBOARD.read_text())
    found: dict[str, str] = {}
    for panel in model["panels"]:
        for target in panel.get("targets", []):
            found[f"panel{panel['id']}_{target['refId']}"] = target["expr"]
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) \
                else variable["query"]
            # label_values(SELECTOR, LABEL): the selector is PromQL.
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert match, f"variable {variable['name']}: unexpected query {query!r}"
            found[f"variable_{variable['name']}"] = match.group(1)
    for name, expr in found.items():
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        found[name] = expr
    return found


#: The dashboard target listing each broken image (panel "Broken images", query A).
BROKEN_IMAGES_PANEL = "panel7_A"
BROKEN_IMAGES_PANEL_INDEX = 6


def dashboard_on(prometheus: Prometheus) -> dict[str, list[dict[str, Any]]]:
    """Every dashboard expression evaluated by the real Prometheus, with `$registry` = all.

    Each must evaluate; each over the metrics of a scan must return data (the series of an
    fs run, and the counts of what a cap left out, may rightly be absent here)."""
    results: dict[str, list[dict[str, Any]]] = {}
    for name, expr in dashboard_expressions().items():
        results[name] = prometheus.query(expr.replace("$registry", ".*"))
        optional = any(m.startswith("regverify_fs_") or m.endswith("_truncated")
                       for m in metric_names(expr))
        assert results[name] or optional, f"dashboard {name} shows nothing: {expr}"
    return results


def test_every_metric_named_anywhere_is_emitted(real_run_names: set[str],
                                                tmp_path: Path) -> None:
    # The alert rules: each expression reads at least one metric, and only emitted ones.
    document = yaml.safe_load(ALERTS.read_text())
    rules = {rule["alert"]: rule["expr"] for group in document["groups"]
             for rule in group["rules"]}
    known = real_run_names | SCRAPE_LABELS
    for alert, expr in rules.items():
        read = metric_names(expr) | {f"label:{label}" for label in label_names(expr)}
        assert metric_names(expr), f"{alert}: no metric found in {expr!r}"
        assert read <= known, f"{alert} reads {sorted(read - known)}"

    # The dashboard: every expression parses (promtool) and reads only emitted metrics, and
    # together they cover what an operator looks at.
    expressions = dashboard_expressions()
    check_expressions({k.replace("-", "_"): v for k, v in expressions.items()}, tmp_path)
    read_by_dashboard: set[str] = set()
    for name, expr in expressions.items():
        read = metric_names(expr)
        assert read, f"dashboard {name}: no metric found in {expr!r}"
        read |= {f"label:{label}" for label in label_names(expr)}
        assert read <= known, f"dashboard {name} reads {sorted(read - known)}"
        read_by_dashboard |= read
    assert {"regverify_images_checked", "regverify_images_broken", "regverify_defects",
            "regverify_last_success_timestamp_seconds", "regverify_requests_total",
            "regverify_run_duration_seconds", "regverify_image_broken",
            "regverify_fs_repository_defects"} <= read_by_dashboard

    # The labels the alerts are routed by and their annotations print exist.
    routing = yaml.safe_load((EXAMPLES / "alertmanager.yml").read_text())["route"]["group_by"]
    templated = re.findall(r"\$labels\.(\w+)|\.Labels\.(\w+)", ALERTS.read_text())
    printed = {name for pair in templated for name in pair if name}
    assert {"registry", "repository", "tag", "kind"} <= printed
    assert {f"label:{label}" for label in [*routing, *printed]} <= known

    # Every metric-looking word in the rules (annotation templates included), their tests,
    # the dashboard, the Kubernetes and systemd examples and the docs.
    for path in NAMING_METRICS:
        words = set(_METRIC_WORD.findall(path.read_text()))
        unknown = words - real_run_names
        assert not unknown, f"{path.relative_to(ROOT)} names {sorted(unknown)}"


# --- time to alert with the examples as shipped ---------------------------------------------------

KUBERNETES = ROOT / "examples" / "kubernetes"
SYSTEMD = ROOT / "examples" / "systemd"


def _every_minutes(schedule: str) -> float:
    """Seconds between runs of a `*/N * * * *` cron schedule (the only form the examples use)."""
    match = re.fullmatch(r"\*/(\d+) \* \* \* \*", schedule)
    assert match, f"unexpected schedule {schedule!r}"
    return int(match.group(1)) * 60.0


def shipped_time_to_alert() -> dict[str, dict[str, float]]:
    """Worst case, per delivery path, of each step from damage to the on-call's notification,
    in seconds, read from the example files (scan duration and pod start not included)."""
    documents = {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
                 for p in KUBERNETES.glob("*.yaml")}
    [deployment, _, monitor] = documents["serve.yaml"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    serve_interval = parse_duration(args[args.index("--interval") + 1])
    [cronjob] = documents["cronjob-pushgateway.yaml"]
    timer = configparser.ConfigParser(interpolation=None)
    timer.read_string((SYSTEMD / "regverify-fs-scan.timer").read_text())
    on_calendar = re.fullmatch(r"\*:0/(\d+)", timer["Timer"]["OnCalendar"])
    assert on_calendar, timer["Timer"]["OnCalendar"]
    fs_interval = int(on_calendar.group(1)) * 60 + parse_duration(
        timer["Timer"]["RandomizedDelaySec"])

    config = yaml.safe_load((EXAMPLES / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    default_scrape = config["global"]["scrape_interval"]
    evaluation = parse_duration(config["global"]["evaluation_interval"])
    fors = shipped_durations(ALERTS)
    group_wait = parse_duration(
        yaml.safe_load((EXAMPLES / "alertmanager.yml").read_text())["route"]["group_wait"])

    def path(scan: float, scrape: str, alert: str) -> dict[str, float]:
        return {"scan interval": scan, "scrape interval": parse_duration(scrape),
                "rule evaluation": evaluation, "for": parse_duration(fors[alert]),
                "group_wait": group_wait}

    return {
        "serve (ServiceMonitor)": path(serve_interval, monitor["spec"]["endpoints"][0]["interval"],
                                       "RegistryImageIntegrityFailure"),
        "CronJob + Pushgateway": path(
            _every_minutes(cronjob["spec"]["schedule"]),
            jobs["pushgateway"].get("scrape_interval", default_scrape),
            "RegistryImageIntegrityFailure"),
        "systemd fs scan + node_exporter": path(
            fs_interval, jobs["node"].get("scrape_interval", default_scrape),
            "RegistryStorageDamage"),
    }


def test_documented_time_to_alert_is_computed_from_the_examples() -> None:
    paths = {name: sum(steps.values()) for name, steps in shipped_time_to_alert().items()}
    image_minutes = math.ceil(max(paths["serve (ServiceMonitor)"],
                                  paths["CronJob + Pushgateway"]) / 60)
    storage_minutes = math.ceil(paths["systemd fs scan + node_exporter"] / 60)
    doc = " ".join((ROOT / "docs" / "monitoring.md").read_text().split())
    assert (f"an image that breaks is reported within {image_minutes} minutes with the "
            f"examples as shipped") in doc
    assert f"storage damage within {storage_minutes} minutes" in doc
    for name, seconds in paths.items():
        assert f"| {name} | {seconds / 60:g} min |" in doc, name


def test_example_configs_pass_the_upstream_checkers() -> None:
    prometheus = run_promtool("check", "config", str(EXAMPLES / "prometheus.yml"))
    assert prometheus.returncode == 0, prometheus.stdout
    assert "SUCCESS: 5 rules found" in prometheus.stdout  # alerts.yml, found from the config
    amtool = require_binary("amtool")
    alertmanager = subprocess.run([amtool, "check-config", str(EXAMPLES / "alertmanager.yml")],
                                  capture_output=True, text=True, timeout=60, check=False)
    assert alertmanager.returncode == 0, alertmanager.stdout + alertmanager.stderr
    assert "SUCCESS" in alertmanager.stdout


def test_dashboard_model_is_well_formed() -> None:
    model = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids))
    assert model["panels"][BROKEN_IMAGES_PANEL_INDEX]["title"] == "Broken images"
    variables = {v["name"] for v in model["templating"]["list"]}
    assert {"datasource", "registry"} <= variables
    for panel in model["panels"]:
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        # Every query goes to the chosen data source and honours the registry filter.
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'registry=~"$registry"' in target["expr"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]


def test_the_test_rules_differ_from_the_shipped_ones_only_in_durations(tmp_path: Path) -> None:
    copy = rules_with_durations(ALERTS, tmp_path / "alerts.yml", for_=TEST_FOR,
                                stale_after=[("RegistryIntegrityProbeStale", 6)])
    shipped = yaml.safe_load(ALERTS.read_text())["groups"]
    tested = yaml.safe_load(copy.read_text())["groups"]
    assert len(shipped) == len(tested)
    for ours, theirs in zip(shipped, tested, strict=True):
        assert len(ours["rules"]) == len(theirs["rules"])
        for original, changed in zip(ours["rules"], theirs["rules"], strict=True):
            assert changed["for"] == TEST_FOR
            expr = original["expr"].strip()
            if original["alert"] == "RegistryIntegrityProbeStale":
                assert expr.endswith("> 1800") and changed["expr"] == expr[:-4] + "6"
            else:
                assert changed["expr"] == expr
            rest = {k: v for k, v in original.items() if k not in ("for", "expr")}
            assert rest == {k: v for k, v in changed.items() if k not in ("for", "expr")}
    # The copy is still valid rules.
    assert run_promtool("check", "rules", str(copy)).returncode == 0
