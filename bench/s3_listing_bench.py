"""Benchmark listing a registry's bucket: one sequential walk against per-prefix parallel walks.

Starts ``moto_server`` on 127.0.0.1 (tests/support/s3.py's `MotoS3`), fills a bucket with
distribution's layout below a ``rootdirectory`` prefix (blob ``data`` objects spread over the
256 ``blobs/sha256/<xx>/`` folders, plus layer links, revision links and tags under a few hundred
repositories, some nested in namespaces), then measures in one run, alternating the order:

* ``sequential`` -- the simplest correct listing: one paginated ListObjectsV2 walk of the whole
  root prefix (`S3Backend.walk("")`);
* ``parallel``   -- `verifier.storage.parallel`: the 256 blob folders and one folder per
  top-level repository name, each walked (paginated) by a bounded pool of `--workers` threads.

Both count their requests with a botocore ``before-send`` hook and must return exactly the same
set of keys (the bench exits 1 otherwise). Medians over `--rounds`, and ratios parallel/sequential.

    python bench/s3_listing_bench.py                           # 100,000 objects, 16 workers
    python bench/s3_listing_bench.py --objects 20000 --rounds 1 --workers 8
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import boto3  # noqa: E402

from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3  # noqa: E402
from verifier.storage.parallel import registry_prefixes, walk_parallel  # noqa: E402
from verifier.storage.s3backend import S3Backend  # noqa: E402

ROOTDIR = "regverify/bench"
V2 = f"{ROOTDIR}/docker/registry/v2"


def _hex(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def layout_keys(objects: int, repos: int) -> list[str]:
    """`objects` keys in distribution's layout: 60% blob data, the rest links under `repos`."""
    blobs = [_hex("blob", i) for i in range(objects * 6 // 10)]
    keys = [f"{V2}/blobs/sha256/{h[:2]}/{h}/data" for h in blobs]
    # Two thirds of the repositories live in 20 namespaces (team07/app123), the rest at top level.
    names = [f"team{i % 20:02d}/app{i}" if i % 3 else f"app{i}" for i in range(repos)]
    i = 0
    while len(keys) < objects:
        repo = names[i % repos]
        base = f"{V2}/repositories/{repo}"
        kind = (i // repos) % 4
        if kind < 2:  # layer links, most of a repository
            keys.append(f"{base}/_layers/sha256/{blobs[(i * 7919) % len(blobs)]}/link")
        elif kind == 2:
            keys.append(f"{base}/_manifests/revisions/sha256/{_hex('manifest', i)}/link")
        else:
            keys.append(f"{base}/_manifests/tags/v{i}/current/link")
        i += 1
    return keys


def fill(moto: MotoS3, bucket: str, keys: list[str], concurrency: int) -> float:
    """PUT every key (a small body), `concurrency` at a time; the seconds it took.

    Plain unsigned path-style PUTs on aiohttp (moto checks no signature): set-up only, and on
    two shared cores the client's CPU would otherwise compete with moto's.
    """

    async def run() -> None:
        started = time.perf_counter()
        done = 0
        sem = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def put(key: str) -> None:
                nonlocal done
                async with sem:
                    body = b"sha256:" + key[-69:-5].encode()
                    async with session.put(f"{moto.url}/{bucket}/{key}", data=body) as resp:
                        if resp.status != 200:
                            raise RuntimeError(f"PUT {key}: HTTP {resp.status}")
                done += 1
                if done % 10000 == 0:
                    print(f"  filled {done}/{len(keys)} "
                          f"({time.perf_counter() - started:.0f}s)", flush=True)

            await asyncio.gather(*(put(k) for k in keys))

    started = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - started


def backend(moto: MotoS3, bucket: str, workers: int) -> tuple[S3Backend, Callable[[], int]]:
    """A fresh backend and a counter of the requests it sent."""
    s3 = S3Backend(f"s3://{bucket}/{ROOTDIR}", endpoint_url=moto.url, path_style=True,
                   workers=workers, read_timeout=300.0)
    sent = [0]
    lock = threading.Lock()

    def count(**_: Any) -> None:
        with lock:
            sent[0] += 1

    s3.client.meta.events.register("before-send.s3", count)
    return s3, lambda: sent[0]


def sequential(moto: MotoS3, bucket: str, workers: int) -> tuple[float, int, set[str]]:
    """One paginated walk of the whole root prefix: (seconds, requests, keys)."""
    s3, requests = backend(moto, bucket, workers)
    started = time.perf_counter()
    keys = {o.path for o in s3.walk("")}
    return time.perf_counter() - started, requests(), keys


def parallel(moto: MotoS3, bucket: str, workers: int) -> tuple[float, int, set[str]]:
    """The per-prefix walks on a pool of `workers`: (seconds, requests, keys)."""
    s3, requests = backend(moto, bucket, workers)
    started = time.perf_counter()
    keys: set[str] = set()
    for _prefix, objects in walk_parallel(s3, registry_prefixes(s3), workers=workers):
        keys.update(o.path for o in objects)
    return time.perf_counter() - started, requests(), keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--repos", type=int, default=300)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--fill-concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for name in [n for n in os.environ if n.startswith("AWS_") or n.lower().endswith("_proxy")]:
        del os.environ[name]  # only moto's keys, only loopback
    os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                       "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"})

    keys = layout_keys(args.objects, args.repos)
    with tempfile.TemporaryDirectory(prefix="regverify-s3bench-") as tmp, \
            MotoS3(Path(tmp)) as moto:
        bucket = moto.new_bucket()
        print(f"filling {len(keys)} objects ({sum('/blobs/' in k for k in keys)} blob data, "
              f"the rest links under {args.repos} repositories) into {moto.url} ...", flush=True)
        fill_s = fill(moto, bucket, keys, args.fill_concurrency)
        print(f"filled in {fill_s:.1f}s ({len(keys) / fill_s:.0f} puts/s)", flush=True)
        expected = {k[len(ROOTDIR) + 1:] for k in keys}

        results: dict[str, list[tuple[float, int]]] = {"sequential": [], "parallel": []}
        runs = {"sequential": sequential, "parallel": parallel}
        for r in range(args.rounds):
            order = ["sequential", "parallel"] if r % 2 == 0 else ["parallel", "sequential"]
            for name in order:
                seconds, requests, got = runs[name](moto, bucket, args.workers)
                if got != expected:
                    print(f"MISMATCH: {name} listed {len(got)} keys, expected {len(expected)}; "
                          f"missing {len(expected - got)}, extra {len(got - expected)}")
                    return 1
                results[name].append((seconds, requests))
                print(f"  round {r + 1} {name:10s} {seconds:7.2f}s {requests:5d} requests "
                      f"{len(got)} keys", flush=True)

    med = {n: (statistics.median(s for s, _ in v), statistics.median(q for _, q in v))
           for n, v in results.items()}
    (a_s, a_q), (b_s, b_q) = med["sequential"], med["parallel"]
    print()
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"boto3 {boto3.__version__}, load average {os.getloadavg()[0]:.2f} at the end")
    print(f"{len(keys)} objects, {args.workers} workers, median of {args.rounds} rounds; "
          "both listings returned exactly the same keys")
    print(f"  (a) sequential walk      {a_s:7.2f}s {a_q:6.0f} requests")
    print(f"  (b) parallel per-prefix  {b_s:7.2f}s {b_q:6.0f} requests")
    print(f"  ratio b/a: time {b_s / a_s:.2f}x, requests {b_q / a_q:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
