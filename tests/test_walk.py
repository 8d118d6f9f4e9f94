"""Walker logic without a network: an in-memory registry behind httpx.MockTransport."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from typing import Any

import httpx

from verifier.model.findings import Finding, Kind, Severity
from verifier.model.manifest import MediaType
from verifier.registry.client import ClientOptions, RegistryClient
from verifier.walk import Walker, WalkOptions


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class FakeRegistry:
    """Serves manifests and blobs from dicts and counts requests per path."""

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.hits: Counter[tuple[str, str]] = Counter()

    def blob(self, data: bytes) -> dict[str, Any]:
        digest = _digest(data)
        self.blobs[digest] = data
        return {"mediaType": "application/octet-stream", "digest": digest, "size": len(data)}

    def image(self, name: str, layers: list[bytes], **extra: Any) -> dict[str, Any]:
        body = json.dumps({
            "schemaVersion": 2, "mediaType": MediaType.OCI_MANIFEST,
            "config": self.blob(f"config {name}".encode()),
            "layers": [self.blob(data) for data in layers], **extra,
        }).encode()
        digest = _digest(body)
        self.manifests[digest] = body
        return {"mediaType": MediaType.OCI_MANIFEST, "digest": digest, "size": len(body),
                "platform": {"os": "linux", "architecture": name}}

    def index(self, tag: str, children: list[dict[str, Any]]) -> str:
        body = json.dumps({"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX,
                           "manifests": children}).encode()
        digest = _digest(body)
        self.manifests[digest] = body
        self.manifests[tag] = body
        return digest

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.hits[(request.method, path)] += 1
        if path == "/v2/":
            return httpx.Response(200)
        _, _, rest = path.partition("/v2/repo/")
        kind, _, ref = rest.partition("/")
        if kind == "manifests" and ref in self.manifests:
            body = self.manifests[ref]
            return httpx.Response(200, content=body, headers={
                "Content-Type": json.loads(body).get("mediaType", "application/json"),
                "Docker-Content-Digest": ref if ref.startswith("sha256:") else _digest(body)})
        if kind == "blobs" and ref in self.blobs:
            data = self.blobs[ref]
            if request.headers.get("range"):
                return httpx.Response(206, content=data[-1:], headers={
                    "Content-Range": f"bytes {len(data) - 1}-{len(data) - 1}/{len(data)}"})
            if request.method == "HEAD":
                return httpx.Response(200, headers={"Content-Length": str(len(data)),
                                                    "Docker-Content-Digest": ref})
            return httpx.Response(200, content=data)
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})


def walk(fake: FakeRegistry, ref: str, deep: bool = False) -> tuple[list[Finding], Walker]:
    async def run() -> tuple[list[Finding], Walker]:
        options = ClientOptions(plain_http=True, retries=0)
        async with RegistryClient("registry.test", options,
                                  transport=httpx.MockTransport(fake.handler)) as client:
            walker = Walker(client, WalkOptions(deep=deep))
            result = await walker.verify("repo", ref)
            return result.findings, walker
    return asyncio.run(asyncio.wait_for(run(), timeout=10))


def test_shared_layer_is_checked_once_per_repository() -> None:
    fake = FakeRegistry()
    shared = b"shared layer bytes"
    fake.index("v1", [fake.image("amd64", [shared, b"a"]), fake.image("arm64", [shared, b"b"])])
    findings, walker = walk(fake, "v1")
    assert findings == []
    shared_digest = _digest(shared)
    # One probe per (repository, digest): the default probe is a single ranged GET.
    assert fake.hits[("GET", f"/v2/repo/blobs/{shared_digest}")] == 1
    assert fake.hits[("HEAD", f"/v2/repo/blobs/{shared_digest}")] == 0
    assert walker.counters["blobs"] == 5  # 2 configs + shared + a + b


def test_missing_blob_is_labelled_with_platform_and_chain() -> None:
    fake = FakeRegistry()
    fake.index("v1", [fake.image("amd64", [b"x"]), fake.image("arm64", [b"y"])])
    del fake.blobs[_digest(b"y")]
    findings, _ = walk(fake, "v1")
    [defect] = findings
    assert (defect.kind, defect.platform, defect.digest) == (
        Kind.BLOB_MISSING, "linux/arm64", _digest(b"y"))
    assert defect.details["chain"][0] == "tag v1"
    assert defect.details["chain"][-1].startswith("layer sha256:")


def test_index_cycle_is_reported_not_hung() -> None:
    fake = FakeRegistry()
    # A registry that serves, under child B's digest, a body naming the index itself.
    index_digest = fake.index("v1", [])
    child_body = json.dumps({"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX, "manifests": [
        {"mediaType": MediaType.OCI_INDEX, "digest": index_digest, "size": 10}]}).encode()
    bogus = "sha256:" + "b" * 64
    fake.manifests[bogus] = child_body
    top = json.dumps({"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX, "manifests": [
        {"mediaType": MediaType.OCI_INDEX, "digest": bogus, "size": len(child_body)}]}).encode()
    fake.manifests["v1"] = top
    fake.manifests[index_digest] = top
    findings, _ = walk(fake, "v1")
    found = Counter(f.kind for f in findings)
    assert found[Kind.DIGEST_MISMATCH] >= 1
    assert found[Kind.MANIFEST_INVALID] >= 1


def test_foreign_layer_is_info_and_not_fetched() -> None:
    fake = FakeRegistry()
    foreign = {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
               "digest": "sha256:" + "f" * 64, "size": 123, "urls": ["https://example.invalid/l"]}
    desc = fake.image("amd64", [b"local"])
    body = json.loads(fake.manifests[desc["digest"]])
    body["layers"].append(foreign)
    raw = json.dumps(body).encode()
    fake.manifests["v1"] = raw
    findings, _ = walk(fake, "v1")
    assert [(f.kind, f.severity) for f in findings] == [(Kind.FOREIGN_LAYER, Severity.INFO)]
    assert fake.hits[("HEAD", f"/v2/repo/blobs/{foreign['digest']}")] == 0
    assert fake.hits[("GET", f"/v2/repo/blobs/{foreign['digest']}")] == 0


def test_schema1_is_a_warning() -> None:
    fake = FakeRegistry()
    fake.manifests["old"] = json.dumps({"schemaVersion": 1, "name": "repo", "tag": "old",
                                        "fsLayers": []}).encode()
    findings, _ = walk(fake, "old")
    assert [(f.kind, f.severity) for f in findings] == [
        (Kind.SCHEMA1_UNVERIFIED, Severity.WARNING)]


def test_deep_catches_same_size_corruption() -> None:
    fake = FakeRegistry()
    fake.index("v1", [fake.image("amd64", [b"good bytes"])])
    fake.blobs[_digest(b"good bytes")] = b"evil bytes"
    assert walk(fake, "v1")[0] == []
    [defect] = walk(fake, "v1", deep=True)[0]
    assert defect.kind is Kind.DIGEST_MISMATCH


def test_walker_names_the_manifest_cap_it_was_given() -> None:
    fake = FakeRegistry()
    fake.index("v1", [fake.image("amd64", [b"layer"])])

    async def run() -> list[Finding]:
        options = ClientOptions(plain_http=True, retries=0, max_manifest_bytes=64)
        async with RegistryClient("registry.test", options,
                                  transport=httpx.MockTransport(fake.handler)) as client:
            walker = Walker(client, max_manifest_bytes=64)
            return (await walker.verify("repo", "v1")).findings

    [found] = asyncio.run(asyncio.wait_for(run(), timeout=10))
    assert found.kind is Kind.MANIFEST_INVALID and "64-byte cap" in found.message
