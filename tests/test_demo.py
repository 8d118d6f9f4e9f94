"""examples/demo.py, the script behind `make demo`: plain text when its output is not a terminal."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pytest

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def load_demo(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # No examples/__pycache__: everything under examples/ must be a documented example.
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    spec = importlib.util.spec_from_file_location("regverify_demo", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "escapes"), [(io.StringIO, False), (_Terminal, True)])
def test_step_headings_use_escape_codes_only_on_a_terminal(
        monkeypatch: pytest.MonkeyPatch, stream: type[io.StringIO], escapes: bool) -> None:
    demo = load_demo(monkeypatch)
    out = stream()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.delenv("NO_COLOR", raising=False)
    demo.step("fault 1: something breaks")
    assert ("\033[" in out.getvalue()) is escapes
    assert "==> fault 1: something breaks" in out.getvalue()
    assert not (DEMO.parent / "__pycache__").exists()


def test_each_fault_is_announced_before_its_verdict() -> None:
    text = DEMO.read_text()
    for fault, verdict in (("fault 1:", "broken_index = regverify("),
                           ("fault 2:", "broken_layer = regverify(")):
        assert text.index(fault) < text.index(verdict)
    # the damage is done between the announcement and the verdict, never before it
    assert text.index("fault 2:") < text.index(".unlink()") < text.index("broken_layer = ")
