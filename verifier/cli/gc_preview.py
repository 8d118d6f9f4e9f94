"""`regverify fs gc-preview`: predict what ``garbage-collect`` would break, before it runs.

Parses options, runs `verifier.storage.gc_preview.preview_storage`, writes the report and maps
the outcome to the exit code that gates the GC job::

    regverify fs gc-preview /var/lib/docker-registry --delete-untagged \
        && registry garbage-collect --delete-untagged /etc/docker/registry/config.yml

0 every tagged image stays pullable, 1 the GC would break one (or delete data a tag still
references), 2 usage, 3 the prediction is incomplete or the real GC would stop with an error.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Annotated

import typer

from verifier.errors import ExitCode, VerifierError
from verifier.model.findings import Report
from verifier.output import Format, write_report
from verifier.storage.defaults import GcVersion
from verifier.storage.layout import detect_layout, select_registries


def _fail(message: str, code: ExitCode) -> typer.Exit:
    typer.echo(f"regverify: error: {message}", err=True)
    return typer.Exit(int(code))


def _run(path: Path, registry: list[str], version: GcVersion, delete_untagged: bool,
         verbose: bool) -> Report:
    """Detect the layout, narrow it to ``--registry``, predict; errors become one line."""
    # The engine is imported by the command that runs it, not by every start of the CLI.
    from verifier.storage.gc_preview import GcOptions, preview_storage

    try:
        layout = select_registries(detect_layout(path), registry)
        return preview_storage(layout, GcOptions(version=version,
                                                 delete_untagged=delete_untagged))
    except VerifierError as exc:
        if verbose:
            traceback.print_exc()
        raise _fail(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", ExitCode.INCOMPLETE) from None
    except Exception as exc:  # a bug must still honour the contract: exit 3, one line
        if verbose:
            traceback.print_exc()
        raise _fail(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --verbose)",
            ExitCode.INCOMPLETE,
        ) from None


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
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Report format.")] = Format.HUMAN,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write the report here.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks on errors.")] = False,
) -> None:
    """Predict what `registry garbage-collect` would delete and which tags it would break.

    Exit 0 when every tagged image stays pullable, 1 when the GC would break one, 3 when the
    prediction is incomplete. Changes nothing.
    """
    report = _run(path, registry or [], gc_version, delete_untagged, verbose)
    try:
        write_report(report, fmt, output)
    except OSError as exc:
        raise _fail(f"cannot write report to {output}: {exc.strerror}", ExitCode.USAGE) from None
    raise typer.Exit(int(report.exit_code))


def register(fs_app: typer.Typer) -> None:
    """Add the ``gc-preview`` command to the ``fs`` sub-app."""
    fs_app.command("gc-preview")(gc_preview_command)
