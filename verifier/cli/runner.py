"""The one runner every command uses: run, write the report and metrics, exit with the right code.

0 clean, 1 defects found, 2 usage or bad input, 3 could not complete. An error becomes one line
on stderr (a traceback only with ``--verbose``); a bug still exits 3 with one line.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import typer

from verifier.errors import ExitCode, VerifierError
from verifier.model.findings import Report
from verifier.output import Format, write_report
from verifier.output.prometheus.destinations import MetricsOutput


def fail(message: str, code: ExitCode) -> typer.Exit:
    """Print `message` as the one error line and return the exit that carries `code`."""
    typer.echo(f"regverify: error: {message}", err=True)
    return typer.Exit(int(code))


def record_failure(metrics: MetricsOutput | None, started: float) -> None:
    """Record a run that raised; a metrics error is shown, but the run's own error decides."""
    if metrics is None or not metrics.enabled:
        return
    try:
        metrics.emit_failure(time.monotonic() - started)
    except VerifierError as exc:
        typer.echo(f"regverify: error: {exc}", err=True)


def write(report: Report, fmt: Format, output: Path | None,
          metrics: MetricsOutput | None = None) -> typer.Exit | None:
    """Write the report; the exit to raise when it cannot be written, else None."""
    try:
        # `--format prometheus` carries the same labels as the metrics outputs.
        reporter = metrics.reporter() if metrics and fmt is Format.PROMETHEUS else None
        write_report(report, fmt, output, reporter)
    except OSError as exc:
        return fail(f"cannot write report to {output}: {exc.strerror}", ExitCode.USAGE)
    return None


def run_report(body: Callable[[], Report], fmt: Format, output: Path | None, verbose: bool,
               metrics: MetricsOutput | None = None) -> NoReturn:
    """Run `body`, write its report (and metrics), exit with the report's code or the error's.

    With `metrics`, the metrics outputs (`--textfile`, `--pushgateway`) record the run too,
    including a run that raised. An error that carries the report behind it (a refused repair)
    has that report written before its one line: the operator needs both.
    """
    started = time.monotonic()
    try:
        report = body()
    except VerifierError as exc:
        behind = getattr(exc, "report", None)
        if isinstance(behind, Report):
            write(behind, fmt, output)
        elif verbose:
            traceback.print_exc()
        record_failure(metrics, started)
        raise fail(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise fail("interrupted", ExitCode.INCOMPLETE) from None
    except Exception as exc:  # a bug must still honour the contract: exit 3, one line
        if verbose:
            traceback.print_exc()
        record_failure(metrics, started)
        raise fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --verbose)",
                   ExitCode.INCOMPLETE) from None
    for note in report.notes:
        if note.startswith("WARNING"):
            typer.secho(f"regverify: {note}", err=True, fg=typer.colors.RED, bold=True)
    failure = write(report, fmt, output, metrics)
    if metrics is not None and metrics.enabled:
        try:
            metrics.emit(report)
        except VerifierError as exc:
            # Unattended probes must not look healthy when their metrics were lost.
            failure = failure or fail(str(exc), exc.exit_code)
    if failure is not None:
        raise failure
    raise typer.Exit(int(report.exit_code))
