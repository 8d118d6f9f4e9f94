"""`regverify image` against the real registry, with faults injected on disk as production has them.

Every verdict is cross-checked with skopeo, the reference client: where regverify says broken,
`skopeo copy --all` fails, and where it says ok, skopeo succeeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import CliResult, run_cli
from tests.support.images import PushedImage, PushedIndex, push_image, push_index
from tests.support.registry import RegistryServer, blob_data_path, revision_link_path
from tests.support.skopeo import skopeo_copy_all

pytestmark = [pytest.mark.registry, pytest.mark.skopeo]


def verify(registry: RegistryServer, ref: str, *extra: str) -> CliResult:
    """`regverify image HOST/ref --plain-http --format json`, the real CLI in a subprocess;
    never a traceback."""
    return run_cli("image", f"{registry.host}/{ref}", "--plain-http", *extra, "--format", "json",
                   subprocess=True, no_traceback=True)


def kinds(report: dict[str, Any]) -> set[str]:
    """Kinds of the defect findings (severity error)."""
    return {f["kind"] for f in report["findings"] if f["severity"] == "error"}


def skopeo_ok(registry: RegistryServer, ref: str, tmp_path: Path) -> bool:
    """The reference client's verdict."""
    dest = tmp_path / f"skopeo-{abs(hash(ref))}"
    return skopeo_copy_all(f"{registry.host}/{ref}", dest).ok


@pytest.fixture
def images(registry: RegistryServer) -> dict[str, PushedImage | PushedIndex]:
    """One of each content kind the walk must handle."""
    return {
        "oci": push_image(registry, "app/web", "v1"),
        "docker": push_image(registry, "legacy/api", "v1", oci=False),
        "oci-index": push_index(registry, "multi/arch/tool", "latest"),
        "docker-list": push_index(registry, "multi/list", "v1", oci=False),
    }


def test_healthy_images_of_every_kind_verify_clean(
    registry: RegistryServer, images: dict[str, Any], tmp_path: Path
) -> None:
    for name, pushed in images.items():
        run = verify(registry, f"{pushed.repository}:{pushed.tag}")
        report = run.json()
        assert run.exit_code == 0, (name, report["findings"])
        assert report["images"][0]["status"] == "ok"
        assert report["images"][0]["digest"] == pushed.digest
        full = f"{registry.host}/{pushed.repository}:{pushed.tag}"
        assert report["images"][0]["reference"] == full
        assert skopeo_ok(registry, f"{pushed.repository}:{pushed.tag}", tmp_path)
    index = images["oci-index"]
    assert isinstance(index, PushedIndex)
    report = verify(registry, f"{index.repository}:{index.tag}").json()
    # index + 2 children + 2 attestation manifests; every config and layer of each
    assert report["summary"]["manifests"] == 5
    expected_blobs = {b.digest for m in index.manifests for b in m.blobs}
    assert report["summary"]["blobs"] == len(expected_blobs)


def test_by_digest_and_tag_plus_digest(registry: RegistryServer, images: dict[str, Any]) -> None:
    pushed = images["oci-index"]
    run = verify(registry, f"{pushed.repository}@{pushed.digest}")
    report = run.json()
    assert run.exit_code == 0 and report["images"][0]["digest"] == pushed.digest
    run = verify(registry, f"{pushed.repository}:{pushed.tag}@{pushed.digest}")
    assert run.exit_code == 0


def test_wrong_digest_for_a_tag_is_missing(
    registry: RegistryServer, images: dict[str, Any]
) -> None:
    other = images["oci"].digest
    run = verify(registry, f"{images['docker'].repository}@{other}")
    report = run.json()
    assert run.exit_code == 1
    assert kinds(report) == {"manifest_missing"}


def test_unknown_tag_and_repository(registry: RegistryServer, tmp_path: Path) -> None:
    push_image(registry, "app/web", "v1")
    for ref in ("app/web:nope", "no/such/repo:v1"):
        run = verify(registry, ref)
        report = run.json()
        assert run.exit_code == 1
        assert kinds(report) == {"manifest_missing"}
        assert report["images"][0]["status"] == "broken"
        assert not skopeo_ok(registry, ref, tmp_path)


def test_layer_data_deleted_warm_cache_is_unreadable(
    registry: RegistryServer, tmp_path: Path
) -> None:
    image = push_image(registry, "app/web", "v1")
    ref = "app/web:v1"
    assert verify(registry, ref).exit_code == 0  # the registry has now served (cached) every blob
    blob_data_path(registry.v2, image.layers[0].digest).unlink()
    run = verify(registry, ref)
    report = run.json()
    assert run.exit_code == 1
    [defect] = [f for f in report["findings"] if f["severity"] == "error"]
    assert defect["kind"] == "blob_unreadable"
    assert defect["digest"] == image.layers[0].digest
    assert defect["expected_size"] == image.layers[0].size
    assert not skopeo_ok(registry, ref, tmp_path)


def test_layer_data_deleted_after_restart_is_missing(
    registry: RegistryServer, tmp_path: Path
) -> None:
    image = push_image(registry, "app/web", "v1")
    blob_data_path(registry.v2, image.layers[1].digest).unlink()
    registry.restart()
    run = verify(registry, "app/web:v1")
    report = run.json()
    assert run.exit_code == 1
    [defect] = [f for f in report["findings"] if f["severity"] == "error"]
    assert (defect["kind"], defect["digest"], defect["http_status"]) == (
        "blob_missing", image.layers[1].digest, 404)
    assert not skopeo_ok(registry, "app/web:v1", tmp_path)


@pytest.mark.parametrize("restart", [False, True], ids=["warm", "cold"])
def test_truncated_layer_is_caught(registry: RegistryServer, tmp_path: Path,
                                   restart: bool) -> None:
    image = push_image(registry, "app/web", "v1")
    verify(registry, "app/web:v1")
    layer = image.layers[0]
    path = blob_data_path(registry.v2, layer.digest)
    path.write_bytes(path.read_bytes()[: layer.size // 2])
    if restart:
        registry.restart()
    run = verify(registry, "app/web:v1")
    report = run.json()
    assert run.exit_code == 1
    found = {(f["kind"], f["digest"]) for f in report["findings"] if f["severity"] == "error"}
    assert len(found) == 1
    kind, digest = found.pop()
    assert digest == layer.digest
    assert kind in {"size_mismatch", "blob_unreadable"}
    assert not skopeo_ok(registry, "app/web:v1", tmp_path)


@pytest.mark.parametrize("restart", [False, True], ids=["warm", "cold"])
def test_config_deleted(registry: RegistryServer, tmp_path: Path, restart: bool) -> None:
    image = push_image(registry, "legacy/api", "v1", oci=False)
    verify(registry, "legacy/api:v1")
    blob_data_path(registry.v2, image.config.digest).unlink()
    if restart:
        registry.restart()
    run = verify(registry, "legacy/api:v1")
    report = run.json()
    assert run.exit_code == 1
    [defect] = [f for f in report["findings"] if f["severity"] == "error"]
    assert defect["digest"] == image.config.digest
    assert defect["kind"] == ("blob_missing" if restart else "blob_unreadable")
    assert not skopeo_ok(registry, "legacy/api:v1", tmp_path)


def test_same_size_corruption_needs_deep(registry: RegistryServer, tmp_path: Path) -> None:
    image = push_image(registry, "app/web", "v1")
    layer = image.layers[0]
    path = blob_data_path(registry.v2, layer.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    # Sizes and the last byte are intact: only a full read with a hash can tell (documented).
    assert verify(registry, "app/web:v1").exit_code == 0
    run = verify(registry, "app/web:v1", "--deep")
    report = run.json()
    assert run.exit_code == 1
    [defect] = [f for f in report["findings"] if f["severity"] == "error"]
    assert (defect["kind"], defect["digest"]) == ("digest_mismatch", layer.digest)
    assert defect["expected_digest"] == layer.digest
    assert not skopeo_ok(registry, "app/web:v1", tmp_path)


def test_deep_on_healthy_image(registry: RegistryServer) -> None:
    push_index(registry, "multi/arch", "v1")
    run = verify(registry, "multi/arch:v1", "--deep")
    report = run.json()
    assert run.exit_code == 0, report["findings"]


def test_index_child_revision_link_removed(registry: RegistryServer, tmp_path: Path) -> None:
    index = push_index(registry, "multi/arch", "v1")
    child = index.children[1]
    revision_link_path(registry.v2, "multi/arch", child.digest).unlink()
    run = verify(registry, "multi/arch:v1")
    report = run.json()
    assert run.exit_code == 1
    [defect] = [f for f in report["findings"] if f["severity"] == "error"]
    assert (defect["kind"], defect["digest"], defect["platform"]) == (
        "manifest_missing", child.digest, child.platform)
    assert report["images"][0]["digest"] == index.digest
    assert not skopeo_ok(registry, "multi/arch:v1", tmp_path)


def test_garbage_collect_delete_untagged_breaks_tagged_index(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """distribution#3324 class: GC deletes every child of a tagged index; the tag still answers."""
    index = push_index(registry, "multi/arch", "v1")
    plain = push_image(registry, "app/web", "v1")
    assert verify(registry, "multi/arch:v1").exit_code == 0
    result = registry.garbage_collect(delete_untagged=True)
    assert result.returncode == 0  # GC reports success whatever it broke
    run = verify(registry, "multi/arch:v1")
    report = run.json()
    assert run.exit_code == 1
    missing = {f["digest"] for f in report["findings"] if f["kind"] == "manifest_missing"}
    assert missing == {m.digest for m in index.manifests}
    assert report["images"][0]["status"] == "broken"
    assert not skopeo_ok(registry, "multi/arch:v1", tmp_path)
    # A plain tagged image in another repository survives, and both tools agree.
    assert verify(registry, f"app/web@{plain.digest}").exit_code == 0
    assert skopeo_ok(registry, "app/web:v1", tmp_path)


def test_registry_down_is_incomplete_not_broken(registry: RegistryServer) -> None:
    push_image(registry, "app/web", "v1")
    registry.stop()
    run = run_cli("image", f"{registry.host}/app/web:v1", "--plain-http", "--retries", "1",
                  "--format", "json", subprocess=True)
    assert run.exit_code == 3
    assert "unreachable" in run.stderr
    assert not run.stdout.strip()  # no report


def test_plain_registry_over_https_fails_cleanly(registry: RegistryServer) -> None:
    run = run_cli("image", f"{registry.host}/app/web:v1", "--retries", "0", "--format", "json",
                  subprocess=True)
    assert run.exit_code == 3
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


def test_human_output_and_output_file(registry: RegistryServer, tmp_path: Path) -> None:
    image = push_image(registry, "app/web", "v1")
    registry.stop()
    blob_data_path(registry.v2, image.layers[0].digest).unlink()
    registry.start()
    out = tmp_path / "report.json"
    run = run_cli("image", f"{registry.host}/app/web:v1", "--plain-http", subprocess=True,
                  timeout=60)
    assert run.exit_code == 1
    assert "blob_missing" in run.stdout and image.layers[0].digest[:19] in run.stdout
    assert run.stdout.strip().splitlines()[-1].startswith("DEFECTS FOUND: 1 image(s), 1 broken")
    run = run_cli("image", f"{registry.host}/app/web:v1", "--plain-http", "--output", out,
                  "--format", "json", subprocess=True)
    assert run.exit_code == 1 and not run.stdout.strip()  # the report went to the file only
    assert json.loads(out.read_text())["summary"]["defects_by_kind"] == {"blob_missing": 1}


# -- authentication against the real registry (htpasswd Basic) -----------------------------------

# bcrypt("s3cret", cost 5); the registry accepts only bcrypt entries.
HTPASSWD_LINE = "tester:$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n"
PASSWORD = "s3cret"


@pytest.fixture
def basic_registry(tmp_path: Path, registry_bin: str) -> Any:
    """A registry behind htpasswd Basic auth holding one image."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(HTPASSWD_LINE)
    server = RegistryServer(htpasswd=htpasswd, workdir=tmp_path / "reg", registry_bin=registry_bin)
    server.start()
    try:
        push_index(server, "private/app", "v1", auth=("tester", PASSWORD))
        yield server
    finally:
        server.stop()


def _assert_secret_absent(*texts: str) -> None:
    import base64

    encoded = base64.b64encode(f"tester:{PASSWORD}".encode()).decode()
    for text in texts:
        assert PASSWORD not in text and encoded not in text


def test_basic_auth_password_stdin(basic_registry: RegistryServer, tmp_path: Path) -> None:
    ref = f"{basic_registry.host}/private/app:v1"
    run = run_cli("image", ref, "--plain-http", "--username", "tester", "--password-stdin",
                  "--format", "json", input=PASSWORD + "\n",
                  env={"DOCKER_CONFIG": str(tmp_path)}, subprocess=True)
    assert run.exit_code == 0, run.stdout
    _assert_secret_absent(run.stdout, run.stderr)


def test_basic_auth_from_environment(basic_registry: RegistryServer, tmp_path: Path) -> None:
    run = run_cli(
        "image", f"{basic_registry.host}/private/app:v1", "--plain-http", "--format", "json",
        env={"REGVERIFY_USERNAME": "tester", "REGVERIFY_PASSWORD": PASSWORD,
             "DOCKER_CONFIG": str(tmp_path)}, subprocess=True)
    assert run.exit_code == 0, run.stdout
    _assert_secret_absent(run.stdout, run.stderr)


def test_basic_auth_from_docker_config(basic_registry: RegistryServer, tmp_path: Path) -> None:
    import base64

    auth = base64.b64encode(f"tester:{PASSWORD}".encode()).decode()
    config = {"auths": {basic_registry.host: {"auth": auth}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    run = run_cli("image", f"{basic_registry.host}/private/app:v1", "--plain-http",
                  "--format", "json", env={"DOCKER_CONFIG": str(tmp_path)}, subprocess=True)
    assert run.exit_code == 0, run.stdout
    _assert_secret_absent(run.stdout, run.stderr)


@pytest.mark.parametrize("password", [None, "wrong"], ids=["anonymous", "wrong-password"])
def test_refused_credentials_are_incomplete(
    basic_registry: RegistryServer, tmp_path: Path, password: str | None
) -> None:
    env = {"DOCKER_CONFIG": str(tmp_path)}
    if password:
        env |= {"REGVERIFY_USERNAME": "tester", "REGVERIFY_PASSWORD": password}
    run = run_cli("image", f"{basic_registry.host}/private/app:v1", "--plain-http",
                  "--format", "json", env=env, subprocess=True)
    assert run.exit_code == 3, (run.stdout, run.stderr)
    report = run.json()
    assert {f["kind"] for f in report["findings"]} == {"auth_failed"}
    assert report["images"][0]["status"] == "error"


def test_unreadable_docker_config_is_usage_error(registry: RegistryServer, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    run = run_cli("image", f"{registry.host}/a:b", "--plain-http", "--format", "json",
                  env={"DOCKER_CONFIG": str(tmp_path)}, subprocess=True)
    assert run.exit_code == 2
    assert "docker config" in run.stderr and "Traceback" not in run.stderr
