"""`--settle SECONDS`: give a just-pushed image time to appear before calling a 404 a defect.

Registries backed by eventually consistent storage can answer 404 for a manifest or blob for a
short while after the push that wrote it. Right after a push, "not found" is then a
question of time, not damage, so a not-found verdict is re-verified from scratch, with a growing
pause, until it clears or the settle window closes; the last verdict stands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from verifier.model.findings import Kind, Report

#: The verdicts that can be a replica lagging behind the push rather than damage.
NOT_FOUND_KINDS = frozenset({Kind.MANIFEST_MISSING, Kind.BLOB_MISSING})
#: Default in plugin mode (right after a push); every other command defaults to 0.
PLUGIN_DEFAULT_SETTLE = 15.0
FIRST_PAUSE = 1.0
MAX_PAUSE = 8.0


def not_found_verdict(report: Report) -> bool:
    """True when some defect of the report is a 404 (manifest or blob not found)."""
    return any(f.kind in NOT_FOUND_KINDS for f in report.defects)


async def verify_settled(
    verify: Callable[[], Awaitable[Report]],
    settle: float,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Report:
    """Run `verify` until its verdict has no not-found defect or `settle` seconds have passed.

    Each attempt is a complete, fresh verification (new client, nothing memoised), so a 404
    seen earlier cannot stick. Any other verdict, clean or broken, is returned at once.
    """
    started = clock()
    deadline = started + max(0.0, settle)
    pause = FIRST_PAUSE
    attempts = 0
    while True:
        report = await verify()
        attempts += 1
        remaining = deadline - clock()
        if not not_found_verdict(report) or remaining <= 0:
            break
        await sleep(min(pause, remaining))
        pause = min(pause * 2, MAX_PAUSE)
    if attempts > 1:
        waited = clock() - started
        outcome = ("still not found" if not_found_verdict(report) else "found")
        report.notes.append(f"settle: {attempts} attempts over {waited:.1f}s "
                            f"(--settle {settle:g}); {outcome}")
    return report
