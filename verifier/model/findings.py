"""The one record every mode produces (`Finding`) and the `Report` the reporters render.

The HTTP scanner and the filesystem scanner both fill a `Report`; reporters never know which.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from verifier.errors import ExitCode


class Severity(StrEnum):
    """How bad a finding is; only `error` makes a run exit 1."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Kind(StrEnum):
    """Every kind of finding the tool knows, HTTP and filesystem modes alike."""

    # HTTP mode: regverify image
    MANIFEST_MISSING = "manifest_missing"
    BLOB_MISSING = "blob_missing"
    BLOB_UNREADABLE = "blob_unreadable"
    SIZE_MISMATCH = "size_mismatch"
    DIGEST_MISMATCH = "digest_mismatch"
    MANIFEST_INVALID = "manifest_invalid"
    REQUEST_FAILED = "request_failed"
    AUTH_FAILED = "auth_failed"
    FOREIGN_LAYER = "foreign_layer"
    SCHEMA1_UNVERIFIED = "schema1_unverified"
    # HTTP scan: regverify scan
    CATALOG_INACCESSIBLE = "catalog_inaccessible"
    # filesystem mode: regverify fs
    ORPHAN_LAYER_LINK = "orphan_layer_link"
    ORPHAN_INDEX_CHILD = "orphan_index_child"
    DANGLING_TAG = "dangling_tag"
    DANGLING_REVISION = "dangling_revision"
    INVALID_LINK = "invalid_link"
    CORRUPT_BLOB = "corrupt_blob"
    UNREADABLE_FILE = "unreadable_file"
    UNEXPECTED_SYMLINK = "unexpected_symlink"
    RESTORE_CONFLICT = "restore_conflict"
    IMAGE_BLOB_MISSING = "image_blob_missing"
    LAYER_LINK_MISSING = "layer_link_missing"
    # gc preview: regverify fs gc-preview
    GC_WOULD_BREAK = "gc_would_break"
    GC_WOULD_DELETE_REFERENCED = "gc_would_delete_referenced"


#: Kinds that mean "we could not find out", never "the image is broken".
INCOMPLETE_KINDS = frozenset({Kind.REQUEST_FAILED, Kind.AUTH_FAILED, Kind.CATALOG_INACCESSIBLE})


class ImageStatus(StrEnum):
    """Verdict for one image: `error` means it could not be verified, not that it is broken."""

    OK = "ok"
    BROKEN = "broken"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    """One observation about one object; fields that do not apply stay None/empty."""

    kind: Kind
    severity: Severity
    message: str
    repository: str = ""
    reference: str = ""
    digest: str | None = None
    media_type: str | None = None
    platform: str | None = None
    http_status: int | None = None
    expected_size: int | None = None
    actual_size: int | None = None
    expected_digest: str | None = None
    actual_digest: str | None = None
    registry: str | None = None
    path: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def is_defect(self) -> bool:
        """A defect is an `error` that says something is broken, not that we could not tell."""
        return self.severity is Severity.ERROR and self.kind not in INCOMPLETE_KINDS

    @property
    def is_incomplete(self) -> bool:
        """True when this finding means the verification could not be completed."""
        return self.kind in INCOMPLETE_KINDS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; enum values become their strings."""
        data = asdict(self)
        data["kind"] = str(self.kind)
        data["severity"] = str(self.severity)
        return data


@dataclass
class ImageResult:
    """One image the run verified: its full reference, the digest it resolved to, the verdict."""

    reference: str
    digest: str | None
    status: ImageStatus
    repository: str = ""
    tag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "reference": self.reference,
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "status": str(self.status),
        }


def image_status(findings: list[Finding]) -> ImageStatus:
    """Broken if any defect, else error if anything could not be verified, else ok."""
    if any(f.is_defect for f in findings):
        return ImageStatus.BROKEN
    if any(f.is_incomplete for f in findings):
        return ImageStatus.ERROR
    return ImageStatus.OK


@dataclass
class Report:
    """Everything a run found: findings, per-image verdicts and counters. Never prints."""

    mode: str
    target: str
    findings: list[Finding] = field(default_factory=list)
    images: list[ImageResult] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    requests_by_code: Counter[str] = field(default_factory=Counter)
    started_at: float = 0.0
    duration_seconds: float = 0.0
    incomplete: bool = False
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, finding: Finding) -> None:
        """Record one finding."""
        self.findings.append(finding)

    @property
    def defects(self) -> list[Finding]:
        """Findings that make the run exit 1."""
        return [f for f in self.findings if f.is_defect]

    def defects_by_kind(self) -> dict[str, int]:
        """Count of defects per kind, sorted by kind."""
        counts = Counter(str(f.kind) for f in self.defects)
        return dict(sorted(counts.items()))

    @property
    def exit_code(self) -> ExitCode:
        """1 for any defect; else 3 if anything could not be completed; else 0."""
        if self.defects:
            return ExitCode.DEFECTS
        if self.incomplete or any(f.is_incomplete for f in self.findings):
            return ExitCode.INCOMPLETE
        return ExitCode.CLEAN

    def summary(self) -> dict[str, Any]:
        """The `summary` object of the JSON report."""
        out: dict[str, Any] = dict(sorted(self.counters.items()))
        out["images"] = len(self.images)
        out["images_broken"] = sum(1 for i in self.images if i.status is ImageStatus.BROKEN)
        out["images_error"] = sum(1 for i in self.images if i.status is ImageStatus.ERROR)
        out["requests"] = sum(self.requests_by_code.values())
        out["requests_by_code"] = dict(sorted(self.requests_by_code.items()))
        out["defects"] = len(self.defects)
        out["defects_by_kind"] = self.defects_by_kind()
        out["duration_seconds"] = round(self.duration_seconds, 3)
        return out
