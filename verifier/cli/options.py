"""Command-line options shared by the HTTP commands (verifier.cli.main) and `fs` (verifier.cli.fs).

Declared once so every command spells and documents them the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from verifier.output import Format

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
