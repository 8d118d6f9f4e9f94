"""Benchmark `regverify fs gc-preview --delete-untagged` against the real garbage-collect dry run.

Distribution 2.8's ``garbage-collect --delete-untagged`` calls
``Tags.Lookup`` for every manifest revision, and ``Lookup`` re-reads every tag's
``current/link`` -- quadratic in a repository with thousands of tags. The preview reads each link
once and makes the same prediction in linear time.

The storage (one repository, default 2,000 tags) is built quickly but for real:

* through the registry's API: one template image, a few multi-platform indexes (their untagged
  children are what ``--delete-untagged`` breaks) and a few overwritten tags (untagged
  manifests it legitimately deletes);
* on disk, exactly as distribution writes a push: the remaining tags as distinct manifests
  (the template plus an annotation, so each has its own digest; config and layers shared), each
  with its blob data, revision link, tag ``current/link`` and tag index link.

Then, in the same run, on the same tree, it times

* ``real``     ``docker-registry garbage-collect --dry-run --delete-untagged CONFIG``;
* ``preview``  ``fs gc-preview --delete-untagged --format json`` in a fresh interpreter
  (the whole command, start-up included);

checks that they agree (the manifests and blobs the dry run lists as eligible for deletion are
exactly the preview's), and prints both times and the ratio.

    python bench/gc_preview_bench.py                 # 2,000 tags (the real dry run takes minutes)
    python bench/gc_preview_bench.py --tags 300      # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.images import push_image, push_index, sha256_digest  # noqa
from tests.support.registry import RegistryServer  # noqa

REPO = "bench/app"
_ELIGIBLE = re.compile(r"^(manifest|blob) eligible for deletion: (sha256:[0-9a-f]{64})", re.M)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build(server: RegistryServer, tags: int, indexes: int, overwritten: int) -> dict[str, int]:
    """Push the template, the indexes and the overwritten tags, then clone the rest on disk."""
    template = push_image(server, REPO, "t0000", layers=2)
    for j in range(indexes):
        push_index(server, REPO, f"idx{j:02d}", attestation=True)
    for k in range(overwritten):
        push_image(server, REPO, f"t{k + 1:04d}", layers=1, seed="old")
        push_image(server, REPO, f"t{k + 1:04d}", layers=1, seed="new")
    pushed_tags = 1 + indexes + overwritten
    manifest = json.loads(template.manifest_bytes)
    repo_dir = server.v2 / "repositories" / REPO / "_manifests"
    for i in range(1 + overwritten, tags - indexes):
        manifest["annotations"] = {"org.regverify.bench": str(i)}
        body = json.dumps(manifest, separators=(",", ":")).encode()
        digest = sha256_digest(body)
        hex_ = digest.split(":", 1)[1]
        _write(server.v2 / "blobs" / "sha256" / hex_[:2] / hex_ / "data", body)
        _write(repo_dir / "revisions" / "sha256" / hex_ / "link", digest.encode())
        tag_dir = repo_dir / "tags" / f"t{i:04d}"
        _write(tag_dir / "current" / "link", digest.encode())
        _write(tag_dir / "index" / "sha256" / hex_ / "link", digest.encode())
    revisions = len(list((repo_dir / "revisions" / "sha256").iterdir()))
    return {
        "tags": len(list((repo_dir / "tags").iterdir())),
        "pushed_tags": pushed_tags,
        "revisions": revisions,
    }


def run_preview(store: Path) -> None:
    """The whole command, as a user runs it (verifier.cli.main mounts the same sub-app)."""
    import typer

    from verifier.cli.gc_preview import register

    fs_app = typer.Typer()
    register(fs_app)
    app = typer.Typer()
    app.add_typer(fs_app, name="fs")
    app(["fs", "gc-preview", str(store), "--delete-untagged", "--format", "json"])


def main() -> int:
    """Build, time both, compare, print."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tags", type=int, default=2000, help="tags in the one repository")
    p.add_argument("--indexes", type=int, default=10, help="tagged OCI indexes among them")
    p.add_argument("--overwritten", type=int, default=10, help="tags pushed twice")
    p.add_argument("--keep", type=Path, help="build the storage here and keep it")
    p.add_argument("--timeout", type=float, default=1800, help="for the real dry run (s)")
    p.add_argument("--run-preview", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_preview is not None:
        run_preview(args.run_preview)
        return 0
    work = args.keep or Path(tempfile.mkdtemp(prefix="regverify-gc-bench-"))
    try:
        return bench(work, args)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def bench(work: Path, args: argparse.Namespace) -> int:
    """The measured part."""
    server = RegistryServer(workdir=work)
    t0 = time.monotonic()
    server.start()
    try:
        built = build(server, args.tags, args.indexes, args.overwritten)
    finally:
        server.stop()
    print(
        f"storage: 1 repository, {built['tags']} tags, {built['revisions']} manifest revisions "
        f"({built['pushed_tags']} tags pushed through the registry, the rest cloned on disk) "
        f"in {time.monotonic() - t0:.1f}s: {server.root}"
    )

    t0 = time.perf_counter()
    real = server.garbage_collect(delete_untagged=True, dry_run=True, timeout=args.timeout)
    real_s = time.perf_counter() - t0
    if real.returncode != 0:
        print(f"real garbage-collect failed ({real.returncode}):\n{real.stdout[-2000:]}")
        return 1
    eligible: dict[str, set[str]] = {"manifest": set(), "blob": set()}
    for kind, digest in _ELIGIBLE.findall(real.stdout):
        eligible[kind].add(digest)

    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--run-preview", str(server.root)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    preview_s = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        print(f"gc-preview exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        return 1
    doc: dict[str, Any] = json.loads(proc.stdout)

    # The JSON lists every manifest and blob it predicts deleted: compare those.
    predicted = doc["gc_preview"]["registries"][0]
    predicted_manifests = {m["digest"] for m in predicted["deleted_manifests"]}
    predicted_blobs = {b["digest"] for b in predicted["deleted_blobs"]}
    agree = predicted_manifests == eligible["manifest"] and predicted_blobs == eligible["blob"]
    summary = doc["summary"]
    print(
        f"real    garbage-collect --dry-run --delete-untagged: {real_s:8.2f}s  "
        f"({len(eligible['manifest'])} manifests, {len(eligible['blob'])} blobs eligible)"
    )
    print(
        f"preview fs gc-preview --delete-untagged (new process): {preview_s:6.2f}s  "
        f"({summary['manifests_deleted']} manifests, {summary['blobs_deleted']} blobs; "
        f"{summary['tags_breaking']} of {summary['tags']} tags would break, exit "
        f"{proc.returncode})"
    )
    print(f"ratio real/preview: {real_s / preview_s:.1f}x")
    print(f"same prediction as the real dry run: {'yes' if agree else 'NO'}")
    if not agree:
        for name, got, want in (
            ("manifests", predicted_manifests, eligible["manifest"]),
            ("blobs", predicted_blobs, eligible["blob"]),
        ):
            print(
                f"  {name}: only predicted {sorted(got - want)[:5]}, only real "
                f"{sorted(want - got)[:5]}"
            )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
