"""JUnit XML: one test case per image (or per repository for filesystem runs)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict

from verifier.model.findings import Finding, Report

# Characters XML 1.0 cannot carry at all (ElementTree escapes markup but writes these as is,
# and every CI parser then rejects the whole file).
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(text: str) -> str:
    return _XML_ILLEGAL.sub("\ufffd", text)


def _failure_text(findings: list[Finding]) -> str:
    return _xml_safe("\n".join(
        f"{f.kind} {f.digest or f.path or ''}: {f.message}".replace("  ", " ") for f in findings
    ))


def render(report: Report) -> str:
    """A `<testsuites>` document CI systems understand."""
    suite = ET.Element("testsuite", name=_xml_safe(f"regverify {report.mode} {report.target}"),
                       time=f"{report.duration_seconds:.3f}")
    cases: list[tuple[str, str, list[Finding], bool]] = []
    if report.images:
        by_image: dict[tuple[str, str], list[Finding]] = defaultdict(list)
        for f in report.findings:
            by_image[(f.repository, f.reference)].append(f)
        for image in report.images:
            ref = image.tag or image.digest or ""
            found = by_image.pop((image.repository, ref), [])
            if not found and image.digest:
                found = by_image.pop((image.repository, image.digest), [])
            cases.append((image.repository, image.reference, found, str(image.status) == "error"))
        # Findings no image owns (a refused catalog, a tag list that failed) still need a test
        # case, or a CI system would show a scan that could not complete as green.
        leftover: dict[str, list[Finding]] = defaultdict(list)
        for (repository, _), found in by_image.items():
            leftover[repository].extend(found)
        for repository, found in sorted(leftover.items()):
            name = "/".join(p for p in (report.target, repository) if p)
            cases.append((repository or report.target, name, found, False))
    else:
        by_repo: dict[str, list[Finding]] = defaultdict(list)
        for f in report.findings:
            by_repo["/".join(p for p in (f.registry, f.repository) if p) or report.target].append(f)
        for name, found in sorted(by_repo.items()):
            cases.append((report.target, name, found, False))
    failures = errors = 0
    for classname, name, found, errored in cases:
        case = ET.SubElement(suite, "testcase", classname=_xml_safe(classname),
                             name=_xml_safe(name))
        defects = [f for f in found if f.is_defect]
        incomplete = [f for f in found if f.is_incomplete]
        if defects:
            failures += 1
            node = ET.SubElement(case, "failure", type=str(defects[0].kind),
                                 message=_xml_safe(
                                     f"{len(defects)} defect(s): {defects[0].message}"))
            node.text = _failure_text(defects)
        elif errored or incomplete:
            errors += 1
            node = ET.SubElement(case, "error", type="incomplete",
                                 message="could not be verified")
            node.text = _failure_text(incomplete)
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
