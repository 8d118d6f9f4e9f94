"""verifier.storage.repair on synthetic trees: quarantine, journal, restore, relink, rails."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.images import push_image, push_index
from tests.support.registry import (
    RegistryServer,
    blob_data_path,
    layer_link_path,
    revision_link_path,
)
from tests.support.skopeo import skopeo_copy_all
from tests.test_storage_synthetic import SyntheticStore, SynthImage, snapshot
from verifier.errors import ExitCode, SafetyRefusal, UsageError
from verifier.model.findings import Kind, Report, Severity
from verifier.model.reference import parse_reference
from verifier.registry.client import ClientOptions
from verifier.storage.fsio import TMP_SUFFIX
from verifier.storage.layout import StorageLayout, detect_layout
from verifier.storage.records import ScanResult, StorageScanOptions
from verifier.storage.repair import (
    JOURNAL_NAME,
    LOCK_NAME,
    FixLock,
    FixOptions,
    FixRefused,
    check_safety_rails,
    default_quarantine_root,
    fix_storage,
    read_journal,
    restore_quarantine,
)
from verifier.storage.scan import scan_storage
from verifier.verify import RunOptions, verify_image

STARTED = datetime(2026, 11, 28, 7, 0, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> SyntheticStore:
    return SyntheticStore(tmp_path / "data")


def healthy(store: SyntheticStore, n: int = 4) -> list[SynthImage]:
    """Healthy images so a few orphans stay under the default orphan-share threshold."""
    return [store.image(f"lib/img{i}", "v1") for i in range(n)]


def fix(
    store: SyntheticStore, tmp_path: Path, scan: StorageScanOptions | None = None, **opts: Any
) -> Report:
    options = FixOptions(quarantine=tmp_path / "q", **opts)
    return fix_storage(detect_layout(store.root), scan, options, started=STARTED)


def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "q" / "2026-11-28T07-00-00Z"


def test_fix_quarantines_exactly_the_orphan_links(store: SyntheticStore, tmp_path: Path) -> None:
    healthy(store)
    img = store.image("app/web", "v1")
    for layer in img.layers:
        store.data_path(layer).unlink()
    before = snapshot(store.root)
    report = fix(store, tmp_path)
    after = snapshot(store.root)
    assert (after.pop(LOCK_NAME) or b"").startswith(b"pid ")  # the lock file is the one thing added
    moved = {k for k in before if k not in after}
    assert moved == {
        str(store.layer_link("app/web", d).relative_to(store.root)) for d in img.layers
    }
    # nothing else changed: no file added, every remaining file byte-identical
    assert {k: v for k, v in before.items() if k not in moved} == after
    rd = run_dir(tmp_path)
    for rel in moved:
        assert (rd / "tree" / rel).read_bytes() == before[rel]
    # the links are repaired, the image that used the layers is not: exit 1, with next steps
    assert report.exit_code is ExitCode.DEFECTS
    assert report.mode == "fs-fix"
    links = [f for f in report.findings if f.kind is Kind.ORPHAN_LAYER_LINK]
    assert [(f.severity, f.details["repaired"]) for f in links] == [(Severity.INFO, True)] * 2
    f = links[0]
    assert f.details["action"] == "quarantined"
    assert f.details["quarantined_to"] == str(rd / "tree" / str(f.path).split("/data/", 1)[1])
    assert f.message.startswith("quarantined: ")
    images = [f for f in report.findings if f.kind is Kind.IMAGE_BLOB_MISSING]
    assert {f.digest for f in images} == set(img.layers)
    for image in images:
        assert image.severity is Severity.ERROR
        assert image.details["tags"] == ["v1"]
        assert image.details["orphan_link_quarantined"] is True
        assert image.details["next_steps"][0].startswith("restart the registry")
        assert image.details["next_steps"][1] == "rebuild or re-push: app/web:v1"
    assert report.counters["quarantined"] == 2
    assert report.counters["unrepaired"] == 2
    assert report.extra["quarantine"] == str(rd)
    assert any(f"regverify fs restore {rd}" in n for n in report.notes)
    [note] = [n for n in report.notes if n.startswith("still broken")]
    assert "1 tag(s) cannot be pulled (app/web:v1)" in note and "restart the registry" in note
    # and the next scan says the same: the image is still broken
    rescan = scan_storage(detect_layout(store.root)).report
    assert {(f.kind, f.digest) for f in rescan.defects} == {
        (Kind.IMAGE_BLOB_MISSING, d) for d in img.layers
    }
    assert rescan.exit_code is ExitCode.DEFECTS


def test_journal_records_what_where_when_why(store: SyntheticStore, tmp_path: Path) -> None:
    healthy(store)
    img = store.image("app/web", "v1")
    store.data_path(img.layers[0]).unlink()
    fix(store, tmp_path)
    records, bad = read_journal(run_dir(tmp_path) / JOURNAL_NAME)
    assert bad == []
    header, action, outcome = records
    assert header["type"] == "run"
    assert header["base"] == str(store.root.resolve())
    assert header["layout"] == "single-root"
    link = store.layer_link("app/web", img.layers[0]).resolve()
    rel = str(link.relative_to(store.root.resolve()))
    assert action["type"] == "quarantine"
    assert action["kind"] == "orphan_layer_link"
    assert (action["registry"], action["repository"], action["digest"]) == (
        "",
        "app/web",
        img.layers[0],
    )
    assert action["source"] == str(link)
    assert action["relpath"] == rel
    assert action["quarantined_to"] == str(run_dir(tmp_path) / "tree" / rel)
    assert action["size"] == 71
    assert action["reason"].startswith("layer link without blob data")
    assert action["at"].endswith("Z")
    assert outcome == {
        "type": "outcome",
        "seq": action["seq"],
        "result": "moved",
        "at": outcome["at"],
    }


def test_restore_brings_the_tree_back_byte_for_byte(store: SyntheticStore, tmp_path: Path) -> None:
    healthy(store)
    img = store.image("app/web", "v1")
    idx = store.index("app/multi", "v1")
    for layer in img.layers:
        store.data_path(layer).unlink()
    os.unlink(store.revision_link("app/multi", idx.children[0].digest))
    before = snapshot(store.root)
    report = fix(store, tmp_path)
    assert report.exit_code is ExitCode.DEFECTS  # the orphan child still needs a human
    assert snapshot(store.root) != before
    restored = restore_quarantine(run_dir(tmp_path))
    assert snapshot(store.root) == {**before, LOCK_NAME: snapshot(store.root)[LOCK_NAME]}
    assert restored.exit_code is ExitCode.CLEAN
    assert restored.counters["restored"] == 2
    assert all(f.details["restored"] for f in restored.findings)
    # idempotent: a second restore finds nothing to do and reports no conflict
    again = restore_quarantine(run_dir(tmp_path))
    assert again.exit_code is ExitCode.CLEAN
    assert again.counters["already_restored"] == 2


def test_fix_without_orphans_creates_no_quarantine(store: SyntheticStore, tmp_path: Path) -> None:
    healthy(store)
    report = fix(store, tmp_path)
    assert report.exit_code is ExitCode.CLEAN
    assert not (tmp_path / "q").exists()
    assert "quarantine" not in report.extra


def test_fix_leaves_everything_but_orphan_links_and_exits_1(
    store: SyntheticStore, tmp_path: Path
) -> None:
    healthy(store, 8)
    img = store.image("app/web", "v1")
    store.data_path(img.digest).unlink()  # dangling revision + tag: a human must rebuild
    store.data_path(img.layers[0]).unlink()
    report = fix(store, tmp_path)
    assert report.exit_code is ExitCode.DEFECTS
    remaining = {(f.kind, f.digest) for f in report.defects}
    assert remaining == {(Kind.DANGLING_REVISION, img.digest), (Kind.DANGLING_TAG, img.digest)}
    # (the manifest is gone, so what its layers were is not known: no image_blob_missing)
    assert store.revision_link("app/web", img.digest).exists()
    assert not store.layer_link("app/web", img.layers[0]).exists()


def test_default_quarantine_is_beside_the_storage(tmp_path: Path) -> None:
    assert default_quarantine_root(tmp_path / "opt" / "data") == (
        tmp_path / "opt" / ".regverify-quarantine"
    )


def test_default_quarantine_used_when_not_given(store: SyntheticStore, tmp_path: Path) -> None:
    healthy(store)
    img = store.image("app/web", "v1")
    store.data_path(img.layers[0]).unlink()
    report = fix_storage(detect_layout(store.root), started=STARTED)
    expected = store.root.resolve().parent / ".regverify-quarantine" / "2026-11-28T07-00-00Z"
    assert report.extra["quarantine"] == str(expected)


def test_quarantine_inside_the_base_is_refused(store: SyntheticStore) -> None:
    img = store.image("app/web", "v1")
    store.data_path(img.layers[0]).unlink()
    before = snapshot(store.root)
    with pytest.raises(UsageError, match="inside the storage base"):
        fix_storage(detect_layout(store.root), options=FixOptions(quarantine=store.root / "q"))
    assert snapshot(store.root) == before


def test_two_runs_in_the_same_second_get_two_folders(store: SyntheticStore, tmp_path: Path) -> None:
    healthy(store, 8)
    a = store.image("app/a", "v1")
    store.data_path(a.layers[0]).unlink()
    fix(store, tmp_path)
    b = store.image("app/b", "v1")
    store.data_path(b.layers[0]).unlink()
    report = fix(store, tmp_path)
    assert report.extra["quarantine"] == str(tmp_path / "q" / "2026-11-28T07-00-00Z-1")


# --- safety rails: each refuses with nothing touched --------------------------------------


def assert_refused(store: SyntheticStore, tmp_path: Path, match: str, **opts: Any) -> Report:
    before = snapshot(store.root)
    before.pop(LOCK_NAME, None)
    with pytest.raises(FixRefused, match=match) as info:
        fix(store, tmp_path, **opts)
    after = snapshot(store.root)
    after.pop(LOCK_NAME, None)
    assert after == before
    assert not (tmp_path / "q").exists()
    assert info.value.exit_code is ExitCode.INCOMPLETE
    assert any(n.startswith("REFUSED:") for n in info.value.report.notes)
    return info.value.report


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_rail_blob_store_missing_or_empty(
    store: SyntheticStore, tmp_path: Path, damage: str
) -> None:
    healthy(store)
    shutil.rmtree(store.v2 / "blobs")
    if damage == "empty":
        (store.v2 / "blobs" / "sha256" / "ab").mkdir(parents=True)
    report = assert_refused(store, tmp_path, f"blob store is {damage} while 20 links exist")
    # the scan's findings are still reported: 12 orphan layer links, 4 revisions, 4 tags
    assert len(report.defects) == 12 + 4 + 4
    # --force does not override this rail: there is nothing left to compare against
    assert_refused(store, tmp_path, f"blob store is {damage}", force=True)


def test_rail_orphan_share(store: SyntheticStore, tmp_path: Path) -> None:
    healthy(store, 2)  # 6 healthy layer links
    img = store.image("app/web", "v1")
    for blob in img.blobs:
        store.data_path(blob).unlink()  # 3 of 9 orphaned: 33% > 25%
    assert_refused(store, tmp_path, r"3 of 9 layer links \(33%\) look orphaned")
    # a higher threshold lets it through
    report = fix(store, tmp_path, max_orphan_share=0.5)
    assert report.counters["quarantined"] == 3


def test_rail_orphan_share_forced_warns_loudly(store: SyntheticStore, tmp_path: Path) -> None:
    img = store.image("app/web", "v1")
    for blob in img.blobs:
        store.data_path(blob).unlink()
    assert_refused(store, tmp_path, "look orphaned")
    report = fix(store, tmp_path, force=True)
    assert report.counters["quarantined"] == 3
    [warning] = [n for n in report.notes if n.startswith("WARNING")]
    assert "--force overrode a safety rail" in warning
    assert "3 of 3 layer links (100%)" in warning


def test_rails_are_per_registry(tmp_path: Path) -> None:
    big = SyntheticStore(tmp_path / "base" / "big")
    small = SyntheticStore(tmp_path / "base" / "small")
    healthy(big, 10)
    img = small.image("app", "v1")
    small.data_path(img.layers[0]).unlink()  # 1 of 3 in 'small': 33%, though 1 of 33 overall
    layout = detect_layout(tmp_path / "base")
    result = scan_storage(layout)
    decision = check_safety_rails(result, force=False, max_orphan_share=0.25)
    assert len(decision.refusals) == 1
    assert decision.refusals[0].startswith("registry small:")


def test_check_safety_rails_is_pure_on_stats(store: SyntheticStore) -> None:
    store.image("app", "v1")
    result: ScanResult = scan_storage(detect_layout(store.root))
    assert check_safety_rails(result, force=False, max_orphan_share=0.0).refusals == ()
    result.stats[0].orphan_layer_links = 1
    assert len(check_safety_rails(result, force=False, max_orphan_share=0.0).refusals) == 1
    forced = check_safety_rails(result, force=True, max_orphan_share=0.0)
    assert (len(forced.refusals), len(forced.overridden)) == (0, 1)


def test_rail_lock_stops_a_second_fix(store: SyntheticStore, tmp_path: Path) -> None:
    healthy(store)
    img = store.image("app/web", "v1")
    store.data_path(img.layers[0]).unlink()
    with FixLock(store.root.resolve()):
        before = snapshot(store.root)
        with pytest.raises(SafetyRefusal, match="another regverify fs fix/restore holds"):
            fix(store, tmp_path)
        assert snapshot(store.root) == before
        with pytest.raises(SafetyRefusal, match=f"pid {os.getpid()}"):
            fix(store, tmp_path)
    # released: the next run proceeds
    assert fix(store, tmp_path).counters["quarantined"] == 1


def test_rail_lock_file_symlink_is_refused(store: SyntheticStore, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("")
    os.symlink(tmp_path / "elsewhere", store.root / LOCK_NAME)
    with pytest.raises(SafetyRefusal, match="cannot open lock file"):
        fix(store, tmp_path)


def test_rail_never_follows_symlinks(store: SyntheticStore, tmp_path: Path) -> None:
    """A link folder that is a symlink to a folder outside is reported, never moved."""
    healthy(store)
    outside = SyntheticStore(tmp_path / "outside")
    foreign = outside.image("app/web", "v1", seed="outside")
    outside.data_path(foreign.layers[0]).unlink()
    store.image("app/web", "v1")
    link_dir = store.repo_dir("app/web") / "_layers" / "sha256" / foreign.layers[0].split(":")[1]
    os.symlink(outside.layer_link("app/web", foreign.layers[0]).parent, link_dir)
    outside_before = snapshot(outside.root)
    report = fix(store, tmp_path)
    assert [f.kind for f in report.findings] == [Kind.UNEXPECTED_SYMLINK]
    assert snapshot(outside.root) == outside_before
    assert report.exit_code is ExitCode.INCOMPLETE


def test_symlink_swapped_in_after_the_scan_is_not_followed(
    store: SyntheticStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The move re-checks every path component: a folder swapped for a symlink stops it."""
    healthy(store)
    img = store.image("app/web", "v1")
    store.data_path(img.layers[0]).unlink()
    real_scan = scan_storage
    outside = tmp_path / "outside"

    def scan_then_swap(layout: StorageLayout, *args: object) -> ScanResult:
        result = real_scan(layout, *args)  # type: ignore[arg-type]
        layers = store.repo_dir("app/web") / "_layers"
        shutil.move(layers, outside)
        os.symlink(outside, layers)
        return result

    monkeypatch.setattr("verifier.storage.repair.scan_storage", scan_then_swap)
    report = fix(store, tmp_path)
    [f] = [f for f in report.findings if f.kind is Kind.ORPHAN_LAYER_LINK]
    assert f.details["repaired"] is False
    assert "symlink" in f.details["skipped"]
    assert (outside / "sha256" / img.layers[0].split(":")[1] / "link").exists()


def test_blob_reappearing_after_the_scan_keeps_its_link(
    store: SyntheticStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push between scan and move (the registry is live) must not lose the new link."""
    healthy(store)
    img = store.image("app/web", "v1")
    data = store.data_path(img.layers[0])
    content = data.read_bytes()
    data.unlink()
    real_scan = scan_storage

    def scan_then_push(layout: StorageLayout, *args: object) -> ScanResult:
        result = real_scan(layout, *args)  # type: ignore[arg-type]
        data.write_bytes(content)
        return result

    monkeypatch.setattr("verifier.storage.repair.scan_storage", scan_then_push)
    report = fix(store, tmp_path)
    assert store.layer_link("app/web", img.layers[0]).exists()
    [f] = [f for f in report.findings if f.kind is Kind.ORPHAN_LAYER_LINK]
    assert (f.severity, f.details["skipped"]) == (
        Severity.INFO,
        "blob data reappeared since the scan",
    )
    assert report.exit_code is ExitCode.CLEAN


def test_failed_move_stays_an_error(
    store: SyntheticStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    healthy(store)
    img = store.image("app/web", "v1")
    store.data_path(img.layers[0]).unlink()

    def eacces(src: object, dst: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("verifier.storage.fsio.rename_noreplace", eacces)
    report = fix(store, tmp_path)
    [f] = [f for f in report.findings if f.kind is Kind.ORPHAN_LAYER_LINK]
    assert (f.severity, f.details["repaired"]) == (Severity.ERROR, False)
    assert "Permission denied" in f.details["error"]
    assert report.exit_code is ExitCode.DEFECTS
    records, _ = read_journal(run_dir(tmp_path) / JOURNAL_NAME)
    assert records[-1]["result"] == "failed"


# --- relink -------------------------------------------------------------------------------


def test_relink_index_children(store: SyntheticStore, tmp_path: Path) -> None:
    healthy(store)
    idx = store.index("app/multi", "v1")
    child = idx.children[0]
    link = store.revision_link("app/multi", child.digest)
    shutil.rmtree(link.parent)  # the folder goes too, as distribution's delete does
    before = snapshot(store.root)

    report = fix(store, tmp_path)  # without the flag: reported, not touched
    assert not link.exists()
    [f] = report.defects
    assert f.kind is Kind.ORPHAN_INDEX_CHILD
    assert f.details["action"] == "relinkable: rerun fs fix with --relink-index-children"
    assert report.exit_code is ExitCode.DEFECTS

    report = fix(store, tmp_path, relink_index_children=True)
    assert link.read_bytes() == child.digest.encode()
    assert report.exit_code is ExitCode.CLEAN
    [f] = report.findings
    assert (f.severity, f.details["repaired"], f.details["action"]) == (
        Severity.INFO,
        True,
        "relinked",
    )
    assert report.counters["relinked"] == 1
    rd = Path(report.extra["quarantine"])
    records, _ = read_journal(rd / JOURNAL_NAME)
    relink = next(r for r in records if r["type"] == "relink")
    assert relink["content"] == child.digest
    assert relink["created_dirs"] == [str(link.parent.resolve().relative_to(store.root.resolve()))]
    assert relink["indexes"] == [idx.digest]
    assert scan_storage(detect_layout(store.root)).report.findings == []

    restore = restore_quarantine(rd)
    assert restore.exit_code is ExitCode.CLEAN
    after = snapshot(store.root)
    after.pop(LOCK_NAME)
    assert after == before  # the link and the folder we created are gone again
    assert (rd / "undone" / relink["relpath"]).read_bytes() == child.digest.encode()


def test_failed_relink_is_journaled_and_restore_cleans_up(
    store: SyntheticStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    healthy(store)
    idx = store.index("app/multi", "v1")
    child = idx.children[0]
    link = store.revision_link("app/multi", child.digest)
    shutil.rmtree(link.parent)
    before = snapshot(store.root)
    real_open = os.open

    def failing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path) == str(link.resolve()) + TMP_SUFFIX and flags & os.O_EXCL:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr("verifier.storage.repair.os.open", failing_open)
    report = fix(store, tmp_path, relink_index_children=True)
    monkeypatch.undo()
    [f] = report.findings
    assert (f.severity, f.details["repaired"]) == (Severity.ERROR, False)
    assert "No space left" in f.details["error"]
    assert report.exit_code is ExitCode.DEFECTS
    assert link.parent.is_dir() and not link.exists()  # the folder was made before the failure
    restore_quarantine(Path(report.extra["quarantine"]))
    after = snapshot(store.root)
    after.pop(LOCK_NAME)
    assert after == before


def test_relink_refused_when_not_lossless(store: SyntheticStore, tmp_path: Path) -> None:
    healthy(store, 8)
    idx = store.index("app/multi", "v1")
    child = idx.children[0]
    os.unlink(store.revision_link("app/multi", child.digest))
    store.data_path(child.layers[0]).unlink()
    report = fix(store, tmp_path, relink_index_children=True)
    assert not store.revision_link("app/multi", child.digest).exists()
    [f] = [f for f in report.findings if f.kind is Kind.ORPHAN_INDEX_CHILD]
    assert f.severity is Severity.ERROR
    assert "rebuild required" in f.details["action"]
    assert report.exit_code is ExitCode.DEFECTS


# --- restore ------------------------------------------------------------------------------


def _fixed_one(store: SyntheticStore, tmp_path: Path) -> tuple[SynthImage, Path]:
    healthy(store)
    img = store.image("app/web", "v1")
    store.data_path(img.layers[0]).unlink()
    fix(store, tmp_path)
    return img, run_dir(tmp_path)


def test_restore_does_not_overwrite_a_different_file(store: SyntheticStore, tmp_path: Path) -> None:
    img, rd = _fixed_one(store, tmp_path)
    link = store.layer_link("app/web", img.layers[0])
    link.write_bytes(b"something else")
    report = restore_quarantine(rd)
    [f] = report.findings
    assert f.kind is Kind.RESTORE_CONFLICT
    assert report.exit_code is ExitCode.DEFECTS
    assert link.read_bytes() == b"something else"
    # once the obstacle is gone, a rerun restores it
    link.unlink()
    assert restore_quarantine(rd).counters["restored"] == 1
    assert link.read_bytes() == img.layers[0].encode()


def test_restore_after_the_link_was_recreated_is_not_needed(
    store: SyntheticStore, tmp_path: Path
) -> None:
    """A re-push writes the same link again; restore sees it in place and keeps the copy."""
    img, rd = _fixed_one(store, tmp_path)
    store.link_layer("app/web", img.layers[0])
    report = restore_quarantine(rd)
    assert report.exit_code is ExitCode.CLEAN
    assert report.counters["not_needed"] == 1
    assert any((rd / "tree").rglob("link"))


def test_restore_refuses_journal_paths_outside_the_base(
    store: SyntheticStore, tmp_path: Path
) -> None:
    _, rd = _fixed_one(store, tmp_path)
    journal = rd / JOURNAL_NAME
    records, _ = read_journal(journal)
    evil_target = tmp_path / "evil"
    for n, rel in enumerate(
        [
            "../evil",
            "docker/registry/v2/repositories/../../../../evil/link",
            str(evil_target),
            "docker/registry/v2/blobs/sha256/ab/x/data",
        ]
    ):
        (rd / "tree").joinpath("x").mkdir(exist_ok=True)
        records.append({**records[1], "seq": 100 + n, "relpath": rel})
    journal.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    report = restore_quarantine(rd)
    conflicts = [f for f in report.findings if f.kind is Kind.RESTORE_CONFLICT]
    assert len(conflicts) == 5  # four unsafe records and the unparseable line
    assert not evil_target.exists()
    assert report.counters["restored"] == 1  # the genuine record still went back


def test_restore_of_a_tampered_copy_is_a_conflict(store: SyntheticStore, tmp_path: Path) -> None:
    img, rd = _fixed_one(store, tmp_path)
    [copy] = list((rd / "tree").rglob("link"))
    copy.write_bytes(b"sha256:" + b"0" * 64)
    report = restore_quarantine(rd)
    assert [f.kind for f in report.findings] == [Kind.RESTORE_CONFLICT]
    assert not store.layer_link("app/web", img.layers[0]).exists()


def test_restore_needs_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a quarantine folder or run folder"):
        restore_quarantine(tmp_path / "missing")
    with pytest.raises(UsageError, match="no journal.jsonl here nor in any folder in it"):
        restore_quarantine(tmp_path)
    (tmp_path / JOURNAL_NAME).write_text('{"type": "quarantine"}\n')
    with pytest.raises(UsageError, match="no run header"):
        restore_quarantine(tmp_path)


def test_restore_takes_the_lock(store: SyntheticStore, tmp_path: Path) -> None:
    _, rd = _fixed_one(store, tmp_path)
    with FixLock(store.root.resolve()), pytest.raises(SafetyRefusal):
        restore_quarantine(rd)


# --- against the real registry -------------------------------------------------------------


def http_verify(server: RegistryServer, ref: str) -> Report:
    """`regverify image` of `ref` through the real HTTP API."""
    options = RunOptions(client=ClientOptions(plain_http=True, retries=0))
    return asyncio.run(verify_image(parse_reference(f"{server.host}/{ref}"), options))


def http_kinds(report: Report) -> set[tuple[str, str | None, int | None]]:
    return {(str(f.kind), f.digest, f.http_status) for f in report.findings}


def real_fix(server: RegistryServer, tmp_path: Path, **opts: Any) -> Report:
    options = FixOptions(quarantine=tmp_path / "q", **opts)
    return fix_storage(detect_layout(server.root), None, options, started=STARTED)


@pytest.mark.registry
def test_real_fix_after_gc_incident_and_byte_exact_restore(
    registry: RegistryServer, tmp_path: Path
) -> None:
    pushed = push_index(registry, "app/multi", "v1")
    for i in range(10):  # a registry that is mostly healthy: 10 orphans of 40 layer links
        push_image(registry, "lib/base", f"v{i}")
    registry.garbage_collect(delete_untagged=True)
    orphan_links = {
        layer_link_path(registry.v2, "app/multi", b.digest)
        for m in pushed.manifests
        for b in m.blobs
    }
    before = snapshot(registry.root)

    report = real_fix(registry, tmp_path)
    after = snapshot(registry.root)
    after.pop(LOCK_NAME)
    moved = {registry.root / k for k in before if k not in after}
    assert moved == orphan_links  # exactly the orphan links, nothing else
    assert {k: v for k, v in before.items() if registry.root / k not in moved} == after
    assert report.counters["quarantined"] == 10
    # the index children need a rebuild: fix exits 1 and says so
    assert report.exit_code is ExitCode.DEFECTS
    assert {f.digest for f in report.defects} == {m.digest for m in pushed.manifests}
    assert all(f.kind is Kind.ORPHAN_INDEX_CHILD for f in report.defects)
    rescan = scan_storage(detect_layout(registry.root)).report
    assert {f.kind for f in rescan.findings} == {Kind.ORPHAN_INDEX_CHILD}

    restored = restore_quarantine(Path(report.extra["quarantine"]))
    assert restored.counters["restored"] == 10
    final = snapshot(registry.root)
    final.pop(LOCK_NAME)
    assert final == before


@pytest.mark.registry
@pytest.mark.skopeo
def test_real_http_view_turns_from_unreadable_to_missing_to_clean(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """The layer's data is deleted, its link kept; what `regverify image` sees at each step.

    distribution 2.8 answers from its in-memory blob cache while warm, so the HTTP view only
    changes once the registry restarts (docs/runbook.md: restart after fs fix).
    """
    for i in range(6):
        push_image(registry, "lib/base", f"v{i}")
    pushed = push_image(registry, "app/web", "v1")
    layer = pushed.layers[0].digest
    assert http_verify(registry, "app/web:v1").exit_code is ExitCode.CLEAN  # warms the cache
    blob_data_path(registry.v2, layer).unlink()

    # warm: HEAD 200 with the old length, then no bytes -> blob_unreadable
    assert http_kinds(http_verify(registry, "app/web:v1")) == {("blob_unreadable", layer, 206)}

    report = real_fix(registry, tmp_path)
    # the orphan link is quarantined, but the tag is still broken and fs fix says so
    assert report.exit_code is ExitCode.DEFECTS
    [broken] = report.defects
    assert (broken.kind, broken.digest, broken.details["tags"]) == (
        Kind.IMAGE_BLOB_MISSING,
        layer,
        ["v1"],
    )
    assert broken.details["next_steps"][0].startswith("restart the registry")
    assert not layer_link_path(registry.v2, "app/web", layer).exists()
    assert not skopeo_copy_all(f"{registry.host}/app/web:v1", tmp_path / "pull1").ok
    # still warm: the cache, not the link, answers
    assert http_kinds(http_verify(registry, "app/web:v1")) == {("blob_unreadable", layer, 206)}

    registry.restart()  # what the runbook says to do after fs fix
    # a clean absence: 404, not a 200 that delivers nothing
    assert http_kinds(http_verify(registry, "app/web:v1")) == {("blob_missing", layer, 404)}

    push_image(registry, "app/web", "v1")  # the rebuild re-pushes the same bytes
    assert http_verify(registry, "app/web:v1").exit_code is ExitCode.CLEAN
    assert skopeo_copy_all(f"{registry.host}/app/web:v1", tmp_path / "pull2").ok
    assert scan_storage(detect_layout(registry.root)).report.findings == []


@pytest.mark.registry
@pytest.mark.skopeo
def test_real_relink_child_deleted_by_digest(registry: RegistryServer, tmp_path: Path) -> None:
    """A child manifest deleted through the API (revision link gone, data and blobs kept)."""
    for i in range(6):
        push_image(registry, "lib/base", f"v{i}")
    pushed = push_index(registry, "app/multi", "v1")
    arm64 = pushed.children[1]
    before = snapshot(registry.root)
    resp = httpx.delete(f"{registry.url}/v2/app/multi/manifests/{arm64.digest}", trust_env=False)
    assert resp.status_code == 202
    assert not revision_link_path(registry.v2, "app/multi", arm64.digest).exists()
    assert http_kinds(http_verify(registry, "app/multi:v1")) == {
        ("manifest_missing", arm64.digest, 404)
    }
    assert not skopeo_copy_all(f"{registry.host}/app/multi:v1", tmp_path / "pull1").ok
    deleted = snapshot(registry.root)

    report = real_fix(registry, tmp_path, relink_index_children=True)
    assert report.exit_code is ExitCode.CLEAN
    assert report.counters["relinked"] == 1
    assert http_verify(registry, "app/multi:v1").exit_code is ExitCode.CLEAN
    assert skopeo_copy_all(f"{registry.host}/app/multi:v1", tmp_path / "pull2").ok
    relinked = snapshot(registry.root)
    relinked.pop(LOCK_NAME)
    assert relinked == before  # the relinked tree is the tree before the delete

    restore_quarantine(Path(report.extra["quarantine"]))
    restored = snapshot(registry.root)
    restored.pop(LOCK_NAME)
    assert restored == deleted
    assert http_kinds(http_verify(registry, "app/multi:v1")) == {
        ("manifest_missing", arm64.digest, 404)
    }


# --- next to a live registry ----------------------------------------------------------------


@pytest.mark.parametrize("push", ["blob-upload", "link-rewrite"])
def test_link_touched_during_its_move_is_put_back(
    store: SyntheticStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, push: str
) -> None:
    """A push lands between the last re-check and the move: the link goes back, unchanged."""
    import verifier.storage.repair as repair_mod

    healthy(store)
    img = store.image("app/web", None)
    data = store.data_path(img.layers[0])
    content = data.read_bytes()
    data.unlink()
    link = store.layer_link("app/web", img.layers[0])
    real_move = repair_mod._move_file

    def move_while_pushing(src: Path, dst: Path) -> None:
        if src == link.resolve():
            if push == "blob-upload":  # distribution writes the data, then the link
                data.write_bytes(content)
            else:  # the registry opened the link before our rename and writes it after
                fd = os.open(src, os.O_WRONLY | os.O_TRUNC)
                real_move(src, dst)
                os.write(fd, img.layers[0].encode())
                os.close(fd)
                os.utime(dst, ns=(1, 2))  # mtime moves on every write; make it visible
                return
        real_move(src, dst)

    monkeypatch.setattr(repair_mod, "_move_file", move_while_pushing)
    report = fix(store, tmp_path)
    assert link.read_bytes() == img.layers[0].encode()
    [f] = [f for f in report.findings if f.kind is Kind.ORPHAN_LAYER_LINK]
    assert f.details["repaired"] is False
    assert "during the move" in f.details["skipped"]
    records, _ = read_journal(run_dir(tmp_path) / JOURNAL_NAME)
    assert records[-1]["result"] == "put-back"
    assert not list((run_dir(tmp_path) / "tree").rglob("link"))
    restore = restore_quarantine(run_dir(tmp_path))
    assert restore.exit_code is ExitCode.CLEAN and restore.counters["not_needed"] == 1


# --- relink layers ----------------------------------------------------------------------------


def test_relink_layers(store: SyntheticStore, tmp_path: Path) -> None:
    healthy(store)
    img = store.image("app/web", "v1")
    link = store.layer_link("app/web", img.layers[1])
    shutil.rmtree(link.parent)
    before = snapshot(store.root)

    report = fix(store, tmp_path)  # without the flag: reported, not touched
    [f] = report.defects
    assert f.kind is Kind.LAYER_LINK_MISSING
    assert f.details["action"] == "relinkable: rerun fs fix with --relink-layers"
    assert not link.exists()

    report = fix(store, tmp_path, relink_layers=True)
    assert report.exit_code is ExitCode.CLEAN
    assert report.counters["relinked_layers"] == 1
    assert link.read_bytes() == img.layers[1].encode()
    assert scan_storage(detect_layout(store.root)).report.findings == []

    restore = restore_quarantine(Path(report.extra["quarantine"]))
    assert restore.counters["links_removed"] == 1
    after = snapshot(store.root)
    after.pop(LOCK_NAME)
    assert after == before


def test_relink_layers_rechecks_the_data(
    store: SyntheticStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    healthy(store)
    img = store.image("app/web", "v1")
    os.unlink(store.layer_link("app/web", img.layers[1]))
    real_scan = scan_storage

    def scan_then_delete(layout: StorageLayout, *args: object) -> ScanResult:
        result = real_scan(layout, *args)  # type: ignore[arg-type]
        store.data_path(img.layers[1]).unlink()
        return result

    monkeypatch.setattr("verifier.storage.repair.scan_storage", scan_then_delete)
    report = fix(store, tmp_path, relink_layers=True)
    assert not store.layer_link("app/web", img.layers[1]).exists()
    [f] = report.defects
    assert "blob data is gone" in f.details["error"]


@pytest.mark.registry
@pytest.mark.skopeo
def test_real_missing_layer_link_relinked(registry: RegistryServer, tmp_path: Path) -> None:
    for i in range(6):
        push_image(registry, "lib/base", f"v{i}")
    pushed = push_image(registry, "app/web", "v1")
    layer = pushed.layers[0].digest
    layer_link_path(registry.v2, "app/web", layer).unlink()
    registry.restart()  # cold cache: the registry now refuses the blob
    assert not skopeo_copy_all(f"{registry.host}/app/web:v1", tmp_path / "pull1").ok
    scan = scan_storage(detect_layout(registry.root)).report
    assert [(f.kind, f.digest, f.details["tags"]) for f in scan.findings] == [
        (Kind.LAYER_LINK_MISSING, layer, ["v1"])
    ]
    report = real_fix(registry, tmp_path, relink_layers=True)
    assert report.exit_code is ExitCode.CLEAN
    assert skopeo_copy_all(f"{registry.host}/app/web:v1", tmp_path / "pull2").ok
