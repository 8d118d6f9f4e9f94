"""Reporters: exact output for one small fixed report, and an exhaustive format mapping."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from verifier import __version__
from verifier.model.findings import Finding, ImageResult, ImageStatus, Kind, Report, Severity
from verifier.output import Format, human, json_report, junit, reporter_for, write_report

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
F = "sha256:" + "f" * 64


def small_report() -> Report:
    """Two defects on one tag (one in an index child), a warning, an info."""
    return Report(
        mode="image",
        target="reg.test/app:v1",
        findings=[
            Finding(kind=Kind.BLOB_MISSING, severity=Severity.ERROR,
                    message="blob not found (HEAD 404)", repository="app", reference="v1",
                    digest=A, http_status=404, details={"chain": ["tag v1", "layer"]}),
            Finding(kind=Kind.SIZE_MISMATCH, severity=Severity.ERROR, message="blob too short",
                    repository="app", reference="v1", digest=B, platform="linux/amd64",
                    expected_size=10, actual_size=0),
            Finding(kind=Kind.SCHEMA1_UNVERIFIED, severity=Severity.WARNING,
                    message="schema1 not verified", repository="app", reference="v1"),
            Finding(kind=Kind.FOREIGN_LAYER, severity=Severity.INFO, message="foreign layer",
                    repository="app", reference="v1", digest=B),
        ],
        images=[ImageResult("reg.test/app:v1", F, ImageStatus.BROKEN, "app", "v1")],
        counters=Counter({"manifests": 2, "blobs": 3}),
        requests_by_code=Counter({"200": 5, "404": 1}),
        started_at=1_700_000_000.0,
        duration_seconds=0.5,
    )


def clean_report() -> Report:
    return Report(mode="image", target="reg.test/app:v1",
                  images=[ImageResult("reg.test/app:v1", F, ImageStatus.OK, "app", "v1")],
                  counters=Counter({"manifests": 1, "blobs": 2}),
                  requests_by_code=Counter({"200": 4}), duration_seconds=0.25)


def incomplete_report() -> Report:
    return Report(
        mode="image", target="reg.test/app:v1",
        findings=[Finding(kind=Kind.REQUEST_FAILED, severity=Severity.ERROR,
                          message="HEAD failed after 5 attempts: HTTP 503", repository="app",
                          reference="v1", digest=A)],
        images=[ImageResult("reg.test/app:v1", F, ImageStatus.ERROR, "app", "v1")],
    )


# -- the format mapping ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(Format))
def test_every_format_has_a_reporter(fmt: Format) -> None:
    render = reporter_for(fmt)
    for report in (small_report(), clean_report(), incomplete_report(),
                   Report(mode="image", target="t")):
        text = render(report)
        assert isinstance(text, str)
        assert text.endswith("\n")


def test_format_values_are_the_cli_spellings() -> None:
    assert {str(f) for f in Format} >= {"human", "json", "junit"}
    assert Format("json") is Format.JSON


# -- human -------------------------------------------------------------------------------------


def test_human_exact_output() -> None:
    expected = (
        "SEVERITY  KIND                WHERE                 OBJECT               MESSAGE\n"
        "ERROR     blob_missing        app:v1                sha256:aaaaaaaaaaaa  "
        "blob not found (HEAD 404)\n"
        "ERROR     size_mismatch       app:v1 [linux/amd64]  sha256:bbbbbbbbbbbb  "
        "blob too short (expected 10 bytes, got 0)\n"
        "WARNING   schema1_unverified  app:v1                -                    "
        "schema1 not verified\n"
        "\n"
        "(1 informational finding(s) not shown; see --format json)\n"
        f"BROKEN  reg.test/app:v1@{F}\n"
        "what to do next:\n"
        "  - blob_missing (1): a layer's or config's data file, or the repository's `_layers` "
        "link to it, is\n"
        "    gone from the registry's storage.\n"
        "  - size_mismatch (1): the stored blob is truncated (or longer than its descriptor "
        "says).\n"
        "  - On the registry host, `regverify fs scan STORAGE-ROOT` shows which files are "
        "missing and why;\n"
        "    docs/runbook.md says how to repair or rebuild each.\n"
        "DEFECTS FOUND: 1 image(s), 1 broken, 0 not verifiable; 2 manifests, 3 blobs, "
        "2 defect(s); 6 requests; 0.50s\n"
    )
    assert human.render(small_report()) == expected


def test_human_clean_output_is_one_line() -> None:
    assert human.render(clean_report()) == (
        "OK: 1 image(s), 0 broken, 0 not verifiable; 1 manifests, 2 blobs, 0 defect(s); "
        "4 requests; 0.25s\n"
    )


def test_human_incomplete_output() -> None:
    assert human.render(incomplete_report()) == (
        "SEVERITY  KIND            WHERE   OBJECT               MESSAGE\n"
        "ERROR     request_failed  app:v1  sha256:aaaaaaaaaaaa  "
        "HEAD failed after 5 attempts: HTTP 503\n"
        "\n"
        f"ERROR   reg.test/app:v1@{F}\n"
        "what to do next:\n"
        "  - request_failed (1): the registry or the network kept failing (not a defect of the "
        "image): rerun,\n"
        "    or raise --retries / --timeout.\n"
        "INCOMPLETE: 1 image(s), 0 broken, 1 not verifiable; 0 defect(s); 0.00s\n"
    )


def _steps(report: Report) -> str:
    """The "what to do next" block of the human report, unwrapped."""
    text = human.render(report)
    assert "what to do next:" in text, text
    block = text.split("what to do next:\n", 1)[1].rsplit("\n", 2)[0]
    return " ".join(block.split())


@pytest.mark.parametrize("kind", sorted(human.HTTP_DEFECTS))
def test_human_http_defects_say_the_likely_cause_and_where_to_look(kind: Kind) -> None:
    report = Report(mode="image", target="reg.test/app:v1", findings=[
        Finding(kind=kind, severity=Severity.ERROR, message="x", repository="app",
                reference="v1"),
        Finding(kind=kind, severity=Severity.ERROR, message="y", repository="app",
                reference="v1")])
    steps = _steps(report)
    assert f"{kind} (2): {' '.join(human.CAUSES[kind].split())}." in steps
    assert "`regverify fs scan STORAGE-ROOT`" in steps and "docs/runbook.md" in steps


def test_human_auth_failed_says_where_credentials_are_looked_for() -> None:
    note = "no credentials were sent to reg.test: none were found for it"
    report = Report(mode="image", target="reg.test/app:v1", findings=[
        Finding(kind=Kind.AUTH_FAILED, severity=Severity.ERROR, message="access refused (401)",
                repository="app", reference="v1", details={"next_steps": [note]})])
    steps = _steps(report)
    assert note in steps
    assert "REGVERIFY_USERNAME and REGVERIFY_PASSWORD" in steps
    assert "~/.docker/config.json" in steps and "--password-stdin" in steps
    assert "fs scan" not in steps  # a refusal is not storage damage


def test_human_prints_each_findings_own_next_steps_once() -> None:
    findings = [Finding(kind=Kind.DANGLING_TAG, severity=Severity.ERROR, message=f"tag {i}",
                        repository="app", details={"next_steps": ["re-push app:v1"]})
                for i in range(3)]
    text = human.render(Report(mode="fs-scan", target="/srv", findings=findings))
    assert text.count("re-push app:v1") == 1
    assert text.splitlines()[-1].startswith("DEFECTS FOUND:")


def test_human_clean_report_has_no_next_steps() -> None:
    assert "what to do next" not in human.render(clean_report())


def test_human_restore_says_what_it_put_back() -> None:
    link = "/srv/docker/registry/v2/repositories/app/_layers/sha256/aa/link"
    report = Report(mode="fs-restore", target="/q/run", findings=[
        Finding(kind=Kind.ORPHAN_LAYER_LINK, severity=Severity.INFO, message=f"restored {link}",
                repository="app", digest=A, path=link, details={"restored": True})],
        counters=Counter({"restored": 1, "already_restored": 2}))
    lines = human.render(report).splitlines()
    assert lines[:2] == ["restored:", f"  restored {link}"]
    assert lines[-1] == ("OK: 1 put back, 0 already in place, 2 restored by an earlier run, "
                         "0 conflict(s), 0 defect(s); 0.00s")


def test_human_digest_reference_and_filesystem_findings() -> None:
    report = Report(mode="fs", target="/var/lib/registry", notes=["dry run"], findings=[
        Finding(kind=Kind.DANGLING_TAG, severity=Severity.ERROR, message="tag points nowhere",
                registry="reg.test", repository="app", reference=A, path="repositories/app"),
    ])
    lines = human.render(report).splitlines()
    severity, kind, where, obj = lines[1].split()[:4]
    assert (severity, kind, obj) == ("ERROR", "dangling_tag", "repositories/app")
    assert where.startswith("reg.test/app@sha256:aaaa")
    assert lines[-2] == "note: dry run"
    assert lines[-1] == "DEFECTS FOUND: 1 defect(s); 0.00s"


# -- json --------------------------------------------------------------------------------------


def _finding_doc(**fields: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "kind": None, "severity": "error", "message": None, "repository": "app",
        "reference": "v1", "digest": None, "media_type": None, "platform": None,
        "http_status": None, "expected_size": None, "actual_size": None,
        "expected_digest": None, "actual_digest": None, "registry": None, "path": None,
        "details": {},
    }
    doc.update(fields)
    return doc


def test_json_exact_output() -> None:
    expected = {
        "schema_version": 1,
        "tool": f"regverify {__version__}",
        "mode": "image",
        "target": "reg.test/app:v1",
        "started_at": "2023-11-14T22:13:20+00:00",
        "exit_code": 1,
        "summary": {
            "blobs": 3,
            "manifests": 2,
            "images": 1,
            "images_broken": 1,
            "images_error": 0,
            "requests": 6,
            "requests_by_code": {"200": 5, "404": 1},
            "defects": 2,
            "defects_by_kind": {"blob_missing": 1, "size_mismatch": 1},
            "duration_seconds": 0.5,
        },
        "images": [{"reference": "reg.test/app:v1", "repository": "app", "tag": "v1",
                    "digest": F, "status": "broken"}],
        "findings": [
            _finding_doc(kind="blob_missing", message="blob not found (HEAD 404)", digest=A,
                         http_status=404, details={"chain": ["tag v1", "layer"]}),
            _finding_doc(kind="size_mismatch", message="blob too short", digest=B,
                         platform="linux/amd64", expected_size=10, actual_size=0),
            _finding_doc(kind="schema1_unverified", severity="warning",
                         message="schema1 not verified"),
            _finding_doc(kind="foreign_layer", severity="info", message="foreign layer",
                         digest=B),
        ],
        "notes": [],
    }
    text = json_report.render(small_report())
    assert text == json.dumps(expected, indent=2) + "\n"
    assert list(json.loads(text)) == list(expected)


def test_json_extra_never_overrides_the_core_fields() -> None:
    report = clean_report()
    report.extra = {"scan": {"shard": "0/2"}, "summary": "hijack"}
    doc = json.loads(json_report.render(report))
    assert doc["scan"] == {"shard": "0/2"}
    assert isinstance(doc["summary"], dict)
    assert doc["started_at"] is None
    assert doc["exit_code"] == 0


def test_json_incomplete_exit_code() -> None:
    doc = json.loads(json_report.render(incomplete_report()))
    assert doc["exit_code"] == 3
    assert doc["images"][0]["status"] == "error"
    assert doc["summary"]["defects"] == 0


# -- junit -------------------------------------------------------------------------------------


def _suite(text: str) -> ET.Element:
    assert text.startswith("<?xml version='1.0' encoding='utf-8'?>\n<testsuites>")
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    [suite] = list(root)
    return suite


def test_junit_failure_for_a_broken_image() -> None:
    suite = _suite(junit.render(small_report()))
    assert suite.attrib == {"name": "regverify image reg.test/app:v1", "time": "0.500",
                            "tests": "1", "failures": "1", "errors": "0"}
    [case] = list(suite)
    assert case.attrib == {"classname": "app", "name": "reg.test/app:v1"}
    [failure] = list(case)
    assert failure.tag == "failure"
    assert failure.attrib == {"type": "blob_missing",
                              "message": "2 defect(s): blob not found (HEAD 404)"}
    assert failure.text == (f"blob_missing {A}: blob not found (HEAD 404)\n"
                            f"size_mismatch {B}: blob too short")


def test_junit_clean_and_incomplete() -> None:
    [case] = list(_suite(junit.render(clean_report())))
    assert list(case) == []
    suite = _suite(junit.render(incomplete_report()))
    assert (suite.get("failures"), suite.get("errors")) == ("0", "1")
    [error] = list(suite[0])
    assert error.tag == "error"
    assert error.get("type") == "incomplete"
    assert error.text == f"request_failed {A}: HEAD failed after 5 attempts: HTTP 503"


def test_junit_digest_pinned_image_finds_its_findings() -> None:
    report = Report(mode="image", target=f"reg.test/app@{F}", findings=[
        Finding(kind=Kind.BLOB_MISSING, severity=Severity.ERROR, message="gone",
                repository="app", reference=F, digest=A)],
        images=[ImageResult(f"reg.test/app@{F}", F, ImageStatus.BROKEN, "app", None)])
    suite = _suite(junit.render(report))
    assert suite.get("tests") == "1"
    assert suite[0][0].tag == "failure"


def test_junit_escapes_markup() -> None:
    report = Report(mode="image", target="t", findings=[
        Finding(kind=Kind.MANIFEST_INVALID, severity=Severity.ERROR,
                message='manifest unusable: <html>&"</html>', repository="app", reference="v1")],
        images=[ImageResult("t/app:v1", None, ImageStatus.BROKEN, "app", "v1")])
    failure = _suite(junit.render(report))[0][0]
    assert failure.get("message") == '1 defect(s): manifest unusable: <html>&"</html>'


def test_junit_filesystem_mode_groups_by_repository() -> None:
    report = Report(mode="fs", target="/srv/registry", findings=[
        Finding(kind=Kind.ORPHAN_LAYER_LINK, severity=Severity.ERROR, message="x",
                repository="b"),
        Finding(kind=Kind.ORPHAN_LAYER_LINK, severity=Severity.ERROR, message="y",
                repository="a"),
        Finding(kind=Kind.FOREIGN_LAYER, severity=Severity.INFO, message="z", repository="a"),
    ])
    suite = _suite(junit.render(report))
    assert [c.get("name") for c in suite] == ["a", "b"]
    assert suite.get("failures") == "2"


# -- write_report ------------------------------------------------------------------------------


def test_write_report_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    write_report(clean_report(), Format.JSON)
    assert json.loads(capsys.readouterr().out)["exit_code"] == 0


def test_write_report_to_a_file_atomically(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "run.xml"
    write_report(small_report(), Format.JUNIT, out)
    assert out.read_text() == junit.render(small_report())
    write_report(clean_report(), Format.HUMAN, out)
    assert out.read_text().startswith("OK:")
    assert sorted(p.name for p in out.parent.iterdir()) == ["run.xml"]  # no temporary left


def test_write_report_failure_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "dir-not-file"
    target.mkdir()
    with pytest.raises(OSError):
        write_report(clean_report(), Format.JSON, target)
    assert list(tmp_path.iterdir()) == [target]


def test_junit_stays_well_formed_with_control_characters() -> None:
    report = Report(mode="fs", target="/srv/\x1bregistry", findings=[
        Finding(kind=Kind.MANIFEST_MISSING, severity=Severity.ERROR,
                message="manifest not found (404 \x00\x1b[2J)", repository="app",
                path="repositories/app/\x07")])
    suite = _suite(junit.render(report))
    failure = suite[0][0]
    assert failure.get("message") == "1 defect(s): manifest not found (404 \ufffd\ufffd[2J)"
    assert failure.text is not None and "\x1b" not in failure.text
    assert suite.get("name") == "regverify fs /srv/\ufffdregistry"
