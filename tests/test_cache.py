"""Registry cost: the one-request blob probe, and `--cache-dir` across scans.

Against the real registry: every fault class `regverify image` knows is caught by the default
probe (one ranged GET of the last byte) exactly as by HEAD + ranged GET, and skopeo agrees;
a second scan with a cache replaces every known manifest GET by a HEAD and finds exactly what a
scan without cache finds -- also after `garbage-collect --delete-untagged`, which is why a known
manifest is still asked about; a cache directory with damaged, hostile or foreign files is
ignored entry by entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import RunCli
from tests.support.faultproxy import FaultProxy
from tests.support.images import PushedImage, PushedIndex, push_image, push_index
from tests.support.registry import (
    RegistryServer,
    blob_data_path,
    layer_link_path,
    revision_link_path,
)
from tests.support.skopeo import skopeo_copy_all
from verifier.cache import MAGIC, VerifiedManifestCache
from verifier.checks import Context
from verifier.errors import UsageError
from verifier.model.findings import Report
from verifier.model.manifest import Descriptor
from verifier.registry.client import ClientOptions, RegistryClient
from verifier.scan import verify_registry
from verifier.verify import RunOptions
from verifier.walk import BlobProbe, Walker, WalkOptions

PROBES = (BlobProbe.RANGE, BlobProbe.HEAD_RANGE)


def scan(host: str, *, probe: BlobProbe = BlobProbe.RANGE, cache_dir: Path | None = None,
         **client: Any) -> Report:
    """`regverify scan HOST --plain-http` in this process."""
    options = RunOptions(client=ClientOptions(plain_http=True, retries=1, **client),
                         walk=WalkOptions(blob_probe=probe), cache_dir=cache_dir)
    return asyncio.run(verify_registry(host, options))


def defects(report: Report) -> set[tuple[str, str, str | None]]:
    """(image, kind, digest) of every defect: what two runs must agree on."""
    return {(f"{f.repository}:{f.reference}", str(f.kind), f.digest) for f in report.defects}


def verdicts(report: Report) -> dict[str, str]:
    """repository:tag -> ok/broken/error."""
    return {f"{i.repository}:{i.tag}": str(i.status) for i in report.images}


# --- the probe -----------------------------------------------------------------------------------


@pytest.mark.registry
@pytest.mark.skopeo
def test_range_probe_catches_every_fault_class_head_and_range_does(
    registry: RegistryServer, tmp_path: Path
) -> None:
    pushed: dict[str, PushedImage | PushedIndex] = {
        name: push_image(registry, name, "v1", oci=name != "warm/config")
        for name in ("ok/image", "warm/data", "warm/truncated", "warm/config", "warm/link",
                     "cold/data", "cold/truncated", "cold/config", "cold/link")
    }
    pushed["child/link"] = push_index(registry, "child/link", "v1")
    assert {v for v in verdicts(scan(registry.host)).values()} == {"ok"}  # the cache is warm

    def layer(name: str) -> Path:
        image = pushed[name]
        assert isinstance(image, PushedImage)
        return blob_data_path(registry.v2, image.layers[0].digest)

    def config(name: str) -> Path:
        image = pushed[name]
        assert isinstance(image, PushedImage)
        return blob_data_path(registry.v2, image.config.digest)

    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def unlink_layer_link(name: str) -> None:
        image = pushed[name]
        assert isinstance(image, PushedImage)
        layer_link_path(registry.v2, name, image.layers[0].digest).unlink()

    # Warm: the registry still remembers every descriptor (HEAD answers 200 for all of these).
    layer("warm/data").unlink()
    truncate(layer("warm/truncated"))
    config("warm/config").unlink()
    unlink_layer_link("warm/link")  # warm: still served in full, skopeo pulls it: not broken
    index = pushed["child/link"]
    assert isinstance(index, PushedIndex)
    revision_link_path(registry.v2, "child/link", index.children[1].digest).unlink()
    warm = {probe: scan(registry.host, probe=probe) for probe in PROBES}
    expected_warm = {"warm/data:v1", "warm/truncated:v1", "warm/config:v1", "child/link:v1"}
    for probe, report in warm.items():
        assert {k for k, v in verdicts(report).items() if v == "broken"} == expected_warm, probe
        assert report.exit_code == 1
    assert defects(warm[BlobProbe.RANGE]) == defects(warm[BlobProbe.HEAD_RANGE])

    # Cold: the same faults and their cold twins after a restart (descriptor cache empty).
    layer("cold/data").unlink()
    truncate(layer("cold/truncated"))
    config("cold/config").unlink()
    unlink_layer_link("cold/link")
    registry.restart()
    cold = {probe: scan(registry.host, probe=probe) for probe in PROBES}
    expected_cold = expected_warm | {"cold/data:v1", "cold/truncated:v1", "cold/config:v1",
                                     "cold/link:v1", "warm/link:v1"}
    for probe, report in cold.items():
        assert {k for k, v in verdicts(report).items() if v == "broken"} == expected_cold, probe
    # Same verdict, same object; the kind may differ only where HEAD already answered (a
    # truncated blob is a size mismatch by HEAD's length or by the 416 of the ranged GET).
    by_probe = {p: {(img, digest) for img, _kind, digest in defects(r)} for p, r in cold.items()}
    assert by_probe[BlobProbe.RANGE] == by_probe[BlobProbe.HEAD_RANGE]
    assert defects(cold[BlobProbe.RANGE]) == defects(cold[BlobProbe.HEAD_RANGE])
    # skopeo, the reference client, agrees with the default probe on every image.
    for name, verdict in verdicts(cold[BlobProbe.RANGE]).items():
        result = skopeo_copy_all(f"{registry.host}/{name}", tmp_path / name.replace("/", "_"))
        assert result.ok == (verdict == "ok"), (name, verdict, result.stderr[-300:])


@pytest.mark.registry
def test_default_probe_costs_one_request_per_blob(registry: RegistryServer) -> None:
    push_index(registry, "multi/arch", "v1")
    push_image(registry, "app/web", "v1")
    push_image(registry, "app/web", "latest")
    by_probe = {probe: scan(registry.host, probe=probe) for probe in PROBES}
    for report in by_probe.values():
        assert report.exit_code == 0
        # One GET per manifest: tags and index children alike.
        assert report.counters["manifest_requests"] == report.counters["manifests"]
    default, both = by_probe[BlobProbe.RANGE], by_probe[BlobProbe.HEAD_RANGE]
    assert default.counters["blobs"] == both.counters["blobs"] > 0
    assert default.counters["blob_requests"] == default.counters["blobs"]
    assert both.counters["blob_requests"] == 2 * both.counters["blobs"]


# --- --cache-dir ---------------------------------------------------------------------------------


def _manifest_methods(proxy: FaultProxy) -> dict[str, int]:
    """Requests for manifests by digest through the proxy, by method."""
    out: dict[str, int] = {}
    for event in proxy.events:
        if "/manifests/sha256:" in event.target:
            out[event.method] = out.get(event.method, 0) + 1
    return out


@pytest.fixture
def populated(registry: RegistryServer) -> dict[str, PushedIndex | PushedImage]:
    """Indexes (with attestations), a Docker list, plain images and a broken child."""
    images: dict[str, PushedIndex | PushedImage] = {
        "multi": push_index(registry, "multi/arch", "v1"),
        "list": push_index(registry, "multi/list", "v1", oci=False),
        "plain": push_image(registry, "app/web", "v1"),
        "broken": push_index(registry, "broken/child", "v1"),
    }
    broken = images["broken"]
    assert isinstance(broken, PushedIndex)
    revision_link_path(registry.v2, "broken/child", broken.children[0].digest).unlink()
    return images


@pytest.mark.registry
def test_second_scan_heads_known_manifests_and_finds_the_same(
    registry: RegistryServer, populated: dict[str, Any], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with FaultProxy(registry.url) as proxy:
        plain = scan(proxy.host)
        proxy.events.clear()
        first = scan(proxy.host, cache_dir=cache)
        first_methods = _manifest_methods(proxy)
        proxy.events.clear()
        second = scan(proxy.host, cache_dir=cache)
        second_methods = _manifest_methods(proxy)
    assert defects(plain) == defects(first) == defects(second) != set()
    assert verdicts(plain) == verdicts(first) == verdicts(second)
    children = sum(len(i.manifests) for i in populated.values() if isinstance(i, PushedIndex))
    assert first.counters["manifests"] == second.counters["manifests"] == children + 4
    # The second scan GETs only what it could not know: the tags, and the child that is gone
    # (404, never cached); every other child is a HEAD, its body read from the cache.
    assert second.counters["manifests_cached"] == children - 1
    assert second.counters["cache_hits"] == children - 1
    assert second_methods.get("GET", 0) == 1 < first_methods["GET"]
    assert second_methods["HEAD"] == children - 1
    # Requests are not fewer: presence must still be asked about (see the GC test below).
    assert second.counters["manifest_requests"] == first.counters["manifest_requests"]
    assert sum(second.requests_by_code.values()) == sum(first.requests_by_code.values())


@pytest.mark.registry
def test_cache_never_hides_children_deleted_by_gc(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """distribution#3324: the bodies of the children survive GC, their revision links do not."""
    index = push_index(registry, "multi/arch", "v1")
    cache = tmp_path / "cache"
    assert scan(registry.host, cache_dir=cache).exit_code == 0
    registry.garbage_collect(delete_untagged=True)
    with_cache = scan(registry.host, cache_dir=cache)
    without = scan(registry.host)
    assert defects(with_cache) == defects(without)
    missing = {d for _img, kind, d in defects(with_cache) if kind == "manifest_missing"}
    assert missing == {m.digest for m in index.manifests}


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "sha256").rglob("*") if p.is_file())


@pytest.mark.registry
def test_damaged_and_hostile_cache_entries_are_ignored_and_refetched(
    registry: RegistryServer, populated: dict[str, Any], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    reference = scan(registry.host, cache_dir=cache)
    # Index children are what a scan looks up by digest (tags are always fetched).
    children = {m.digest[7:] for i in populated.values() if isinstance(i, PushedIndex)
                for m in i.manifests}
    entries = [p for p in _entries(cache) if p.name in children]
    assert len(entries) >= 7
    flipped, truncated, foreign, symlinked, fifo, huge = entries[:6]
    data = bytearray(flipped.read_bytes())
    data[-2] ^= 0x01
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:-10])
    foreign.write_bytes(entries[-1].read_bytes())  # another manifest's valid entry
    symlinked.unlink()
    symlinked.symlink_to(entries[-1])
    fifo.unlink()
    os.mkfifo(fifo)  # reading it would block forever
    huge.write_bytes(MAGIC + b"x\n" + b"{" * (5 * 1024 * 1024))
    (cache / "sha256" / "zz").mkdir()  # stray directories and files are not entries
    (cache / "sha256" / "zz" / "junk").write_text("junk")

    again = scan(registry.host, cache_dir=cache)
    assert defects(again) == defects(reference)
    assert verdicts(again) == verdicts(reference)
    assert again.counters["cache_rejected"] >= 6
    # Every damaged entry was fetched again and rewritten as a regular, verified file.
    third = scan(registry.host, cache_dir=cache)
    assert third.counters.get("cache_rejected", 0) == 0
    assert defects(third) == defects(reference)
    for path in (flipped, truncated, foreign, symlinked, fifo, huge):
        assert path.is_file() and not path.is_symlink()
        body = path.read_bytes().split(b"\n", 2)[2]
        assert hashlib.sha256(body).hexdigest() == path.name


@pytest.mark.registry
def test_cli_options(registry: RegistryServer, tmp_path: Path, run_cli: RunCli) -> None:
    push_index(registry, "multi/arch", "v1")
    runs = []
    for extra in (["--blob-probe", "head+range"], ["--cache-dir", str(tmp_path / "c")],
                  ["--cache-dir", str(tmp_path / "c")]):
        run = run_cli("scan", registry.host, "--plain-http", "--format", "json", *extra)
        assert run.exit_code == 0, run.stderr
        runs.append(run.json()["summary"])
    assert runs[0]["blob_requests"] == 2 * runs[0]["blobs"]
    assert runs[2]["manifests_cached"] == 4 and runs[1].get("manifests_cached", 0) == 0
    nested = run_cli("image", f"{registry.host}/multi/arch:v1", "--plain-http",
                     "--cache-dir", tmp_path / "new" / "deeper")
    assert nested.exit_code == 0, nested.stderr  # created on demand
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused = run_cli("image", f"{registry.host}/multi/arch:v1", "--plain-http",
                      "--cache-dir", afile)
    assert refused.exit_code == 2
    assert "--cache-dir" in refused.stderr and "Traceback" not in refused.stderr


# --- VerifiedManifestCache on its own ------------------------------------------------------------


def test_cache_keys_only_well_formed_sha256(tmp_path: Path) -> None:
    cache = VerifiedManifestCache(tmp_path / "c", max_bytes=1024)
    body = b'{"schemaVersion":2}'
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    cache.put(body, "application/vnd.oci.image.manifest.v1+json")
    hit = cache.get(digest)
    assert hit is not None and hit.body == body
    assert hit.media_type == "application/vnd.oci.image.manifest.v1+json"
    for hostile in ("sha256:../../etc/passwd", "sha512:" + "a" * 128, "sha256:" + "A" * 64,
                    digest + "/..", "sha256:" + "a" * 63):
        assert cache.get(hostile) is None
    assert not any(p.name == "passwd" for p in tmp_path.rglob("*"))


def test_cache_refuses_bodies_over_the_cap_and_survives_unwritable_storage(
    tmp_path: Path
) -> None:
    cache = VerifiedManifestCache(tmp_path / "c", max_bytes=16)
    cache.put(b"x" * 17, None)
    assert not (tmp_path / "c" / "sha256").exists()
    # Storage that cannot be written (even by root): the entry is skipped and counted.
    (tmp_path / "c" / "sha256").write_text("not a directory")
    cache.put(b"{}", None)
    assert cache.write_errors == 1
    assert cache.get("sha256:" + hashlib.sha256(b"{}").hexdigest()) is None


def test_cache_dir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UsageError, match="--cache-dir"):
        VerifiedManifestCache(afile, max_bytes=1024)


# --- the probe's edge cases, on an in-memory registry ---------------------------------------------


def _probe(responses: dict[str, httpx.Response], size: int = 10,
           probe: BlobProbe = BlobProbe.RANGE) -> tuple[list[str], list[str]]:
    """Check one blob of `size` bytes; return the finding kinds and the methods sent."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.method)
        return responses[request.method]

    async def run() -> list[str]:
        options = ClientOptions(plain_http=True, retries=0)
        async with RegistryClient("r.test", options,
                                  transport=httpx.MockTransport(handler)) as client:
            walker = Walker(client, WalkOptions(blob_probe=probe))
            desc = Descriptor(media_type="application/octet-stream", digest=DIGEST, size=size)
            found = await walker.check_blob(Context("app", "v1"), "app", desc)
            return [str(f.kind) for f in found]

    return asyncio.run(run()), sent


DIGEST = "sha256:" + "e" * 64


def test_range_probe_alone_when_the_answer_is_complete() -> None:
    ok = httpx.Response(206, content=b"x", headers={"Content-Range": "bytes 9-9/10",
                                                    "Docker-Content-Digest": DIGEST})
    assert _probe({"GET": ok}) == ([], ["GET"])


def test_range_probe_checks_the_digest_header() -> None:
    other = "sha256:" + "f" * 64
    wrong = httpx.Response(206, content=b"x", headers={"Content-Range": "bytes 9-9/10",
                                                       "Docker-Content-Digest": other})
    assert _probe({"GET": wrong}) == (["digest_mismatch"], ["GET"])


def test_range_probe_without_a_total_asks_head_for_the_length() -> None:
    no_total = httpx.Response(206, content=b"x")
    longer = httpx.Response(200, headers={"Content-Length": "12"})
    assert _probe({"GET": no_total, "HEAD": longer}) == (["size_mismatch"], ["GET", "HEAD"])
    exact = httpx.Response(200, headers={"Content-Length": "10"})
    assert _probe({"GET": no_total, "HEAD": exact}) == ([], ["GET", "HEAD"])


def test_empty_blob_is_probed_with_head_and_head_range_sends_both() -> None:
    head = httpx.Response(200, headers={"Content-Length": "0"})
    assert _probe({"HEAD": head}, size=0) == ([], ["HEAD"])
    ok = httpx.Response(206, content=b"x", headers={"Content-Range": "bytes 9-9/10"})
    full = httpx.Response(200, headers={"Content-Length": "10"})
    assert _probe({"GET": ok, "HEAD": full}, probe=BlobProbe.HEAD_RANGE) == (
        [], ["HEAD", "GET"])
