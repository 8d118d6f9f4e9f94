"""`regverify fs ...`: the filesystem-mode sub-app (mounted by verifier.cli.main as ``fs``).

Parses options, builds the parts, runs, writes the report and maps errors to exit codes:
0 clean / everything repaired, 1 defects that still need a human, 2 usage, 3 incomplete or a
safety rail refused (nothing touched).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from verifier.cli.options import (
    MetricsTarget,
    RegistryOpt,
    ReportTarget,
    StoragePath,
    Verbose,
    metrics_options,
    report_options,
    with_groups,
)
from verifier.cli.runner import run_report
from verifier.model.findings import Report
from verifier.output.prometheus.metrics import Identity
from verifier.storage.defaults import DEFAULT_MAX_ORPHAN_SHARE
from verifier.storage.layout import (
    StorageLayout,
    check_registry_names,
    detect_layout,
    select_registries,
)

if TYPE_CHECKING:
    from verifier.storage.records import ProgressFn

# The engines (verifier.storage.scan, .repair) are imported by the command that runs them:
# every start of the CLI, `regverify scan` probes included, would pay for them otherwise.

fs_app = typer.Typer(
    name="fs",
    help="Filesystem mode: scan distribution's storage on the registry host, repair safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ProxyCacheOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--proxy-cache",
        metavar="NAME",
        help="This registry is a pull-through cache: skip the orphan_index_child check "
        "(repeatable; '.' names a single root).",
    ),
]
VerifyDigests = Annotated[
    bool,
    typer.Option("--verify-digests", help="Hash every blob's data and compare with its name."),
]


def _progress() -> ProgressFn | None:
    """A throttled progress line on stderr, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    last = 0.0

    def show(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < 0.2 and done < total:
            return
        last = now
        pct = f" ({done * 100 // total}%)" if total else ""
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\rverifying blobs: {done / 2**20:.1f}/{total / 2**20:.1f} MiB{pct}{end}")
        sys.stderr.flush()

    return show


def _layout(path: Path, registry: list[str] | None, proxy_cache: list[str] | None) -> StorageLayout:
    """Detect the layout, check every name given, then narrow it to ``--registry``."""
    layout = detect_layout(path)
    check_registry_names(layout, proxy_cache or [], "--proxy-cache")
    return select_registries(layout, registry or [])


@fs_app.command("scan")
@with_groups(report=report_options, metrics=metrics_options)
def scan_command(
    path: StoragePath,
    *,
    registry: RegistryOpt = None,
    proxy_cache: ProxyCacheOpt = None,
    verify_digests: VerifyDigests = False,
    report: ReportTarget,
    verbose: Verbose = False,
    metrics: MetricsTarget,
) -> None:
    """Report orphan links, orphan index children, dangling tags/revisions; change nothing."""

    def body() -> Report:
        from verifier.storage.records import StorageScanOptions as ScanOptions
        from verifier.storage.scan import scan_storage

        layout = _layout(path, registry, proxy_cache)
        options = ScanOptions(verify_digests, frozenset(proxy_cache or []))
        return scan_storage(layout, options, _progress() if verify_digests else None).report

    run_report(body, report.fmt, report.output, verbose,
               metrics.output(Identity(str(path), "fs-scan")))


@fs_app.command("fix")
@with_groups(report=report_options, metrics=metrics_options)
def fix_command(
    path: StoragePath,
    *,
    registry: RegistryOpt = None,
    proxy_cache: ProxyCacheOpt = None,
    verify_digests: VerifyDigests = False,
    quarantine: Annotated[
        Path | None,
        typer.Option(
            "--quarantine",
            metavar="DIR",
            help="Where moved links go, one folder per run "
            "[default: <parent of PATH>/.regverify-quarantine].",
        ),
    ] = None,
    relink_index_children: Annotated[
        bool,
        typer.Option(
            "--relink-index-children",
            help="Recreate a child's missing revision link when that is provably lossless.",
        ),
    ] = False,
    relink_layers: Annotated[
        bool,
        typer.Option(
            "--relink-layers",
            help="Recreate a repository's missing layer link to a blob a tag needs, when the "
            "blob's data is present.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Act even when more than --max-orphan-share look orphaned."),
    ] = False,
    max_orphan_share: Annotated[
        float,
        typer.Option(
            "--max-orphan-share",
            metavar="SHARE",
            min=0.0,
            max=1.0,
            help="Refuse when a registry has a larger share of orphan layer links.",
        ),
    ] = DEFAULT_MAX_ORPHAN_SHARE,
    report: ReportTarget,
    verbose: Verbose = False,
    metrics: MetricsTarget,
) -> None:
    """Quarantine orphan layer links, relink what is provably lossless; never delete."""

    def body() -> Report:
        from verifier.storage.records import StorageScanOptions as ScanOptions
        from verifier.storage.repair import FixOptions, fix_storage

        layout = _layout(path, registry, proxy_cache)
        return fix_storage(
            layout,
            ScanOptions(verify_digests, frozenset(proxy_cache or [])),
            FixOptions(
                quarantine, relink_index_children, force, max_orphan_share, relink_layers
            ),
            _progress() if verify_digests else None,
        )

    run_report(body, report.fmt, report.output, verbose,
               metrics.output(Identity(str(path), "fs-fix")))


@fs_app.command("restore")
@with_groups(report=report_options)
def restore_command(
    run_dir: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            help="The --quarantine folder of fs fix (every run in it, newest first) or one "
            "run folder in it (holds journal.jsonl).",
            show_default=False,
        ),
    ],
    *,
    run: Annotated[
        str | None,
        typer.Option(
            "--run", metavar="NAME",
            help="Only this run folder of the quarantine folder (its name).",
        ),
    ] = None,
    report: ReportTarget,
    verbose: Verbose = False,
) -> None:
    """Put back everything `fs fix` moved or created, from its journals; says how many."""
    from verifier.storage.repair import restore_quarantine

    run_report(lambda: restore_quarantine(run_dir, run), report.fmt, report.output, verbose)
