"""`--cache-dir`: manifests kept across runs, keyed by digest and verified on every read.

A manifest's body never changes under its digest, so a run that already holds it need not
download it again. Its *presence* in a repository does change -- `garbage-collect
--delete-untagged` deletes the revision links of every child of a tagged index
(distribution#3324) -- so a cached manifest still costs one request per run: a HEAD by digest,
which answers 404 exactly when a GET would, without the body. What the cache saves is the
body's bytes and the client's hashing and parsing, not requests (docs/performance.md has the
measurements).

The directory is untrusted input: any file may be missing, truncated, replaced by a symlink,
a FIFO or a huge file, or hold someone else's bytes. A read opens without following
symlinks and without blocking, accepts only a regular file no larger than the manifest size
cap, and returns the body only when its sha256 is the digest asked for; anything else is a
miss, and the manifest is fetched and written again. Writes go to a temporary file renamed
into place, so concurrent runs sharing the directory never see half a file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import UsageError

#: First line of every entry; a format change gets a new tag and old entries become misses.
MAGIC = b"regverify-manifest-cache-v1\n"
_SHA256 = re.compile(r"^sha256:([0-9a-f]{64})$")
#: Media types are short tokens; a longer "first line" is not one of our entries.
_MAX_MEDIA_TYPE = 255


@dataclass(frozen=True)
class CachedManifest:
    """A manifest body whose sha256 was checked against its digest on read."""

    body: bytes
    media_type: str | None


class VerifiedManifestCache:
    """Manifests verified in earlier runs (`--cache-dir`), under `directory/sha256/<2 hex>/<hex>`.

    Only sha256 digests; every read is hashed again against the digest asked for.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.rejected = 0
        self.write_errors = 0
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise UsageError(f"--cache-dir {directory}: {exc.strerror or exc}") from None
        if not directory.is_dir():
            raise UsageError(f"--cache-dir {directory}: not a directory")

    def _path(self, digest: str) -> Path | None:
        # Only a well-formed sha256 digest becomes a path: a registry-supplied digest can
        # never name a file outside the cache.
        match = _SHA256.match(digest)
        if match is None:
            return None
        hex_ = match.group(1)
        return self.directory / "sha256" / hex_[:2] / hex_

    def get(self, digest: str) -> CachedManifest | None:
        """The verified body stored for `digest`, or None (absent, unreadable or tampered)."""
        path = self._path(digest)
        if path is None:
            return None
        data = self._read(path)
        if data is None:
            self.misses += 1
            return None
        entry = _decode(data, digest)
        if entry is None:
            self.rejected += 1
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def _read(self, path: Path) -> bytes | None:
        limit = len(MAGIC) + _MAX_MEDIA_TYPE + 1 + self.max_bytes
        try:
            # O_NOFOLLOW: a symlink is refused; O_NONBLOCK: a FIFO cannot hang the run.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # a symlink (ELOOP), a directory, no permission
                self.rejected += 1
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
                self.rejected += 1
                return None
            chunks: list[bytes] = []
            size = 0
            while size <= limit:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return None if size > limit else b"".join(chunks)
        except OSError:
            return None
        finally:
            os.close(fd)

    def put(self, body: bytes, media_type: str | None) -> None:
        """Store a body under its own sha256 (never under a name the registry gave)."""
        if len(body) > self.max_bytes:
            return
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        path = self._path(digest)
        assert path is not None
        kind = (media_type or "").encode("ascii", "replace")[:_MAX_MEDIA_TYPE]
        kind = kind.replace(b"\n", b"?")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(MAGIC + kind + b"\n" + body)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, path)
        except OSError:
            # A cache that cannot be written is only slower: the run's verdicts do not depend
            # on it. Counted, shown in the report's summary.
            self.write_errors += 1
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def counters(self) -> dict[str, int]:
        """Counts for the report's summary."""
        return {"cache_hits": self.hits, "cache_misses": self.misses,
                "cache_rejected": self.rejected, "cache_write_errors": self.write_errors}


def _decode(data: bytes, digest: str) -> CachedManifest | None:
    if not data.startswith(MAGIC):
        return None
    rest = data[len(MAGIC):]
    kind, newline, body = rest.partition(b"\n")
    if not newline or len(kind) > _MAX_MEDIA_TYPE:
        return None
    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        return None
    return CachedManifest(body, kind.decode("ascii", "replace") or None)
