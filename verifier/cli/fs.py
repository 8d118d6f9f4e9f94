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
    ObjectStore,
    RegistryOpt,
    ReportTarget,
    StoragePath,
    Verbose,
    metrics_options,
    object_store_options,
    report_options,
    with_groups,
)
from verifier.cli.runner import run_report
from verifier.cli.storage_target import (
    S3_SCHEME,
    is_object_location,
    local_only,
    open_bucket,
    open_storage,
    quarantine_key,
)
from verifier.errors import UsageError
from verifier.model.findings import Report
from verifier.output.prometheus.metrics import Identity
from verifier.storage.defaults import DEFAULT_MAX_ORPHAN_SHARE

if TYPE_CHECKING:
    from verifier.storage.records import ProgressFn

# The engines (verifier.storage.scan, .repair) are imported by the command that runs them:
# every start of the CLI, `regverify scan` probes included, would pay for them otherwise.

fs_app = typer.Typer(
    name="fs",
    help="Storage mode: scan distribution's storage (a local folder or s3://), repair safely.",
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


@fs_app.command("scan")
@with_groups(store=object_store_options, report=report_options, metrics=metrics_options)
def scan_command(
    path: StoragePath,
    *,
    registry: RegistryOpt = None,
    proxy_cache: ProxyCacheOpt = None,
    verify_digests: VerifyDigests = False,
    store: ObjectStore,
    report: ReportTarget,
    verbose: Verbose = False,
    metrics: MetricsTarget,
) -> None:
    """Report orphan links, orphan index children, dangling tags/revisions; change nothing."""

    def body() -> Report:
        from verifier.storage.records import StorageScanOptions as ScanOptions
        from verifier.storage.scan import scan_storage

        if is_object_location(path):
            local_only({"--verify-digests": verify_digests})
        opened = open_storage(path, store, registry, proxy_cache)
        options = ScanOptions(verify_digests, frozenset(proxy_cache or []))
        return scan_storage(opened.layout, options, _progress() if verify_digests else None,
                            reader=opened.reader).report

    run_report(body, report.fmt, report.output, verbose,
               metrics.output(Identity(str(path), "fs-scan")))


@fs_app.command("fix")
@with_groups(store=object_store_options, report=report_options, metrics=metrics_options)
def fix_command(
    path: StoragePath,
    *,
    registry: RegistryOpt = None,
    proxy_cache: ProxyCacheOpt = None,
    verify_digests: VerifyDigests = False,
    quarantine: Annotated[
        str | None,
        typer.Option(
            "--quarantine",
            metavar="DIR|s3://BUCKET/PREFIX",
            help="Where moved links go, one folder per run [default: <parent of "
            "PATH>/.regverify-quarantine; for s3://BUCKET/PREFIX: "
            "s3://BUCKET/PREFIX-regverify-quarantine].",
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
    store: ObjectStore,
    report: ReportTarget,
    verbose: Verbose = False,
    metrics: MetricsTarget,
) -> None:
    """Quarantine orphan layer links, relink what is provably lossless; never delete."""

    def body() -> Report:
        from verifier.storage.records import StorageScanOptions as ScanOptions
        from verifier.storage.repair import FixOptions, fix_storage

        scan_options = ScanOptions(verify_digests, frozenset(proxy_cache or []))
        if is_object_location(path):
            from verifier.storage.objectfix import fix_object_storage
            from verifier.storage.objectrepair import ObjectFixOptions

            local_only({"--verify-digests": verify_digests,
                        "--relink-index-children": relink_index_children,
                        "--relink-layers": relink_layers})
            fix = ObjectFixOptions(quarantine_key(quarantine, path), force, max_orphan_share)
            opened = open_storage(path, store, registry, proxy_cache)
            assert opened.objects is not None
            objects = opened.objects
            return fix_object_storage(objects.backend, objects.bucket, objects.prefix,
                                      opened.layout, scan_options, fix, workers=store.workers)
        if quarantine is not None and is_object_location(quarantine):
            raise UsageError(f"--quarantine {quarantine}: a local storage is fixed into a "
                             "local quarantine folder")
        return fix_storage(
            open_storage(path, store, registry, proxy_cache).layout,
            scan_options,
            FixOptions(
                Path(quarantine) if quarantine is not None else None,
                relink_index_children, force, max_orphan_share, relink_layers,
            ),
            _progress() if verify_digests else None,
        )

    run_report(body, report.fmt, report.output, verbose,
               metrics.output(Identity(str(path), "fs-fix")))


@fs_app.command("restore")
@with_groups(store=object_store_options, report=report_options)
def restore_command(
    run_dir: Annotated[
        str,
        typer.Argument(
            metavar="DIR|s3://BUCKET/PREFIX",
            help="The --quarantine folder of fs fix (every run in it, newest first) or one "
            "run folder in it (holds journal.jsonl); in object storage, the quarantine "
            "prefix or one run's prefix.",
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
    store: ObjectStore,
    report: ReportTarget,
    verbose: Verbose = False,
) -> None:
    """Put back everything `fs fix` moved or created, from its journals; says how many."""

    def body() -> Report:
        if is_object_location(run_dir):
            from verifier.storage.objectrepair import ObjectRestoreOptions, restore_objects

            objects = open_bucket(run_dir, store)
            if not objects.prefix:
                raise UsageError(f"{run_dir}: name the quarantine prefix "
                                 f"({S3_SCHEME}BUCKET/PREFIX-regverify-quarantine) or a run in it")
            return restore_objects(objects.bucket, objects.prefix, ObjectRestoreOptions(run=run))
        from verifier.storage.repair import restore_quarantine

        return restore_quarantine(Path(run_dir), run)

    run_report(body, report.fmt, report.output, verbose)
