"""The human report: a table of what is wrong, what to do next, and a one-line summary."""

from __future__ import annotations

import textwrap

from verifier.model.findings import Finding, ImageStatus, Kind, Report, Severity

#: The likely cause of each kind, for the "what to do next" lines. HTTP defects are storage
#: damage seen from outside, so they end with the storage scan and the runbook.
CAUSES: dict[Kind, str] = {
    Kind.MANIFEST_MISSING: "the registry has no revision link for a manifest the image needs: "
    "typically an index child removed by `garbage-collect --delete-untagged`, or a tag "
    "whose manifest was deleted",
    Kind.BLOB_MISSING: "a layer's or config's data file, or the repository's `_layers` link "
    "to it, is gone from the registry's storage",
    Kind.BLOB_UNREADABLE: "the blob's data file is gone while the registry's descriptor cache "
    "still lists it (after a registry restart it answers 404)",
    Kind.SIZE_MISMATCH: "the stored blob is truncated (or longer than its descriptor says)",
    Kind.DIGEST_MISMATCH: "the stored bytes do not hash to their digest: corrupted on disk, or "
    "rewritten on the way",
    Kind.MANIFEST_INVALID: "the stored manifest cannot be parsed or breaks the spec",
    Kind.REQUEST_FAILED: "the registry or the network kept failing (not a defect of the "
    "image): rerun, or raise --retries / --timeout",
    Kind.AUTH_FAILED: "the registry refused access",
    Kind.CATALOG_INACCESSIBLE: "the catalog could not be read (credentials without "
    "`registry:catalog:*`, or a registry without a catalog): name repositories with --repo or "
    "--repos-from, and add --no-catalog",
    Kind.ORPHAN_LAYER_LINK: "layer links whose blob data is gone: `regverify fs fix PATH` moves "
    "them to a quarantine (undo: `regverify fs restore`); restart the registry afterwards",
    Kind.ORPHAN_INDEX_CHILD: "index children whose revision link is gone: see the finding's "
    "message for whether `fs fix --relink-index-children` can restore them or a rebuild is "
    "needed (docs/runbook.md)",
}
#: `fs restore` counters, in the order the summary line shows them.
RESTORE_COUNTERS = (("restored", "put back"), ("not_needed", "already in place"),
                    ("already_restored", "restored by an earlier run"),
                    ("conflict", "conflict(s)"))
HTTP_DEFECTS = frozenset({Kind.MANIFEST_MISSING, Kind.BLOB_MISSING, Kind.BLOB_UNREADABLE,
                          Kind.SIZE_MISMATCH, Kind.DIGEST_MISMATCH, Kind.MANIFEST_INVALID})
STORAGE_STEP = ("On the registry host, `regverify fs scan STORAGE-ROOT` shows which files are "
                "missing and why; docs/runbook.md says how to repair or rebuild each.")
CREDENTIAL_SOURCES = ("regverify looks for credentials in: --username with --password-stdin; "
                      "REGVERIFY_USERNAME and REGVERIFY_PASSWORD; the Docker config "
                      "($DOCKER_CONFIG/config.json, else ~/.docker/config.json: credHelpers, "
                      "auths, credsStore).")


def _where(f: Finding) -> str:
    parts = [p for p in (f.registry, f.repository) if p]
    where = "/".join(parts)
    if f.reference:
        digest_ref = ":" in f.reference
        where += f"@{f.reference[:19]}" if digest_ref else f":{f.reference}"
    if f.platform:
        where += f" [{f.platform}]"
    return where or "-"


def _object(f: Finding) -> str:
    # Full paths and digests are in --format json; the table stays readable.
    if f.digest:
        return f.digest[:19]
    return f.path or "-"


def _row(f: Finding) -> list[str]:
    message = f.message
    if f.expected_size is not None or f.actual_size is not None:
        message += f" (expected {f.expected_size} bytes, got {f.actual_size})"
    if f.expected_digest and f.actual_digest:
        message += f" (expected {f.expected_digest[:19]}, got {f.actual_digest[:19]})"
    return [str(f.severity).upper(), str(f.kind), _where(f), _object(f), message]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.append("  ".join([*cells, row[-1]]).rstrip())
    return out


def summary_line(report: Report) -> str:
    """One line: verdict, counts and duration."""
    s = report.summary()
    verdict = {0: "OK", 1: "DEFECTS FOUND", 3: "INCOMPLETE"}.get(int(report.exit_code), "?")
    parts = [f"{verdict}:"]
    if report.images:
        parts.append(f"{s['images']} image(s), {s['images_broken']} broken, "
                     f"{s['images_error']} not verifiable;")
    for key in ("repositories", "tags", "manifests", "blobs", "links"):
        if key in s:
            parts.append(f"{s[key]} {key},")
    if report.mode == "fs-restore":
        for key, label in RESTORE_COUNTERS:
            parts.append(f"{s.get(key, 0)} {label},")
    parts.append(f"{s['defects']} defect(s);")
    if s["requests"]:
        parts.append(f"{s['requests']} requests;")
    parts.append(f"{s['duration_seconds']:.2f}s")
    return " ".join(parts)


def next_steps(report: Report) -> list[str]:
    """What to do about the report's problems: causes by kind, then each finding's own steps."""
    problems = [f for f in report.findings if f.severity is not Severity.INFO]
    counts: dict[Kind, int] = {}
    for f in problems:
        counts[f.kind] = counts.get(f.kind, 0) + 1
    lines = [f"{kind} ({n}): {CAUSES[kind]}." for kind, n in counts.items() if kind in CAUSES]
    own = [step for f in problems for step in f.details.get("next_steps", [])]
    if Kind.AUTH_FAILED in counts:
        own.append(CREDENTIAL_SOURCES)
    lines += list(dict.fromkeys(own))
    if counts.keys() & HTTP_DEFECTS:
        lines.append(STORAGE_STEP)
    return lines


def _done(report: Report) -> list[str]:
    """What a repair or restore changed, one line each (they are `info` findings)."""
    changed = [f for f in report.findings if f.severity is Severity.INFO
               and (f.details.get("restored") or f.details.get("repaired"))]
    return [f.message + (f" ({f.path})" if f.path and f.path not in f.message else "")
            for f in changed]


def render(report: Report) -> str:
    """Defects and warnings as a table, what was changed, per-image verdicts, next steps, and a
    one-line summary (kept last, for scripts that read it)."""
    lines: list[str] = []
    shown = [f for f in report.findings if f.severity is not Severity.INFO]
    if shown:
        lines += _table([["SEVERITY", "KIND", "WHERE", "OBJECT", "MESSAGE"]]
                        + [_row(f) for f in shown])
        lines.append("")
    done = _done(report)
    if done:
        lines.append("restored:" if report.mode == "fs-restore" else "changed:")
        lines += [f"  {line}" for line in done]
    infos = len(report.findings) - len(shown) - len(done)
    if infos:
        lines.append(f"({infos} informational finding(s) not shown; see --format json)")
    bad = [i for i in report.images if i.status is not ImageStatus.OK]
    for image in bad:
        lines.append(f"{str(image.status).upper():6}  {image.reference}"
                     + (f"@{image.digest}" if image.digest and "@" not in image.reference else ""))
    for note in report.notes:
        lines.append(f"note: {note}")
    steps = next_steps(report)
    if steps:
        lines.append("what to do next:")
        lines += [textwrap.fill(step, 100, initial_indent="  - ", subsequent_indent="    ",
                                break_on_hyphens=False, break_long_words=False)
                  for step in steps]
    lines.append(summary_line(report))
    return "\n".join(lines) + "\n"
