"""`regverify fs gc-preview`: predict what ``garbage-collect`` would break, before it runs.

Parses options, runs `verifier.storage.gc_preview.preview_storage`, writes the report and maps
the outcome to the exit code that gates the GC job::

    regverify fs gc-preview /var/lib/docker-registry --delete-untagged \
        && registry garbage-collect --delete-untagged /etc/docker/registry/config.yml

0 every tagged image stays pullable, 1 the GC would break one (or delete data a tag still
references), 2 usage, 3 the prediction is incomplete or the real GC would stop with an error.
"""

from __future__ import annotations

from typing import Annotated

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
from verifier.cli.storage_target import open_storage
from verifier.model.findings import Report
from verifier.output.prometheus.metrics import Identity
from verifier.storage.defaults import GcVersion


@with_groups(store=object_store_options, report=report_options, metrics=metrics_options)
def gc_preview_command(
    path: StoragePath,
    *,
    delete_untagged: Annotated[
        bool,
        typer.Option(
            "--delete-untagged",
            "-m",
            help="Predict `garbage-collect --delete-untagged` (the mode that deletes index "
            "children on 2.8).",
        ),
    ] = False,
    gc_version: Annotated[
        GcVersion,
        typer.Option(
            "--gc-version",
            metavar="2.8|3",
            help="The distribution line whose garbage-collect will run: 2.8 (Debian's "
            "docker-registry, registry:2) or 3 (registry:3).",
        ),
    ] = GcVersion.V2_8,
    registry: RegistryOpt = None,
    store: ObjectStore,
    report: ReportTarget,
    verbose: Verbose = False,
    metrics: MetricsTarget,
) -> None:
    """Predict what `registry garbage-collect` would delete and which tags it would break.

    Exit 0 when every tagged image stays pullable, 1 when the GC would break one, 3 when the
    prediction is incomplete. Changes nothing.
    """

    def body() -> Report:
        # The engine is imported by the command that runs it, not by every start of the CLI.
        from verifier.storage.gc_preview import GcOptions, preview_storage

        opened = open_storage(path, store, registry, None)
        return preview_storage(opened.layout,
                               GcOptions(version=gc_version, delete_untagged=delete_untagged),
                               opened.reader)

    run_report(body, report.fmt, report.output, verbose,
               metrics.output(Identity(str(path), "fs-gc-preview")))


def register(fs_app: typer.Typer) -> None:
    """Add the ``gc-preview`` command to the ``fs`` sub-app."""
    fs_app.command("gc-preview")(gc_preview_command)
