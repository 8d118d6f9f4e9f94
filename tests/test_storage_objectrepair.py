"""verifier.storage.objectrepair over an in-memory StorageBackend: quarantine, journal, restore.

`MemoryBackend` is the storage contract itself (a dict of key -> bytes), not a mock of any
client library; `ConditionalBackend` adds the optional create-if-absent put. Faults are
injected per operation: a copy or delete that fails, a blob pushed between scan and fix, a
link rewritten, a lock already held, a process killed after any number of operations.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from verifier.errors import ExitCode, SafetyRefusal, UsageError
from verifier.model.findings import Finding, Kind, Report, Severity
from verifier.storage.backend import (
    Listing,
    StorageBackend,
    StoredObject,
    SupportsWriteNew,
)
from verifier.storage.objectrepair import (
    LockHeld,
    ObjectFixOptions,
    ObjectRestoreOptions,
    OrphanRef,
    OrphanScan,
    default_quarantine,
    fix_objects,
    quarantine_key,
    read_object_journal,
    registry_root,
    restore_objects,
)
from verifier.storage.rails import RegistryCounts, decide
from verifier.storage.repair import FixRefused

V2 = "reg/docker/registry/v2"
Q = "reg-regverify-quarantine"
STARTED = datetime(2026, 11, 28, 7, 0, 0, tzinfo=UTC)
RUN = f"{Q}/2026-11-28T07-00-00Z"


class Crash(BaseException):
    """The process died: nothing after it runs (not an Exception, so nothing catches it)."""


Hook = Callable[["MemoryBackend", tuple[str, ...]], None]


class MemoryBackend:
    """A `StorageBackend` over a dict, with hooks run before/after each operation."""

    location = "mem://bucket"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.before: dict[str, list[Hook]] = {}
        self.after: dict[str, list[Hook]] = {}
        self.log: list[tuple[str, tuple[str, ...]]] = []
        #: crash at the n-th operation (0-based) and on every one after it
        self.crash_at: int | None = None

    def _op(self, op: str, *args: str) -> None:
        if self.crash_at is not None and len(self.log) >= self.crash_at:
            raise Crash(op)
        self.log.append((op, args))
        for hook in list(self.before.get(op, [])):
            hook(self, args)

    def _done(self, op: str, *args: str) -> None:
        for hook in list(self.after.get(op, [])):
            hook(self, args)

    def list_folder(self, path: str) -> Listing:
        self._op("list_folder", path)
        prefix = path + "/" if path else ""
        folders: set[str] = set()
        objects: list[StoredObject] = []
        for key, data in self.objects.items():
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            if "/" in rest:
                folders.add(rest.split("/", 1)[0])
            else:
                objects.append(StoredObject(key, len(data)))
        return Listing(sorted(folders), sorted(objects, key=lambda o: o.path))

    def walk(self, path: str) -> Iterator[StoredObject]:
        self._op("walk", path)
        prefix = path + "/" if path else ""
        for key in sorted(k for k in self.objects if k.startswith(prefix)):
            yield StoredObject(key, len(self.objects[key]))

    def read(self, path: str, limit: int) -> bytes | None:
        self._op("read", path)
        data = self.objects.get(path)
        if data is not None and len(data) > limit:
            raise ValueError(f"{path}: more than {limit} bytes")
        return data

    def stat(self, path: str) -> StoredObject | None:
        self._op("stat", path)
        data = self.objects.get(path)
        return None if data is None else StoredObject(path, len(data))

    def copy(self, src: str, dst: str) -> None:
        self._op("copy", src, dst)
        if src not in self.objects:
            raise FileNotFoundError(src)
        self.objects[dst] = self.objects[src]
        self._done("copy", src, dst)

    def write(self, path: str, data: bytes) -> None:
        self._op("write", path)
        self.objects[path] = data
        self._done("write", path)

    def delete(self, path: str) -> None:
        self._op("delete", path)
        self.objects.pop(path, None)
        self._done("delete", path)


class ConditionalBackend(MemoryBackend):
    """With the optional conditional put (S3's ``IfNoneMatch='*'``)."""

    def write_new(self, path: str, data: bytes) -> bool:
        self._op("write_new", path)
        if path in self.objects:
            return False
        self.objects[path] = data
        self._done("write_new", path)
        return True


def _typed(b: MemoryBackend) -> StorageBackend:
    return b  # mypy checks here that the test double satisfies the protocol


@pytest.fixture(params=["conditional", "check-then-write"])
def backend(request: pytest.FixtureRequest) -> MemoryBackend:
    return ConditionalBackend() if request.param == "conditional" else MemoryBackend()


# --- a small registry in the dict ------------------------------------------------------------


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_key(digest: str) -> str:
    hex_ = digest.split(":", 1)[1]
    return f"{V2}/blobs/sha256/{hex_[:2]}/{hex_}/data"


def link_key(repo: str, digest: str) -> str:
    return f"{V2}/repositories/{repo}/_layers/sha256/{digest.split(':', 1)[1]}/link"


def image(b: MemoryBackend, repo: str, layers: int = 3) -> list[str]:
    """Push an image's layers (data and links) plus a tag and revision link; its layer digests."""
    digests = []
    for i in range(layers):
        data = f"{repo} layer {i}".encode()
        d = digest_of(data)
        b.objects[blob_key(d)] = data
        b.objects[link_key(repo, d)] = d.encode()
        digests.append(d)
    manifest = json.dumps({"repo": repo, "layers": digests}).encode()
    m = digest_of(manifest)
    b.objects[blob_key(m)] = manifest
    rev = f"{V2}/repositories/{repo}/_manifests/revisions/sha256/{m.split(':', 1)[1]}/link"
    b.objects[rev] = m.encode()
    b.objects[f"{V2}/repositories/{repo}/_manifests/tags/v1/current/link"] = m.encode()
    return digests


def healthy(b: MemoryBackend, n: int = 4) -> None:
    for i in range(n):
        image(b, f"lib/img{i}")


def scan(b: MemoryBackend, registry: str = "reg", tags: bool = False) -> OrphanScan:
    """What a scan would hand over: every layer link whose blob data is absent."""
    orphans: list[OrphanRef] = []
    layer_links = links = 0
    for key in sorted(b.objects):
        if not key.startswith(f"{V2}/repositories/") or not key.endswith("/link"):
            continue
        links += 1
        if "/_layers/" not in key:
            continue
        layer_links += 1
        repo = key[len(f"{V2}/repositories/") :].split("/_layers/")[0]
        digest = "sha256:" + key.split("/")[-2]
        if blob_key(digest) not in b.objects:
            finding = None
            if tags:
                finding = Finding(
                    kind=Kind.ORPHAN_LAYER_LINK,
                    severity=Severity.ERROR,
                    message=f"layer link without blob data: {repo}@{digest}",
                    registry=registry,
                    repository=repo,
                    digest=digest,
                    details={"tags": ["v1"]},
                )
            orphans.append(OrphanRef(registry, repo, digest, finding))
    blobs = sum(1 for k in b.objects if k.startswith(f"{V2}/blobs/") and k.endswith("/data"))
    return OrphanScan(registry, tuple(orphans), layer_links, links, blobs, True)


def damaged(b: MemoryBackend, repo: str = "app/web", lose: int = 2) -> list[str]:
    """An image with `lose` layers whose data is gone: their links are the orphans."""
    digests = image(b, repo)
    for d in digests[:lose]:
        del b.objects[blob_key(d)]
    return digests[:lose]


def registry_objects(b: MemoryBackend) -> dict[str, bytes]:
    return {k: v for k, v in b.objects.items() if k.startswith("reg/")}


def fix(b: MemoryBackend, s: OrphanScan | None = None, **opts: object) -> Report:
    return fix_objects(
        b, V2, s if s is not None else scan(b), ObjectFixOptions(**opts),  # type: ignore[arg-type]
        started=STARTED,
    )  # fmt: skip


def restore(b: MemoryBackend, key: str = Q, **opts: object) -> Report:
    return restore_objects(b, key, ObjectRestoreOptions(**opts))  # type: ignore[arg-type]


# --- fix --------------------------------------------------------------------------------------


def test_the_test_doubles_are_storage_backends() -> None:
    assert _typed(MemoryBackend()).location == "mem://bucket"
    assert isinstance(ConditionalBackend(), SupportsWriteNew)
    assert not isinstance(MemoryBackend(), SupportsWriteNew)


def test_fix_quarantines_exactly_the_orphan_links(backend: MemoryBackend) -> None:
    healthy(backend)
    lost = damaged(backend)
    before = dict(backend.objects)
    report = fix(backend)
    assert report.exit_code is ExitCode.CLEAN
    assert report.mode == "object-fix"
    assert report.counters["quarantined"] == 2
    assert report.counters["unrepaired"] == 0
    gone = {k for k in before if k not in backend.objects}
    assert gone == {link_key("app/web", d) for d in lost}
    # every other object is untouched; the quarantine holds byte-identical copies
    assert all(backend.objects[k] == v for k, v in before.items() if k not in gone)
    for d in lost:
        rel = link_key("app/web", d)[len("reg/") :]
        assert backend.objects[f"{RUN}/tree/{rel}"] == d.encode()
    assert f"{Q}/.lock" not in backend.objects  # released
    for f in report.findings:
        assert f.kind is Kind.ORPHAN_LAYER_LINK and f.severity is Severity.INFO
        assert f.details["repaired"] is True and f.details["action"] == "quarantined"
        assert f.details["quarantined_to"].startswith(
            f"mem://bucket/{RUN}/tree/docker/registry/v2/"
        )
        assert f.path == "mem://bucket/" + link_key("app/web", f.digest or "")
    assert report.extra["quarantine"] == f"mem://bucket/{RUN}"
    # only the orphan links were deleted (and our own lock)
    deleted = {args[0] for op, args in backend.log if op == "delete"}
    assert deleted == gone | {f"{Q}/.lock"}
    assert any("lock taken by check-then-write" in n for n in report.notes) is (
        not isinstance(backend, SupportsWriteNew)
    )


def test_journal_is_json_lines_like_the_fs_journal(backend: MemoryBackend) -> None:
    healthy(backend)
    lost = damaged(backend)
    fix(backend)
    records, bad = read_object_journal(backend, RUN)
    assert bad == []
    header = records[0]
    assert header["type"] == "run" and header["version"] == 1
    assert header["v2"] == V2 and header["location"] == "mem://bucket" and header["root"] == "reg"
    quarantined = [r for r in records if r["type"] == "quarantine"]
    assert {r["digest"] for r in quarantined} == set(lost)
    for r in quarantined:
        assert {"seq", "at", "kind", "registry", "repository", "digest", "source", "relpath",
                "quarantined_to", "sha256", "size", "reason"} <= set(r)  # fmt: skip
        assert r["sha256"] == hashlib.sha256(r["digest"].encode()).hexdigest()
    outcomes = [r for r in records if r["type"] == "outcome"]
    assert [o["result"] for o in outcomes] == ["moved", "moved"]
    # one small object per action: written whole, never appended to
    keys = sorted(k for k in backend.objects if k.startswith(f"{RUN}/journal/"))
    assert keys == [f"{RUN}/journal/0000000{i}.jsonl" for i in range(3)]


def test_fix_then_restore_gives_back_every_byte(backend: MemoryBackend) -> None:
    healthy(backend)
    damaged(backend, "app/a", 1)
    damaged(backend, "app/b", 2)
    before = registry_objects(backend)
    assert fix(backend).counters["quarantined"] == 3
    report = restore(backend)
    assert report.mode == "object-restore"
    assert report.exit_code is ExitCode.CLEAN
    assert report.counters["links_put_back"] == 3
    assert registry_objects(backend) == before
    # the quarantined copies went; the journal (and its restore records) stay
    assert not [k for k in backend.objects if k.startswith(f"{RUN}/tree/")]
    assert f"{Q}/.lock" not in backend.objects
    assert all(f.severity is Severity.INFO and f.details["restored"] for f in report.findings)
    # idempotent: a second restore finds every action done and changes nothing
    snapshot = dict(backend.objects)
    again = restore(backend, RUN)
    assert again.counters["already_restored"] == 3
    assert again.counters["links_put_back"] == 0
    assert {k: v for k, v in backend.objects.items() if "/journal/" not in k} == {
        k: v for k, v in snapshot.items() if "/journal/" not in k
    }


def test_nothing_to_fix_touches_nothing(backend: MemoryBackend) -> None:
    healthy(backend)
    before = dict(backend.objects)
    report = fix(backend)
    assert report.exit_code is ExitCode.CLEAN
    assert backend.objects == before
    assert not any(op in ("write", "write_new", "copy", "delete") for op, _ in backend.log)


def test_scan_findings_pass_through_with_next_steps(backend: MemoryBackend) -> None:
    healthy(backend)
    damaged(backend, lose=1)
    report = fix(backend, scan(backend, tags=True))
    [f] = report.findings
    assert f.details["tags"] == ["v1"] and f.details["repaired"] is True
    assert f.message.startswith("quarantined: layer link without blob data")
    assert any("restart the registry" in s for s in f.details["next_steps"])
    assert any(n.startswith("still broken: 1 tag(s) cannot be pulled (app/web:v1)") for n in
               report.notes)  # fmt: skip


# --- rechecks right before acting -------------------------------------------------------------


def test_blob_reappearing_between_scan_and_fix_is_skipped(backend: MemoryBackend) -> None:
    healthy(backend)
    lost = damaged(backend)
    s = scan(backend)
    backend.objects[blob_key(lost[0])] = b"pushed again"
    report = fix(backend, s)
    assert report.counters["quarantined"] == 1 and report.counters["skipped"] == 1
    assert link_key("app/web", lost[0]) in backend.objects
    [skipped] = [f for f in report.findings if f.digest == lost[0]]
    assert skipped.severity is Severity.INFO
    assert skipped.details == {
        "tags": [], "repaired": False, "skipped": "blob data reappeared since the scan"
    }  # fmt: skip
    assert not [k for k in backend.objects if lost[0].split(":")[1] in k and k.startswith(Q)]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (b"sha256:" + b"0" * 64, "link content changed since the scan"),
        (None, "link is gone since the scan"),
    ],
)
def test_link_changed_or_gone_is_skipped(
    backend: MemoryBackend, change: bytes | None, why: str
) -> None:
    healthy(backend)
    lost = damaged(backend)
    s = scan(backend)
    key = link_key("app/web", lost[0])
    if change is None:
        del backend.objects[key]
    else:
        backend.objects[key] = change
    report = fix(backend, s)
    assert report.counters["skipped"] == 1 and report.counters["quarantined"] == 1
    assert backend.objects.get(key) == change
    assert [f.details.get("skipped") for f in report.findings if f.digest == lost[0]] == [why]


def test_blob_pushed_after_the_copy_stops_the_delete(backend: MemoryBackend) -> None:
    healthy(backend)
    [lost] = damaged(backend, lose=1)

    def push(b: MemoryBackend, args: tuple[str, ...]) -> None:
        b.objects[blob_key(lost)] = b"pushed"

    backend.after["copy"] = [push]
    report = fix(backend)
    assert report.counters["skipped"] == 1 and report.counters["quarantined"] == 0
    assert backend.objects[link_key("app/web", lost)] == lost.encode()
    records, _ = read_object_journal(backend, RUN)
    assert [r["result"] for r in records if r["type"] == "outcome"] == ["skipped"]


def test_blob_pushed_during_the_delete_puts_the_link_back(backend: MemoryBackend) -> None:
    healthy(backend)
    [lost] = damaged(backend, lose=1)

    def push(b: MemoryBackend, args: tuple[str, ...]) -> None:
        if args[0].endswith("/link"):
            b.objects[blob_key(lost)] = b"pushed"

    backend.after["delete"] = [push]
    report = fix(backend)
    assert report.counters["skipped"] == 1 and report.counters["quarantined"] == 0
    assert backend.objects[link_key("app/web", lost)] == lost.encode()
    [f] = report.findings
    assert f.details["skipped"] == "during the delete: blob data appeared"
    records, _ = read_object_journal(backend, RUN)
    assert [r["result"] for r in records if r["type"] == "outcome"] == ["put-back"]


# --- faults in the middle ---------------------------------------------------------------------


def _fail_once(op: str, match: str, exc: Exception) -> Hook:
    fired: list[bool] = []

    def hook(b: MemoryBackend, args: tuple[str, ...]) -> None:
        if not fired and match in args[0]:
            fired.append(True)
            raise exc

    return hook


def test_copy_that_fails_leaves_the_link_and_moves_the_rest(backend: MemoryBackend) -> None:
    healthy(backend)
    lost = damaged(backend)
    before = registry_objects(backend)
    backend.before["copy"] = [_fail_once("copy", lost[0].split(":")[1], OSError("throttled"))]
    report = fix(backend)
    assert report.exit_code is ExitCode.DEFECTS
    assert report.counters["repair_failed"] == 1 and report.counters["quarantined"] == 1
    [failed] = [f for f in report.findings if f.digest == lost[0]]
    assert failed.severity is Severity.ERROR
    assert failed.details["error"] == "copy to the quarantine failed: throttled"
    assert backend.objects[link_key("app/web", lost[0])] == lost[0].encode()
    assert restore(backend).exit_code is ExitCode.CLEAN
    assert registry_objects(backend) == before


def test_copy_with_wrong_bytes_leaves_the_link(backend: MemoryBackend) -> None:
    healthy(backend)
    [lost] = damaged(backend, lose=1)

    def corrupt(b: MemoryBackend, args: tuple[str, ...]) -> None:
        b.objects[args[1]] = b"truncated"

    backend.after["copy"] = [corrupt]
    report = fix(backend)
    assert report.counters["repair_failed"] == 1
    assert backend.objects[link_key("app/web", lost)] == lost.encode()
    assert "does not match" in report.findings[0].details["error"]


def test_delete_that_fails_leaves_the_link(backend: MemoryBackend) -> None:
    healthy(backend)
    lost = damaged(backend)
    before = registry_objects(backend)
    backend.before["delete"] = [_fail_once("delete", lost[1].split(":")[1], OSError("503"))]
    report = fix(backend)
    assert report.counters["repair_failed"] == 1 and report.counters["quarantined"] == 1
    assert backend.objects[link_key("app/web", lost[1])] == lost[1].encode()
    records, _ = read_object_journal(backend, RUN)
    assert sorted(r["result"] for r in records if r["type"] == "outcome") == ["failed", "moved"]
    back = restore(backend)
    assert (back.counters["links_put_back"], back.counters["not_needed"]) == (1, 1)
    assert registry_objects(backend) == before


def test_delete_that_raises_after_deleting_counts_as_moved(backend: MemoryBackend) -> None:
    healthy(backend)
    [lost] = damaged(backend, lose=1)
    backend.after["delete"] = [_fail_once("delete", "/_layers/", OSError("timeout"))]
    report = fix(backend)
    assert report.counters["quarantined"] == 1
    assert link_key("app/web", lost) not in backend.objects


@pytest.mark.parametrize("cls", [ConditionalBackend, MemoryBackend])
def test_killed_after_any_operation_restore_puts_everything_back(
    cls: type[MemoryBackend],
) -> None:
    """Die at every operation in turn: a restore (after a human removes the dead run's lock)
    gives back every object byte for byte."""
    probe = cls()
    healthy(probe)
    damaged(probe, "app/a", 2)
    damaged(probe, "app/b", 1)
    fix(probe, scan(probe))
    total = len(probe.log)
    for n in range(total):
        b = cls()
        healthy(b)
        damaged(b, "app/a", 2)
        damaged(b, "app/b", 1)
        before = registry_objects(b)
        s = scan(b)
        b.crash_at = n
        with pytest.raises(Crash):
            fix(b, s)
        b.crash_at = None
        b.log.clear()
        if not any(k.startswith(f"{RUN}/journal/") for k in b.objects):
            # died before the run's journal began: nothing was copied or deleted
            assert registry_objects(b) == before, n
            continue
        with pytest.raises(LockHeld):
            restore(b)
        del b.objects[f"{Q}/.lock"]  # the operator, once sure the fix is dead
        report = restore(b)
        assert report.counters["conflict"] == 0, (n, report.findings)
        assert registry_objects(b) == before, n


# --- the lock ---------------------------------------------------------------------------------


def test_second_fix_while_the_lock_exists_is_refused(backend: MemoryBackend) -> None:
    healthy(backend)
    damaged(backend)
    lock = json.dumps({"pid": 4242, "host": "other", "purpose": "fix",
                       "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")})  # fmt: skip
    backend.objects[f"{Q}/.lock"] = lock.encode()
    before = dict(backend.objects)
    with pytest.raises(LockHeld, match="another regverify fix/restore holds") as info:
        fix(backend)
    assert info.value.exit_code is ExitCode.INCOMPLETE and not info.value.stale
    assert "pid 4242 on other" in str(info.value)
    assert backend.objects == before


def test_stale_lock_is_reported_not_broken(backend: MemoryBackend) -> None:
    healthy(backend)
    damaged(backend)
    old = (datetime.now(UTC) - timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    backend.objects[f"{Q}/.lock"] = json.dumps({"pid": 1, "since": old}).encode()
    before = dict(backend.objects)
    with pytest.raises(LockHeld, match=r"stale lock .*30\.0 hours old") as info:
        fix(backend, stale_lock_hours=6)
    assert info.value.stale and isinstance(info.value, SafetyRefusal)
    assert backend.objects == before  # still there: a human decides


def test_unreadable_lock_still_refuses(backend: MemoryBackend) -> None:
    healthy(backend)
    damaged(backend)
    backend.objects[f"{Q}/.lock"] = b"\x00not json"
    with pytest.raises(LockHeld, match="holder unknown"):
        fix(backend)


def test_check_then_write_lock_loses_to_a_racing_writer() -> None:
    b = MemoryBackend()
    healthy(b)
    lost = damaged(b)

    def racer(m: MemoryBackend, args: tuple[str, ...]) -> None:
        if args[0].endswith("/.lock"):
            m.objects[args[0]] = b'{"pid": 7, "since": "x"}'

    b.after["write"] = [racer]
    with pytest.raises(LockHeld):
        fix(b)
    assert all(link_key("app/web", d) in b.objects for d in lost)
    assert not any(op in ("copy", "delete") for op, _ in b.log)


# --- safety rails: the same decision as fs fix ------------------------------------------------


def test_rail_orphan_share_refuses_with_nothing_touched(backend: MemoryBackend) -> None:
    image(backend, "lib/one")
    damaged(backend, lose=3)  # 3 of 6 layer links: 50%
    before = dict(backend.objects)
    with pytest.raises(FixRefused, match=r"3 of 6 layer links \(50%\) look orphaned") as info:
        fix(backend)
    assert backend.objects == before and backend.log == []
    assert info.value.exit_code is ExitCode.INCOMPLETE
    assert any(n.startswith("REFUSED:") for n in info.value.report.notes)
    assert len(info.value.report.defects) == 3  # what was found is still reported
    report = fix(backend, force=True)
    assert report.counters["quarantined"] == 3
    [warning] = [n for n in report.notes if n.startswith("WARNING")]
    assert "--force overrode a safety rail" in warning
    assert fix(MemoryBackend(), OrphanScan("reg", (), 0, 0, 0, True)).exit_code == 0


def test_rail_empty_blob_store_is_not_overridable(backend: MemoryBackend) -> None:
    healthy(backend)
    for k in [k for k in backend.objects if "/blobs/" in k]:
        del backend.objects[k]
    before = dict(backend.objects)
    for force in (False, True):
        with pytest.raises(FixRefused, match="blob store is empty while 20 links exist"):
            fix(backend, force=force)
    assert backend.objects == before


def test_rail_incomplete_blob_listing_is_not_overridable(backend: MemoryBackend) -> None:
    healthy(backend)
    damaged(backend, lose=1)
    s = scan(backend)
    gapped = OrphanScan(s.registry, s.orphans, s.layer_links, s.links, s.blobs, False,
                        ("reg/docker/registry/v2/blobs/sha256/ab/ (AccessDenied)",))  # fmt: skip
    with pytest.raises(FixRefused, match=r"cannot read reg/.*/ab/ \(AccessDenied\)"):
        fix(backend, gapped, force=True)
    unnamed = OrphanScan(s.registry, s.orphans, s.layer_links, s.links, s.blobs, False)
    with pytest.raises(FixRefused, match="its blob listing is incomplete"):
        fix(backend, unnamed, force=True)
    assert link_key("app/web", s.orphans[0].digest) in backend.objects


def test_rails_words_are_the_fs_rails_words() -> None:
    b = MemoryBackend()
    image(b, "lib/one", 2)
    damaged(b, lose=2)  # 2 of 5 layer links, 9 links in all
    expected = decide(
        [RegistryCounts("reg", "ok", 9, 5, 2)], force=False, max_orphan_share=0.25
    ).refusals
    with pytest.raises(FixRefused) as info:
        fix(b)
    assert tuple(info.value.report.extra["refused"]) == expected
    assert expected[0].startswith("registry reg: 2 of 5 layer links (40%) look orphaned")


@pytest.mark.parametrize(
    "bad",
    [
        OrphanScan("reg", (OrphanRef("reg", "app", "sha256:xyz"),), 3, 3, 1, True),
        OrphanScan("reg", (OrphanRef("reg", "../x", "sha256:" + "a" * 64),), 3, 3, 1, True),
        OrphanScan("reg", (OrphanRef("other", "app", "sha256:" + "a" * 64),), 3, 3, 1, True),
        OrphanScan("reg", (OrphanRef("reg", "app", "sha256:" + "a" * 64),) * 2, 3, 3, 1, True),
        OrphanScan("reg", (OrphanRef("reg", "app", "sha256:" + "a" * 64),), 0, 0, 1, True),
        OrphanScan("reg", (), 3, 3, 1, True, ("a gap",)),
    ],
)
def test_bad_input_is_a_usage_error_before_anything(bad: OrphanScan) -> None:
    b = MemoryBackend()
    with pytest.raises(UsageError):
        fix(b, bad)
    assert b.log == []


def test_quarantine_keys() -> None:
    assert registry_root(V2) == "reg" and registry_root("/docker/registry/v2/") == ""
    assert default_quarantine(V2) == Q
    assert default_quarantine("a/b/docker/registry/v2") == "a/b-regverify-quarantine"
    assert default_quarantine("docker/registry/v2") == "regverify-quarantine"
    assert quarantine_key(V2, "elsewhere/q") == "elsewhere/q"
    for inside in ("reg", "reg/q", "", "docker/../x"):
        with pytest.raises(UsageError):
            quarantine_key(V2, inside)
    with pytest.raises(UsageError):
        quarantine_key("docker/registry/v2", "docker/q")
    assert quarantine_key("docker/registry/v2", "dockerq") == "dockerq"
    for v2 in ("reg/docker/registry", "reg/../docker/registry/v2", "reg//docker/registry/v2"):
        with pytest.raises(UsageError):
            registry_root(v2)


def test_given_quarantine_and_a_second_run_in_the_same_second(backend: MemoryBackend) -> None:
    healthy(backend)
    damaged(backend, "app/a", 1)
    before = registry_objects(backend)
    first = fix(backend, quarantine="ops/q")
    damaged(backend, "app/b", 1)
    before_b = registry_objects(backend)
    second = fix(backend, quarantine="ops/q")
    assert first.extra["quarantine"] == "mem://bucket/ops/q/2026-11-28T07-00-00Z"
    assert second.extra["quarantine"] == "mem://bucket/ops/q/2026-11-28T07-00-00Z-1"
    one = restore(backend, "ops/q", run="2026-11-28T07-00-00Z-1")
    assert one.counters["links_put_back"] == 1
    still_out = set(before) - set(registry_objects(backend))
    assert len(still_out) == 1 and "/app/a/_layers/" in still_out.pop()
    both = restore(backend, "ops/q")
    assert both.counters["runs"] == 2 and both.counters["links_put_back"] == 1
    assert both.counters["already_restored"] == 1
    assert registry_objects(backend) == {**before_b, **before}


# --- restore conflicts ------------------------------------------------------------------------


def fixed(backend: MemoryBackend) -> tuple[dict[str, bytes], list[str]]:
    healthy(backend)
    lost = damaged(backend)
    before = registry_objects(backend)
    assert fix(backend).counters["quarantined"] == 2
    return before, lost


def test_restore_never_overwrites_a_link_that_reappeared(backend: MemoryBackend) -> None:
    before, lost = fixed(backend)
    key = link_key("app/web", lost[0])
    backend.objects[key] = b"sha256:" + b"f" * 64
    report = restore(backend)
    assert report.exit_code is ExitCode.DEFECTS
    [conflict] = [f for f in report.findings if f.kind is Kind.RESTORE_CONFLICT]
    assert conflict.severity is Severity.ERROR and "exists with other content" in conflict.message
    assert backend.objects[key] == b"sha256:" + b"f" * 64  # left alone
    rel = key[len("reg/") :]
    assert backend.objects[f"{RUN}/tree/{rel}"] == lost[0].encode()  # copy kept
    assert report.counters["links_put_back"] == 1 and report.counters["conflict"] == 1


def test_restore_of_a_link_the_registry_rewrote_identically_is_not_needed(
    backend: MemoryBackend,
) -> None:
    before, lost = fixed(backend)
    backend.objects[link_key("app/web", lost[0])] = lost[0].encode()
    report = restore(backend)
    assert report.exit_code is ExitCode.CLEAN
    assert report.counters["not_needed"] == 1 and report.counters["links_put_back"] == 1
    assert registry_objects(backend) == before


def test_restore_when_the_link_appears_meanwhile(backend: MemoryBackend) -> None:
    before, lost = fixed(backend)
    key = link_key("app/web", lost[1])

    def registry_writes(b: MemoryBackend, args: tuple[str, ...]) -> None:
        if args[0] == key or (len(args) > 1 and args[1] == key):
            b.objects[key] = b"sha256:" + b"e" * 64

    op = "write_new" if isinstance(backend, SupportsWriteNew) else "stat"
    backend.before[op] = [registry_writes]
    report = restore(backend)
    [conflict] = [f for f in report.findings if f.kind is Kind.RESTORE_CONFLICT]
    assert "appeared meanwhile" in conflict.message or "other content" in conflict.message
    assert backend.objects[key] == b"sha256:" + b"e" * 64


def test_restore_with_the_quarantined_copy_missing_or_changed(backend: MemoryBackend) -> None:
    before, lost = fixed(backend)
    rels = [link_key("app/web", d)[len("reg/") :] for d in lost]
    del backend.objects[f"{RUN}/tree/{rels[0]}"]
    backend.objects[f"{RUN}/tree/{rels[1]}"] = b"sha256:" + b"d" * 64
    report = restore(backend)
    by_digest = {f.digest: f.message for f in report.findings}
    assert len(by_digest) == 2 and report.counters["conflict"] == 2
    assert by_digest[lost[0]].endswith("is missing")
    assert by_digest[lost[1]].endswith("changed since it was journaled")
    assert all(link_key("app/web", d) not in backend.objects for d in lost)


def test_restore_refuses_unsafe_journal_records(backend: MemoryBackend) -> None:
    fixed(backend)
    evil = {"type": "quarantine", "seq": 99, "digest": "sha256:" + "a" * 64,
            "relpath": "docker/registry/v2/repositories/../../../etc/_layers/sha256/"
            + "a" * 64 + "/link", "sha256": "x"}  # fmt: skip
    other = {"type": "quarantine", "seq": 98, "digest": "sha256:" + "a" * 64,
             "relpath": "docker/registry/v2/blobs/sha256/aa/" + "a" * 64 + "/data"}  # fmt: skip
    backend.objects[f"{RUN}/journal/00000099.jsonl"] = (json.dumps(evil) + "\n").encode()
    backend.objects[f"{RUN}/journal/00000098.jsonl"] = (json.dumps(other) + "\nnot json\n").encode()
    writes_before = {k for k in backend.objects if not k.startswith(f"{RUN}/journal/")}
    report = restore(backend)
    unsafe = [f for f in report.findings if "unsafe journal record" in f.message]
    assert len(unsafe) == 2
    assert any("not JSON" in f.message for f in report.findings)
    assert report.counters["links_put_back"] == 2
    added = {k for k in backend.objects if not k.startswith(f"{RUN}/journal/")} - writes_before
    assert all(k.startswith("reg/docker/registry/v2/repositories/app/web/_layers/") for k in added)


def test_restore_refuses_a_journal_of_another_storage(backend: MemoryBackend) -> None:
    fixed(backend)
    backend.location = "mem://other-bucket"
    with pytest.raises(UsageError, match="not this storage"):
        restore(backend)


def test_restore_of_nothing_is_a_usage_error(backend: MemoryBackend) -> None:
    with pytest.raises(UsageError):
        restore(backend, "nowhere")
    fixed(backend)
    with pytest.raises(UsageError):
        restore(backend, Q, run="2000-01-01T00-00-00Z")
    with pytest.raises(UsageError):
        restore(backend, RUN, run="another")


# --- dry runs ---------------------------------------------------------------------------------


def test_dry_run_fix_changes_nothing(backend: MemoryBackend) -> None:
    healthy(backend)
    lost = damaged(backend)
    s = scan(backend)
    backend.objects[blob_key(lost[1])] = b"back"
    before = dict(backend.objects)
    report = fix(backend, s, dry_run=True)
    assert backend.objects == before
    assert not any(op in ("write", "write_new", "copy", "delete") for op, _ in backend.log)
    assert report.counters["would_quarantine"] == 1 and report.counters["skipped"] == 1
    assert report.exit_code is ExitCode.DEFECTS  # nothing was repaired
    [planned] = [f for f in report.findings if f.digest == lost[0]]
    assert planned.details["action"] == "would quarantine" and planned.details["dry_run"]
    assert report.notes[-1].startswith("dry run, nothing was changed: 1 orphan layer link(s)")


def test_dry_run_restore_changes_nothing(backend: MemoryBackend) -> None:
    fixed(backend)
    backend.objects[f"{Q}/.lock"] = b"{}"
    before = dict(backend.objects)
    backend.log.clear()
    report = restore(backend, dry_run=True)
    assert backend.objects == before
    assert not any(op in ("write", "write_new", "copy", "delete") for op, _ in backend.log)
    assert report.counters["would_restore"] == 2
    assert any("would be refused now" in n for n in report.notes)


@pytest.mark.parametrize("cls", [ConditionalBackend, MemoryBackend])
def test_restore_killed_after_any_operation_then_rerun_gives_everything_back(
    cls: type[MemoryBackend],
) -> None:
    def fixed_store() -> tuple[MemoryBackend, dict[str, bytes]]:
        b = cls()
        healthy(b)
        damaged(b, "app/a", 2)
        damaged(b, "app/b", 1)
        before = registry_objects(b)
        assert fix(b).counters["quarantined"] == 3
        b.log.clear()
        return b, before

    probe, _ = fixed_store()
    restore(probe)
    for n in range(len(probe.log)):
        b, before = fixed_store()
        b.crash_at = n
        with pytest.raises(Crash):
            restore(b)
        b.crash_at = None
        b.objects.pop(f"{Q}/.lock", None)  # the operator, once sure the restore is dead
        report = restore(b)
        assert report.counters["conflict"] == 0, (n, report.findings)
        assert registry_objects(b) == before, n
