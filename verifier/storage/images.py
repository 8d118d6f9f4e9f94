"""What each tag needs from storage to be pulled, and which of it is missing (a pure check).

A pull of ``repo:tag`` from distribution's filesystem storage reads: the tag's ``current/link``,
the manifest's revision link and blob data, then for every index child its revision link and
data, and for every config and layer the repository's ``_layers`` link and the blob's data
(``linkedBlobStore``: a blob is served through a repository only while that link exists).
Link and manifest problems are reported by the link checks in `verifier.storage.checks`; this
module adds what they cannot see: the config and layer blobs each tagged image needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from verifier.model.manifest import (
    ImageIndex,
    ImageManifest,
    Manifest,
    ManifestError,
    parse_manifest,
)
from verifier.storage.layout import ALGORITHM, digest_from_hex, parse_digest
from verifier.storage.records import ManifestReader, ReadFailure

#: At most this many tags are spelled out in a message (details always list every one).
MAX_TAGS_IN_MESSAGE = 5

RESTART_STEP = (
    "restart the registry so its blob cache forgets the deleted data (while warm it answers "
    "200 for the blob and then sends no bytes)"
)
QUARANTINE_STEP = (
    "run `regverify fs fix` first: while the orphan layer link stays, a re-push skips the blob"
)
RELINK_STEP = (
    "run `regverify fs fix --relink-layers` to recreate the layer link (the data is present), "
    "or re-push these tags"
)


@dataclass
class BlobNeed:
    """One config or layer blob that tagged images of a repository need."""

    hex: str
    role: str
    tags: set[str] = field(default_factory=set)
    manifests: set[str] = field(default_factory=set)


@dataclass
class Needs:
    """What the tags of one repository need: `reach` maps every object's hex to those tags."""

    reach: dict[str, set[str]] = field(default_factory=dict)
    blobs: dict[str, BlobNeed] = field(default_factory=dict)


def _hex(raw: str) -> str | None:
    digest = parse_digest(raw)
    return None if digest is None else digest[len(ALGORITHM) + 1 :]


def _parsed(read: ManifestReader, hex_: str, memo: dict[str, Manifest | None]) -> Manifest | None:
    if hex_ in memo:
        return memo[hex_]
    body = read(digest_from_hex(hex_))
    manifest: Manifest | None = None
    if not isinstance(body, ReadFailure):
        try:
            manifest = parse_manifest(body)
        except ManifestError:
            manifest = None  # reported as manifest_invalid by the index check
    memo[hex_] = manifest
    return manifest


def gather_needs(
    tags: dict[str, str],
    revisions: set[str] | dict[str, str],
    present: Callable[[str], bool | None],
    read: ManifestReader,
    *,
    index_children: bool,
    memo: dict[str, Manifest | None] | None = None,
) -> Needs:
    """Walk every tag (tag -> manifest hex) down to its configs and layers.

    Index children are followed only when `index_children` (a pull-through cache legitimately
    holds partial indexes). Objects whose data is absent or unknown are reached but not read;
    `memo` (hex -> parsed manifest, None if unusable) saves parsing what was parsed before.
    """
    needs = Needs()
    if memo is None:
        memo = {}
    for tag, top in sorted(tags.items()):
        stack = [top]
        seen: set[str] = set()
        while stack:
            hex_ = stack.pop()
            if hex_ in seen:
                continue
            seen.add(hex_)
            needs.reach.setdefault(hex_, set()).add(tag)
            if hex_ not in revisions or present(hex_) is not True:
                continue  # a dangling tag, an orphan child or a dangling revision: reported apart
            manifest = _parsed(read, hex_, memo)
            manifest_digest = f"{ALGORITHM}:{hex_}"
            if isinstance(manifest, ImageManifest):
                refs = [("config", manifest.config.digest)]
                refs += [("layer", d.digest) for d in manifest.layers]
                for role, raw in refs:
                    ref = _hex(raw)
                    if ref is None:
                        continue  # not a digest this storage can hold: manifest_invalid
                    need = needs.blobs.get(ref)
                    if need is None:
                        need = needs.blobs[ref] = BlobNeed(ref, role)
                    need.tags.add(tag)
                    need.manifests.add(manifest_digest)
                    needs.reach.setdefault(ref, set()).add(tag)
            elif isinstance(manifest, ImageIndex) and index_children:
                for desc in manifest.manifests:
                    child = _hex(desc.digest)
                    if child is not None:
                        stack.append(child)
    return needs


def tags_text(repository: str, tags: set[str] | list[str]) -> str:
    """``repo:a, repo:b and 3 more`` for a message."""
    ordered = sorted(tags)
    shown = ", ".join(f"{repository}:{t}" for t in ordered[:MAX_TAGS_IN_MESSAGE])
    more = len(ordered) - MAX_TAGS_IN_MESSAGE
    return f"{shown} and {more} more" if more > 0 else shown


def rebuild_steps(repository: str, tags: set[str] | list[str], *, orphan_link: bool) -> list[str]:
    """What an operator does about a blob whose data is gone, in order."""
    steps = [QUARANTINE_STEP] if orphan_link else []
    steps.append(RESTART_STEP)
    if tags:
        steps.append(f"rebuild or re-push: {tags_text(repository, tags)}")
    return steps
