"""`promtool` for the metrics and alert tests: the Prometheus project's own checker."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ALLOW_SKIP_ENV = "REGVERIFY_ALLOW_SKIP"


def promtool_bin() -> str:
    """Path of promtool; fails the test (skips only when $REGVERIFY_ALLOW_SKIP=1) if absent."""
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (Debian package 'prometheus')"
        if os.environ.get(ALLOW_SKIP_ENV) == "1":
            pytest.skip(reason)
        pytest.fail(f"{reason} (set {ALLOW_SKIP_ENV}=1 to skip instead of failing)",
                    pytrace=False)
    return found


def run_promtool(*args: str, stdin: str | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool with `args`; output in `.stdout` (stderr merged)."""
    return subprocess.run([promtool_bin(), *args], input=stdin, cwd=cwd, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                          check=False)


def check_metrics(text: str) -> None:
    """Assert `promtool check metrics` accepts `text` with no lint complaint at all."""
    result = run_promtool("check", "metrics", stdin=text)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout
