"""What the registry answered, as plain records: the answers `checks.py` judges.

The client builds these; nothing here does I/O or imports an HTTP library, so the pure
judgements can take them without pulling the client in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ManifestFetch:
    """What a manifest GET answered; `body` is empty when `too_large`."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    digest_header: str | None = None
    content_length: int | None = None
    too_large: bool = False
    error_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BlobAnswer:
    """What every blob request answered: its status, and who answered it."""

    status: int
    #: host[:port] that answered when a redirect left the registry (object storage).
    storage_host: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class BlobHead(BlobAnswer):
    """What a blob HEAD answered."""

    content_length: int | None = None
    digest_header: str | None = None


@dataclass(frozen=True)
class RangeRead(BlobAnswer):
    """What a ranged GET of a blob's last byte answered, and how many bytes really came."""

    received: int = 0
    declared_length: int | None = None
    total_size: int | None = None
    truncated: bool = False
    #: distribution sends Docker-Content-Digest on blob GETs too, so one ranged GET answers
    #: everything a HEAD does.
    digest_header: str | None = None


@dataclass(frozen=True)
class BlobStream(BlobAnswer):
    """A full streamed read of a blob: status, bytes that came, their sha256."""

    size: int = 0
    digest: str | None = None
    declared_length: int | None = None
    truncated: bool = False


@dataclass(frozen=True)
class JsonPage:
    """A JSON API page (catalog, tags) with its `Link` header."""

    status: int
    data: Any = None
    link: str | None = None
    error: str | None = None
