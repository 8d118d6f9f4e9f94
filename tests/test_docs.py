"""The docs say what the tool does: every example command parses with the real CLI, every
relative link resolves, and the JSON example has the shape of a real run's report."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import RunCli
from tests.support.images import push_image
from tests.support.registry import RegistryServer, blob_data_path
from tests.test_examples import parse_cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
# Where a regverify command starts on a line: at its start (after "$ "), after a shell operator,
# after a systemd Exec*= key, or as the image of `docker run`.
START = re.compile(r"(?:^\s*(?:\$ )?|&& |; |^Exec\w*=|docker run --rm (?:-e \S+ )*)"
                   r"(?:/usr/local/bin/)?regverify (.*)$")
SHELL_END = {"&&", "||", ";", "|", ">", ">>", "2>&1"}


def example_commands() -> list[tuple[str, int, list[str]]]:
    """(page, line, argv after `regverify`) for every example command in a code block."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in FENCE.finditer(text):
            if text[:block.start()].rstrip().endswith("-->"):
                continue  # a generated --help block (tests/test_help.py checks those)
            first = text[:block.start()].count("\n") + 1
            for offset, line in enumerate(block.group(1).splitlines(), start=1):
                match = START.search(line)
                if match is None or line.lstrip().startswith(("#", "Usage:")):
                    continue
                argv = []
                for token in shlex.split(match.group(1), comments=True):
                    if token in SHELL_END:
                        break
                    argv.append(token)
                found.append((page.name, first + offset, argv))
    return found


def test_there_are_examples_in_every_user_page() -> None:
    pages = {page for page, _, _ in example_commands()}
    assert {"README.md", "image-and-scan.md", "filesystem-mode.md", "gc-preview.md",
            "monitoring.md", "runbook.md"} <= pages


@pytest.mark.parametrize(("page", "line", "argv"), example_commands(),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_every_example_command_parses(page: str, line: int, argv: list[str],
                                      run_cli: RunCli) -> None:
    if any(token.startswith("[") for token in argv):
        # A synopsis (`fs scan PATH [--registry NAME]...`): its options must exist.
        command = [t for t in argv if t.isidentifier() or "-" in t and not t.startswith("-")]
        options = {t.strip("[].") for t in argv if t.strip("[.").startswith("--")}
        help_run = run_cli(*command[:2], "--help")
        assert help_run.exit_code == 0, help_run.output
        help_text = help_run.stdout
        for option in options:
            assert option in help_text, (page, line, option)
        return
    try:
        parse_cli(argv)
    except Exception as exc:  # noqa: BLE001 - typer's own click raises its own classes
        pytest.fail(f"{page}:{line}: regverify {shlex.join(argv)}: {exc}")


def test_relative_links_resolve() -> None:
    def anchors(text: str) -> set[str]:
        return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", text, re.M)}

    for page in PAGES:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path) if path else page
            assert dest.exists(), (page.name, target)
            if anchor:
                assert anchor in anchors(dest.read_text()), (page.name, target)


def test_the_readme_fits_in_five_minutes() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 280
    assert lines[5:9] == [lines[5], *lines[6:8], "```"] and lines[5].startswith("```")
    assert lines[6].startswith("make demo") and lines[7].startswith("make test")


# --- the JSON example ----------------------------------------------------------------------------


def _shape(value: Any) -> Any:
    """Keys all the way down (lists by their first element); every leaf is the same."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return "leaf"


def _documented_report() -> dict[str, Any]:
    text = (ROOT / "docs" / "findings.md").read_text()
    [block] = re.findall(r"```json\n(.*?)```", text, re.S)
    doc: dict[str, Any] = json.loads(block)
    return doc


@pytest.mark.registry
def test_json_example_has_the_shape_of_a_real_run(registry: RegistryServer,
                                                  run_cli: RunCli) -> None:
    # The example's situation: a layer's data file deleted, the registry restarted (cold cache).
    image = push_image(registry, "app/web", "v1", layers=2)
    blob_data_path(registry.v2, image.layers[0].digest).unlink()
    registry.restart()
    run = run_cli("image", f"{registry.host}/app/web:v1", "--plain-http", "--format", "json")
    assert run.exit_code == 1, run.stderr
    real, doc = run.json(), _documented_report()
    summary_keys = {"manifests", "blobs", "images", "images_broken", "images_error", "requests",
                    "requests_by_code", "defects", "defects_by_kind", "duration_seconds"}
    # The documented summary shows the main counters; the real one may carry more.
    assert set(doc["summary"]) == summary_keys <= set(real["summary"])
    real["summary"] = {k: real["summary"][k] for k in summary_keys}
    assert _shape(real) == _shape(doc)
    for key in ("requests", "requests_by_code", "defects_by_kind", "manifests", "blobs",
                "images", "images_broken"):
        assert doc["summary"][key] == real["summary"][key], key
    [finding], [want] = real["findings"], doc["findings"]
    assert finding["message"] == want["message"]
    assert (finding["kind"], finding["http_status"], finding["media_type"]) == (
        want["kind"], want["http_status"], want["media_type"])
    assert finding["details"]["chain"][0] == want["details"]["chain"][0]
    assert (real["schema_version"], real["mode"], real["exit_code"]) == (
        doc["schema_version"], doc["mode"], doc["exit_code"])


# --- the README's output example -----------------------------------------------------------------


def _normalise(text: str, host: str) -> str:
    return re.sub(r"\d+\.\d\ds$", "N.NNs", text.replace(host, "HOST"), flags=re.M)


@pytest.mark.registry
def test_readme_output_example_is_what_the_tool_prints(registry: RegistryServer,
                                                       run_cli: RunCli) -> None:
    readme = (ROOT / "README.md").read_text()
    [block] = [b for b in FENCE.findall(readme) if b.startswith("$ regverify image ")]
    command, _, shown = block.partition("\n")
    argv = shlex.split(command)[3:]  # after "$ regverify image"
    documented_host = argv[0].split("/")[0]
    # The demo's situation: the layer's data file deleted while the registry's cache is warm.
    image = push_image(registry, "team/api", "1.1")
    ref = argv[0].replace(documented_host, registry.host)
    # A real process, as in the README: what a shell shows, byte for byte.
    warm = run_cli("image", ref, *argv[1:], subprocess=True)
    assert warm.exit_code == 0, warm.stdout + warm.stderr
    blob_data_path(registry.v2, image.layers[0].digest).unlink()
    run = run_cli("image", ref, *argv[1:], subprocess=True)
    assert run.exit_code == 1, run.stderr
    assert _normalise(run.stdout, registry.host) == _normalise(shown, documented_host)


def test_every_option_is_explained_outside_the_generated_reference() -> None:
    from typer.main import get_command

    from tests.test_help import commands
    from verifier.cli.main import app

    prose = "\n".join(p.read_text() for p in PAGES if p.name != "cli.md")
    root: Any = get_command(app)
    for path in commands():
        command = root
        for name in path:
            command = command.get_command(command.context_class(command), name)
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                option = max(param.opts, key=len)
                assert f"`{option}" in prose or f"{option} " in prose, (path, option)
