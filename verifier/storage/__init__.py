"""Filesystem mode: scan distribution's storage on the registry host, repair safely.

    layout.py   which registries a path holds; every path, built only from validated digests
    fsio.py     small reads that never follow symlinks and never block on FIFOs
    scan.py     one pass over each blob store, then link checks as set lookups -> findings
    repair.py   fs fix (quarantine, relink, journal, lock, safety rails) and fs restore
    gc_preview.py, gc/   what a garbage-collect run would delete, without deleting

The `fs` commands themselves live in verifier.cli.fs and verifier.cli.gc_preview.
"""

from __future__ import annotations
