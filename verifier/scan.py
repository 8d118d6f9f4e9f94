"""`regverify scan`: catalog -> repositories -> tags -> the same walk as `regverify image`.

The scan streams. Catalog pages are read as the repository workers need them (a bounded queue
sits between the two), each repository's tags are verified with a bounded number of images in
flight, and once a repository is finished its memoised verdicts are dropped from the `Walker`.
Memory therefore follows the defects found, the distinct digests of the repositories in flight
and the per-image verdicts of the report, not the size of the catalog; the client's semaphore
bounds the requests in flight for the whole run.

Nothing here prints: progress goes to an optional `ScanObserver`, the result is a `Report`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import os
import re
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from verifier.errors import AuthRefused, IncompleteError, UsageError
from verifier.model.findings import (
    Finding,
    ImageResult,
    ImageStatus,
    Kind,
    Report,
    Severity,
    image_status,
)
from verifier.model.reference import ImageReference, is_valid_repository
from verifier.registry.client import RegistryClient, RequestFailed
from verifier.registry.listing import (
    DEFAULT_MAX_PAGES,
    PAGE_SIZE_MAX,
    ListingError,
    iter_pages,
)
from verifier.verify import RunOptions, display_reference, open_walker, run_counters
from verifier.walk import Walker

#: Stop starting new work after this many images in a row could not be verified at all.
DEFAULT_FAILURE_STREAK = 25
#: Notes about names we skipped are capped so a hostile catalog cannot fill the report.
MAX_NOTES = 20

JOB_INDEX_ENV = "JOB_COMPLETION_INDEX"
_GLOB_META = frozenset("*?[")
# Tags follow the reference grammar `[\w][\w.-]{0,127}` (ASCII word characters).
_TAG_RE = re.compile(r"^\w[\w.-]{0,127}$", re.ASCII)
_REPO_GLOB_CHARS = re.compile(r"^[a-z0-9._/*?\[\]!-]+$")
_TAG_GLOB_CHARS = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]+$")


# --- filters -------------------------------------------------------------------------------------


def is_glob(pattern: str) -> bool:
    """True when `pattern` uses a wildcard (`*`, `?` or `[...]`), false for a plain name."""
    return any(c in _GLOB_META for c in pattern)


def _brackets_closed(pattern: str) -> bool:
    # fnmatch silently treats an unclosed `[` as a literal character; a user who typed one
    # almost certainly meant a class, so we call it a usage error instead of matching nothing.
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            close = pattern.find("]", j)
            if close < 0:
                return False
            i = close
        i += 1
    return True


def validate_repo_pattern(pattern: str, option: str = "--repo") -> str:
    """A repository glob or name as given to `--repo`/`--exclude-repo`; UsageError if unusable."""
    if not pattern or pattern != pattern.strip():
        raise UsageError(f"{option} {pattern!r}: empty or surrounded by spaces")
    if pattern.lower() != pattern:
        raise UsageError(f"{option} {pattern!r}: repository names are lowercase")
    if not _REPO_GLOB_CHARS.match(pattern) or not _brackets_closed(pattern):
        raise UsageError(f"{option} {pattern!r}: not a repository name or glob "
                         "(a-z 0-9 . _ - / and the wildcards * ? [...])")
    if not is_glob(pattern) and not is_valid_repository(pattern):
        raise UsageError(f"{option} {pattern!r}: not a valid repository name")
    return pattern


def validate_tag_pattern(pattern: str, option: str = "--tag") -> str:
    """A tag glob as given to `--tag`/`--exclude-tag`; UsageError if unusable."""
    if not pattern or not _TAG_GLOB_CHARS.match(pattern) or not _brackets_closed(pattern):
        raise UsageError(f"{option} {pattern!r}: not a tag or tag glob "
                         "(A-Z a-z 0-9 _ . - and the wildcards * ? [...])")
    if not is_glob(pattern) and not _TAG_RE.match(pattern):
        raise UsageError(f"{option} {pattern!r}: not a valid tag")
    return pattern


def read_repos_file(path: Path) -> list[str]:
    """Names from `--repos-from FILE`: one a line; blank lines and `#` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot read --repos-from {path}: {reason}") from None
    names: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not is_valid_repository(name):
            raise UsageError(f"--repos-from {path}:{number}: {name!r} is not a repository name")
        names.append(name)
    return names


def _matches(name: str, patterns: Iterable[str]) -> bool:
    # fnmatchcase: `*` also crosses `/`, so `infra/*` covers `infra/a/b` (documented).
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class Filters:
    """Which repositories and tags a scan covers; every field is a tuple of globs."""

    repos: tuple[str, ...] = ()
    exclude_repos: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()

    @classmethod
    def build(cls, repos: Iterable[str] = (), exclude_repos: Iterable[str] = (),
              tags: Iterable[str] = (), exclude_tags: Iterable[str] = ()) -> Filters:
        """Validate every pattern (UsageError, exit 2, on the first bad one)."""
        return cls(
            tuple(dict.fromkeys(validate_repo_pattern(p) for p in repos)),
            tuple(validate_repo_pattern(p, "--exclude-repo") for p in exclude_repos),
            tuple(validate_tag_pattern(p) for p in tags),
            tuple(validate_tag_pattern(p, "--exclude-tag") for p in exclude_tags),
        )

    @property
    def explicit_repositories(self) -> tuple[str, ...]:
        """Include patterns without wildcards: names scanned even without a catalog."""
        return tuple(p for p in self.repos if not is_glob(p))

    def repository_selected(self, name: str) -> bool:
        """Included (no include patterns means everything) and not excluded."""
        if self.repos and not _matches(name, self.repos):
            return False
        return not _matches(name, self.exclude_repos)

    def tag_selected(self, tag: str) -> bool:
        """Included (no include patterns means every tag) and not excluded."""
        if self.tags and not _matches(tag, self.tags):
            return False
        return not _matches(tag, self.exclude_tags)

    def to_dict(self) -> dict[str, list[str]]:
        """JSON-ready form for the report."""
        return {"repos": list(self.repos), "exclude_repos": list(self.exclude_repos),
                "tags": list(self.tags), "exclude_tags": list(self.exclude_tags)}


# --- sharding ------------------------------------------------------------------------------------


def shard_of(repository: str, count: int) -> int:
    """The shard (0..count-1) a repository belongs to: a hash stable across runs and machines.

    Python's `hash()` is salted per process, so every worker would split differently; the first
    8 bytes of the name's sha256 are the same everywhere, which is what makes N uncoordinated
    workers cover the registry exactly once.
    """
    value = int.from_bytes(hashlib.sha256(repository.encode("utf-8")).digest()[:8], "big")
    return value % count


@dataclass(frozen=True)
class Shard:
    """One of `count` disjoint slices of a registry's repositories (0-based `index`)."""

    index: int
    count: int

    def __contains__(self, repository: object) -> bool:
        return isinstance(repository, str) and shard_of(repository, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, env: Mapping[str, str] | None = None) -> Shard:
    """`I/N` (0 <= I < N), or `auto/N` to take I from `$JOB_COMPLETION_INDEX` (Indexed Job)."""
    index_text, sep, count_text = text.strip().partition("/")
    if not sep or not count_text.isdigit() or int(count_text) < 1:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 2/8 (or auto/N)")
    count = int(count_text)
    if index_text == "auto":
        environ = os.environ if env is None else env
        index_text = environ.get(JOB_INDEX_ENV, "").strip()
        if not index_text:
            raise UsageError(f"--shard {text!r}: ${JOB_INDEX_ENV} is not set")
        source = f"${JOB_INDEX_ENV}={index_text}"
    else:
        source = f"--shard {text}"
    if not index_text.isdigit():
        raise UsageError(f"{source}: the shard index must be a number")
    index = int(index_text)
    if index >= count:
        raise UsageError(f"{source}: the shard index must be 0..{count - 1} (it is 0-based)")
    return Shard(index, count)


# --- scan options and observer -------------------------------------------------------------------


@dataclass(frozen=True)
class ScanOptions:
    """What to scan and how much of it to hold at once."""

    filters: Filters = field(default_factory=Filters)
    shard: Shard | None = None
    use_catalog: bool = True
    page_size: int = PAGE_SIZE_MAX
    max_pages: int = DEFAULT_MAX_PAGES
    repository_workers: int = 8
    images_in_flight: int = 16
    failure_streak: int = DEFAULT_FAILURE_STREAK


class ScanObserver(Protocol):
    """Receives progress events (the TTY display); must not block."""

    def scan_started(self, requests: Callable[[], int]) -> None:
        """The scan began; `requests()` returns the requests sent so far."""

    def repository_done(self, repository: str) -> None:
        """Every tag of `repository` has been verified."""

    def image_done(self, image: ImageResult, defects: int) -> None:
        """One image got its verdict; `defects` is its number of defect findings."""

    def scan_finished(self) -> None:
        """The scan is over (also on errors)."""


# --- the scan ------------------------------------------------------------------------------------


class _Scan:
    """One run over one registry: the producer (catalog), repository workers, image tasks."""

    def __init__(self, registry: str, client: RegistryClient, walker: Walker,
                 options: ScanOptions, report: Report, observer: ScanObserver | None,
                 deadline: float | None) -> None:
        self.registry = registry
        self.client = client
        self.walker = walker
        self.options = options
        self.report = report
        self.observer = observer
        self.deadline = deadline
        self.filters = options.filters
        self.explicit = [r for r in options.filters.explicit_repositories
                         if not _matches(r, options.filters.exclude_repos)]
        self._unlisted_explicit = set(self.explicit)
        self._image_slots = asyncio.Semaphore(max(1, options.images_in_flight))
        self._failure_streak = 0
        self.stop_reason: str | None = None

    # -- bookkeeping ------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """A capped note in the report (names we skipped and why)."""
        if len(self.report.notes) < MAX_NOTES:
            self.report.notes.append(text)
        elif len(self.report.notes) == MAX_NOTES:
            self.report.notes.append("further notes suppressed")

    def _stopping(self) -> bool:
        if self.stop_reason is None and self.deadline is not None \
                and time.monotonic() >= self.deadline:
            self.stop_reason = "the --deadline was reached"
        return self.stop_reason is not None

    def _in_shard(self, repository: str) -> bool:
        shard = self.options.shard
        if shard is None or repository in shard:
            return True
        self.report.counters["repositories_in_other_shards"] += 1
        return False

    # -- the producer -----------------------------------------------------------------------

    async def repositories(self) -> AsyncGenerator[str, None]:
        """Catalog entries that pass the filters and the shard, then explicit names unlisted."""
        if self.options.use_catalog:
            catalog = self._catalog()
            async with aclosing(catalog):
                async for name in catalog:
                    yield name
        else:
            self.report.extra["scan"]["catalog"] = "not read"
        for name in self.explicit:
            if name in self._unlisted_explicit and self._in_shard(name):
                yield name

    async def _catalog(self) -> AsyncGenerator[str, None]:
        counters = self.report.counters
        last: str | None = None
        status = "read"
        pages = iter_pages(self.client, "/v2/_catalog", "repositories",
                           page_size=self.options.page_size, max_pages=self.options.max_pages)
        try:
            async for page in pages:
                counters["catalog_pages"] += 1
                for name in page:
                    counters["repositories_listed"] += 1
                    last = name
                    if not is_valid_repository(name):
                        self.note(f"catalog lists {name[:100]!r}, not a valid repository name; "
                                  "skipped")
                        continue
                    self._unlisted_explicit.discard(name)
                    if not self.filters.repository_selected(name):
                        counters["repositories_excluded"] += 1
                        continue
                    if self._in_shard(name):
                        yield name
                if self._stopping():
                    return
        except ListingError as exc:
            status = "refused" if exc.refused else "incomplete"
            self._catalog_problem(exc.message, exc.status, last)
        except AuthRefused as exc:
            status = "refused"
            self._catalog_problem(f"credentials refused for the catalog: {exc}", None, last)
        except RequestFailed as exc:
            status = "incomplete"
            self._catalog_problem(str(exc), exc.status, last)
        finally:
            await pages.aclose()
            self.report.extra["scan"]["catalog"] = status

    def _catalog_problem(self, message: str, status: int | None, last: str | None) -> None:
        where = f"after {last!r}" if last else "from the start"
        carry = (f"; carrying on with the {len(self.explicit)} repositories named explicitly"
                 if self.explicit else "")
        if status in (401, 403):
            message += " (a token needs the registry:catalog:* scope)"
        self.report.add(Finding(
            kind=Kind.CATALOG_INACCESSIBLE, severity=Severity.ERROR, registry=self.registry,
            http_status=status,
            message=f"catalog could not be read {where}: {message}{carry}",
        ))

    # -- repositories -----------------------------------------------------------------------

    async def run(self) -> None:
        """Feed repositories to a fixed pool of workers through a small queue."""
        workers_count = max(1, self.options.repository_workers)
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=workers_count)
        async with asyncio.TaskGroup() as group:
            workers = [group.create_task(self._worker(queue)) for _ in range(workers_count)]
            names = self.repositories()
            async with aclosing(names):
                async for name in names:
                    if self._stopping():
                        break
                    await queue.put(name)
            await queue.join()
            for worker in workers:
                worker.cancel()
        if self.stop_reason:
            self.report.add(Finding(
                kind=Kind.REQUEST_FAILED, severity=Severity.ERROR, registry=self.registry,
                message=f"scan stopped early: {self.stop_reason}; the remaining repositories "
                        "were not verified",
            ))

    async def _worker(self, queue: asyncio.Queue[str]) -> None:
        while True:
            name = await queue.get()
            try:
                if not self._stopping():
                    await self._repository(name)
            finally:
                queue.task_done()

    async def _repository(self, repository: str) -> None:
        counters = self.report.counters
        counters["repositories"] += 1
        explicit_only = repository in self._unlisted_explicit
        endpoint = f"/v2/{repository}/tags/list"
        try:
            # Listing errors are handled inside the group: an exception escaping its body would
            # cancel the images of this repository already under way.
            async with asyncio.TaskGroup() as group:
                try:
                    await self._spawn_images(group, repository, endpoint)
                except ListingError as exc:
                    self._tags_problem(repository, exc.message, exc.status, explicit_only)
                except AuthRefused as exc:
                    self.report.add(Finding(kind=Kind.AUTH_FAILED, severity=Severity.ERROR,
                                            repository=repository, message=f"tag list: {exc}"))
                except RequestFailed as exc:
                    self.report.add(Finding(kind=Kind.REQUEST_FAILED, severity=Severity.ERROR,
                                            repository=repository, http_status=exc.status,
                                            message=f"tag list: {exc}"))
        finally:
            # The repository is finished: its (repository, digest) verdicts can never be asked
            # for again, so keeping them would only make memory grow with the catalog.
            self.walker.forget(repository)
        if self.observer:
            self.observer.repository_done(repository)

    async def _spawn_images(self, group: asyncio.TaskGroup, repository: str,
                            endpoint: str) -> None:
        counters = self.report.counters
        pages = iter_pages(self.client, endpoint, "tags", page_size=self.options.page_size,
                           max_pages=self.options.max_pages)
        async with aclosing(pages):
            async for page in pages:
                for tag in page:
                    if not _TAG_RE.match(tag):
                        self.note(f"{repository}: tag list has {tag[:100]!r}, not a valid tag; "
                                  "skipped")
                        continue
                    if not self.filters.tag_selected(tag):
                        counters["tags_excluded"] += 1
                        continue
                    if self._stopping():
                        return
                    # Bounded across all repositories: a repository of 50,000 tags must not
                    # become 50,000 waiting tasks.
                    await self._image_slots.acquire()
                    group.create_task(self._image(repository, tag))

    def _tags_problem(self, repository: str, message: str, status: int | None,
                      explicit_only: bool) -> None:
        if status == 404:
            if not explicit_only:
                # Listed by the catalog but no tags: distribution does this for a repository
                # holding only uploaded blobs. Nothing to pull, nothing broken.
                self.report.counters["repositories_without_tags"] += 1
                return
            # Named by the user and absent: exactly what `regverify image` says for it.
            self.report.add(Finding(kind=Kind.MANIFEST_MISSING, severity=Severity.ERROR,
                                    repository=repository, http_status=404,
                                    message=f"repository not found ({message})"))
            return
        kind = Kind.AUTH_FAILED if status in (401, 403) else Kind.REQUEST_FAILED
        self.report.add(Finding(kind=kind, severity=Severity.ERROR, repository=repository,
                                http_status=status, message=f"tag list: {message}"))

    # -- images -----------------------------------------------------------------------------

    async def _image(self, repository: str, tag: str) -> None:
        try:
            found, digest = await self._verify(repository, tag)
        finally:
            self._image_slots.release()
        status = image_status(found)
        ref = ImageReference(self.registry, repository, tag)
        image = ImageResult(display_reference(ref), digest, status, repository, tag)
        self.report.counters["tags"] += 1
        self.report.findings.extend(found)
        self.report.images.append(image)
        self._count_failure(status, found)
        if self.observer:
            self.observer.image_done(image, sum(1 for f in found if f.is_defect))

    async def _verify(self, repository: str, tag: str) -> tuple[list[Finding], str | None]:
        try:
            result = await self.walker.verify(repository, tag)
            return result.findings, result.digest
        except AuthRefused as exc:
            kind, message = Kind.AUTH_FAILED, str(exc)
        except IncompleteError as exc:  # unreachable mid-scan: not a verdict on the image
            kind, message = Kind.REQUEST_FAILED, str(exc)
        return [Finding(kind=kind, severity=Severity.ERROR, message=message,
                        repository=repository, reference=tag)], None

    def _count_failure(self, status: ImageStatus, found: list[Finding]) -> None:
        # A registry that went away would otherwise cost every remaining image its full
        # retry budget; after a streak of images that could not be verified at all, stop.
        failed = status is ImageStatus.ERROR and all(
            f.kind is Kind.REQUEST_FAILED for f in found if f.is_incomplete)
        self._failure_streak = self._failure_streak + 1 if failed else 0
        limit = self.options.failure_streak
        if limit and self._failure_streak >= limit and self.stop_reason is None:
            self.stop_reason = (f"{self._failure_streak} images in a row could not be verified "
                                "(requests kept failing)")


def _finalise(report: Report, walker: Walker, client: RegistryClient) -> None:
    report.counters.update(walker.counters)
    report.counters.update(run_counters(client, walker))
    report.requests_by_code.update(client.requests_by_code)
    for key in ("repositories", "tags", "manifests", "blobs"):
        report.counters.setdefault(key, 0)
    # Completion order depends on timing; sorted output diffs cleanly between runs.
    report.images.sort(key=lambda i: i.reference)
    report.findings.sort(key=lambda f: (f.repository, f.reference))


async def verify_registry(registry: str, options: RunOptions, scan: ScanOptions | None = None,
                          observer: ScanObserver | None = None) -> Report:
    """Verify every selected image of a registry; the report's exit code tells the verdict."""
    scan = scan or ScanOptions()
    api_host = ImageReference(registry, "x").api_host
    report = Report(mode="scan", target=registry, started_at=time.time())
    report.extra["scan"] = {
        "registry": registry,
        "shard": str(scan.shard) if scan.shard else None,
        "catalog": None,
        "filters": scan.filters.to_dict(),
    }
    started = time.monotonic()
    deadline = started + options.client.deadline if options.client.deadline else None
    async with RegistryClient(api_host, options.client, options.credentials,
                              transport=options.transport) as client:
        walker = open_walker(client, options)
        if observer:
            observer.scan_started(lambda: client.request_count)
        try:
            await client.ping()
            await _Scan(registry, client, walker, scan, report, observer, deadline).run()
        finally:
            if observer:
                observer.scan_finished()
            _finalise(report, walker, client)
    report.duration_seconds = time.monotonic() - started
    return report
