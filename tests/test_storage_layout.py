"""verifier.storage.layout: digest validation, paths, layout detection, confinement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_storage_synthetic import SyntheticStore
from verifier.errors import UsageError
from verifier.storage.layout import (
    Digest,
    LayoutKind,
    assert_no_symlinks,
    blob_data_path,
    detect_layout,
    digest_from_hex,
    digest_hex,
    is_hex64,
    layer_link_path,
    link_content,
    parse_digest,
    relative_inside,
    repository_dir,
    revision_link_path,
    safe_relpath,
    select_registries,
)

HEX = "ab" * 32
GOOD = f"sha256:{HEX}"


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        "sha256:" + "0" * 64,
    ],
)
def test_parse_digest_accepts_only_canonical_sha256(text: str) -> None:
    assert parse_digest(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256:",
        f"sha256:{HEX.upper()}",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}0",
        f"{GOOD}\n",
        f" {GOOD}",
        f"sha512:{HEX}",
        "sha256:../../x",
        "sha256:" + "../" * 21 + "a",
        f"sha256:{HEX[:62]}/x",
        HEX,
    ],
)
def test_parse_digest_rejects_everything_else(text: str) -> None:
    assert parse_digest(text) is None


def test_is_hex64() -> None:
    assert is_hex64(HEX)
    assert not is_hex64(HEX.upper())
    assert not is_hex64(HEX[:63])
    assert not is_hex64("g" * 64)


def test_paths_are_built_only_from_valid_digests(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    d = Digest(GOOD)
    assert blob_data_path(v2, d) == v2 / "blobs/sha256/ab" / HEX / "data"
    assert layer_link_path(v2, "a/b", d) == v2 / "repositories/a/b/_layers/sha256" / HEX / "link"
    assert revision_link_path(v2, "a", d) == (
        v2 / "repositories/a/_manifests/revisions/sha256" / HEX / "link"
    )
    assert link_content(d) == GOOD.encode()
    assert digest_from_hex(HEX) == GOOD
    # A NewType cast does not make a bad string usable: every builder re-validates.
    bad = Digest("sha256:../../../../etc/passwd")
    for build in (
        lambda: blob_data_path(v2, bad),
        lambda: layer_link_path(v2, "a", bad),
        lambda: revision_link_path(v2, "a", bad),
        lambda: digest_hex(bad),
        lambda: link_content(bad),
        lambda: digest_from_hex("../x"),
    ):
        with pytest.raises(ValueError):
            build()


@pytest.mark.parametrize("repo", ["", "..", "a/../b", "a//b", "a/_layers", "/abs", "."])
def test_repository_dir_rejects_unsafe_names(tmp_path: Path, repo: str) -> None:
    with pytest.raises(ValueError):
        repository_dir(tmp_path, repo)


def test_detect_single_root(tmp_path: Path) -> None:
    SyntheticStore(tmp_path / "reg")
    layout = detect_layout(tmp_path / "reg")
    assert layout.kind is LayoutKind.SINGLE_ROOT
    assert [r.name for r in layout.registries] == [""]
    assert layout.registries[0].v2 == tmp_path / "reg/docker/registry/v2"
    assert "single registry root" in layout.describe()


def test_detect_multi_registry_base(tmp_path: Path) -> None:
    for name in ("private", "dockerhub", "ghcr"):
        SyntheticStore(tmp_path / name)
    (tmp_path / "not-a-registry").mkdir()
    (tmp_path / "a-file").write_text("x")
    layout = detect_layout(tmp_path)
    assert layout.kind is LayoutKind.MULTI_REGISTRY
    assert [r.name for r in layout.registries] == ["dockerhub", "ghcr", "private"]
    assert "3 registries: dockerhub, ghcr, private" in layout.describe()


def test_detect_multi_skips_symlinked_registry(tmp_path: Path) -> None:
    SyntheticStore(tmp_path / "elsewhere" / "real")
    base = tmp_path / "base"
    SyntheticStore(base / "private")
    os.symlink(tmp_path / "elsewhere" / "real", base / "linked")
    layout = detect_layout(base)
    assert [r.name for r in layout.registries] == ["private"]
    assert layout.skipped_symlinks == ("linked",)


def test_detect_refuses_symlink_inside_v2_path(tmp_path: Path) -> None:
    SyntheticStore(tmp_path / "real")
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "real" / "docker", tmp_path / "root" / "docker")
    with pytest.raises(UsageError, match="symlink"):
        detect_layout(tmp_path / "root")


def test_detect_nothing_is_a_usage_error_with_hint(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        detect_layout(tmp_path / "missing")
    store = SyntheticStore(tmp_path / "reg")
    with pytest.raises(UsageError, match=r"did you mean .*reg\?"):
        detect_layout(store.v2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no registry storage found"):
        detect_layout(tmp_path / "empty")


def test_base_given_through_a_symlink_is_resolved(tmp_path: Path) -> None:
    SyntheticStore(tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    layout = detect_layout(tmp_path / "alias")
    assert layout.base == (tmp_path / "real").resolve()


def test_select_registries(tmp_path: Path) -> None:
    for name in ("private", "dockerhub"):
        SyntheticStore(tmp_path / name)
    layout = detect_layout(tmp_path)
    assert [r.name for r in select_registries(layout, ["private"]).registries] == ["private"]
    assert select_registries(layout, []) is layout
    with pytest.raises(UsageError, match="unknown registry 'nope'.*known: 'dockerhub', 'private'"):
        select_registries(layout, ["nope"])
    single = detect_layout(tmp_path / "private")
    assert select_registries(single, ["."]).registries == single.registries
    assert select_registries(single, ["private"]).registries == single.registries


def test_relative_inside(tmp_path: Path) -> None:
    assert relative_inside(tmp_path, tmp_path / "a" / "b") == Path("a/b")
    for bad in (tmp_path, tmp_path.parent / "x", tmp_path / ".." / "x", Path("rel")):
        with pytest.raises(ValueError):
            relative_inside(tmp_path, bad)


@pytest.mark.parametrize("text", ["/etc/passwd", "../x", "a/../../x", "a//b", "", "./a"])
def test_safe_relpath_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        safe_relpath(text)


def test_assert_no_symlinks(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert_no_symlinks(tmp_path, tmp_path / "a" / "b" / "file")  # not existing yet: fine
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "a" / "link")
    with pytest.raises(ValueError, match="symlink"):
        assert_no_symlinks(tmp_path, tmp_path / "a" / "link" / "file")
    (tmp_path / "a" / "f").write_text("x")
    os.symlink(tmp_path / "a" / "f", tmp_path / "a" / "flink")
    with pytest.raises(ValueError, match="symlink"):
        assert_no_symlinks(tmp_path, tmp_path / "a" / "flink")
    assert_no_symlinks(tmp_path, tmp_path / "a" / "flink", include_last=False)
    with pytest.raises(ValueError, match="outside"):
        assert_no_symlinks(tmp_path / "a", tmp_path / "outside" / "x")
