"""Which repositories and tags a scan covers: filters, shards, and `--repos-from` files.

Pure selection: patterns are validated up front (a bad one is a usage error, exit 2), and
every decision here is a function of names only, so N workers given the same options and
different shards cover a registry exactly once.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import UsageError
from verifier.model.reference import is_valid_repository

JOB_INDEX_ENV = "JOB_COMPLETION_INDEX"
_GLOB_META = frozenset("*?[")
# Tags follow the reference grammar `[\w][\w.-]{0,127}` (ASCII word characters).
_TAG_RE = re.compile(r"^\w[\w.-]{0,127}$", re.ASCII)
_REPO_GLOB_CHARS = re.compile(r"^[a-z0-9._/*?\[\]!-]+$")
_TAG_GLOB_CHARS = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]+$")


# --- filters -------------------------------------------------------------------------------------


def is_valid_tag(tag: str) -> bool:
    """True for a tag the reference grammar allows (what a tag list may sensibly hold)."""
    return _TAG_RE.match(tag) is not None


def is_glob(pattern: str) -> bool:
    """True when `pattern` uses a wildcard (`*`, `?` or `[...]`), false for a plain name."""
    return any(c in _GLOB_META for c in pattern)


def _brackets_closed(pattern: str) -> bool:
    # fnmatch silently treats an unclosed `[` as a literal character; a user who typed one
    # almost certainly meant a class, so we call it a usage error instead of matching nothing.
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            close = pattern.find("]", j)
            if close < 0:
                return False
            i = close
        i += 1
    return True


def validate_repo_pattern(pattern: str, option: str = "--repo") -> str:
    """A repository glob or name as given to `--repo`/`--exclude-repo`; UsageError if unusable."""
    if not pattern or pattern != pattern.strip():
        raise UsageError(f"{option} {pattern!r}: empty or surrounded by spaces")
    if pattern.lower() != pattern:
        raise UsageError(f"{option} {pattern!r}: repository names are lowercase")
    if not _REPO_GLOB_CHARS.match(pattern) or not _brackets_closed(pattern):
        raise UsageError(f"{option} {pattern!r}: not a repository name or glob "
                         "(a-z 0-9 . _ - / and the wildcards * ? [...])")
    if not is_glob(pattern) and not is_valid_repository(pattern):
        raise UsageError(f"{option} {pattern!r}: not a valid repository name")
    return pattern


def validate_tag_pattern(pattern: str, option: str = "--tag") -> str:
    """A tag glob as given to `--tag`/`--exclude-tag`; UsageError if unusable."""
    if not pattern or not _TAG_GLOB_CHARS.match(pattern) or not _brackets_closed(pattern):
        raise UsageError(f"{option} {pattern!r}: not a tag or tag glob "
                         "(A-Z a-z 0-9 _ . - and the wildcards * ? [...])")
    if not is_glob(pattern) and not is_valid_tag(pattern):
        raise UsageError(f"{option} {pattern!r}: not a valid tag")
    return pattern


def read_repos_file(path: Path) -> list[str]:
    """Names from `--repos-from FILE`: one a line; blank lines and `#` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot read --repos-from {path}: {reason}") from None
    names: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not is_valid_repository(name):
            raise UsageError(f"--repos-from {path}:{number}: {name!r} is not a repository name")
        names.append(name)
    return names


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """True when `name` matches one of the globs."""
    # fnmatchcase: `*` also crosses `/`, so `infra/*` covers `infra/a/b` (documented).
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class Filters:
    """Which repositories and tags a scan covers; every field is a tuple of globs."""

    repos: tuple[str, ...] = ()
    exclude_repos: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()

    @classmethod
    def build(cls, repos: Iterable[str] = (), exclude_repos: Iterable[str] = (),
              tags: Iterable[str] = (), exclude_tags: Iterable[str] = ()) -> Filters:
        """Validate every pattern (UsageError, exit 2, on the first bad one)."""
        return cls(
            tuple(dict.fromkeys(validate_repo_pattern(p) for p in repos)),
            tuple(validate_repo_pattern(p, "--exclude-repo") for p in exclude_repos),
            tuple(validate_tag_pattern(p) for p in tags),
            tuple(validate_tag_pattern(p, "--exclude-tag") for p in exclude_tags),
        )

    @property
    def explicit_repositories(self) -> tuple[str, ...]:
        """Include patterns without wildcards: names scanned even without a catalog."""
        return tuple(p for p in self.repos if not is_glob(p))

    def repository_selected(self, name: str) -> bool:
        """Included (no include patterns means everything) and not excluded."""
        if self.repos and not matches_any(name, self.repos):
            return False
        return not matches_any(name, self.exclude_repos)

    def tag_selected(self, tag: str) -> bool:
        """Included (no include patterns means every tag) and not excluded."""
        if self.tags and not matches_any(tag, self.tags):
            return False
        return not matches_any(tag, self.exclude_tags)

    def to_dict(self) -> dict[str, list[str]]:
        """JSON-ready form for the report."""
        return {"repos": list(self.repos), "exclude_repos": list(self.exclude_repos),
                "tags": list(self.tags), "exclude_tags": list(self.exclude_tags)}


# --- sharding ------------------------------------------------------------------------------------


def shard_of(repository: str, count: int) -> int:
    """The shard (0..count-1) a repository belongs to: a hash stable across runs and machines.

    Python's `hash()` is salted per process, so every worker would split differently; the first
    8 bytes of the name's sha256 are the same everywhere, which is what makes N uncoordinated
    workers cover the registry exactly once.
    """
    value = int.from_bytes(hashlib.sha256(repository.encode("utf-8")).digest()[:8], "big")
    return value % count


@dataclass(frozen=True)
class Shard:
    """One of `count` disjoint slices of a registry's repositories (0-based `index`)."""

    index: int
    count: int

    def __contains__(self, repository: object) -> bool:
        return isinstance(repository, str) and shard_of(repository, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, env: Mapping[str, str] | None = None) -> Shard:
    """`I/N` (0 <= I < N), or `auto/N` to take I from `$JOB_COMPLETION_INDEX` (Indexed Job)."""
    index_text, sep, count_text = text.strip().partition("/")
    if not sep or not count_text.isdigit() or int(count_text) < 1:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 2/8 (or auto/N)")
    count = int(count_text)
    if index_text == "auto":
        environ = os.environ if env is None else env
        index_text = environ.get(JOB_INDEX_ENV, "").strip()
        if not index_text:
            raise UsageError(f"--shard {text!r}: ${JOB_INDEX_ENV} is not set")
        source = f"${JOB_INDEX_ENV}={index_text}"
    else:
        source = f"--shard {text}"
    if not index_text.isdigit():
        raise UsageError(f"{source}: the shard index must be a number")
    index = int(index_text)
    if index >= count:
        raise UsageError(f"{source}: the shard index must be 0..{count - 1} (it is 0-based)")
    return Shard(index, count)
