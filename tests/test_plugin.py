"""`regverify plugin` (Woodpecker, `PLUGIN_*` settings) and `--settle`: unit tests of the
settings and the settle loop, then the real CLI against the real registry."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run_cli
from tests.support.images import push_image
from tests.support.promtool import check_metrics
from tests.support.registry import RegistryServer, blob_data_path
from tests.test_prometheus import broken_images, value
from verifier.cli.plugin import PluginSettings, merge_reports, parse_images, settings_from_env
from verifier.errors import UsageError
from verifier.model.findings import Finding, Kind, Report, Severity
from verifier.model.reference import parse_reference
from verifier.output import Format
from verifier.registry.client import ClientOptions
from verifier.settle import PLUGIN_DEFAULT_SETTLE, verify_settled
from verifier.verify import RunOptions, verify_image

# --- settings ------------------------------------------------------------------------------------


def test_defaults_from_one_image() -> None:
    assert settings_from_env({"PLUGIN_IMAGE": "reg.example.com/app:1"}) == PluginSettings(
        images=("reg.example.com/app:1",), settle=PLUGIN_DEFAULT_SETTLE)


def test_every_setting() -> None:
    settings = settings_from_env({
        "PLUGIN_IMAGE": "reg.example.com/a:1, reg.example.com/b:2,,reg.example.com/a:1",
        "PLUGIN_USERNAME": "ci", "PLUGIN_PASSWORD": " secret with spaces ",
        "PLUGIN_PLAIN_HTTP": "true", "PLUGIN_INSECURE": "False", "PLUGIN_DEEP": "1",
        "PLUGIN_FORMAT": "JSON", "PLUGIN_OUTPUT": "out.json", "PLUGIN_RETRIES": "2",
        "PLUGIN_TIMEOUT": "5", "PLUGIN_CONCURRENCY": "3", "PLUGIN_SETTLE": "0",
        "PLUGIN_TEXTFILE": "m.prom", "PLUGIN_PUSHGATEWAY": "http://gw:9091",
        "PLUGIN_PUSH_JOB": "ci",
    })
    assert settings == PluginSettings(
        images=("reg.example.com/a:1", "reg.example.com/b:2"), username="ci",
        password=" secret with spaces ", plain_http=True, insecure=False, deep=True,
        fmt=Format.JSON, output=Path("out.json"), retries=2, timeout=5.0, concurrency=3,
        settle=0.0, textfile=Path("m.prom"), pushgateway="http://gw:9091", push_job="ci")


def test_repo_and_tags_like_the_buildx_plugin() -> None:
    settings = settings_from_env({"PLUGIN_REPO": "reg.example.com/team/app",
                                  "PLUGIN_TAGS": "latest,abc123"})
    assert settings.images == ("reg.example.com/team/app:latest", "reg.example.com/team/app:abc123")


@pytest.mark.parametrize(("env", "message"), [
    ({}, "PLUGIN_IMAGE is not set"),
    ({"PLUGIN_DEEP": "maybe"}, "PLUGIN_DEEP='maybe': expected true or false"),
    ({"PLUGIN_RETRIES": "many"}, "PLUGIN_RETRIES='many': expected a whole number"),
    ({"PLUGIN_RETRIES": "99"}, "PLUGIN_RETRIES='99': expected 0 to 20"),
    ({"PLUGIN_SETTLE": "-1"}, "PLUGIN_SETTLE='-1'"),
    ({"PLUGIN_FORMAT": "xml"}, "PLUGIN_FORMAT='xml': expected one of human, json"),
    ({"PLUGIN_USERNAME": "ci"}, "must be given together"),
    ({"PLUGIN_CA_CERT": "/nonexistent/ca.pem"}, "PLUGIN_CA_CERT"),
    ({"PLUGIN_PLAINHTTP": "true"}, "PLUGIN_PLAINHTTP: unknown setting (known: ca_cert, "),
])
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    base = {"PLUGIN_IMAGE": "reg.example.com/app:1"} if "PLUGIN_IMAGE" not in message else {}
    with pytest.raises(UsageError) as info:
        settings_from_env({**base, **env})
    assert message in str(info.value)


def test_bad_reference_is_usage_error() -> None:
    with pytest.raises(UsageError, match="PLUGIN_IMAGE"):
        parse_images(["reg.example.com/Bad Name:1"])


# --- settle --------------------------------------------------------------------------------------


def _report(*kinds: Kind) -> Report:
    report = Report(mode="image", target="reg.example.com/app:1")
    for kind in kinds:
        report.add(Finding(kind, Severity.ERROR, str(kind), "app", "1"))
    return report


class FakeTime:
    """A clock that only moves when the settle loop sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _settle(verdicts: list[Report], settle: float) -> tuple[Report, int, FakeTime]:
    fake, calls = FakeTime(), 0

    async def verify() -> Report:
        nonlocal calls
        calls += 1
        return verdicts[min(calls, len(verdicts)) - 1]

    result = asyncio.run(verify_settled(verify, settle, sleep=fake.sleep, clock=fake.clock))
    return result, calls, fake


def test_settle_retries_not_found_until_it_clears() -> None:
    result, calls, fake = _settle([_report(Kind.MANIFEST_MISSING), _report(Kind.BLOB_MISSING),
                                   _report()], settle=30)
    assert calls == 3 and result.exit_code == 0
    assert fake.sleeps == [1.0, 2.0]  # a growing pause
    assert result.notes == ["settle: 3 attempts over 3.0s (--settle 30); found"]


def test_settle_gives_up_at_the_deadline() -> None:
    result, calls, fake = _settle([_report(Kind.MANIFEST_MISSING)], settle=10)
    assert result.exit_code == 1
    assert sum(fake.sleeps) == 10 and fake.sleeps[-1] == 10 - 7  # 1+2+4, then what is left
    assert calls == len(fake.sleeps) + 1
    assert "still not found" in result.notes[0]


def test_settle_does_not_retry_other_verdicts() -> None:
    for verdict in (_report(), _report(Kind.DIGEST_MISMATCH), _report(Kind.REQUEST_FAILED)):
        result, calls, _ = _settle([verdict], settle=30)
        assert calls == 1 and result.notes == []


def test_settle_zero_is_one_attempt() -> None:
    _, calls, _ = _settle([_report(Kind.MANIFEST_MISSING)], settle=0)
    assert calls == 1


def test_merge_reports() -> None:
    a, b = _report(), _report(Kind.BLOB_MISSING)
    a.requests_by_code["200"] = 3
    b.requests_by_code["200"] = 2
    b.incomplete = True
    merged = merge_reports([a, b], "x,y")
    assert (merged.mode, merged.target, merged.requests_by_code["200"]) == ("image", "x,y", 5)
    assert merged.incomplete and merged.exit_code == 1


# --- the real registry ---------------------------------------------------------------------------


@pytest.fixture
def images(registry: RegistryServer) -> dict[str, str]:
    """A healthy and a broken image (layer data deleted, registry restarted)."""
    push_image(registry, "app/web", "v1")
    broken = push_image(registry, "app/web", "v2")
    blob_data_path(registry.v2, broken.layers[0].digest).unlink()
    registry.restart()
    return {"healthy": f"{registry.host}/app/web:v1", "broken": f"{registry.host}/app/web:v2"}


@pytest.mark.registry
def test_plugin_healthy_image_exit_0(images: dict[str, str], tmp_path: Path) -> None:
    run = run_cli("plugin", env={"PLUGIN_IMAGE": images["healthy"], "PLUGIN_PLAIN_HTTP": "true",
                                 "PLUGIN_FORMAT": "json", "DOCKER_CONFIG": str(tmp_path)},
                  subprocess=True)
    assert run.exit_code == 0, run.stderr
    report = json.loads(run.stdout)
    assert [i["status"] for i in report["images"]] == ["ok"]


@pytest.mark.registry
def test_plugin_broken_image_exit_1_with_metrics(images: dict[str, str], tmp_path: Path,
                                                 registry: RegistryServer) -> None:
    textfile = tmp_path / "ci.prom"
    run = run_cli("plugin", env={
        "PLUGIN_IMAGE": f"{images['healthy']},{images['broken']}",
        "PLUGIN_PLAIN_HTTP": "true", "PLUGIN_FORMAT": "json", "PLUGIN_SETTLE": "0",
        "PLUGIN_RETRIES": "0", "PLUGIN_TEXTFILE": str(textfile),
        "DOCKER_CONFIG": str(tmp_path)}, subprocess=True)
    assert run.exit_code == 1, run.stderr
    report = json.loads(run.stdout)
    assert {i["reference"]: i["status"] for i in report["images"]} == {
        images["healthy"]: "ok", images["broken"]: "broken"}
    assert report["summary"]["defects_by_kind"] == {"blob_missing": 1}
    text = textfile.read_text()
    check_metrics(text)
    assert broken_images(text) == {("app/web", "v2")}
    assert value(text, "regverify_images_checked", registry=registry.host, mode="image") == 2


@pytest.mark.registry
def test_plugin_settles_then_calls_a_missing_image_broken(registry: RegistryServer,
                                                          tmp_path: Path) -> None:
    run = run_cli("plugin", "--settle", "2", env={
        "PLUGIN_IMAGE": f"{registry.host}/never/pushed:1", "PLUGIN_PLAIN_HTTP": "1",
        "PLUGIN_FORMAT": "json", "DOCKER_CONFIG": str(tmp_path)}, subprocess=True)
    assert run.exit_code == 1, run.stderr
    report = json.loads(run.stdout)
    assert report["summary"]["defects_by_kind"] == {"manifest_missing": 1}
    [note] = [n for n in report["notes"] if n.startswith("settle:")]
    assert "still not found" in note and "(--settle 2)" in note


@pytest.mark.registry
def test_settle_finds_an_image_that_appears_during_the_window(registry: RegistryServer) -> None:
    ref = parse_reference(f"{registry.host}/late/app:1")
    options = RunOptions(client=ClientOptions(plain_http=True, retries=0))
    attempts: list[int] = []

    async def verify() -> Report:
        report = await verify_image(ref, options)
        attempts.append(report.exit_code)
        if len(attempts) == 1:
            # The replica catches up after the first, real 404.
            await asyncio.to_thread(push_image, registry, "late/app", "1")
        return report

    result = asyncio.run(verify_settled(verify, 30))
    assert attempts == [1, 0] and result.exit_code == 0
    assert result.notes[-1].endswith("found")


@pytest.mark.registry
def test_plugin_basic_auth_from_settings(tmp_path: Path, registry_bin: str) -> None:
    from tests.test_verify import HTPASSWD_LINE, PASSWORD

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(HTPASSWD_LINE)
    server = RegistryServer(htpasswd=htpasswd, workdir=tmp_path / "reg", registry_bin=registry_bin)
    server.start()
    try:
        push_image(server, "private/app", "v1", auth=("tester", PASSWORD))
        env: dict[str, Any] = {"PLUGIN_IMAGE": f"{server.host}/private/app:v1",
                               "PLUGIN_PLAIN_HTTP": "true", "PLUGIN_USERNAME": "tester",
                               "DOCKER_CONFIG": str(tmp_path), "PLUGIN_RETRIES": "0"}
        ok = run_cli("plugin", env={**env, "PLUGIN_PASSWORD": PASSWORD}, subprocess=True)
        assert ok.exit_code == 0, ok.stderr
        assert PASSWORD not in ok.stdout + ok.stderr
        refused = run_cli("plugin", env={**env, "PLUGIN_PASSWORD": "wrong"}, subprocess=True)
        assert refused.exit_code == 3, refused.stdout + refused.stderr
    finally:
        server.stop()


def test_plugin_usage_errors_exit_2() -> None:
    run = run_cli("plugin", env={}, subprocess=True)
    assert run.exit_code == 2 and "PLUGIN_IMAGE is not set" in run.stderr
    run = run_cli("plugin", env={"PLUGIN_IMAGE": "reg.example.com/app:1", "PLUGIN_RETRIES": "x"},
                  subprocess=True)
    assert run.exit_code == 2 and "PLUGIN_RETRIES" in run.stderr
