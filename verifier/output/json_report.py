"""The JSON report: a stable document (`schema_version` 1) documented in docs/findings.md."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from verifier import __version__
from verifier.model.findings import Report

SCHEMA_VERSION = 1


def to_document(report: Report) -> dict[str, Any]:
    """The report as plain JSON data."""
    started = (
        datetime.fromtimestamp(report.started_at, UTC).isoformat() if report.started_at else None
    )
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": f"regverify {__version__}",
        "mode": report.mode,
        "target": report.target,
        "started_at": started,
        "exit_code": int(report.exit_code),
        "summary": report.summary(),
        "images": [image.to_dict() for image in report.images],
        "findings": [f.to_dict() for f in report.findings],
        "notes": list(report.notes),
    }
    for key, value in report.extra.items():
        doc.setdefault(key, value)
    return doc


def render(report: Report) -> str:
    """Pretty-printed JSON with a trailing newline."""
    return json.dumps(to_document(report), indent=2, sort_keys=False) + "\n"
