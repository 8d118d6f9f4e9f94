"""Benchmark `regverify fs scan` against a straightforward walk-and-stat scan.

Builds a synthetic distribution store (default 200,000 layer links across 2,000 repositories),
then, in the same run and on the same (warm) tree, times in fresh subprocesses:

* ``naive``   os.walk over repositories/, read each link, ``os.path.exists`` its blob data;
* ``fs-scan`` verifier.storage.scan with only the same two checks (orphan layer links,
  dangling revisions) -- plus the tag and link-format checks it always does;
* ``fs-scan-full`` the whole default scan (also parses every manifest for index children).

Each implementation reports the same counts (checked), its wall time, peak RSS
(``getrusage``) and, in a second run, its Python heap peak (``tracemalloc``).

    python bench/fs_scan_bench.py                      # 200k links / 2k repos
    python bench/fs_scan_bench.py --links 20000 --repos 200 --repeat 1
    python bench/fs_scan_bench.py --linearity          # fs-scan at 1/4, 1/2, 1x the size
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


# --- building the store ----------------------------------------------------------------------


def _write(path: str, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def build_store(
    root: Path, *, links: int, repos: int, blobs: int, orphan_share: float, seed: int
) -> dict[str, int]:
    """Write a single-root store; return what it holds (and what a scan must find)."""
    rng = random.Random(seed)
    v2 = root / "docker" / "registry" / "v2"
    blob_root = v2 / "blobs" / "sha256"
    pool: list[str] = []
    for i in range(blobs):
        data = f"layer {seed} {i}".encode()
        hex_ = hashlib.sha256(data).hexdigest()
        _write(f"{blob_root}/{hex_[:2]}/{hex_}/data", data)
        pool.append(hex_)
    # Orphans: a share of the pool loses its data (folder kept, as after a manual delete).
    gone = set(rng.sample(pool, int(len(pool) * orphan_share)))
    for hex_ in gone:
        os.unlink(f"{blob_root}/{hex_[:2]}/{hex_}/data")
    per_repo = links // repos
    expected_orphans = 0
    expected_dangling = 0
    revisions = 0
    for r in range(repos):
        repo = v2 / "repositories" / f"team{r % 50}" / f"app{r}"
        chosen = rng.sample(pool, per_repo)
        for hex_ in chosen:
            _write(f"{repo}/_layers/sha256/{hex_}/link", f"sha256:{hex_}".encode())
        expected_orphans += sum(1 for h in chosen if h in gone)
        # One manifest per 10 layers, each tagged; a few lose their data (dangling).
        for m in range(max(1, per_repo // 10)):
            layers = chosen[m * 10 : m * 10 + 10] or chosen[:1]
            body = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "x", "digest": f"sha256:{layers[0]}", "size": 1},
                    "layers": [
                        {"mediaType": "y", "digest": f"sha256:{h}", "size": 1} for h in layers
                    ],
                },
                separators=(",", ":"),
            ).encode()
            hex_ = hashlib.sha256(body).hexdigest()
            if rng.random() >= orphan_share:
                _write(f"{blob_root}/{hex_[:2]}/{hex_}/data", body)
            else:
                expected_dangling += 1
            _write(f"{repo}/_manifests/revisions/sha256/{hex_}/link", f"sha256:{hex_}".encode())
            _write(f"{repo}/_manifests/tags/t{m}/current/link", f"sha256:{hex_}".encode())
            revisions += 1
    files = sum(len(f) for _, _, f in os.walk(v2))
    return {
        "layer_links": per_repo * repos,
        "repositories": repos,
        "blobs": blobs,
        "revisions": revisions,
        "files": files,
        "expected_orphan_layer_links": expected_orphans,
        "expected_dangling_revisions": expected_dangling,
    }


# --- the two implementations -----------------------------------------------------------------


def naive_scan(root: Path) -> dict[str, int]:
    """The straightforward way: walk everything, read each link, stat its blob's data."""
    from verifier.storage.layout import parse_digest

    v2 = root / "docker" / "registry" / "v2"
    blobs = v2 / "blobs" / "sha256"
    orphans = dangling = 0
    for dirpath, _dirnames, filenames in os.walk(v2 / "repositories"):
        if "link" not in filenames:
            continue
        parts = dirpath.split(os.sep)
        if len(parts) < 3 or parts[-2] != "sha256":
            continue
        kind = parts[-3]
        if kind not in ("_layers", "revisions"):
            continue
        with open(os.path.join(dirpath, "link"), "rb") as fh:
            digest = parse_digest(fh.read().decode("ascii", "replace"))
        if digest is None:
            continue
        hex_ = digest[7:]
        if not os.path.exists(blobs / hex_[:2] / hex_ / "data"):
            if kind == "_layers":
                orphans += 1
            else:
                dangling += 1
    return {"orphan_layer_links": orphans, "dangling_revisions": dangling}


def fs_scan(root: Path, *, full: bool) -> dict[str, int]:
    """verifier.storage.scan, as `regverify fs scan` runs it."""
    from verifier.model.findings import Kind
    from verifier.storage.layout import detect_layout
    from verifier.storage.records import StorageScanOptions
    from verifier.storage.scan import scan_storage

    result = scan_storage(detect_layout(root), StorageScanOptions(index_children=full))
    kinds = [f.kind for f in result.report.findings]
    return {
        "orphan_layer_links": kinds.count(Kind.ORPHAN_LAYER_LINK),
        "dangling_revisions": kinds.count(Kind.DANGLING_REVISION),
    }


IMPLEMENTATIONS = ("naive", "fs-scan", "fs-scan-full")


def run_one(name: str, root: Path, memory: bool) -> dict[str, Any]:
    """Run one implementation in this process; print its result as JSON."""
    if memory:
        tracemalloc.start()
    t0 = time.perf_counter()
    if name == "naive":
        counts = naive_scan(root)
    else:
        counts = fs_scan(root, full=name == "fs-scan-full")
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"name": name, "seconds": seconds, **counts}
    out["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if memory:
        out["heap_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out


def in_subprocess(name: str, root: Path, memory: bool) -> dict[str, Any]:
    """A fresh interpreter per run, so peak RSS belongs to that implementation alone."""
    cmd = [sys.executable, __file__, "--run", name, "--store", str(root)]
    if memory:
        cmd.append("--memory")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def baseline_rss() -> float:
    """Peak RSS of an interpreter that only imports the scanner (subtracted for context)."""
    code = (
        "import resource, verifier.storage.scan;"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return float(proc.stdout)


def compare(root: Path, repeat: int) -> dict[str, dict[str, Any]]:
    """Best-of-`repeat` timings (alternating order) plus one tracemalloc run each."""
    for name in IMPLEMENTATIONS:  # warm the page cache for everyone alike
        in_subprocess(name, root, memory=False)
    best: dict[str, dict[str, Any]] = {}
    for i in range(repeat):
        order = IMPLEMENTATIONS if i % 2 == 0 else tuple(reversed(IMPLEMENTATIONS))
        for name in order:
            r = in_subprocess(name, root, memory=False)
            if name not in best or r["seconds"] < best[name]["seconds"]:
                best[name] = r
    for name in IMPLEMENTATIONS:
        best[name]["heap_peak_mib"] = in_subprocess(name, root, memory=True)["heap_peak_mib"]
    return best


def main() -> int:
    """Build, compare, print."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--links", type=int, default=200_000, help="layer links in total")
    p.add_argument("--repos", type=int, default=2_000, help="repositories")
    p.add_argument("--blobs", type=int, default=None, help="distinct blobs (default links/4)")
    p.add_argument("--orphan-share", type=float, default=0.01, help="share of blobs made gone")
    p.add_argument("--repeat", type=int, default=3, help="timing runs per implementation")
    p.add_argument("--workdir", type=Path, default=None, help="build the store here")
    p.add_argument("--keep", action="store_true", help="keep the store afterwards")
    p.add_argument("--linearity", action="store_true", help="also time fs-scan at 1/4 and 1/2")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--run", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    p.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.run:
        print(json.dumps(run_one(args.run, args.store, args.memory)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="fs-scan-bench-", dir=args.workdir))
    try:
        sizes = [args.links]
        if args.linearity:
            sizes = [args.links // 4, args.links // 2, args.links]
        rows: list[tuple[int, dict[str, Any], dict[str, dict[str, Any]]]] = []
        for links in sizes:
            repos = max(1, args.repos * links // args.links)
            blobs = args.blobs if args.blobs is not None else max(1, links // 4)
            root = work / f"store-{links}"
            t0 = time.perf_counter()
            built = build_store(
                root,
                links=links,
                repos=repos,
                blobs=blobs,
                orphan_share=args.orphan_share,
                seed=args.seed,
            )
            print(
                f"built {built['layer_links']:,} layer links, {built['revisions']:,} revisions, "
                f"{built['blobs']:,} blobs in {built['repositories']:,} repositories "
                f"({built['files']:,} files) in {time.perf_counter() - t0:.1f}s",
                flush=True,
            )
            results = compare(root, args.repeat)
            for name, r in results.items():
                assert r["orphan_layer_links"] == built["expected_orphan_layer_links"], (name, r)
                assert r["dangling_revisions"] == built["expected_dangling_revisions"], (name, r)
            rows.append((links, built, results))
            shutil.rmtree(root) if not args.keep else None

        base_rss = baseline_rss()
        print(
            f"\nPython {sys.version.split()[0]}, {os.cpu_count()} CPUs; best of {args.repeat}; "
            f"warm page cache; interpreter+imports baseline RSS {base_rss:.1f} MiB"
        )
        header = (
            f"{'layer links':>11}  {'implementation':<14} {'seconds':>8} {'per file':>9} "
            f"{'peak RSS':>9} {'heap peak':>10}  found (orphan links / dangling revisions)"
        )
        print(header)
        for links, built, results in rows:
            for name in IMPLEMENTATIONS:
                r = results[name]
                print(
                    f"{links:>11,}  {name:<14} {r['seconds']:>8.2f} "
                    f"{r['seconds'] / built['files'] * 1e6:>7.2f}µs "
                    f"{r['maxrss_mib']:>7.1f}Mi {r['heap_peak_mib']:>8.1f}Mi  "
                    f"{r['orphan_layer_links']:,} / {r['dangling_revisions']:,}"
                )
        links, built, results = rows[-1]
        naive, ours, full = (results[n] for n in IMPLEMENTATIONS)
        print(
            f"\nratio naive / fs-scan (same two checks): {naive['seconds'] / ours['seconds']:.2f}x"
            f"\nratio naive / fs-scan-full (all checks): {naive['seconds'] / full['seconds']:.2f}x"
            f"\npeak RSS  naive {naive['maxrss_mib']:.1f} MiB, fs-scan {ours['maxrss_mib']:.1f} "
            f"MiB, fs-scan-full {full['maxrss_mib']:.1f} MiB"
            f"\nheap peak naive {naive['heap_peak_mib']:.1f} MiB, fs-scan "
            f"{ours['heap_peak_mib']:.1f} MiB, fs-scan-full {full['heap_peak_mib']:.1f} MiB"
        )
        if len(rows) > 1:
            per = [r[2]["fs-scan"]["seconds"] / r[1]["files"] * 1e6 for r in rows]
            print("fs-scan cost per file at 1/4, 1/2, 1x: " + ", ".join(f"{x:.2f}µs" for x in per))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"store kept in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
