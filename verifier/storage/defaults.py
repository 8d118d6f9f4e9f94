"""Choices and defaults the `fs` commands declare, apart from the engines that use them.

The CLI needs these to build its options on every start; the scan, repair and GC-preview
engines are imported only by the command that runs (start-up is paid by every probe run).
"""

from __future__ import annotations

from enum import StrEnum

#: `fs fix` refuses to act when more than this share of a registry's layer links look orphaned
#: (`--force` overrides): that many is more likely a missing volume than real damage.
DEFAULT_MAX_ORPHAN_SHARE = 0.25


class GcVersion(StrEnum):
    """Which distribution line's ``garbage-collect`` to mirror."""

    V2_8 = "2.8"
    V3 = "3"
