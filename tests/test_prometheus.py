"""Prometheus metrics: the reporter's exact output, the carry-forward rules of the textfile and
the Pushgateway, and real scans of a damaged registry checked with `promtool check metrics`."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import run_cli
from tests.support.images import PushedIndex, push_image, push_index
from tests.support.promtool import check_metrics, label_names, metric_names
from tests.support.registry import RegistryServer, blob_data_path, revision_link_path
from verifier.model.findings import Finding, ImageResult, ImageStatus, Kind, Report, Severity
from verifier.output import Format, reporter_for
from verifier.output.prometheus.destinations import (
    MetricsOutput,
    PushgatewayError,
    TextfileError,
    redact_url,
)
from verifier.output.prometheus.metrics import (
    RUN_FAMILIES,
    Identity,
    render,
    report_families,
)

# --- helpers -------------------------------------------------------------------------------------


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of an exposition text."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(text: str, name: str, **labels: str) -> float:
    """The one sample `name` whose labels include `labels`."""
    found = [v for lab, v in samples(text).get(name, []) if labels.items() <= lab.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def broken_images(text: str) -> set[tuple[str, str]]:
    """(repository, tag) of every regverify_image_broken series."""
    return {(lab["repository"], lab["tag"])
            for lab, v in samples(text).get("regverify_image_broken", []) if v == 1}


def scan_report(broken: int = 1, ok: int = 1, **extra: Any) -> Report:
    """A scan report of `broken` broken and `ok` healthy images, one blob_missing each."""
    report = Report(mode="scan", target="reg.example.com", started_at=1_700_000_000.0,
                    duration_seconds=2.5, **extra)
    for i in range(broken):
        report.images.append(ImageResult(f"reg.example.com/app/b{i}:v1", "sha256:b",
                                         ImageStatus.BROKEN, f"app/b{i}", "v1"))
        report.add(Finding(Kind.BLOB_MISSING, Severity.ERROR, "gone", f"app/b{i}", "v1"))
    for i in range(ok):
        report.images.append(ImageResult(f"reg.example.com/app/ok{i}:v1", "sha256:o",
                                         ImageStatus.OK, f"app/ok{i}", "v1"))
    report.requests_by_code.update({"200": 7, "404": 1})
    return report


# --- the reporter --------------------------------------------------------------------------------


def test_render_exact_output() -> None:
    ident = 'mode="scan",registry="reg.example.com"'
    defects = "".join(
        f'regverify_defects{{kind="{kind}",{ident}}} {1.0 if kind is Kind.BLOB_MISSING else 0.0}\n'
        for kind in Kind
    )
    expected = (
        "# HELP regverify_last_run_timestamp_seconds Unix time at which the last run ended, "
        "whether or not it could complete.\n"
        "# TYPE regverify_last_run_timestamp_seconds gauge\n"
        f"regverify_last_run_timestamp_seconds{{{ident}}} 1.7000000025e+09\n"
        "# HELP regverify_last_success_timestamp_seconds Unix time at which the last run that "
        "verified everything it was asked ended.\n"
        "# TYPE regverify_last_success_timestamp_seconds gauge\n"
        f"regverify_last_success_timestamp_seconds{{{ident}}} 1.7000000025e+09\n"
        "# HELP regverify_run_duration_seconds Wall-clock duration of the last run in seconds.\n"
        "# TYPE regverify_run_duration_seconds gauge\n"
        f"regverify_run_duration_seconds{{{ident}}} 2.5\n"
        "# HELP regverify_catalog_accessible 1 if the last run could read what it had to verify "
        "(the catalog for a scan, the registry for an image, the storage for fs), else 0.\n"
        "# TYPE regverify_catalog_accessible gauge\n"
        f"regverify_catalog_accessible{{{ident}}} 1.0\n"
        "# HELP regverify_images_checked Images (tags or references) the last run verified.\n"
        "# TYPE regverify_images_checked gauge\n"
        f"regverify_images_checked{{{ident}}} 2.0\n"
        "# HELP regverify_images_broken Images the last run found broken (at least one "
        "defect).\n"
        "# TYPE regverify_images_broken gauge\n"
        f"regverify_images_broken{{{ident}}} 1.0\n"
        "# HELP regverify_defects Defect findings of the last run by kind (0 for every kind "
        "not found).\n"
        "# TYPE regverify_defects gauge\n"
        f"{defects}"
        "# HELP regverify_image_broken 1 for each image the last run found broken (capped; see "
        "regverify_image_broken_truncated).\n"
        "# TYPE regverify_image_broken gauge\n"
        f'regverify_image_broken{{{ident},repository="app/b0",tag="v1"}} 1.0\n'
        "# HELP regverify_image_broken_truncated Broken images left out of "
        "regverify_image_broken by the series cap (0 when the list is complete).\n"
        "# TYPE regverify_image_broken_truncated gauge\n"
        f"regverify_image_broken_truncated{{{ident}}} 0.0\n"
        "# HELP regverify_requests_total HTTP requests sent to the registry, by status code "
        "('error': no answer).\n"
        "# TYPE regverify_requests_total counter\n"
        f'regverify_requests_total{{code="200",{ident}}} 7.0\n'
        f'regverify_requests_total{{code="404",{ident}}} 1.0\n'
    )
    assert render(scan_report()) == expected
    check_metrics(expected)


def test_format_prometheus_is_wired() -> None:
    report = scan_report()
    assert reporter_for(Format.PROMETHEUS)(report) == render(report)


def test_every_kind_has_a_defects_series_even_when_clean() -> None:
    text = render(scan_report(broken=0, ok=3))
    kinds = {lab["kind"]: v for lab, v in samples(text)["regverify_defects"]}
    assert kinds == {str(kind): 0.0 for kind in Kind}
    assert "regverify_image_broken" not in samples(text)
    assert value(text, "regverify_images_broken") == 0


def test_broken_series_are_capped_and_the_rest_counted() -> None:
    report = scan_report(broken=5, ok=0)
    identity = Identity.of(report)
    text = "".join(
        line for line in render(report).splitlines(keepends=True)
    )
    assert value(text, "regverify_image_broken_truncated") == 0
    from verifier.output.prometheus.metrics import exposition

    capped = exposition(report_families(report, identity, max_broken_series=3))
    # The first three in sorted order, so the same images stay listed from run to run.
    assert broken_images(capped) == {("app/b0", "v1"), ("app/b1", "v1"), ("app/b2", "v1")}
    assert value(capped, "regverify_image_broken_truncated") == 2
    assert value(capped, "regverify_images_broken") == 5
    check_metrics(capped)


def test_incomplete_run_keeps_last_success_out() -> None:
    report = scan_report()
    report.add(Finding(Kind.REQUEST_FAILED, Severity.ERROR, "503 after retries", "app/x", "v1"))
    text = render(report)
    assert "regverify_last_success_timestamp_seconds" not in samples(text)
    assert value(text, "regverify_last_run_timestamp_seconds") == 1_700_000_002.5
    assert value(text, "regverify_catalog_accessible") == 1


def test_refused_catalog_is_catalog_accessible_0() -> None:
    report = scan_report(broken=0, ok=0)
    report.add(Finding(Kind.CATALOG_INACCESSIBLE, Severity.ERROR, "catalog refused (401)"))
    text = render(report)
    assert value(text, "regverify_catalog_accessible") == 0
    assert "regverify_last_success_timestamp_seconds" not in samples(text)


def test_image_run_refused_credentials_is_catalog_accessible_0() -> None:
    report = Report(mode="image", target="reg.example.com/app/web:v1", started_at=1.0)
    report.add(Finding(Kind.AUTH_FAILED, Severity.ERROR, "401", "app/web", "v1"))
    report.images.append(ImageResult("reg.example.com/app/web:v1", None, ImageStatus.ERROR,
                                     "app/web", "v1"))
    text = render(report)
    assert value(text, "regverify_catalog_accessible", registry="reg.example.com",
                 mode="image") == 0


def test_fs_report_has_fs_metrics_and_no_image_metrics() -> None:
    report = Report(mode="fs-scan", target="/var/lib/docker-registry", started_at=10.0,
                    duration_seconds=1.0)
    for i in range(3):
        report.add(Finding(Kind.ORPHAN_LAYER_LINK, Severity.ERROR, "data gone", f"r{i}"))
    report.add(Finding(Kind.ORPHAN_INDEX_CHILD, Severity.ERROR, "child gone", "multi"))
    # A repaired orphan (fs fix turns it into info) is no longer counted.
    report.add(Finding(Kind.ORPHAN_LAYER_LINK, Severity.INFO, "quarantined", "r9"))
    text = render(report)
    names = set(samples(text))
    assert {"regverify_fs_orphan_layer_links", "regverify_fs_orphan_index_children",
            "regverify_last_run_timestamp_seconds", "regverify_last_success_timestamp_seconds",
            "regverify_defects"} <= names
    assert not names & {"regverify_images_checked", "regverify_image_broken_truncated",
                        "regverify_requests_total"}
    ident = {"registry": "/var/lib/docker-registry", "mode": "fs-scan"}
    assert value(text, "regverify_fs_orphan_layer_links", **ident) == 3
    assert value(text, "regverify_fs_orphan_index_children", **ident) == 1
    # Where: one series per damaged repository and kind; the repaired one is not there.
    assert {(lab["repository"], lab["kind"]): v
            for lab, v in samples(text)["regverify_fs_repository_defects"]} == {
        ("r0", "orphan_layer_link"): 1, ("r1", "orphan_layer_link"): 1,
        ("r2", "orphan_layer_link"): 1, ("multi", "orphan_index_child"): 1}
    assert value(text, "regverify_fs_repository_defects_truncated", **ident) == 0
    check_metrics(text)


def test_fs_tags_broken_counts_the_tags_storage_findings_name() -> None:
    report = Report(mode="fs-fix", target="/srv/registry", started_at=10.0, duration_seconds=1.0)
    # The orphan link was quarantined (info), the image it broke is still an error.
    report.add(Finding(Kind.ORPHAN_LAYER_LINK, Severity.INFO, "quarantined", "app/web",
                       details={"tags": ["v1"]}))
    report.add(Finding(Kind.IMAGE_BLOB_MISSING, Severity.ERROR, "layer gone", "app/web",
                       details={"tags": ["v1", "v2"]}))
    report.add(Finding(Kind.DANGLING_REVISION, Severity.ERROR, "manifest gone", "app/web",
                       details={"tags": ["v2"]}))
    report.add(Finding(Kind.LAYER_LINK_MISSING, Severity.ERROR, "link gone", "team/api",
                       details={"tags": ["1.0"]}))
    text = render(report)
    assert value(text, "regverify_fs_tags_broken", registry="/srv/registry", mode="fs-fix") == 3
    clean = Report(mode="fs-scan", target="/srv/registry", started_at=10.0, duration_seconds=1.0)
    assert value(render(clean), "regverify_fs_tags_broken", registry="/srv/registry",
                 mode="fs-scan") == 0
    check_metrics(text)


def test_fs_repository_defects_are_counted_sorted_and_capped() -> None:
    report = Report(mode="fs-scan", target="/srv/registry", started_at=10.0,
                    duration_seconds=1.0)
    for repository in ("b", "a", "b", "c"):
        report.add(Finding(Kind.ORPHAN_LAYER_LINK, Severity.ERROR, "data gone", repository))
    report.add(Finding(Kind.DANGLING_TAG, Severity.ERROR, "tag gone", "a"))
    families = {f.name: f for f in report_families(report, max_broken_series=2)}
    listed = [(s.labels["repository"], s.labels["kind"], s.value)
              for s in families["regverify_fs_repository_defects"].samples]
    assert listed == [("a", "dangling_tag", 1), ("a", "orphan_layer_link", 1)]
    [truncated] = families["regverify_fs_repository_defects_truncated"].samples
    assert truncated.value == 2  # (b, orphan_layer_link) x2 counted once, and (c, ...)
    [uncapped] = [f for f in report_families(report) if f.name == "regverify_fs_repository_defects"]
    whole = {(s.labels["repository"], s.labels["kind"]): s.value for s in uncapped.samples}
    assert whole[("b", "orphan_layer_link")] == 2


def test_shard_is_an_identity_label() -> None:
    report = scan_report(extra={"scan": {"shard": "2/8"}})
    text = render(report)
    assert value(text, "regverify_images_checked", shard="2/8") == 2
    assert all(lab.get("shard") == "2/8" for series in samples(text).values()
               for lab, _ in series)


def test_every_metric_is_documented() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "monitoring.md").read_text()
    for name in [*RUN_FAMILIES, "regverify_scans", "regverify_scan_in_progress"]:
        shown = f"{name}_total" if name in ("regverify_requests", "regverify_scans") else name
        assert f"`{shown}" in doc, shown


# --- textfile --------------------------------------------------------------------------------


def _output(tmp_path: Path, **kwargs: Any) -> MetricsOutput:
    return MetricsOutput(Identity("reg.example.com", "scan"), textfile=tmp_path / "r.prom",
                         **kwargs)


def test_textfile_complete_then_failed_then_incomplete(tmp_path: Path) -> None:
    out = _output(tmp_path)
    path = tmp_path / "r.prom"
    out.emit(scan_report(broken=2))
    first = path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o644"  # node_exporter runs as another user
    assert broken_images(first) == {("app/b0", "v1"), ("app/b1", "v1")}

    # Raised before any report: only the run timestamp, duration and catalog 0 change.
    out.emit_failure(duration=0.25, ended=1_800_000_000.0)
    failed = path.read_text()
    check_metrics(failed)
    assert value(failed, "regverify_catalog_accessible") == 0
    assert value(failed, "regverify_last_run_timestamp_seconds") == 1_800_000_000.0
    assert value(failed, "regverify_run_duration_seconds") == 0.25
    assert value(failed, "regverify_last_success_timestamp_seconds") == 1_700_000_002.5
    assert broken_images(failed) == broken_images(first)
    assert value(failed, "regverify_requests_total", code="200") == 7

    # Incomplete report: everything new except the last success.
    report = scan_report(broken=0, ok=1)
    report.started_at = 1_900_000_000.0
    report.add(Finding(Kind.REQUEST_FAILED, Severity.ERROR, "503", "app/x", "v1"))
    out.emit(report)
    incomplete = path.read_text()
    check_metrics(incomplete)
    assert value(incomplete, "regverify_last_success_timestamp_seconds") == 1_700_000_002.5
    assert value(incomplete, "regverify_last_run_timestamp_seconds") == 1_900_000_002.5
    assert value(incomplete, "regverify_catalog_accessible") == 1
    assert broken_images(incomplete) == set()
    assert [p.name for p in tmp_path.iterdir()] == ["r.prom"]  # no temporary file left


def test_textfile_carries_forward_only_this_probe(tmp_path: Path) -> None:
    path = tmp_path / "r.prom"
    other = render(scan_report(broken=1)).replace("reg.example.com", "other.example.com")
    path.write_text(other + "# TYPE foreign_metric gauge\nforeign_metric 1\n")
    _output(tmp_path).emit_failure(duration=1.0, ended=5.0)
    text = path.read_text()
    assert "other.example.com" not in text and "foreign_metric" not in text
    assert set(samples(text)) == {"regverify_last_run_timestamp_seconds",
                                  "regverify_run_duration_seconds",
                                  "regverify_catalog_accessible"}


def test_textfile_torn_previous_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "r.prom").write_text("regverify_last_run_timestamp_seconds{mode=\n")
    _output(tmp_path).emit_failure(duration=1.0, ended=5.0)
    check_metrics((tmp_path / "r.prom").read_text())


def test_textfile_unwritable_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    out = MetricsOutput(Identity("r", "scan"), textfile=blocker / "r.prom")
    with pytest.raises(TextfileError) as info:
        out.emit(scan_report())
    assert info.value.exit_code == 2 and "--textfile" in str(info.value)


# --- Pushgateway (a recording HTTP server on loopback) ------------------------------------------


@dataclass
class Gateway:
    """A loopback HTTP server that records pushes the way a Pushgateway receives them."""

    url: str
    pushes: list[tuple[str, str, str]] = field(default_factory=list)
    authorization: list[str | None] = field(default_factory=list)
    status: int = 200


def grouping(path: str) -> tuple[str, dict[str, str]]:
    """Job and grouping key of a Pushgateway push path (`/metrics/job/J/k/v/...`)."""
    parts = path.split("/")[2:]
    pairs = dict(zip(parts[::2], parts[1::2], strict=True))
    key: dict[str, str] = {}
    for name, raw in pairs.items():
        if name.endswith("@base64"):
            key[name.removesuffix("@base64")] = base64.urlsafe_b64decode(raw).decode()
        else:
            key[name] = unquote(raw)
    return key.pop("job"), key


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    state = Gateway(url="")

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            state.pushes.append((self.command, self.path, body))
            state.authorization.append(self.headers.get("Authorization"))
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST = _record

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_push_complete_is_put_failure_is_post(gateway: Gateway) -> None:
    out = MetricsOutput(Identity("reg.example.com", "scan", "1/4"), pushgateway=gateway.url,
                        job="regverify")
    out.emit(scan_report())
    out.emit_failure(duration=1.0, ended=5.0)
    (verb1, path1, body1), (verb2, path2, body2) = gateway.pushes
    # A shard contains "/": prometheus_client base64-encodes such grouping-key values.
    assert "shard@base64/MS80" in path1
    assert grouping(path1) == ("regverify", {"registry": "reg.example.com", "mode": "scan",
                                             "shard": "1/4"})
    assert (verb1, verb2, path2) == ("PUT", "POST", path1)
    assert broken_images(body1) == {("app/b0", "v1")}
    assert set(samples(body2)) == {"regverify_last_run_timestamp_seconds",
                                   "regverify_run_duration_seconds",
                                   "regverify_catalog_accessible"}


def test_push_refused_is_incomplete_and_hides_credentials(gateway: Gateway) -> None:
    gateway.status = 400
    url = gateway.url.replace("http://", "http://probe:hunter2@")
    with pytest.raises(PushgatewayError) as info:
        MetricsOutput(Identity("r", "scan"), pushgateway=url).emit(scan_report())
    assert info.value.exit_code == 3
    assert "400" in str(info.value) and "hunter2" not in str(info.value)
    # User info in the URL is sent as Basic auth, never as part of the host name.
    expected = "Basic " + base64.b64encode(b"probe:hunter2").decode()
    assert gateway.authorization == [expected]
    assert redact_url("http://u:p@gw:9091/x") == "http://gw:9091/x"
    assert redact_url("gw:9091") == "gw:9091"


# --- the real registry -----------------------------------------------------------------------




@pytest.fixture
def damaged(registry: RegistryServer) -> RegistryServer:
    """Two healthy images and two broken ones: a deleted layer, and an index child's revision
    link removed (the garbage-collect incident)."""
    web = push_image(registry, "app/web", "v1")
    push_image(registry, "app/web", "v2")
    push_image(registry, "team/api", "1.0", oci=False)
    index = push_index(registry, "multi/tool", "latest")
    assert isinstance(index, PushedIndex)
    blob_data_path(registry.v2, web.layers[0].digest).unlink()
    revision_link_path(registry.v2, "multi/tool", index.children[0].digest).unlink()
    registry.restart()
    return registry


EXPECTED_BROKEN = {("app/web", "v1"), ("multi/tool", "latest")}


@pytest.mark.registry
def test_real_scan_textfile_names_the_broken_images(damaged: RegistryServer,
                                                    tmp_path: Path) -> None:
    textfile = tmp_path / "node-exporter" / "regverify.prom"
    args = ["scan", damaged.host, "--plain-http", "--retries", "0", "--textfile", str(textfile),
            "--format", "json"]
    run = run_cli(*args, subprocess=True)
    assert run.exit_code == 1, run.stderr
    report = json.loads(run.stdout)
    text = textfile.read_text()
    check_metrics(text)
    assert broken_images(text) == EXPECTED_BROKEN
    assert {(i["repository"], i["tag"]) for i in report["images"]
            if i["status"] == "broken"} == EXPECTED_BROKEN
    ident = {"registry": damaged.host, "mode": "scan"}
    assert value(text, "regverify_images_checked", **ident) == 4
    assert value(text, "regverify_images_broken", **ident) == 2
    assert value(text, "regverify_defects", kind="blob_missing", **ident) >= 1
    assert value(text, "regverify_defects", kind="manifest_missing", **ident) >= 1
    assert value(text, "regverify_catalog_accessible", **ident) == 1
    success = value(text, "regverify_last_success_timestamp_seconds", **ident)
    last_run = value(text, "regverify_last_run_timestamp_seconds", **ident)
    assert success == last_run
    assert value(text, "regverify_requests_total", code="404", **ident) >= 2

    # The registry goes away: exit 3, and the textfile says so without forgetting anything.
    damaged.stop()
    run = run_cli(*args, subprocess=True)
    assert run.exit_code == 3 and "unreachable" in run.stderr
    down = textfile.read_text()
    check_metrics(down)
    assert value(down, "regverify_catalog_accessible", **ident) == 0
    assert value(down, "regverify_last_run_timestamp_seconds", **ident) > last_run
    assert value(down, "regverify_last_success_timestamp_seconds", **ident) == success
    assert broken_images(down) == EXPECTED_BROKEN

    # Back again: a complete run moves the success timestamp.
    damaged.start()
    run = run_cli(*args, subprocess=True)
    assert run.exit_code == 1
    back = textfile.read_text()
    assert value(back, "regverify_catalog_accessible", **ident) == 1
    assert value(back, "regverify_last_success_timestamp_seconds", **ident) > success


@pytest.mark.registry
def test_real_image_format_prometheus(damaged: RegistryServer) -> None:
    run = run_cli("image", f"{damaged.host}/app/web:v1", "--plain-http", "--format",
                  "prometheus", subprocess=True)
    assert run.exit_code == 1, run.stderr
    check_metrics(run.stdout)
    assert broken_images(run.stdout) == {("app/web", "v1")}
    assert value(run.stdout, "regverify_images_checked", registry=damaged.host,
                 mode="image") == 1

    capped = run_cli("image", f"{damaged.host}/app/web:v1", "--plain-http", "--format",
                     "prometheus", "--max-broken-series", "0", subprocess=True)
    assert capped.exit_code == 1
    assert broken_images(capped.stdout) == set()
    assert value(capped.stdout, "regverify_image_broken_truncated") == 1

    healthy = run_cli("image", f"{damaged.host}/app/web:v2", "--plain-http", "--format",
                      "prometheus", subprocess=True)
    assert healthy.exit_code == 0
    check_metrics(healthy.stdout)


@pytest.mark.registry
def test_real_scan_pushes_to_the_gateway(damaged: RegistryServer, gateway: Gateway) -> None:
    run = run_cli("scan", damaged.host, "--plain-http", "--pushgateway", gateway.url,
                  "--push-job", "registry-probe", "--format", "json", subprocess=True)
    assert run.exit_code == 1, run.stderr
    json.loads(run.stdout)  # the report still goes to stdout
    [(verb, path, body)] = gateway.pushes
    assert verb == "PUT"
    assert grouping(path) == ("registry-probe", {"registry": damaged.host, "mode": "scan"})
    check_metrics(body)
    assert broken_images(body) == EXPECTED_BROKEN


@pytest.mark.registry
def test_unreachable_gateway_is_exit_3_after_the_report(registry: RegistryServer) -> None:
    push_image(registry, "app/web", "v1")
    run = run_cli("image", f"{registry.host}/app/web:v1", "--plain-http", "--pushgateway",
                  "http://127.0.0.1:9", "--format", "json", subprocess=True)
    assert run.exit_code == 3
    assert json.loads(run.stdout)["exit_code"] == 0
    assert "cannot push metrics to http://127.0.0.1:9" in run.stderr


@pytest.mark.registry
def test_unwritable_textfile_is_exit_2(registry: RegistryServer, tmp_path: Path) -> None:
    push_image(registry, "app/web", "v1")
    blocker = tmp_path / "file"
    blocker.write_text("")
    run = run_cli("image", f"{registry.host}/app/web:v1", "--plain-http", "--textfile",
                  str(blocker / "x.prom"), subprocess=True)
    assert run.exit_code == 2 and "cannot write --textfile" in run.stderr


# --- the PromQL metric-name extraction the example checks rely on ------------------------------


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (registry) (regverify_images_broken{mode="scan"}) > 0',
     {"regverify_images_broken"}),
    ("time() - max by (registry, mode, shard) (regverify_last_run_timestamp_seconds"
     '{mode=~"scan|fs-scan"}) > 1800', {"regverify_last_run_timestamp_seconds"}),
    ('absent(regverify_last_run_timestamp_seconds{mode=~"scan|fs-scan"})',
     {"regverify_last_run_timestamp_seconds"}),
    ("max by (registry) (a) + on (registry) group_left (kind) max without (mode) (b) > bool 0",
     {"a", "b"}),
    ('sum by (code) (rate(regverify_requests_total{registry=~"x|y"}[5m] offset 1h))',
     {"regverify_requests_total"}),
    ('{__name__="from_matcher", job="x"} or count(plain) unless topk(3, other)',
     {"from_matcher", "plain", "other"}),
])
def test_metric_names_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_metric_names_rejects_what_is_not_promql() -> None:
    with pytest.raises(ValueError, match="cannot tokenize"):
        metric_names("up; DROP TABLE metrics")


def test_label_names_of_promql() -> None:
    assert label_names(
        'max by (registry, mode) (a{mode=~"scan|fs-scan", __name__!="x"}) + on (registry) '
        'group_left (kind) sum without (shard) (b{code!="200"})'
    ) == {"registry", "mode", "kind", "shard", "code"}

