"""RegistryClient against respx mocks: retries, Retry-After, caps, redirects, short bodies."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import hashlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import respx

from verifier.errors import RegistryUnreachable, UsageError
from verifier.model.manifest import ACCEPT
from verifier.registry import client as client_module
from verifier.registry.answers import BlobHead, BlobStream, RangeRead
from verifier.registry.auth import Credentials
from verifier.registry.client import ClientOptions, RegistryClient, RequestFailed

T = TypeVar("T")
HOST = "reg.test"
BASE = f"http://{HOST}"
DIGEST = "sha256:" + "d" * 64
MANIFEST_URL = f"{BASE}/v2/app/manifests/latest"
BLOB_URL = f"{BASE}/v2/app/blobs/{DIGEST}"


def _options(**overrides: Any) -> ClientOptions:
    base: dict[str, Any] = {"plain_http": True, "backoff_base": 0.001, "backoff_max": 0.002,
                            "retries": 3, "timeout": 5.0}
    base.update(overrides)
    return ClientOptions(**base)


def run(
    scenario: Callable[[RegistryClient, respx.MockRouter], Awaitable[T]],
    *,
    options: ClientOptions | None = None,
    credentials: Credentials | None = None,
) -> T:
    """Run `scenario` with a fresh client inside a respx mock that refuses unmocked requests."""

    async def main() -> T:
        # The client sends through aiohttp, not httpcore: respx mocks at the httpx client.
        with respx.mock(assert_all_mocked=True, assert_all_called=False,
                        using="httpx") as router:
            async with RegistryClient(HOST, options or _options(), credentials) as client:
                return await scenario(client, router)

    return asyncio.run(main())


class Sleeps:
    """Records the client's backoff sleeps and skips them."""

    def __init__(self) -> None:
        self.delays: list[float] = []


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    record = Sleeps()
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, *args: Any) -> None:
        record.delays.append(delay)
        await real_sleep(0)

    # The client calls `asyncio.sleep` through the module: patch it there, for this test only.
    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    return record


class ChunkStream(httpx.AsyncByteStream):
    """A body served chunk by chunk; counts how many chunks were pulled; may fail at the end."""

    def __init__(self, chunks: list[bytes], *, fail: bool = False) -> None:
        self.chunks = chunks
        self.fail = fail
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk
        if self.fail:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body")


class EndlessStream(httpx.AsyncByteStream):
    """A body that never ends (a hostile server); counts the chunks pulled."""

    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < 10_000:
            self.pulled += 1
            yield self.chunk


# -- retries -------------------------------------------------------------------------------


def test_429_and_503_storm_then_success(sleeps: Sleeps) -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> BlobHead:
        router.head(BLOB_URL).mock(side_effect=[
            httpx.Response(429), httpx.Response(503), httpx.Response(502),
            httpx.Response(200, headers={"Content-Length": "42", "Docker-Content-Digest": DIGEST}),
        ])
        return await client.head_blob("app", DIGEST)

    client_counts: dict[str, int] = {}

    async def counted(client: RegistryClient, router: respx.MockRouter) -> BlobHead:
        head = await scenario(client, router)
        client_counts.update(client.requests_by_code)
        assert client.request_count == 4
        return head

    head = run(counted)
    assert head == BlobHead(200, 42, DIGEST)
    assert client_counts == {"429": 1, "503": 1, "502": 1, "200": 1}
    assert len(sleeps.delays) == 3


def test_retry_after_seconds_is_honoured(sleeps: Sleeps) -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> int:
        router.get(f"{BASE}/v2/").mock(side_effect=[
            httpx.Response(429, headers={"Retry-After": "4"}),
            httpx.Response(200),
        ])
        return await client.ping()

    assert run(scenario, options=_options(backoff_max=10.0)) == 200
    assert sleeps.delays == [4.0]


def test_retry_after_http_date_is_honoured(sleeps: Sleeps) -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> int:
        when = email.utils.formatdate(time.time() + 6, usegmt=True)
        router.get(f"{BASE}/v2/").mock(side_effect=[
            httpx.Response(503, headers={"Retry-After": when}),
            httpx.Response(200),
        ])
        return await client.ping()

    assert run(scenario, options=_options(backoff_max=10.0)) == 200
    assert len(sleeps.delays) == 1
    assert 4.0 <= sleeps.delays[0] <= 6.0


def test_retry_after_is_capped(sleeps: Sleeps) -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> int:
        router.get(f"{BASE}/v2/").mock(side_effect=[
            httpx.Response(429, headers={"Retry-After": "86400"}), httpx.Response(200)])
        return await client.ping()

    assert run(scenario, options=_options(backoff_max=1.0)) == 200
    assert sleeps.delays == [3.0]


def test_retries_exhausted_raise_request_failed(sleeps: Sleeps) -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        route = router.get(MANIFEST_URL).mock(return_value=httpx.Response(503))
        with pytest.raises(RequestFailed) as info:
            await client.get_manifest("app", "latest")
        assert route.call_count == 3
        assert client.requests_by_code == {"503": 3}
        exc = info.value
        assert (exc.method, exc.url, exc.status) == ("GET", "/v2/app/manifests/latest", 503)
        assert "after 3 attempts" in str(exc)
        assert "HTTP 503" in str(exc)
        assert exc.exit_code == 3

    run(scenario, options=_options(retries=2))
    assert len(sleeps.delays) == 2


def test_retries_zero_means_one_attempt(sleeps: Sleeps) -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        route = router.head(BLOB_URL).mock(return_value=httpx.Response(429))
        with pytest.raises(RequestFailed):
            await client.head_blob("app", DIGEST)
        assert route.call_count == 1

    run(scenario, options=_options(retries=0))
    assert sleeps.delays == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 416, 500])
def test_definite_answers_are_never_retried(sleeps: Sleeps, status: int) -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> BlobHead:
        route = router.head(BLOB_URL).mock(return_value=httpx.Response(status))
        head = await client.head_blob("app", DIGEST)
        assert route.call_count == 1
        return head

    assert run(scenario).status == status
    assert sleeps.delays == []


def test_404_manifest_carries_error_codes() -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        route = router.get(MANIFEST_URL).mock(return_value=httpx.Response(
            404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "x"}, "junk"]}))
        fetch = await client.get_manifest("app", "latest")
        assert route.call_count == 1
        assert fetch.status == 404
        assert fetch.error_codes == ("MANIFEST_UNKNOWN",)
        assert fetch.body == b""

    run(scenario)


@pytest.mark.parametrize(
    "error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
              httpx.RemoteProtocolError("reset")],
)
def test_connection_errors_are_retried(sleeps: Sleeps, error: Exception) -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        route = router.head(BLOB_URL).mock(side_effect=[
            error, error, httpx.Response(200, headers={"Content-Length": "3"})])
        assert await client.head_blob("app", DIGEST) == BlobHead(200, 3, None)
        assert route.call_count == 3
        assert client.requests_by_code == {"error": 2, "200": 1}

    run(scenario)


def test_ping_maps_persistent_failure_to_unreachable(sleeps: Sleeps) -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        router.get(f"{BASE}/v2/").mock(side_effect=httpx.ConnectError("All connection attempts"))
        with pytest.raises(RegistryUnreachable, match=f"registry {HOST} unreachable") as info:
            await client.ping()
        assert info.value.exit_code == 3

    run(scenario, options=_options(retries=1))


def test_tls_failure_is_unreachable_at_once(sleeps: Sleeps) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        # As the transport raises it: the ssl error is the ConnectError's cause.
        cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]")
        cause.verify_message = "unable to get local issuer certificate"
        raise httpx.ConnectError("cannot connect") from cause

    calls: list[httpx.Request] = []

    async def main() -> None:
        # An injected transport (respx re-raises a side effect without its cause).
        transport = httpx.MockTransport(lambda request: calls.append(request) or refuse(request))
        async with RegistryClient(HOST, _options(), transport=transport) as client:
            with pytest.raises(RegistryUnreachable, match="--ca-cert") as info:
                await client.ping()
        assert len(calls) == 1
        assert str(info.value).startswith(f"TLS verification failed for {HOST}: unable to get")

    asyncio.run(main())


def test_deadline_stops_retrying(sleeps: Sleeps) -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        route = router.head(BLOB_URL).mock(
            return_value=httpx.Response(503, headers={"Retry-After": "30"}))
        with pytest.raises(RequestFailed):
            await client.head_blob("app", DIGEST)
        assert route.call_count == 1  # the 30 s wait would overrun the deadline

    run(scenario, options=_options(retries=10, deadline=5.0, backoff_max=20.0))
    assert sleeps.delays == []


def test_rate_limit_spaces_requests() -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> float:
        router.get(f"{BASE}/v2/").mock(return_value=httpx.Response(200))
        started = time.monotonic()
        for _ in range(3):
            await client.ping()
        return time.monotonic() - started

    assert run(scenario, options=_options(max_rps=50.0)) >= 0.035


# -- manifests -----------------------------------------------------------------------------


def test_manifest_get_sends_accept_and_returns_headers() -> None:
    body = b'{"schemaVersion": 2}'
    headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json",
               "Docker-Content-Digest": DIGEST}

    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        route = router.get(MANIFEST_URL).mock(
            return_value=httpx.Response(200, content=body, headers=headers))
        fetch = await client.get_manifest("app", "latest")
        assert route.calls.last.request.headers["accept"] == ACCEPT
        assert "regverify" in route.calls.last.request.headers["user-agent"]
        assert fetch.status == 200
        assert fetch.body == body
        assert fetch.content_type == headers["Content-Type"]
        assert fetch.digest_header == DIGEST
        assert fetch.content_length == len(body)
        assert not fetch.too_large

    run(scenario)


def test_manifest_over_the_declared_cap_is_not_read() -> None:
    stream = EndlessStream(b"x" * 65536)

    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        router.get(MANIFEST_URL).mock(return_value=httpx.Response(
            200, headers={"Content-Length": str(100 * 1024 * 1024)}, stream=stream))
        fetch = await client.get_manifest("app", "latest")
        assert fetch.too_large
        assert fetch.body == b""
        assert fetch.content_length == 100 * 1024 * 1024

    run(scenario, options=_options(max_manifest_bytes=4096))
    assert stream.pulled == 0


def test_manifest_over_the_cap_without_length_stops_early() -> None:
    stream = EndlessStream(b"x" * 65536)

    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        router.get(MANIFEST_URL).mock(return_value=httpx.Response(200, stream=stream))
        fetch = await client.get_manifest("app", "latest")
        assert fetch.too_large
        assert fetch.body == b""

    run(scenario, options=_options(max_manifest_bytes=4096))
    assert stream.pulled <= 2


def test_manifest_exactly_at_the_cap_is_read() -> None:
    body = b"x" * 4096

    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        router.get(MANIFEST_URL).mock(return_value=httpx.Response(200, content=body))
        fetch = await client.get_manifest("app", "latest")
        assert not fetch.too_large
        assert fetch.body == body

    run(scenario, options=_options(max_manifest_bytes=4096))


def test_manifest_body_cut_short_is_retried_then_fails(sleeps: Sleeps) -> None:
    def cut(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "100"},
                              stream=ChunkStream([b"{"], fail=True))

    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        route = router.get(MANIFEST_URL).mock(side_effect=cut)
        with pytest.raises(RequestFailed, match="cut short"):
            await client.get_manifest("app", "latest")
        assert route.call_count == 4

    run(scenario)


def test_manifest_shorter_than_its_content_length_is_retried(sleeps: Sleeps) -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        router.get(MANIFEST_URL).mock(side_effect=[
            httpx.Response(200, headers={"Content-Length": "10"}, stream=ChunkStream([b"{}"])),
            httpx.Response(200, content=b"{}"),
        ])
        fetch = await client.get_manifest("app", "latest")
        assert fetch.body == b"{}"

    run(scenario)


# -- blobs ---------------------------------------------------------------------------------


def test_head_with_zero_content_length() -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> BlobHead:
        router.head(BLOB_URL).mock(return_value=httpx.Response(200, headers={
            "Content-Length": "0", "Docker-Content-Digest": DIGEST}))
        return await client.head_blob("app", DIGEST)

    assert run(scenario) == BlobHead(200, 0, DIGEST)


@pytest.mark.parametrize("value", ["abc", "-1", "\u00b2", "", "1e3"])
def test_unusable_content_length_is_ignored(value: str) -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> BlobHead:
        router.head(BLOB_URL).mock(return_value=httpx.Response(200, headers=[
            (b"Content-Length", value.encode("latin-1"))]))
        return await client.head_blob("app", DIGEST)

    assert run(scenario) == BlobHead(200, None, None)


def test_last_byte_read_sends_the_range_and_counts_the_byte() -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> RangeRead:
        route = router.get(BLOB_URL).mock(return_value=httpx.Response(
            206, content=b"z", headers={"Content-Range": "bytes 9-9/10"}))
        read = await client.read_last_byte("app", DIGEST, 10)
        assert route.calls.last.request.headers["range"] == "bytes=9-9"
        return read

    assert run(scenario) == RangeRead(206, 1, 1, 10, False)


def test_last_byte_read_of_a_server_that_ignores_range() -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> RangeRead:
        router.get(BLOB_URL).mock(return_value=httpx.Response(200, content=b"0123456789"))
        return await client.read_last_byte("app", DIGEST, 10)

    assert run(scenario) == RangeRead(200, 10, 10, None, False)


def test_last_byte_206_with_no_body_is_returned_truncated_after_retries(sleeps: Sleeps) -> None:
    # The warm-cache fault: headers promise one byte, the connection closes with none.
    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(206, headers={"Content-Length": "1",
                                            "Content-Range": "bytes 9-9/10"},
                              stream=ChunkStream([], fail=True))

    async def scenario(client: RegistryClient, router: respx.MockRouter) -> RangeRead:
        route = router.get(BLOB_URL).mock(side_effect=empty)
        read = await client.read_last_byte("app", DIGEST, 10)
        assert route.call_count == 4
        return read

    assert run(scenario) == RangeRead(206, 0, 1, 10, truncated=True)
    assert len(sleeps.delays) == 3


def test_last_byte_truncation_through_a_real_socket() -> None:
    """The same fault over TCP: h11 sees Content-Length 1 and a closed connection."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 1\r\n"
                     b"Content-Range: bytes 9-9/10\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main() -> RangeRead:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with RegistryClient(f"127.0.0.1:{port}", _options(retries=1)) as client:
                return await client.read_last_byte("app", DIGEST, 10)
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(main()) == RangeRead(206, 0, 1, 10, truncated=True)


def test_stream_blob_hashes_the_whole_body() -> None:
    data = b"layer bytes " * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    chunks = [data[i:i + 1000] for i in range(0, len(data), 1000)]

    async def scenario(client: RegistryClient, router: respx.MockRouter) -> BlobStream:
        router.get(f"{BASE}/v2/app/blobs/{digest}").mock(return_value=httpx.Response(
            200, headers={"Content-Length": str(len(data))}, stream=ChunkStream(chunks)))
        return await client.stream_blob("app", digest)

    assert run(scenario) == BlobStream(200, len(data), digest, len(data), False)


def test_stream_blob_cut_short_is_returned_truncated(sleeps: Sleeps) -> None:
    def cut(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "100"},
                              stream=ChunkStream([b"x" * 10], fail=True))

    async def scenario(client: RegistryClient, router: respx.MockRouter) -> BlobStream:
        router.get(BLOB_URL).mock(side_effect=cut)
        return await client.stream_blob("app", DIGEST)

    assert run(scenario) == BlobStream(200, 10, None, 100, truncated=True)


def test_stream_blob_error_status_is_not_read() -> None:
    stream = EndlessStream(b"x")

    async def scenario(client: RegistryClient, router: respx.MockRouter) -> BlobStream:
        router.get(BLOB_URL).mock(return_value=httpx.Response(404, stream=stream))
        return await client.stream_blob("app", DIGEST)

    assert run(scenario) == BlobStream(404)
    assert stream.pulled == 0


def test_cross_origin_redirect_drops_authorization() -> None:
    storage_url = "https://storage.test/bucket/blob?sig=abc"
    challenge = 'Bearer realm="https://auth.test/token",service="reg.test"'

    def registry(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != "Bearer secret-token":
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(307, headers={"Location": storage_url})

    async def scenario(client: RegistryClient, router: respx.MockRouter) -> BlobStream:
        router.get(BLOB_URL).mock(side_effect=registry)
        router.get("https://auth.test/token").mock(
            return_value=httpx.Response(200, json={"token": "secret-token"}))
        storage = router.get(storage_url).mock(return_value=httpx.Response(200, content=b"abc"))
        result = await client.stream_blob("app", DIGEST)
        assert storage.call_count == 1
        sent = storage.calls.last.request
        assert "authorization" not in sent.headers
        assert "secret-token" not in str(sent.headers)
        assert sent.url.params["sig"] == "abc"
        return result

    result = run(scenario, credentials=Credentials("alice", "pw"))
    assert result.status == 200
    assert result.size == 3


def test_same_origin_redirect_keeps_authorization() -> None:
    basic = "Basic YWxpY2U6cHc="  # alice:pw

    def registry(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != basic:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if request.url.path.endswith("/moved"):
            return httpx.Response(200, content=b"abc")
        return httpx.Response(307, headers={"Location": f"{BASE}/v2/app/blobs/moved"})

    async def scenario(client: RegistryClient, router: respx.MockRouter) -> BlobStream:
        router.route(host=HOST).mock(side_effect=registry)
        return await client.stream_blob("app", DIGEST)

    assert run(scenario, credentials=Credentials("alice", "pw")).size == 3


# -- JSON pages ----------------------------------------------------------------------------


def test_get_json_page_with_link() -> None:
    link = '</v2/_catalog?last=b&n=2>; rel="next"'

    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        route = router.get(f"{BASE}/v2/_catalog").mock(return_value=httpx.Response(
            200, json={"repositories": ["a", "b"]}, headers={"Link": link}))
        page = await client.get_json("/v2/_catalog", {"n": "2"})
        assert route.calls.last.request.url.params["n"] == "2"
        assert page.status == 200
        assert page.data == {"repositories": ["a", "b"]}
        assert page.link == link
        assert page.error is None

    run(scenario)


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[" * 70_000, b"9" * 5000])
def test_get_json_malformed_body(body: bytes) -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        router.get(f"{BASE}/v2/app/tags/list").mock(return_value=httpx.Response(200, content=body))
        page = await client.get_json("/v2/app/tags/list")
        assert page.status == 200
        assert page.data is None
        assert page.error == "response is not JSON"

    run(scenario)


def test_get_json_error_page() -> None:
    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        router.get(f"{BASE}/v2/_catalog").mock(return_value=httpx.Response(
            401, json={"errors": [{"code": "UNAUTHORIZED"}, {"code": "DENIED"}]}))
        page = await client.get_json("/v2/_catalog")
        assert page.status == 401
        assert page.error == "UNAUTHORIZED,DENIED"
        router.get(f"{BASE}/v2/x/tags/list").mock(
            return_value=httpx.Response(404, content=b"[" * 70_000))
        assert (await client.get_json("/v2/x/tags/list")).error == ""

    run(scenario)


# -- construction --------------------------------------------------------------------------


def test_https_by_default_and_unreadable_ca_cert(tmp_path: Path) -> None:
    async def main() -> None:
        async with RegistryClient(HOST) as client:
            assert client.base_url == f"https://{HOST}"
        bad = tmp_path / "ca.pem"
        bad.write_text("not a certificate")
        with pytest.raises(UsageError, match="CA certificate"):
            RegistryClient(HOST, ClientOptions(ca_cert=bad))
        with pytest.raises(UsageError):
            RegistryClient(HOST, ClientOptions(ca_cert=tmp_path / "missing.pem"))

    asyncio.run(main())


def test_error_codes_of_odd_bodies() -> None:
    assert client_module._error_codes(b'{"errors": "x"}') == ()
    assert client_module._error_codes(b'{"errors": 5}') == ()
    assert client_module._error_codes(b"[]") == ()
    assert client_module._error_codes(json.dumps({"errors": [{"code": 1}]}).encode()) == ("1",)


def test_compression_is_never_requested() -> None:
    """A server (or CDN) compressing what the client accepts must not change what we hash.

    Manifest digests and blob checks are over the bytes as stored; a gzip-encoded answer would
    make the manifest look cut short (its Content-Length is the compressed size) and a blob
    streamed raw hash to the wrong digest.
    """
    body = json.dumps({"schemaVersion": 2, "pad": "x" * 500}).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()

    def maybe_gzip(request: httpx.Request) -> httpx.Response:
        if "gzip" in request.headers.get("accept-encoding", ""):
            packed = gzip.compress(body)
            return httpx.Response(200, content=packed, headers={
                "Content-Encoding": "gzip", "Content-Length": str(len(packed))})
        return httpx.Response(200, content=body)

    async def scenario(client: RegistryClient, router: respx.MockRouter) -> None:
        router.get(MANIFEST_URL).mock(side_effect=maybe_gzip)
        router.get(f"{BASE}/v2/app/blobs/{digest}").mock(side_effect=maybe_gzip)
        fetch = await client.get_manifest("app", "latest")
        assert fetch.body == body
        stream = await client.stream_blob("app", digest)
        assert (stream.size, stream.digest) == (len(body), digest)

    run(scenario, options=_options(retries=0))


def test_error_codes_cannot_smuggle_control_characters() -> None:
    body = json.dumps({"errors": [{"code": "\x1b[2J\x00BAD"}, {"code": "X" * 500}]}).encode()
    assert client_module._error_codes(body) == ("?[2J?BAD", "X" * 64)
