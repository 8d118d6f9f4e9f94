"""distribution 3.x's ``garbage-collect`` (``main``), re-run without deleting anything.

Where ``MarkAndSweep`` in ``registry/storage/garbagecollect.go`` differs from 2.8
(`verifier.storage.gc.v28`):

* **Repositories** are discovered by their ``_manifests`` folder (``handleRepository`` in
  ``registry/storage/catalog.go``).
* ``markManifestReferences`` marks each reference of a marked manifest and descends into one
  that was not marked before and still ``Exists`` in the repository (revision link and blob
  data). An already-marked
  reference is skipped *with its subtree* (``if ingester(descriptor.Digest) { continue }``), so
  the marking order matters: the walk order of repositories and of sorted revision folders.
* ``manifestStore.Get`` refuses schema1 (``ErrSchemaV1Unsupported``): marking one stops the run.
* ``--delete-untagged`` in a repository without ``_manifests/tags`` logs "manifest tags path of
  repository ... does not exist" and leaves the revision neither marked nor deleted.
* ``unmarkReferencedManifest`` keeps every ``manifestArr`` entry that ended up marked (an index
  child).
* Each repository's ``_layers`` links are enumerated right after its manifests; a link to a blob
  not marked *at that point* is deleted. A repository without ``_layers`` makes that walk fail
  with ``PathNotFound``, which this time is returned (from reading the code; no 3.x binary has
  been run against these cases).
"""

from __future__ import annotations

from verifier.storage.gc.manifests import ManifestLookup
from verifier.storage.gc.options import GcOptions
from verifier.storage.gc.plan import (
    PREFIX,
    GcAbort,
    GcPlan,
    check_repository,
    enumerated_revisions,
    get_manifest,
    manifest_exists,
    sweep,
    tags_lookup_error,
)
from verifier.storage.gc.snapshot import GcRepository, RegistrySnapshot


def _mark_references(
    root: str,
    repo: GcRepository,
    snapshot: RegistrySnapshot,
    lookup: ManifestLookup,
    plan: GcPlan,
) -> None:
    """``markManifestReferences``, iteratively."""
    stack = [root]
    while stack:
        manifest = get_manifest(lookup, stack.pop(), plan, schema1=False)
        if manifest is None:
            continue
        for ref in manifest.references:
            if ref.digest in plan.marked:
                continue
            plan.marked.add(ref.digest)
            if manifest_exists(repo, snapshot, ref.digest):
                stack.append(ref.digest[len(PREFIX) :])


def mark_and_sweep(
    snapshot: RegistrySnapshot, lookup: ManifestLookup, options: GcOptions
) -> GcPlan:
    """The plan of distribution 3.x's garbage-collect on `snapshot`."""
    plan = GcPlan()
    manifest_arr: list[tuple[str, str]] = []
    blobs = snapshot.blobs
    try:
        for repo in snapshot.repositories:
            if not repo.has_manifests_dir:
                continue  # never enumerated (catalog.go discovers repositories by _manifests)
            check_repository(repo)
            tags_by_hex = repo.tags_by_hex() if options.delete_untagged else {}
            for hex_ in enumerated_revisions(repo, snapshot, plan, via_layers=False):
                digest = PREFIX + hex_
                if options.delete_untagged:
                    error = tags_lookup_error(repo, digest)
                    if error is not None:
                        raise GcAbort(error)
                    if not tags_by_hex.get(hex_):
                        if repo.has_tags_dir:
                            manifest_arr.append((repo.name, hex_))
                        continue
                plan.marked.add(digest)
                _mark_references(hex_, repo, snapshot, lookup, plan)
            if not repo.has_layers_dir:
                raise GcAbort(
                    f"failed to mark: filesystem: Path not found: "
                    f"/docker/registry/v2/repositories/{repo.name}/_layers"
                )
            # Links to blobs without data are skipped by the enumerator (ErrBlobUnknown).
            doomed = {
                h
                for h in repo.links.layers
                if blobs.has(h) is True and PREFIX + h not in plan.marked
            }
            if doomed:
                plan.deleted_layer_links[repo.name] = doomed
    except GcAbort as exc:
        return GcPlan(abort=str(exc), uncertain=plan.uncertain)
    for repo_name, hex_ in manifest_arr:
        if PREFIX + hex_ not in plan.marked:  # unmarkReferencedManifest
            plan.deleted_revisions.setdefault(repo_name, set()).add(hex_)
    sweep(snapshot, plan)
    return plan
