"""Reporters: each renders a `Report` to text; `write_report` sends it to stdout or a file."""

from __future__ import annotations

import os
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from verifier.model.findings import Report


class Format(StrEnum):
    """Output formats every command accepts."""

    HUMAN = "human"
    JSON = "json"
    JUNIT = "junit"
    PROMETHEUS = "prometheus"


class Reporter(Protocol):
    """Renders a report as one string."""

    def __call__(self, report: Report) -> str: ...


def reporter_for(fmt: Format) -> Reporter:
    """The renderer for a format (exhaustive: a test loops over every `Format`)."""
    from verifier.output import human, json_report, junit
    from verifier.output.prometheus import metrics

    table: dict[Format, Reporter] = {
        Format.HUMAN: human.render,
        Format.JSON: json_report.render,
        Format.JUNIT: junit.render,
        Format.PROMETHEUS: metrics.render,
    }
    return table[fmt]


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(report: Report, fmt: Format, output: Path | None = None,
                 reporter: Reporter | None = None) -> None:
    """Render `report` in `fmt` (or with `reporter`) to `output` (atomically) or to stdout."""
    text = (reporter or reporter_for(fmt))(report)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write(output, text)
