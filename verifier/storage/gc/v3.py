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
    GcLine,
    GcPlan,
    get_manifest,
    manifest_exists,
    run_mark_and_sweep,
)
from verifier.storage.gc.snapshot import GcRepository, RegistrySnapshot


class Line3(GcLine):
    """``main``: repositories by ``_manifests``, revision links only, references descended
    into, ``unmarkReferencedManifest``, and each repository's ``_layers`` swept of links to
    unmarked blobs."""

    via_layers = False
    unmark_referenced = True

    def enumerates(self, repo: GcRepository) -> bool:
        """catalog.go discovers repositories by their ``_manifests`` folder."""
        return repo.has_manifests_dir

    def untagged_without_tags_folder(self, repo: GcRepository) -> None:
        """"manifest tags path of repository ... does not exist" is logged; nothing happens."""

    def mark_references(
        self,
        hex_: str,
        repo: GcRepository,
        snapshot: RegistrySnapshot,
        lookup: ManifestLookup,
        plan: GcPlan,
    ) -> None:
        """``markManifestReferences``, iteratively."""
        stack = [hex_]
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

    def after_manifests(
        self, repo: GcRepository, snapshot: RegistrySnapshot, plan: GcPlan
    ) -> None:
        """Enumerate ``_layers``: a link to a blob not marked *at this point* is deleted."""
        if not repo.has_layers_dir:
            raise GcAbort(
                f"failed to mark: filesystem: Path not found: "
                f"/docker/registry/v2/repositories/{repo.name}/_layers"
            )
        # Links to blobs without data are skipped by the enumerator (ErrBlobUnknown).
        blobs = snapshot.blobs
        doomed = {
            h for h in repo.links.layers if blobs.has(h) is True and PREFIX + h not in plan.marked
        }
        if doomed:
            plan.deleted_layer_links[repo.name] = doomed


LINE = Line3()


def mark_and_sweep(
    snapshot: RegistrySnapshot, lookup: ManifestLookup, options: GcOptions
) -> GcPlan:
    """The plan of distribution 3.x's garbage-collect on `snapshot`."""
    return run_mark_and_sweep(snapshot, lookup, options, LINE)
