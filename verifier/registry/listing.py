"""Paginated listings (catalog, tag lists): `Link` headers followed, page sizes negotiated.

`iter_pages` reads one listing page by page through anything with the client's `get_json`, and
guards against the registries that never stop: a `Link` seen before, a page repeating the last,
more pages than allowed, a `Link` leaving the listing. What it cannot read is a `ListingError`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qsl, urljoin, urlsplit

from verifier.registry.answers import JsonPage

#: distribution answers 400 PAGINATION_NUMBER_INVALID above this.
PAGE_SIZE_MAX = 1000
#: A registry whose `Link` never ends must not keep us reading forever.
DEFAULT_MAX_PAGES = 100_000
# One `<target>; name=value; name="quoted, value"` entry of a Link header (RFC 8288).
_TOKEN = r"[A-Za-z0-9!#$&+.^_`|~*-]+"
_PARAM = rf'\s*;\s*({_TOKEN})\s*(?:=\s*("[^"]*"|[^;,\s"]*))?'
_LINK_ENTRY = re.compile(rf"<([^>]*)>((?:{_PARAM})*)")
_LINK_PARAM = re.compile(_PARAM)


class PageSource(Protocol):
    """What reads one JSON page of a listing (`RegistryClient.get_json`)."""

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> JsonPage:
        """GET a JSON API page with its `Link` header."""
        ...


def next_link(header: str | None) -> str | None:
    """The target of the `rel="next"` entry of a `Link` header (RFC 8288), or None."""
    if not header:
        return None
    for match in _LINK_ENTRY.finditer(header):
        target, params = match.group(1).strip(), match.group(2)
        for name, value in _LINK_PARAM.findall(params):
            if name.lower() == "rel" and "next" in value.strip('"').lower().split():
                return target
    return None


def resolve_link(target: str, endpoint: str) -> tuple[str, dict[str, str]]:
    """Path and query parameters of a `Link` target, resolved against the endpoint's path.

    Only the path and query are kept: the client sends them to the registry we were asked to
    scan, so a `Link` naming another host can never receive our credentials. A target on
    another path is refused (ValueError): following it would leave the listing being read.
    """
    resolved = urlsplit(urljoin(f"http://registry{endpoint}", target))
    if resolved.path != endpoint:
        raise ValueError(f"Link points to {resolved.path!r}, not {endpoint!r}")
    return resolved.path, dict(parse_qsl(resolved.query, keep_blank_values=True))


class ListingError(Exception):
    """A catalog or tag listing could not be read (further); turned into a finding."""

    def __init__(self, message: str, *, status: int | None = None, refused: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.refused = refused


def _smaller_page(n: int) -> int | None:
    """The next page size to try after 400 PAGINATION_NUMBER_INVALID; None: send no `n`."""
    return n // 2 if n > 1 else None


async def iter_pages(client: PageSource, endpoint: str, key: str, *,
                     page_size: int = PAGE_SIZE_MAX,
                     max_pages: int = DEFAULT_MAX_PAGES) -> AsyncGenerator[list[str], None]:
    """Yield the string lists under `key` of every page of a paginated listing.

    Follows `Link: <...>; rel="next"`, asks `n` of at most 1000 (distribution answers 100
    without it) and halves it on 400 PAGINATION_NUMBER_INVALID. A `Link` seen before, a page
    repeating the previous one, or more than `max_pages` pages raise `ListingError`, as does
    any answer that is not a page. RequestFailed and AuthRefused propagate.
    """
    size: int | None = min(page_size, PAGE_SIZE_MAX)
    path, params = endpoint, ({"n": str(size)} if size else {})
    visited: set[bytes] = set()
    previous_page: bytes | None = None
    pages = 0
    while True:
        # Hashes, not URLs, so the loop guard stays small even on a huge catalog.
        url_key = hashlib.sha256(repr((path, sorted(params.items()))).encode()).digest()[:16]
        if url_key in visited:
            raise ListingError(f"pagination loops: Link {path}?{_query(params)} was already read")
        visited.add(url_key)
        page = await client.get_json(path, params)
        if page.status == 400 and "PAGINATION_NUMBER_INVALID" in (page.error or "") and size:
            size = _smaller_page(size)
            params = {k: v for k, v in params.items() if k != "n"}
            if size:
                params["n"] = str(size)
            continue
        if page.status != 200:
            codes = f" {page.error}" if page.error else ""
            raise ListingError(f"{endpoint} answered HTTP {page.status}{codes}",
                               status=page.status, refused=page.status in (401, 403))
        entries = _entries(page.data, key, endpoint)
        pages += 1
        fingerprint = hashlib.sha256("\n".join(entries).encode()).digest()[:16]
        if fingerprint == previous_page:
            raise ListingError(f"pagination loops: page {pages} repeats the previous page")
        previous_page = fingerprint
        yield entries
        target = next_link(page.link)
        if target is None:
            return
        if pages >= max_pages:
            raise ListingError(f"stopped after {max_pages} pages (the Link never ended)")
        try:
            path, params = resolve_link(target, endpoint)
        except ValueError as exc:
            raise ListingError(f"unusable Link header: {exc}") from None


def _query(params: Mapping[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in params.items())


def _entries(data: Any, key: str, endpoint: str) -> list[str]:
    if not isinstance(data, dict):
        raise ListingError(f"{endpoint} answered something that is not a JSON object")
    value = data.get(key)
    if value is None:  # distribution sends `"tags": null` for a repository with no tags left
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ListingError(f"{endpoint}: {key!r} is not a list of names")
    return value
