"""Bodies read with a cap on the bytes held after decoding (verifier/registry/bodies.py).

The client asks for `Accept-Encoding: identity`, but a server or a proxy may compress anyway.
A gzip-encoded manifest within the cap is decoded and verified (digest over the decoded bytes);
a gzip bomb -- 200 KB that inflates to 200 MB -- on a manifest, a tag list or the catalog costs
a few MiB at most: peak RSS of the real CLI in a child process, measured with `wait4`, is
compared with a normal run's.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.faultproxy import Exchange
from tests.test_hostile import OCI_MANIFEST, HostileRegistry, dump, image_manifest
from verifier.registry.bodies import STEP, BodyDecodingError, discard, read_capped

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
MIB = 1024 * 1024
#: "Within a few MiB of a normal run": what the bomb may cost over the same run without it.
RSS_ALLOWANCE = 6 * MIB


@cache
def bomb() -> bytes:
    """gzip of 200 MB of spaces (about 200 KB), built without holding the 200 MB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * MIB
    parts = [packer.compress(block) for _ in range(200)]
    parts.append(packer.flush())
    return b"".join(parts)


class Chunks(httpx.AsyncByteStream):
    """A body served in pieces, counting how many were pulled."""

    def __init__(self, data: bytes, size: int = 16 * 1024) -> None:
        self.pieces = [data[i:i + size] for i in range(0, len(data), size)]
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            self.pulled += 1
            yield piece


def _response(data: bytes, encoding: str | None = None) -> httpx.Response:
    headers = {"Content-Encoding": encoding} if encoding else {}
    return httpx.Response(200, headers=headers, stream=Chunks(data))


def _read(response: httpx.Response, cap: int) -> tuple[bytes, int, bool]:
    import asyncio

    return asyncio.run(read_capped(response, cap))


# --- the reader ----------------------------------------------------------------------------------


def test_gzip_within_the_cap_is_decoded() -> None:
    body = dump(image_manifest(annotations={"pad": "x" * 5000}))
    packed = gzip.compress(body)
    assert _read(_response(packed, "gzip"), 64 * 1024) == (body, len(packed), False)


@pytest.mark.parametrize("encoding", ["deflate", "x-gzip", "gzip, gzip", "identity, gzip"])
def test_other_zlib_codings(encoding: str) -> None:
    body = b'{"tags": ["a", "b"]}' * 100
    data = body
    for coding in [c.strip() for c in encoding.split(",")]:
        if coding in ("gzip", "x-gzip"):
            data = gzip.compress(data)
        elif coding == "deflate":
            data = zlib.compress(data)
    assert _read(_response(data, encoding), 1 * MIB)[0] == body


def test_raw_deflate_without_the_zlib_header_is_accepted() -> None:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = packer.compress(b"x" * 1000) + packer.flush()
    assert _read(_response(raw, "deflate"), 4096)[0] == b"x" * 1000


def test_a_bomb_stops_at_the_cap_and_reads_only_its_compressed_bytes() -> None:
    response = _response(bomb(), "gzip")
    body, received, too_large = _read(response, 4 * MIB)
    assert (body, too_large) == (b"", True)
    assert received == len(bomb()) < 4 * MIB


def test_an_identity_body_over_the_cap_is_not_read_further() -> None:
    stream = Chunks(b"x" * MIB, size=1024)
    body, received, too_large = _read(httpx.Response(200, stream=stream), 10_000)
    assert too_large and body == b"" and received <= 10_000 + 1024
    assert stream.pulled == 10


def test_an_encoded_body_that_never_ends_is_cut_at_the_cap() -> None:
    # Empty stored deflate blocks: bytes that decode to nothing, for ever.
    empty_block = b"\x00\x00\x00\xff\xff"
    stream = Chunks(b"\x78\x9c" + empty_block * 200_000, size=4096)
    body, received, too_large = _read(
        httpx.Response(200, headers={"Content-Encoding": "deflate"}, stream=stream), 8192)
    assert too_large and received <= 8192 + STEP + 4096


@pytest.mark.parametrize(("data", "encoding"), [
    (b"not gzip at all", "gzip"),
    (gzip.compress(b"x" * 1000)[:-20], "gzip"),  # cut short
    (b"whatever", "br"),  # a coding we do not decode
])
def test_bodies_that_do_not_decode(data: bytes, encoding: str) -> None:
    with pytest.raises(BodyDecodingError):
        _read(_response(data, encoding), 4096)


def test_discard_reads_only_a_few_kib() -> None:
    import asyncio

    stream = Chunks(b"x" * MIB, size=1024)
    asyncio.run(discard(httpx.Response(307, stream=stream)))
    assert stream.pulled <= 5


# --- the CLI against a registry that compresses -------------------------------------------------


def _encoded(body: bytes, content_type: str = "application/json",
             encoding: str = "gzip") -> Any:
    async def route(exchange: Exchange) -> None:
        await exchange.respond(200, body, [("Content-Type", content_type),
                                           ("Content-Encoding", encoding)])
    return route


def _plain(body: bytes, content_type: str = "application/json") -> Any:
    async def route(exchange: Exchange) -> None:
        await exchange.respond(200, body, [("Content-Type", content_type)])
    return route


def peak_rss(*args: str, tmp_path: Path) -> tuple[int, dict[str, Any] | None, int]:
    """Exit code, JSON report and peak RSS (bytes) of `regverify ARGS` in a child process."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "verifier", *args, "--format", "json",
                                 "--retries", "0", "--timeout", "20"],
                                stdout=stdout, stderr=stderr, env=env)
        # wait4, not wait(): the rusage of this child alone (RUSAGE_CHILDREN would be the
        # largest of every child this test process ever had).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.read_text()
    assert "Traceback" not in err.read_text(), err.read_text()
    return proc.returncode, json.loads(text) if text.strip() else None, usage.ru_maxrss * 1024


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    """A fresh loopback registry that answers what each test sets up."""
    with HostileRegistry() as server:
        yield server


def test_a_gzip_encoded_manifest_verifies(hostile: HostileRegistry, tmp_path: Path) -> None:
    body = dump(image_manifest())
    digest = "sha256:" + hashlib.sha256(body).hexdigest()

    async def route(exchange: Exchange) -> None:
        await exchange.respond(200, gzip.compress(body), [
            ("Content-Type", OCI_MANIFEST), ("Content-Encoding", "gzip"),
            ("Docker-Content-Digest", digest)])

    hostile.routes["/v2/app/manifests/v1"] = route
    code, doc, _ = peak_rss("image", f"{hostile.host}/app:v1", "--plain-http",
                            tmp_path=tmp_path)
    assert doc is not None and code == 0, doc
    assert doc["images"][0]["digest"] == digest


@pytest.mark.parametrize("target", ["manifest", "tags", "catalog"])
def test_a_gzip_bomb_costs_a_few_mib_at_most(hostile: HostileRegistry, tmp_path: Path,
                                             target: str) -> None:
    manifest = dump(image_manifest())
    tags = json.dumps({"name": "app", "tags": ["v1"]}).encode()
    catalog = json.dumps({"repositories": ["app"]}).encode()
    routes = {
        "manifest": ("/v2/app/manifests/v1", OCI_MANIFEST, manifest),
        "tags": ("/v2/app/tags/list", "application/json", tags),
        "catalog": ("/v2/_catalog", "application/json", catalog),
    }
    for path, content_type, body in routes.values():
        hostile.routes[path] = _plain(body, content_type)
    args = ("scan", hostile.host, "--plain-http") if target != "manifest" else (
        "image", f"{hostile.host}/app:v1", "--plain-http")
    normal_code, _, normal_rss = peak_rss(*args, tmp_path=tmp_path)
    assert normal_code == 0

    path, content_type, _ = routes[target]
    hostile.routes[path] = _encoded(bomb(), content_type)
    code, doc, bombed_rss = peak_rss(*args, tmp_path=tmp_path)
    assert doc is not None
    expected = {"manifest": (1, "manifest_invalid"), "tags": (3, "request_failed"),
                "catalog": (3, "catalog_inaccessible")}[target]
    assert (code, {f["kind"] for f in doc["findings"]}) == (expected[0], {expected[1]}), doc
    assert bombed_rss - normal_rss < RSS_ALLOWANCE, (bombed_rss / MIB, normal_rss / MIB)
