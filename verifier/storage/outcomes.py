"""What both repairs (a filesystem's and an object store's) report and read back, without I/O.

The findings a fix or restore turns a scan's finding into, the journal's JSON lines as records,
and the order of run folders: one spelling for `verifier.storage.repair` and
`verifier.storage.objectrepair`, so both write and read the same reports and journals.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from verifier.model.findings import Finding, Kind, Severity


def repaired(f: Finding, message: str, **details: Any) -> Finding:
    """`f` repaired: downgraded to info, `message` prefixed, ``details.repaired`` true."""
    return dataclasses.replace(
        f,
        severity=Severity.INFO,
        message=f"{message}: {f.message}",
        details={**f.details, "repaired": True, **details},
    )


def not_repaired(f: Finding, severity: Severity, **details: Any) -> Finding:
    """`f` left as it was (at `severity`), with ``details.repaired`` false and why."""
    return dataclasses.replace(
        f, severity=severity, details={**f.details, "repaired": False, **details}
    )


def _record_digest(rec: dict[str, Any]) -> str | None:
    return str(rec["digest"]) if isinstance(rec.get("digest"), str) else None


def conflict(message: str, path: str | None, rec: dict[str, Any]) -> Finding:
    """`restore_conflict` for journal record `rec`: what restore would not overwrite or trust."""
    return Finding(
        kind=Kind.RESTORE_CONFLICT,
        severity=Severity.ERROR,
        message=message,
        registry=str(rec.get("registry", "")),
        repository=str(rec.get("repository", "")),
        digest=_record_digest(rec),
        path=path,
        details={"seq": rec.get("seq"), "type": rec.get("type")},
    )


def restored(kind: str, message: str, path: str, rec: dict[str, Any], **details: Any) -> Finding:
    """The info finding for what restore put back from journal record `rec` (its `kind`)."""
    try:
        k = Kind(kind)
    except ValueError:
        k = Kind.RESTORE_CONFLICT
    return Finding(
        kind=k,
        severity=Severity.INFO,
        message=message,
        registry=str(rec.get("registry", "")),
        repository=str(rec.get("repository", "")),
        digest=_record_digest(rec),
        path=path,
        details={"restored": True, "seq": rec.get("seq"), **details},
    )


def journal_records(data: bytes, where: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The JSON-object lines of a journal, plus a message naming every other line."""
    records: list[dict[str, Any]] = []
    bad: list[str] = []
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(f"{where}:{n}: not JSON ({exc.msg})")
            continue
        if not isinstance(rec, dict):
            bad.append(f"{where}:{n}: not a JSON object")
            continue
        records.append(rec)
    return records, bad


def run_sort_key(name: str) -> tuple[str, int]:
    """Run folders are ``<UTC stamp>`` or ``<UTC stamp>-<n>`` (a second run in that second)."""
    head, sep, n = name.rpartition("Z-")
    if sep and n.isdigit():
        return (head, int(n))
    return (name.rstrip("Z"), 0)
