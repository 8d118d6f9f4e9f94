"""The findings model: defects vs incomplete, per-image status, the report's exit code."""

from __future__ import annotations

from collections import Counter

import pytest

from verifier.errors import ExitCode
from verifier.model.findings import (
    INCOMPLETE_KINDS,
    Finding,
    ImageResult,
    ImageStatus,
    Kind,
    Report,
    Severity,
    image_status,
)


def _f(kind: Kind, severity: Severity = Severity.ERROR) -> Finding:
    return Finding(kind=kind, severity=severity, message=str(kind))


def test_incomplete_kinds() -> None:
    assert {Kind.REQUEST_FAILED, Kind.AUTH_FAILED} <= INCOMPLETE_KINDS
    for kind in Kind:
        f = _f(kind)
        assert f.is_incomplete is (kind in INCOMPLETE_KINDS)
        assert f.is_defect is (kind not in INCOMPLETE_KINDS)


@pytest.mark.parametrize("kind", sorted(INCOMPLETE_KINDS))
def test_incomplete_kinds_never_count_as_defects(kind: Kind) -> None:
    report = Report(mode="image", target="t", findings=[_f(kind)])
    assert report.defects == []
    assert report.defects_by_kind() == {}
    assert report.exit_code is ExitCode.INCOMPLETE
    assert image_status(report.findings) is ImageStatus.ERROR


@pytest.mark.parametrize("severity", [Severity.WARNING, Severity.INFO])
def test_warnings_and_info_are_not_defects(severity: Severity) -> None:
    report = Report(mode="image", target="t",
                    findings=[_f(Kind.SCHEMA1_UNVERIFIED, severity), _f(Kind.FOREIGN_LAYER,
                                                                         severity)])
    assert report.defects == []
    assert report.exit_code is ExitCode.CLEAN
    assert image_status(report.findings) is ImageStatus.OK


def test_exit_code_clean() -> None:
    code = Report(mode="image", target="t").exit_code
    assert code is ExitCode.CLEAN
    assert int(code) == 0


def test_exit_code_defect_wins_over_incomplete() -> None:
    report = Report(mode="image", target="t")
    report.add(_f(Kind.REQUEST_FAILED))
    report.add(_f(Kind.BLOB_MISSING))
    assert report.exit_code is ExitCode.DEFECTS
    assert int(report.exit_code) == 1
    assert image_status(report.findings) is ImageStatus.BROKEN


def test_exit_code_incomplete_flag() -> None:
    report = Report(mode="scan", target="t", incomplete=True)
    assert report.exit_code is ExitCode.INCOMPLETE
    assert int(report.exit_code) == 3


def test_image_status() -> None:
    assert image_status([]) is ImageStatus.OK
    assert image_status([_f(Kind.AUTH_FAILED)]) is ImageStatus.ERROR
    assert image_status([_f(Kind.AUTH_FAILED), _f(Kind.DIGEST_MISMATCH)]) is ImageStatus.BROKEN
    assert image_status([_f(Kind.SIZE_MISMATCH, Severity.WARNING)]) is ImageStatus.OK


def test_defects_by_kind_is_sorted_and_counts_only_defects() -> None:
    report = Report(mode="image", target="t", findings=[
        _f(Kind.SIZE_MISMATCH), _f(Kind.BLOB_MISSING), _f(Kind.BLOB_MISSING),
        _f(Kind.REQUEST_FAILED), _f(Kind.FOREIGN_LAYER, Severity.INFO)])
    assert report.defects_by_kind() == {"blob_missing": 2, "size_mismatch": 1}
    assert list(report.defects_by_kind()) == ["blob_missing", "size_mismatch"]


def test_summary() -> None:
    report = Report(
        mode="image", target="t",
        findings=[_f(Kind.BLOB_MISSING)],
        images=[ImageResult("h/a:1", "sha256:x", ImageStatus.BROKEN, "a", "1"),
                ImageResult("h/b:1", None, ImageStatus.ERROR, "b", "1"),
                ImageResult("h/c:1", None, ImageStatus.OK, "c", "1")],
        counters=Counter({"manifests": 3, "blobs": 7}),
        requests_by_code=Counter({"200": 9, "404": 1}),
        duration_seconds=1.23456,
    )
    assert report.summary() == {
        "blobs": 7,
        "manifests": 3,
        "images": 3,
        "images_broken": 1,
        "images_error": 1,
        "requests": 10,
        "requests_by_code": {"200": 9, "404": 1},
        "defects": 1,
        "defects_by_kind": {"blob_missing": 1},
        "duration_seconds": 1.235,
    }


def test_finding_to_dict_uses_plain_strings() -> None:
    f = Finding(kind=Kind.SIZE_MISMATCH, severity=Severity.ERROR, message="m", repository="r",
                expected_size=2, actual_size=1, details={"chain": ["a"]})
    data = f.to_dict()
    assert data["kind"] == "size_mismatch" and type(data["kind"]) is str
    assert data["severity"] == "error" and type(data["severity"]) is str
    assert data["details"] == {"chain": ["a"]}
    data["details"]["chain"].append("b")
    assert f.details == {"chain": ["a"]}  # a copy, not the record's own dict
    for key in ("kind", "severity", "repository", "reference", "digest", "media_type",
                "platform", "http_status", "expected_size", "actual_size", "message"):
        assert key in data


def test_image_result_to_dict() -> None:
    image = ImageResult("h/r:t", "sha256:x", ImageStatus.OK, "r", "t")
    assert image.to_dict() == {"reference": "h/r:t", "repository": "r", "tag": "t",
                               "digest": "sha256:x", "status": "ok"}
