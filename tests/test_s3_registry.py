"""regverify against a registry on object storage: distribution's `s3` driver over moto_server.

Blob GETs are answered `307` to a presigned URL on the storage host (redirects on, the default),
so what matters is what reaches storage: one ranged GET per (repository, blob), never a
credential meant for the registry. The recorder in front of moto sees every such request.
Images are pushed with skopeo, which also gives the reference verdict on every pull.
"""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import CliResult, run_cli
from tests.support.s3 import (
    MotoS3,
    OciLayout,
    S3Registry,
    StorageExchange,
    blob_digests,
    push_image_with_skopeo,
    push_index_with_skopeo,
    skopeo_push,
    start_s3_registry,
)
from tests.support.skopeo import skopeo_copy_all

pytestmark = [pytest.mark.registry, pytest.mark.skopeo]

# bcrypt("s3cret", cost 5); the registry accepts only bcrypt entries.
HTPASSWD_LINE = "tester:$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n"
USER, PASSWORD = "tester", "s3cret"


def regverify(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """The real CLI in a subprocess with `--plain-http --format json`; never a traceback."""
    return run_cli(*args, "--plain-http", "--format", "json", env=env, subprocess=True,
                   no_traceback=True)


def error_kinds(report: dict[str, Any]) -> Counter[str]:
    """How many defect findings (severity error) of each kind a report has."""
    return Counter(f["kind"] for f in report["findings"] if f["severity"] == "error")


def reads_by_key(reads: list[StorageExchange]) -> Counter[str]:
    """How many redirected blob reads reached storage for each object key."""
    return Counter(x.key for x in reads)


def assert_one_ranged_get_each(s3: S3Registry, expected: Counter[str]) -> None:
    """Storage saw exactly `expected` presigned reads per key, each a one-byte ranged GET."""
    reads = s3.storage_blob_reads()
    assert reads_by_key(reads) == expected
    for read in reads:
        assert read.method == "GET", read.request
        assert (read.header("range") or "").startswith("bytes="), read.request
        assert read.status == 206, read.request


def test_healthy_images_scan_clean_with_one_ranged_get_per_repository_and_blob(
    s3_registry: S3Registry, tmp_path: Path
) -> None:
    s3 = s3_registry
    layout = OciLayout(tmp_path / "layout")
    image = layout.image("app/web", "v1")
    layout.tag("v1", image.media_type, image.digest, image.size)
    # The same image under a second name: its blobs are the same objects in storage, but a
    # pull from one repository proves nothing about the other, so each is probed.
    for repo in ("app/web", "app/mirror"):
        skopeo_push(layout.path, "v1", f"{s3.host}/{repo}:v1")
    index = push_index_with_skopeo(s3.host, "multi/tool", "latest", tmp_path, layers=1,
                                   attestation=False)
    assert skopeo_copy_all(f"{s3.host}/multi/tool:latest", tmp_path / "pull").ok

    s3.recorder.clear()
    run = regverify("image", f"{s3.host}/app/web:v1")
    report = run.json()
    assert run.exit_code == 0, report["findings"]
    assert report["images"][0]["digest"] == image.digest
    assert_one_ranged_get_each(
        s3, Counter({s3.registry.blob_data_key(d): 1 for d in blob_digests(image)}))

    s3.recorder.clear()
    run = regverify("image", f"{s3.host}/multi/tool:latest")
    report = run.json()
    assert run.exit_code == 0, report["findings"]
    assert report["images"][0]["digest"] == index.digest
    assert_one_ranged_get_each(
        s3, Counter({s3.registry.blob_data_key(d): 1 for d in blob_digests(index)}))

    s3.recorder.clear()
    run = regverify("scan", s3.host)
    report = run.json()
    assert run.exit_code == 0, report["findings"]
    assert report["summary"]["images"] == 3 and report["summary"]["defects"] == 0
    expected = Counter({s3.registry.blob_data_key(d): 2 for d in blob_digests(image)})
    expected.update({s3.registry.blob_data_key(d): 1 for d in blob_digests(index)})
    assert_one_ranged_get_each(s3, expected)


@pytest.mark.parametrize("cache", ["warm", "cold"])
def test_layer_object_deleted_is_blob_missing_and_skopeo_agrees(
    s3_registry: S3Registry, tmp_path: Path, cache: str
) -> None:
    s3 = s3_registry
    image = push_image_with_skopeo(s3.host, "app/web", "v1", tmp_path)
    assert skopeo_copy_all(f"{s3.host}/app/web:v1", tmp_path / "before").ok
    lost = image.layers[0]
    key = s3.registry.blob_data_key(lost.digest)
    assert key in s3.keys()
    s3.delete_object(key)
    if cache == "cold":
        s3.registry.restart()  # the registry then stats the object itself and answers 404

    s3.recorder.clear()
    run = regverify("image", f"{s3.host}/app/web:v1")
    report = run.json()
    assert run.exit_code == 1, report
    assert error_kinds(report) == Counter({"blob_missing": 1})
    (finding,) = [f for f in report["findings"] if f["severity"] == "error"]
    assert finding["digest"] == lost.digest
    reads = reads_by_key(s3.storage_blob_reads())
    if cache == "warm":
        # The registry still redirects (it remembers the blob); storage itself answers 404.
        assert reads[key] == 1
        assert {x.status for x in s3.storage_blob_reads() if x.key == key} == {404}
    else:
        assert reads[key] == 0
    assert not skopeo_copy_all(f"{s3.host}/app/web:v1", tmp_path / "after").ok


def test_basic_auth_credentials_never_reach_storage(
    moto_s3: MotoS3, registry_bin: str, tmp_path: Path
) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(HTPASSWD_LINE)
    with start_s3_registry(moto_s3, tmp_path / "registry", registry_bin=registry_bin,
                           htpasswd=htpasswd) as s3:
        assert httpx.get(f"{s3.registry.url}/v2/", trust_env=False).status_code == 401
        image = push_image_with_skopeo(s3.host, "private/app", "v1", tmp_path,
                                       creds=f"{USER}:{PASSWORD}")
        s3.recorder.clear()
        run = regverify(
            "scan", s3.host,
            env={"REGVERIFY_USERNAME": USER, "REGVERIFY_PASSWORD": PASSWORD,
                 "DOCKER_CONFIG": str(tmp_path)})
        assert run.exit_code == 0, (run.stdout, run.stderr)
        # The redirects were followed, so the check below is about requests that happened.
        assert_one_ranged_get_each(
            s3, Counter({s3.registry.blob_data_key(d): 1 for d in blob_digests(image)}))
        assert_no_registry_credentials_at_storage(s3.recorder.exchanges())

        # The reference client, given the same credentials, leaves storage just as clean.
        s3.recorder.clear()
        assert skopeo_copy_all(f"{s3.host}/private/app:v1", tmp_path / "pull",
                               creds=f"{USER}:{PASSWORD}").ok
        assert any(x.presigned for x in s3.recorder.exchanges())
        assert_no_registry_credentials_at_storage(s3.recorder.exchanges())


def assert_no_registry_credentials_at_storage(exchanges: list[StorageExchange]) -> None:
    """No request at storage carries the registry's credentials or any non-SigV4 Authorization.

    moto accepts a presigned URL whatever else the request carries (real S3 refuses a request
    with two authentication mechanisms), so the headers themselves are what is checked.
    """
    secret = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for x in exchanges:
        if x.presigned:
            assert x.header("authorization") is None, x.request
        else:
            # Only the registry's own requests carry Authorization: its SigV4 signature.
            assert (x.header("authorization") or "").startswith("AWS4-HMAC-SHA256 "), x.request
        for name, value in x.request.headers:
            assert secret not in value and PASSWORD not in value, (name, x.request)


def test_the_storage_check_sees_a_credential_sent_with_a_presigned_url(
    s3_registry: S3Registry,
) -> None:
    # The check above must be able to fail: a client that kept the registry's Basic header on
    # the redirect would send exactly this, and moto would still answer 200.
    s3 = s3_registry
    key = s3.registry.blob_data_key("sha256:" + "ab" * 32)
    s3.s3.put_object(Bucket=s3.bucket, Key=key, Body=b"x")
    url = s3.presigned_get_url(key)
    leaked = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    s3.recorder.clear()
    with httpx.Client(trust_env=False) as client:
        assert client.get(url, headers={"Authorization": f"Basic {leaked}"}).status_code == 200
    assert [x.presigned for x in s3.recorder.exchanges()] == [True]
    with pytest.raises(AssertionError):
        assert_no_registry_credentials_at_storage(s3.recorder.exchanges())


def test_garbage_collect_runs_against_the_bucket(s3_registry: S3Registry, tmp_path: Path) -> None:
    # The storage-mode tests compare their predictions with this very command on the bucket.
    image = push_image_with_skopeo(s3_registry.host, "app/web", "v1", tmp_path)
    gc = s3_registry.registry.garbage_collect(dry_run=True)
    assert gc.returncode == 0, gc.stdout
    marked = len(blob_digests(image)) + 1  # and the manifest
    assert f"{marked} blobs marked, 0 blobs and 0 manifests eligible for deletion" in gc.stdout
    assert s3_registry.registry.running
