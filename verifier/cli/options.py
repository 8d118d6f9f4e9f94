"""Command-line options several commands share, each spelled once, and the groups they form.

An option group is a builder function whose parameters are typer options and whose result is
the record a command works with (`Connection`, `ReportTarget`, ...). `with_groups` puts a group's
options into a command's signature where the command names the group, so `--help` lists them
in that place and every command spells and documents them the same way.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from verifier.model.manifest import DEFAULT_MAX_MANIFEST_BYTES
from verifier.output import Format
from verifier.output.prometheus.destinations import DEFAULT_JOB, MetricsOutput
from verifier.output.prometheus.metrics import DEFAULT_MAX_BROKEN_SERIES, Identity
from verifier.walk import BlobProbe

FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Report format.")]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", metavar="FILE",
                 help="Write the report here (atomically) [default: stdout]."),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks on errors.")]
# Metrics outputs, on every command (docs/monitoring.md).
TextfileOpt = Annotated[
    Path | None,
    typer.Option("--textfile", metavar="FILE",
                 help="Also write Prometheus metrics to this file, atomically "
                      "(node_exporter textfile collector), even when the run cannot complete."),
]
PushgatewayOpt = Annotated[
    str | None,
    typer.Option("--pushgateway", metavar="URL",
                 help="Also push Prometheus metrics to this Pushgateway URL "
                      "(grouping key: registry, mode, and shard)."),
]
PushJobOpt = Annotated[str, typer.Option("--push-job", metavar="NAME",
                                         help="Pushgateway job name.")]
MaxBrokenSeries = Annotated[
    int,
    typer.Option("--max-broken-series", min=0, metavar="N",
                 help="At most this many regverify_image_broken series; the rest is counted."),
]

# The HTTP commands (`image`, `scan`, `serve`).
PlainHttp = Annotated[bool, typer.Option("--plain-http", help="Talk HTTP, not HTTPS.")]
Insecure = Annotated[bool, typer.Option("--insecure", help="Skip TLS certificate verification.")]
CaCert = Annotated[Path | None, typer.Option("--ca-cert", metavar="FILE",
                                             help="PEM file of CA(s) to trust.")]
Username = Annotated[str | None, typer.Option("--username", "-u", metavar="NAME",
                                              help="Registry username.")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]
Concurrency = Annotated[
    int, typer.Option("--concurrency", min=1, max=256, metavar="N",
                      help="Requests in flight at most.")
]
MaxRps = Annotated[
    float | None, typer.Option("--max-rps", min=0.1, metavar="R",
                               help="At most this many requests a second.")
]
Deep = Annotated[bool, typer.Option("--deep", help="Stream every blob and check its sha256.")]
Timeout = Annotated[float, typer.Option("--timeout", min=0.1, metavar="SECONDS",
                                        help="Per-request timeout.")]
Retries = Annotated[int, typer.Option("--retries", min=0, max=20, metavar="N",
                                      help="Retries per request for transient failures.")]
Deadline = Annotated[
    float | None,
    typer.Option("--deadline", min=1, metavar="SECONDS",
                 help="Stop retrying once the run is this old [default: none]."),
]
MaxManifest = Annotated[
    int, typer.Option("--max-manifest-bytes", min=1024, metavar="BYTES",
                      help="Refuse manifests above this size.")
]
# Registry cost per blob and repeat scans (docs/performance.md).
BlobProbeOpt = Annotated[
    BlobProbe,
    typer.Option("--blob-probe", metavar="range|head+range",
                 help="How a blob is proved servable without --deep: 'range' "
                      "(one ranged GET of the last byte; catches every defect HEAD+range does) or "
                      "'head+range' (HEAD, then the ranged GET)."),
]
CacheDir = Annotated[
    Path | None,
    typer.Option("--cache-dir", metavar="DIR",
                 help="Keep manifests here across runs (keyed by digest, verified on read): a "
                      "known manifest is checked with a HEAD instead of a GET. Blobs are "
                      "checked every run."),
]

# What a scan covers (`scan`, `serve`).
RepoGlobs = Annotated[
    list[str] | None,
    typer.Option("--repo", metavar="GLOB",
                 help="Only repositories matching this glob (repeatable). A plain "
                      "name is also scanned when the catalog is refused or not read."),
]
ExcludeRepoGlobs = Annotated[
    list[str] | None,
    typer.Option("--exclude-repo", metavar="GLOB",
                 help="Skip repositories matching this glob (repeatable)."),
]
TagGlobs = Annotated[
    list[str] | None, typer.Option("--tag", metavar="GLOB",
                                   help="Only tags matching this glob (repeatable).")
]
ExcludeTagGlobs = Annotated[
    list[str] | None,
    typer.Option("--exclude-tag", metavar="GLOB",
                 help="Skip tags matching this glob (repeatable)."),
]
ReposFrom = Annotated[
    Path | None,
    typer.Option("--repos-from", metavar="FILE",
                 help="File of repository names, one a line; each acts as "
                      "--repo NAME."),
]
NoCatalog = Annotated[
    bool,
    typer.Option("--no-catalog", help="Do not read /v2/_catalog: scan only the names from "
                 "--repos-from and plain --repo."),
]
ShardOpt = Annotated[
    str | None,
    typer.Option("--shard", metavar="I/N",
                 help="I/N: scan only slice I (0-based) of N; auto/N takes I from "
                      "$JOB_COMPLETION_INDEX."),
]

# The storage commands (`fs scan`, `fs fix`, `fs gc-preview`). A str, not a Path: a Path
# would fold the two slashes of ``s3://``.
StoragePath = Annotated[
    str,
    typer.Argument(
        metavar="PATH|s3://BUCKET/PREFIX",
        help="A registry root (holds docker/registry/v2), a base of several registries, or the "
        "same in object storage (PREFIX: the registry's rootdirectory).",
        show_default=False,
    ),
]
S3Endpoint = Annotated[
    str | None,
    typer.Option("--s3-endpoint", metavar="URL",
                 help="S3-compatible endpoint for s3:// locations [default: the AWS "
                      "configuration's, else AWS S3]."),
]
S3PathStyle = Annotated[
    bool,
    typer.Option("--s3-path-style",
                 help="Address buckets as URL paths (endpoint/BUCKET/KEY), as most "
                      "S3-compatible stores need."),
]
S3Workers = Annotated[
    int,
    typer.Option("--s3-workers", metavar="N", min=1, max=256,
                 help="Concurrent listings and reads against object storage."),
]
RegistryOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--registry", metavar="NAME",
        help="Only this registry of a multi-registry base (repeatable).",
    ),
]


@dataclass(frozen=True)
class ObjectStore:
    """How to reach object storage for an ``s3://`` location (credentials: the AWS chain)."""

    endpoint: str | None = None
    path_style: bool = False
    workers: int = 16


def object_store_options(s3_endpoint: S3Endpoint = None, s3_path_style: S3PathStyle = False,
                         s3_workers: S3Workers = 16) -> ObjectStore:
    """The object-storage group."""
    return ObjectStore(s3_endpoint, s3_path_style, s3_workers)


@dataclass(frozen=True)
class ReportTarget:
    """`--format` and `--output`: how and where the report is written."""

    fmt: Format
    output: Path | None


def report_options(fmt: FormatOpt = Format.HUMAN, output: OutputOpt = None) -> ReportTarget:
    """The report options group."""
    return ReportTarget(fmt, output)


@dataclass(frozen=True)
class MetricsTarget:
    """`--textfile`, `--pushgateway`, `--push-job`: where metrics go besides the report."""

    textfile: Path | None = None
    pushgateway: str | None = None
    push_job: str = DEFAULT_JOB

    def output(self, identity: Identity,
               max_broken_series: int = DEFAULT_MAX_BROKEN_SERIES) -> MetricsOutput:
        """The metrics outputs, labelled before the run so a failure can be recorded."""
        return MetricsOutput(identity, textfile=self.textfile,
                             pushgateway=self.pushgateway or None, job=self.push_job,
                             max_broken_series=max_broken_series)


def metrics_options(textfile: TextfileOpt = None, pushgateway: PushgatewayOpt = None,
                    push_job: PushJobOpt = DEFAULT_JOB) -> MetricsTarget:
    """The metrics destinations group."""
    return MetricsTarget(textfile, pushgateway, push_job)


@dataclass(frozen=True)
class Connection:
    """How to reach and log in to a registry: TLS and credentials options."""

    plain_http: bool = False
    insecure: bool = False
    ca_cert: Path | None = None
    username: str | None = None
    password_stdin: bool = False

    @property
    def credentials_source(self) -> str | None:
        """Where given credentials came from, for the note after a refusal (None: discovered)."""
        return "--username and --password-stdin" if self.username else None


def connection_options(plain_http: PlainHttp = False, insecure: Insecure = False,
                       ca_cert: CaCert = None, username: Username = None,
                       password_stdin: PasswordStdin = False) -> Connection:
    """The connection (TLS and credentials) group."""
    return Connection(plain_http, insecure, ca_cert, username, password_stdin)


@dataclass(frozen=True)
class Requests:
    """How each request is made: blob streaming, timeout, retries, deadline, manifest cap."""

    deep: bool = False
    timeout: float = 30.0
    retries: int = 4
    deadline: float | None = None
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES


def request_options(deep: Deep = False, timeout: Timeout = 30.0, retries: Retries = 4,
                    deadline: Deadline = None,
                    max_manifest_bytes: MaxManifest = DEFAULT_MAX_MANIFEST_BYTES) -> Requests:
    """The request group."""
    return Requests(deep, timeout, retries, deadline, max_manifest_bytes)


@dataclass(frozen=True)
class Probing:
    """How blobs are proved servable and whether manifests are cached across runs."""

    blob_probe: BlobProbe = BlobProbe.RANGE
    cache_dir: Path | None = None


def probing_options(blob_probe: BlobProbeOpt = BlobProbe.RANGE,
                    cache_dir: CacheDir = None) -> Probing:
    """The blob-probe and manifest-cache group."""
    return Probing(blob_probe, cache_dir)


@dataclass(frozen=True)
class Selection:
    """What a scan covers, as given on the command line (checked by `build_scan_options`)."""

    repo: list[str] | None = None
    exclude_repo: list[str] | None = None
    tag: list[str] | None = None
    exclude_tag: list[str] | None = None
    repos_from: Path | None = None
    no_catalog: bool = False
    shard: str | None = None


def selection_options(repo: RepoGlobs = None, exclude_repo: ExcludeRepoGlobs = None,
                      tag: TagGlobs = None, exclude_tag: ExcludeTagGlobs = None,
                      repos_from: ReposFrom = None, no_catalog: NoCatalog = False,
                      shard: ShardOpt = None) -> Selection:
    """The scan selection group."""
    return Selection(repo, exclude_repo, tag, exclude_tag, repos_from, no_catalog, shard)


F = TypeVar("F", bound=Callable[..., Any])
# typer calls a command with keywords only; one kind also keeps the signature valid wherever
# a group without a default lands.
KEYWORD = inspect.Parameter.KEYWORD_ONLY


def with_groups(**groups: Callable[..., Any]) -> Callable[[F], F]:
    """Replace each parameter named in `groups` by its builder's options, in place.

    typer reads a command's signature; this gives it the group's options where the command
    names the group, then calls the builder with their values and passes the record it returns.
    The command takes its options by keyword (`*`), so a group may stand after a defaulted one.
    """
    def decorate(command: F) -> F:
        hints = get_type_hints(command, include_extras=True)
        params: list[inspect.Parameter] = []
        members: dict[str, list[str]] = {}
        for param in inspect.signature(command).parameters.values():
            builder = groups.get(param.name)
            if builder is None:
                params.append(param.replace(annotation=hints[param.name], kind=KEYWORD))
                continue
            own = get_type_hints(builder, include_extras=True)
            inner = list(inspect.signature(builder).parameters.values())
            members[param.name] = [p.name for p in inner]
            params.extend(p.replace(annotation=own[p.name], kind=KEYWORD) for p in inner)
        missing = set(groups) - set(members)
        if missing:
            raise TypeError(f"{command.__name__} has no parameter {sorted(missing)}")

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            for name, names in members.items():
                values[name] = groups[name](**{n: values.pop(n) for n in names})
            return command(**values)

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run  # type: ignore[return-value]

    return decorate
