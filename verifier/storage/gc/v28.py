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
    GcAbort,
    GcLine,
    GcPlan,
    get_manifest,
    run_mark_and_sweep,
)
from verifier.storage.gc.snapshot import GcRepository, RegistrySnapshot


class Line28(GcLine):
    """``release/2.8``: repositories by ``_layers``, manifests also through ``_layers`` links,
    references marked but never descended into, no ``unmarkReferencedManifest``."""

    via_layers = True
    unmark_referenced = False

    def enumerates(self, repo: GcRepository) -> bool:
        """catalog.go discovers repositories by their ``_layers`` folder."""
        return repo.has_layers_dir

    def untagged_without_tags_folder(self, repo: GcRepository) -> None:
        """``Tags.All`` returns ``ErrRepositoryUnknown``: the run stops."""
        raise GcAbort(
            f"failed to mark: failed to retrieve tags unknown repository name={repo.name}"
        )

    def mark_references(
        self,
        hex_: str,
        repo: GcRepository,
        snapshot: RegistrySnapshot,
        lookup: ManifestLookup,
        plan: GcPlan,
    ) -> None:
        """``References()`` are marked, never descended into."""
        manifest = get_manifest(lookup, hex_, plan)
        if manifest is not None:
            plan.marked.update(r.digest for r in manifest.references)

    def after_manifests(
        self, repo: GcRepository, snapshot: RegistrySnapshot, plan: GcPlan
    ) -> None:
        """2.8 never looks at ``_layers`` links after marking (they are not swept)."""


LINE = Line28()


def mark_and_sweep(
    snapshot: RegistrySnapshot, lookup: ManifestLookup, options: GcOptions
) -> GcPlan:
    """The plan of distribution 2.8's garbage-collect on `snapshot`."""
    return run_mark_and_sweep(snapshot, lookup, options, LINE)
