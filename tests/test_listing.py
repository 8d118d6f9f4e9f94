"""registry/listing.py: `Link` headers, and paging through a listing that misbehaves."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from verifier.registry.answers import JsonPage
from verifier.registry.client import ClientOptions, RegistryClient
from verifier.registry.listing import ListingError, iter_pages, next_link, resolve_link

HOST = "registry.test"

# --- Link headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "expected"), [
    ('</v2/_catalog?last=a%2Fb&n=2>; rel="next"', "/v2/_catalog?last=a%2Fb&n=2"),
    ("<https://r.example/v2/_catalog?last=x&n=5>; rel=next", "https://r.example/v2/_catalog?last=x&n=5"),
    ('</v2/_catalog?n=1>; rel="prev", </v2/_catalog?last=z&n=1>; rel="next"',
     "/v2/_catalog?last=z&n=1"),
    ('</page2>; title="a, b"; rel="prev next"', "/page2"),
    ('</v2/_catalog?n=1>; rel="prev"', None),
    ("", None),
    (None, None),
    ("garbage", None),
])
def test_next_link(header: str | None, expected: str | None) -> None:
    assert next_link(header) == expected


def test_resolve_link_keeps_path_and_query_only() -> None:
    assert resolve_link("/v2/_catalog?last=a%2Fb&n=2", "/v2/_catalog") == (
        "/v2/_catalog", {"last": "a/b", "n": "2"})
    # Another host's URL: only its path and query are used, so credentials never leave.
    assert resolve_link("https://evil.example/v2/_catalog?last=x", "/v2/_catalog") == (
        "/v2/_catalog", {"last": "x"})
    assert resolve_link("?last=q", "/v2/a/b/tags/list") == ("/v2/a/b/tags/list", {"last": "q"})
    with pytest.raises(ValueError, match="not '/v2/_catalog'"):
        resolve_link("/v2/other?last=x", "/v2/_catalog")


# --- paging -------------------------------------------------------------------------------------


class Pages:
    """A listing played page by page: each call to `get_json` answers the next page."""

    def __init__(self, *pages: JsonPage) -> None:
        self.pages = list(pages)
        self.asked: list[tuple[str, dict[str, str]]] = []

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> JsonPage:
        self.asked.append((path, dict(params or {})))
        return self.pages.pop(0)


def _page(names: list[str], link: str | None = None) -> JsonPage:
    return JsonPage(200, {"repositories": names}, link)


def _read(source: Pages, **options: Any) -> list[list[str]]:
    async def collect() -> list[list[str]]:
        return [page async for page in iter_pages(source, "/v2/_catalog", "repositories",
                                                  **options)]

    return asyncio.run(collect())


def test_pages_are_followed_through_link() -> None:
    source = Pages(_page(["a", "b"], '</v2/_catalog?last=b&n=2>; rel="next"'), _page(["c"]))
    assert _read(source, page_size=2) == [["a", "b"], ["c"]]
    assert source.asked == [("/v2/_catalog", {"n": "2"}),
                            ("/v2/_catalog", {"last": "b", "n": "2"})]


def test_page_size_is_halved_until_accepted_then_dropped() -> None:
    refused = JsonPage(400, error="PAGINATION_NUMBER_INVALID")
    source = Pages(refused, refused, _page(["a"]))
    assert _read(source, page_size=4) == [["a"]]
    assert [params for _, params in source.asked] == [{"n": "4"}, {"n": "2"}, {"n": "1"}]
    source = Pages(refused, _page(["a"]))
    assert _read(source, page_size=1) == [["a"]]
    assert [params for _, params in source.asked] == [{"n": "1"}, {}]


@pytest.mark.parametrize(("pages", "message"), [
    ([JsonPage(401, error="UNAUTHORIZED")], "answered HTTP 401 UNAUTHORIZED"),
    ([JsonPage(200, ["a"])], "not a JSON object"),
    ([JsonPage(200, {"repositories": [1]})], "not a list of names"),
    ([_page(["a"], '</v2/_catalog?n=1000>; rel="next"')], "pagination loops: Link"),
    ([_page(["a"], '</v2/_catalog?last=a>; rel="next"'), _page(["a"], "</x>; rel=next")],
     "page 2 repeats the previous page"),
    ([_page(["a"], '</v2/other?last=a>; rel="next"')], "unusable Link header"),
])
def test_unreadable_listings_raise_listing_error(pages: list[JsonPage], message: str) -> None:
    with pytest.raises(ListingError, match=message) as info:
        _read(Pages(*pages))
    if pages[0].status == 401:
        assert info.value.refused and info.value.status == 401


def test_page_cap_stops_an_endless_listing() -> None:
    source = Pages(_page(["a"], '</v2/_catalog?last=a>; rel="next"'),
                   _page(["b"], '</v2/_catalog?last=b>; rel="next"'))
    with pytest.raises(ListingError, match="stopped after 2 pages"):
        _read(source, max_pages=2)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    """respx with every request required to be mocked."""
    # The client sends through aiohttp, not httpcore: respx mocks at the httpx client.
    with respx.mock(base_url=f"http://{HOST}", assert_all_mocked=True, assert_all_called=False,
                    using="httpx") as router:
        yield router


def test_iter_pages_propagates_nothing_for_an_empty_listing(mock: respx.MockRouter) -> None:
    mock.get("/v2/x/tags/list").mock(return_value=httpx.Response(200, json={"tags": None}))

    async def collect() -> list[list[str]]:
        async with RegistryClient(HOST, ClientOptions(plain_http=True)) as client:
            return [page async for page in iter_pages(client, "/v2/x/tags/list", "tags")]

    assert asyncio.run(collect()) == [[]]
