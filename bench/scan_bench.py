"""Benchmark `regverify scan` against the least work that catches every defect class.

Builds a synthetic registry on the real registry (distribution's ``docker-registry`` on
127.0.0.1): several hundred images, thousands of (repository, blob) pairs, Docker and OCI
manifests, OCI indexes with attestation manifests, tags sharing digests, layers shared across
repositories, and a handful of faults injected on disk (data deleted, blob truncated, config
deleted, index child's revision link removed). The storage is written straight to disk in
distribution's layout (pushing thousands of blobs over the API would take minutes and prove
nothing more); every run checks that both programs find the same broken images.

Then, in the same run and against the same registry, each in a fresh subprocess:

* ``minimal``: a minimal aiohttp program doing the least work that still catches every defect
  class `regverify image` knows: catalog and tags (following ``Link``), GET each tag's manifest
  (sha256 checked), GET each index child by digest, one ranged GET of the last byte per
  (repository, blob) -- at the same concurrency;
* ``regverify``: ``regverify scan HOST --plain-http --concurrency C --format json``.

Printed, one line per target: wall-time ratio, CPU-per-request ratio, requests per blob and
per manifest (from the scan's own summary), first vs second scan with ``--cache-dir``, and peak
RSS at N and 4N images. Target 5 (filesystem mode) is ``bench/fs_scan_bench.py``.

    python bench/scan_bench.py                     # N=400 images, 16 in flight, 3 rounds
    python bench/scan_bench.py --images 200 --rounds 1 --no-scale
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)


# --- building the registry's storage -----------------------------------------------------------


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class Store:
    """Writes blobs, links and tags in distribution's filesystem layout."""

    v2: Path
    blob_pairs: set[tuple[str, str]] = field(default_factory=set)
    manifest_pairs: set[tuple[str, str]] = field(default_factory=set)
    tags: int = 0
    repositories: set[str] = field(default_factory=set)
    written: set[str] = field(default_factory=set)
    sizes: dict[str, int] = field(default_factory=dict)

    def blob(self, data: bytes) -> str:
        """Store bytes once under blobs/; return the digest."""
        hex_ = hashlib.sha256(data).hexdigest()
        if hex_ not in self.written:
            _write(self.v2 / "blobs" / "sha256" / hex_[:2] / hex_ / "data", data)
            self.written.add(hex_)
            self.sizes[f"sha256:{hex_}"] = len(data)
        return f"sha256:{hex_}"

    def layer(self, repo: str, data: bytes) -> dict[str, Any]:
        """A blob linked into `repo`; its descriptor fields."""
        digest = self.blob(data)
        _write(self.v2 / "repositories" / repo / "_layers" / "sha256" / digest[7:] / "link",
               digest.encode())
        self.blob_pairs.add((repo, digest))
        self.repositories.add(repo)
        return {"digest": digest, "size": len(data)}

    def manifest(self, repo: str, body: bytes) -> str:
        """A manifest revision of `repo` (untagged)."""
        digest = self.blob(body)
        _write(self.v2 / "repositories" / repo / "_manifests" / "revisions" / "sha256"
               / digest[7:] / "link", digest.encode())
        self.manifest_pairs.add((repo, digest))
        return digest

    def tag(self, repo: str, tag: str, digest: str) -> None:
        """Point `repo:tag` at a manifest revision."""
        tags = self.v2 / "repositories" / repo / "_manifests" / "tags" / tag
        _write(tags / "current" / "link", digest.encode())
        _write(tags / "index" / "sha256" / digest[7:] / "link", digest.encode())
        self.tags += 1


def _image(store: Store, rng: random.Random, repo: str, label: str, base: list[bytes],
           oci: bool, platform: tuple[str, str] = ("linux", "amd64")) -> tuple[str, int]:
    config = _json({"architecture": platform[1], "os": platform[0], "label": label,
                    "rootfs": {"type": "layers", "diff_ids": []}})
    own = [rng.randbytes(rng.randint(200, 4000)) for _ in range(rng.randint(2, 5))]
    layer_type, config_type = (OCI_LAYER, OCI_CONFIG) if oci else (DOCKER_LAYER, DOCKER_CONFIG)
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    body = _json({
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": config_type, **store.layer(repo, config)},
        "layers": [{"mediaType": layer_type, **store.layer(repo, d)} for d in base + own],
    })
    return store.manifest(repo, body), len(body)


def _index(store: Store, rng: random.Random, repo: str, label: str, base: list[bytes]) -> str:
    children = []
    for arch in ("amd64", "arm64"):
        digest, size = _image(store, rng, repo, f"{label}/{arch}", base, True, ("linux", arch))
        children.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                         "platform": {"architecture": arch, "os": "linux"}})
        statement = _json({"_type": "https://in-toto.io/Statement/v0.1", "subject": digest,
                           "label": label})
        att_config = _json({"architecture": "unknown", "os": "unknown",
                            "rootfs": {"type": "layers", "diff_ids": []}, "label": label})
        att = _json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                     "config": {"mediaType": OCI_CONFIG, **store.layer(repo, att_config)},
                     "layers": [{"mediaType": IN_TOTO, **store.layer(repo, statement)}]})
        children.append({"mediaType": OCI_MANIFEST, "digest": store.manifest(repo, att),
                         "size": len(att), "platform": {"architecture": "unknown",
                                                        "os": "unknown"},
                         "annotations": {"vnd.docker.reference.digest": digest,
                                         "vnd.docker.reference.type": "attestation-manifest"}})
    return store.manifest(repo, _json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                       "manifests": children}))


@dataclass
class Built:
    """What the synthetic registry holds and which images were broken on purpose."""

    images: int
    repositories: int
    manifests: int
    blob_pairs: int
    broken: list[str]
    seconds: float
    probes: list[tuple[str, str, int]] = field(default_factory=list)


def build(v2: Path, images: int, seed: int = 7) -> Built:
    """Write `images` tags (about 1 in 5 an OCI index) across images/4 repositories."""
    t0 = time.perf_counter()
    rng = random.Random(seed)
    store = Store(v2)
    # Base layers shared by many repositories (each repository still needs its own link).
    bases = [[rng.randbytes(rng.randint(2000, 8000)) for _ in range(2)] for _ in range(8)]
    tagged: list[tuple[str, str, str]] = []  # (repo, tag, digest)
    made = 0
    r = 0
    while made < images:
        repo = f"team{r % 20}/app{r}" if r % 3 else f"svc{r}"
        base = bases[r % len(bases)]
        latest = ""
        for t in range(4):
            if made >= images:
                break
            label = f"{seed}/{repo}/{t}"
            if t == 3:  # `latest` shares the digest of v2: one manifest, two tags
                digest = latest
            elif rng.random() < 0.2:
                digest = _index(store, rng, repo, label, base)
            else:
                digest, _ = _image(store, rng, repo, label, base, oci=rng.random() < 0.5)
            latest = digest
            tag = "latest" if t == 3 else f"v{t}"
            store.tag(repo, tag, digest)
            tagged.append((repo, tag, digest))
            made += 1
        r += 1
    broken = _inject_faults(store, rng, tagged)
    def intact(digest: str) -> bool:
        path = v2 / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data"
        return path.exists() and path.stat().st_size == store.sizes[digest]

    # Healthy blobs only: the layer-by-layer CPU comparison must not time retries.
    probes = sorted((repo, digest, store.sizes[digest]) for repo, digest in store.blob_pairs
                    if intact(digest))
    return Built(store.tags, len(store.repositories), len(store.manifest_pairs),
                 len(store.blob_pairs), broken, time.perf_counter() - t0, probes)


def _manifest_of(v2: Path, digest: str) -> dict[str, Any]:
    data = (v2 / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data").read_bytes()
    doc: dict[str, Any] = json.loads(data)
    return doc


FAULTS = ("data", "data", "truncate", "truncate", "config", "child-link")


def _inject_faults(store: Store, rng: random.Random,
                   tagged: list[tuple[str, str, str]]) -> list[str]:
    """Break a few images the ways production does; return the tags that must come out broken.

    Each fault hits a blob or manifest that only one tag reaches, so the expected set is exact.
    """
    v2 = store.v2
    use: dict[tuple[str, str], int] = {}
    tags_of: dict[tuple[str, str], int] = {}
    for repo, _tag, digest in tagged:
        tags_of[(repo, digest)] = tags_of.get((repo, digest), 0) + 1
    for repo, digest in tags_of:
        for d in _blobs_of(v2, _manifest_of(v2, digest)):
            use[(repo, d)] = use.get((repo, d), 0) + 1
    candidates = [t for t in tagged if tags_of[(t[0], t[2])] == 1]
    rng.shuffle(candidates)
    broken: list[str] = []
    for fault in FAULTS:
        for repo, tag, digest in candidates:
            if f"{repo}:{tag}" in broken:
                continue
            doc = _manifest_of(v2, digest)
            is_index = doc.get("mediaType") in INDEX_TYPES
            if fault == "child-link":
                if not is_index:
                    continue
                child = doc["manifests"][0]["digest"]
                (v2 / "repositories" / repo / "_manifests" / "revisions" / "sha256" / child[7:]
                 / "link").unlink()
            else:
                if is_index:
                    continue
                target = doc["config"] if fault == "config" else doc["layers"][-1]
                if use[(repo, target["digest"])] != 1 or target["digest"] in {
                        d for (r, d), n in use.items() if r != repo}:
                    continue  # shared with another repository: one fault, two verdicts
                path = (v2 / "blobs" / "sha256" / target["digest"][7:9] / target["digest"][7:]
                        / "data")
                if fault == "truncate":
                    path.write_bytes(path.read_bytes()[: target["size"] // 2])
                else:
                    path.unlink()
            broken.append(f"{repo}:{tag}")
            break
    return sorted(broken)


def _blobs_of(v2: Path, doc: dict[str, Any]) -> list[str]:
    if doc.get("mediaType") in INDEX_TYPES:
        out: list[str] = []
        for child in doc["manifests"]:
            out += _blobs_of(v2, _manifest_of(v2, child["digest"]))
        return out
    return [doc["config"]["digest"], *(d["digest"] for d in doc["layers"])]


# --- the minimal program -----------------------------------------------------------------------


async def minimal_scan(base: str, concurrency: int) -> dict[str, Any]:
    """The least work that catches every defect class, with `concurrency` requests in flight."""
    import aiohttp

    requests = 0
    slots = asyncio.Semaphore(concurrency)
    broken: set[str] = set()
    manifests = blobs = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector,
                                     auto_decompress=False) as session:

        async def get(path: str, headers: dict[str, str] | None = None
                      ) -> tuple[int, Any, bytes | None]:
            nonlocal requests
            async with slots:
                requests += 1
                async with session.get(path, headers=headers) as response:
                    try:
                        body: bytes | None = await response.read()
                    except aiohttp.ClientPayloadError:
                        body = None  # cut short: the warm-cache missing blob
                    return response.status, response.headers, body

        async def pages(path: str, key: str) -> list[str]:
            out: list[str] = []
            url: str | None = f"{path}?n=1000"
            while url:
                status, headers, body = await get(url)
                if status != 200 or body is None:
                    return out
                out += json.loads(body).get(key) or []
                link = headers.get("Link")
                url = link[link.index("<") + 1:link.index(">")] if link else None
            return out

        async def blob(repo: str, desc: dict[str, Any]) -> bool:
            nonlocal blobs
            blobs += 1
            size = desc["size"]
            status, headers, body = await get(f"/v2/{repo}/blobs/{desc['digest']}",
                                              {"Range": f"bytes={size - 1}-{size - 1}"})
            if status == 206:
                total = headers.get("Content-Range", "").rpartition("/")[2]
                return body is not None and len(body) == 1 and total == str(size)
            return status == 200 and body is not None and len(body) == size

        async def manifest(repo: str, ref: str, memo: dict[str, asyncio.Task[bool]],
                           blob_memo: dict[str, asyncio.Task[bool]]) -> bool:
            nonlocal manifests
            manifests += 1
            status, headers, body = await get(f"/v2/{repo}/manifests/{ref}", {"Accept": ACCEPT})
            if status != 200 or body is None:
                return False
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            if digest != headers.get("Docker-Content-Digest", digest) or (
                    ref.startswith("sha256:") and digest != ref):
                return False
            doc = json.loads(body)
            if doc.get("mediaType") in INDEX_TYPES:
                jobs = []
                for child in doc["manifests"]:
                    if child["digest"] not in memo:
                        memo[child["digest"]] = asyncio.ensure_future(
                            manifest(repo, child["digest"], memo, blob_memo))
                    jobs.append(memo[child["digest"]])
                return all(await asyncio.gather(*jobs))
            jobs = []
            for desc in [doc["config"], *doc["layers"]]:
                if desc["digest"] not in blob_memo:
                    blob_memo[desc["digest"]] = asyncio.ensure_future(blob(repo, desc))
                jobs.append(blob_memo[desc["digest"]])
            return all(await asyncio.gather(*jobs))

        async def repository(repo: str) -> None:
            memo: dict[str, asyncio.Task[bool]] = {}
            blob_memo: dict[str, asyncio.Task[bool]] = {}
            tags = await pages(f"/v2/{repo}/tags/list", "tags")
            results = await asyncio.gather(*(manifest(repo, t, memo, blob_memo) for t in tags))
            broken.update(f"{repo}:{t}" for t, ok in zip(tags, results, strict=True) if not ok)

        repos = await pages("/v2/_catalog", "repositories")
        await asyncio.gather(*(repository(r) for r in repos))
    return {"requests": requests, "manifests": manifests, "blobs": blobs,
            "broken": sorted(broken)}


# --- where a request's CPU goes ------------------------------------------------------------------


async def layers(host: str, probes: list[tuple[str, str, int]], concurrency: int,
                 rounds: int = 3) -> dict[str, float]:
    """CPU per ranged GET of the last byte, layer by layer, on the same blobs and connections.

    `aiohttp`: the bare loop; `transport`: verifier.registry.transport's `AiohttpTransport` called
    directly with an `httpx.Request`; `httpx+transport`: the same requests through
    `httpx.AsyncClient` on it; `RegistryClient`: `read_last_byte` (retry loop, deadline,
    redirect and auth handling, counting, the result record). Median of `rounds` passes,
    microseconds per request.
    """
    import aiohttp
    import httpx

    from verifier.registry.client import ClientOptions, RegistryClient
    from verifier.registry.transport import AiohttpTransport

    base = f"http://{host}"
    slots = asyncio.Semaphore(concurrency)
    out: dict[str, list[float]] = {"aiohttp": [], "transport": [], "httpx+transport": [],
                                   "RegistryClient": []}
    timeouts = {"timeout": httpx.Timeout(30.0).as_dict()}
    for _ in range(rounds):
        for name in out:
            session = aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(
                limit=concurrency))
            limits = httpx.Limits(max_connections=concurrency)
            hx = httpx.AsyncClient(transport=AiohttpTransport(limits=limits))
            bare = AiohttpTransport(limits=limits)
            client = RegistryClient(host, ClientOptions(plain_http=True, concurrency=concurrency))

            async def one(repo: str, digest: str, size: int, name: str = name,
                          session: aiohttp.ClientSession = session,
                          hx: httpx.AsyncClient = hx, bare: AiohttpTransport = bare,
                          client: RegistryClient = client) -> None:
                span = {"Range": f"bytes={size - 1}-{size - 1}"}
                if name == "RegistryClient":
                    await client.read_last_byte(repo, digest, size)
                    return
                async with slots:
                    if name == "aiohttp":
                        async with session.get(f"/v2/{repo}/blobs/{digest}",
                                               headers=span) as response:
                            await response.read()
                    elif name == "transport":
                        reply = await bare.handle_async_request(httpx.Request(
                            "GET", f"{base}/v2/{repo}/blobs/{digest}", headers=span,
                            extensions=timeouts))
                        async for _chunk in reply.aiter_raw():
                            pass
                        await reply.aclose()
                    else:
                        async with hx.stream("GET", f"{base}/v2/{repo}/blobs/{digest}",
                                             headers=span) as reply:
                            async for _chunk in reply.aiter_raw():
                                pass

            started = time.process_time()
            await asyncio.gather(*(one(*probe) for probe in probes))
            out[name].append((time.process_time() - started) / len(probes) * 1e6)
            await session.close()
            await hx.aclose()
            await bare.aclose()
            await client.aclose()
    return {name: statistics.median(values) for name, values in out.items()}


# --- running and measuring ---------------------------------------------------------------------


@dataclass
class Run:
    """One measured subprocess."""

    name: str
    wall: float
    cpu: float
    maxrss_mib: float
    registry_cpu: float
    result: dict[str, Any]

    @property
    def requests(self) -> int:
        """Requests the program sent (its own count; regverify's from its summary)."""
        if "summary" in self.result:
            return int(self.result["summary"]["requests"])
        return int(self.result["requests"])


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


GNU_TIME = shutil.which("time") if Path("/usr/bin/time").exists() else None


def measure(name: str, cmd: list[str], registry_pid: int,
            env: dict[str, str] | None = None) -> Run:
    """Run `cmd`, return its wall time, CPU (user+sys), peak RSS and the registry's CPU.

    The child is reaped with wait4, so its CPU is its own. Its peak RSS comes from GNU time
    (`%M`) when installed: Linux carries the peak RSS of the process that forks into its
    child's `ru_maxrss` across exec, so a child of this (large) bench process would report at
    least the bench's own peak.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss:
        wrapped = [GNU_TIME, "-f", "%M", "-o", rss.name, *cmd] if GNU_TIME else cmd
        reg0 = _proc_cpu(registry_pid)
        t0 = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=out, stderr=err, cwd=ROOT,
                                env={**os.environ, **(env or {})})
        _, _status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        reg = _proc_cpu(registry_pid) - reg0
        proc.returncode = 0  # reaped above; keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        result = _parse(name, out.read(), err.read())
        text = rss.read().strip().splitlines()
        maxrss = int(text[-1]) / 1024 if GNU_TIME and text else usage.ru_maxrss / 1024
    return Run(name, wall, usage.ru_utime + usage.ru_stime, maxrss, reg, result)


def _parse(name: str, out: bytes, err: bytes) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(out)
    except ValueError:
        raise RuntimeError(f"{name}: no JSON on stdout; stderr:\n{err.decode()[-2000:]}") from None
    return data


def regverify_cmd(host: str, concurrency: int, *extra: str) -> list[str]:
    """`regverify scan` as a user runs it (fresh interpreter, JSON report on stdout)."""
    return [sys.executable, "-m", "verifier", "scan", host, "--plain-http", "--concurrency",
            str(concurrency), "--format", "json", *extra]


def minimal_cmd(host: str, concurrency: int) -> list[str]:
    """This file's minimal program in a fresh interpreter."""
    return [sys.executable, __file__, "--minimal", host, "--concurrency", str(concurrency)]


def broken_of(report: dict[str, Any], host: str) -> list[str]:
    """`repo:tag` of the images a regverify report calls broken."""
    prefix = f"{host}/"
    return sorted(i["reference"].removeprefix(prefix) for i in report["images"]
                  if i["status"] == "broken")


def _registry(workdir: Path, images: int) -> tuple[Any, Built]:
    from tests.support.registry import RegistryServer

    server = RegistryServer(workdir=workdir)
    built = build(server.v2, images) if images else Built(0, 0, 0, 0, [], 0.0)
    server.start()
    return server, built


def _broken(run: Run, host: str) -> list[str]:
    if run.name.startswith("minimal"):
        return list(run.result["broken"])
    return broken_of(run.result, host)


def _summary(run: Run) -> dict[str, Any]:
    summary: dict[str, Any] = run.result["summary"]
    return summary


def _pair(server: Any, built: Built, concurrency: int, rounds: int, label: str,
          plain_loop: list[Run] | None = None) -> tuple[list[Run], list[Run]]:
    """`rounds` measured runs of each program, rotating which goes first.

    With `plain_loop`, regverify on asyncio's own loop (REGVERIFY_EVENT_LOOP=asyncio) is a
    third program in the rotation, its runs appended there.
    """
    mine: list[Run] = []
    theirs: list[Run] = []
    jobs: list[tuple[str, list[str], dict[str, str] | None]] = [
        ("minimal", minimal_cmd(server.host, concurrency), None),
        ("regverify", regverify_cmd(server.host, concurrency), None)]
    if plain_loop is not None:
        jobs.append(("regverify-asyncio", regverify_cmd(server.host, concurrency),
                     {"REGVERIFY_EVENT_LOOP": "asyncio"}))
    for i in range(rounds):
        for name, cmd, env in jobs[i % len(jobs):] + jobs[:i % len(jobs)]:
            run = measure(name, cmd, server._proc.pid, env)
            if _broken(run, server.host) != built.broken:
                raise SystemExit(f"{label} {name} found {_broken(run, server.host)}, "
                                 f"expected {built.broken}")
            if name == "regverify-asyncio" and plain_loop is not None:
                plain_loop.append(run)
            else:
                (mine if name == "regverify" else theirs).append(run)
    return mine, theirs


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    """Build, compare, print."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=400, help="N: tags in the registry")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight, both programs")
    p.add_argument("--rounds", type=int, default=5, help="measured runs of each (median)")
    p.add_argument("--no-scale", action="store_true", help="skip the 4N registry")
    p.add_argument("--workdir", type=Path, default=None, help="build registries under here")
    p.add_argument("--minimal", metavar="HOST", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.minimal:
        result = asyncio.run(minimal_scan(f"http://{args.minimal}", args.concurrency))
        print(json.dumps(result))
        return 0

    # Byte-compile the package as `pip install` does for a wheel: with an editable install
    # (and PYTHONDONTWRITEBYTECODE, set on some machines) every run would otherwise compile
    # the whole package from source, a start-up cost no installed copy pays.
    compileall.compile_dir(str(ROOT / "verifier"), quiet=1)

    work = Path(tempfile.mkdtemp(prefix="scan-bench-", dir=args.workdir))
    servers: list[Any] = []
    try:
        n, c = args.images, args.concurrency
        empty, _ = _registry(work / "empty", 0)
        servers.append(empty)
        server, built = _registry(work / "n", n)
        servers.append(server)
        print(f"registry N: {built.images} images ({built.manifests} manifests, "
              f"{built.blob_pairs} (repository, blob) pairs, {built.repositories} repositories), "
              f"{len(built.broken)} broken on purpose; built in {built.seconds:.1f}s", flush=True)

        # Fixed cost of each process (interpreter, imports, start-up, one catalog request).
        idle = {name: [measure(name, cmd, empty._proc.pid) for _ in range(3)]
                for name, cmd in (("minimal", minimal_cmd(empty.host, c)),
                                  ("regverify", regverify_cmd(empty.host, c)))}
        fixed = {name: _median([r.cpu for r in runs]) for name, runs in idle.items()}
        fixed_wall = {name: _median([r.wall for r in runs]) for name, runs in idle.items()}
        _pair(server, built, c, 1, "warm-up")  # page cache, descriptor cache, .pyc files
        plain_loop: list[Run] = []
        mine, theirs = _pair(server, built, c, args.rounds, "N", plain_loop)
        wall = _median([r.wall for r in mine]) / _median([r.wall for r in theirs])
        scan_wall = (_median([r.wall for r in mine]) - fixed_wall["regverify"]) / (
            _median([r.wall for r in theirs]) - fixed_wall["minimal"])
        cpu_mine = _median([r.cpu / r.requests for r in mine])
        cpu_theirs = _median([r.cpu / r.requests for r in theirs])
        marginal_mine = _median([(r.cpu - fixed["regverify"]) / r.requests for r in mine])
        marginal_theirs = _median([(r.cpu - fixed["minimal"]) / r.requests for r in theirs])
        reg_mine = _median([r.registry_cpu / r.requests for r in mine])
        reg_theirs = _median([r.registry_cpu / r.requests for r in theirs])
        s = _summary(mine[0])

        head = measure("regverify", regverify_cmd(server.host, c, "--blob-probe", "head+range"),
                       server._proc.pid)
        hs = _summary(head)
        cache = work / "cache"
        first = measure("regverify", regverify_cmd(server.host, c, "--cache-dir", str(cache)),
                        server._proc.pid)
        second = measure("regverify", regverify_cmd(server.host, c, "--cache-dir", str(cache)),
                         server._proc.pid)
        fs, ss = _summary(first), _summary(second)

        cost = asyncio.run(layers(server.host, built.probes, c))

        scale: tuple[Run, Run, Built] | None = None
        if not args.no_scale:
            big, big_built = _registry(work / "4n", 4 * n)
            servers.append(big)
            print(f"registry 4N: {big_built.images} images ({big_built.manifests} manifests, "
                  f"{big_built.blob_pairs} pairs); built in {big_built.seconds:.1f}s", flush=True)
            _pair(big, big_built, c, 1, "4N warm-up")
            big_mine, big_theirs = _pair(big, big_built, c, 1, "4N")
            scale = (big_mine[0], big_theirs[0], big_built)

        print()
        print(f"machine: {os.cpu_count()} CPUs ({_cpu_model()}), Python {sys.version.split()[0]},"
              f" load average {os.getloadavg()[0]:.2f} at the end; {c} requests in flight; "
              f"median of {args.rounds} alternating runs; wall and CPU are whole processes")
        print(f"fixed cost (start-up and an empty catalog): regverify {fixed['regverify']:.2f}s "
              f"CPU / {fixed_wall['regverify']:.2f}s wall, minimal {fixed['minimal']:.2f}s CPU / "
              f"{fixed_wall['minimal']:.2f}s wall")
        for r in (mine, theirs):
            print(f"  {r[0].name:<9} wall {' '.join(f'{x.wall:.2f}' for x in r)} s; CPU "
                  f"{' '.join(f'{x.cpu:.2f}' for x in r)} s; {r[0].requests} requests; "
                  f"registry CPU {_median([x.registry_cpu for x in r]):.2f} s")
        print()
        ok1 = wall <= 1.25 and cpu_mine / cpu_theirs <= 2.0
        print(f"target 1 client efficiency: wall {wall:.2f}x (regverify "
              f"{_median([r.wall for r in mine]):.2f}s / minimal "
              f"{_median([r.wall for r in theirs]):.2f}s; target <= 1.25x; after the fixed "
              f"start-up {scan_wall:.2f}x); CPU per request "
              f"{cpu_mine / cpu_theirs:.2f}x ({cpu_mine * 1e3:.3f} / {cpu_theirs * 1e3:.3f} ms; "
              f"target <= 2x), after the fixed start-up cost "
              f"{marginal_mine / marginal_theirs:.2f}x ({marginal_mine * 1e3:.3f} / "
              f"{marginal_theirs * 1e3:.3f} ms); registry CPU per request "
              f"{reg_mine * 1e3:.2f} / {reg_theirs * 1e3:.2f} ms -> "
              f"{'MET' if ok1 else 'NOT MET'}")
        plain_cpu = _median([r.cpu for r in plain_loop]) / plain_loop[0].requests
        plain_marginal = (_median([r.cpu for r in plain_loop]) - fixed["regverify"]) \
            / plain_loop[0].requests
        print(f"  regverify on asyncio's own loop (REGVERIFY_EVENT_LOOP=asyncio): wall "
              f"{_median([r.wall for r in plain_loop]) / _median([r.wall for r in theirs]):.2f}x,"
              f" CPU per request {plain_cpu / cpu_theirs:.2f}x, after the fixed start-up "
              f"{plain_marginal / marginal_theirs:.2f}x")
        print(f"  where a request's CPU goes (ranged GETs of {len(built.probes)} blobs, "
              "in-process on asyncio's loop, median of 3): " + ", ".join(
                  f"{name} {us:.0f} us" for name, us in cost.items()))
        per_blob, per_manifest = s["blob_requests"] / s["blobs"], \
            s["manifest_requests"] / s["manifests"]
        print(f"target 2 registry cost: {per_blob:.2f} requests per blob ({s['blob_requests']} "
              f"blob requests / {s['blobs']} blobs; --blob-probe head+range: "
              f"{hs['blob_requests'] / hs['blobs']:.2f}), {per_manifest:.2f} requests per "
              f"manifest ({s['manifest_requests']} / {s['manifests']}); "
              f"{s['requests'] / s['images']:.2f} requests per image in all ({s['requests']} / "
              f"{s['images']}; head+range {hs['requests'] / hs['images']:.2f}); registry CPU "
              f"{_median([r.registry_cpu for r in mine]):.2f}s vs head+range "
              f"{head.registry_cpu:.2f}s")
        cached = ss.get("manifests_cached", 0)
        same = broken_of(first.result, server.host) == broken_of(second.result, server.host)
        print(f"target 3 repeat scans (--cache-dir): first scan {fs['requests']} requests "
              f"({fs['manifest_requests']} manifest GETs), second {ss['requests']} requests "
              f"({ss['manifest_requests'] - cached} manifest GETs + {cached} HEADs whose body "
              f"came from the cache); CPU {first.cpu:.2f}s -> {second.cpu:.2f}s, wall "
              f"{first.wall:.2f}s -> {second.wall:.2f}s; same verdicts: {same}; not fewer "
              "requests by design: a known manifest's presence is still asked (GC deletes "
              "index children under a tag)")
        if scale is not None:
            big_mine_run, big_theirs_run, big_built = scale
            rss_n = max(r.maxrss_mib for r in mine)
            rss_4n = big_mine_run.maxrss_mib
            big_cpu = (big_mine_run.cpu / big_mine_run.requests) / (
                big_theirs_run.cpu / big_theirs_run.requests)
            print(f"target 4 scale: peak RSS regverify {rss_n:.1f} MiB at N={built.images} "
                  f"images -> {rss_4n:.1f} MiB at 4N={big_built.images} "
                  f"({rss_4n - rss_n:+.1f} MiB, {rss_4n / rss_n:.2f}x); minimal "
                  f"{max(r.maxrss_mib for r in theirs):.1f} -> "
                  f"{big_theirs_run.maxrss_mib:.1f} MiB; at 4N wall "
                  f"{big_mine_run.wall / big_theirs_run.wall:.2f}x, CPU per request "
                  f"{big_cpu:.2f}x ({big_mine_run.requests} requests)")
        print("target 5 filesystem mode: python bench/fs_scan_bench.py (its own ratio line)")
    finally:
        for srv in servers:
            srv.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
