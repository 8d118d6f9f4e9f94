"""`regverify plugin`: the Woodpecker CI step, configured by `PLUGIN_*` environment variables.

Woodpecker passes each `settings:` key of a plugin step as `PLUGIN_<KEY>` (upper-cased; a YAML
list becomes a comma-separated string; `from_secret` values arrive the same way). This module
turns those variables into the options of `regverify image`, verifies every listed image with a
settle window for just-pushed content, and merges the verdicts into one report, so the step has
the same output formats and exit codes as every other command.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from verifier.errors import UsageError
from verifier.model.findings import Report
from verifier.model.reference import ImageReference, parse_reference
from verifier.output import Format
from verifier.settle import PLUGIN_DEFAULT_SETTLE, verify_settled

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class PluginSettings:
    """Every setting the plugin understands, after validation."""

    images: tuple[str, ...]
    username: str | None = None
    password: str | None = None
    plain_http: bool = False
    insecure: bool = False
    ca_cert: Path | None = None
    deep: bool = False
    fmt: Format = Format.HUMAN
    output: Path | None = None
    retries: int = 4
    timeout: float = 30.0
    concurrency: int = 8
    settle: float = PLUGIN_DEFAULT_SETTLE
    textfile: Path | None = None
    pushgateway: str | None = None
    push_job: str = "regverify"


def _get(env: Mapping[str, str], key: str) -> str | None:
    value = env.get(f"PLUGIN_{key}")
    return value.strip() if value is not None and value.strip() else None


def _bool(env: Mapping[str, str], key: str, default: bool = False) -> bool:
    value = _get(env, key)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise UsageError(f"PLUGIN_{key}={value!r}: expected true or false")


def _number(env: Mapping[str, str], key: str, default: float, *, low: float, high: float,
            integer: bool = False) -> float:
    value = _get(env, key)
    if value is None:
        return default
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise UsageError(f"PLUGIN_{key}={value!r}: expected {kind}") from None
    if not low <= number <= high:
        raise UsageError(f"PLUGIN_{key}={value!r}: expected {low:g} to {high:g}")
    return number


def _list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _image_list(env: Mapping[str, str]) -> tuple[str, ...]:
    # `image` is ours; `repo` + `tags` mirror the docker-buildx plugin's settings so a pipeline
    # can pass the same values to both steps.
    images = _list(_get(env, "IMAGE"))
    repo = _get(env, "REPO")
    if repo:
        tags = _list(_get(env, "TAGS")) or ["latest"]
        images += [f"{repo}:{tag}" for tag in tags]
    if not images:
        raise UsageError("PLUGIN_IMAGE is not set: name the image(s) to verify "
                         "(settings: image: registry.example.com/app:tag)")
    return tuple(dict.fromkeys(images))


#: Every setting: its `PLUGIN_*` suffix, what it means, its default. `plugin --help` prints
#: this table, and a misspelt setting must fail the step, not be silently ignored (a missing
#: `plain_http` would quietly change what is verified).
SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("IMAGE", "image reference(s) to verify, comma-separated", "required unless REPO"),
    ("REPO", "repository, as the docker-buildx plugin takes it; with TAGS", "none"),
    ("TAGS", "tags of REPO, comma-separated", "latest"),
    ("USERNAME", "registry username (with PASSWORD; use from_secret)", "none"),
    ("PASSWORD", "registry password or token (with USERNAME)", "none"),
    ("PLAIN_HTTP", "talk HTTP, not HTTPS (true/false, 1/0, yes/no)", "false"),
    ("INSECURE", "skip TLS certificate verification", "false"),
    ("CA_CERT", "PEM file of CA(s) to trust", "system CAs"),
    ("DEEP", "stream every blob and check its sha256", "false"),
    ("FORMAT", "report format: human, json, junit, prometheus", "human"),
    ("OUTPUT", "write the report to this file", "stdout"),
    ("RETRIES", "retries per request for transient failures (0-20)", "4"),
    ("TIMEOUT", "per-request timeout in seconds", "30"),
    ("CONCURRENCY", "requests in flight at most (1-256)", "8"),
    ("SETTLE", "re-verify a not-found verdict for up to this many seconds",
     f"{PLUGIN_DEFAULT_SETTLE:g}"),
    ("TEXTFILE", "also write Prometheus metrics to this file", "none"),
    ("PUSHGATEWAY", "also push Prometheus metrics to this Pushgateway URL", "none"),
    ("PUSH_JOB", "Pushgateway job name", "regverify"),
)
KNOWN_SETTINGS = frozenset(name for name, _, _ in SETTINGS)


def settings_help() -> str:
    """The settings table shown by `regverify plugin --help`."""
    width = max(len(f"PLUGIN_{name}") for name, _, _ in SETTINGS)
    rows = [f"  {'PLUGIN_' + name:<{width}}  {meaning} [default: {default}]"
            for name, meaning, default in SETTINGS]
    # \b keeps click from re-wrapping the table into one paragraph.
    return ("Settings (Woodpecker passes each `settings:` key as PLUGIN_<KEY>; an unknown "
            "PLUGIN_* variable is a usage error):\n\n\b\n" + "\n".join(rows))


def settings_from_env(env: Mapping[str, str]) -> PluginSettings:
    """Validate the `PLUGIN_*` variables; UsageError (exit 2) names the first bad one."""
    unknown = sorted(k for k in env if k.startswith("PLUGIN_")
                     and k.removeprefix("PLUGIN_") not in KNOWN_SETTINGS)
    if unknown:
        known = ", ".join(sorted(s.lower() for s in KNOWN_SETTINGS))
        raise UsageError(f"{unknown[0]}: unknown setting (known: {known})")
    fmt_text = (_get(env, "FORMAT") or Format.HUMAN.value).lower()
    try:
        fmt = Format(fmt_text)
    except ValueError:
        choices = ", ".join(f.value for f in Format)
        raise UsageError(f"PLUGIN_FORMAT={fmt_text!r}: expected one of {choices}") from None
    username, password = _get(env, "USERNAME"), env.get("PLUGIN_PASSWORD") or None
    if (username is None) != (password is None):
        raise UsageError("PLUGIN_USERNAME and PLUGIN_PASSWORD must be given together")
    ca_cert = _get(env, "CA_CERT")
    if ca_cert is not None and not Path(ca_cert).is_file():
        raise UsageError(f"PLUGIN_CA_CERT={ca_cert!r}: no such file")
    output, textfile = _get(env, "OUTPUT"), _get(env, "TEXTFILE")
    return PluginSettings(
        images=_image_list(env),
        username=username,
        password=password,
        plain_http=_bool(env, "PLAIN_HTTP"),
        insecure=_bool(env, "INSECURE"),
        ca_cert=Path(ca_cert) if ca_cert else None,
        deep=_bool(env, "DEEP"),
        fmt=fmt,
        output=Path(output) if output else None,
        retries=int(_number(env, "RETRIES", 4, low=0, high=20, integer=True)),
        timeout=_number(env, "TIMEOUT", 30.0, low=0.1, high=3600),
        concurrency=int(_number(env, "CONCURRENCY", 8, low=1, high=256, integer=True)),
        settle=_number(env, "SETTLE", PLUGIN_DEFAULT_SETTLE, low=0, high=3600),
        textfile=Path(textfile) if textfile else None,
        pushgateway=_get(env, "PUSHGATEWAY"),
        push_job=_get(env, "PUSH_JOB") or "regverify",
    )


def parse_images(images: Sequence[str]) -> list[ImageReference]:
    """Parse every reference first, so a typo fails the step before anything is verified."""
    refs = []
    for text in images:
        try:
            refs.append(parse_reference(text))
        except UsageError as exc:
            raise UsageError(f"PLUGIN_IMAGE: {exc}") from None
    return refs


def registries_of(refs: Sequence[ImageReference]) -> str:
    """The `registry` label of a multi-image run: its hosts, sorted, comma-separated."""
    return ",".join(sorted({ref.registry for ref in refs}))


def merge_reports(reports: Sequence[Report], target: str) -> Report:
    """One report from several image reports: the step has one verdict and one output."""
    merged = Report(mode="image", target=target,
                    started_at=reports[0].started_at if reports else time.time())
    for report in reports:
        merged.findings.extend(report.findings)
        merged.images.extend(report.images)
        merged.counters.update(report.counters)
        merged.requests_by_code.update(report.requests_by_code)
        merged.notes.extend(report.notes)
        merged.duration_seconds += report.duration_seconds
        merged.incomplete = merged.incomplete or report.incomplete
    return merged


async def verify_images(
    refs: Sequence[ImageReference],
    verify: Callable[[ImageReference], Awaitable[Report]],
    settle: float,
) -> Report:
    """Verify each image in turn (each with its settle window) and merge the verdicts."""
    reports = []
    for ref in refs:
        # A partial, not a closure over the loop variable: it is called again on every attempt.
        reports.append(await verify_settled(partial(verify, ref), settle))
    return merge_reports(reports, ",".join(str(ref) for ref in refs))
