"""Where things live in distribution's filesystem storage, and which registries a path holds.

Two layouts:

* single root: ``ROOT/docker/registry/v2/...`` (what the registry's ``rootdirectory:`` names);
* multi-registry base: ``BASE/<name>/docker/registry/v2/...``.

Every path into the store is built here, and only from a validated sha256 digest: a digest read
from a link file or from manifest JSON (``sha256:../../x``) never becomes a path.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import NewType

from verifier.errors import UsageError

#: A validated ``sha256:<64 lowercase hex>`` digest; only `parse_digest` makes one.
Digest = NewType("Digest", str)

ALGORITHM = "sha256"
V2_PARTS = ("docker", "registry", "v2")
#: The folder names distribution keeps inside a repository folder.
REPO_INTERNAL_DIRS = frozenset({"_layers", "_manifests", "_uploads"})

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX2 = re.compile(r"[0-9a-f]{2}")
_DIGEST_LEN = len(ALGORITHM) + 1 + 64


class LayoutKind(StrEnum):
    """Which of the two supported layouts a path holds."""

    SINGLE_ROOT = "single-root"
    MULTI_REGISTRY = "multi-registry"


def is_hex64(name: str) -> bool:
    """True for exactly 64 lowercase hex characters (a blob or link folder name)."""
    return len(name) == 64 and _HEX64.fullmatch(name) is not None


def is_hex2(name: str) -> bool:
    """True for a two-character lowercase hex blob prefix folder name."""
    return len(name) == 2 and _HEX2.fullmatch(name) is not None


def parse_digest(text: str) -> Digest | None:
    """Return `text` as a `Digest` if it is exactly ``sha256:<64 lowercase hex>``, else None."""
    if len(text) != _DIGEST_LEN or not text.startswith(ALGORITHM + ":"):
        return None
    if not is_hex64(text[len(ALGORITHM) + 1 :]):
        return None
    return Digest(text)


def digest_from_hex(hex_: str) -> Digest:
    """The digest for a validated folder name; raises ValueError for anything else."""
    if not is_hex64(hex_):
        raise ValueError(f"not 64 lowercase hex characters: {hex_[:80]!r}")
    return Digest(f"{ALGORITHM}:{hex_}")


def digest_hex(digest: Digest) -> str:
    """The hex part of a digest, re-validated: a path is never built from an unchecked string."""
    if parse_digest(digest) is None:
        raise ValueError(f"not a sha256 digest: {str(digest)[:80]!r}")
    return digest[len(ALGORITHM) + 1 :]


# --- paths inside one registry's v2 folder ---------------------------------------------------
#
# Each location has a ``*_rel`` form (a ``/``-separated string relative to the v2 folder, the
# same for every storage backend) and a ``*_path`` form (that string joined onto a local v2
# folder). Checks only ever build the relative form and show it through
# `RegistryStorage.display`.


def blobs_dir(v2: Path) -> Path:
    """``v2/blobs/sha256``: the one folder listed to learn which blobs exist."""
    return v2 / "blobs" / ALGORITHM


def repositories_dir(v2: Path) -> Path:
    """``v2/repositories``."""
    return v2 / "repositories"


def blob_data_rel(digest: Digest) -> str:
    """``blobs/sha256/<xx>/<hex>/data``, relative to the v2 folder."""
    hex_ = digest_hex(digest)
    return f"blobs/{ALGORITHM}/{hex_[:2]}/{hex_}/data"


def repository_rel(repo: str) -> str:
    """``repositories/<repo>``; `repo` must be a plain relative name (no ``..``)."""
    parts = repo.split("/")
    if not repo or any(p in ("", ".", "..") or p.startswith("_") for p in parts):
        raise ValueError(f"not a repository name: {repo!r}")
    return f"repositories/{repo}"


def layer_link_rel(repo: str, digest: Digest) -> str:
    """``repositories/<repo>/_layers/sha256/<hex>/link``, relative to the v2 folder."""
    return f"{repository_rel(repo)}/_layers/{ALGORITHM}/{digest_hex(digest)}/link"


def revision_link_rel(repo: str, digest: Digest) -> str:
    """``repositories/<repo>/_manifests/revisions/sha256/<hex>/link``, relative to v2."""
    hex_ = digest_hex(digest)
    return f"{repository_rel(repo)}/_manifests/revisions/{ALGORITHM}/{hex_}/link"


def blob_data_path(v2: Path, digest: Digest) -> Path:
    """``v2/blobs/sha256/<xx>/<hex>/data``."""
    return v2 / blob_data_rel(digest)


def repository_dir(v2: Path, repo: str) -> Path:
    """``v2/repositories/<repo>``; `repo` must be a plain relative name (no ``..``)."""
    return v2 / repository_rel(repo)


def layer_link_path(v2: Path, repo: str, digest: Digest) -> Path:
    """``v2/repositories/<repo>/_layers/sha256/<hex>/link``."""
    return v2 / layer_link_rel(repo, digest)


def revision_link_path(v2: Path, repo: str, digest: Digest) -> Path:
    """``v2/repositories/<repo>/_manifests/revisions/sha256/<hex>/link``."""
    return v2 / revision_link_rel(repo, digest)


def link_content(digest: Digest) -> bytes:
    """The exact bytes distribution writes into a link file (no newline)."""
    digest_hex(digest)
    return digest.encode("ascii")


# --- registries and layouts ------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryStorage:
    """One registry's storage: `root` holds ``docker/registry/v2``; `name` "" for a single root.

    `url` is set for a registry read from an object store (``s3://bucket/prefix``, no trailing
    slash needed); `root` and `v2` then name no local folder and only filesystem code uses them.
    Every path a check shows comes from `display` (or from strings a reader put into the
    records), so findings name ``s3://...`` or local paths alike.
    """

    name: str
    root: Path
    url: str | None = None

    @property
    def v2(self) -> Path:
        """``root/docker/registry/v2`` (filesystem registries only)."""
        return self.root.joinpath(*V2_PARTS)

    def display(self, rel: str) -> str:
        """How findings show `rel`, a ``/``-separated path relative to the v2 folder (e.g.
        ``blobs/sha256/ab/<hex>/data``): ``str(v2 / rel)`` on a filesystem, else
        ``{url}/docker/registry/v2/{rel}``."""
        if self.url is not None:
            return f"{self.url.rstrip('/')}/{'/'.join(V2_PARTS)}/{rel}"
        return str(self.v2 / rel)

    @property
    def label(self) -> str:
        """How messages name this registry: its folder name, or a single root's folder name."""
        if self.name:
            return self.name
        return self.url or self.root.name or str(self.root)

    @property
    def location(self) -> str:
        """How reports name this registry's root: its object-store URL or its folder."""
        return self.url.rstrip("/") if self.url else str(self.root)

    def matches(self, selector: str) -> bool:
        """Whether a ``--registry``/``--proxy-cache`` value names this registry.

        A single root answers to ``.`` and to its folder's name.
        """
        if self.name:
            return selector == self.name
        return selector in (".", self.root.name)


@dataclass(frozen=True)
class StorageLayout:
    """What `detect_layout` found under the base the user gave."""

    base: Path
    kind: LayoutKind
    registries: tuple[RegistryStorage, ...]
    #: Entries of a multi-registry base skipped because they are symlinks (never followed).
    skipped_symlinks: tuple[str, ...] = field(default=())
    #: ``s3://bucket/prefix`` for a layout in object storage (then `base` is never read).
    url: str | None = None

    @property
    def location(self) -> str:
        """How reports name the storage: the object-store URL, or the base folder."""
        return self.url or str(self.base)

    def describe(self) -> str:
        """One line for the report, e.g. ``multi-registry base /srv (3 registries: a, b, c)``."""
        if self.kind is LayoutKind.SINGLE_ROOT:
            return f"single registry root {self.location}"
        names = ", ".join(r.name for r in self.registries)
        return (
            f"multi-registry base {self.location} ({len(self.registries)} registries: {names})"
        )


def _is_real_dir(path: Path) -> bool:
    """A directory that is not a symlink (lstat only)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _has_v2(root: Path) -> bool:
    """``root/docker/registry/v2`` exists with no symlink on the way."""
    current = root
    for part in V2_PARTS:
        current = current / part
        if not _is_real_dir(current):
            return False
    return True


def _v2_symlink(root: Path) -> Path | None:
    """The first of ``docker``, ``registry``, ``v2`` under root that is a symlink, if any."""
    current = root
    for part in V2_PARTS:
        current = current / part
        if os.path.islink(current):
            return current
        if not _is_real_dir(current):
            return None
    return None


def detect_layout(base: Path) -> StorageLayout:
    """Find the registries under `base` (single root or multi-registry base); raises UsageError.

    The base itself is resolved (the user named it); nothing below it is followed if a symlink.
    """
    base = Path(os.path.abspath(base))
    if not base.exists():
        raise UsageError(f"{base}: no such directory")
    base = base.resolve()
    if not base.is_dir():
        raise UsageError(f"{base}: not a directory")
    link = _v2_symlink(base)
    if link is not None:
        raise UsageError(
            f"{link} is a symlink; regverify never follows symlinks inside the storage, "
            "so pass the real path"
        )
    if _has_v2(base):
        return StorageLayout(base, LayoutKind.SINGLE_ROOT, (RegistryStorage("", base),))
    registries: list[RegistryStorage] = []
    skipped: list[str] = []
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError as exc:
        raise UsageError(f"{base}: cannot list: {exc.strerror}") from exc
    for entry in entries:
        if entry.is_symlink():
            if _has_v2(Path(os.path.realpath(entry.path))):
                skipped.append(entry.name)
            continue
        if entry.is_dir(follow_symlinks=False) and _has_v2(Path(entry.path)):
            registries.append(RegistryStorage(entry.name, Path(entry.path)))
    if registries or skipped:
        return StorageLayout(base, LayoutKind.MULTI_REGISTRY, tuple(registries), tuple(skipped))
    hint = ""
    if base.parts[-3:] == V2_PARTS:
        hint = f" (did you mean {base.parents[2]}? pass the folder that holds docker/)"
    raise UsageError(
        f"{base}: no registry storage found: expected {base}/docker/registry/v2 or "
        f"{base}/<name>/docker/registry/v2{hint}"
    )


def select_registries(layout: StorageLayout, names: Iterable[str]) -> StorageLayout:
    """Keep only the registries named by ``--registry``; an unknown name is a UsageError."""
    wanted = list(names)
    if not wanted:
        return layout
    unknown_names = [n for n in wanted if not any(r.matches(n) for r in layout.registries)]
    if unknown_names:
        raise UsageError(
            f"unknown registry {', '.join(map(repr, unknown_names))} in {layout.location}; "
            f"known: {known_registry_names(layout)}"
        )
    kept = tuple(r for r in layout.registries if any(r.matches(n) for n in wanted))
    return dataclasses.replace(layout, registries=kept)


def check_registry_names(layout: StorageLayout, names: Iterable[str], option: str) -> None:
    """Raise UsageError if a name given to `option` matches no registry in `layout`."""
    unknown_names = [n for n in names if not any(r.matches(n) for r in layout.registries)]
    if unknown_names:
        raise UsageError(
            f"{option}: unknown registry {', '.join(map(repr, unknown_names))}; "
            f"known: {known_registry_names(layout)}"
        )


def known_registry_names(layout: StorageLayout) -> str:
    """The names ``--registry`` accepts for this layout, for error messages."""
    if layout.kind is LayoutKind.SINGLE_ROOT:
        if layout.url is not None:
            return "'.' (single registry root)"
        return f"'.' or {layout.base.name!r} (single registry root)"
    return ", ".join(repr(r.name) for r in layout.registries) or "(none)"


# --- confinement -----------------------------------------------------------------------------


def relative_inside(base: Path, path: Path) -> Path:
    """`path` relative to `base`, lexically; ValueError if it is not strictly inside `base`."""
    if not path.is_absolute() or not base.is_absolute():
        raise ValueError(f"need absolute paths: {base}, {path}")
    if any(part in (".", "..") for part in path.parts):
        raise ValueError(f"{path}: '.' or '..' in path")
    try:
        rel = path.relative_to(base)
    except ValueError:
        raise ValueError(f"{path} is outside {base}") from None
    if not rel.parts:
        raise ValueError(f"{path} is the base itself")
    return rel


def safe_relpath(text: str) -> Path:
    """A relative path from a journal, checked: not absolute, no ``..``, no empty parts."""
    rel = Path(text)
    if rel.is_absolute() or not rel.parts or any(p in ("", ".", "..") for p in text.split("/")):
        raise ValueError(f"unsafe relative path {text[:200]!r}")
    return rel


def assert_no_symlinks(base: Path, path: Path, *, include_last: bool = True) -> None:
    """Raise ValueError if `path` leaves `base` or any component below `base` is a symlink.

    Components that do not exist yet are fine (they will be created as real folders).
    """
    rel = relative_inside(base, path)
    current = base
    parts = rel.parts if include_last else rel.parts[:-1]
    for part in parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode):
            raise ValueError(f"{current} is a symlink; refusing to act through it")
