"""Filesystem mode: scan distribution's storage on the registry host, repair safely.

    layout.py   which registries a path holds; every path, built only from validated digests;
                RegistryStorage.display(rel) for every path a finding shows
    records.py  what a reader hands the checks (BlobStore, RepoLinks, ...): pure records
    fsio.py     small reads that never follow symlinks and never block on FIFOs
    read.py     the filesystem reader: each blob store listed once, each repository read once
    checks.py   pure judging of the records -> findings (no I/O)
    images.py   what each tag needs from storage (pure)
    scan.py     the orchestration: read, then check, every registry of a layout
    repair.py   fs fix (quarantine, relink, journal, lock, safety rails) and fs restore
    gc_preview.py, gc/   what a garbage-collect run would delete, without deleting

The `fs` commands themselves live in verifier.cli.fs and verifier.cli.gc_preview.
"""

from __future__ import annotations
