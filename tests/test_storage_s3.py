"""Storage mode on object storage: `fs scan|fix|restore|gc-preview s3://BUCKET/PREFIX`.

The real registry (distribution's `s3` driver, redirects on) over moto_server, pushed to with
skopeo; the damage is the filesystem tests' (deleted blob objects, `garbage-collect
--delete-untagged` on an index, a removed child revision link), and so are the expectations:
every scan of the bucket is also compared with `fs scan` of a byte-for-byte local copy of it.
skopeo judges what is pullable; the real `garbage-collect` judges gc-preview.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import CliResult, RunCli
from tests.support.s3 import (
    ACCESS_KEY,
    REGION,
    ROOTDIRECTORY,
    SECRET_KEY,
    MotoS3,
    S3Registry,
    blob_digests,
    push_image_with_skopeo,
    push_index_with_skopeo,
)
from tests.support.skopeo import skopeo_copy_all

pytestmark = [pytest.mark.registry, pytest.mark.skopeo]

Defect = tuple[str, str, str | None]


@pytest.fixture
def aws_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Credentials as the AWS tools find them (environment), and nothing else to find."""
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env


def location(s3: S3Registry) -> str:
    """The registry's storage as the tool takes it: ``s3://BUCKET/<rootdirectory>``."""
    return f"s3://{s3.bucket}{ROOTDIRECTORY}"


def fs(run_cli: RunCli, s3: S3Registry | MotoS3, *args: str) -> CliResult:
    """``regverify fs ARGS`` against moto (path-style), JSON report, no traceback."""
    moto = s3.moto if isinstance(s3, S3Registry) else s3
    return run_cli("fs", *args, "--s3-endpoint", moto.url, "--s3-path-style",
                   "--format", "json", no_traceback=True)


def bucket_objects(s3: S3Registry, prefix: str = "") -> dict[str, bytes]:
    """Every object below `prefix`, key -> bytes, read straight from moto."""
    return {key: s3.s3.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
            for key in s3.keys(prefix)}


def mirror(s3: S3Registry, dest: Path) -> Path:
    """A local byte-for-byte copy of the registry's storage (its rootdirectory)."""
    root = ROOTDIRECTORY.strip("/") + "/"
    for key, data in bucket_objects(s3, root).items():
        target = dest / key[len(root):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest


def defects(report: dict[str, Any]) -> set[Defect]:
    """(kind, repository, digest) of every error finding."""
    return {(f["kind"], f["repository"], f.get("digest"))
            for f in report["findings"] if f["severity"] == "error"}


def comparable(report: dict[str, Any], root: str) -> list[tuple[Any, ...]]:
    """Every finding with its path made relative to the storage root given."""
    out = []
    for f in report["findings"]:
        path = f.get("path") or ""
        out.append((f["kind"], f["severity"], f["repository"], f.get("digest"),
                    path.removeprefix(root), f.get("reference", "")))
    return sorted(out)


def assert_same_as_filesystem(run_cli: RunCli, s3: S3Registry, tmp_path: Path,
                              report: dict[str, Any]) -> None:
    """`fs scan` of a local copy of the bucket finds exactly what the bucket scan found."""
    local = mirror(s3, tmp_path / "mirror")
    on_disk = run_cli("fs", "scan", str(local), "--format", "json", no_traceback=True)
    assert on_disk.exit_code == (1 if defects(report) else 0), on_disk.output
    assert comparable(report, location(s3)) == comparable(on_disk.json(), str(local))


def pullable(s3: S3Registry, repo: str, tag: str, tmp_path: Path) -> bool:
    """skopeo's verdict: can `repo:tag` (every platform) be copied out of the registry?"""
    dest = tmp_path / f"pull-{repo.replace('/', '_')}-{tag}"
    return skopeo_copy_all(f"{s3.host}/{repo}:{tag}", dest).ok


# --- scan -------------------------------------------------------------------------------------


def test_healthy_bucket_scans_clean(run_cli: RunCli, s3_registry: S3Registry,
                                    aws_env: dict[str, str], tmp_path: Path) -> None:
    s3 = s3_registry
    push_image_with_skopeo(s3.host, "app/web", "v1", tmp_path)
    push_index_with_skopeo(s3.host, "app/multi", "v1", tmp_path)
    scan = fs(run_cli, s3, "scan", location(s3))
    assert scan.exit_code == 0, scan.output
    report = scan.json()
    assert report["findings"] == []
    assert report["target"] == location(s3)
    assert report["summary"]["repositories"] == 2
    assert report["summary"]["layer_links"] > 0 and report["summary"]["blobs"] > 0
    assert_same_as_filesystem(run_cli, s3, tmp_path, report)
    preview = fs(run_cli, s3, "gc-preview", location(s3))
    assert preview.exit_code == 0, preview.output


def test_deleted_blob_objects(run_cli: RunCli, s3_registry: S3Registry,
                              aws_env: dict[str, str], tmp_path: Path) -> None:
    """Layer data and manifest data deleted while their links stay: why pulls fail."""
    s3 = s3_registry
    a = push_image_with_skopeo(s3.host, "team/a", "v1", tmp_path, seed="a")
    b = push_image_with_skopeo(s3.host, "team/b", "v1", tmp_path, seed="b")
    c = push_image_with_skopeo(s3.host, "team/c", "v1", tmp_path, seed="c")
    layer = a.layers[-1].digest
    s3.delete_object(s3.registry.blob_data_key(layer))
    s3.delete_object(s3.registry.blob_data_key(b.digest))
    s3.registry.restart()  # forget the blob descriptor cache, as after any real loss

    scan = fs(run_cli, s3, "scan", location(s3))
    assert scan.exit_code == 1, scan.output
    report = scan.json()
    assert defects(report) == {
        ("orphan_layer_link", "team/a", layer),
        ("image_blob_missing", "team/a", layer),
        ("dangling_revision", "team/b", b.digest),
        ("dangling_tag", "team/b", b.digest),
    }
    orphan = next(f for f in report["findings"] if f["kind"] == "orphan_layer_link")
    assert orphan["path"] == (f"{location(s3)}/docker/registry/v2/repositories/team/a/_layers/"
                              f"sha256/{layer.split(':')[1]}/link")
    assert_same_as_filesystem(run_cli, s3, tmp_path, report)
    # The human report says the same; the metrics name the bucket as they name a folder.
    textfile = tmp_path / "regverify.prom"
    human = run_cli("fs", "scan", location(s3), "--s3-endpoint", s3.moto.url, "--s3-path-style",
                    "--textfile", str(textfile), no_traceback=True)
    assert human.exit_code == 1 and "orphan_layer_link" in human.stdout, human.output
    assert "DEFECTS FOUND" in human.stdout.splitlines()[-1]
    metrics = textfile.read_text()
    assert f'regverify_fs_orphan_layer_links{{mode="fs-scan",registry="{location(s3)}"}} 1.0' in (
        metrics.replace(", ", ",")), metrics
    assert not pullable(s3, "team/a", "v1", tmp_path)
    assert not pullable(s3, "team/b", "v1", tmp_path)
    assert pullable(s3, "team/c", "v1", tmp_path) and c.digest


def test_removed_child_revision_link(run_cli: RunCli, s3_registry: S3Registry,
                                     aws_env: dict[str, str], tmp_path: Path) -> None:
    s3 = s3_registry
    index = push_index_with_skopeo(s3.host, "app/multi", "v1", tmp_path)
    child = index.children[0]
    s3.delete_object(s3.registry.revision_link_key("app/multi", child.digest))
    s3.registry.restart()
    scan = fs(run_cli, s3, "scan", location(s3))
    assert scan.exit_code == 1, scan.output
    report = scan.json()
    assert ("orphan_index_child", "app/multi", child.digest) in defects(report)
    found = next(f for f in report["findings"] if f["kind"] == "orphan_index_child")
    assert found["details"]["index"] == index.digest
    assert found["details"]["relinkable"] is True  # its data and blobs are all there
    assert_same_as_filesystem(run_cli, s3, tmp_path, report)
    assert not pullable(s3, "app/multi", "v1", tmp_path)


# --- gc-preview against the real garbage-collect ----------------------------------------------


def _blob_hexes(keys: set[str]) -> set[str]:
    return {m.group(1) for k in keys if (m := re.search(r"/blobs/sha256/../([0-9a-f]{64})/data$",
                                                         k))}


@pytest.mark.parametrize("delete_untagged", [True, False], ids=["delete-untagged", "plain"])
def test_gc_preview_predicts_the_real_garbage_collect(
        run_cli: RunCli, s3_registry: S3Registry, aws_env: dict[str, str], tmp_path: Path,
        delete_untagged: bool) -> None:
    s3 = s3_registry
    index = push_index_with_skopeo(s3.host, "app/multi", "v1", tmp_path)
    image = push_image_with_skopeo(s3.host, "app/web", "v1", tmp_path, seed="web")
    # An untagged image: the plain GC sweeps nothing of it, --delete-untagged takes it.
    old = push_image_with_skopeo(s3.host, "app/web", "old", tmp_path, seed="old")
    s3.s3.delete_object(Bucket=s3.bucket, Key=f"{s3.registry.v2_prefix}/repositories/app/web/"
                        "_manifests/tags/old/current/link")
    args = ["gc-preview", location(s3), *(["--delete-untagged"] if delete_untagged else [])]
    preview = fs(run_cli, s3, *args)
    report = preview.json()
    doc = report["gc_preview"]["registries"][0]
    predicted = {d["digest"].split(":", 1)[1] for d in doc["deleted_blobs"]}
    predicted_revisions = {s3.registry.revision_link_key(m["repository"], m["digest"])
                           for m in doc["deleted_manifests"]}

    before = set(s3.keys())
    gc = s3.registry.garbage_collect(delete_untagged=delete_untagged)
    assert gc.returncode == 0, gc.stdout[-2000:]
    gone = before - set(s3.keys())
    # Exactly what was predicted went from the bucket: blob data and revision links.
    assert _blob_hexes(gone) == predicted
    assert {k for k in gone if "/_manifests/revisions/" in k} == predicted_revisions
    if delete_untagged:
        assert preview.exit_code == 1, preview.output  # the index's children go
        children = {s3.registry.revision_link_key("app/multi", c.digest) for c in index.children}
        assert children <= predicted_revisions
        assert {d.split(":")[1] for c in index.children for d in blob_digests(c)} <= predicted
        assert not pullable(s3, "app/multi", "v1", tmp_path)
    else:
        assert preview.exit_code == 0, preview.output
        assert pullable(s3, "app/multi", "v1", tmp_path)
    assert old.digest.split(":")[1] in predicted if delete_untagged else True
    assert pullable(s3, "app/web", "v1", tmp_path) and image.digest


def test_scan_after_gc_incident_finds_every_orphan(run_cli: RunCli, s3_registry: S3Registry,
                                                   aws_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    s3 = s3_registry
    index = push_index_with_skopeo(s3.host, "app/multi", "v1", tmp_path)
    gc = s3.registry.garbage_collect(delete_untagged=True)
    assert gc.returncode == 0, gc.stdout[-2000:]
    scan = fs(run_cli, s3, "scan", location(s3))
    assert scan.exit_code == 1, scan.output
    report = scan.json()
    expected: set[Defect] = {("orphan_index_child", "app/multi", m.digest)
                             for m in index.manifests}
    expected |= {("orphan_layer_link", "app/multi", d) for m in index.manifests
                 for d in blob_digests(m)}
    assert defects(report) == expected
    assert_same_as_filesystem(run_cli, s3, tmp_path, report)


# --- fix and restore --------------------------------------------------------------------------


def test_fix_then_restore_leaves_every_object_as_before(
        run_cli: RunCli, s3_registry: S3Registry, aws_env: dict[str, str],
        tmp_path: Path) -> None:
    s3 = s3_registry
    images = [push_image_with_skopeo(s3.host, f"team/r{i}", "v1", tmp_path, seed=f"r{i}")
              for i in range(4)]
    layer = images[0].layers[-1].digest
    s3.delete_object(s3.registry.blob_data_key(layer))
    root = ROOTDIRECTORY.strip("/")
    damaged = bucket_objects(s3, root + "/")
    link = s3.registry.layer_link_key("team/r0", layer)
    assert link in damaged

    fixed = fs(run_cli, s3, "fix", location(s3))
    assert fixed.exit_code == 1, fixed.output  # the image stays broken and says so
    report = fixed.json()
    orphan = next(f for f in report["findings"] if f["kind"] == "orphan_layer_link")
    assert orphan["severity"] == "info" and orphan["details"]["repaired"] is True
    assert report["summary"]["quarantined"] == 1
    assert ("image_blob_missing", "team/r0", layer) in defects(report)
    after_fix = bucket_objects(s3, root + "/")
    assert set(damaged) - set(after_fix) == {link}  # the orphan link, and nothing else, went
    quarantine = f"{root}-regverify-quarantine/"
    kept = bucket_objects(s3, quarantine)
    assert [k for k in kept if k.endswith("/link")] and damaged[link] in kept.values()
    assert any("/journal/" in k for k in kept)
    rescan = fs(run_cli, s3, "scan", location(s3))
    assert "orphan_layer_link" not in {k for k, _, _ in defects(rescan.json())}

    restored = fs(run_cli, s3, "restore", f"s3://{s3.bucket}/{quarantine}")
    assert restored.exit_code == 0, restored.output
    assert restored.json()["summary"]["links_put_back"] == 1
    assert bucket_objects(s3, root + "/") == damaged  # every object's bytes as before
    again = fs(run_cli, s3, "restore", f"s3://{s3.bucket}/{quarantine}")
    assert again.exit_code == 0 and again.json()["summary"].get("links_put_back", 0) == 0


def test_fix_refuses_when_the_blob_store_is_gone(run_cli: RunCli, s3_registry: S3Registry,
                                                 aws_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    """Every blob object gone while links exist (a wrong bucket sync): refuse, touch nothing."""
    s3 = s3_registry
    push_image_with_skopeo(s3.host, "team/a", "v1", tmp_path)
    for key in s3.keys(f"{s3.registry.v2_prefix}/blobs/"):
        s3.delete_object(key)
    before = bucket_objects(s3)
    fixed = fs(run_cli, s3, "fix", location(s3))
    assert fixed.exit_code == 3, fixed.output
    assert any(n.startswith("REFUSED:") for n in fixed.json()["notes"])
    assert bucket_objects(s3) == before


# --- refusals and bad input -------------------------------------------------------------------


def test_empty_or_wrong_prefix_is_refused(run_cli: RunCli, s3_registry: S3Registry,
                                          aws_env: dict[str, str], tmp_path: Path) -> None:
    s3 = s3_registry
    push_image_with_skopeo(s3.host, "team/a", "v1", tmp_path)
    for prefix in ("nothing/here", f"{ROOTDIRECTORY.strip('/')}/docker/registry/v2"):
        for command in ("scan", "fix", "gc-preview"):
            run = fs(run_cli, s3, command, f"s3://{s3.bucket}/{prefix}")
            assert run.exit_code == 2, run.output
            assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "did you mean" in run.stderr


def test_missing_bucket_and_unreachable_endpoint_cannot_complete(
        run_cli: RunCli, moto_s3: MotoS3, aws_env: dict[str, str]) -> None:
    run = fs(run_cli, moto_s3, "scan", "s3://no-such-bucket-here/root")
    assert run.exit_code == 3, run.output
    assert "no such bucket" in run.stderr
    closed = run_cli("fs", "scan", "s3://bucket/root", "--s3-endpoint", "http://127.0.0.1:9",
                     "--s3-path-style", no_traceback=True)
    assert closed.exit_code == 3, closed.output
    assert len(closed.stderr.strip().splitlines()) == 1, closed.stderr


@pytest.mark.parametrize("args", [
    ["scan", "s3://", ],
    ["scan", "s3://Bad_Bucket/x"],
    ["scan", "s3://bucket/root", "--verify-digests"],
    ["fix", "s3://bucket/root", "--relink-layers"],
    ["fix", "s3://bucket/root", "--relink-index-children"],
    ["fix", "s3://bucket/root", "--quarantine", "/tmp/q"],
    ["fix", "s3://bucket/root", "--quarantine", "s3://other-bucket/q"],
    ["scan", "s3://bucket/root", "--s3-endpoint", "ftp://127.0.0.1:9"],
], ids=["empty", "bucket-name", "verify-digests", "relink-layers", "relink-children",
        "local-quarantine", "other-bucket-quarantine", "endpoint-scheme"])
def test_bad_input_is_a_usage_error(run_cli: RunCli, aws_env: dict[str, str],
                                    args: list[str]) -> None:
    """Refused before any request: the endpoint (a closed loopback port) is never reached."""
    endpoint = [] if "--s3-endpoint" in args else ["--s3-endpoint", "http://127.0.0.1:9"]
    run = run_cli("fs", *args, *endpoint, no_traceback=True)
    assert run.exit_code == 2, run.output
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
