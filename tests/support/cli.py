"""Run the `regverify` command line the way a test needs it, in-process or as a real process.

One function, `run_cli`, and one result type, `CliResult`; the `run_cli` fixture of
tests/conftest.py hands out the same function. Works outside pytest too (benchmarks, a REPL).
"""

from __future__ import annotations

import json
import os
import subprocess as sp
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import typer
from typer.testing import CliRunner

#: Ambient settings that must not reach a test's run: proxies would route loopback traffic
#: elsewhere, and credentials or plugin settings of the developer's shell would change results.
_AMBIENT = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                      "http_proxy", "https_proxy", "all_proxy"})
_AMBIENT_PREFIXES = ("REGVERIFY_", "PLUGIN_")


@dataclass(frozen=True)
class CliResult:
    """What a run of the CLI left: its exit code, stdout and stderr."""

    args: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    #: stdout and stderr as a terminal shows them (interleaved in-process, concatenated else).
    output: str

    def json(self) -> Any:
        """stdout parsed as JSON (a `--format json` report); fails loudly when it is not."""
        assert self.stdout.strip(), f"no report on stdout for {self.args}; stderr: {self.stderr}"
        return json.loads(self.stdout)


class RunCli(Protocol):
    """The type of `run_cli`, for tests that take it as the `run_cli` fixture."""

    def __call__(self, *args: str | Path, subprocess: bool = False,
                 env: Mapping[str, str] | None = None, input: str | None = None,
                 timeout: float = 120, app: typer.Typer | None = None,
                 no_traceback: bool = False, **runner: Any) -> CliResult: ...


def _ambient(name: str) -> bool:
    return name in _AMBIENT or name.startswith(_AMBIENT_PREFIXES)


def run_cli(*args: str | Path, subprocess: bool = False, env: Mapping[str, str] | None = None,
            input: str | None = None, timeout: float = 120, app: typer.Typer | None = None,
            no_traceback: bool = False, **runner: Any) -> CliResult:
    """`regverify ARGS`: in-process through typer's CliRunner by default, or with
    `subprocess=True` as `python -m verifier` in a child process (real stdin/stdout, a hang
    killed after `timeout`).

    Ambient proxies, REGVERIFY_* and PLUGIN_* variables are removed, then `env` is added.
    `app` replaces the full app in-process (a sub-app mounted alone); `no_traceback` asserts
    that stderr holds no traceback; `runner` goes to `CliRunner.invoke` (e.g. terminal_width).
    """
    argv: Sequence[str] = [str(a) for a in args]
    if subprocess:
        base = {k: v for k, v in os.environ.items() if not _ambient(k)}
        try:
            proc = sp.run([sys.executable, "-m", "verifier", *argv], capture_output=True,
                          text=True, input=input, timeout=timeout, check=False,
                          env={**base, **(env or {})})
        except sp.TimeoutExpired:
            raise AssertionError(f"regverify hung: {tuple(argv)}") from None
        result = CliResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr,
                           proc.stdout + proc.stderr)
    else:
        if app is None:
            from verifier.cli.main import app as main_app

            app = main_app
        unset: dict[str, str | None] = {k: None for k in os.environ if _ambient(k)}
        ran = CliRunner().invoke(app, list(argv), input=input, env={**unset, **(env or {})},
                                 **runner)
        # A bug inside a command is the test's failure, with its own traceback.
        if ran.exception is not None and not isinstance(ran.exception, SystemExit):
            raise ran.exception
        result = CliResult(tuple(argv), ran.exit_code, ran.stdout, ran.stderr, ran.output)
    if no_traceback:
        assert "Traceback" not in result.stderr, result.stderr
    return result
