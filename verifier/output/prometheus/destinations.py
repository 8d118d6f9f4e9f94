"""Where a run's metrics go besides stdout: a node_exporter textfile and a Pushgateway.

Both are written after every run, including one that could not complete (that is
when `regverify_catalog_accessible 0` matters most). The rules, shared with `regverify serve`:

- a run that verified everything replaces every series;
- a run that produced a report but could not verify everything replaces every series except
  `regverify_last_success_timestamp_seconds`, which keeps the last complete run's time;
- a run that raised before producing a report only updates the run timestamp, the duration and
  `regverify_catalog_accessible` (0); every other series keeps its previous value.

For the textfile the previous values are read back from the file itself; for the Pushgateway
the same effect comes from its two verbs: PUT replaces the whole group, POST only the metric
names it carries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import push_to_gateway, pushadd_to_gateway
from prometheus_client.core import Metric
from prometheus_client.exposition import basic_auth_handler, default_handler

from verifier.errors import IncompleteError, UsageError
from verifier.model.findings import Report
from verifier.output import Reporter, atomic_write
from verifier.output.prometheus.metrics import (
    DEFAULT_MAX_BROKEN_SERIES,
    Identity,
    exposition,
    failure_families,
    merge_families,
    parse_families,
    report_families,
    run_completed,
    to_registry,
)

DEFAULT_JOB = "regverify"
PUSH_TIMEOUT = 15.0


class TextfileError(UsageError):
    """The textfile could not be written (exit 2, like an unwritable `--output`)."""


class PushgatewayError(IncompleteError):
    """The Pushgateway could not be reached or refused the push (exit 3)."""


@dataclass(frozen=True)
class MetricsOutput:
    """Metrics destinations of one command, and the identity known before the run starts.

    The identity is fixed by the command line (registry host, mode, shard), so a run that
    raises before producing a report can still be labelled and recorded.
    """

    identity: Identity
    textfile: Path | None = None
    pushgateway: str | None = None
    job: str = DEFAULT_JOB
    max_broken_series: int = DEFAULT_MAX_BROKEN_SERIES
    push_timeout: float = PUSH_TIMEOUT

    @property
    def enabled(self) -> bool:
        """True when there is somewhere to send metrics."""
        return self.textfile is not None or bool(self.pushgateway)

    def reporter(self) -> Reporter:
        """`--format prometheus` rendering with this command's identity and series cap."""
        def render(report: Report) -> str:
            return exposition(report_families(report, self.identity,
                                              max_broken_series=self.max_broken_series))
        return render

    def grouping_key(self) -> dict[str, str]:
        """Pushgateway grouping key: the registry, the mode and the shard, so a CI plugin run,
        a scan and each shard of a sharded scan keep their own group (a PUT replaces a group)."""
        key = {"registry": self.identity.registry, "mode": self.identity.mode}
        if self.identity.shard:
            key["shard"] = self.identity.shard
        return key

    def emit(self, report: Report) -> None:
        """Record a finished run (complete or not) everywhere configured."""
        update = report_families(report, self.identity,
                                 max_broken_series=self.max_broken_series)
        self._deliver(update, replace_all=run_completed(report))

    def emit_failure(self, duration: float, ended: float | None = None) -> None:
        """Record a run that raised before producing a report."""
        update = failure_families(self.identity, ended=time.time() if ended is None else ended,
                                  duration=duration)
        self._deliver(update, replace_all=False)

    def _deliver(self, update: Sequence[Metric], *, replace_all: bool) -> None:
        # Both destinations are attempted even if the first fails; the first error is raised.
        errors: list[Exception] = []
        if self.textfile is not None:
            try:
                write_textfile(self.textfile, update, self.identity, replace_all=replace_all)
            except TextfileError as exc:
                errors.append(exc)
        if self.pushgateway:
            try:
                push(self.pushgateway, self.job, self.grouping_key(), update,
                     replace_all=replace_all, timeout=self.push_timeout)
            except PushgatewayError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def write_textfile(path: Path, update: Sequence[Metric], identity: Identity, *,
                   replace_all: bool) -> None:
    """Atomically (re)write a textfile-collector file; keep earlier values unless replacing."""
    families = list(update)
    if not replace_all:
        try:
            previous = parse_families(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            previous = []  # first run, or unreadable: nothing to carry forward
        families = merge_families(previous, update, identity)
    try:
        # node_exporter reads only `*.prom`, and reads whatever is there: a temporary file
        # renamed into place means it never sees half a file (atomic_write).
        atomic_write(path, exposition(families))
    except OSError as exc:
        raise TextfileError(f"cannot write --textfile {path}: {exc.strerror or exc}") from None


def push(gateway: str, job: str, grouping_key: dict[str, str], families: Sequence[Metric], *,
         replace_all: bool, timeout: float = PUSH_TIMEOUT) -> None:
    """PUT (replace the group) or POST (replace only these metric names) to a Pushgateway."""
    registry = to_registry(families)
    verb = push_to_gateway if replace_all else pushadd_to_gateway
    # `http://user:password@host:9091` means Basic auth (a Pushgateway behind web.config or a
    # proxy); urllib would take the user info for part of the host name.
    parts = urlsplit(gateway if "//" in gateway else f"http://{gateway}")
    handler = default_handler
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")

        def handler(url: str, method: str, timeout: float | None,
                    headers: list[tuple[str, str]], data: bytes) -> Callable[[], None]:
            return basic_auth_handler(url, method, timeout, headers, data, user, password)

    try:
        verb(redact_url(gateway), job=job, registry=registry, grouping_key=grouping_key,
             timeout=timeout, handler=handler)
    except (URLError, OSError, ValueError) as exc:
        if isinstance(exc, HTTPError):
            exc.close()  # it holds the response's socket open
        # HTTPError (a URLError) says "HTTP Error 400: ..."; a connection error has a reason.
        reason = exc if getattr(exc, "code", None) else getattr(exc, "reason", None) or exc
        raise PushgatewayError(
            f"cannot push metrics to {redact_url(gateway)}: {reason}") from None


def redact_url(url: str) -> str:
    """`url` without any `user:password@` part, for messages."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc)).removeprefix("//")
