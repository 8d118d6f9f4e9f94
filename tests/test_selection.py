"""selection.py: which repositories and tags a scan covers (filters, shards, `--repos-from`)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from verifier.errors import ExitCode, UsageError
from verifier.selection import (
    Filters,
    Shard,
    is_glob,
    is_valid_tag,
    matches_any,
    parse_shard,
    read_repos_file,
    shard_of,
)

# --- filters -------------------------------------------------------------------------------------


def test_repository_filters() -> None:
    f = Filters.build(repos=["infra/*", "app/web"], exclude_repos=["infra/cache*"])
    assert f.repository_selected("infra/ci")
    assert f.repository_selected("infra/a/b/c")  # `*` crosses `/`, as documented
    assert f.repository_selected("app/web")
    assert not f.repository_selected("app/webx")
    assert not f.repository_selected("infra/cache/x")
    assert not f.repository_selected("other")
    assert f.explicit_repositories == ("app/web",)
    everything = Filters.build(exclude_repos=["tmp/?"])
    assert everything.repository_selected("anything/at/all")
    assert not everything.repository_selected("tmp/1")
    assert everything.repository_selected("tmp/12")
    assert everything.explicit_repositories == ()


def test_tag_filters() -> None:
    f = Filters.build(tags=["v[0-9]*", "latest"], exclude_tags=["*-rc*"])
    assert [t for t in ("v1", "v2.0-rc1", "latest", "dev", "V1") if f.tag_selected(t)] == [
        "v1", "latest"]
    assert Filters.build(exclude_tags=["sha-*"]).tag_selected("main")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"repos": ["Infra/*"]}, "lowercase"),
    ({"repos": [""]}, "empty"),
    ({"repos": ["infra/[ab"]}, "not a repository name or glob"),
    ({"repos": ["infra/a b"]}, "not a repository name or glob"),
    ({"repos": ["infra//x"]}, "not a valid repository name"),
    ({"exclude_repos": ["x$"]}, "--exclude-repo"),
    ({"tags": ["v1/2"]}, "--tag"),
    ({"tags": ["-v1"]}, "not a valid tag"),
    ({"exclude_tags": ["[x"]}, "--exclude-tag"),
])
def test_bad_patterns_are_usage_errors(kwargs: dict[str, list[str]], message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        Filters.build(**kwargs)
    assert caught.value.exit_code is ExitCode.USAGE


def test_is_glob() -> None:
    assert is_glob("a/*") and is_glob("a?") and is_glob("a[bc]")
    assert not is_glob("a/b-c.d_e")


def test_read_repos_file(tmp_path: Path) -> None:
    path = tmp_path / "repos.txt"
    path.write_text("# critical images\ninfra/ci\n\n  app/web  # the shop\n")
    assert read_repos_file(path) == ["infra/ci", "app/web"]
    path.write_text("infra/ci\nNot/Valid\n")
    with pytest.raises(UsageError, match=r"repos.txt:2: 'Not/Valid'"):
        read_repos_file(path)
    with pytest.raises(UsageError, match="cannot read --repos-from"):
        read_repos_file(tmp_path / "missing.txt")
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="cannot read --repos-from"):
        read_repos_file(path)


# --- sharding ------------------------------------------------------------------------------------


def test_shard_hash_is_stable() -> None:
    # Fixed values: a change here would make running workers of one Indexed Job disagree.
    expected = int.from_bytes(hashlib.sha256(b"library/alpine").digest()[:8], "big")
    assert shard_of("library/alpine", 8) == expected % 8
    assert [shard_of(f"team/app{i}", 5) for i in range(8)] == [
        shard_of(f"team/app{i}", 5) for i in range(8)]
    code = ("from verifier.selection import shard_of; "
            "print([shard_of(f'r{i}', 7) for i in range(50)])")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)}
    assert runs == {str([shard_of(f"r{i}", 7) for i in range(50)]) + "\n"}


@pytest.mark.parametrize("count", [1, 2, 3, 8, 64])
def test_shards_partition_the_names(count: int) -> None:
    names = [f"group{i % 13}/repo-{i}" for i in range(2000)]
    shards = [Shard(i, count) for i in range(count)]
    owners = [[s for s in shards if name in s] for name in names]
    assert all(len(o) == 1 for o in owners)  # each name in exactly one shard
    sizes = Counter(o[0].index for o in owners)
    assert len(sizes) == count and min(sizes.values()) > 2000 / count * 0.6  # roughly even


def test_parse_shard() -> None:
    assert parse_shard("2/8") == Shard(2, 8)
    assert parse_shard("0/1") == Shard(0, 1)
    assert parse_shard("auto/4", {"JOB_COMPLETION_INDEX": "3"}) == Shard(3, 4)
    assert str(Shard(3, 4)) == "3/4"


@pytest.mark.parametrize(("text", "env", "message"), [
    ("8", {}, "expected I/N"),
    ("8/8", {}, "0..7"),
    ("-1/3", {}, "must be a number"),
    ("a/3", {}, "must be a number"),
    ("1/0", {}, "expected I/N"),
    ("1/", {}, "expected I/N"),
    ("auto/3", {}, "JOB_COMPLETION_INDEX is not set"),
    ("auto/3", {"JOB_COMPLETION_INDEX": "3"}, "0..2"),
])
def test_bad_shard_is_usage_error(text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_shard(text, env)


def test_tag_validity_and_glob_matching() -> None:
    assert is_valid_tag("v1.2-rc_3") and is_valid_tag("a" * 128)
    assert not is_valid_tag("a" * 129) and not is_valid_tag(".v1") and not is_valid_tag("")
    assert matches_any("infra/a/b", ["infra/*"]) and not matches_any("app", ["infra/*"])
    assert not matches_any("app", [])
