"""`fs fix` and `fs restore`: quarantine orphan layer links, relink index children, undo it all.

Issue 4, "Repairs": nothing is ever deleted. An orphan `_layers` link is *moved* to
``QUARANTINE/<UTC time>/tree/<path relative to the base>``; a recreated revision link is written
new. Every action is written to ``QUARANTINE/<UTC time>/journal.jsonl`` (fsynced) before it
happens, and `restore_quarantine` replays that journal backwards.

Safety rails (each refuses with `FixRefused`, exit 3, before anything is touched):

* a registry whose blob store is missing or empty while links exist (an unmounted volume);
* more than ``max_orphan_share`` of a registry's layer links orphaned (``--force`` overrides);
* another `fs fix`/`fs restore` holding the lock file ``BASE/.regverify.lock``.

Symlinks are never followed (``O_NOFOLLOW``, an lstat of every component below the base), and
every path acted on is checked to be inside the base before anything is moved or written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from verifier import __version__
from verifier.errors import SafetyRefusal, UsageError
from verifier.findings import Finding, Kind, Report, Severity
from verifier.manifest import (
    DEFAULT_MAX_MANIFEST_BYTES,
    ImageIndex,
    ImageManifest,
    ManifestError,
    parse_manifest,
    sha256_digest,
)
from verifier.storage.defaults import DEFAULT_MAX_ORPHAN_SHARE
from verifier.storage.fsio import ReadFailure, read_link_file, read_regular_file
from verifier.storage.layout import (
    V2_PARTS,
    Digest,
    RegistryStorage,
    StorageLayout,
    assert_no_symlinks,
    blob_data_path,
    detect_layout,
    digest_hex,
    layer_link_path,
    link_content,
    parse_digest,
    relative_inside,
    revision_link_path,
    safe_relpath,
)
from verifier.storage.scan import (
    BlobStoreState,
    OrphanChild,
    OrphanLink,
    ProgressFn,
    ScanOptions,
    ScanResult,
    check_link_content,
    scan_storage,
)

LOCK_NAME = ".regverify.lock"
QUARANTINE_DIRNAME = ".regverify-quarantine"
JOURNAL_NAME = "journal.jsonl"
TREE_DIRNAME = "tree"
UNDONE_DIRNAME = "undone"
JOURNAL_VERSION = 1
#: Journal records are fsynced in batches of this many before the batch's moves happen.
BATCH = 256


class FixRefused(SafetyRefusal):
    """A safety rail refused to change anything; `report` is the scan that led to it."""

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class FixOptions:
    """How `fix_storage` repairs; `quarantine` is the root that receives one folder per run."""

    quarantine: Path | None = None
    relink_index_children: bool = False
    force: bool = False
    max_orphan_share: float = DEFAULT_MAX_ORPHAN_SHARE


def default_quarantine_root(base: Path) -> Path:
    """``<parent of base>/.regverify-quarantine``: beside the storage, never inside it."""
    return base.parent / QUARANTINE_DIRNAME


def quarantine_root(base: Path, given: Path | None) -> Path:
    """The quarantine root to use; a UsageError if it would lie inside the storage base."""
    root = Path(os.path.abspath(given)) if given is not None else default_quarantine_root(base)
    resolved = root.resolve()
    if resolved == base or base in resolved.parents:
        raise UsageError(
            f"quarantine {root} is inside the storage base {base}; choose --quarantine outside it"
        )
    return resolved


# --- safety rails (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class RailDecision:
    """What the safety rails said: `refusals` stop the run; `overridden` were forced past."""

    refusals: tuple[str, ...]
    overridden: tuple[str, ...]


def check_safety_rails(result: ScanResult, *, force: bool, max_orphan_share: float) -> RailDecision:
    """Decide from the scan alone whether `fs fix` may act (issue 4, "Safety rails")."""
    refusals: list[str] = []
    overridden: list[str] = []
    for s in result.stats:
        label = s.name or str(result.layout.base)
        if s.blob_store in (BlobStoreState.MISSING, BlobStoreState.EMPTY) and s.links:
            refusals.append(
                f"registry {label}: blob store is {s.blob_store} while {s.links} links exist "
                "(unmounted or half-synced volume?); not overridable by --force"
            )
            continue
        if s.layer_links and s.orphan_layer_links / s.layer_links > max_orphan_share:
            msg = (
                f"registry {label}: {s.orphan_layer_links} of {s.layer_links} layer links "
                f"({s.orphan_layer_links / s.layer_links:.0%}) look orphaned, more than "
                f"--max-orphan-share {max_orphan_share:.0%}"
            )
            (overridden if force else refusals).append(msg)
    return RailDecision(tuple(refusals), tuple(overridden))


# --- lock ------------------------------------------------------------------------------------


class FixLock:
    """An exclusive ``flock`` on ``BASE/.regverify.lock``; released by the kernel if we die."""

    def __init__(self, base: Path) -> None:
        self.path = base / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> FixLock:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise SafetyRefusal(f"cannot open lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip()
            os.close(fd)
            raise SafetyRefusal(
                f"another regverify fs fix/restore holds {self.path} ({holder or 'unknown'}); "
                "nothing was changed"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {_now_iso()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# --- journal ---------------------------------------------------------------------------------


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Journal:
    """Append-only JSON lines; `sync` makes everything written so far durable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(path, flags, 0o644)
        self._seq = 0

    def next_seq(self) -> int:
        """A new sequence number for an action record."""
        self._seq += 1
        return self._seq

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (not yet durable: call `sync`)."""
        line = json.dumps({"at": _now_iso(), **record}, sort_keys=True) + "\n"
        os.write(self._fd, line.encode())

    def sync(self) -> None:
        """fsync the journal."""
        os.fsync(self._fd)

    def close(self) -> None:
        """Sync and close."""
        self.sync()
        os.close(self._fd)


def read_journal(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """All records of a journal, plus a message for every line that is not a JSON object."""
    data = read_regular_file(str(path), 1 << 30)
    if isinstance(data, ReadFailure):
        raise UsageError(f"cannot read journal {path}: {data.reason} {data.detail}".rstrip())
    records: list[dict[str, Any]] = []
    bad: list[str] = []
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(f"{path}:{n}: not JSON ({exc.msg})")
            continue
        if not isinstance(rec, dict):
            bad.append(f"{path}:{n}: not a JSON object")
            continue
        records.append(rec)
    return records, bad


# --- file operations, each confined to a base -------------------------------------------------


def _file_sha256(path: Path) -> tuple[str, int] | None:
    data = read_regular_file(str(path), 1 << 20)
    if isinstance(data, ReadFailure):
        return None
    return hashlib.sha256(data).hexdigest(), len(data)


def _match_owner(path: Path, like: Path) -> None:
    """As root, give what we create the owner of its parent, so the registry can still GC it."""
    if os.geteuid() != 0:
        return
    with contextlib.suppress(OSError):
        st = os.lstat(like)
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)


def _make_dirs(base: Path, directory: Path) -> list[Path]:
    """Create `directory` and missing parents (real folders, inside base); return those made."""
    assert_no_symlinks(base, directory)
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current):
        missing.append(current)
        current = current.parent
    made: list[Path] = []
    for d in reversed(missing):
        relative_inside(base, d)
        os.mkdir(d, 0o755)
        _match_owner(d, d.parent)
        made.append(d)
    return made


def _move_file(src: Path, dst: Path) -> None:
    """rename(2); across filesystems copy, fsync, then unlink the source (never a bare delete)."""
    try:
        os.rename(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    data = read_regular_file(str(src), 1 << 30)
    if isinstance(data, ReadFailure):
        raise OSError(errno.EIO, f"cannot read {src}: {data.detail}")
    st = os.lstat(src)
    fd = os.open(
        dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, stat.S_IMODE(st.st_mode)
    )
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    if os.geteuid() == 0:
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.unlink(src)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


# --- fix -------------------------------------------------------------------------------------


def _repaired(f: Finding, message: str, **details: Any) -> Finding:
    return dataclasses.replace(
        f,
        severity=Severity.INFO,
        message=f"{message}: {f.message}",
        details={**f.details, "repaired": True, **details},
    )


def _not_repaired(f: Finding, severity: Severity, **details: Any) -> Finding:
    return dataclasses.replace(
        f, severity=severity, details={**f.details, "repaired": False, **details}
    )


def _recheck_orphan(base: Path, o: OrphanLink) -> str | None:
    """Right before moving: None if the link is still an orphan, else why it must be left."""
    try:
        assert_no_symlinks(base, o.path)
    except ValueError as exc:
        return str(exc)
    content = read_link_file(str(o.path))
    if isinstance(content, ReadFailure):
        return f"link no longer readable ({content.reason})"
    if check_link_content(content, digest_hex(o.digest)) is not None:
        return "link content changed since the scan"
    if os.path.lexists(blob_data_path(o.registry.v2, o.digest)):
        return "blob data reappeared since the scan"
    return None


def _recheck_child(registry: RegistryStorage, repository: str, child: Digest) -> str | None:
    """Right before relinking: None if relinking is still lossless, else why not."""
    v2 = registry.v2
    if os.path.lexists(revision_link_path(v2, repository, child)):
        return "revision link reappeared since the scan"
    body = read_regular_file(str(blob_data_path(v2, child)), DEFAULT_MAX_MANIFEST_BYTES)
    if isinstance(body, ReadFailure):
        return f"manifest data {body.reason}"
    if sha256_digest(body) != child:
        return "manifest data does not match its digest"
    try:
        manifest = parse_manifest(body)
    except ManifestError as exc:
        return f"manifest invalid: {exc}"
    if isinstance(manifest, ImageManifest):
        refs = [(manifest.config.digest, False)] + [(d.digest, False) for d in manifest.layers]
    elif isinstance(manifest, ImageIndex):
        refs = [(d.digest, True) for d in manifest.manifests]
    else:
        return "schema1 manifest: not relinked"
    for raw, is_manifest in refs:
        ref = parse_digest(raw)
        if ref is None:
            return f"referenced digest {raw[:80]!r} is not sha256"
        if not _is_regular(blob_data_path(v2, ref)):
            return f"{ref} data is gone"
        link = (revision_link_path if is_manifest else layer_link_path)(v2, repository, ref)
        content = read_link_file(str(link))
        if isinstance(content, ReadFailure) or check_link_content(content, digest_hex(ref)):
            return f"{ref} is not linked in {repository}"
    return None


@dataclass
class _Run:
    """One fix run's quarantine folder and journal, created on first use."""

    base: Path
    root: Path
    layout: StorageLayout
    started: datetime
    dir: Path | None = None
    journal: Journal | None = None

    def open(self) -> Journal:
        if self.journal is not None:
            return self.journal
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = self.started.strftime("%Y-%m-%dT%H-%M-%SZ")
        for n in range(1000):
            candidate = self.root / (stamp if n == 0 else f"{stamp}-{n}")
            try:
                candidate.mkdir(0o700)
            except FileExistsError:
                continue
            self.dir = candidate
            break
        else:
            raise SafetyRefusal(f"cannot create a run folder under {self.root}")
        self.journal = Journal(self.dir / JOURNAL_NAME)
        self.journal.write(
            {
                "type": "run",
                "version": JOURNAL_VERSION,
                "tool": f"regverify {__version__}",
                "base": str(self.base),
                "layout": str(self.layout.kind),
                "pid": os.getpid(),
            }
        )
        self.journal.sync()
        return self.journal


def fix_storage(
    layout: StorageLayout,
    scan_options: ScanOptions | None = None,
    options: FixOptions | None = None,
    progress: ProgressFn | None = None,
    *,
    started: datetime | None = None,
) -> Report:
    """Scan under the lock, check the rails, then quarantine orphan links and relink children.

    Returns the scan's report with each repaired finding downgraded to ``info`` and marked
    ``details["repaired"] = True``; what still needs a human stays an ``error`` (exit 1).
    Raises `FixRefused` (exit 3, nothing touched) when a safety rail says no.
    """
    scan_options = scan_options or ScanOptions()
    options = options or FixOptions()
    base = layout.base
    root = quarantine_root(base, options.quarantine)
    t0 = time.perf_counter()
    with FixLock(base):
        result = scan_storage(layout, scan_options, progress)
        report = result.report
        report.mode = "fs-fix"
        decision = check_safety_rails(
            result, force=options.force, max_orphan_share=options.max_orphan_share
        )
        if decision.refusals:
            for r in decision.refusals:
                report.notes.append(f"REFUSED: {r}")
            # The document's exit_code reflects the findings; the process exits 3 for this.
            report.extra["refused"] = list(decision.refusals)
            raise FixRefused(
                "fs fix refused, nothing was changed: " + "; ".join(decision.refusals), report
            )
        for r in decision.overridden:
            report.notes.append(f"WARNING: --force overrode a safety rail: {r}")
        run = _Run(base, root, layout, started or datetime.now(UTC))
        replaced: dict[int, Finding] = {}
        try:
            _quarantine_all(run, result.orphan_links, replaced, report)
            _relink_all(run, result.orphan_children, options, replaced, report)
        finally:
            if run.journal is not None:
                run.journal.close()
    report.findings = [replaced.get(id(f), f) for f in report.findings]
    if run.dir is not None:
        report.extra["quarantine"] = str(run.dir)
        report.extra["journal"] = str(run.dir / JOURNAL_NAME)
        report.notes.append(
            f"journal: {run.dir / JOURNAL_NAME}; undo with: regverify fs restore {run.dir}"
        )
    report.counters["unrepaired"] = len(report.defects)
    report.notes.append(
        f"repairs: {report.counters['quarantined']} orphan layer link(s) quarantined, "
        f"{report.counters['relinked']} index child(ren) relinked, "
        f"{report.counters['repair_failed']} failed, {report.counters['skipped']} skipped; "
        f"{report.counters['unrepaired']} finding(s) still need a human"
    )
    report.duration_seconds = time.perf_counter() - t0
    return report


def _quarantine_all(
    run: _Run, orphans: list[OrphanLink], replaced: dict[int, Finding], report: Report
) -> None:
    base = run.base
    for start in range(0, len(orphans), BATCH):
        batch = orphans[start : start + BATCH]
        journal = run.open()
        assert run.dir is not None
        planned: list[tuple[OrphanLink, int, Path]] = []
        for o in batch:
            reason = _recheck_orphan(base, o)
            if reason is not None:
                replaced[id(o.finding)] = _not_repaired(o.finding, Severity.INFO, skipped=reason)
                report.counters["skipped"] += 1
                continue
            rel = relative_inside(base, o.path)
            dst = run.dir / TREE_DIRNAME / rel
            digest = _file_sha256(o.path)
            seq = journal.next_seq()
            journal.write(
                {
                    "type": "quarantine",
                    "seq": seq,
                    "kind": str(o.finding.kind),
                    "registry": o.registry.name,
                    "repository": o.repository,
                    "digest": o.digest,
                    "source": str(o.path),
                    "relpath": rel.as_posix(),
                    "quarantined_to": str(dst),
                    "sha256": digest[0] if digest else None,
                    "size": digest[1] if digest else None,
                    "reason": o.finding.message,
                }
            )
            planned.append((o, seq, dst))
        journal.sync()
        for o, seq, dst in planned:
            try:
                reason = _recheck_orphan(base, o)
                if reason is not None:
                    journal.write(
                        {"type": "outcome", "seq": seq, "result": "skipped", "detail": reason}
                    )
                    replaced[id(o.finding)] = _not_repaired(
                        o.finding, Severity.INFO, skipped=reason
                    )
                    report.counters["skipped"] += 1
                    continue
                _make_dirs(run.dir, dst.parent)
                _move_file(o.path, dst)
            except (OSError, ValueError) as exc:
                journal.write(
                    {"type": "outcome", "seq": seq, "result": "failed", "detail": str(exc)}
                )
                replaced[id(o.finding)] = _not_repaired(o.finding, Severity.ERROR, error=str(exc))
                report.counters["repair_failed"] += 1
                continue
            journal.write({"type": "outcome", "seq": seq, "result": "moved"})
            replaced[id(o.finding)] = _repaired(
                o.finding,
                "quarantined",
                action="quarantined",
                quarantined_to=str(dst),
                journal=str(run.dir / JOURNAL_NAME),
            )
            report.counters["quarantined"] += 1
        journal.sync()


def _relink_all(
    run: _Run,
    children: list[OrphanChild],
    options: FixOptions,
    replaced: dict[int, Finding],
    report: Report,
) -> None:
    base = run.base
    for child in children:
        if not child.relinkable:
            continue
        if not options.relink_index_children:
            for f in child.findings:
                replaced[id(f)] = dataclasses.replace(
                    f,
                    details={
                        **f.details,
                        "repaired": False,
                        "action": "relinkable: rerun fs fix with --relink-index-children",
                    },
                )
            continue
        journal = run.open()
        assert run.dir is not None
        target = child.link_path
        seq = journal.next_seq()
        try:
            reason = _recheck_child(child.registry, child.repository, child.digest)
            if reason is not None:
                raise ValueError(reason)
            rel = relative_inside(base, target)
            assert_no_symlinks(base, target)
            missing: list[Path] = []
            d = target.parent
            while not os.path.lexists(d):
                missing.append(d)
                d = d.parent
            journal.write(
                {
                    "type": "relink",
                    "seq": seq,
                    "kind": str(Kind.ORPHAN_INDEX_CHILD),
                    "registry": child.registry.name,
                    "repository": child.repository,
                    "digest": child.digest,
                    "path": str(target),
                    "relpath": rel.as_posix(),
                    "content": child.digest,
                    "created_dirs": [relative_inside(base, m).as_posix() for m in missing],
                    "indexes": sorted({str(f.details.get("index")) for f in child.findings}),
                }
            )
            journal.sync()
            _make_dirs(base, target.parent)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(target, flags, 0o644)
            try:
                os.write(fd, link_content(child.digest))
                os.fsync(fd)
            finally:
                os.close(fd)
            _match_owner(target, target.parent)
        except (OSError, ValueError) as exc:
            journal.write({"type": "outcome", "seq": seq, "result": "failed", "detail": str(exc)})
            for f in child.findings:
                replaced[id(f)] = _not_repaired(f, Severity.ERROR, error=str(exc))
            report.counters["repair_failed"] += 1
            continue
        journal.write({"type": "outcome", "seq": seq, "result": "relinked"})
        journal.sync()
        for f in child.findings:
            replaced[id(f)] = _repaired(
                f, "relinked", action="relinked", journal=str(run.dir / JOURNAL_NAME)
            )
        report.counters["relinked"] += 1


# --- restore ---------------------------------------------------------------------------------


def _restore_target_ok(rel: Path) -> bool:
    """Restore only ever writes link files under some registry's ``repositories`` folder."""
    parts = rel.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == V2_PARTS and parts[i + 3] == "repositories":
            return parts[-1] == "link" and i in (0, 1)
    return False


def _conflict(message: str, path: str | None, rec: dict[str, Any]) -> Finding:
    return Finding(
        kind=Kind.RESTORE_CONFLICT,
        severity=Severity.ERROR,
        message=message,
        registry=str(rec.get("registry", "")),
        repository=str(rec.get("repository", "")),
        digest=str(rec["digest"]) if isinstance(rec.get("digest"), str) else None,
        path=path,
        details={"seq": rec.get("seq"), "type": rec.get("type")},
    )


def _restored(kind: str, message: str, path: Path, rec: dict[str, Any], **details: Any) -> Finding:
    try:
        k = Kind(kind)
    except ValueError:
        k = Kind.RESTORE_CONFLICT
    return Finding(
        kind=k,
        severity=Severity.INFO,
        message=message,
        registry=str(rec.get("registry", "")),
        repository=str(rec.get("repository", "")),
        digest=str(rec["digest"]) if isinstance(rec.get("digest"), str) else None,
        path=str(path),
        details={"restored": True, "seq": rec.get("seq"), **details},
    )


def restore_quarantine(run_dir: Path) -> Report:
    """Undo one `fs fix` run from its journal, newest action first; idempotent.

    A quarantined link goes back only where nothing is in the way; a link we created is moved
    to ``RUN/undone/`` (not deleted), and folders we created are removed only if empty.
    Anything that does not match the journal is a `restore_conflict` finding (exit 1).
    """
    t0 = time.perf_counter()
    run_dir = Path(os.path.abspath(run_dir))
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: not a quarantine run folder")
    run_dir = run_dir.resolve()
    journal_path = run_dir / JOURNAL_NAME
    if not _is_regular(journal_path):
        raise UsageError(f"{run_dir}: no {JOURNAL_NAME} (is this a quarantine run folder?)")
    records, bad = read_journal(journal_path)
    header = next((r for r in records if r.get("type") == "run"), None)
    if header is None or not isinstance(header.get("base"), str):
        raise UsageError(f"{journal_path}: no run header naming the storage base")
    if header.get("version") != JOURNAL_VERSION:
        raise UsageError(f"{journal_path}: unsupported journal version {header.get('version')!r}")
    base = Path(header["base"])
    if not base.is_absolute():
        raise UsageError(f"{journal_path}: base {base} is not absolute")
    layout = detect_layout(base)
    if layout.base != base:
        raise UsageError(f"{journal_path}: base {base} resolves elsewhere ({layout.base})")
    report = Report(mode="fs-restore", target=str(run_dir), started_at=time.time())
    report.extra["base"] = str(base)
    report.extra["journal"] = str(journal_path)
    for msg in bad:
        report.add(_conflict(f"journal line unusable: {msg}", str(journal_path), {}))
    done = {
        r.get("seq")
        for r in records
        if r.get("type") == "restore" and r.get("result") in ("restored", "not-needed")
    }
    actions = [r for r in records if r.get("type") in ("quarantine", "relink")]
    with FixLock(base):
        journal = Journal(journal_path)
        try:
            for rec in sorted(actions, key=lambda r: -int(r.get("seq", 0) or 0)):
                if rec.get("seq") in done:
                    report.counters["already_restored"] += 1
                    continue
                finding, result = _restore_one(base, run_dir, rec)
                report.add(finding)
                report.counters[result.replace("-", "_")] += 1
                journal.write({"type": "restore", "seq": rec.get("seq"), "result": result})
        finally:
            journal.close()
    report.duration_seconds = time.perf_counter() - t0
    return report


def _restore_one(base: Path, run_dir: Path, rec: dict[str, Any]) -> tuple[Finding, str]:
    """Undo one journal action; returns the finding and ``restored``/``not-needed``/``conflict``."""
    relpath = rec.get("relpath")
    try:
        if not isinstance(relpath, str):
            raise ValueError("record has no relpath")
        rel = safe_relpath(relpath)
        if not _restore_target_ok(rel):
            raise ValueError(f"{relpath!r} is not a link file inside a registry's repositories")
        target = base / rel
        assert_no_symlinks(base, target)
    except ValueError as exc:
        return _conflict(f"unsafe journal record: {exc}", None, rec), "conflict"
    try:
        if rec["type"] == "quarantine":
            return _restore_quarantined(base, run_dir, rel, target, rec)
        return _undo_relink(base, run_dir, rel, target, rec)
    except (OSError, ValueError) as exc:
        return _conflict(f"restore of {target} failed: {exc}", str(target), rec), "conflict"


def _restore_quarantined(
    base: Path, run_dir: Path, rel: Path, target: Path, rec: dict[str, Any]
) -> tuple[Finding, str]:
    copy = run_dir / TREE_DIRNAME / rel
    assert_no_symlinks(run_dir, copy)
    want = rec.get("sha256")
    have_copy = _file_sha256(copy) if _is_regular(copy) else None
    have_target = _file_sha256(target) if os.path.lexists(target) else None
    kind = str(rec.get("kind", Kind.ORPHAN_LAYER_LINK))
    if have_copy is None:
        if have_target is not None and have_target[0] == want:
            return _restored(kind, f"{target} already in place", target, rec), "not-needed"
        return _conflict(f"quarantined copy {copy} is missing", str(target), rec), "conflict"
    if have_copy[0] != want:
        return (
            _conflict(f"quarantined copy {copy} changed since it was journaled", str(copy), rec),
            "conflict",
        )
    if os.path.lexists(target):
        if have_target is not None and have_target[0] == want:
            return (
                _restored(kind, f"{target} already in place (copy kept)", target, rec),
                "not-needed",
            )
        return _conflict(f"{target} exists with other content; left alone", str(target), rec), (
            "conflict"
        )
    _make_dirs(base, target.parent)
    _move_file(copy, target)
    return _restored(kind, f"restored {target}", target, rec), "restored"


def _undo_relink(
    base: Path, run_dir: Path, rel: Path, target: Path, rec: dict[str, Any]
) -> tuple[Finding, str]:
    content = rec.get("content")
    digest = parse_digest(content) if isinstance(content, str) else None
    if digest is None:
        raise ValueError("relink record without a valid digest")
    kind = str(rec.get("kind", Kind.ORPHAN_INDEX_CHILD))
    if not os.path.lexists(target):
        _remove_created_dirs(base, rec)  # a relink that failed half-way may have made some
        return _restored(kind, f"{target} already absent", target, rec), "not-needed"
    current = read_link_file(str(target))
    if isinstance(current, ReadFailure) or current != link_content(digest):
        return _conflict(f"{target} no longer holds {digest}; left alone", str(target), rec), (
            "conflict"
        )
    undone = run_dir / UNDONE_DIRNAME / rel
    _make_dirs(run_dir, undone.parent)
    _move_file(target, undone)
    _remove_created_dirs(base, rec)
    return _restored(kind, f"removed recreated link {target} (kept in {undone})", target, rec), (
        "restored"
    )


def _remove_created_dirs(base: Path, rec: dict[str, Any]) -> None:
    """Remove the folders a relink created, deepest first, and only those that are empty."""
    created = rec.get("created_dirs") or []
    for d in sorted((c for c in created if isinstance(c, str)), key=len, reverse=True):
        path = base / safe_relpath(d)
        assert_no_symlinks(base, path)
        with contextlib.suppress(OSError):
            os.rmdir(path)  # only ever succeeds on an empty folder
