"""`regverify scan`: pure parts, catalog edge cases under respx, and the real registry.

The respx half plays registries that misbehave on demand (a `Link` that loops, a page size
refused, a catalog refused); the real-registry half shares one registry of more than 100
repositories, damaged on disk the ways production damages it, and checks every verdict
against `skopeo copy --all`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from tests.support.cli import CliResult, run_cli
from tests.support.images import PushedIndex, make_layer, push_image, push_index, push_manifest_raw
from tests.support.registry import (
    RegistryServer,
    blob_data_path,
    layer_link_path,
    revision_link_path,
)
from tests.support.skopeo import skopeo_copy_all
from verifier.cli.progress import ScanProgress
from verifier.errors import ExitCode
from verifier.model.findings import ImageResult, ImageStatus, Report
from verifier.model.manifest import MediaType
from verifier.output import junit
from verifier.registry.client import ClientOptions, RegistryClient
from verifier.scan import (
    Filters,
    ScanOptions,
    Shard,
    verify_registry,
)
from verifier.verify import RunOptions
from verifier.walk import Walker

# --- a registry played by respx ------------------------------------------------------------------

HOST = "registry.test"
BASE = f"http://{HOST}"
Handler = Callable[[httpx.Request], httpx.Response]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"code": code, "message": code.lower()}]})


class FakeRegistry:
    """Repositories of one-layer images; catalog and tag lists paged like distribution."""

    def __init__(self, repos: dict[str, list[str]]) -> None:
        self.repos = repos
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.catalog_queries: list[dict[str, str]] = []
        self.fail_blobs: set[str] = set()
        self.refuse_tags: set[str] = set()
        shared = self._blob(b"shared base layer")
        for repo, tags in repos.items():
            for tag in tags:
                config = self._blob(f"config {repo}:{tag}".encode())
                body = json.dumps({
                    "schemaVersion": 2, "mediaType": MediaType.OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": _digest(config), "size": len(config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                "digest": _digest(shared), "size": len(shared)}],
                }).encode()
                self.manifests[(repo, tag)] = body
                self.manifests[(repo, _digest(body))] = body

    def _blob(self, data: bytes) -> bytes:
        self.blobs[_digest(data)] = data
        return data

    def catalog(self, request: httpx.Request, *, max_n: int = 1000) -> httpx.Response:
        """distribution's catalog: 100 by default, n above max_n refused, Link when more."""
        query = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        self.catalog_queries.append(query)
        n = int(query.get("n", 100))
        if n > max_n:
            return _error(400, "PAGINATION_NUMBER_INVALID")
        names = sorted(self.repos)
        if "last" in query:
            names = [r for r in names if r > query["last"]]
        page, more = names[:n], len(names) > n
        headers = {"Link": f'</v2/_catalog?last={page[-1]}&n={n}>; rel="next"'} if more else {}
        return httpx.Response(200, json={"repositories": page}, headers=headers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Everything below /v2/ except the catalog."""
        path = request.url.path
        if path == "/v2/":
            return httpx.Response(200, json={})
        rest = path.removeprefix("/v2/")
        if rest.endswith("/tags/list"):
            repo = rest.removesuffix("/tags/list")
            if repo in self.refuse_tags:
                return _error(401, "UNAUTHORIZED")
            if repo not in self.repos:
                return _error(404, "NAME_UNKNOWN")
            return httpx.Response(200, json={"name": repo, "tags": self.repos[repo]})
        if "/manifests/" in rest:
            repo, _, ref = rest.partition("/manifests/")
            body = self.manifests.get((repo, ref))
            if body is None:
                return _error(404, "MANIFEST_UNKNOWN")
            return httpx.Response(200, content=body, headers={
                "Content-Type": MediaType.OCI_MANIFEST, "Docker-Content-Digest": _digest(body)})
        repo, _, digest = rest.partition("/blobs/")
        if digest in self.fail_blobs:
            return httpx.Response(503)
        data = self.blobs.get(digest)
        if data is None:
            return _error(404, "BLOB_UNKNOWN")
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Length": str(len(data)),
                                                "Docker-Content-Digest": digest})
        size = len(data)
        return httpx.Response(206, content=data[-1:], headers={
            "Content-Range": f"bytes {size - 1}-{size - 1}/{size}"})

    def images(self) -> set[str]:
        """Every `host/repo:tag` the registry holds."""
        return {f"{HOST}/{r}:{t}" for r, tags in self.repos.items() for t in tags}


def _repos(count: int) -> dict[str, list[str]]:
    return {f"team{i % 3}/app-{i:03d}": ["v1"] for i in range(count)}


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    """respx with every request required to be mocked."""
    # The client sends through aiohttp, not httpcore: respx mocks at the httpx client.
    with respx.mock(base_url=BASE, assert_all_mocked=True, assert_all_called=False,
                    using="httpx") as router:
        yield router


def _install(mock: respx.MockRouter, fake: FakeRegistry,
             catalog: Handler | None = None) -> None:
    mock.get("/v2/_catalog").mock(side_effect=catalog or fake.catalog)
    mock.route().mock(side_effect=fake.handle)


def _scan(scan: ScanOptions | None = None, **client: Any) -> Report:
    options = RunOptions(client=ClientOptions(plain_http=True, retries=client.pop("retries", 0),
                                              backoff_base=0.001, **client))
    return asyncio.run(verify_registry(HOST, options, scan))


def _refs(report: Report, status: ImageStatus | None = None) -> set[str]:
    return {i.reference for i in report.images if status is None or i.status is status}


def _kinds(report: Report) -> Counter[str]:
    return Counter(str(f.kind) for f in report.findings)


def test_catalog_follows_link_past_the_first_page(mock: respx.MockRouter) -> None:
    fake = FakeRegistry(_repos(250))
    _install(mock, fake)
    report = _scan(ScanOptions(page_size=40))
    assert _refs(report, ImageStatus.OK) == fake.images()
    assert report.exit_code is ExitCode.CLEAN
    assert report.counters["catalog_pages"] == 7
    assert report.counters["repositories"] == 250
    assert report.extra["scan"]["catalog"] == "read"
    # A manifest and its shared layer: each repository checks the shared layer itself.
    assert report.counters["blobs"] == 250 * 2


def test_catalog_steps_down_on_pagination_number_invalid(mock: respx.MockRouter) -> None:
    fake = FakeRegistry(_repos(130))
    _install(mock, fake, lambda request: fake.catalog(request, max_n=100))
    report = _scan()
    assert [q.get("n") for q in fake.catalog_queries[:5]] == ["1000", "500", "250", "125", "62"]
    assert _refs(report) == fake.images()
    assert report.exit_code is ExitCode.CLEAN


def test_catalog_without_any_usable_n_falls_back_to_the_default(mock: respx.MockRouter) -> None:
    fake = FakeRegistry(_repos(5))

    asked: list[str | None] = []

    def no_n(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params.get("n"))
        if "n" in request.url.params:
            return _error(400, "PAGINATION_NUMBER_INVALID")
        return fake.catalog(request)

    _install(mock, fake, no_n)
    report = _scan(ScanOptions(page_size=4))
    assert asked == ["4", "2", "1", None]
    assert _refs(report) == fake.images()


def test_looping_link_is_reported_not_followed_forever(mock: respx.MockRouter) -> None:
    fake = FakeRegistry(_repos(6))
    names = sorted(fake.repos)

    def looping(request: httpx.Request) -> httpx.Response:
        fake.catalog_queries.append({})
        second = "last=" in str(request.url)
        page = names[3:] if second else names[:3]
        # The second page sends us back to the first: a registry bug seen behind proxies.
        target = "/v2/_catalog?n=3" if second else f"/v2/_catalog?last={names[2]}&n=3"
        return httpx.Response(200, json={"repositories": page},
                              headers={"Link": f'<{target}>; rel="next"'})

    _install(mock, fake, looping)
    report = _scan(ScanOptions(page_size=3))
    assert len(fake.catalog_queries) == 2
    assert _refs(report) == fake.images()  # what was listed is still verified
    [problem] = [f for f in report.findings if f.kind == "catalog_inaccessible"]
    assert "loops" in problem.message
    assert report.exit_code is ExitCode.INCOMPLETE


def test_catalog_repeating_the_same_page_is_a_loop(mock: respx.MockRouter) -> None:
    fake = FakeRegistry(_repos(4))
    calls = []

    def ignores_last(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        # Ignores `last` but keeps inventing new Links: only the page content repeats.
        return httpx.Response(200, json={"repositories": sorted(fake.repos)[:2]},
                              headers={"Link": f'</v2/_catalog?last=x{len(calls)}>; rel="next"'})

    _install(mock, fake, ignores_last)
    report = _scan()
    assert len(calls) == 2
    assert "repeats the previous page" in report.findings[0].message
    assert report.exit_code is ExitCode.INCOMPLETE


def test_page_cap_stops_an_endless_catalog(mock: respx.MockRouter) -> None:
    fake = FakeRegistry(_repos(1))
    calls = []

    def endless(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, json={"repositories": [f"gen/r{len(calls)}"]},
                              headers={"Link": f'</v2/_catalog?last=r{len(calls)}>; rel="next"'})

    _install(mock, fake, endless)
    report = _scan(ScanOptions(max_pages=5))
    assert len(calls) == 5
    assert "stopped after 5 pages" in report.findings[0].message
    assert report.counters["repositories_listed"] == 5


@pytest.mark.parametrize("status", [401, 403, 404])
def test_refused_catalog_without_names_is_incomplete(mock: respx.MockRouter, status: int) -> None:
    fake = FakeRegistry(_repos(3))
    _install(mock, fake, lambda request: _error(status, "UNAUTHORIZED"))
    report = _scan()
    assert report.images == []
    [finding] = report.findings
    assert (finding.kind, finding.http_status, finding.registry) == (
        "catalog_inaccessible", status, HOST)
    assert report.exit_code is ExitCode.INCOMPLETE
    assert report.extra["scan"]["catalog"] == ("refused" if status != 404 else "incomplete")
    xml = ET.fromstring(junit.render(report))
    assert xml.find("testsuite").get("errors") == "1"  # type: ignore[union-attr]


def test_refused_catalog_carries_on_with_plain_names(mock: respx.MockRouter) -> None:
    fake = FakeRegistry({"infra/ci": ["v1", "v2"], "app/web": ["v1"], "app/api": ["v1"]})
    _install(mock, fake, lambda request: _error(401, "UNAUTHORIZED"))
    filters = Filters.build(repos=["infra/ci", "app/*", "gone/repo"])
    report = _scan(ScanOptions(filters=filters))
    # The glob cannot be expanded without a catalog; the plain names are verified.
    assert _refs(report, ImageStatus.OK) == {f"{HOST}/infra/ci:v1", f"{HOST}/infra/ci:v2"}
    assert _kinds(report) == {"catalog_inaccessible": 1, "manifest_missing": 1}
    [missing] = [f for f in report.findings if f.kind == "manifest_missing"]
    assert missing.repository == "gone/repo"
    [refused] = [f for f in report.findings if f.kind == "catalog_inaccessible"]
    assert "carrying on with the 2 repositories named explicitly" in refused.message
    assert report.exit_code is ExitCode.DEFECTS  # a named repository is missing


def test_token_refused_for_catalog_scope(mock: respx.MockRouter) -> None:
    fake = FakeRegistry({"infra/ci": ["v1"]})
    challenge = {"WWW-Authenticate": f'Bearer realm="{BASE}/token",service="test"'}
    token = mock.get("/token").mock(return_value=httpx.Response(403))  # before the catch-all
    _install(mock, fake, lambda request: httpx.Response(401, headers=challenge))
    report = _scan(ScanOptions(filters=Filters.build(repos=["infra/ci"])))
    assert token.calls.last.request.url.params["scope"] == "registry:catalog:*"
    assert _kinds(report) == {"catalog_inaccessible": 1}
    assert "credentials refused" in report.findings[0].message
    assert _refs(report, ImageStatus.OK) == {f"{HOST}/infra/ci:v1"}
    assert report.exit_code is ExitCode.INCOMPLETE


def test_no_catalog_scans_only_the_names(mock: respx.MockRouter) -> None:
    fake = FakeRegistry({"infra/ci": ["v1"], "app/web": ["v1"]})
    _install(mock, fake)
    report = _scan(ScanOptions(filters=Filters.build(repos=["app/web"]), use_catalog=False))
    assert fake.catalog_queries == []
    assert _refs(report) == {f"{HOST}/app/web:v1"}
    assert report.exit_code is ExitCode.CLEAN
    assert report.extra["scan"]["catalog"] == "not read"


def test_tags_follow_link_and_filters(mock: respx.MockRouter) -> None:
    fake = FakeRegistry({"app/web": ["v1", "v2", "v3-rc1", "latest", "dev"]})
    mock.get("/v2/_catalog").mock(side_effect=fake.catalog)
    pages = {None: ["v1", "v2"], "v2": ["v3-rc1", "latest"], "latest": ["dev"]}

    def tags(request: httpx.Request) -> httpx.Response:
        last = request.url.params.get("last")
        page = pages[last]
        nxt = {None: "v2", "v2": "latest"}.get(last)
        headers = {"Link": f'</v2/app/web/tags/list?last={nxt}&n=2>; rel="next"'} if nxt else {}
        return httpx.Response(200, json={"name": "app/web", "tags": page}, headers=headers)

    mock.get("/v2/app/web/tags/list").mock(side_effect=tags)
    mock.route().mock(side_effect=fake.handle)
    filters = Filters.build(tags=["v*", "dev"], exclude_tags=["*-rc*"])
    report = _scan(ScanOptions(filters=filters))
    assert _refs(report) == {f"{HOST}/app/web:{t}" for t in ("v1", "v2", "dev")}
    assert report.counters["tags_excluded"] == 2


def test_refused_tag_list_and_transient_blob_are_not_defects(mock: respx.MockRouter) -> None:
    fake = FakeRegistry({"a/locked": ["v1"], "b/flaky": ["v1"], "c/fine": ["v1"]})
    fake.refuse_tags.add("a/locked")
    flaky_config = json.loads(fake.manifests[("b/flaky", "v1")])["config"]["digest"]
    fake.fail_blobs.add(flaky_config)
    _install(mock, fake)
    report = _scan(retries=1)
    statuses = {i.repository: i.status for i in report.images}
    assert statuses == {"b/flaky": ImageStatus.ERROR, "c/fine": ImageStatus.OK}
    assert _kinds(report) == {"auth_failed": 1, "request_failed": 1}
    assert report.defects == []
    assert report.exit_code is ExitCode.INCOMPLETE


def test_scan_stops_after_a_streak_of_failures(mock: respx.MockRouter) -> None:
    fake = FakeRegistry(_repos(60))
    fake.fail_blobs.update(fake.blobs)  # every blob answers 503: the registry is failing
    _install(mock, fake)
    report = _scan(ScanOptions(failure_streak=10, repository_workers=2, images_in_flight=2))
    assert len(report.images) < 60
    assert all(i.status is ImageStatus.ERROR for i in report.images)
    assert any("scan stopped early" in f.message for f in report.findings)
    assert report.exit_code is ExitCode.INCOMPLETE


def test_shards_split_the_fake_registry(mock: respx.MockRouter) -> None:
    fake = FakeRegistry(_repos(40))
    _install(mock, fake)
    parts = [_refs(_scan(ScanOptions(shard=Shard(i, 3)))) for i in range(3)]
    assert set().union(*parts) == fake.images()
    assert sum(len(p) for p in parts) == len(fake.images())


def test_walker_forget_drops_a_repository(mock: respx.MockRouter) -> None:
    fake = FakeRegistry({"a/one": ["v1"], "b/two": ["v1"]})
    mock.route().mock(side_effect=fake.handle)

    async def run() -> tuple[int, int]:
        async with RegistryClient(HOST, ClientOptions(plain_http=True)) as client:
            walker = Walker(client)
            await walker.verify("a/one", "v1")
            await walker.verify("b/two", "v1")
            before = len(walker._blobs)
            walker.forget("a/one")
            return before, len(walker._blobs)

    assert asyncio.run(run()) == (4, 2)


# --- progress ------------------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_silent_without_a_tty() -> None:
    stream = io.StringIO()
    progress = ScanProgress("r.test", stream)

    async def run() -> None:
        progress.scan_started(lambda: 10)
        progress.image_done(ImageResult("r/a:v1", None, ImageStatus.BROKEN), 2)
        await asyncio.sleep(0.01)
        progress.scan_finished()

    asyncio.run(run())
    assert stream.getvalue() == ""
    assert (progress.images, progress.broken, progress.defects) == (1, 1, 2)


def test_progress_line_on_a_tty() -> None:
    stream = _Tty()
    now = [100.0]
    requests = [0]
    progress = ScanProgress("r.test", stream, interval=0.01, clock=lambda: now[0])

    async def run() -> None:
        progress.scan_started(lambda: requests[0])
        await asyncio.sleep(0.02)
        progress.repository_done("r/a")
        progress.image_done(ImageResult("r/a:v1", None, ImageStatus.OK), 0)
        now[0], requests[0] = 102.0, 500
        await asyncio.sleep(0.03)
        progress.scan_finished()

    asyncio.run(run())
    text = stream.getvalue()
    assert "scanning r.test: 1 repositories, 1 images (0 broken), 0 defects, 500 requests, " \
           "250 req/s" in text
    assert text.endswith("\r\x1b[K")  # the line is erased before the report


# --- the command line, before any network -------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--repo", "Bad/Name"],
    ["--tag", "[v1"],
    ["--shard", "3/3"],
    ["--shard", "two/3"],
    ["--repos-from", "/nonexistent/repos.txt"],
    ["--no-catalog"],
    ["--concurrency", "0"],
])
def test_cli_usage_errors_exit_2(args: list[str]) -> None:
    result = run_cli("scan", "127.0.0.1:1", "--plain-http", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_cli_unreachable_registry_exits_3() -> None:
    result = run_cli("scan", "127.0.0.1:1", "--plain-http", "--retries", "0")
    assert result.exit_code == 3
    assert "unreachable" in result.output and "Traceback" not in result.output


def test_cli_bad_registry_exits_2() -> None:
    result = run_cli("scan", "not a host")
    assert result.exit_code == 2 and "invalid registry" in result.output


# --- the real registry ---------------------------------------------------------------------------

BULK = 110  # more than the 100 the catalog answers without `n`


@dataclass
class Populated:
    """The shared registry and what the fixture did to it."""

    server: RegistryServer
    images: set[str]  # every `host/repo:tag`
    broken: set[str]  # the ones the fixture damaged
    pairs: set[tuple[str, str]]  # distinct (repository, blob digest) a scan can reach


def _ref(server: RegistryServer, repo: str, tag: str) -> str:
    return f"{server.host}/{repo}:{tag}"


@pytest.fixture(scope="module")
def populated(registry_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Populated]:
    """One registry for the whole module: 130-odd repositories, then the damage."""
    server = RegistryServer(workdir=tmp_path_factory.mktemp("scan") / "registry",
                            registry_bin=registry_bin)
    server.start()
    try:
        yield _populate(server)
    finally:
        server.stop()


def _populate(server: RegistryServer) -> Populated:
    images: set[str] = set()
    broken: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    base = make_layer("scan-base")
    shared_bad = make_layer("scan-shared-bad")

    def add(pushed: Any, tag: str, *, bad: bool = False, lost: tuple[Any, ...] = ()) -> None:
        # `lost`: manifests the damage removes, whose blobs a scan can no longer reach.
        ref = _ref(server, pushed.repository, tag)
        images.add(ref)
        if bad:
            broken.add(ref)
        manifests = pushed.manifests if isinstance(pushed, PushedIndex) else [pushed]
        pairs.update((pushed.repository, b.digest) for m in manifests if m not in lost
                     for b in m.blobs)

    def bulk(i: int) -> None:
        # Nested names, every image on the shared base layer plus one of its own.
        repo = f"bulk/g{i % 4}/r{i:03d}"
        add(push_image(server, repo, "v1", layers=[base, make_layer(repo)]), "v1")

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(bulk, range(BULK)))

    # Several tags on one digest (walked once), and a second digest beside them.
    same = push_image(server, "multi/tags", "v1", layers=[base])
    for tag in ("v1", "stable", "latest"):
        if tag != "v1":
            push_manifest_raw(server, "multi/tags", tag, same.manifest_bytes, same.media_type)
        add(same, tag)
    add(push_image(server, "multi/tags", "dev", layers=1), "dev")
    # Tagged indexes: garbage-collect --delete-untagged will delete all their children.
    for index in (push_index(server, "multi/arch", "v1"),
                  push_index(server, "multi/list", "v1", oci=False)):
        add(index, "v1", bad=True, lost=tuple(index.manifests))
    # Images whose damage comes after the GC.
    shared_a = push_image(server, "broken/shared-a", "v1", layers=[base, shared_bad])
    shared_b = push_image(server, "broken/shared-b", "v1", layers=[shared_bad])
    config_gone = push_image(server, "broken/config", "v1", oci=False)
    linkless = push_image(server, "broken/linkless", "v1", layers=[base])
    warm = push_image(server, "broken/warm", "v1", layers=1)
    for pushed in (shared_a, shared_b, config_gone, linkless, warm):
        add(pushed, "v1", bad=True)

    gc = server.garbage_collect(delete_untagged=True)
    assert gc.returncode == 0, gc.stdout

    add(push_index(server, "multi/fresh", "v1"), "v1")  # pushed after the GC: healthy
    child_gone = push_index(server, "broken/child", "v1")
    add(child_gone, "v1", bad=True, lost=(child_gone.children[0],))

    # Cold faults (a restart empties the registry's blob descriptor cache).
    blob_data_path(server.v2, shared_a.layers[1].digest).unlink()  # shared by two repositories
    blob_data_path(server.v2, config_gone.config.digest).unlink()
    # The base layer stays healthy in every other repository; only this one loses its link.
    layer_link_path(server.v2, "broken/linkless", linkless.layers[0].digest).unlink()
    revision_link_path(server.v2, "broken/child", child_gone.children[0].digest).unlink()
    server.restart()
    # Warm fault, the real incident: the registry has served the blob, then its data goes.
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        assert client.get(f"/v2/broken/warm/blobs/{warm.layers[0].digest}").status_code == 200
    blob_data_path(server.v2, warm.layers[0].digest).unlink()
    return Populated(server, images, broken, pairs)


def scan_json(populated: Populated, *args: str) -> CliResult:
    """`regverify scan HOST --plain-http --format json ARGS` in a real process; no traceback."""
    return run_cli("scan", populated.server.host, "--plain-http", "--format", "json", *args,
                   subprocess=True, no_traceback=True)


def _image_refs(doc: dict[str, Any], status: str | None = None) -> set[str]:
    return {i["reference"] for i in doc["images"] if status is None or i["status"] == status}


def _finding_keys(doc: dict[str, Any]) -> set[tuple[str, ...]]:
    return {(f["kind"], f["repository"], f["reference"], f["digest"] or "")
            for f in doc["findings"]}


@pytest.fixture(scope="module")
def full_scan(populated: Populated) -> CliResult:
    """One unsharded scan shared by the assertions that only read it."""
    return scan_json(populated)


@pytest.mark.registry
@pytest.mark.skopeo
def test_scan_finds_exactly_what_skopeo_cannot_pull(
    populated: Populated, full_scan: CliResult, tmp_path: Path
) -> None:
    doc = full_scan.json()
    assert full_scan.exit_code == 1
    assert _image_refs(doc) == populated.images
    scan_broken = _image_refs(doc, "broken")
    assert _image_refs(doc, "error") == set()
    assert scan_broken == populated.broken

    def pull(ref: str) -> tuple[str, bool]:
        return ref, skopeo_copy_all(ref, tmp_path / hashlib.sha256(ref.encode()).hexdigest()).ok

    with ThreadPoolExecutor(8) as pool:
        skopeo_failed = {ref for ref, ok in pool.map(pull, sorted(populated.images)) if not ok}
    assert scan_broken == skopeo_failed
    kinds = doc["summary"]["defects_by_kind"]
    assert set(kinds) == {"manifest_missing", "blob_missing", "blob_unreadable"}


@pytest.mark.registry
def test_summary_counts_and_shared_work(
    populated: Populated, full_scan: CliResult
) -> None:
    doc = full_scan.json()
    summary = doc["summary"]
    repos = {ref.split("/", 1)[1].rsplit(":", 1)[0] for ref in populated.images}
    assert len(repos) > 100
    assert summary["repositories"] == summary["repositories_listed"] == len(repos)
    assert summary["tags"] == summary["images"] == len(populated.images)
    assert summary["catalog_pages"] == 1  # n=1000 covers this registry in one page
    # Every reachable (repository, blob) checked exactly once: the shared base layer once in
    # each repository, the three tags on one digest walked once.
    assert summary["blobs"] == len(populated.pairs)
    # One GET per tag, plus each index's children (4 with attestations, 2 for a Docker list).
    assert summary["manifests"] == len(populated.images) + 4 + 2 + 4 + 4
    # Ping, one catalog page, one tag list per repository, the manifests, a HEAD and a
    # last-byte GET per blob (fewer when the HEAD already failed), a few retries of the warm
    # blob whose body never comes.
    least = 2 + len(repos) + summary["manifests"] + summary["blobs"]
    assert least <= summary["requests"] <= least + summary["blobs"] + 4
    assert doc["scan"]["catalog"] == "read" and doc["scan"]["shard"] is None
    assert summary["duration_seconds"] > 0


@pytest.mark.registry
def test_real_catalog_needs_link_and_scan_follows_it(
    populated: Populated, full_scan: CliResult
) -> None:
    # Without `n` the registry stops at 100: a scan that ignored Link would miss repositories.
    with httpx.Client(base_url=populated.server.url, trust_env=False) as client:
        first = client.get("/v2/_catalog")
    assert len(first.json()["repositories"]) == 100 and "rel=\"next\"" in first.headers["link"]
    options = RunOptions(client=ClientOptions(plain_http=True))
    report = asyncio.run(verify_registry(populated.server.host, options,
                                         ScanOptions(page_size=15)))
    assert report.counters["catalog_pages"] > 100 // 15
    assert {i.reference for i in report.images} == _image_refs(full_scan.json())
    assert {i.reference for i in report.images if i.status is ImageStatus.BROKEN} == \
        populated.broken


@pytest.mark.registry
def test_shards_union_equals_the_full_scan(
    populated: Populated, full_scan: CliResult
) -> None:
    full = full_scan.json()
    parts = [scan_json(populated, "--shard", f"{i}/3").json() for i in range(3)]
    images = [_image_refs(p) for p in parts]
    assert all(images)  # every shard got work
    assert sum(len(i) for i in images) == len(_image_refs(full))  # disjoint
    assert set().union(*images) == _image_refs(full)
    assert set().union(*(_image_refs(p, "broken") for p in parts)) == _image_refs(full, "broken")
    assert set().union(*(_finding_keys(p) for p in parts)) == _finding_keys(full)
    assert [p["scan"]["shard"] for p in parts] == ["0/3", "1/3", "2/3"]
    assert sum(p["summary"]["repositories"] for p in parts) == full["summary"]["repositories"]


@pytest.mark.registry
def test_filters_on_the_real_registry(populated: Populated) -> None:
    run = scan_json(populated, "--repo", "bulk/g1/*", "--repo", "multi/*",
                    "--exclude-repo", "multi/arch", "--tag", "v1", "--tag", "lat*",
                    "--exclude-tag", "dev")
    doc = run.json()
    host = populated.server.host
    expected = {r for r in populated.images
                if (r.startswith(f"{host}/bulk/g1/") or r.startswith(f"{host}/multi/"))
                and not r.startswith(f"{host}/multi/arch:")
                and r.rsplit(":", 1)[1] in ("v1", "latest")}
    assert _image_refs(doc) == expected
    assert run.exit_code == 1  # multi/list is still broken
    assert doc["summary"]["tags_excluded"] == 2  # multi/tags: stable and dev


@pytest.mark.registry
def test_repos_from_without_catalog(populated: Populated, tmp_path: Path) -> None:
    names = tmp_path / "repos.txt"
    names.write_text("# the two that matter\nmulti/fresh\nbulk/g0/r000\n")
    run = scan_json(populated, "--repos-from", str(names), "--no-catalog")
    doc = run.json()
    assert run.exit_code == 0
    host = populated.server.host
    assert _image_refs(doc, "ok") == {f"{host}/multi/fresh:v1", f"{host}/bulk/g0/r000:v1"}
    assert doc["scan"]["catalog"] == "not read"
    names.write_text("multi/fresh\nno/such/repo\n")
    run = scan_json(populated, "--repos-from", str(names), "--no-catalog")
    doc = run.json()
    assert run.exit_code == 1
    assert [(f["kind"], f["repository"]) for f in doc["findings"]] == [
        ("manifest_missing", "no/such/repo")]


@pytest.mark.registry
def test_json_and_junit_shape(populated: Populated, full_scan: CliResult,
                              tmp_path: Path) -> None:
    doc = full_scan.json()
    assert doc["mode"] == "scan" and doc["target"] == populated.server.host
    assert doc["exit_code"] == 1
    for key in ("repositories", "tags", "manifests", "blobs", "requests", "defects",
                "defects_by_kind", "duration_seconds", "images", "images_broken"):
        assert key in doc["summary"], key
    assert set(doc["images"][0]) >= {"reference", "digest", "status", "repository", "tag"}
    assert set(doc["scan"]) == {"registry", "shard", "catalog", "filters"}
    broken_refs = {i["reference"] for i in doc["images"] if i["status"] == "broken"}
    assert {f"{f['repository']}" for f in doc["findings"]} <= {
        r.split("/", 1)[1].rsplit(":", 1)[0] for r in broken_refs}

    out = tmp_path / "scan.xml"
    run = run_cli("scan", populated.server.host, "--plain-http", "--format", "junit",
                  "--output", str(out), "--repo", "broken/*", "--repo", "multi/fresh",
                  subprocess=True, no_traceback=True)
    assert run.exit_code == 1 and run.stdout == ""
    suite = ET.parse(out).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    host = populated.server.host
    assert {c.get("name") for c in cases} == {
        r for r in populated.images if r.startswith(f"{host}/broken/")} | {
        f"{host}/multi/fresh:v1"}
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    assert failed == {r for r in populated.broken if r.startswith(f"{host}/broken/")}
    assert suite.get("failures") == str(len(failed)) and suite.get("errors") == "0"


@pytest.mark.registry
def test_human_output(populated: Populated) -> None:
    run = run_cli("scan", populated.server.host, "--plain-http", "--repo", "broken/warm",
                  "--repo", "multi/tags", subprocess=True, no_traceback=True)
    assert run.exit_code == 1
    assert run.stderr == ""  # no TTY: no progress display
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("DEFECTS FOUND: 5 image(s), 1 broken, 0 not verifiable; "
                           "2 repositories, 5 tags,")
    assert "requests;" in last
    assert "blob_unreadable" in run.stdout and "broken/warm:v1" in run.stdout
