"""The command line: exit codes and one-line errors, in-process (the `run_cli` fixture)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import pytest
import respx

from tests.support.cli import RunCli
from verifier.cli.main import build_run_options

HOST = "reg.test"


@pytest.fixture(autouse=True)
def _isolated_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No developer's ~/.docker/config.json or REGVERIFY_* variables leak into a test."""
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    monkeypatch.delenv("REGVERIFY_USERNAME", raising=False)
    monkeypatch.delenv("REGVERIFY_PASSWORD", raising=False)
    return config_dir


def _assert_one_line_error(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("regverify: error: ")
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    ("reference", "needle"),
    [
        ("Bad/Ref", "lowercase"),
        ("ALPINE", "lowercase"),
        ("reg.test/app@sha256:abc", "invalid digest"),
        ("reg.test/app@md5:" + "a" * 32, "unsupported algorithm"),
        ("reg.test/app:-tag", "invalid tag"),
        ("reg.test/" + "a" * 300, "longer than 255"),
        ("reg.test/a b", "invalid characters"),
        ("", "empty"),
    ],
)
def test_bad_reference_is_exit_2_one_line(reference: str, needle: str, run_cli: RunCli) -> None:
    result = run_cli("image", reference)
    assert result.exit_code == 2
    assert result.stdout == ""
    _assert_one_line_error(result.stderr, needle)


def test_unknown_option_is_exit_2(run_cli: RunCli) -> None:
    result = run_cli("image", "reg.test/app:v1", "--bogus")
    assert result.exit_code == 2
    assert "--bogus" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_command_and_bad_values_are_exit_2(run_cli: RunCli) -> None:
    for args in (["frobnicate"],
                 ["image", "reg.test/app", "--format", "yaml"],
                 ["image", "reg.test/app", "--retries", "-1"],
                 ["image", "reg.test/app", "--concurrency", "0"],
                 ["image"]):
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output


def test_unreachable_registry_is_exit_3(run_cli: RunCli) -> None:
    result = run_cli("image", "127.0.0.1:1/app:v1", "--plain-http", "--retries", "0",
                     "--format", "json")
    assert result.exit_code == 3
    assert result.stdout == ""
    _assert_one_line_error(result.stderr, "127.0.0.1:1", "unreachable")


def test_password_stdin_without_username_is_exit_2(run_cli: RunCli) -> None:
    result = run_cli("image", "reg.test/app", "--password-stdin", input="pw\n")
    assert result.exit_code == 2
    _assert_one_line_error(result.stderr, "--password-stdin", "--username")


def test_password_stdin_with_nothing_on_stdin_is_exit_2(run_cli: RunCli) -> None:
    result = run_cli("image", "reg.test/app", "-u", "alice", "--password-stdin", input="")
    assert result.exit_code == 2
    _assert_one_line_error(result.stderr, "standard input")


def test_missing_ca_cert_is_exit_2(tmp_path: Path, run_cli: RunCli) -> None:
    missing = tmp_path / "nope.pem"
    result = run_cli("image", "reg.test/app", "--ca-cert", str(missing))
    assert result.exit_code == 2
    _assert_one_line_error(result.stderr, "--ca-cert", str(missing))


def test_unreadable_docker_config_is_exit_2(_isolated_credentials: Path, run_cli: RunCli) -> None:
    (_isolated_credentials / "config.json").write_text("{not json")
    result = run_cli("image", "reg.test/app")
    assert result.exit_code == 2
    _assert_one_line_error(result.stderr, "docker config")


# -- end to end against a mocked registry ----------------------------------------------------


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


CONFIG = b'{"architecture": "amd64", "os": "linux"}'
LAYER = b"layer data " * 100
MANIFEST = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": _digest(CONFIG), "size": len(CONFIG)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": _digest(LAYER), "size": len(LAYER)}],
}).encode()


def _registry(blobs: dict[str, bytes]) -> respx.MockRouter:
    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v2/":
            return httpx.Response(200)
        if path == "/v2/app/manifests/v1":
            return httpx.Response(200, content=MANIFEST, headers={
                "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                "Docker-Content-Digest": _digest(MANIFEST)})
        digest = path.rpartition("/")[2]
        if path.startswith("/v2/app/blobs/") and digest in blobs:
            data = blobs[digest]
            if request.method == "HEAD":
                return httpx.Response(200, headers={"Content-Length": str(len(data))})
            if request.headers.get("range"):
                return httpx.Response(206, content=data[-1:], headers={
                    "Content-Range": f"bytes {len(data) - 1}-{len(data) - 1}/{len(data)}"})
            return httpx.Response(200, content=data)
        return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})

    router = respx.mock(assert_all_mocked=True, assert_all_called=False, using="httpx")
    router.route(host=HOST).mock(side_effect=handle)
    return router


def test_healthy_image_is_exit_0_with_json_report(tmp_path: Path, run_cli: RunCli) -> None:
    out = tmp_path / "report.json"
    blobs = {_digest(CONFIG): CONFIG, _digest(LAYER): LAYER}
    with _registry(blobs):
        result = run_cli("image", f"{HOST}/app:v1", "--plain-http", "--format", "json",
                         "--output", str(out))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["exit_code"] == 0
    assert doc["findings"] == []
    assert doc["images"] == [{"reference": f"{HOST}/app:v1", "repository": "app", "tag": "v1",
                              "digest": _digest(MANIFEST), "status": "ok"}]


def test_missing_layer_is_exit_1_with_human_report(run_cli: RunCli) -> None:
    with _registry({_digest(CONFIG): CONFIG}):
        result = run_cli("image", f"{HOST}/app:v1", "--plain-http")
    assert result.exit_code == 1, result.stderr
    assert "blob_missing" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("DEFECTS FOUND:")
    assert "Traceback" not in result.output


def test_docker_hub_credentials_are_found_for_the_api_host(_isolated_credentials: Path) -> None:
    auth = base64.b64encode(b"hub-user:hub-pw").decode()
    (_isolated_credentials / "config.json").write_text(
        json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": auth}}}))
    options = build_run_options(
        "registry-1.docker.io", plain_http=False, insecure=False, ca_cert=None, username=None,
        password_stdin=False, concurrency=8, timeout=30.0, retries=4, deadline=None,
        max_manifest_bytes=4 * 1024 * 1024, deep=False)
    assert options.credentials is not None
    assert options.credentials.username == "hub-user"


def test_password_from_stdin_is_never_echoed(run_cli: RunCli) -> None:
    result = run_cli("image", "127.0.0.1:1/app", "--plain-http", "--retries", "0", "-u", "alice",
                     "--password-stdin", input="hunter2-secret\n")
    assert result.exit_code == 3
    assert "hunter2-secret" not in result.output


def test_filesystem_commands_are_mounted_on_the_real_app(run_cli: RunCli) -> None:
    """`regverify fs scan|fix|restore|gc-preview` reach their commands through verifier.cli.main."""
    from verifier.cli.main import app as real_app

    for command in ("scan", "fix", "restore", "gc-preview"):
        result = run_cli("fs", command, "--help", app=real_app)
        assert result.exit_code == 0, (command, result.output)


def test_start_up_imports_only_what_the_http_commands_need() -> None:
    # A probe runs every 15 minutes: the fs engines, the GC preview, the exporter and aiohttp
    # (the HTTP transport) are imported by the commands that use them, not by every start.
    import subprocess
    import sys

    lazy = ["aiohttp", "verifier.output.prometheus.exporter", "verifier.storage.gc_preview",
            "verifier.storage.repair", "verifier.storage.scan", "verifier.registry.transport"]
    probe = f"import sys, verifier.cli.main; print([m for m in {lazy!r} if m in sys.modules])"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    assert run.stdout.strip() == "[]", run.stdout


def test_credentials_note_names_the_source(_isolated_credentials: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from verifier.cli.main import credentials_note
    from verifier.registry.auth import Credentials

    assert credentials_note("r.example.com", None, None) == (
        "no credentials were sent to r.example.com: none were found for it")
    who = Credentials("ci", "secret")
    config = _isolated_credentials / "config.json"
    assert f"(from the Docker config {config})" in credentials_note("r.example.com", who, None)
    monkeypatch.setenv("REGVERIFY_USERNAME", "ci")
    monkeypatch.setenv("REGVERIFY_PASSWORD", "secret")
    note = credentials_note("r.example.com", who, None)
    assert note.startswith("credentials for user 'ci' were sent to r.example.com (from "
                           "REGVERIFY_USERNAME and REGVERIFY_PASSWORD) and refused")
    assert "secret" not in note
    explicit = credentials_note("r.example.com", who, "--username and --password-stdin")
    assert "(from --username and --password-stdin)" in explicit
