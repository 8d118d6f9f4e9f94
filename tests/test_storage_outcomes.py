"""The findings and journal lines both repairs share (verifier/storage/outcomes.py), no I/O."""

from __future__ import annotations

from verifier.model.findings import Finding, Kind, Severity
from verifier.storage.outcomes import (
    conflict,
    journal_records,
    not_repaired,
    repaired,
    restored,
    run_sort_key,
)

ORPHAN = Finding(kind=Kind.ORPHAN_LAYER_LINK, severity=Severity.ERROR, message="link orphaned",
                 repository="team/a", digest="sha256:" + "a" * 64, details={"tags": ["v1"]})


def test_repaired_downgrades_and_keeps_the_details() -> None:
    f = repaired(ORPHAN, "quarantined", journal="j")
    assert f.severity is Severity.INFO and f.message == "quarantined: link orphaned"
    assert f.details == {"tags": ["v1"], "repaired": True, "journal": "j"}
    kept = not_repaired(ORPHAN, Severity.ERROR, error="EIO")
    assert kept.severity is Severity.ERROR and kept.message == ORPHAN.message
    assert kept.details == {"tags": ["v1"], "repaired": False, "error": "EIO"}


def test_journal_records_name_every_unusable_line() -> None:
    data = b'{"seq": 1}\n\nnot json\n[1, 2]\n{"seq": 2}\n\xff\n'
    records, bad = journal_records(data, "j.jsonl")
    assert records == [{"seq": 1}, {"seq": 2}]
    assert bad[0].startswith("j.jsonl:3: not JSON") and bad[1] == "j.jsonl:4: not a JSON object"
    assert bad[2].startswith("j.jsonl:6: not JSON")


def test_runs_sort_by_time_then_by_their_number_in_that_second() -> None:
    names = ["2026-11-28T07-00-00Z-2", "2026-11-28T07-00-00Z", "2026-11-28T07-00-00Z-10",
             "2026-11-27T23-59-59Z"]
    assert sorted(names, key=run_sort_key, reverse=True) == [
        "2026-11-28T07-00-00Z-10", "2026-11-28T07-00-00Z-2", "2026-11-28T07-00-00Z",
        "2026-11-27T23-59-59Z"]


def test_restore_findings_carry_the_journal_record() -> None:
    rec = {"seq": 3, "type": "quarantine", "registry": "r", "repository": "team/a",
           "digest": "sha256:" + "b" * 64}
    c = conflict("exists with other content", "/x/link", rec)
    assert (c.kind, c.severity, c.repository, c.digest) == (
        Kind.RESTORE_CONFLICT, Severity.ERROR, "team/a", rec["digest"])
    assert c.details == {"seq": 3, "type": "quarantine"}
    ok = restored("orphan_layer_link", "restored /x/link", "/x/link", rec)
    assert ok.kind is Kind.ORPHAN_LAYER_LINK and ok.details == {"restored": True, "seq": 3}
    # A kind the journal should not hold is never trusted as a clean restore's kind.
    assert restored("no-such-kind", "m", "/x", {"digest": 7}).kind is Kind.RESTORE_CONFLICT
    assert restored("no-such-kind", "m", "/x", {"digest": 7}).digest is None
