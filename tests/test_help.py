"""`--help` is part of the documentation: readable, complete, and shown verbatim in the docs.

Every block in README.md and docs/*.md that follows a `<!-- help: regverify COMMAND -->` marker is
the output of `regverify COMMAND --help`, and this test fails when the two drift apart. To
regenerate the blocks after changing an option: `.venv/bin/python -m tests.test_help`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

from tests.support.cli import run_cli
from verifier import __version__
from verifier.cli.main import app
from verifier.cli.plugin import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# What a user sees on any terminal at least 80 columns wide (click caps help at 78 columns).
WIDTH = 78
MARKER = re.compile(r"(<!-- help: (regverify[a-z -]*?) -->\n```text\n)(.*?)(```)", re.S)


def commands() -> list[list[str]]:
    """Every command path of the CLI: [], ["image"], ..., ["fs", "gc-preview"]."""
    out: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        out.append(path)
        if hasattr(command, "list_commands"):
            ctx = command.context_class(command)
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), [*path, name])

    walk(get_command(app), [])
    return out


def render(path: list[str]) -> str:
    """`regverify PATH --help`, exactly as printed on a terminal of 80 columns or more."""
    result = run_cli(*path, "--help", prog_name="regverify", terminal_width=WIDTH,
                     max_content_width=WIDTH)
    assert result.exit_code == 0, result.output
    return result.output


def blocks() -> list[tuple[Path, str, str]]:
    """(page, command, the block's text) for every generated help block in the docs."""
    return [(page, m.group(2), m.group(3)) for page in PAGES
            for m in MARKER.finditer(page.read_text())]


def regenerate() -> None:
    """Rewrite every help block from the CLI."""
    for page in PAGES:
        text = page.read_text()
        new = MARKER.sub(lambda m: m.group(1) + render(m.group(2).split()[1:]) + m.group(4), text)
        if new != text:
            page.write_text(new)
            print(f"updated {page.relative_to(ROOT)}")


def test_help_blocks_in_the_docs_match_the_cli() -> None:
    found = blocks()
    assert len(found) >= len(commands())
    for page, command, text in found:
        assert text == render(command.split()[1:]), (
            f"{page.name}: the help of `{command}` drifted; run "
            "`.venv/bin/python -m tests.test_help` to regenerate it")


def test_every_command_has_its_help_in_the_reference() -> None:
    documented = {command for page, command, _ in blocks() if page.name == "cli.md"}
    assert documented == {" ".join(["regverify", *path]) for path in commands()}


def test_the_drift_check_can_fail() -> None:
    _, command, text = blocks()[0]
    assert text.replace("--", "-", 1) != render(command.split()[1:])


@pytest.mark.parametrize("path", commands(), ids=lambda p: " ".join(p) or "regverify")
def test_help_shows_flags_bare_and_every_default(path: list[str]) -> None:
    text = render(path)
    assert "<bool>" not in text
    # A help text's own "[default: ...]" survives (rich markup used to swallow it).
    assert not re.search(r"\w \.$", text, re.M), text
    command: Any = get_command(app)
    for name in path:
        command = command.get_command(command.context_class(command), name)
    for param in command.params:
        if param.param_type_name != "option" or param.name in ("help", "version"):
            continue
        opt = max(param.opts, key=len)
        start = re.search(rf"^  (?:-\w, )?({re.escape(opt)})(?![\w-])", text, re.M)
        assert start is not None, (opt, text)
        entry = text[start.start(1):]
        entry = " ".join(entry[:re.search(r"\n  -", entry + "\n  -").start()].split())
        if param.is_flag:
            assert re.match(rf"{re.escape(opt)} [A-Z]", entry), entry  # no value placeholder
        elif param.default not in (None, False, ()):
            assert "[default: " in entry, (opt, entry)


def test_version() -> None:
    result = run_cli("--version")
    assert result.exit_code == 0
    assert result.output == f"regverify {__version__}\n"


def test_plugin_help_lists_every_setting_with_its_meaning() -> None:
    text = render(["plugin"])
    for name, meaning, default in SETTINGS:
        line = next(line for line in text.splitlines()
                    if line.strip().startswith(f"PLUGIN_{name} "))
        assert meaning in line and f"[default: {default}]" in line, line


def test_boolean_flags_take_no_value() -> None:
    result = run_cli("image", "r.example.com/a:1", "--plain-http", "true")
    assert result.exit_code == 2  # "true" is an extra argument, as the help implies


if __name__ == "__main__":
    regenerate()
    sys.exit(0)
