"""registry/answers.py: the answer records are pure, and the checks need nothing else."""

from __future__ import annotations

import subprocess
import sys

from verifier.registry.answers import BlobAnswer, BlobHead, BlobStream, RangeRead

_IO_MODULES = ("httpx", "tenacity", "aiohttp", "verifier.registry.client")


def _imported_by(module: str) -> set[str]:
    """The I/O modules that importing `module` in a fresh interpreter pulls in."""
    code = (f"import sys, {module}; "
            f"print(' '.join(m for m in {_IO_MODULES!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


def test_answers_import_no_http_library() -> None:
    assert _imported_by("verifier.registry.answers") == set()


def test_checks_import_no_http_library() -> None:
    assert _imported_by("verifier.checks") == set()


def test_blob_answers_share_status_and_storage_host() -> None:
    answers: list[BlobAnswer] = [BlobHead(403, storage_host="s3.example"),
                                 RangeRead(403, storage_host="s3.example"),
                                 BlobStream(403, storage_host="s3.example")]
    assert {(a.status, a.storage_host) for a in answers} == {(403, "s3.example")}
    # The positional order of each record's own fields is as it always was.
    assert RangeRead(206, 1, 1, 10) == RangeRead(206, received=1, declared_length=1, total_size=10)
    assert BlobStream(200, 3, "sha256:x", 3).declared_length == 3
    assert BlobHead(200, 42, "sha256:y").digest_header == "sha256:y"
