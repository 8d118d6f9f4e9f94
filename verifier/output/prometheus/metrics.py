"""Prometheus metrics for a run, built with `prometheus_client` (never hand-written exposition).

Every series carries the probe's identity labels, `registry` and `mode` (plus `shard` for a
sharded scan), so several probes can share one node_exporter textfile folder or one
Pushgateway without colliding. The metric names and their meaning are documented in
docs/monitoring.md; the alerts in examples/prometheus/alerts.yml depend on them.

Three callers build on the same families:
- `render` (`--format prometheus`): the metrics of one report;
- `destinations` (`--textfile`, `--pushgateway`): also after a run that could not complete,
  where only the run timestamp, duration and `catalog_accessible 0` are new and every other
  series keeps the value of the last run that produced it (`merge_families`);
- `exporter` (`regverify serve`): the same, held in memory between scans.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from verifier.model.findings import ImageStatus, Kind, Report

#: At most this many `regverify_image_broken` (or `regverify_fs_repository_defects`) series: a
#: registry-wide catastrophe must not become a cardinality explosion in Prometheus. The rest is
#: counted, not listed.
DEFAULT_MAX_BROKEN_SERIES = 500

LAST_RUN = "regverify_last_run_timestamp_seconds"
LAST_SUCCESS = "regverify_last_success_timestamp_seconds"
RUN_DURATION = "regverify_run_duration_seconds"
CATALOG_ACCESSIBLE = "regverify_catalog_accessible"
IMAGES_CHECKED = "regverify_images_checked"
IMAGES_BROKEN = "regverify_images_broken"
DEFECTS = "regverify_defects"
IMAGE_BROKEN = "regverify_image_broken"
IMAGE_BROKEN_TRUNCATED = "regverify_image_broken_truncated"
# prometheus_client names a counter family without `_total`; its sample is `..._total`.
REQUESTS = "regverify_requests"
FS_ORPHAN_LAYER_LINKS = "regverify_fs_orphan_layer_links"
FS_ORPHAN_INDEX_CHILDREN = "regverify_fs_orphan_index_children"
FS_REPOSITORY_DEFECTS = "regverify_fs_repository_defects"
FS_REPOSITORY_DEFECTS_TRUNCATED = "regverify_fs_repository_defects_truncated"
FS_TAGS_BROKEN = "regverify_fs_tags_broken"

#: Every family a run can produce, in exposition order. Only these are carried forward from an
#: earlier textfile, so a stray file never smuggles foreign series into ours.
RUN_FAMILIES: tuple[str, ...] = (
    LAST_RUN, LAST_SUCCESS, RUN_DURATION, CATALOG_ACCESSIBLE, IMAGES_CHECKED, IMAGES_BROKEN,
    DEFECTS, IMAGE_BROKEN, IMAGE_BROKEN_TRUNCATED, REQUESTS, FS_ORPHAN_LAYER_LINKS,
    FS_ORPHAN_INDEX_CHILDREN, FS_REPOSITORY_DEFECTS, FS_REPOSITORY_DEFECTS_TRUNCATED,
    FS_TAGS_BROKEN,
)

_HELP = {
    LAST_RUN: "Unix time at which the last run ended, whether or not it could complete.",
    LAST_SUCCESS: "Unix time at which the last run that verified everything it was asked ended.",
    RUN_DURATION: "Wall-clock duration of the last run in seconds.",
    CATALOG_ACCESSIBLE: "1 if the last run could read what it had to verify (the catalog for a "
                        "scan, the registry for an image, the storage for fs), else 0.",
    IMAGES_CHECKED: "Images (tags or references) the last run verified.",
    IMAGES_BROKEN: "Images the last run found broken (at least one defect).",
    DEFECTS: "Defect findings of the last run by kind (0 for every kind not found).",
    IMAGE_BROKEN: "1 for each image the last run found broken (capped; see "
                  "regverify_image_broken_truncated).",
    IMAGE_BROKEN_TRUNCATED: "Broken images left out of regverify_image_broken by the series cap "
                            "(0 when the list is complete).",
    REQUESTS: "HTTP requests sent to the registry, by status code ('error': no answer).",
    FS_ORPHAN_LAYER_LINKS: "Layer links whose blob data is missing, found by the last fs run.",
    FS_ORPHAN_INDEX_CHILDREN: "Index children whose revision link is missing, found by the last "
                              "fs run.",
    FS_REPOSITORY_DEFECTS: "Defects the last fs run found, per repository and kind (capped; see "
                           "regverify_fs_repository_defects_truncated).",
    FS_REPOSITORY_DEFECTS_TRUNCATED: "(repository, kind) pairs left out of "
                                     "regverify_fs_repository_defects by the series cap.",
    FS_TAGS_BROKEN: "Tags the last fs run found unpullable from storage (what they need is gone), "
                    "including tags still broken after fs fix quarantined their orphan links.",
}


@dataclass(frozen=True)
class Identity:
    """The labels on every series: which probe produced it."""

    registry: str
    mode: str
    shard: str | None = None

    @property
    def label_names(self) -> list[str]:
        """`registry`, `mode` and, for a sharded scan, `shard`."""
        return ["registry", "mode", "shard"] if self.shard else ["registry", "mode"]

    @property
    def label_values(self) -> list[str]:
        """Values in the order of `label_names`."""
        return [self.registry, self.mode, self.shard] if self.shard else [self.registry, self.mode]

    def labels(self) -> dict[str, str]:
        """As a mapping."""
        return dict(zip(self.label_names, self.label_values, strict=True))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when a parsed sample's labels carry exactly this identity."""
        return (labels.get("registry") == self.registry and labels.get("mode") == self.mode
                and labels.get("shard") == self.shard)

    @classmethod
    def of(cls, report: Report) -> Identity:
        """The identity a report speaks for: its registry (or storage path), mode and shard."""
        scan = report.extra.get("scan")
        shard = scan.get("shard") if isinstance(scan, dict) else None
        return cls(_registry_of(report), report.mode, str(shard) if shard else None)


def _registry_of(report: Report) -> str:
    # An image report's target is `host/repo:tag`; its probe is about the host. Scans target
    # the host already, fs runs the storage path.
    if report.mode == "scan" or report.mode.startswith("fs"):
        return report.target
    hosts = sorted({image.reference.split("/", 1)[0] for image in report.images})
    return ",".join(hosts) if hosts else report.target.split("/", 1)[0]


def is_fs(mode: str) -> bool:
    """Filesystem runs (`fs-scan`, `fs-fix`, ...) have their own metrics and no images."""
    return mode.startswith("fs")


def run_completed(report: Report) -> bool:
    """True when the run verified everything it was asked (its exit code is 0 or 1 and nothing
    was left unverified); only then does `regverify_last_success_timestamp_seconds` move."""
    return not report.incomplete and not any(f.is_incomplete for f in report.findings)


def catalog_accessible(report: Report) -> bool:
    """False when the run could not read what it had to verify.

    A scan: the catalog was refused or broke off. An image run: the registry refused our
    credentials. fs runs that produced a report could read their storage.
    """
    if any(f.kind is Kind.CATALOG_INACCESSIBLE for f in report.findings):
        return False
    if report.mode == "image":
        return not any(f.kind is Kind.AUTH_FAILED for f in report.findings)
    return True


def run_end(report: Report) -> float:
    """Unix time at which the run ended (its start plus its duration)."""
    if report.started_at:
        return report.started_at + report.duration_seconds
    return time.time()


def _gauge(name: str, identity: Identity, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, _HELP[name], labels=identity.label_names)
    family.add_metric(identity.label_values, value)
    return family


def report_families(
    report: Report,
    identity: Identity | None = None,
    *,
    max_broken_series: int = DEFAULT_MAX_BROKEN_SERIES,
    requests_by_code: Mapping[str, int] | None = None,
    include_success: bool | None = None,
) -> list[Metric]:
    """Every family a report yields, in `RUN_FAMILIES` order.

    `requests_by_code` replaces the report's own counts (the exporter passes its running
    totals, so the counter only ever grows). `include_success` defaults to `run_completed`:
    a run that could not complete must not move the last-success timestamp.
    """
    identity = identity or Identity.of(report)
    names, values = identity.label_names, identity.label_values
    ended = run_end(report)
    if include_success is None:
        include_success = run_completed(report)
    out: list[Metric] = [_gauge(LAST_RUN, identity, ended)]
    if include_success:
        out.append(_gauge(LAST_SUCCESS, identity, ended))
    out.append(_gauge(RUN_DURATION, identity, report.duration_seconds))
    out.append(_gauge(CATALOG_ACCESSIBLE, identity, 1 if catalog_accessible(report) else 0))

    fs = is_fs(report.mode)
    broken = sorted(
        (i for i in report.images if i.status is ImageStatus.BROKEN),
        key=lambda i: (i.repository, i.tag or i.digest or i.reference),
    )
    if not fs:
        out.append(_gauge(IMAGES_CHECKED, identity, len(report.images)))
        out.append(_gauge(IMAGES_BROKEN, identity, len(broken)))

    by_kind = report.defects_by_kind()
    defects = GaugeMetricFamily(DEFECTS, _HELP[DEFECTS], labels=[*names, "kind"])
    for kind in Kind:  # every kind, 0 when absent: alerts and dashboards never see a gap
        defects.add_metric([*values, str(kind)], by_kind.get(str(kind), 0))
    out.append(defects)

    if not fs:
        cap = max(0, max_broken_series)
        series = GaugeMetricFamily(IMAGE_BROKEN, _HELP[IMAGE_BROKEN],
                                   labels=[*names, "repository", "tag"])
        seen: set[tuple[str, str]] = set()
        for image in broken:
            key = (image.repository, image.tag or image.digest or "")
            if key in seen:
                continue
            if len(seen) >= cap:
                break
            seen.add(key)
            series.add_metric([*values, *key], 1)
        out.append(series)
        out.append(_gauge(IMAGE_BROKEN_TRUNCATED, identity, max(0, len(broken) - len(seen))))

        requests = CounterMetricFamily(REQUESTS, _HELP[REQUESTS], labels=[*names, "code"])
        counts = report.requests_by_code if requests_by_code is None else requests_by_code
        for code, count in sorted(counts.items()):
            requests.add_metric([*values, code], count)
        out.append(requests)
    else:
        out.append(_gauge(FS_ORPHAN_LAYER_LINKS, identity,
                          by_kind.get(str(Kind.ORPHAN_LAYER_LINK), 0)))
        out.append(_gauge(FS_ORPHAN_INDEX_CHILDREN, identity,
                          by_kind.get(str(Kind.ORPHAN_INDEX_CHILD), 0)))
        out.extend(_repository_defects(report, identity, max_broken_series))
        out.append(_gauge(FS_TAGS_BROKEN, identity, len(broken_tags(report))))
    return out


def broken_tags(report: Report) -> set[tuple[str, str]]:
    """(repository, tag) pairs that the error findings of a storage run say cannot be pulled.

    Storage findings name the tags they break in `details["tags"]`; a repaired orphan link is
    `info`, but the image finding that outlives it stays an error, so the tag still counts.
    """
    out: set[tuple[str, str]] = set()
    for finding in report.defects:
        repository, tags = finding.repository, finding.details.get("tags")
        if repository and isinstance(tags, list):
            out.update((repository, str(tag)) for tag in tags)
    return out


def _repository_defects(report: Report, identity: Identity, cap: int) -> list[Metric]:
    """Where the storage is damaged: defects per (repository, kind), so an alert can say which
    repositories to look at. Sorted, capped like the broken-image list."""
    counts = Counter((f.repository, str(f.kind)) for f in report.defects if f.repository)
    names, values = identity.label_names, identity.label_values
    family = GaugeMetricFamily(FS_REPOSITORY_DEFECTS, _HELP[FS_REPOSITORY_DEFECTS],
                               labels=[*names, "repository", "kind"])
    listed = sorted(counts.items())[:max(0, cap)]
    for (repository, kind), count in listed:
        family.add_metric([*values, repository, kind], count)
    return [family, _gauge(FS_REPOSITORY_DEFECTS_TRUNCATED, identity, len(counts) - len(listed))]


def failure_families(identity: Identity, *, ended: float, duration: float) -> list[Metric]:
    """What a run that raised before producing a report still tells: it ran, how long, and
    that it could not read the registry. Everything else keeps its previous value."""
    return [
        _gauge(LAST_RUN, identity, ended),
        _gauge(RUN_DURATION, identity, duration),
        _gauge(CATALOG_ACCESSIBLE, identity, 0),
    ]


def merge_families(previous: Iterable[Metric], update: Sequence[Metric],
                   identity: Identity) -> list[Metric]:
    """`update`, plus the families of `previous` it does not replace (ours, this identity's).

    This is how an incomplete run keeps the last-success timestamp and the broken-image list
    of the last complete run instead of erasing them.
    """
    replaced = {family.name for family in update}
    merged: dict[str, Metric] = {family.name: family for family in update}
    for family in previous:
        if family.name in replaced or family.name not in RUN_FAMILIES:
            continue
        # Only the value samples: a counter's `_created` would describe a run long gone.
        wanted = (family.name, f"{family.name}_total")
        kept = [s for s in family.samples if s.name in wanted and identity.matches(s.labels)]
        if not kept:
            continue
        copy = Metric(family.name, family.documentation or _HELP.get(family.name, ""),
                      family.type)
        copy.samples = kept
        merged[family.name] = copy
    return [merged[name] for name in RUN_FAMILIES if name in merged]


def parse_families(text: str) -> list[Metric]:
    """Families of an exposition text we wrote earlier; unparsable text yields nothing."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        return list(text_string_to_metric_families(text))
    except ValueError:
        # A torn or hand-edited file: start afresh rather than refuse to record this run.
        return []


class FamiliesCollector(Collector):
    """A collector serving a fixed list of families (a report's, or the exporter's latest)."""

    def __init__(self, families: Sequence[Metric] = ()) -> None:
        self.families: list[Metric] = list(families)

    def collect(self) -> Iterator[Metric]:
        """The families as they are now."""
        return iter(list(self.families))


def to_registry(families: Sequence[Metric]) -> CollectorRegistry:
    """A fresh registry holding exactly `families` (nothing process-global leaks in)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FamiliesCollector(families))
    return registry


def exposition(families: Sequence[Metric]) -> str:
    """Prometheus text exposition of `families`."""
    return generate_latest(to_registry(families)).decode("utf-8")


def render(report: Report) -> str:
    """`--format prometheus`: the metrics of one report in the text exposition format."""
    return exposition(report_families(report))

