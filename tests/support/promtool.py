"""`promtool` for the metrics and alert tests: the Prometheus project's own checker."""

from __future__ import annotations

import os
import re
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


# --- PromQL: parse checks and the metric names an expression reads -----------------------------

_TOKEN = re.compile(r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z]*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<punct>=~|!~|!=|==|<=|>=|[(){}\[\],+\-*/%^<>=@])
  | (?P<space>\s+)
""", re.VERBOSE)
#: Words followed by a parenthesised list of label names, not of expressions.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
#: Aggregation operators take `by (...)` before their argument, so they need not precede `(`.
_KEYWORDS = _LABEL_LISTS | {
    "bool", "and", "or", "unless", "offset", "inf", "nan", "sum", "min", "max", "avg", "group",
    "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
}


def promql_tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) tokens of a PromQL expression, spaces dropped; ValueError on junk."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot tokenize {expr[position:position + 20]!r} in {expr!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append((kind, match.group()))
        position = match.end()
    return tokens


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects: bare names and `__name__="..."`.

    Function names (an identifier before `(`), keywords, label names inside `{...}` and the
    label lists of by/without/on/ignoring/group_left/group_right are not metric names.
    """
    tokens = promql_tokens(expr)
    names: set[str] = set()
    braces = 0
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "{":
            braces += 1
        elif text == "}":
            braces -= 1
        elif braces and kind == "ident" and text == "__name__" and following == "=":
            names.add(tokens[i + 2][1][1:-1])
        elif kind == "ident" and not braces:
            if text.lower() in _LABEL_LISTS and following == "(":
                i = tokens.index(("punct", ")"), i)  # label names only, no nesting
            elif following != "(" and text.lower() not in _KEYWORDS:
                names.add(text)
        i += 1
    return names


def label_names(expr: str) -> set[str]:
    """Every label name a PromQL expression matches on or aggregates by."""
    tokens = promql_tokens(expr)
    labels: set[str] = set()
    braces = 0
    for i, (kind, text) in enumerate(tokens):
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "{":
            braces += 1
        elif text == "}":
            braces -= 1
        elif braces and kind == "ident" and following in ("=", "!=", "=~", "!~"):
            labels.add(text)
        elif kind == "ident" and text.lower() in _LABEL_LISTS and following == "(":
            end = tokens.index(("punct", ")"), i)
            labels |= {t for k, t in tokens[i + 2:end] if k == "ident"}
    return labels - {"__name__"}


def check_expressions(expressions: dict[str, str], workdir: Path) -> None:
    """Assert promtool parses every expression (as recording rules: `promtool check rules`)."""
    import yaml

    rules = [{"record": f"check:{name}", "expr": expr} for name, expr in expressions.items()]
    path = workdir / "expressions.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout
