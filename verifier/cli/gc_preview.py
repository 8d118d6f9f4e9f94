"""`regverify fs gc-preview`: predict what ``garbage-collect`` would break, before it runs.

Parses options, runs `verifier.storage.gc_preview.preview_storage`, writes the report and maps
the outcome to the exit code that gates the GC job::

    regverify fs gc-preview /var/lib/docker-registry --delete-untagged \
        && registry garbage-collect --delete-untagged /etc/docker/registry/config.yml

0 every tagged image stays pullable, 1 the GC would break one (or delete data a tag still
references), 2 usage, 3 the prediction is incomplete or the real GC would stop with an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from verifier.cli.fs import storage_metrics
from verifier.cli.options import (
    FormatOpt,
    OutputOpt,
    PushgatewayOpt,
    PushJobOpt,
    TextfileOpt,
    Verbose,
)
from verifier.cli.runner import run_report
from verifier.model.findings import Report
from verifier.output import Format
from verifier.output.prometheus.destinations import DEFAULT_JOB
from verifier.storage.defaults import GcVersion
from verifier.storage.layout import detect_layout, select_registries


def gc_preview_command(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="PATH",
            help="A registry root (holds docker/registry/v2) or a base of several registries.",
            show_default=False,
        ),
    ],
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
    registry: Annotated[
        list[str] | None,
        typer.Option(
            "--registry", metavar="NAME",
            help="Only this registry of a multi-registry base (repeatable).",
        ),
    ] = None,
    fmt: FormatOpt = Format.HUMAN,
    output: OutputOpt = None,
    verbose: Verbose = False,
    textfile: TextfileOpt = None,
    pushgateway: PushgatewayOpt = None,
    push_job: PushJobOpt = DEFAULT_JOB,
) -> None:
    """Predict what `registry garbage-collect` would delete and which tags it would break.

    Exit 0 when every tagged image stays pullable, 1 when the GC would break one, 3 when the
    prediction is incomplete. Changes nothing.
    """

    def body() -> Report:
        # The engine is imported by the command that runs it, not by every start of the CLI.
        from verifier.storage.gc_preview import GcOptions, preview_storage

        layout = select_registries(detect_layout(path), registry or [])
        return preview_storage(layout, GcOptions(version=gc_version,
                                                 delete_untagged=delete_untagged))

    run_report(body, fmt, output, verbose,
               storage_metrics(path, "fs-gc-preview", textfile, pushgateway, push_job))


def register(fs_app: typer.Typer) -> None:
    """Add the ``gc-preview`` command to the ``fs`` sub-app."""
    fs_app.command("gc-preview")(gc_preview_command)
