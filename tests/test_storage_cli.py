"""verifier.cli.fs: `regverify fs scan|fix|restore` exit codes and output, via CliRunner."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import typer

from tests.support.cli import CliResult, run_cli
from tests.test_storage_synthetic import SyntheticStore, snapshot
from verifier.cli.fs import fs_app
from verifier.output import Format
from verifier.storage.repair import LOCK_NAME

# Mounted the way verifier.cli.main mounts it.
app = typer.Typer()
app.add_typer(fs_app, name="fs")


def fs(*args: str | Path) -> CliResult:
    """`regverify fs ARGS`, in-process on the sub-app alone."""
    return run_cli("fs", *args, app=app)


@pytest.fixture
def store(tmp_path: Path) -> SyntheticStore:
    s = SyntheticStore(tmp_path / "data")
    for i in range(4):
        s.image(f"lib/img{i}", "v1")
    return s


def test_scan_clean_exits_0(store: SyntheticStore) -> None:
    run = fs("scan", store.root)
    assert run.exit_code == 0, run.stderr
    assert "note: layout: single registry root" in run.stdout
    assert run.stdout.rstrip().splitlines()[-1].startswith("OK:")


def test_scan_defect_exits_1_and_json_carries_the_fields(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    store.data_path(img.layers[0]).unlink()
    run = fs("scan", store.root, "--format", "json")
    assert run.exit_code == 1
    doc = run.json()
    assert doc["mode"] == "fs-scan"
    assert doc["exit_code"] == 1
    assert doc["layout"] == "single-root"
    image, f = doc["findings"]
    assert f["kind"] == "orphan_layer_link"
    assert (f["registry"], f["repository"], f["digest"]) == ("", "app/web", img.layers[0])
    assert f["path"].endswith(f"_layers/sha256/{img.layers[0][7:]}/link")
    assert image["kind"] == "image_blob_missing"
    assert image["details"]["tags"] == ["v1"]
    assert image["details"]["next_steps"][-1] == "rebuild or re-push: app/web:v1"
    assert doc["summary"]["defects_by_kind"] == {"image_blob_missing": 1, "orphan_layer_link": 1}


@pytest.mark.parametrize("fmt", list(Format))
def test_scan_every_format(store: SyntheticStore, fmt: Format, tmp_path: Path) -> None:
    img = store.image("app/web", "v1")
    store.data_path(img.layers[0]).unlink()
    out_file = tmp_path / f"report.{fmt}"
    run = fs("scan", store.root, "--format", fmt, "--output", out_file)
    assert run.exit_code == 1
    assert run.stdout == ""
    assert "orphan_layer_link" in out_file.read_text()


def test_scan_usage_errors_exit_2(store: SyntheticStore, tmp_path: Path) -> None:
    run = fs("scan", tmp_path / "nope")
    assert run.exit_code == 2
    assert run.stderr.startswith("regverify: error:") and "no such directory" in run.stderr
    run = fs("scan", store.root, "--registry", "ghcr")
    assert run.exit_code == 2 and "unknown registry 'ghcr'" in run.stderr
    run = fs("scan", store.root, "--proxy-cache", "ghcr")
    assert run.exit_code == 2 and "--proxy-cache: unknown registry" in run.stderr


def test_scan_multi_registry_with_filter(tmp_path: Path) -> None:
    for name in ("private", "dockerhub"):
        s = SyntheticStore(tmp_path / "base" / name)
        img = s.image("app", "v1")
        s.data_path(img.layers[0]).unlink()
    run = fs("scan", tmp_path / "base", "--registry", "private", "-f", "json")
    assert run.exit_code == 1
    doc = run.json()
    assert {f["registry"] for f in doc["findings"]} == {"private"}
    assert doc["layout"] == "multi-registry"


def test_proxy_cache_names_are_checked_before_registry_narrows(tmp_path: Path) -> None:
    for name in ("private", "dockerhub"):
        s = SyntheticStore(tmp_path / "base" / name)
        idx = s.index("library/alpine", "3")
        os.unlink(s.revision_link("library/alpine", idx.children[0].digest))
    base = tmp_path / "base"
    run = fs(
        "scan", base, "--registry", "dockerhub", "--proxy-cache", "dockerhub", "-f", "json"
    )
    assert run.exit_code == 0
    assert "skipped for proxy caches: dockerhub" in run.json()["notes"][1]
    run = fs("scan", base, "--registry", "private", "--proxy-cache", "dockerhub")
    assert run.exit_code == 1
    assert "orphan_index_child" in run.stdout
    run = fs("scan", base, "--registry", "private", "--proxy-cache", "ghcr")
    assert run.exit_code == 2 and "--proxy-cache: unknown registry 'ghcr'" in run.stderr


def test_scan_verify_digests(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    store.data_path(img.layers[0]).write_bytes(b"corrupt")
    assert fs("scan", store.root).exit_code == 0
    run = fs("scan", store.root, "--verify-digests", "-f", "json")
    assert run.exit_code == 1
    assert [f["kind"] for f in run.json()["findings"]] == ["corrupt_blob"]


def test_fix_repairs_everything_exits_0_then_restore(store: SyntheticStore, tmp_path: Path) -> None:
    img = store.image("app/web", "v1")
    store.image("app/web", "v2")
    shutil.rmtree(store.tag_dir("app/web", "v1"))  # no tag uses the layer: fix repairs it all
    store.data_path(img.layers[0]).unlink()
    before = snapshot(store.root)
    run = fs("fix", store.root, "--quarantine", tmp_path / "q", "-f", "json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert doc["mode"] == "fs-fix"
    [f] = doc["findings"]
    assert (f["kind"], f["severity"], f["details"]["repaired"]) == (
        "orphan_layer_link",
        "info",
        True,
    )
    run_dir = doc["quarantine"]
    assert Path(f["details"]["quarantined_to"]).is_relative_to(run_dir)
    run = fs("restore", run_dir, "-f", "json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["summary"]["restored"] == 1
    after = snapshot(store.root)
    after.pop(LOCK_NAME)
    assert after == before


def test_fix_exits_1_when_a_human_is_needed(store: SyntheticStore, tmp_path: Path) -> None:
    idx = store.index("app/multi", "v1")
    child = idx.children[0]
    os.unlink(store.revision_link("app/multi", child.digest))
    store.data_path(child.layers[0]).unlink()
    run = fs("fix", store.root, "--quarantine", tmp_path / "q")
    assert run.exit_code == 1
    assert "orphan_index_child" in run.stdout
    assert "rebuild required, see docs/runbook.md" in run.stdout


def test_fix_refusal_exits_3_shows_the_scan_and_touches_nothing(
    store: SyntheticStore, tmp_path: Path
) -> None:
    img = store.image("app/web", "v1", layers=8)
    for layer in img.layers:
        store.data_path(layer).unlink()
    before = snapshot(store.root)
    run = fs("fix", store.root, "--quarantine", tmp_path / "q")
    assert run.exit_code == 3
    assert "note: REFUSED: registry" in run.stdout
    assert "orphan_layer_link" in run.stdout
    assert run.stderr.startswith("regverify: error: fs fix refused, nothing was changed")
    after = snapshot(store.root)
    after.pop(LOCK_NAME)
    assert after == before
    assert not (tmp_path / "q").exists()
    run = fs("fix", store.root, "--quarantine", tmp_path / "q", "-f", "json")
    assert run.exit_code == 3
    assert run.json()["refused"][0].startswith("registry ")


def test_fix_force_warns_on_stderr(store: SyntheticStore, tmp_path: Path) -> None:
    img = store.image("app/web", None, layers=8)
    for layer in img.layers:
        store.data_path(layer).unlink()
    run = fs("fix", store.root, "--quarantine", tmp_path / "q", "--force")
    assert run.exit_code == 0
    assert "WARNING: --force overrode a safety rail" in run.stderr


def test_fix_max_orphan_share_is_validated(store: SyntheticStore) -> None:
    run = fs("fix", store.root, "--max-orphan-share", "1.5")
    assert run.exit_code == 2


def test_restore_usage_error(tmp_path: Path) -> None:
    run = fs("restore", tmp_path)
    assert run.exit_code == 2
    assert "no journal.jsonl" in run.stderr
    run = fs("restore", tmp_path, "--run", "2026-01-01T00-00-00Z")
    assert run.exit_code == 2 and "--run 2026-01-01T00-00-00Z" in run.stderr


def test_fix_exits_1_while_images_stay_broken_and_says_what_next(
    store: SyntheticStore, tmp_path: Path
) -> None:
    for i in range(4):
        store.image(f"lib/img{i}", "v1")
    img = store.image("app/web", "v1")
    store.data_path(img.layers[0]).unlink()
    run = fs("fix", store.root, "--quarantine", tmp_path / "q")
    assert run.exit_code == 1
    assert "image_blob_missing" in run.stdout
    assert "still broken: 1 tag(s) cannot be pulled (app/web:v1)" in run.stdout
    assert "restart the registry" in run.stdout
    assert fs("scan", store.root).exit_code == 1  # and the next scan does not say all clear


def test_restore_takes_the_quarantine_folder_newest_run_first(
    store: SyntheticStore, tmp_path: Path
) -> None:
    for i in range(6):
        store.image(f"lib/img{i}", "v1")
    a, b = store.image("app/a", None), store.image("app/b", None)
    store.data_path(a.layers[0]).unlink()
    expected = snapshot(store.root)
    q = tmp_path / "q"
    runs = []
    for img in (a, b):  # two fix runs, one orphan each
        if img is b:
            store.data_path(b.layers[0]).unlink()
        run = fs("fix", store.root, "--quarantine", q, "-f", "json")
        assert run.exit_code == 0, run.stderr
        runs.append(Path(run.json()["quarantine"]))
    del expected[str(store.data_path(b.layers[0]).relative_to(store.root))]
    assert runs[0] != runs[1] and runs[0].parent == runs[1].parent == q.resolve()

    run = fs("restore", q, "--run", runs[1].name, "-f", "json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert doc["summary"]["links_put_back"] == 1
    assert store.layer_link("app/b", b.layers[0]).exists()
    assert not store.layer_link("app/a", a.layers[0]).exists()
    run = fs("restore", q)  # both runs: the newer one is already back
    assert run.exit_code == 0, run.stderr
    assert "restore: put back 1 link(s)" in run.stdout and "from 2 run(s)" in run.stdout
    after = snapshot(store.root)
    after.pop(LOCK_NAME)
    expected.pop(LOCK_NAME, None)
    assert after == expected


def test_internal_error_is_one_line_exit_3(
    store: SyntheticStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaput")

    # The command imports the engine when it runs: patch it where it is looked up.
    monkeypatch.setattr("verifier.storage.scan.scan_storage", boom)
    run = fs("scan", store.root)
    assert run.exit_code == 3
    assert run.stderr.strip() == (
        "regverify: error: internal error: RuntimeError: kaput (rerun with --verbose)"
    )


@pytest.mark.registry
def test_fs_scan_textfile_of_real_storage_passes_promtool(
    registry: object, tmp_path: Path
) -> None:
    """`fs scan --textfile` on storage a real registry wrote, with one orphan layer link."""
    from tests.support.images import push_image
    from tests.support.promtool import check_metrics
    from tests.support.registry import RegistryServer, blob_data_path

    assert isinstance(registry, RegistryServer)
    image = push_image(registry, "app/web", "v1")
    registry.stop()
    blob_data_path(registry.v2, image.layers[0].digest).unlink()
    textfile = tmp_path / "metrics" / "regverify-fs.prom"
    run = fs("scan", registry.root, "--format", "json", "--textfile", textfile)
    assert run.exit_code == 1
    text = textfile.read_text()
    check_metrics(text)
    orphans = f'regverify_fs_orphan_layer_links{{mode="fs-scan",registry="{registry.root}"}} 1.0'
    assert orphans in text
    assert "regverify_last_success_timestamp_seconds{" in text
    # A run that cannot start still updates the run timestamp (and keeps the old values).
    run = fs("scan", registry.root, "--registry", "no-such", "--textfile", textfile)
    assert run.exit_code == 2
    after = textfile.read_text()
    check_metrics(after)
    assert orphans in after
    assert after != text  # the run timestamp moved
