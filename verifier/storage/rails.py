"""The safety rails of every repair (`fs fix`, and the object-store fix): a pure decision.

Both repairs describe each registry they would touch by the few counts below and ask `decide`;
so a folder and a bucket are refused for exactly the same reasons with exactly the same words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: Blob store states that, while links exist, mean "nothing to compare against".
NO_BLOBS_STATES = frozenset({"missing", "empty"})


@dataclass(frozen=True)
class RegistryCounts:
    """What the rails know of one registry: its counts and whether its blob listing is whole."""

    label: str
    #: ``ok``/``missing``/``empty``/``unreadable`` (the scan's blob store state, as text)
    blob_store: str
    #: every link read (layer links, revision links, tags)
    links: int
    layer_links: int
    orphan_layer_links: int
    #: parts of the blob listing that could not be read; any makes absences unproven
    blob_gaps: tuple[str, ...] = ()


@dataclass(frozen=True)
class RailDecision:
    """What the safety rails said: `refusals` stop the run; `overridden` were forced past."""

    refusals: tuple[str, ...]
    overridden: tuple[str, ...]


def decide(
    registries: Iterable[RegistryCounts], *, force: bool, max_orphan_share: float
) -> RailDecision:
    """Decide from counts alone whether a repair may act on these registries."""
    refusals: list[str] = []
    overridden: list[str] = []
    for s in registries:
        label = s.label
        if s.blob_gaps:
            more = f" and {len(s.blob_gaps) - 1} more" if len(s.blob_gaps) > 1 else ""
            refusals.append(
                f"registry {label}: its blob listing is incomplete (cannot read "
                f"{s.blob_gaps[0]}{more}), so a link whose blob might exist cannot be told from "
                "an orphan; fix access and rerun; not overridable by --force"
            )
            continue
        if s.blob_store in NO_BLOBS_STATES and s.links:
            refusals.append(
                f"registry {label}: blob store is {s.blob_store} while {s.links} links exist "
                "(unmounted or half-synced volume?); not overridable by --force"
            )
            continue
        if s.layer_links and s.orphan_layer_links / s.layer_links > max_orphan_share:
            msg = (
                f"registry {label}: {s.orphan_layer_links} of {s.layer_links} layer links "
                f"({s.orphan_layer_links / s.layer_links:.0%}) look orphaned, more than "
                f"--max-orphan-share {max_orphan_share:.0%}"
            )
            (overridden if force else refusals).append(msg)
    return RailDecision(tuple(refusals), tuple(overridden))
