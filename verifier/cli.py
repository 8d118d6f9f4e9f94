"""The `regverify` command line: parse options, build the parts, run, map errors to exit codes.

Nothing below this module prints or exits; everything returns a `Report` or raises a
`VerifierError` whose class carries the exit code.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from verifier.auth import resolve_credentials
from verifier.client import ClientOptions
from verifier.errors import ExitCode, UsageError, VerifierError
from verifier.findings import Report
from verifier.manifest import DEFAULT_MAX_MANIFEST_BYTES
from verifier.reference import parse_reference
from verifier.reporters import Format, write_report
from verifier.verify import RunOptions, verify_image
from verifier.walk import WalkOptions

app = typer.Typer(
    name="regverify",
    help="Prove that every image in a container registry can really be pulled.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Options shared by every HTTP command, declared once.
PlainHttp = Annotated[bool, typer.Option("--plain-http", help="Talk HTTP, not HTTPS.")]
Insecure = Annotated[bool, typer.Option("--insecure", help="Skip TLS certificate verification.")]
CaCert = Annotated[Path | None, typer.Option("--ca-cert", help="PEM file of CA(s) to trust.")]
Username = Annotated[str | None, typer.Option("--username", "-u", help="Registry username.")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Report format.")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here.")]
Concurrency = Annotated[
    int, typer.Option("--concurrency", min=1, max=256, help="Requests in flight at most.")
]
Deep = Annotated[bool, typer.Option("--deep", help="Stream every blob and check its sha256.")]
Timeout = Annotated[float, typer.Option("--timeout", min=0.1, help="Per-request timeout (s).")]
Retries = Annotated[int, typer.Option("--retries", min=0, max=20, help="Retries per request.")]
Deadline = Annotated[
    float | None, typer.Option("--deadline", min=1, help="Give up retrying after this many s.")
]
MaxManifest = Annotated[
    int, typer.Option("--max-manifest-bytes", min=1024, help="Refuse manifests above this size.")
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks on errors.")]


def _fail(message: str, code: ExitCode) -> typer.Exit:
    typer.echo(f"regverify: error: {message}", err=True)
    return typer.Exit(int(code))


def run_command(body: Callable[[], Coroutine[Any, Any, Report]], fmt: Format,
                output: Path | None, verbose: bool) -> None:
    """Run a coroutine producing a Report, write it, exit with its code (or the error's)."""
    try:
        report = asyncio.run(body())
    except VerifierError as exc:
        if verbose:
            traceback.print_exc()
        raise _fail(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", ExitCode.INCOMPLETE) from None
    except Exception as exc:  # a bug must still honour the contract: exit 3, one line
        if verbose:
            traceback.print_exc()
        raise _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --verbose)",
                    ExitCode.INCOMPLETE) from None
    try:
        write_report(report, fmt, output)
    except OSError as exc:
        raise _fail(f"cannot write report to {output}: {exc.strerror}", ExitCode.USAGE) from None
    raise typer.Exit(int(report.exit_code))


def build_run_options(
    host: str,
    *,
    plain_http: bool,
    insecure: bool,
    ca_cert: Path | None,
    username: str | None,
    password_stdin: bool,
    concurrency: int,
    timeout: float,
    retries: int,
    deadline: float | None,
    max_manifest_bytes: int,
    deep: bool,
    max_rps: float | None = None,
) -> RunOptions:
    """Client, walk and credential settings from the shared command-line options."""
    if ca_cert is not None and not ca_cert.is_file():
        raise UsageError(f"--ca-cert {ca_cert}: no such file")
    password = None
    if password_stdin:
        if username is None:
            raise UsageError("--password-stdin needs --username")
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin: nothing on standard input")
    credentials = resolve_credentials(host, username=username, password=password)
    return RunOptions(
        client=ClientOptions(
            plain_http=plain_http, insecure=insecure, ca_cert=ca_cert,
            concurrency=concurrency, timeout=timeout, retries=retries, deadline=deadline,
            max_rps=max_rps, max_manifest_bytes=max_manifest_bytes,
        ),
        walk=WalkOptions(deep=deep),
        credentials=credentials,
    )


@app.callback()
def root() -> None:
    """Exit codes: 0 clean, 1 defects found, 2 usage or bad input, 3 could not complete."""


@app.command("image")
def image_command(
    reference: Annotated[str, typer.Argument(help="host[:port]/repo[:tag][@digest]")],
    plain_http: PlainHttp = False,
    insecure: Insecure = False,
    ca_cert: CaCert = None,
    username: Username = None,
    password_stdin: PasswordStdin = False,
    fmt: FormatOpt = Format.HUMAN,
    output: OutputOpt = None,
    concurrency: Concurrency = 8,
    deep: Deep = False,
    timeout: Timeout = 30.0,
    retries: Retries = 4,
    deadline: Deadline = None,
    max_manifest_bytes: MaxManifest = DEFAULT_MAX_MANIFEST_BYTES,
    verbose: Verbose = False,
) -> None:
    """Verify one image end to end: manifest, every index child, every config and layer."""
    try:
        ref = parse_reference(reference)
        options = build_run_options(
            ref.api_host, plain_http=plain_http, insecure=insecure, ca_cert=ca_cert,
            username=username, password_stdin=password_stdin, concurrency=concurrency,
            timeout=timeout, retries=retries, deadline=deadline,
            max_manifest_bytes=max_manifest_bytes, deep=deep,
        )
    except VerifierError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    if sys.stderr.isatty() and fmt is Format.HUMAN and output is None:
        typer.echo(f"verifying {ref} ...", err=True)
    run_command(lambda: verify_image(ref, options), fmt, output, verbose)


def main() -> None:
    """Console-script entry point."""
    app()
