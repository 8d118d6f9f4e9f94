"""Parse and format image references (`host[:port]/repo/path[:tag][@digest]`); pure.

Follows the Docker reference grammar (distribution/reference `regexp.go`), including Docker Hub
normalisation: `alpine` -> `docker.io/library/alpine`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from verifier.errors import InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
NAME_TOTAL_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN = rf"{_DOMAIN_NAME}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_PATH_RE = re.compile(rf"^{PATH_COMPONENT}(?:/{PATH_COMPONENT})*$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_DIGEST_RE = re.compile(rf"^{_DIGEST}$")
_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference: registry host, repository path, optional tag and digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """`host/repository` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host that serves the Distribution API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def manifest_ref(self) -> str:
        """What goes in `/v2/<name>/manifests/<ref>`: the digest when pinned, else the tag."""
        if self.digest:
            return self.digest
        return self.tag or "latest"

    def with_tag(self, tag: str) -> ImageReference:
        """The same repository at another tag."""
        return ImageReference(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def validate_digest(digest: str) -> str:
    """Return `digest` if it is `algorithm:hex` with a known algorithm and the right length."""
    if not _DIGEST_RE.match(digest):
        raise InvalidReference(f"invalid digest {digest!r}: expected algorithm:hex")
    algorithm, _, hex_part = digest.partition(":")
    expected = _HEX_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidReference(f"invalid digest {digest!r}: unsupported algorithm {algorithm!r}")
    if len(hex_part) != expected or hex_part != hex_part.lower():
        raise InvalidReference(
            f"invalid digest {digest!r}: {algorithm} needs {expected} lowercase hex characters"
        )
    return digest


def is_valid_digest(digest: object) -> bool:
    """True when `digest` is a string `validate_digest` accepts."""
    if not isinstance(digest, str):
        return False
    try:
        validate_digest(digest)
    except InvalidReference:
        return False
    return True


def _split_domain(name: str) -> tuple[str, str]:
    # Docker's rule: the first component is a registry host when it has a dot or a colon, is
    # "localhost", or has uppercase letters (which a repository path cannot).
    first, sep, rest = name.partition("/")
    if sep and (
        any(c in first for c in ".:") or first == "localhost" or first.lower() != first
    ):
        return first, rest
    return DOCKER_HUB, name


def parse_reference(text: str, *, default_tag: str | None = "latest") -> ImageReference:
    """Parse an image reference; raise `InvalidReference` (exit 2) with a one-line reason."""
    original = text
    if not text or text != text.strip():
        raise InvalidReference(f"invalid reference {original!r}: empty or surrounded by spaces")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in text):
        raise InvalidReference(f"invalid reference {original!r}: contains invalid characters")
    digest: str | None = None
    if "@" in text:
        text, _, digest = text.partition("@")
        validate_digest(digest)
    tag: str | None = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"invalid reference {original!r}: invalid tag {tag!r}")
    if not text:
        raise InvalidReference(f"invalid reference {original!r}: missing repository name")
    domain, path = _split_domain(text)
    if not _DOMAIN_RE.match(domain):
        raise InvalidReference(f"invalid reference {original!r}: invalid registry host {domain!r}")
    if domain == "index.docker.io":
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if path.lower() != path:
        raise InvalidReference(
            f"invalid reference {original!r}: repository names must be lowercase"
        )
    if not _PATH_RE.match(path):
        raise InvalidReference(f"invalid reference {original!r}: invalid repository {path!r}")
    if len(domain) + 1 + len(path) > NAME_TOTAL_MAX:
        raise InvalidReference(
            f"invalid reference {original!r}: name longer than {NAME_TOTAL_MAX} characters"
        )
    if tag is None and digest is None:
        tag = default_tag
    return ImageReference(domain, path, tag, digest)


def parse_registry(text: str) -> str:
    """Validate a bare registry host[:port] (as `regverify scan` takes it)."""
    host = text.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    if not host or not _DOMAIN_RE.match(host):
        raise InvalidReference(f"invalid registry {text!r}: expected host[:port]")
    return host


def is_valid_repository(path: str) -> bool:
    """True when `path` is a valid repository path (lowercase components joined by `/`)."""
    return bool(_PATH_RE.match(path)) and len(path) <= NAME_TOTAL_MAX
