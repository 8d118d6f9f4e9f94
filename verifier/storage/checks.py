"""Judge what a storage reader read: pure functions from records to findings.

Nothing here does I/O. A reader (`verifier.storage.read` for a local folder, or one over an
object store) fills `BlobStore` and `RepoLinks` records and offers a `ManifestReader`; these
functions decide. Every path a finding shows is either a string the reader put into the records
(link paths) or `RegistryStorage.display` of a path relative to the v2 folder, so the same
checks name local paths or ``s3://...`` ones.
"""

from __future__ import annotations

from typing import Any

from verifier.model.findings import Finding, Kind, Severity
from verifier.model.manifest import (
    ImageIndex,
    ImageManifest,
    Manifest,
    ManifestError,
    parse_manifest,
    sha256_digest,
)
from verifier.storage.images import (
    RELINK_STEP,
    Needs,
    gather_needs,
    rebuild_steps,
    tags_text,
)
from verifier.storage.layout import (
    ALGORITHM,
    Digest,
    RegistryStorage,
    blob_data_rel,
    digest_from_hex,
    layer_link_rel,
    parse_digest,
    revision_link_rel,
)
from verifier.storage.records import (
    ALL_LINKS,
    BlobStore,
    BlobStoreState,
    ChildAssessment,
    FailReason,
    ManifestReader,
    OrphanChild,
    OrphanLink,
    ReadFailure,
    RepoLinks,
    RepositoryChecks,
)

RUNBOOK = "docs/runbook.md"
BLOB_DATA_PRESENT = "blob-data-present"
BLOB_DATA_GONE = "blob-data-gone"
BLOB_DATA_UNKNOWN = "blob-data-unknown"

_LINK_PREFIX = ALGORITHM.encode("ascii") + b":"


# --- finding builders (readers use them too, so every backend words findings alike) ----------


def storage_finding(
    kind: Kind,
    severity: Severity,
    message: str,
    registry: RegistryStorage,
    *,
    repository: str = "",
    digest: str | None = None,
    path: str | None = None,
    reference: str = "",
    platform: str | None = None,
    media_type: str | None = None,
    expected_digest: str | None = None,
    actual_digest: str | None = None,
    actual_size: int | None = None,
    details: dict[str, Any] | None = None,
) -> Finding:
    """Every storage finding carries registry, repository, digest and path."""
    return Finding(
        kind=kind,
        severity=severity,
        message=message,
        registry=registry.name,
        repository=repository,
        reference=reference,
        digest=digest,
        media_type=media_type,
        platform=platform,
        expected_digest=expected_digest,
        actual_digest=actual_digest,
        actual_size=actual_size,
        path=path,
        details=details or {},
    )




def symlink_finding(registry: RegistryStorage, path: str, repository: str = "") -> Finding:
    """`unexpected_symlink`: `path` is a symlink, not followed."""
    return storage_finding(
        Kind.UNEXPECTED_SYMLINK,
        Severity.WARNING,
        f"{path} is a symlink; not followed, so what it points at was not checked",
        registry,
        repository=repository,
        path=path,
    )


def unreadable_finding(
    registry: RegistryStorage, path: str, detail: str, repository: str = ""
) -> Finding:
    """`unreadable_file`: `path` could not be read or listed, and why."""
    return storage_finding(
        Kind.UNREADABLE_FILE,
        Severity.WARNING,
        f"cannot read {path}: {detail}",
        registry,
        repository=repository,
        path=path,
    )


def invalid_name_finding(
    registry: RegistryStorage, path: str, what: str, repository: str = ""
) -> Finding:
    """`invalid_link`: a blob or link folder at `path` whose name is not 64 lowercase hex."""
    return storage_finding(
        Kind.INVALID_LINK,
        Severity.ERROR,
        f"{what} folder name {path.rsplit('/', 1)[-1][:80]!r} is not 64 lowercase hex",
        registry,
        repository=repository,
        path=path,
    )


def unsupported_algorithm_finding(
    registry: RegistryStorage, path: str, name: str, repository: str
) -> Finding:
    """`invalid_link`: a folder beside ``sha256`` in ``_layers`` or ``revisions``."""
    return storage_finding(
        Kind.INVALID_LINK,
        Severity.ERROR,
        f"unsupported digest algorithm folder {name[:80]!r}",
        registry,
        repository=repository,
        path=path,
    )


def read_failure_finding(
    registry: RegistryStorage, path: str, failure: ReadFailure, repository: str
) -> Finding:
    """The finding for a read that failed other than by absence (symlink or unreadable)."""
    if failure.reason is FailReason.SYMLINK:
        return symlink_finding(registry, path, repository)
    return unreadable_finding(registry, path, failure.detail, repository)


# --- link files ------------------------------------------------------------------------------


def check_link_content(content: bytes, folder_hex: str | None) -> str | None:
    """None if `content` is ``sha256:<hex>`` naming `folder_hex`; else what is wrong with it."""
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError:
        return "content is not ASCII"
    digest = parse_digest(text)
    if digest is None:
        return f"content {text[:80]!r} is not a well-formed sha256:<64 hex> digest"
    if folder_hex is not None and digest[len(ALGORITHM) + 1 :] != folder_hex:
        return f"content {text!r} does not match its folder {folder_hex}"
    return None


def check_link(
    registry: RegistryStorage,
    repository: str,
    what: str,
    folder_hex: str,
    path: str,
    content: bytes,
) -> Finding | None:
    """None when a ``_layers`` or revision link (`what`: "layer", "revision") at
    ``.../sha256/<folder_hex>/link`` names its folder's digest; else its `invalid_link`."""
    # Fast path: `folder_hex` is validated hex, so the exact expected bytes need no parsing.
    if content == _LINK_PREFIX + folder_hex.encode("ascii"):
        return None
    problem = check_link_content(content, folder_hex)
    if problem is None:
        return None
    return storage_finding(
        Kind.INVALID_LINK,
        Severity.ERROR,
        f"{what} link {problem}",
        registry,
        repository=repository,
        digest=digest_from_hex(folder_hex),
        path=path,
        expected_digest=digest_from_hex(folder_hex),
        actual_digest=content[:80].decode("ascii", "replace"),
    )


def check_tag_link(
    registry: RegistryStorage, repository: str, tag: str, path: str, content: bytes
) -> str | Finding:
    """The hex a tag's ``current/link`` names, or its `invalid_link` finding."""
    problem = check_link_content(content, None)
    if problem is not None:
        return storage_finding(
            Kind.INVALID_LINK,
            Severity.ERROR,
            f"tag {tag!r} current link {problem}",
            registry,
            repository=repository,
            path=path,
            reference=tag,
            actual_digest=content[:80].decode("ascii", "replace"),
        )
    return content.decode("ascii")[len(ALGORITHM) + 1 :]


# --- checks over one repository against the blob store --------------------------------------


def check_layer_links(
    registry: RegistryStorage, repo: RepoLinks, blobs: BlobStore, needs: Needs | None = None
) -> list[OrphanLink]:
    """Every well-formed `_layers` link whose blob data does not exist is an orphan.

    With `needs`, each finding names the tags that use the blob (they stay broken after the
    link is quarantined: the data is gone).
    """
    orphans: list[OrphanLink] = []
    if blobs.state is BlobStoreState.UNREADABLE:
        return orphans
    present = blobs.present
    for hex_, link in repo.layers.items():
        if hex_ in present or blobs.has(hex_) is not False:
            continue
        digest = digest_from_hex(hex_)
        tags = sorted(needs.reach.get(hex_, ())) if needs is not None else []
        used = f"; used by {tags_text(repo.name, tags)}" if tags else ""
        orphan = storage_finding(
            Kind.ORPHAN_LAYER_LINK,
            Severity.ERROR,
            f"layer link without blob data: {repo.name}@{digest} (served as 200 with no bytes "
            f"while the registry's cache is warm, then 404; a re-push skips it){used}",
            registry,
            repository=repo.name,
            digest=digest,
            path=link,
            details={"tags": tags},
        )
        orphans.append(
            OrphanLink(registry, repo.name, digest, layer_link_rel(repo.name, digest), orphan)
        )
    return orphans


def check_revisions(
    registry: RegistryStorage, repo: RepoLinks, blobs: BlobStore, needs: Needs | None = None
) -> list[Finding]:
    """A revision link whose manifest blob data is gone is `dangling_revision`.

    ``details["tags"]`` names the tags it breaks (with `needs`: also through an index).
    """
    out: list[Finding] = []
    tags_by_hex = _tags_by_hex(repo)
    if needs is not None:
        tags_by_hex = {h: sorted(t) for h, t in needs.reach.items()}
    for hex_, link in repo.revisions.items():
        if blobs.has(hex_) is not False:
            continue
        digest = digest_from_hex(hex_)
        out.append(
            storage_finding(
                Kind.DANGLING_REVISION,
                Severity.ERROR,
                f"manifest revision {repo.name}@{digest} has no blob data",
                registry,
                repository=repo.name,
                digest=digest,
                path=link,
                details={"tags": tags_by_hex.get(hex_, [])},
            )
        )
    return out


def check_tags(registry: RegistryStorage, repo: RepoLinks, blobs: BlobStore) -> list[Finding]:
    """A tag whose ``current/link`` is missing, names a missing revision, or data that is gone."""
    out: list[Finding] = []
    for tag, (hex_, link) in repo.tags.items():
        digest = digest_from_hex(hex_) if hex_ is not None else None
        if hex_ is None:
            reason, why = "current-link-missing", "has no current/link"
        elif hex_ not in repo.revisions:
            reason, why = "revision-missing", f"points at {digest}, which has no revision link"
        elif blobs.has(hex_) is False:
            reason, why = BLOB_DATA_GONE, f"points at {digest}, whose blob data is gone"
        else:
            continue
        out.append(
            storage_finding(
                Kind.DANGLING_TAG,
                Severity.ERROR,
                f"tag {repo.name}:{tag} {why}; pulling it fails",
                registry,
                repository=repo.name,
                digest=digest,
                path=link,
                reference=tag,
                details={"reason": reason},
            )
        )
    return out


def check_images(
    registry: RegistryStorage, repo: RepoLinks, blobs: BlobStore, needs: Needs
) -> list[Finding]:
    """For every config and layer a tag needs: its data (`image_blob_missing`, rebuild) and
    this repository's layer link to it (`layer_link_missing`, relinkable), naming the tags."""
    out: list[Finding] = []
    for hex_, need in sorted(needs.blobs.items()):
        digest = digest_from_hex(hex_)
        has = blobs.has(hex_)
        linked = hex_ in repo.layers
        tags = sorted(need.tags)
        common: dict[str, object] = {
            "tags": tags,
            "role": need.role,
            "manifests": sorted(need.manifests),
            "linked": linked,
        }
        if has is False:
            link_note = "; its layer link remains (an orphan)" if linked else ""
            out.append(
                storage_finding(
                    Kind.IMAGE_BLOB_MISSING,
                    Severity.ERROR,
                    f"{need.role} {digest} of {repo.name} has no blob data{link_note}; "
                    f"pulling {tags_text(repo.name, tags)} fails; needs a rebuild",
                    registry,
                    repository=repo.name,
                    digest=digest,
                    path=registry.display(blob_data_rel(digest)),
                    details={
                        **common,
                        "repair": "rebuild",
                        "next_steps": rebuild_steps(repo.name, tags, orphan_link=linked),
                    },
                )
            )
        elif has is True and not linked and not repo.bad_layer_links & {hex_, ALL_LINKS}:
            out.append(
                storage_finding(
                    Kind.LAYER_LINK_MISSING,
                    Severity.ERROR,
                    f"{need.role} {digest} has blob data but no layer link in {repo.name}; "
                    f"pulling {tags_text(repo.name, tags)} fails once the registry's cache is "
                    "cold; repairable by relinking",
                    registry,
                    repository=repo.name,
                    digest=digest,
                    path=registry.display(layer_link_rel(repo.name, digest)),
                    details={**common, "repair": "relink", "next_steps": [RELINK_STEP]},
                )
            )
    return out


def _tags_by_hex(repo: RepoLinks) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for tag, (hex_, _) in sorted(repo.tags.items()):
        if hex_ is not None:
            out.setdefault(hex_, []).append(tag)
    return out


def assess_child(
    child: Digest, repo: RepoLinks, blobs: BlobStore, read: ManifestReader
) -> ChildAssessment:
    """Decide whether an orphan child can be relinked losslessly.

    Only when its manifest data is present, parses, matches its digest, and every blob it
    references is present and linked in this repository.
    """
    hex_ = child[len(ALGORITHM) + 1 :]
    has = blobs.has(hex_)
    if has is None:
        return ChildAssessment(BLOB_DATA_UNKNOWN, None, (), False, "blob data not examinable")
    if not has:
        return ChildAssessment(BLOB_DATA_GONE, None, (), False, "manifest blob data is gone")
    body = read(child)
    if isinstance(body, ReadFailure):
        return ChildAssessment(
            BLOB_DATA_PRESENT, None, (), False, f"manifest data unreadable: {body.detail}"
        )
    if sha256_digest(body) != child:
        return ChildAssessment(
            BLOB_DATA_PRESENT, None, (), False, "manifest data does not match its digest"
        )
    try:
        manifest = parse_manifest(body)
    except ManifestError as exc:
        return ChildAssessment(BLOB_DATA_PRESENT, None, (), False, f"manifest invalid: {exc}")
    refs: list[tuple[str, str, bool]] = []  # (role, digest, is_manifest)
    if isinstance(manifest, ImageManifest):
        refs.append(("config", manifest.config.digest, False))
        refs.extend(("layer", d.digest, False) for d in manifest.layers)
    elif isinstance(manifest, ImageIndex):
        refs.extend(("manifest", d.digest, True) for d in manifest.manifests)
    else:
        return ChildAssessment(
            BLOB_DATA_PRESENT, manifest.media_type, (), False, "schema1 manifest: not assessed"
        )
    described: list[dict[str, object]] = []
    problems: list[str] = []
    for role, raw, is_manifest in refs:
        ref = parse_digest(raw)
        if ref is None:
            described.append({"role": role, "digest": raw, "linked": False, "present": False})
            problems.append(f"{role} digest {raw[:80]!r} is not sha256")
            continue
        ref_hex = ref[len(ALGORITHM) + 1 :]
        linked = ref_hex in (repo.revisions if is_manifest else repo.layers)
        present = blobs.has(ref_hex)
        described.append({"role": role, "digest": ref, "linked": linked, "present": present})
        if not linked:
            problems.append(f"{role} {ref} not linked")
        if present is not True:
            problems.append(f"{role} {ref} data {'gone' if present is False else 'unknown'}")
    reason = "; ".join(problems) if problems else "all referenced blobs present and linked"
    return ChildAssessment(
        BLOB_DATA_PRESENT, manifest.media_type, tuple(described), not problems, reason
    )


def check_index_children(
    registry: RegistryStorage,
    repo: RepoLinks,
    blobs: BlobStore,
    read: ManifestReader,
    parsed: dict[str, Manifest | None] | None = None,
) -> tuple[list[Finding], list[OrphanChild]]:
    """Parse every revision; for each index, report children without a revision link.

    Also reports revisions whose manifest data is unreadable or not a valid manifest. Each
    parse result (None when unusable) is left in `parsed`, for the image check to reuse.
    """
    findings: list[Finding] = []
    by_child: dict[str, list[Finding]] = {}
    assessments: dict[str, ChildAssessment] = {}
    tags_by_hex = _tags_by_hex(repo)
    for hex_, link in repo.revisions.items():
        if blobs.has(hex_) is not True:
            continue
        digest = digest_from_hex(hex_)
        data_path = registry.display(blob_data_rel(digest))
        body = read(digest)
        if isinstance(body, ReadFailure):
            if parsed is not None:
                parsed[hex_] = None
            findings.append(read_failure_finding(registry, data_path, body, repo.name))
            continue
        try:
            manifest = parse_manifest(body)
            if parsed is not None:
                parsed[hex_] = manifest
        except ManifestError as exc:
            if parsed is not None:
                parsed[hex_] = None
            findings.append(
                storage_finding(
                    Kind.MANIFEST_INVALID,
                    Severity.ERROR,
                    f"manifest {repo.name}@{digest} is not a valid manifest: {exc}",
                    registry,
                    repository=repo.name,
                    digest=digest,
                    path=data_path,
                    details={"revision_link": link, "tags": tags_by_hex.get(hex_, [])},
                )
            )
            continue
        if not isinstance(manifest, ImageIndex):
            continue
        for desc in manifest.manifests:
            child = parse_digest(desc.digest)
            if child is None:
                findings.append(
                    storage_finding(
                        Kind.MANIFEST_INVALID,
                        Severity.ERROR,
                        f"index {repo.name}@{digest} names child {desc.digest[:80]!r}, which "
                        "is not a sha256 digest this storage can hold",
                        registry,
                        repository=repo.name,
                        digest=digest,
                        path=data_path,
                        actual_digest=desc.digest[:80],
                    )
                )
                continue
            child_hex = child[len(ALGORITHM) + 1 :]
            if child_hex in repo.revisions:
                continue
            assessment = assessments.get(child_hex)
            if assessment is None:
                assessment = assess_child(child, repo, blobs, read)
                assessments[child_hex] = assessment
            findings_for_child = by_child.setdefault(child_hex, [])
            finding = _orphan_child_finding(
                registry,
                repo,
                digest,
                desc.platform,
                desc.media_type,
                desc.is_attestation,
                child,
                assessment,
                tags_by_hex.get(hex_, []),
            )
            findings_for_child.append(finding)
            findings.append(finding)
    orphans = [
        OrphanChild(
            registry,
            repo.name,
            digest_from_hex(child_hex),
            revision_link_rel(repo.name, digest_from_hex(child_hex)),
            assessments[child_hex].relinkable,
            assessments[child_hex].reason,
            tuple(child_findings),
        )
        for child_hex, child_findings in by_child.items()
    ]
    return findings, orphans


def _orphan_child_finding(
    registry: RegistryStorage,
    repo: RepoLinks,
    index: Digest,
    platform: str | None,
    media_type: str,
    attestation: bool,
    child: Digest,
    a: ChildAssessment,
    index_tags: list[str],
) -> Finding:
    gone = sum(1 for b in a.blobs if b["present"] is False)
    unlinked = sum(1 for b in a.blobs if not b["linked"])
    if a.relinkable:
        action = "relinkable: fs fix --relink-index-children restores it losslessly"
    else:
        action = f"rebuild required, see {RUNBOOK}"
    blob_note = (
        f"; {gone} of {len(a.blobs)} referenced blobs gone, {unlinked} unlinked" if a.blobs else ""
    )
    where = f" (tags: {', '.join(index_tags)})" if index_tags else ""
    return storage_finding(
        Kind.ORPHAN_INDEX_CHILD,
        Severity.ERROR,
        f"index {repo.name}@{index}{where} references {platform or 'unknown platform'} child "
        f"{child} whose revision link is missing; {a.blob_data}{blob_note}; {action}",
        registry,
        repository=repo.name,
        digest=child,
        path=registry.display(revision_link_rel(repo.name, child)),
        reference=index,
        platform=platform,
        media_type=media_type,
        details={
            "index": index,
            "index_tags": index_tags,
            "blob_data": a.blob_data,
            "attestation": attestation,
            "child_blobs": list(a.blobs),
            "relinkable": a.relinkable,
            "reason": a.reason,
            "action": action,
        },
    )




def check_blob_digest(
    registry: RegistryStorage, blobs: BlobStore, hex_: str, actual: str | ReadFailure
) -> Finding | None:
    """Judge one present blob against the sha256 a reader computed over its data (`actual`):
    `corrupt_blob` when it differs from its folder name, a read finding when it could not be
    read (None when it vanished meanwhile)."""
    digest = digest_from_hex(hex_)
    path = registry.display(blob_data_rel(digest))
    if isinstance(actual, ReadFailure):
        if actual.reason is FailReason.MISSING:
            return None
        return read_failure_finding(registry, path, actual, "")
    if actual == hex_:
        return None
    return storage_finding(
        Kind.CORRUPT_BLOB,
        Severity.ERROR,
        f"blob data of {digest} hashes to sha256:{actual}",
        registry,
        digest=digest,
        path=path,
        expected_digest=digest,
        actual_digest=f"{ALGORITHM}:{actual}",
        actual_size=blobs.sizes.get(hex_),
    )


def check_repository(
    registry: RegistryStorage,
    repo: RepoLinks,
    blobs: BlobStore,
    read: ManifestReader,
    *,
    index_children: bool = True,
    proxy_cache: bool = False,
) -> RepositoryChecks:
    """Every check over one repository, in the order the filesystem scan runs them.

    `index_children` False skips everything that parses manifests (the benchmark's link-only
    mode); a `proxy_cache` skips the orphan index child check (pull-through caches legitimately
    hold partial indexes). `repo.findings` (the reader's) are not repeated in the result.
    """
    out = RepositoryChecks()
    children_too = index_children and not proxy_cache
    # Index check first: it parses every revision, and the image walk reuses that.
    parsed: dict[str, Manifest | None] = {}
    if children_too:
        index_findings, children = check_index_children(registry, repo, blobs, read, parsed)
        out.findings.extend(index_findings)
        out.orphan_children.extend(children)
    needs = Needs()
    if index_children:
        needs = gather_needs(
            {t: h for t, (h, _) in repo.tags.items() if h is not None},
            repo.revisions,
            blobs.has,
            read,
            index_children=children_too,
            memo=parsed,
        )
    out.orphan_links = check_layer_links(registry, repo, blobs, needs)
    out.findings.extend(o.finding for o in out.orphan_links)
    out.findings.extend(check_revisions(registry, repo, blobs, needs))
    out.findings.extend(check_tags(registry, repo, blobs))
    out.image_findings = check_images(registry, repo, blobs, needs)
    out.findings.extend(out.image_findings)
    return out
