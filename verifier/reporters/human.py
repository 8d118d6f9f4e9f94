"""The human report: a table of what is wrong and a one-line summary."""

from __future__ import annotations

from verifier.findings import Finding, ImageStatus, Report, Severity


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
    parts.append(f"{s['defects']} defect(s);")
    if s["requests"]:
        parts.append(f"{s['requests']} requests;")
    parts.append(f"{s['duration_seconds']:.2f}s")
    return " ".join(parts)


def render(report: Report) -> str:
    """Defects and warnings as a table (info only counted), per-image verdicts, a summary."""
    lines: list[str] = []
    shown = [f for f in report.findings if f.severity is not Severity.INFO]
    if shown:
        lines += _table([["SEVERITY", "KIND", "WHERE", "OBJECT", "MESSAGE"]]
                        + [_row(f) for f in shown])
        lines.append("")
    infos = len(report.findings) - len(shown)
    if infos:
        lines.append(f"({infos} informational finding(s) not shown; see --format json)")
    bad = [i for i in report.images if i.status is not ImageStatus.OK]
    for image in bad:
        lines.append(f"{str(image.status).upper():6}  {image.reference}"
                     + (f"@{image.digest}" if image.digest and "@" not in image.reference else ""))
    for note in report.notes:
        lines.append(f"note: {note}")
    lines.append(summary_line(report))
    return "\n".join(lines) + "\n"
