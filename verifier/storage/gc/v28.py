"""distribution 2.8's ``garbage-collect`` (``release/2.8``), re-run without deleting anything.

``MarkAndSweep`` in ``registry/storage/garbagecollect.go``:

* **Repositories** come from ``registry.Enumerate`` (``registry/storage/catalog.go``), which takes
  a folder as a repository when the sorted walk meets its ``_layers`` folder
  (``handleRepository``: ``if file == "_layers"``). A repository with ``_manifests`` but no
  ``_layers`` is never enumerated: nothing it references is marked, and everything only it
  references is swept.
* **Manifests** of a repository come from ``linkedBlobStore.Enumerate`` over
  ``_manifests/revisions`` (``registry/storage/linkedblobstore.go``); a revision whose blob data
  is gone is skipped. A missing revisions folder is ``PathNotFound``, which the caller ignores.
* With ``--delete-untagged``, a revision no tag's ``current/link`` names goes to ``manifestArr``
  and is not marked. ``Tags.Lookup`` reads every tag and fails on a stray file among them; when
  the repository has no ``_manifests/tags`` folder, ``Tags.All`` returns ``ErrRepositoryUnknown``
  and 2.8 stops with "failed to retrieve tags unknown repository".
* A marked manifest marks itself and exactly the digests of ``manifest.References()`` — for an
  index, its children's manifest blobs, never their configs or layers (the distribution#3324
  incident: ``--delete-untagged`` removes every index child's revision link and sweeps its
  blobs).
* **Sweep**: the ``manifestArr`` revision links are removed first (``vacuum.RemoveManifest``),
  then every blob under ``blobs/`` whose digest is not marked (`verifier.storage.gc.plan.sweep`).
* Any error ends the command with "failed to garbage collect: ..." and exit status 1
  (``registry/root.go``); a mark-phase error comes before anything is deleted.
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
    sweep,
    tags_lookup_error,
)
from verifier.storage.gc.snapshot import RegistrySnapshot


def mark_and_sweep(
    snapshot: RegistrySnapshot, lookup: ManifestLookup, options: GcOptions
) -> GcPlan:
    """The plan of distribution 2.8's garbage-collect on `snapshot`."""
    plan = GcPlan()
    manifest_arr: list[tuple[str, str]] = []
    try:
        for repo in snapshot.repositories:
            if not repo.has_layers_dir:
                continue  # never enumerated (catalog.go discovers repositories by _layers)
            check_repository(repo)
            tags_by_hex = repo.tags_by_hex() if options.delete_untagged else {}
            for hex_ in enumerated_revisions(repo, snapshot, plan, via_layers=True):
                digest = PREFIX + hex_
                if options.delete_untagged:
                    error = tags_lookup_error(repo, digest)
                    if error is not None:
                        raise GcAbort(error)
                    if not tags_by_hex.get(hex_):
                        if not repo.has_tags_dir:
                            raise GcAbort(
                                "failed to mark: failed to retrieve tags unknown repository "
                                f"name={repo.name}"
                            )
                        manifest_arr.append((repo.name, hex_))
                        continue
                plan.marked.add(digest)
                manifest = get_manifest(lookup, hex_, plan)
                if manifest is not None:
                    # References() are marked, never descended into.
                    plan.marked.update(r.digest for r in manifest.references)
    except GcAbort as exc:
        return GcPlan(abort=str(exc), uncertain=plan.uncertain)
    for repo_name, hex_ in manifest_arr:
        plan.deleted_revisions.setdefault(repo_name, set()).add(hex_)
    sweep(snapshot, plan)
    return plan
