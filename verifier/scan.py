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
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from verifier.errors import AuthRefused, IncompleteError
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
from verifier.scan_failures import catalog_failure, image_failure, tag_list_failure
from verifier.selection import (
    Filters,
    Shard,
    is_valid_tag,
    matches_any,
    parse_shard,
    read_repos_file,
)
from verifier.verify import RunOptions, display_reference, open_walker, run_counters
from verifier.walk import Walker

# Filters, Shard, parse_shard and read_repos_file live in selection.py; the documented entry
# points name them here.
__all__ = ["CatalogStatus", "Filters", "ScanObserver", "ScanOptions", "ScanRecord", "Shard",
           "parse_shard", "read_repos_file", "verify_registry"]

#: Stop starting new work after this many images in a row could not be verified at all.
DEFAULT_FAILURE_STREAK = 25
#: Notes about names we skipped are capped so a hostile catalog cannot fill the report.
MAX_NOTES = 20

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


class CatalogStatus(StrEnum):
    """How far a scan read the catalog (the report's `scan.catalog`)."""

    READ = "read"
    REFUSED = "refused"
    INCOMPLETE = "incomplete"
    NOT_READ = "not read"


@dataclass
class ScanRecord:
    """What a scan covered, kept typed while it runs; the report's `scan` section at the end."""

    registry: str
    options: ScanOptions
    #: None until the scan has finished with the catalog (or when it never got that far).
    catalog: CatalogStatus | None = None

    def to_extra(self) -> dict[str, Any]:
        """JSON-ready form for `report.extra["scan"]`."""
        shard = self.options.shard
        return {
            "registry": self.registry,
            "shard": str(shard) if shard else None,
            "catalog": self.catalog.value if self.catalog else None,
            "filters": self.options.filters.to_dict(),
        }


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

    def __init__(self, record: ScanRecord, client: RegistryClient, walker: Walker,
                 report: Report, observer: ScanObserver | None, deadline: float | None) -> None:
        options = record.options
        self.record = record
        self.registry = record.registry
        self.client = client
        self.walker = walker
        self.options = options
        self.report = report
        self.observer = observer
        self.deadline = deadline
        self.filters = options.filters
        self.explicit = [r for r in options.filters.explicit_repositories
                         if not matches_any(r, options.filters.exclude_repos)]
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
            self.record.catalog = CatalogStatus.NOT_READ
        for name in self.explicit:
            if name in self._unlisted_explicit and self._in_shard(name):
                yield name

    async def _catalog(self) -> AsyncGenerator[str, None]:
        counters = self.report.counters
        last: str | None = None
        status = CatalogStatus.READ
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
        except (ListingError, AuthRefused, RequestFailed) as exc:
            failure = catalog_failure(self.registry, exc, last=last, explicit=len(self.explicit))
            status = CatalogStatus.REFUSED if failure.refused else CatalogStatus.INCOMPLETE
            self.report.add(failure.finding)
        finally:
            await pages.aclose()
            self.record.catalog = status

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
                except (ListingError, AuthRefused, RequestFailed) as exc:
                    found = tag_list_failure(repository, exc, explicit_only=explicit_only)
                    if found is None:
                        counters["repositories_without_tags"] += 1
                    else:
                        self.report.add(found)
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
                    if not is_valid_tag(tag):
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
        except IncompleteError as exc:  # unreachable mid-scan: not a verdict on the image
            return [image_failure(repository, tag, exc)], None

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


def _finalise(report: Report, walker: Walker, client: RegistryClient,
              record: ScanRecord) -> None:
    report.extra["scan"] = record.to_extra()
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
    record = ScanRecord(registry, scan)
    started = time.monotonic()
    deadline = started + options.client.deadline if options.client.deadline else None
    async with RegistryClient(api_host, options.client, options.credentials,
                              transport=options.transport) as client:
        walker = open_walker(client, options)
        if observer:
            observer.scan_started(lambda: client.request_count)
        try:
            await client.ping()
            await _Scan(record, client, walker, report, observer, deadline).run()
        finally:
            if observer:
                observer.scan_finished()
            _finalise(report, walker, client, record)
    report.duration_seconds = time.monotonic() - started
    return report
