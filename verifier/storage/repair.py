"""`fs fix` and `fs restore`: quarantine orphan layer links, relink index children, undo it all.

Repairs: nothing is ever deleted. An orphan `_layers` link is *moved* to
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
import fcntl
import hashlib
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from verifier import __version__
from verifier.errors import SafetyRefusal, UsageError
from verifier.model.findings import Finding, Kind, Report, Severity
from verifier.model.manifest import (
    DEFAULT_MAX_MANIFEST_BYTES,
    ImageIndex,
    ImageManifest,
    ManifestError,
    parse_manifest,
    sha256_digest,
)
from verifier.storage.checks import check_link_content
from verifier.storage.defaults import DEFAULT_MAX_ORPHAN_SHARE
from verifier.storage.fsio import (
    TMP_SUFFIX,
    ReadFailure,
    SourceChanged,
    fsync_dir,
    move_preserving,
    read_link_file,
    read_regular_file,
    rename_noreplace,
    same_file_state,
)
from verifier.storage.images import rebuild_steps
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
from verifier.storage.outcomes import (
    conflict,
    journal_records,
    not_repaired,
    repaired,
    restored,
    run_sort_key,
)
from verifier.storage.rails import RailDecision, RegistryCounts, decide
from verifier.storage.records import (
    OrphanChild,
    OrphanLink,
    ProgressFn,
    ScanResult,
    StorageScanOptions,
)
from verifier.storage.scan import scan_storage

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
    #: Recreate a missing `_layers` link of a blob a tag needs when its data is present.
    relink_layers: bool = False


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


def check_safety_rails(result: ScanResult, *, force: bool, max_orphan_share: float) -> RailDecision:
    """Decide from the scan alone whether `fs fix` may act (its safety rails)."""
    counts = [
        RegistryCounts(
            label=s.name or str(result.layout.base),
            blob_store=str(s.blob_store),
            links=s.links,
            layer_links=s.layer_links,
            orphan_layer_links=s.orphan_layer_links,
            blob_gaps=tuple(s.blob_gaps),
        )
        for s in result.stats
    ]
    return decide(counts, force=force, max_orphan_share=max_orphan_share)


# --- lock ------------------------------------------------------------------------------------


class FixLock:
    """An exclusive ``flock`` on ``ROOT/.regverify.lock`` of every registry root acted on.

    Each root is taken by its real path, so two spellings of one store (a multi-registry base
    and one of its registries given as a single root, or a path through a symlink) exclude
    each other. Released by the kernel if we die.
    """

    def __init__(self, *roots: Path) -> None:
        real = sorted({Path(os.path.realpath(r)) for r in roots})
        self.paths = [r / LOCK_NAME for r in real]
        self._fds: list[int] = []

    @property
    def path(self) -> Path:
        """The first lock file (all of them when several registries are locked)."""
        return self.paths[0]

    def __enter__(self) -> FixLock:
        try:
            for path in self.paths:
                self._fds.append(self._take(path))
        except BaseException:
            self._release()
            raise
        return self

    @staticmethod
    def _take(path: Path) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise SafetyRefusal(f"cannot open lock file {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip()
            os.close(fd)
            raise SafetyRefusal(
                f"another regverify fs fix/restore holds {path} ({holder or 'unknown'}); "
                "nothing was changed"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {_now_iso()}\n".encode())
        return fd

    def _release(self) -> None:
        for fd in self._fds:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._fds = []

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()


def layout_lock(layout: StorageLayout) -> FixLock:
    """The lock over every registry root of `layout`."""
    return FixLock(*(r.root for r in layout.registries)) if layout.registries else FixLock(
        layout.base
    )


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
    return journal_records(data, str(path))


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
    """Create `directory` and missing parents (real folders, inside base); return those made.

    Each new folder gets its parent's mode (and, as root, owner), whatever the umask: a
    registry running as another user must still read what we put back.
    """
    assert_no_symlinks(base, directory)
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current):
        missing.append(current)
        current = current.parent
    made: list[Path] = []
    for d in reversed(missing):
        relative_inside(base, d)
        os.mkdir(d, 0o700)
        with contextlib.suppress(OSError):
            os.chmod(d, stat.S_IMODE(os.lstat(d.parent).st_mode), follow_symlinks=False)
        _match_owner(d, d.parent)
        made.append(d)
    return made


def _move_file(src: Path, dst: Path) -> None:
    """Move a link file keeping everything: a rename on one filesystem; across filesystems a
    copy with mode, owner, times and xattrs, fsynced with its folder before the source goes."""
    move_preserving(str(src), str(dst))


def write_link(target: Path, content: bytes) -> None:
    """Create a link file as distribution would (mode 0644 whatever the umask, the folder's
    owner as root), crash-safe: a complete temporary file renamed into place, never replacing."""
    tmp = Path(str(target) + TMP_SUFFIX)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a run that was killed
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        os.write(fd, content)
        os.fchmod(fd, 0o644)
        os.fsync(fd)
    finally:
        os.close(fd)
    _match_owner(tmp, target.parent)
    try:
        rename_noreplace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def blob_might_exist(v2: Path, digest: Digest) -> str | None:
    """None only when the blob's data provably does not exist; else why it might.

    Follows symlinks as distribution does. Any error other than ENOENT (a permission error,
    an I/O error, ENOTDIR) counts as "exists"; so does a symlink on the way whose target is
    missing (a disk that is not mounted).
    """
    data = blob_data_path(v2, digest)
    try:
        os.stat(data)
        return "blob data exists"
    except FileNotFoundError:
        pass
    except OSError as exc:
        return f"blob data cannot be examined ({exc.strerror or exc}): it might exist"
    current = v2
    for part in data.relative_to(v2).parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"{current} cannot be examined ({exc.strerror or exc}): the blob might exist"
        if stat.S_ISLNK(mode):
            return f"{current} is a symlink whose target is missing: the blob might exist"
    return None


# --- fix -------------------------------------------------------------------------------------






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
    why = blob_might_exist(o.registry.v2, o.digest)
    if why == "blob data exists":
        return "blob data reappeared since the scan"
    return why


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
    scan_options: StorageScanOptions | None = None,
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
    scan_options = scan_options or StorageScanOptions()
    options = options or FixOptions()
    base = layout.base
    root = quarantine_root(base, options.quarantine)
    t0 = time.perf_counter()
    with layout_lock(layout):
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
            _relink_layers(run, result.image_findings, options, replaced, report)
        finally:
            if run.journal is not None:
                run.journal.close()
    _follow_up_images(result, replaced)
    report.findings = [replaced.get(id(f), f) for f in report.findings]
    _next_steps_note(report)
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
        f"{report.counters['relinked_layers']} layer link(s) recreated, "
        f"{report.counters['repair_failed']} failed, {report.counters['skipped']} skipped; "
        f"{report.counters['unrepaired']} finding(s) still need a human"
    )
    report.duration_seconds = time.perf_counter() - t0
    return report


def _follow_up_images(result: ScanResult, replaced: dict[int, Finding]) -> None:
    """Images whose orphan links were just quarantined are still broken: say what is next."""
    quarantined = {
        (f.registry, f.repository, f.digest)
        for f in replaced.values()
        if f.kind is Kind.ORPHAN_LAYER_LINK and f.details.get("repaired")
    }
    registries = {r.name: r for r in result.layout.registries}
    for f in result.image_findings:
        if f.kind is not Kind.IMAGE_BLOB_MISSING:
            continue
        if (f.registry, f.repository, f.digest) not in quarantined:
            registry = registries.get(f.registry or "")
            digest = parse_digest(f.digest or "")
            if registry is not None and digest is not None:
                if blob_might_exist(registry.v2, digest) == "blob data exists":
                    # Pushed again while we ran: what the scan saw is no longer true.
                    replaced[id(f)] = not_repaired(
                        f, Severity.INFO, skipped="blob data reappeared since the scan"
                    )
            continue
        tags = list(f.details.get("tags", []))
        replaced[id(f)] = dataclasses.replace(
            f,
            message=f"{f.message}; its orphan layer link was quarantined, the image stays "
            "broken until it is rebuilt",
            details={
                **f.details,
                "linked": False,
                "orphan_link_quarantined": True,
                "next_steps": rebuild_steps(f.repository, tags, orphan_link=False),
            },
        )


def _next_steps_note(report: Report) -> None:
    """One note naming every tag that still cannot be pulled, and what to do about it."""
    broken: dict[tuple[str, str], set[str]] = {}
    for f in report.findings:
        if f.is_defect and f.kind in (Kind.IMAGE_BLOB_MISSING, Kind.LAYER_LINK_MISSING):
            broken.setdefault((f.registry or "", f.repository), set()).update(
                f.details.get("tags", [])
            )
    if not broken:
        return
    refs = [f"{repo}:{t}" for (_, repo), tags in sorted(broken.items()) for t in sorted(tags)]
    shown = ", ".join(refs[:10]) + (f" and {len(refs) - 10} more" if len(refs) > 10 else "")
    report.notes.append(
        f"still broken: {len(refs)} tag(s) cannot be pulled ({shown}); next steps: restart the "
        "registry so its blob cache forgets the deleted data, then rebuild or re-push them "
        "(a layer whose link alone is missing: fs fix --relink-layers)"
    )


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
                replaced[id(o.finding)] = not_repaired(o.finding, Severity.INFO, skipped=reason)
                report.counters["skipped"] += 1
                continue
            rel = relative_inside(base, o.path)
            dst = run.dir / TREE_DIRNAME / rel
            digest = _file_sha256(o.path)
            try:
                st = os.lstat(o.path)
                meta: dict[str, Any] = {
                    "mode": oct(stat.S_IMODE(st.st_mode)),
                    "uid": st.st_uid,
                    "gid": st.st_gid,
                    "mtime_ns": st.st_mtime_ns,
                }
            except OSError:
                meta = {}
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
                    **meta,
                }
            )
            planned.append((o, seq, dst))
        journal.sync()
        for o, seq, dst in planned:
            try:
                result, detail = _quarantine_one(run.dir, base, o, dst)
            except (OSError, ValueError) as exc:
                journal.write(
                    {"type": "outcome", "seq": seq, "result": "failed", "detail": str(exc)}
                )
                replaced[id(o.finding)] = not_repaired(o.finding, Severity.ERROR, error=str(exc))
                report.counters["repair_failed"] += 1
                continue
            outcome: dict[str, Any] = {"type": "outcome", "seq": seq, "result": result}
            journal.write({**outcome, "detail": detail} if detail else outcome)
            if result != "moved":
                replaced[id(o.finding)] = not_repaired(o.finding, Severity.INFO, skipped=detail)
                report.counters["skipped"] += 1
                continue
            replaced[id(o.finding)] = repaired(
                o.finding,
                "quarantined",
                action="quarantined",
                quarantined_to=str(dst),
                journal=str(run.dir / JOURNAL_NAME),
            )
            report.counters["quarantined"] += 1
        journal.sync()


def _quarantine_one(run_dir: Path, base: Path, o: OrphanLink, dst: Path) -> tuple[str, str]:
    """Move one orphan link into the quarantine, safe next to a live registry.

    Moves only a link unchanged since its re-check, and puts it back when, after the move,
    the link turns out to have changed or its blob's data appeared (a push that wrote it
    meanwhile). Returns (``moved``/``skipped``/``put-back``, why).
    """
    reason = _recheck_orphan(base, o)
    if reason is not None:
        return "skipped", reason
    before = os.lstat(o.path)
    _make_dirs(run_dir, dst.parent)
    try:
        _move_file(o.path, dst)
    except SourceChanged:
        return "skipped", "link changed while it was being moved"
    after = os.lstat(dst)
    content = read_link_file(str(dst))
    why = blob_might_exist(o.registry.v2, o.digest)
    changed = not same_file_state(before, after) or (
        isinstance(content, ReadFailure) or check_link_content(content, digest_hex(o.digest))
    )
    if not changed and why is None:
        return "moved", ""
    detail = "link changed during the move" if changed else f"during the move: {why}"
    try:
        assert_no_symlinks(base, o.path, include_last=False)
        _move_file(dst, o.path)
    except FileExistsError:
        # The registry wrote the link again meanwhile: the store has its link, our copy stays.
        return "put-back", f"{detail}; the registry rewrote the link, quarantined copy kept"
    return "put-back", detail


def _relink_all(
    run: _Run,
    children: list[OrphanChild],
    options: FixOptions,
    replaced: dict[int, Finding],
    report: Report,
) -> None:
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

        def recheck(child: OrphanChild = child) -> str | None:
            return _recheck_child(child.registry, child.repository, child.digest)

        extra = {"indexes": sorted({str(f.details.get("index")) for f in child.findings})}
        _relink_one(
            run, child.registry, child.repository, child.digest, child.link_path,
            Kind.ORPHAN_INDEX_CHILD, recheck, extra, child.findings, replaced, report,
        )  # fmt: skip


def _recheck_layer(registry: RegistryStorage, repository: str, digest: Digest) -> str | None:
    """Right before writing a layer link: None if it is still missing and the data present."""
    if os.path.lexists(layer_link_path(registry.v2, repository, digest)):
        return "layer link reappeared since the scan"
    try:
        if not stat.S_ISREG(os.stat(blob_data_path(registry.v2, digest)).st_mode):
            return "blob data is not a regular file"
    except OSError as exc:
        return f"blob data is gone or unreadable ({exc.strerror or exc})"
    return None


def _relink_layers(
    run: _Run,
    findings: list[Finding],
    options: FixOptions,
    replaced: dict[int, Finding],
    report: Report,
) -> None:
    registries = {r.name: r for r in run.layout.registries}
    for f in findings:
        if f.kind is not Kind.LAYER_LINK_MISSING:
            continue
        if not options.relink_layers:
            replaced[id(f)] = dataclasses.replace(
                f,
                details={
                    **f.details,
                    "repaired": False,
                    "action": "relinkable: rerun fs fix with --relink-layers",
                },
            )
            continue
        registry = registries[f.registry or ""]
        digest = parse_digest(f.digest or "")
        if digest is None:
            continue

        def recheck(
            registry: RegistryStorage = registry, repo: str = f.repository, d: Digest = digest
        ) -> str | None:
            return _recheck_layer(registry, repo, d)

        _relink_one(
            run, registry, f.repository, digest, layer_link_path(registry.v2, f.repository, digest),
            Kind.LAYER_LINK_MISSING, recheck, {"tags": f.details.get("tags", [])}, (f,),
            replaced, report,
        )  # fmt: skip


def _relink_one(
    run: _Run,
    registry: RegistryStorage,
    repository: str,
    digest: Digest,
    target: Path,
    kind: Kind,
    recheck: Callable[[], str | None],
    extra: dict[str, Any],
    findings: tuple[Finding, ...] | list[Finding],
    replaced: dict[int, Finding],
    report: Report,
) -> None:
    """Write one missing link, journaled (with the folders it creates) before it is written."""
    base = run.base
    journal = run.open()
    assert run.dir is not None
    seq = journal.next_seq()
    try:
        reason = recheck()
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
                "kind": str(kind),
                "registry": registry.name,
                "repository": repository,
                "digest": digest,
                "path": str(target),
                "relpath": rel.as_posix(),
                "content": digest,
                "created_dirs": [relative_inside(base, m).as_posix() for m in missing],
                **extra,
            }
        )
        journal.sync()
        _make_dirs(base, target.parent)
        write_link(target, link_content(digest))
    except (OSError, ValueError) as exc:
        journal.write({"type": "outcome", "seq": seq, "result": "failed", "detail": str(exc)})
        for f in findings:
            replaced[id(f)] = not_repaired(f, Severity.ERROR, error=str(exc))
        report.counters["repair_failed"] += 1
        return
    journal.write({"type": "outcome", "seq": seq, "result": "relinked"})
    journal.sync()
    for f in findings:
        replaced[id(f)] = repaired(
            f, "relinked", action="relinked", journal=str(run.dir / JOURNAL_NAME)
        )
    report.counters["relinked_layers" if kind is Kind.LAYER_LINK_MISSING else "relinked"] += 1


# --- restore ---------------------------------------------------------------------------------


def _restore_target_ok(rel: Path) -> bool:
    """Restore only ever writes link files under some registry's ``repositories`` folder."""
    parts = rel.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == V2_PARTS and parts[i + 3] == "repositories":
            return parts[-1] == "link" and i in (0, 1)
    return False








def find_runs(directory: Path, run: str | None = None) -> list[Path]:
    """The run folders `directory` names, newest first: itself if it holds a journal, else
    every run folder in it (a ``--quarantine`` folder); `run` picks one by name."""
    directory = Path(os.path.abspath(directory))
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a quarantine folder or run folder")
    directory = directory.resolve()
    if _is_regular(directory / JOURNAL_NAME):
        if run is not None and run != directory.name:
            raise UsageError(f"--run {run}: {directory} is itself the run {directory.name}")
        return [directory]
    try:
        entries = sorted(os.scandir(directory), key=lambda e: run_sort_key(e.name), reverse=True)
    except OSError as exc:
        raise UsageError(f"{directory}: cannot list: {exc.strerror}") from exc
    runs = [
        Path(e.path)
        for e in entries
        if e.is_dir(follow_symlinks=False) and _is_regular(Path(e.path) / JOURNAL_NAME)
    ]
    if run is not None:
        runs = [r for r in runs if r.name == run]
        if not runs:
            raise UsageError(
                f"--run {run}: no such run folder with a {JOURNAL_NAME} in {directory}"
            )
    if not runs:
        raise UsageError(
            f"{directory}: no {JOURNAL_NAME} here nor in any folder in it "
            "(give the --quarantine folder of fs fix, or one run folder in it)"
        )
    return runs


def restore_quarantine(directory: Path, run: str | None = None) -> Report:
    """Undo `fs fix` runs: `directory` is one run folder or the ``--quarantine`` folder (every
    run in it, newest first; `run` names one). Says how many links went back."""
    t0 = time.perf_counter()
    runs = find_runs(directory, run)
    if len(runs) == 1:
        report = restore_run(runs[0])
    else:
        report = Report(mode="fs-restore", target=str(directory), started_at=time.time())
        for rd in runs:
            one = restore_run(rd)
            report.findings.extend(one.findings)
            report.counters.update(one.counters)
            report.notes.extend(f"{rd.name}: {n}" for n in one.notes)
        report.extra["runs"] = [str(r) for r in runs]
    report.counters["runs"] = len(runs)
    c = report.counters
    report.notes.append(
        f"restore: put back {c['links_put_back']} link(s), removed {c['links_removed']} "
        f"recreated link(s), {c['not_needed']} already in place, {c['conflict']} conflict(s), "
        f"from {len(runs)} run(s)"
    )
    report.duration_seconds = time.perf_counter() - t0
    return report


def restore_run(run_dir: Path) -> Report:
    """Undo one `fs fix` run from its journal, newest action first; idempotent.

    A quarantined link goes back only where nothing is in the way; a link we created is moved
    to ``RUN/undone/`` (not deleted), and folders we created are removed only if empty.
    Anything that does not match the journal is a `restore_conflict` finding (exit 1).
    """
    t0 = time.perf_counter()
    run_dir = Path(os.path.abspath(run_dir)).resolve()
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
        report.add(conflict(f"journal line unusable: {msg}", str(journal_path), {}))
    done = {
        r.get("seq")
        for r in records
        if r.get("type") == "restore" and r.get("result") in ("restored", "not-needed")
    }
    actions = [r for r in records if r.get("type") in ("quarantine", "relink")]
    with layout_lock(layout):
        journal = Journal(journal_path)
        try:
            for rec in sorted(actions, key=lambda r: -int(r.get("seq", 0) or 0)):
                if rec.get("seq") in done:
                    report.counters["already_restored"] += 1
                    continue
                finding, result = _restore_one(base, run_dir, rec)
                report.add(finding)
                report.counters[result.replace("-", "_")] += 1
                if result == "restored":
                    key = "links_put_back" if rec["type"] == "quarantine" else "links_removed"
                    report.counters[key] += 1
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
        return conflict(f"unsafe journal record: {exc}", None, rec), "conflict"
    try:
        if rec["type"] == "quarantine":
            return _restore_quarantined(base, run_dir, rel, target, rec)
        return _undo_relink(base, run_dir, rel, target, rec)
    except (OSError, ValueError) as exc:
        return conflict(f"restore of {target} failed: {exc}", str(target), rec), "conflict"


def _restore_quarantined(
    base: Path, run_dir: Path, rel: Path, target: Path, rec: dict[str, Any]
) -> tuple[Finding, str]:
    copy = run_dir / TREE_DIRNAME / rel
    assert_no_symlinks(run_dir, copy)
    want = rec.get("sha256")
    kind = str(rec.get("kind", Kind.ORPHAN_LAYER_LINK))
    if os.path.lexists(target):
        # Checked first: a run killed between its copy and its unlink left both in place.
        have_target = _file_sha256(target)
        if have_target is not None and have_target[0] == want:
            return restored(kind, f"{target} already in place", str(target), rec), "not-needed"
        return conflict(f"{target} exists with other content; left alone", str(target), rec), (
            "conflict"
        )
    have_copy = _file_sha256(copy) if _is_regular(copy) else None
    if have_copy is None:
        return conflict(f"quarantined copy {copy} is missing", str(target), rec), "conflict"
    if have_copy[0] != want:
        return (
            conflict(f"quarantined copy {copy} changed since it was journaled", str(copy), rec),
            "conflict",
        )
    _make_dirs(base, target.parent)
    try:
        _move_file(copy, target)
    except FileExistsError:
        return conflict(f"{target} appeared meanwhile; left alone", str(target), rec), "conflict"
    return restored(kind, f"restored {target}", str(target), rec), "restored"


def _undo_relink(
    base: Path, run_dir: Path, rel: Path, target: Path, rec: dict[str, Any]
) -> tuple[Finding, str]:
    content = rec.get("content")
    digest = parse_digest(content) if isinstance(content, str) else None
    if digest is None:
        raise ValueError("relink record without a valid digest")
    kind = str(rec.get("kind", Kind.ORPHAN_INDEX_CHILD))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(str(target) + TMP_SUFFIX)  # a relink killed before its rename
    if not os.path.lexists(target):
        _remove_created_dirs(base, rec)  # a relink that failed half-way may have made some
        return restored(kind, f"{target} already absent", str(target), rec), "not-needed"
    current = read_link_file(str(target))
    if isinstance(current, ReadFailure) or current != link_content(digest):
        return conflict(f"{target} no longer holds {digest}; left alone", str(target), rec), (
            "conflict"
        )
    undone = run_dir / UNDONE_DIRNAME / rel
    _make_dirs(run_dir, undone.parent)
    _move_file(target, undone)
    _remove_created_dirs(base, rec)
    message = f"removed recreated link {target} (kept in {undone})"
    return restored(kind, message, str(target), rec), "restored"


def _remove_created_dirs(base: Path, rec: dict[str, Any]) -> None:
    """Remove the folders a relink created, deepest first, and only those that are empty."""
    created = rec.get("created_dirs") or []
    for d in sorted((c for c in created if isinstance(c, str)), key=len, reverse=True):
        path = base / safe_relpath(d)
        assert_no_symlinks(base, path)
        with contextlib.suppress(OSError):
            os.rmdir(path)  # only ever succeeds on an empty folder
