"""The `regverify` command line: parse options, build the parts, run, map errors to exit codes.

Nothing below this module prints or exits; everything returns a `Report` or raises a
`VerifierError` whose class carries the exit code.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from verifier import __version__, eventloop
from verifier.cli import gc_preview as gc_cli
from verifier.cli.fs import fs_app
from verifier.cli.options import (
    Concurrency,
    Connection,
    MaxBrokenSeries,
    MaxRps,
    MetricsTarget,
    Probing,
    ReportTarget,
    Requests,
    Selection,
    Verbose,
    connection_options,
    metrics_options,
    probing_options,
    report_options,
    request_options,
    selection_options,
    with_groups,
)
from verifier.cli.plugin import (
    parse_images,
    registries_of,
    settings_from_env,
    settings_help,
    verify_images,
)
from verifier.cli.progress import ScanProgress
from verifier.cli.runner import fail, run_report
from verifier.errors import UsageError, VerifierError
from verifier.model.findings import Kind, Report
from verifier.model.manifest import DEFAULT_MAX_MANIFEST_BYTES
from verifier.model.reference import ImageReference, parse_reference, parse_registry
from verifier.output import Format
from verifier.output.prometheus.destinations import MetricsOutput
from verifier.output.prometheus.metrics import DEFAULT_MAX_BROKEN_SERIES, Identity
from verifier.registry.auth import Credentials, docker_config_path, resolve_credentials
from verifier.registry.client import ClientOptions
from verifier.scan import Filters, ScanOptions, parse_shard, read_repos_file, verify_registry
from verifier.settle import PLUGIN_DEFAULT_SETTLE, verify_settled
from verifier.verify import RunOptions, verify_image
from verifier.walk import BlobProbe, WalkOptions

app = typer.Typer(
    name="regverify",
    help="Prove that every image in a container registry can really be pulled.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: rich markup would eat every "[default: ...]" written in a help text, and the
    # docs show this help verbatim (tests/test_help.py regenerates it).
    rich_markup_mode=None,
)

Settle = Annotated[
    float,
    typer.Option("--settle", min=0, max=3600, metavar="SECONDS",
                 help="Re-verify a not-found verdict for up to "
                      "this many seconds (eventually consistent storage right after a push)."),
]


def credentials_note(host: str, credentials: Credentials | None, source: str | None) -> str:
    """Whether credentials went to `host` and where they came from: the next step after a 401."""
    if credentials is None:
        return f"no credentials were sent to {host}: none were found for it"
    if source is None:
        from_env = ("REGVERIFY_USERNAME" in os.environ and "REGVERIFY_PASSWORD" in os.environ)
        source = ("REGVERIFY_USERNAME and REGVERIFY_PASSWORD" if from_env
                  else f"the Docker config {docker_config_path()}")
    return (f"credentials for user {credentials.username!r} were sent to {host} (from {source}) "
            "and refused: check them, and that this user may pull these repositories")


def with_auth_note(report: Report, note: str | None) -> Report:
    """Attach `note` to every auth_failed finding as a next step (the human report prints it)."""
    if note is not None:
        report.findings = [
            replace(f, details={**f.details,
                                "next_steps": [*f.details.get("next_steps", []), note]})
            if f.kind is Kind.AUTH_FAILED else f
            for f in report.findings
        ]
    return report


def run_command(body: Callable[[], Coroutine[Any, Any, Report]], fmt: Format,
                output: Path | None, verbose: bool, metrics: MetricsOutput | None = None,
                auth_note: str | None = None) -> None:
    """Run a coroutine producing a Report, write it, exit with its code (or the error's).

    With `metrics`, the metrics outputs (`--textfile`, `--pushgateway`) record the run too,
    including a run that raised: that is when `regverify_catalog_accessible 0` matters most.
    `auth_note` (see `credentials_note`) goes on every auth_failed finding.
    """
    run_report(lambda: with_auth_note(eventloop.run(body()), auth_note), fmt, output, verbose,
               metrics)


def split_scheme(text: str, plain_http: bool) -> tuple[str, bool]:
    """A registry or reference given as a URL: `http://` means `--plain-http`, `https://` TLS.

    `scan`, `serve` and `image` read the scheme the same way, so `http://host:5000` never
    quietly becomes an HTTPS connection.
    """
    lowered = text.strip().lower()
    if lowered.startswith("http://"):
        return text.strip()[len("http://"):], True
    if lowered.startswith("https://"):
        if plain_http:
            raise UsageError(f"{text.strip()!r} says https:// but --plain-http says HTTP")
        return text.strip()[len("https://"):], False
    return text, plain_http


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
    blob_probe: BlobProbe = BlobProbe.RANGE,
    cache_dir: Path | None = None,
) -> RunOptions:
    """Client, walk and credential settings from the shared command-line options."""
    port = host.rpartition(":")[2] if not host.endswith("]") else ""
    if port.isdigit() and not 0 < int(port) < 65536:
        # The reference grammar allows any digits; the socket layer would crash on them.
        raise UsageError(f"invalid registry {host!r}: port must be 1-65535")
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
        walk=WalkOptions(deep=deep, blob_probe=blob_probe),
        credentials=credentials,
        cache_dir=cache_dir,
    )


def http_run_options(host: str, conn: Connection, concurrency: int, requests: Requests,
                     probing: Probing, max_rps: float | None = None) -> RunOptions:
    """`build_run_options` from the option groups of `image`, `scan` and `serve`."""
    return build_run_options(
        host, plain_http=conn.plain_http, insecure=conn.insecure, ca_cert=conn.ca_cert,
        username=conn.username, password_stdin=conn.password_stdin, concurrency=concurrency,
        timeout=requests.timeout, retries=requests.retries, deadline=requests.deadline,
        max_manifest_bytes=requests.max_manifest_bytes, deep=requests.deep, max_rps=max_rps,
        blob_probe=probing.blob_probe, cache_dir=probing.cache_dir,
    )


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"regverify {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:
    """Exit codes: 0 clean, 1 defects found, 2 usage or bad input, 3 could not complete."""


@app.command("image")
@with_groups(conn=connection_options, report=report_options, requests=request_options,
             probing=probing_options, metrics=metrics_options)
def image_command(
    reference: Annotated[str, typer.Argument(metavar="REFERENCE",
                                              help="host[:port]/repo[:tag][@digest]")],
    *,
    conn: Connection,
    report: ReportTarget,
    concurrency: Concurrency = 8,
    requests: Requests,
    settle: Settle = 0.0,
    probing: Probing,
    metrics: MetricsTarget,
    max_broken_series: MaxBrokenSeries = DEFAULT_MAX_BROKEN_SERIES,
    verbose: Verbose = False,
) -> None:
    """Verify one image end to end: manifest, every index child, every config and layer."""
    try:
        reference, plain_http = split_scheme(reference, conn.plain_http)
        ref = parse_reference(reference)
        options = http_run_options(ref.api_host, replace(conn, plain_http=plain_http),
                                   concurrency, requests, probing)
    except VerifierError as exc:
        raise fail(str(exc), exc.exit_code) from None
    if sys.stderr.isatty() and report.fmt is Format.HUMAN and report.output is None:
        typer.echo(f"verifying {ref} ...", err=True)
    note = credentials_note(ref.api_host, options.credentials, conn.credentials_source)
    run_command(lambda: verify_settled(lambda: verify_image(ref, options), settle),
                report.fmt, report.output, verbose,
                metrics.output(Identity(ref.registry, "image"), max_broken_series), note)


def registry_host(registry: str, conn: Connection) -> tuple[str, Connection]:
    """The host `scan` and `serve` talk to, and the connection its URL scheme implies."""
    registry, plain_http = split_scheme(registry, conn.plain_http)
    return parse_registry(registry), replace(conn, plain_http=plain_http)


def scan_run_options(host: str, selection: Selection, conn: Connection, concurrency: int,
                     requests: Requests, probing: Probing,
                     max_rps: float | None) -> tuple[ScanOptions, RunOptions]:
    """What `scan` and `serve` cover and how they talk to `host` (UsageError on a bad option)."""
    scan = build_scan_options(selection, concurrency)
    options = http_run_options(ImageReference(host, "x").api_host, conn, concurrency, requests,
                               probing, max_rps)
    return scan, options


def scan_identity(host: str, scan: ScanOptions) -> Identity:
    """The metrics labels of a scan: its registry and, for a sharded scan, the shard."""
    return Identity(host, "scan", str(scan.shard) if scan.shard else None)


@app.command("scan")
@with_groups(selection=selection_options, conn=connection_options, report=report_options,
             requests=request_options, probing=probing_options, metrics=metrics_options)
def scan_command(
    registry: Annotated[str, typer.Argument(metavar="REGISTRY",
                                             help="host[:port] of the registry to scan")],
    *,
    selection: Selection,
    conn: Connection,
    report: ReportTarget,
    concurrency: Concurrency = 8,
    max_rps: MaxRps = None,
    requests: Requests,
    probing: Probing,
    metrics: MetricsTarget,
    max_broken_series: MaxBrokenSeries = DEFAULT_MAX_BROKEN_SERIES,
    verbose: Verbose = False,
) -> None:
    """Verify every image of a registry: catalog, tags, then the checks of `image` for each."""
    try:
        host, conn = registry_host(registry, conn)
        scan, options = scan_run_options(host, selection, conn, concurrency, requests, probing,
                                         max_rps)
    except VerifierError as exc:
        raise fail(str(exc), exc.exit_code) from None
    progress = ScanProgress(host)  # draws only when stderr is a terminal
    note = credentials_note(host, options.credentials, conn.credentials_source)
    run_command(lambda: verify_registry(host, options, scan, progress), report.fmt,
                report.output, verbose,
                metrics.output(scan_identity(host, scan), max_broken_series), note)


#: `serve` defaults: a scan every 15 minutes, metrics on loopback unless told.
DEFAULT_INTERVAL = "15m"
DEFAULT_LISTEN = "127.0.0.1:9731"
Interval = Annotated[
    str, typer.Option("--interval", metavar="DURATION",
                      help="Time between scan starts: 15m, 90s, 1h30m or seconds.")
]
Listen = Annotated[
    str, typer.Option("--listen", metavar="HOST:PORT",
                      help="HOST:PORT for /metrics and /healthz (:PORT: every "
                           "interface).")
]


def build_scan_options(selection: Selection, concurrency: int) -> ScanOptions:
    """What a scan covers, from the scan selection options (UsageError on a bad one)."""
    names = list(selection.repo or []) + (
        read_repos_file(selection.repos_from) if selection.repos_from else [])
    filters = Filters.build(names, selection.exclude_repo or [], selection.tag or [],
                            selection.exclude_tag or [])
    if selection.no_catalog and not filters.explicit_repositories:
        raise UsageError("--no-catalog needs repository names (--repos-from or --repo NAME)")
    return ScanOptions(
        filters=filters,
        shard=parse_shard(selection.shard) if selection.shard is not None else None,
        use_catalog=not selection.no_catalog,
        repository_workers=concurrency,
        images_in_flight=max(4, 2 * concurrency),
    )


@app.command("serve")
@with_groups(selection=selection_options, conn=connection_options, requests=request_options,
             probing=probing_options)
def serve_command(
    registry: Annotated[str, typer.Argument(metavar="REGISTRY",
                                             help="host[:port] of the registry to scan")],
    *,
    interval: Interval = DEFAULT_INTERVAL,
    listen: Listen = DEFAULT_LISTEN,
    selection: Selection,
    conn: Connection,
    concurrency: Concurrency = 8,
    max_rps: MaxRps = None,
    requests: Requests,
    probing: Probing,
    max_broken_series: MaxBrokenSeries = DEFAULT_MAX_BROKEN_SERIES,
    verbose: Verbose = False,
) -> None:
    """Exporter: scan on a schedule (first at start-up, never overlapping), serve /metrics."""
    # The exporter (an HTTP server, prometheus_client's collectors) only for this command.
    from verifier.output.prometheus.exporter import Exporter, parse_duration, parse_listen, serve

    try:
        host, conn = registry_host(registry, conn)
        every = parse_duration(interval)
        address = parse_listen(listen)
        scan, options = scan_run_options(host, selection, conn, concurrency, requests, probing,
                                         max_rps)
    except VerifierError as exc:
        raise fail(str(exc), exc.exit_code) from None
    # Our own logger only: httpx logs every request at INFO, which would drown the scan lines.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s regverify serve: %(message)s"))
    logger = logging.getLogger("regverify")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    exporter = Exporter(lambda: verify_registry(host, options, scan), scan_identity(host, scan),
                        every, max_broken_series=max_broken_series)
    try:
        serve(exporter, address)
    except VerifierError as exc:
        raise fail(str(exc), exc.exit_code) from None


@app.command("plugin", epilog=settings_help())
def plugin_command(
    settle: Annotated[
        float | None,
        typer.Option("--settle", min=0, max=3600, metavar="SECONDS",
                     help="Re-verify a not-found verdict for up to this many seconds "
                     f"[default: $PLUGIN_SETTLE or {PLUGIN_DEFAULT_SETTLE:g}]."),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Woodpecker CI plugin: verify $PLUGIN_IMAGE with settings from PLUGIN_* variables."""
    try:
        settings = settings_from_env(os.environ)
        if settle is not None:
            settings = replace(settings, settle=settle)
        refs = parse_images(settings.images)
        options: dict[str, RunOptions] = {}
        for ref in refs:
            if ref.api_host in options:
                continue
            host_options = build_run_options(
                ref.api_host, plain_http=settings.plain_http, insecure=settings.insecure,
                ca_cert=settings.ca_cert, username=None, password_stdin=False,
                concurrency=settings.concurrency, timeout=settings.timeout,
                retries=settings.retries, deadline=None,
                max_manifest_bytes=DEFAULT_MAX_MANIFEST_BYTES, deep=settings.deep,
            )
            if settings.username is not None:
                host_options = replace(host_options, credentials=resolve_credentials(
                    ref.api_host, username=settings.username, password=settings.password))
            options[ref.api_host] = host_options
    except VerifierError as exc:
        raise fail(str(exc), exc.exit_code) from None
    metrics = MetricsTarget(settings.textfile, settings.pushgateway, settings.push_job).output(
        Identity(registries_of(refs), "image"))
    note = "; ".join(
        credentials_note(host, host_options.credentials,
                         "PLUGIN_USERNAME and PLUGIN_PASSWORD" if settings.username else None)
        for host, host_options in options.items())
    run_command(
        lambda: verify_images(refs, lambda ref: verify_image(ref, options[ref.api_host]),
                              settings.settle),
        settings.fmt, settings.output, verbose, metrics, note,
    )


# Filesystem mode: `regverify fs scan|fix|restore` (verifier/cli/fs.py).
gc_cli.register(fs_app)
fs_app.rich_markup_mode = None  # plain help, as for the HTTP commands (see `app`)
app.add_typer(fs_app, name="fs")


def main() -> None:
    """Console-script entry point."""
    app()
