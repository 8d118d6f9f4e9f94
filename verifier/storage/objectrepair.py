"""Quarantine orphan `_layers` link objects over any `StorageBackend`, and put them back.

The object-store counterpart of `fs fix`/`fs restore` (`verifier.storage.repair`): the same
safety rails (`verifier.storage.rails`), the same findings, counters and journal records, over
keys relative to the backend's root. Keys a run uses, ``Q`` being the quarantine prefix
(default ``<rootdirectory>-regverify-quarantine``, beside the registry's root, never inside):

    Q/.lock                                  held while a fix or restore runs
    Q/<run>/journal/00000000.jsonl           the run header
    Q/<run>/journal/<seq>.jsonl              one orphan: its `quarantine` record, then `outcome`
    Q/<run>/journal/<seq>.restore.jsonl      what the last restore did with it
    Q/<run>/tree/<key below the root>        the quarantined link

The journal is one small object per action, not one object rewritten: an object store cannot
append, and rewriting a whole journal after every move costs O(n²) bytes on a large repair, while
a PUT of a small object is atomic, so a crash leaves every earlier record whole. Read in key
order the objects are the JSON lines of an `fs fix` journal (`read_object_journal`).

Per orphan, fix re-checks (blob data absent, link holding exactly ``sha256:<hex>``), copies the
link into the quarantine, verifies the copy's bytes, journals, re-checks again and only then
deletes the link; a blob that appears during the delete gets its link put back. The link object
is the only thing in the registry's storage ever deleted; restore deletes only the quarantined
copy it has just put back and verified. Both take ``Q/.lock``, created with a conditional put
where the backend offers one (`SupportsWriteNew`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from verifier import __version__
from verifier.errors import SafetyRefusal, UsageError
from verifier.model.findings import Finding, Kind, Report, Severity
from verifier.storage.backend import StorageBackend, SupportsWriteNew
from verifier.storage.defaults import DEFAULT_MAX_ORPHAN_SHARE
from verifier.storage.images import rebuild_steps
from verifier.storage.layout import (
    V2_PARTS,
    Digest,
    blob_data_path,
    digest_hex,
    layer_link_path,
    link_content,
    parse_digest,
)
from verifier.storage.outcomes import (
    conflict,
    journal_records,
    not_repaired,
    repaired,
    restored,
    run_sort_key,
)
from verifier.storage.rails import RegistryCounts, decide
from verifier.storage.repair import FixRefused

LOCK_NAME = ".lock"
JOURNAL_DIR = "journal"
TREE_DIR = "tree"
HEADER_NAME = "00000000.jsonl"
JOURNAL_VERSION = 1
QUARANTINE_SUFFIX = "-regverify-quarantine"
#: The default quarantine when the registry's root is the bucket's root (no prefix).
BUCKET_ROOT_QUARANTINE = "regverify-quarantine"
#: A lock older than this is reported as stale (and still refuses: a human decides).
DEFAULT_STALE_LOCK_HOURS = 6.0
#: A link object holds 71 bytes; anything near this limit is not a link.
LINK_READ_LIMIT = 4096
JOURNAL_READ_LIMIT = 1 << 20
V2_SUFFIX = "/".join(V2_PARTS)
_LAYER_LINK_REL = re.compile(
    re.escape(V2_SUFFIX) + r"/repositories/(?P<repo>.+)/_layers/sha256/(?P<hex>[0-9a-f]{64})/link"
)


# --- inputs and options ----------------------------------------------------------------------


@dataclass(frozen=True)
class OrphanRef:
    """One orphan layer link a scan found; `finding` (the scan's, if any) is what gets reported."""

    registry: str
    repository: str
    digest: str
    finding: Finding | None = None


@dataclass(frozen=True)
class OrphanScan:
    """What a scan of one registry root found, as much as the fix and its rails need."""

    #: the registry's label in findings and rail messages
    registry: str
    orphans: Sequence[OrphanRef]
    #: layer links read, revision links and tags included in `links`
    layer_links: int
    links: int
    #: blobs whose data was listed (0 while links exist: an empty or wrong prefix)
    blobs: int
    blob_listing_complete: bool
    #: why the blob listing is incomplete, one line per gap (named in the refusal)
    blob_gaps: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObjectFixOptions:
    """How `fix_objects` repairs; `quarantine` is a key prefix that receives one folder per run."""

    quarantine: str | None = None
    force: bool = False
    max_orphan_share: float = DEFAULT_MAX_ORPHAN_SHARE
    dry_run: bool = False
    stale_lock_hours: float = DEFAULT_STALE_LOCK_HOURS


@dataclass(frozen=True)
class ObjectRestoreOptions:
    """How `restore_objects` undoes runs; `run` picks one run by name in a quarantine prefix."""

    run: str | None = None
    dry_run: bool = False
    stale_lock_hours: float = DEFAULT_STALE_LOCK_HOURS


class LockHeld(SafetyRefusal):
    """The quarantine's lock object exists: another fix or restore runs, or one died (`stale`)."""

    def __init__(self, message: str, key: str, holder: dict[str, Any], stale: bool) -> None:
        super().__init__(message)
        self.key = key
        self.holder = holder
        self.stale = stale


# --- keys ------------------------------------------------------------------------------------


def _check_key(key: str, what: str) -> str:
    """`key` without surrounding slashes; a UsageError for empty, ``.`` or ``..`` components."""
    key = key.strip("/")
    if key and any(p in ("", ".", "..") for p in key.split("/")):
        raise UsageError(f"{what} {key!r} is not a plain key prefix (empty, '.' or '..' parts)")
    return key


def normalize_v2(v2: str) -> str:
    """The v2 key (``<prefix>/docker/registry/v2``, relative to the backend root), checked."""
    key = _check_key(v2, "v2 path")
    if key != V2_SUFFIX and not key.endswith("/" + V2_SUFFIX):
        raise UsageError(f"v2 path {v2!r} does not end with {V2_SUFFIX}")
    return key


def registry_root(v2: str) -> str:
    """The registry's rootdirectory key: the v2 key without ``docker/registry/v2`` ("" at top)."""
    return normalize_v2(v2)[: -len(V2_SUFFIX)].rstrip("/")


def _join(*parts: str) -> str:
    return "/".join(p for p in (q.strip("/") for q in parts) if p)


def _inside(key: str, prefix: str) -> bool:
    """True when `key` is `prefix` or below it, on whole components ("" holds everything)."""
    return not prefix or key == prefix or key.startswith(prefix + "/")


def default_quarantine(v2: str) -> str:
    """``<rootdirectory>-regverify-quarantine``: beside the registry's root, never inside it."""
    root = registry_root(v2)
    return root + QUARANTINE_SUFFIX if root else BUCKET_ROOT_QUARANTINE


def quarantine_key(v2: str, given: str | None) -> str:
    """The quarantine prefix to use; a UsageError if it lies inside the storage the registry
    uses (with no prefix: ``docker/``) or holds the registry's root."""
    root = registry_root(v2)
    q = default_quarantine(v2) if given is None else _check_key(given, "quarantine")
    owned = root or V2_PARTS[0]
    if not q or _inside(q, owned) or _inside(root, q):
        raise UsageError(
            f"quarantine {q!r} overlaps the registry's storage {owned!r}; choose a prefix beside it"
        )
    return q


def _url(backend: StorageBackend, key: str) -> str:
    """How a key is named in findings: the backend's location and the key."""
    return f"{backend.location.rstrip('/')}/{key}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


# --- lock ------------------------------------------------------------------------------------


class ObjectLock:
    """``Q/.lock``: refuses a second fix/restore on the same quarantine; removed when done.

    Created with `SupportsWriteNew.write_new` (atomic) where the backend has it, else by a
    check-then-write read back for our token (`conditional` False: two runs starting in the
    same instant could both pass). An existing lock always refuses; one older than
    `stale_hours` is reported as stale for a human to remove, never broken here.
    """

    def __init__(
        self, backend: StorageBackend, key: str, *, purpose: str, stale_hours: float
    ) -> None:
        self.backend = backend
        self.key = key
        self.purpose = purpose
        self.stale_hours = stale_hours
        self.token = uuid.uuid4().hex
        self.conditional = isinstance(backend, SupportsWriteNew)
        #: set when the lock could not be removed as ours at the end (for the report's notes)
        self.release_note: str | None = None
        self._body = b""

    def __enter__(self) -> ObjectLock:
        holder = {
            "tool": f"regverify {__version__}",
            "purpose": self.purpose,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": _now_iso(),
            "token": self.token,
        }
        self._body = (_dumps(holder) + "\n").encode()
        if isinstance(self.backend, SupportsWriteNew):
            created = self.backend.write_new(self.key, self._body)
        elif self.backend.stat(self.key) is None:
            self.backend.write(self.key, self._body)
            created = self.backend.read(self.key, LINK_READ_LIMIT) == self._body
        else:
            created = False
        if not created:
            raise self._held()
        return self

    def _held(self) -> LockHeld:
        where = _url(self.backend, self.key)
        try:
            raw = self.backend.read(self.key, LINK_READ_LIMIT) or b""
            holder = json.loads(raw)
            if not isinstance(holder, dict):
                holder = {}
        except Exception:  # an unreadable lock still refuses, holder unknown
            holder = {}
        since = holder.get("since")
        age_hours: float | None = None
        if isinstance(since, str):
            try:
                at = datetime.strptime(since, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                age_hours = (datetime.now(UTC) - at).total_seconds() / 3600
            except ValueError:
                pass
        who = (
            f"{holder.get('purpose', '?')} by pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')} since {since}"
            if holder
            else "holder unknown"
        )
        if age_hours is not None and age_hours > self.stale_hours:
            return LockHeld(
                f"stale lock {where} ({who}, {age_hours:.1f} hours old, more than "
                f"{self.stale_hours:g}): a fix or restore that died? nothing was changed; if "
                f"none is running, delete {where} and rerun",
                self.key,
                holder,
                True,
            )
        return LockHeld(
            f"another regverify fix/restore holds {where} ({who}); nothing was changed",
            self.key,
            holder,
            False,
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Only our own lock is removed: one replaced meanwhile belongs to someone else.
        try:
            if self.backend.read(self.key, LINK_READ_LIMIT) == self._body:
                self.backend.delete(self.key)
                return
            self.release_note = f"lock {_url(self.backend, self.key)} was no longer ours; left"
        except Exception as err:  # the work is done; say the lock stayed
            self.release_note = (
                f"lock {_url(self.backend, self.key)} could not be removed ({err}); delete it "
                "once no fix or restore runs"
            )


def lock_note(lock: ObjectLock) -> str | None:
    """The note a report carries about how its lock was taken or left behind."""
    notes = []
    if not lock.conditional:
        notes.append(
            "lock taken by check-then-write (this storage offers no conditional put): two runs "
            "started at the same instant could both proceed"
        )
    if lock.release_note:
        notes.append(lock.release_note)
    return "; ".join(notes) or None


# --- journal ---------------------------------------------------------------------------------


def _seq_name(seq: int) -> str:
    return f"{seq:08d}"


@dataclass
class _Run:
    """One fix run's folder and journal objects, created on first use."""

    backend: StorageBackend
    quarantine: str
    v2: str
    started: datetime
    key: str | None = None
    seq: int = 0
    journal_failures: int = 0

    def open(self) -> str:
        """The run folder's key; creates it (its header) the first time."""
        if self.key is not None:
            return self.key
        stamp = self.started.strftime("%Y-%m-%dT%H-%M-%SZ")
        for n in range(1000):
            candidate = _join(self.quarantine, stamp if n == 0 else f"{stamp}-{n}")
            listing = self.backend.list_folder(candidate)
            if listing.folders or listing.objects:
                continue
            self.key = candidate
            break
        else:
            raise SafetyRefusal(f"cannot find a free run folder under {self.quarantine}")
        header = {
            "type": "run",
            "version": JOURNAL_VERSION,
            "tool": f"regverify {__version__}",
            "location": self.backend.location,
            "v2": self.v2,
            "root": registry_root(self.v2),
            "quarantine": self.quarantine,
            "run": self.key.rsplit("/", 1)[-1],
            "pid": os.getpid(),
            "at": _now_iso(),
        }
        self.backend.write(_join(self.key, JOURNAL_DIR, HEADER_NAME), _lines([header]))
        return self.key

    def next_seq(self) -> int:
        """A new sequence number for an action."""
        self.seq += 1
        return self.seq

    def write(self, seq: int, records: list[dict[str, Any]]) -> None:
        """(Re)write the journal object of action `seq` with all its records so far."""
        assert self.key is not None
        self.backend.write(_join(self.key, JOURNAL_DIR, _seq_name(seq) + ".jsonl"), _lines(records))


def _lines(records: list[dict[str, Any]]) -> bytes:
    return "".join(_dumps(r) + "\n" for r in records).encode()


def read_object_journal(
    backend: StorageBackend, run: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """All records of a run's journal objects in key order, plus a message per unusable line."""
    records: list[dict[str, Any]] = []
    bad: list[str] = []
    prefix = _join(_check_key(run, "run"), JOURNAL_DIR)
    for obj in backend.walk(prefix):
        try:
            data = backend.read(obj.path, JOURNAL_READ_LIMIT)
        except Exception as exc:  # one unreadable record must not hide the rest
            bad.append(f"{obj.path}: cannot read ({exc})")
            continue
        if data is None:
            bad.append(f"{obj.path}: vanished while being read")
            continue
        lines, unusable = journal_records(data, obj.path)
        records.extend(lines)
        bad.extend(unusable)
    return records, bad


# --- fix -------------------------------------------------------------------------------------






@dataclass(frozen=True)
class _Target:
    """One orphan, validated: its keys and the finding that reports it."""

    ref: OrphanRef
    digest: Digest
    link: str
    blob: str
    relpath: str
    finding: Finding


def _targets(backend: StorageBackend, v2: str, scan: OrphanScan) -> list[_Target]:
    """Validate the scan's orphans into keys; bad input (exit 2) before anything is touched."""
    if scan.blob_listing_complete and scan.blob_gaps:
        raise UsageError("OrphanScan: blob_gaps given for a complete blob listing")
    if min(scan.layer_links, scan.links, scan.blobs) < 0 or scan.layer_links > scan.links:
        raise UsageError("OrphanScan: counts must be >= 0 and layer_links <= links")
    if len(scan.orphans) > scan.layer_links:
        raise UsageError(
            f"OrphanScan: {len(scan.orphans)} orphans but only {scan.layer_links} layer links"
        )
    root = registry_root(v2)
    seen: set[str] = set()
    out: list[_Target] = []
    for o in scan.orphans:
        if o.registry != scan.registry:
            raise UsageError(f"orphan of registry {o.registry!r} in a scan of {scan.registry!r}")
        digest = parse_digest(o.digest)
        if digest is None:
            raise UsageError(f"orphan digest {o.digest[:80]!r} is not sha256:<64 hex>")
        try:
            link = layer_link_path(Path(v2), o.repository, digest).as_posix()
        except ValueError as exc:
            raise UsageError(f"orphan {o.repository!r}@{digest}: {exc}") from exc
        if link in seen:
            raise UsageError(f"orphan {o.repository}@{digest} is listed twice")
        seen.add(link)
        finding = o.finding or Finding(
            kind=Kind.ORPHAN_LAYER_LINK,
            severity=Severity.ERROR,
            message=f"layer link without blob data: {o.repository}@{digest} (served as 200 "
            "with no bytes while the registry's cache is warm, then 404; a re-push skips it)",
            registry=o.registry,
            repository=o.repository,
            digest=digest,
            path=_url(backend, link),
            details={"tags": []},
        )
        blob = blob_data_path(Path(v2), digest).as_posix()
        out.append(_Target(o, digest, link, blob, link[len(root) :].lstrip("/"), finding))
    return out


def _recheck(backend: StorageBackend, t: _Target) -> tuple[str | None, bytes]:
    """Right before acting: (None, the link's bytes) if still an orphan, else (why not, b"")."""
    try:
        if backend.stat(t.blob) is not None:
            return "blob data reappeared since the scan", b""
    except Exception as exc:  # any error but "absent" means it might exist
        return f"blob data cannot be examined ({exc}): it might exist", b""
    try:
        content = backend.read(t.link, LINK_READ_LIMIT)
    except Exception as exc:  # a link we cannot read is left alone
        return f"link no longer readable ({exc})", b""
    if content is None:
        return "link is gone since the scan", b""
    if content != link_content(t.digest):
        return "link content changed since the scan", b""
    return None, content


def fix_objects(
    backend: StorageBackend,
    v2: str,
    orphans: OrphanScan,
    options: ObjectFixOptions | None = None,
    *,
    started: datetime | None = None,
) -> Report:
    """Check the rails, then quarantine each orphan link object (re-checked right before).

    `v2` is ``<prefix>/docker/registry/v2`` relative to the backend's root. Returns a report
    whose repaired findings are ``info`` with ``details["repaired"] = True``; what still needs
    a human stays an ``error`` (exit 1). Raises `FixRefused` when a rail says no and `LockHeld`
    when another run holds the quarantine (both exit 3, nothing touched).
    """
    options = options or ObjectFixOptions()
    t0 = time.perf_counter()
    v2 = normalize_v2(v2)
    q = quarantine_key(v2, options.quarantine)
    targets = _targets(backend, v2, orphans)
    report = Report(mode="object-fix", target=_url(backend, v2), started_at=time.time())
    report.extra["location"] = backend.location
    report.extra["v2"] = v2
    report.findings = [t.finding for t in targets]
    c = report.counters
    c["registries"] = 1
    c["layer_links"] = orphans.layer_links
    c["links"] = orphans.links
    c["blobs"] = orphans.blobs
    gaps = orphans.blob_gaps or (() if orphans.blob_listing_complete else ("the blob listing",))
    counts = RegistryCounts(
        label=orphans.registry,
        blob_store="empty" if orphans.blobs == 0 else "ok",
        links=orphans.links,
        layer_links=orphans.layer_links,
        orphan_layer_links=len(targets),
        blob_gaps=gaps,
    )
    decision = decide([counts], force=options.force, max_orphan_share=options.max_orphan_share)
    if decision.refusals:
        report.notes.extend(f"REFUSED: {r}" for r in decision.refusals)
        report.extra["refused"] = list(decision.refusals)
        report.duration_seconds = time.perf_counter() - t0
        raise FixRefused(
            "fix refused, nothing was changed: " + "; ".join(decision.refusals), report
        )
    report.notes.extend(
        f"WARNING: --force overrode a safety rail: {r}" for r in decision.overridden
    )
    run = _Run(backend, q, v2, started or datetime.now(UTC))
    final: list[Finding] = []
    if options.dry_run:
        _dry_run_notes(backend, q, report)
        final = [_plan_one(backend, q, t, report) for t in targets]
    elif targets:
        lock = ObjectLock(
            backend, _join(q, LOCK_NAME), purpose="fix", stale_hours=options.stale_lock_hours
        )
        with lock:
            final = [_quarantine_one(run, t, report) for t in targets]
        note = lock_note(lock)
        if note:
            report.notes.append(note)
    report.findings = final
    if run.journal_failures:
        report.notes.append(
            f"{run.journal_failures} outcome record(s) could not be written; their quarantine "
            "records are in the journal, which is all a restore needs"
        )
    _next_steps(report)
    if run.key is not None:
        report.extra["quarantine"] = _url(backend, run.key)
        report.extra["journal"] = _url(backend, _join(run.key, JOURNAL_DIR))
        report.notes.append(
            f"journal: {_url(backend, _join(run.key, JOURNAL_DIR))}/; undo with a restore of "
            f"{_url(backend, run.key)}"
        )
    c["unrepaired"] = len(report.defects)
    if options.dry_run:
        report.notes.append(
            f"dry run, nothing was changed: {c['would_quarantine']} orphan layer link(s) would "
            f"be quarantined to {_url(backend, q)}/<run>/, {c['skipped']} skipped"
        )
    else:
        report.notes.append(
            f"repairs: {c['quarantined']} orphan layer link(s) quarantined, "
            f"{c['repair_failed']} failed, {c['skipped']} skipped; "
            f"{c['unrepaired']} finding(s) still need a human"
        )
    report.duration_seconds = time.perf_counter() - t0
    return report


def _dry_run_notes(backend: StorageBackend, q: str, report: Report) -> None:
    try:
        locked = backend.stat(_join(q, LOCK_NAME)) is not None
    except Exception:  # a dry run reports, it does not fail on this
        locked = False
    if locked:
        report.notes.append(
            f"lock {_url(backend, _join(q, LOCK_NAME))} exists: a real fix or restore would "
            "be refused now"
        )


def _plan_one(backend: StorageBackend, q: str, t: _Target, report: Report) -> Finding:
    reason, _ = _recheck(backend, t)
    if reason is not None:
        report.counters["skipped"] += 1
        return not_repaired(t.finding, Severity.INFO, skipped=reason, dry_run=True)
    report.counters["would_quarantine"] += 1
    return not_repaired(
        t.finding,
        t.finding.severity,
        dry_run=True,
        action="would quarantine",
        quarantined_to=_url(backend, _join(q, "<run>", TREE_DIR, t.relpath)),
    )


def _quarantine_one(run: _Run, t: _Target, report: Report) -> Finding:
    """Quarantine one link: recheck, copy, verify, journal, recheck, delete, check once more."""
    backend = run.backend
    c = report.counters
    reason, content = _recheck(backend, t)
    if reason is not None:
        c["skipped"] += 1
        return not_repaired(t.finding, Severity.INFO, skipped=reason)

    def failed(why: str) -> Finding:
        c["repair_failed"] += 1
        return not_repaired(t.finding, Severity.ERROR, error=why)

    try:
        run_key = run.open()
    except Exception as exc:  # no run folder: nothing may move
        return failed(f"cannot create the run's journal: {exc}")
    seq = run.next_seq()
    dst = _join(run_key, TREE_DIR, t.relpath)
    journal_key = _url(backend, _join(run_key, JOURNAL_DIR, _seq_name(seq) + ".jsonl"))
    record: dict[str, Any] = {
        "type": "quarantine",
        "seq": seq,
        "at": _now_iso(),
        "kind": str(t.finding.kind),
        "registry": t.ref.registry,
        "repository": t.ref.repository,
        "digest": t.digest,
        "source": t.link,
        "relpath": t.relpath,
        "quarantined_to": dst,
        "sha256": _sha256(content),
        "size": len(content),
        "reason": t.finding.message,
    }

    def outcome(result: str, detail: str = "") -> None:
        out: dict[str, Any] = {"type": "outcome", "seq": seq, "at": _now_iso(), "result": result}
        try:
            run.write(seq, [record, {**out, "detail": detail} if detail else out])
        except Exception:  # the quarantine record is already journaled
            run.journal_failures += 1

    try:
        backend.copy(t.link, dst)
        copied = backend.read(dst, LINK_READ_LIMIT)
    except Exception as exc:  # the link stays; a partial copy is journaled
        _journal_failure(run, seq, record, f"copy to the quarantine failed: {exc}")
        return failed(f"copy to the quarantine failed: {exc}")
    if copied != content:
        why = "the quarantined copy does not match the link; link left in place"
        _journal_failure(run, seq, record, why)
        return failed(why)
    try:
        run.write(seq, [record])
    except Exception as exc:  # unjournaled: the link must not go
        return failed(f"journal write failed, link left in place: {exc}")
    reason, _ = _recheck(backend, t)
    if reason is not None:
        outcome("skipped", reason)
        c["skipped"] += 1
        return not_repaired(t.finding, Severity.INFO, skipped=reason)
    try:
        backend.delete(t.link)
    except Exception as exc:  # the delete may still have happened: look
        try:
            gone = backend.stat(t.link) is None
        except Exception:  # cannot tell: report it as failed
            gone = False
        if not gone:
            outcome("failed", f"delete failed: {exc}")
            return failed(f"delete failed, link left in place: {exc}")
    put_back = _put_back_if_pushed(backend, t, content, dst)
    if put_back is not None:
        outcome("put-back", put_back)
        c["skipped"] += 1
        return not_repaired(t.finding, Severity.INFO, skipped=put_back)
    outcome("moved")
    c["quarantined"] += 1
    details: dict[str, Any] = {
        "action": "quarantined",
        "quarantined_to": _url(backend, dst),
        "journal": journal_key,
    }
    tags = list(t.finding.details.get("tags", []))
    if tags:
        details["next_steps"] = rebuild_steps(t.ref.repository, tags, orphan_link=False)
    return repaired(t.finding, "quarantined", **details)


def _journal_failure(run: _Run, seq: int, record: dict[str, Any], why: str) -> None:
    """Journal an action that failed after something may have been put in the quarantine."""
    out = {"type": "outcome", "seq": seq, "at": _now_iso(), "result": "failed", "detail": why}
    try:
        run.write(seq, [record, out])
    except Exception:  # the link stayed; the journal is a courtesy here
        run.journal_failures += 1


def _put_back_if_pushed(
    backend: StorageBackend, t: _Target, content: bytes, dst: str
) -> str | None:
    """After the delete: None if the blob is still absent, else why the link went back.

    A push that wrote the blob meanwhile needs its link: it is written again from the
    quarantined copy unless the registry already wrote one.
    """
    try:
        if backend.stat(t.blob) is None:
            return None
        why = "during the delete: blob data appeared"
    except Exception as exc:  # might exist: the link must come back
        why = f"during the delete: blob data cannot be examined ({exc})"
    try:
        if isinstance(backend, SupportsWriteNew):
            created = backend.write_new(t.link, content)
        elif backend.stat(t.link) is None:
            backend.copy(dst, t.link)
            created = True
        else:
            created = False
    except Exception as exc:  # say so loudly: the link is missing now
        return f"{why}; putting the link back failed ({exc}): restore this run"
    if not created:
        return f"{why}; the registry rewrote the link, quarantined copy kept"
    return why


def _next_steps(report: Report) -> None:
    """One note naming every tag that still cannot be pulled, and what to do about it."""
    broken: dict[str, set[str]] = {}
    for f in report.findings:
        if f.kind is Kind.ORPHAN_LAYER_LINK and (f.is_defect or f.details.get("repaired")):
            broken.setdefault(f.repository, set()).update(f.details.get("tags", []))
    refs = [f"{repo}:{t}" for repo, tags in sorted(broken.items()) for t in sorted(tags)]
    if not refs:
        return
    shown = ", ".join(refs[:10]) + (f" and {len(refs) - 10} more" if len(refs) > 10 else "")
    report.notes.append(
        f"still broken: {len(refs)} tag(s) cannot be pulled ({shown}); next steps: restart the "
        "registry so its blob cache forgets the deleted data, then rebuild or re-push them"
    )


# --- restore ---------------------------------------------------------------------------------




def find_object_runs(backend: StorageBackend, key: str, run: str | None = None) -> list[str]:
    """The run folders `key` names, newest first: itself if it holds a journal header, else
    every run folder in it (a quarantine prefix); `run` picks one by name."""
    key = _check_key(key, "run")
    if not key:
        raise UsageError("give a quarantine prefix or a run folder, not the backend's root")
    name = key.rsplit("/", 1)[-1]
    if backend.stat(_join(key, JOURNAL_DIR, HEADER_NAME)) is not None:
        if run is not None and run != name:
            raise UsageError(f"--run {run}: {key} is itself the run {name}")
        return [key]
    folders = sorted(backend.list_folder(key).folders, key=run_sort_key, reverse=True)
    runs = [
        _join(key, f)
        for f in folders
        if (run is None or f == run)
        and backend.stat(_join(key, f, JOURNAL_DIR, HEADER_NAME)) is not None
    ]
    if not runs:
        which = f"no run {run!r}" if run is not None else "no run folder"
        raise UsageError(f"{_url(backend, key)}: {which} with a journal here")
    return runs


def restore_objects(
    backend: StorageBackend, run: str, options: ObjectRestoreOptions | None = None
) -> Report:
    """Undo fix runs: `run` is one run folder or a quarantine prefix (every run in it, newest
    first; ``options.run`` names one). Never overwrites; idempotent."""
    options = options or ObjectRestoreOptions()
    t0 = time.perf_counter()
    runs = find_object_runs(backend, run, options.run)
    q = runs[0].rsplit("/", 1)[0] if "/" in runs[0] else ""
    report = Report(mode="object-restore", target=_url(backend, run), started_at=time.time())
    report.extra["runs"] = [_url(backend, r) for r in runs]
    lock: ObjectLock | None = None
    if options.dry_run:
        _dry_run_notes(backend, q, report)
    else:
        lock = ObjectLock(
            backend, _join(q, LOCK_NAME), purpose="restore", stale_hours=options.stale_lock_hours
        )
        lock.__enter__()
    try:
        for rk in runs:
            notes_before = len(report.notes)
            _restore_run(backend, rk, options.dry_run, report)
            if len(runs) > 1:
                name = rk.rsplit("/", 1)[-1]
                report.notes[notes_before:] = [f"{name}: {n}" for n in report.notes[notes_before:]]
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
    if lock is not None:
        note = lock_note(lock)
        if note:
            report.notes.append(note)
    c = report.counters
    c["runs"] = len(runs)
    if options.dry_run:
        report.notes.append(
            f"dry run, nothing was changed: {c['would_restore']} link(s) would be put back, "
            f"{c['not_needed']} already in place, {c['conflict']} conflict(s), "
            f"from {len(runs)} run(s)"
        )
    else:
        report.notes.append(
            f"restore: put back {c['links_put_back']} link(s), {c['not_needed']} already in "
            f"place, {c['conflict']} conflict(s), from {len(runs)} run(s)"
        )
    report.duration_seconds = time.perf_counter() - t0
    return report






def _restore_run(backend: StorageBackend, run_key: str, dry_run: bool, report: Report) -> None:
    """Undo one run from its journal, newest action first, into `report`."""
    records, bad = read_object_journal(backend, run_key)
    header = next((r for r in records if r.get("type") == "run"), None)
    where = _url(backend, _join(run_key, JOURNAL_DIR))
    if header is None or not isinstance(header.get("v2"), str):
        raise UsageError(f"{where}: no run header naming the registry's v2 path")
    if header.get("version") != JOURNAL_VERSION:
        raise UsageError(f"{where}: unsupported journal version {header.get('version')!r}")
    if str(header.get("location", "")).rstrip("/") != backend.location.rstrip("/"):
        raise UsageError(
            f"{where}: written for {header.get('location')!r}, not this storage "
            f"{backend.location!r}; restore through the storage the fix ran on"
        )
    root = registry_root(header["v2"])
    for msg in bad:
        report.add(conflict(f"journal line unusable: {msg}", where, {}))
    done = {
        r.get("seq")
        for r in records
        if r.get("type") == "restore" and r.get("result") in ("restored", "not-needed")
    }
    actions = [r for r in records if r.get("type") == "quarantine"]
    for rec in sorted(actions, key=lambda r: -int(r.get("seq", 0) or 0)):
        seq = rec.get("seq")
        if seq in done:
            report.counters["already_restored"] += 1
            continue
        finding, result = _restore_one(backend, run_key, root, rec, dry_run)
        report.add(finding)
        report.counters[result.replace("-", "_")] += 1
        if result == "restored":
            report.counters["links_put_back"] += 1
        if dry_run or not isinstance(seq, int):
            continue
        out = {"type": "restore", "seq": seq, "at": _now_iso(), "result": result}
        try:
            backend.write(
                _join(run_key, JOURNAL_DIR, _seq_name(seq) + ".restore.jsonl"), _lines([out])
            )
        except Exception as exc:  # the link is back; a rerun finds it in place
            report.notes.append(f"restore record of action {seq} not written: {exc}")


def _checked_relpath(rec: dict[str, Any]) -> str:
    """The record's path below the root, only if it is exactly a `_layers` link of its digest."""
    relpath = rec.get("relpath")
    if not isinstance(relpath, str):
        raise ValueError("record has no relpath")
    m = _LAYER_LINK_REL.fullmatch(relpath)
    digest = parse_digest(str(rec.get("digest", "")))
    if m is None or digest is None or m["hex"] != digest_hex(digest):
        raise ValueError(f"{relpath!r} is not the _layers link of the record's digest")
    # Rebuilding the key from its parts refuses '..', empty and '_'-prefixed repository names.
    if layer_link_path(Path(V2_SUFFIX), m["repo"], digest).as_posix() != relpath:
        raise ValueError(f"{relpath!r} is not a plain repository path")
    return relpath


def _restore_one(
    backend: StorageBackend, run_key: str, root: str, rec: dict[str, Any], dry_run: bool
) -> tuple[Finding, str]:
    """Put one quarantined link back; returns the finding and ``restored``/``not-needed``/
    ``conflict`` (``would-restore`` in a dry run)."""
    try:
        relpath = _checked_relpath(rec)
    except ValueError as exc:
        return conflict(f"unsafe journal record: {exc}", None, rec), "conflict"
    target = _join(root, relpath)
    copy = _join(run_key, TREE_DIR, relpath)
    where, copy_url = _url(backend, target), _url(backend, copy)
    want = rec.get("sha256")
    try:
        present = backend.read(target, LINK_READ_LIMIT)
    except Exception as exc:  # never write over what cannot be read
        return conflict(f"{where} cannot be read ({exc}); left alone", where, rec), "conflict"
    if present is not None:
        # Checked first: a fix stopped between its copy and its delete left both in place.
        if _sha256(present) == want:
            found = _object_restored(f"{where} already in place", where, rec, restored=True)
            return found, "not-needed"
        return conflict(f"{where} exists with other content; left alone", where, rec), "conflict"
    try:
        data = backend.read(copy, LINK_READ_LIMIT)
    except Exception as exc:  # a copy we cannot read is not put back
        return conflict(f"quarantined copy {copy_url} unreadable ({exc})", where, rec), "conflict"
    if data is None:
        return conflict(f"quarantined copy {copy_url} is missing", where, rec), "conflict"
    if _sha256(data) != want:
        return (
            conflict(f"quarantined copy {copy_url} changed since it was journaled", copy_url, rec),
            "conflict",
        )
    if dry_run:
        return (
            _object_restored(f"would restore {where}", where, rec, restored=False, dry_run=True),
            "would-restore",
        )
    try:
        if isinstance(backend, SupportsWriteNew):
            created = backend.write_new(target, data)
        else:
            # No conditional put: look once more right before the copy (a narrow race remains).
            created = backend.stat(target) is None
            if created:
                backend.copy(copy, target)
        if not created:
            return conflict(f"{where} appeared meanwhile; left alone", where, rec), "conflict"
        back = backend.read(target, LINK_READ_LIMIT)
    except Exception as exc:  # the copy stays in the quarantine for a rerun
        return conflict(f"restore of {where} failed: {exc}", where, rec), "conflict"
    if back is None or _sha256(back) != want:
        return (
            conflict(f"{where} does not hold the quarantined bytes after the put; quarantined "
                      "copy kept", where, rec),
            "conflict",
        )  # fmt: skip
    details: dict[str, Any] = {"restored": True}
    try:
        backend.delete(copy)
    except Exception as exc:  # the link is back; the copy is only clutter
        details["copy_left"] = f"{copy_url} could not be deleted ({exc})"
    return _object_restored(f"restored {where}", where, rec, **details), "restored"


def _object_restored(message: str, path: str, rec: dict[str, Any], **details: Any) -> Finding:
    """What restore did with one journaled link object (its finding kind from the journal)."""
    return restored(str(rec.get("kind", Kind.ORPHAN_LAYER_LINK)), message, path, rec, **details)
