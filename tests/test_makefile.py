"""The Makefile behind `make demo` and `make test`: what it installs, how it runs the suite, and
that it rebuilds a half-made virtual environment instead of reusing it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def dry_run(target: str, *variables: str) -> str:
    """The commands `make TARGET` would run (`make -n`), without running them."""
    assert MAKE is not None
    run = subprocess.run([MAKE, "-s", "-n", "-C", str(ROOT), target, *variables],
                         capture_output=True, text=True, timeout=60, check=True)
    return run.stdout


def test_the_suite_runs_with_the_venvs_bin_on_path() -> None:
    # Tests run `regverify` (and the venv's tools) by name, as an installed user would.
    [line] = [line for line in dry_run("test").splitlines() if "-m pytest" in line]
    venv_bin = re.escape(f"{ROOT}/.venv/bin")
    assert re.search(rf'PATH="{venv_bin}:\$PATH" \.venv/bin/python -m pytest', line), line


def test_the_demo_installs_the_package_alone_and_the_suite_its_test_extra() -> None:
    demo, test = dry_run("demo"), dry_run("test")
    assert re.search(r"pip install .* -e \.$", demo, re.M), demo
    assert "[test]" not in demo and "promtool" not in demo
    assert "-e '.[test]'" in test


def test_each_system_tool_is_probed_by_what_the_code_runs() -> None:
    probes = dry_run("test-deps")
    for package, probe in [("python3-venv", 'python3 -c "import ensurepip"'),
                           ("systemd", "command -v systemd-analyze"),
                           ("prometheus", "command -v promtool"),
                           ("skopeo", "command -v skopeo"),
                           ("prometheus-alertmanager", "command -v prometheus-alertmanager"),
                           ("prometheus-pushgateway", "command -v prometheus-pushgateway"),
                           ("prometheus-node-exporter", "command -v prometheus-node-exporter")]:
        assert f"{package}:'{probe}'" in probes, package
    assert "venv --help" not in probes  # succeeds without python3-venv on Debian


def test_a_half_made_venv_is_rebuilt(tmp_path: Path) -> None:
    assert MAKE is not None
    venv = tmp_path / "venv"
    # What `python3 -m venv` leaves when ensurepip is missing: an interpreter and no pip.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    broken = subprocess.run([venv / "bin" / "python", "-m", "pip", "--version"],
                            capture_output=True, check=False)
    assert broken.returncode != 0
    run = subprocess.run([MAKE, "-s", "-C", str(ROOT), "venv-create", f"VENV={venv}"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rebuilding the incomplete" in run.stdout
    fixed = subprocess.run([venv / "bin" / "python", "-m", "pip", "--version"],
                           capture_output=True, check=False)
    assert fixed.returncode == 0
    again = subprocess.run([MAKE, "-s", "-C", str(ROOT), "venv-create", f"VENV={venv}"],
                           capture_output=True, text=True, timeout=300, check=True)
    assert "rebuilding" not in again.stdout  # a working venv is kept
