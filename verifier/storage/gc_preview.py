"""Predict what distribution's ``garbage-collect`` would delete and which tags it would break.

Issue 8. The mark phase of ``registry/storage/garbagecollect.go`` (``MarkAndSweep``) is
re-implemented for two lines, chosen with ``--gc-version``:

* **2.8** (``release/2.8``): every revision of every repository is enumerated; with
  ``--delete-untagged`` a revision that no tag's ``current/link`` names goes to ``manifestArr``
  (its revision link is removed) and is *not* marked; a marked manifest marks exactly the digests
  of ``manifest.References()`` — for an index that is its children's manifest blobs, never their
  configs or layers. Then every blob whose digest is not in ``markSet`` is deleted.
* **3** (``main``): the same, except that a marked manifest's references are marked by
  ``markManifestReferences``, which recurses into each reference that still ``Exists`` as a
  revision of that repository (unless it was already marked), ``unmarkReferencedManifest`` keeps
  every ``manifestArr`` entry that ended up marked, and each repository's ``_layers`` links to
  blobs that are not marked (yet) are deleted too.

Then the prediction is joined with the reference graph of every tag (tag → manifest or index →
children → config and layers, per repository) to report the tags that would become unpullable
(`gc_would_break`) and the objects that would be deleted while a tag still references them
(`gc_would_delete_referenced`), with the bytes freed per repository.

Speed: the real 2.8 ``--delete-untagged`` calls ``Tags.Lookup`` for every revision, and
``Lookup`` re-reads every tag's ``current/link`` (quadratic in a repository with thousands of
tags). Here each repository's tags, revision links and layer links are read once
(`verifier.storage.scan.read_repository`), the blob store is listed once
(`verifier.storage.scan.list_blobs`), each manifest is parsed at most once, and ``Lookup``
becomes a dictionary look-up.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from verifier.findings import Finding, Kind, Report, Severity
from verifier.manifest import (
    DEFAULT_MAX_MANIFEST_BYTES,
    ManifestError,
    MediaType,
    parse_descriptor,
)
from verifier.storage.defaults import GcVersion
from verifier.storage.fsio import ReadFailure, read_regular_file
from verifier.storage.layout import (
    ALGORITHM,
    RegistryStorage,
    StorageLayout,
    blob_data_path,
    digest_from_hex,
    layer_link_path,
    parse_digest,
    revision_link_path,
)
from verifier.storage.scan import (
    BlobStore,
    BlobStoreState,
    RepoLinks,
    iter_repositories,
    list_blobs,
)

_PREFIX = ALGORITHM + ":"
#: At most this many tags are listed in one finding's details (the count is always exact).
MAX_TAGS_LISTED = 50
#: At most this many chain entries are spelled out in a `gc_would_break` message.
MAX_CHAIN_IN_MESSAGE = 3
#: At most this many repositories get their own note line (all are in the JSON `gc_preview`).
MAX_REPOSITORY_NOTES = 20


@dataclass(frozen=True)
class GcOptions:
    """The ``garbage-collect`` invocation to predict."""

    version: GcVersion = GcVersion.V2_8
    delete_untagged: bool = False
    #: distribution reads manifests of any size; above this we say "cannot predict" instead.
    max_manifest_bytes: int = 4 * DEFAULT_MAX_MANIFEST_BYTES

    @property
    def command(self) -> str:
        """How the predicted command reads, for messages."""
        flag = " --delete-untagged" if self.delete_untagged else ""
        return f"garbage-collect{flag} (distribution {self.version})"


# --- what distribution's manifestStore.Get + References() see -----------------------------------


class ManifestShape(StrEnum):
    """What kind of manifest a revision holds, as distribution's manifest store dispatches it."""

    INDEX = "index"
    IMAGE = "image"
    SCHEMA1 = "schema1"


@dataclass(frozen=True)
class Reference:
    """One descriptor of ``manifest.References()``: a child manifest, a config or a layer."""

    digest: str
    role: str  # "child", "attestation", "config", "layer"
    platform: str | None = None
    media_type: str | None = None


@dataclass(frozen=True)
class ManifestRefs:
    """A parsed manifest: its shape, media type and references, in distribution's order."""

    shape: ManifestShape
    media_type: str
    references: tuple[Reference, ...]


@dataclass(frozen=True)
class Unparseable:
    """distribution's ``manifestStore.Get`` would fail on this content too (the GC stops)."""

    reason: str


@dataclass(frozen=True)
class Unreadable:
    """We could not read the content; what distribution would do with it is unknown."""

    reason: str


ManifestResult = ManifestRefs | Unparseable | Unreadable
#: Looks a manifest up by the hex of its digest.
ManifestLookup = Callable[[str], ManifestResult]

_IMAGE_TYPES = {str(MediaType.DOCKER_MANIFEST), str(MediaType.OCI_MANIFEST)}
_INDEX_TYPES = {str(MediaType.DOCKER_LIST), str(MediaType.OCI_INDEX)}


def _go_descriptor(raw: Any, role: str, where: str) -> Reference:
    """One descriptor the way Go's ``json.Unmarshal`` reads it: missing fields are zero values,
    fields of the wrong JSON type are an error. Digests are *not* validated (``digest.Digest``
    is a plain string type), so a malformed one is simply marked and never found."""
    if raw is None:
        return Reference("", role)
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: cannot unmarshal {type(raw).__name__} into a descriptor")
    digest = raw.get("digest", "")
    media_type = raw.get("mediaType", "")
    size = raw.get("size", 0)
    if digest is not None and not isinstance(digest, str):
        raise ValueError(f"{where}: digest is not a string")
    if media_type is not None and not isinstance(media_type, str):
        raise ValueError(f"{where}: mediaType is not a string")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise ValueError(f"{where}: size is not an integer")
    platform = None
    if role in ("child", "attestation"):
        # Only for messages: the shared strict parser knows platforms and attestations.
        try:
            parsed = parse_descriptor(raw, where)
        except ManifestError:
            pass
        else:
            platform = parsed.platform
            if parsed.is_attestation:
                role = "attestation"
    return Reference(digest or "", role, platform, media_type or None)


def _go_list(doc: dict[str, Any], key: str, where: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}: {key} is not a list")
    return value


def manifest_references(body: bytes) -> ManifestRefs | Unparseable:
    """Parse a manifest the way distribution's ``manifestStore.Get`` dispatches it, and list
    ``References()``.

    Mirrors ``registry/storage/manifeststore.go`` (both lines): unmarshal ``schemaVersion`` and
    ``mediaType``; schema 1 → its ``fsLayers``; schema 2 with a Docker/OCI image type → config
    then layers; a list/index type → its manifests; no ``mediaType`` → an index if
    ``manifests`` is present, else an OCI image manifest; any other type or schema version is
    an error ("unrecognized manifest content type"), which makes ``garbage-collect`` stop.
    More lenient than `verifier.manifest.parse_manifest` on purpose: Go does not validate
    digests or require sizes.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Unparseable(f"not JSON: {exc}")
    if not isinstance(doc, dict):
        return Unparseable("manifest is not a JSON object")
    version = doc.get("schemaVersion", 0)
    media_type = doc.get("mediaType", "")
    if version is None:
        version = 0
    if not isinstance(version, int) or isinstance(version, bool):
        return Unparseable("schemaVersion is not an integer")
    if media_type is None:
        media_type = ""
    if not isinstance(media_type, str):
        return Unparseable("mediaType is not a string")
    try:
        if version == 1:
            layers = _go_list(doc, "fsLayers", "schema1")
            refs = []
            for i, layer in enumerate(layers):
                if not isinstance(layer, dict) or not isinstance(layer.get("blobSum", ""), str):
                    raise ValueError(f"fsLayers[{i}] is not an object with a string blobSum")
                refs.append(Reference(layer.get("blobSum") or "", "layer"))
            return ManifestRefs(
                ManifestShape.SCHEMA1, media_type or str(MediaType.DOCKER_SCHEMA1), tuple(refs)
            )
        if version != 2:
            return Unparseable(f"unrecognized manifest schema version {version}")
        if media_type in _INDEX_TYPES or (media_type == "" and doc.get("manifests") is not None):
            children = _go_list(doc, "manifests", "index")
            return ManifestRefs(
                ManifestShape.INDEX,
                media_type or str(MediaType.OCI_INDEX),
                tuple(
                    _go_descriptor(c, "child", f"manifests[{i}]") for i, c in enumerate(children)
                ),
            )
        if media_type in _IMAGE_TYPES or media_type == "":
            config = _go_descriptor(doc.get("config"), "config", "config")
            layer_refs = [
                _go_descriptor(d, "layer", f"layers[{i}]")
                for i, d in enumerate(_go_list(doc, "layers", "manifest"))
            ]
            return ManifestRefs(
                ManifestShape.IMAGE,
                media_type or str(MediaType.OCI_MANIFEST),
                (config, *layer_refs),
            )
    except ValueError as exc:
        return Unparseable(str(exc))
    return Unparseable(f"unrecognized manifest content type {media_type[:80]}")


class ManifestCache:
    """Reads and parses each manifest blob of one registry at most once."""

    def __init__(self, registry: RegistryStorage, limit: int) -> None:
        self._registry = registry
        self._limit = limit
        self._cache: dict[str, ManifestResult] = {}
        self.reads = 0

    def __call__(self, hex_: str) -> ManifestResult:
        """The manifest whose digest has this hex (validated before any path is built)."""
        hit = self._cache.get(hex_)
        if hit is not None:
            return hit
        self.reads += 1
        path = str(blob_data_path(self._registry.v2, digest_from_hex(hex_)))
        body = read_regular_file(path, self._limit)
        result: ManifestResult
        if isinstance(body, ReadFailure):
            result = Unreadable(f"{path}: {body.reason}{': ' + body.detail if body.detail else ''}")
        else:
            result = manifest_references(body)
        self._cache[hex_] = result
        return result


# --- gathering: one pass over each registry ----------------------------------------------------

# distribution/reference's anchored name grammar (reference.WithName): an optional domain,
# then lowercase path components; at most 255 characters. garbage-collect stops with "failed to
# parse repo name" on a repository folder that does not match it.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
_REPO_NAME = re.compile(rf"(?:{_DOMAIN}/)?{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*")
_NAME_TOTAL_LENGTH_MAX = 255


def valid_repository_name(name: str) -> bool:
    """Whether distribution's ``reference.WithName`` accepts `name`."""
    return len(name) <= _NAME_TOTAL_LENGTH_MAX and _REPO_NAME.fullmatch(name) is not None


@dataclass
class GcRepository:
    """One repository as garbage-collect sees it, read once."""

    name: str
    links: RepoLinks
    has_tags_dir: bool = True
    has_layers_dir: bool = True
    #: tag ``current/link`` files whose content is not a digest (``Tags.Lookup`` fails on them)
    bad_tag_links: list[str] = field(default_factory=list)
    #: revision links whose content is not a digest (the revision enumeration fails on them)
    bad_revision_links: list[str] = field(default_factory=list)

    def walk_key(self) -> tuple[str, ...]:
        """distribution walks ``repositories/`` depth-first with sorted names and takes a folder
        as a repository when it meets its ``_manifests`` (``handleRepository`` in
        ``registry/storage/catalog.go``), so ``a/0x`` comes before ``a`` but ``a/b`` after."""
        return (*self.name.split("/"), "_manifests")

    def tags_by_hex(self) -> dict[str, list[str]]:
        """hex → the tags whose ``current/link`` names it: ``Tags.Lookup`` as one dictionary."""
        out: dict[str, list[str]] = {}
        for tag, (hex_, _) in sorted(self.links.tags.items()):
            if hex_ is not None:
                out.setdefault(hex_, []).append(tag)
        return out


@dataclass
class RegistrySnapshot:
    """Everything garbage-collect would read from one registry, gathered in one pass."""

    registry: RegistryStorage
    blobs: BlobStore
    #: only folders holding ``_manifests``, in distribution's walk order
    repositories: list[GcRepository]
    #: folders holding only ``_layers``/``_uploads`` (never enumerated by garbage-collect)
    other_repositories: list[RepoLinks]
    #: storage findings that touch what garbage-collect reads (turned into warnings)
    findings: list[Finding]


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _relevant(path: str, options: GcOptions) -> bool:
    """Whether a storage finding at `path` is about something this garbage-collect reads."""
    if "/_uploads/" in path or path.endswith("/_uploads"):
        return False
    if "/_layers/" in path or path.endswith("/_layers"):
        # Only the 3.x line enumerates _layers (to delete links of unmarked blobs).
        return options.version is GcVersion.V3
    if "/_manifests/tags/" in path or path.endswith("/_manifests/tags"):
        # Tags are read only by --delete-untagged (Tags.Lookup / Tags.All).
        return options.delete_untagged
    return True


_UNFOLLOWED_LINK = re.compile(r"/(_manifests/revisions|_layers)/sha256/([0-9a-f]{64})/link$")


def _assume_link(links: RepoLinks, f: Finding) -> bool:
    """A revision or layer link we did not read (a symlink, or unreadable) is assumed to be the
    well-formed link distribution would read through it, so the prediction follows the common
    case; the finding still makes the report incomplete."""
    if f.kind not in (Kind.UNEXPECTED_SYMLINK, Kind.UNREADABLE_FILE):
        return False
    match = _UNFOLLOWED_LINK.search(f.path or "")
    if match is None:
        return False
    target = links.revisions if match.group(1) == "_manifests/revisions" else links.layers
    target[match.group(2)] = f.path or ""
    return True


def gather(registry: RegistryStorage, options: GcOptions) -> RegistrySnapshot:
    """List the blob store once and read every repository's links once."""
    blobs = list_blobs(registry, with_sizes=True)
    findings: list[Finding] = [f for f in blobs.findings if _relevant(f.path or "", options)]
    walk_findings: list[Finding] = []
    repos: list[GcRepository] = []
    others: list[RepoLinks] = []
    for links in iter_repositories(registry, walk_findings):
        manifests = os.path.join(links.path, "_manifests")
        if not _is_dir(manifests):
            others.append(links)
            continue
        repo = GcRepository(
            links.name,
            links,
            has_tags_dir=_is_dir(os.path.join(manifests, "tags")),
            has_layers_dir=_is_dir(os.path.join(links.path, "_layers")),
        )
        for f in links.findings:
            path = f.path or ""
            if not _relevant(path, options):
                continue
            findings.append(f)
            if _assume_link(links, f) or f.kind is not Kind.INVALID_LINK:
                continue
            if path.endswith("/current/link"):
                repo.bad_tag_links.append(path)
            elif (
                "/_manifests/revisions/" in path
                and path.endswith("/link")
                # Content naming another valid digest is read by distribution as that digest:
                # odd, not fatal (the warning makes the prediction incomplete).
                and parse_digest(f.actual_digest or "") is None
            ):
                repo.bad_revision_links.append(path)
        repos.append(repo)
    findings.extend(f for f in walk_findings if _relevant(f.path or "", options))
    repos.sort(key=GcRepository.walk_key)
    return RegistrySnapshot(registry, blobs, repos, others, findings)


# --- the mark phase ------------------------------------------------------------------------------


@dataclass
class GcPlan:
    """What the real garbage-collect would do to one registry."""

    #: digests in ``markSet``
    marked: set[str] = field(default_factory=set)
    #: repository → hex of revisions whose revision link would be removed (``RemoveManifest``)
    deleted_revisions: dict[str, set[str]] = field(default_factory=dict)
    #: hex of blobs whose ``blobs/sha256/<xx>/<hex>`` folder would be removed (``RemoveBlob``)
    deleted_blobs: set[str] = field(default_factory=set)
    #: 3.x only: repository → hex of ``_layers`` links that would be removed (``RemoveLayer``)
    deleted_layer_links: dict[str, set[str]] = field(default_factory=dict)
    #: the error the real run would stop with during the mark phase (then nothing is deleted)
    abort: str | None = None
    #: reasons the prediction may differ from the real run
    uncertain: list[str] = field(default_factory=list)
    #: revisions the enumeration would hand to the mark function
    manifests_enumerated: int = 0

    @property
    def manifests_deleted(self) -> int:
        """Revision links the run would remove."""
        return sum(len(v) for v in self.deleted_revisions.values())

    @property
    def layer_links_deleted(self) -> int:
        """``_layers`` links the run would remove (3.x)."""
        return sum(len(v) for v in self.deleted_layer_links.values())


class _Abort(Exception):
    """The real garbage-collect would return this error from its mark phase."""


def _exists(repo: GcRepository, blobs: BlobStore, digest: str) -> bool:
    """``manifestService.Exists``: a revision link in this repository and its blob data.

    An invalid digest cannot name a link path; distribution's error is ignored by the caller
    (``if ok, _ := manifestService.Exists(...)``), i.e. it counts as "does not exist".
    """
    valid = parse_digest(digest)
    if valid is None:
        return False
    hex_ = valid[len(_PREFIX) :]
    return hex_ in repo.links.revisions and blobs.has(hex_) is True


def _get(lookup: ManifestLookup, hex_: str, plan: GcPlan) -> ManifestRefs | None:
    """``manifestService.Get`` for the mark phase: an unparseable manifest stops the real run."""
    result = lookup(hex_)
    if isinstance(result, Unparseable):
        raise _Abort(
            f"failed to mark: failed to retrieve manifest for digest {_PREFIX}{hex_}: "
            f"{result.reason}"
        )
    if isinstance(result, Unreadable):
        plan.uncertain.append(f"cannot read manifest {_PREFIX}{hex_} ({result.reason})")
        return None
    return result


def _mark_references_3x(
    root: str, repo: GcRepository, blobs: BlobStore, lookup: ManifestLookup, plan: GcPlan
) -> None:
    """``markManifestReferences`` (main): mark each reference; descend into one that was not
    marked before and still ``Exists`` in this repository. An already-marked reference is
    skipped *with its subtree* (``if ingester(descriptor.Digest) { continue }``), even when it
    was marked elsewhere only as a blob — the marking order therefore matters, and is the
    walk order of repositories and of sorted revision folders."""
    stack = [root]
    while stack:
        manifest = _get(lookup, stack.pop(), plan)
        if manifest is None:
            continue
        for ref in manifest.references:
            if ref.digest in plan.marked:
                continue
            plan.marked.add(ref.digest)
            if _exists(repo, blobs, ref.digest):
                stack.append(ref.digest[len(_PREFIX) :])


def simulate_gc(
    repositories: Sequence[GcRepository],
    blobs: BlobStore,
    lookup: ManifestLookup,
    options: GcOptions,
) -> GcPlan:
    """Re-run ``MarkAndSweep``'s mark phase and the sweep's choice of victims, deleting nothing.

    `repositories` must be in distribution's walk order (`gather` sorts them).
    """
    plan = GcPlan()
    v3 = options.version is GcVersion.V3
    # manifestArr: (repository, hex) in enumeration order.
    manifest_arr: list[tuple[str, str]] = []
    try:
        for repo in repositories:
            if not valid_repository_name(repo.name):
                raise _Abort(f"failed to mark: failed to parse repo name {repo.name}")
            if repo.bad_revision_links:
                # linkedBlobStore.Enumerate → readlink → digest.Parse fails on the first one.
                raise _Abort(
                    f"failed to mark: {repo.bad_revision_links[0]}: invalid checksum digest format"
                )
            tags_by_hex = repo.tags_by_hex() if options.delete_untagged else {}
            # linkedBlobStore.Enumerate walks revisions/sha256/<hex>/link in sorted order and
            # skips a link whose blob data is gone (Stat → ErrBlobUnknown → "move on").
            for hex_ in sorted(repo.links.revisions):
                present = blobs.has(hex_)
                if present is None:
                    plan.uncertain.append(
                        f"{repo.name}: blob data of revision {_PREFIX}{hex_} not examinable"
                    )
                    continue
                if not present:
                    continue
                plan.manifests_enumerated += 1
                digest = _PREFIX + hex_
                if options.delete_untagged:
                    if repo.bad_tag_links:
                        # Tags.Lookup reads every tag's current/link; digest.Parse fails.
                        raise _Abort(
                            f"failed to mark: failed to retrieve tags for digest {digest}: "
                            f"{repo.bad_tag_links[0]}: invalid checksum digest format"
                        )
                    if not tags_by_hex.get(hex_):
                        if not repo.has_tags_dir:
                            if v3:
                                # main: "manifest tags path of repository %s does not exist"
                                # → return nil: neither marked nor deleted.
                                continue
                            # release/2.8: Tags.All → ErrRepositoryUnknown → returned as
                            # "failed to retrieve tags" (observed with 2.8.2: exit 1).
                            raise _Abort(
                                f"failed to mark: failed to retrieve tags unknown repository "
                                f"name={repo.name}"
                            )
                        manifest_arr.append((repo.name, hex_))
                        continue
                # "Mark the manifest's blob", then its references.
                plan.marked.add(digest)
                if v3:
                    _mark_references_3x(hex_, repo, blobs, lookup, plan)
                else:
                    manifest = _get(lookup, hex_, plan)
                    if manifest is not None:
                        # release/2.8: References() are marked, never descended into.
                        plan.marked.update(r.digest for r in manifest.references)
            if v3:
                if not repo.has_layers_dir:
                    # main enumerates _layers right after the manifests and returns its error;
                    # the filesystem driver's Walk of a missing folder is PathNotFound.
                    # (From reading the code; not checked against a 3.x binary.)
                    raise _Abort(
                        f"failed to mark: Path not found: repositories/{repo.name}/_layers"
                    )
                # main: a layer link whose blob is not in markSet *at this point* is deleted;
                # links to blobs without data are skipped by the enumerator (ErrBlobUnknown).
                doomed = {
                    h
                    for h in repo.links.layers
                    if blobs.has(h) is True and _PREFIX + h not in plan.marked
                }
                if doomed:
                    plan.deleted_layer_links[repo.name] = doomed
    except _Abort as exc:
        return GcPlan(abort=str(exc), uncertain=plan.uncertain)
    if v3:
        # unmarkReferencedManifest: an untagged manifest that got marked (an index child) stays.
        manifest_arr = [(r, h) for r, h in manifest_arr if _PREFIX + h not in plan.marked]
    for repo_name, hex_ in manifest_arr:
        plan.deleted_revisions.setdefault(repo_name, set()).add(hex_)
    # Sweep: every blob with a data file whose digest is not in markSet.
    plan.deleted_blobs = {h for h in blobs.present if _PREFIX + h not in plan.marked}
    if blobs.unknown:
        plan.uncertain.append(
            f"{len(blobs.unknown)} blob(s) whose data could not be examined (symlink or "
            "unreadable); distribution may delete or keep them"
        )
    return plan


# --- the join with every tag's reference graph ---------------------------------------------------


@dataclass(frozen=True)
class ChainLink:
    """One object in a tag's reference graph that the GC would delete something of."""

    #: digests from the tagged manifest down to this object's parent
    parents: tuple[str, ...]
    role: str
    digest: str
    platform: str | None
    #: what of it would go: "revision link", "layer link", "blob data"
    loses: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "parents": list(self.parents),
            "role": self.role,
            "digest": self.digest,
            "platform": self.platform,
            "loses": list(self.loses),
        }

    def describe(self) -> str:
        """E.g. ``layer sha256:1234567890ab of child sha256:abcdef012345 [linux/arm64]: blob
        data deleted``."""
        text = f"{self.role} {_short(self.digest)}"
        if len(self.parents) > 1:
            text += f" of {_short(self.parents[-1])}"
        if self.platform:
            text += f" [{self.platform}]"
        return f"{text}: {' and '.join(self.loses)} deleted"


def _short(digest: str) -> str:
    return digest[: len(_PREFIX) + 12]


def summarize_chain(losses: Sequence[ChainLink], limit: int = MAX_CHAIN_IN_MESSAGE) -> str:
    """One phrase per branch below the tagged manifest (a child and what of it goes, or a blob
    of a single-platform image), at most `limit` of them."""
    groups: dict[str, list[ChainLink]] = {}
    for link in losses:
        groups.setdefault(link.parents[1] if len(link.parents) > 1 else link.digest, []).append(
            link
        )
    parts: list[str] = []
    for key, links in groups.items():
        head = next((link for link in links if link.digest == key), None)
        below = [link for link in links if link is not head]
        if head is not None:
            text = head.describe()
        else:
            platform = below[0].platform
            text = f"child {_short(key)}{f' [{platform}]' if platform else ''} keeps its link"
        if below:
            kinds = sorted({name for link in below for name in link.loses})
            text += f", and {len(below)} of its blobs lose their {' and '.join(kinds)}"
        parts.append(text)
    shown = "; ".join(parts[:limit])
    if len(parts) > limit:
        shown += f"; +{len(parts) - limit} more"
    return shown


@dataclass
class TagGraph:
    """A tagged manifest's reference graph, judged before and after the GC."""

    pullable_now: bool = True
    pullable_after: bool = True
    losses: list[ChainLink] = field(default_factory=list)
    media_type: str | None = None


def evaluate_graph(
    repo: GcRepository,
    root_hex: str,
    blobs: BlobStore,
    lookup: ManifestLookup,
    plan: GcPlan,
) -> TagGraph:
    """Walk tag → manifest or index → children → config and layers inside one repository (how
    the registry serves a pull: every manifest needs its revision link and data, every blob its
    ``_layers`` link and data) and compare today's storage with the predicted one."""
    graph = TagGraph()
    deleted_revs = plan.deleted_revisions.get(repo.name, set())
    deleted_layers = plan.deleted_layer_links.get(repo.name, set())
    seen: set[tuple[str, str]] = set()
    # (digest, role, platform, parents)
    stack: list[tuple[str, str, str | None, tuple[str, ...]]] = [
        (_PREFIX + root_hex, "manifest", None, ())
    ]
    while stack:
        digest, role, platform, parents = stack.pop()
        is_manifest = role in ("manifest", "child", "attestation")
        if (digest, "m" if is_manifest else "b") in seen:
            continue
        seen.add((digest, "m" if is_manifest else "b"))
        valid = parse_digest(digest)
        if valid is None:
            # Nothing this storage can hold: broken before and after alike.
            graph.pullable_now = graph.pullable_after = False
            continue
        hex_ = valid[len(_PREFIX) :]
        data_now = blobs.has(hex_) is not False
        data_after = data_now and hex_ not in plan.deleted_blobs
        if is_manifest:
            link_now = hex_ in repo.links.revisions
            link_after = link_now and hex_ not in deleted_revs
            link_name = "revision link"
        else:
            link_now = hex_ in repo.links.layers
            link_after = link_now and hex_ not in deleted_layers
            link_name = "layer link"
        loses: tuple[str, ...] = ()
        if link_now and not link_after:
            loses += (link_name,)
        if data_now and not data_after:
            loses += ("blob data",)
        if loses:
            graph.losses.append(ChainLink(parents, role, digest, platform, loses))
        graph.pullable_now &= link_now and data_now
        graph.pullable_after &= link_after and data_after
        if not is_manifest or not data_now:
            continue
        result = lookup(hex_)
        if not isinstance(result, ManifestRefs):
            graph.pullable_now = graph.pullable_after = False
            continue
        if not parents:
            graph.media_type = result.media_type
        below = (*parents, digest)
        for ref in reversed(result.references):
            # A config or layer is shown with the platform of the child it belongs to.
            stack.append((ref.digest, ref.role, ref.platform or platform, below))
    # Show the chain top-down, the way it was declared.
    graph.losses.sort(key=lambda link: len(link.parents))
    return graph


@dataclass
class RepositoryOutcome:
    """Per-repository numbers for the report."""

    name: str
    tags: int = 0
    tags_breaking: int = 0
    manifests_deleted: int = 0
    layer_links_deleted: int = 0
    blobs_deleted: int = 0
    bytes_freed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "tags": self.tags,
            "tags_breaking": self.tags_breaking,
            "manifests_deleted": self.manifests_deleted,
            "layer_links_deleted": self.layer_links_deleted,
            "blobs_deleted": self.blobs_deleted,
            "bytes_freed": self.bytes_freed,
        }


@dataclass
class RegistryOutcome:
    """One registry's prediction: the plan, the findings and the numbers."""

    snapshot: RegistrySnapshot
    plan: GcPlan
    findings: list[Finding] = field(default_factory=list)
    repositories: dict[str, RepositoryOutcome] = field(default_factory=dict)
    bytes_freed: int = 0
    unattributed_bytes: int = 0
    tags: int = 0
    tags_breaking: int = 0
    #: (repository, tag) → (pullable now, pullable after the GC), as the storage model says
    tag_states: dict[tuple[str, str], tuple[bool, bool]] = field(default_factory=dict)


def _finding(
    kind: Kind,
    message: str,
    registry: RegistryStorage,
    repository: str,
    **kw: Any,
) -> Finding:
    return Finding(
        kind=kind,
        severity=Severity.ERROR,
        message=message,
        registry=registry.name,
        repository=repository,
        **kw,
    )


@dataclass
class _Referenced:
    """An object that would be deleted while tags of its repository still reference it."""

    role: str
    platform: str | None
    loses: set[str] = field(default_factory=set)
    tags: list[str] = field(default_factory=list)
    parents: tuple[str, ...] = ()


def join_tags(
    snapshot: RegistrySnapshot, plan: GcPlan, lookup: ManifestLookup, options: GcOptions
) -> RegistryOutcome:
    """Findings and numbers: which tags would break, what referenced data would go, bytes."""
    registry, blobs = snapshot.registry, snapshot.blobs
    outcome = RegistryOutcome(snapshot, plan)
    for repo in snapshot.repositories:
        result = outcome.repositories[repo.name] = RepositoryOutcome(repo.name)
        result.tags = len(repo.links.tags)
        result.manifests_deleted = len(plan.deleted_revisions.get(repo.name, ()))
        result.layer_links_deleted = len(plan.deleted_layer_links.get(repo.name, ()))
        outcome.tags += result.tags
        referenced: dict[str, _Referenced] = {}
        for root_hex, tags in sorted(repo.tags_by_hex().items()):
            graph = evaluate_graph(repo, root_hex, blobs, lookup, plan)
            root = digest_from_hex(root_hex)
            for tag in tags:
                outcome.tag_states[(repo.name, tag)] = (graph.pullable_now, graph.pullable_after)
            for link in graph.losses:
                entry = referenced.get(link.digest)
                if entry is None:
                    entry = referenced[link.digest] = _Referenced(
                        link.role, link.platform, parents=link.parents
                    )
                entry.loses.update(link.loses)
                entry.tags.extend(tags)
            if not (graph.pullable_now and not graph.pullable_after):
                continue
            chain = summarize_chain(graph.losses)
            for tag in tags:
                result.tags_breaking += 1
                outcome.findings.append(
                    _finding(
                        Kind.GC_WOULD_BREAK,
                        f"{options.command} would make {repo.name}:{tag} unpullable: {chain}",
                        registry,
                        repo.name,
                        reference=tag,
                        digest=root,
                        media_type=graph.media_type,
                        path=repo.links.tags[tag][1],
                        details={
                            "gc_version": str(options.version),
                            "delete_untagged": options.delete_untagged,
                            "chain": [link.to_dict() for link in graph.losses],
                        },
                    )
                )
        outcome.tags_breaking += result.tags_breaking
        for digest, entry in sorted(referenced.items()):
            outcome.findings.append(_referenced_finding(snapshot, repo, digest, entry, options))
    _account_bytes(snapshot, plan, outcome)
    return outcome


def _referenced_finding(
    snapshot: RegistrySnapshot,
    repo: GcRepository,
    digest: str,
    entry: _Referenced,
    options: GcOptions,
) -> Finding:
    valid = parse_digest(digest)
    assert valid is not None  # only digests that passed parse_digest are ever losses
    v2 = snapshot.registry.v2
    loses = sorted(entry.loses)
    if "blob data" in entry.loses:
        path = blob_data_path(v2, valid)
    elif "revision link" in entry.loses:
        path = revision_link_path(v2, repo.name, valid)
    else:
        path = layer_link_path(v2, repo.name, valid)
    tags = sorted(set(entry.tags))
    shown = ", ".join(tags[:3]) + (f" (+{len(tags) - 3} more)" if len(tags) > 3 else "")
    what = f"{entry.role} {_short(digest)}"
    if len(entry.parents) > 1:
        what += f" of {_short(entry.parents[-1])}"
    if entry.platform:
        what += f" [{entry.platform}]"
    return _finding(
        Kind.GC_WOULD_DELETE_REFERENCED,
        f"{options.command} would delete the {' and '.join(loses)} of {what}, still "
        f"referenced by {repo.name}:{shown}",
        snapshot.registry,
        repo.name,
        reference=tags[0] if tags else "",
        digest=digest,
        platform=entry.platform,
        path=str(path),
        details={
            "role": entry.role,
            "loses": loses,
            "tags": tags[:MAX_TAGS_LISTED],
            "tags_total": len(tags),
            "parents": list(entry.parents),
            "size": snapshot.blobs.sizes.get(valid[len(_PREFIX) :]),
        },
    )


def _account_bytes(snapshot: RegistrySnapshot, plan: GcPlan, outcome: RegistryOutcome) -> None:
    """Bytes freed: each deleted blob counted once per registry, and once in every repository
    that links it (``_layers`` or revision link); blobs no repository links are unattributed."""
    sizes = snapshot.blobs.sizes
    outcome.bytes_freed = sum(sizes.get(h, 0) for h in plan.deleted_blobs)
    attributed: set[str] = set()
    all_repos: Iterable[tuple[str, RepoLinks]] = [
        *((r.name, r.links) for r in snapshot.repositories),
        *((links.name, links) for links in snapshot.other_repositories),
    ]
    for name, links in all_repos:
        linked = (plan.deleted_blobs & links.layers.keys()) | (
            plan.deleted_blobs & links.revisions.keys()
        )
        if not linked:
            continue
        result = outcome.repositories.setdefault(name, RepositoryOutcome(name))
        result.blobs_deleted = len(linked)
        result.bytes_freed = sum(sizes.get(h, 0) for h in linked)
        attributed |= linked
    outcome.unattributed_bytes = sum(sizes.get(h, 0) for h in plan.deleted_blobs - attributed)


# --- the whole preview ---------------------------------------------------------------------------


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def preview_registry(registry: RegistryStorage, options: GcOptions) -> RegistryOutcome:
    """Gather, simulate and join for one registry."""
    snapshot = gather(registry, options)
    lookup = ManifestCache(registry, options.max_manifest_bytes)
    plan = simulate_gc(snapshot.repositories, snapshot.blobs, lookup, options)
    if plan.abort is not None:
        return RegistryOutcome(snapshot, plan)
    return join_tags(snapshot, plan, lookup, options)


def _registry_notes(outcome: RegistryOutcome, options: GcOptions) -> list[str]:
    snapshot, plan = outcome.snapshot, outcome.plan
    label = snapshot.registry.label
    notes: list[str] = []
    links = sum(len(r.links.revisions) + len(r.links.layers) for r in snapshot.repositories)
    if snapshot.blobs.state in (BlobStoreState.MISSING, BlobStoreState.EMPTY) and links:
        notes.append(
            f"registry {label}: blob store {snapshot.blobs.state} while {links} links exist "
            "(unmounted or half-synced volume?); do not run garbage-collect on it"
        )
    if plan.abort is not None:
        notes.append(
            f"registry {label}: the real {options.command} would stop with "
            f'"{plan.abort}" before deleting anything; repair that first (regverify fs scan)'
        )
        return notes
    for reason in dict.fromkeys(plan.uncertain):
        notes.append(f"registry {label}: prediction uncertain: {reason}")
    layer_part = (
        f", {plan.layer_links_deleted} layer link(s)" if options.version is GcVersion.V3 else ""
    )
    notes.append(
        f"registry {label}: {options.command} would delete {len(plan.deleted_blobs)} blob(s) "
        f"({_human_bytes(outcome.bytes_freed)}), {plan.manifests_deleted} manifest revision "
        f"link(s){layer_part}; {outcome.tags_breaking} of {outcome.tags} tag(s) would become "
        "unpullable"
    )
    ranked = sorted(
        (r for r in outcome.repositories.values() if r.bytes_freed or r.manifests_deleted),
        key=lambda r: (-r.bytes_freed, r.name),
    )
    for r in ranked[:MAX_REPOSITORY_NOTES]:
        notes.append(
            f"  {label}/{r.name}: {_human_bytes(r.bytes_freed)} freed ({r.blobs_deleted} "
            f"blob(s)), {r.manifests_deleted} manifest(s) deleted, {r.tags_breaking} tag(s) "
            "breaking"
        )
    if len(ranked) > MAX_REPOSITORY_NOTES:
        notes.append(f"  ... {len(ranked) - MAX_REPOSITORY_NOTES} more (see --format json)")
    if outcome.unattributed_bytes:
        notes.append(
            f"  {label}: {_human_bytes(outcome.unattributed_bytes)} in blobs no repository links"
        )
    return notes


def _as_warning(f: Finding) -> Finding:
    details = dict(f.details)
    details["gc_preview"] = "garbage-collect reads this; the prediction may differ around it"
    return replace(f, severity=Severity.WARNING, details=details)


def preview_storage(layout: StorageLayout, options: GcOptions | None = None) -> Report:
    """Predict ``garbage-collect`` for every registry in `layout`; never changes anything.

    Exit code of the report: 1 when a tag would become unpullable or referenced data would be
    deleted, 3 when the prediction is uncertain or the real run would stop, else 0.
    """
    options = options or GcOptions()
    started = time.time()
    t0 = time.perf_counter()
    report = Report(mode="fs-gc-preview", target=str(layout.base), started_at=started)
    report.notes.append(f"layout: {layout.describe()}")
    report.notes.append(
        f"predicting {options.command}: mark phase of registry/storage/garbagecollect.go "
        "re-implemented; nothing is changed"
    )
    for name in layout.skipped_symlinks:
        report.notes.append(f"registry folder {name} is a symlink; not followed, not predicted")
        report.incomplete = True
    registries: list[dict[str, Any]] = []
    c = report.counters
    for registry in layout.registries:
        outcome = preview_registry(registry, options)
        snapshot, plan = outcome.snapshot, outcome.plan
        for f in snapshot.findings:
            report.add(_as_warning(f))
        for f in outcome.findings:
            report.add(f)
        report.notes.extend(_registry_notes(outcome, options))
        if (
            plan.abort is not None
            or plan.uncertain
            or snapshot.findings
            or (
                snapshot.blobs.state in (BlobStoreState.MISSING, BlobStoreState.EMPTY)
                and any(r.links.revisions or r.links.layers for r in snapshot.repositories)
            )
        ):
            report.incomplete = True
        c["registries"] += 1
        c["repositories"] += len(snapshot.repositories)
        c["tags"] += outcome.tags
        c["manifests"] += plan.manifests_enumerated
        c["blobs"] += len(snapshot.blobs.present)
        c["tags_breaking"] += outcome.tags_breaking
        c["manifests_deleted"] += plan.manifests_deleted
        c["blobs_deleted"] += len(plan.deleted_blobs)
        c["layer_links_deleted"] += plan.layer_links_deleted
        c["bytes_freed"] += outcome.bytes_freed
        registries.append(
            {
                "name": registry.name,
                "path": str(registry.root),
                "gc_would_stop": plan.abort,
                "uncertain": list(dict.fromkeys(plan.uncertain)),
                "tags": outcome.tags,
                "tags_breaking": outcome.tags_breaking,
                "manifests_deleted": plan.manifests_deleted,
                "blobs_deleted": len(plan.deleted_blobs),
                "layer_links_deleted": plan.layer_links_deleted,
                "bytes_freed": outcome.bytes_freed,
                "unattributed_bytes": outcome.unattributed_bytes,
                "repositories": [r.to_dict() for _, r in sorted(outcome.repositories.items())],
            }
        )
    if not report.defects and not report.incomplete:
        report.notes.append("every tagged image stays pullable: safe to run garbage-collect")
    report.findings.sort(
        key=lambda f: (f.registry or "", f.repository, str(f.kind), f.reference, f.digest or "")
    )
    report.extra["layout"] = str(layout.kind)
    report.extra["base"] = str(layout.base)
    report.extra["gc_preview"] = {
        "gc_version": str(options.version),
        "delete_untagged": options.delete_untagged,
        "registries": registries,
    }
    report.duration_seconds = time.perf_counter() - t0
    return report
