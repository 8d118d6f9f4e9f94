"""gc-preview against the real ``garbage-collect``, on seeded random damaged stores.

Each seed builds a store by pushing to the real registry (single images, layers shared across
repositories, OCI indexes with attestations, Docker manifest lists, an index child also tagged,
untagged manifests), damages it the way production stores get damaged (tag folders removed,
child revision links removed, ``_layers`` folders or single layer links removed, blob data
removed, now and then a whole ``_manifests/tags`` folder), then for plain and
``--delete-untagged`` GC:

* predicts with ``fs gc-preview`` (its JSON: every blob it predicts deleted);
* runs the real ``docker-registry garbage-collect`` on a copy of the storage;
* holds the prediction to the real run: the blobs that disappeared, the revision links removed,
  whether the real run stopped, and every tag's pullability before and after as ``skopeo copy
  --all`` (the reference client) sees it against a registry started on the original and on the
  collected copy.

A few seeds run in the suite; ``bench/gc_soak.py`` runs hundreds with the same code.
"""

from __future__ import annotations

import random
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.images import make_layer, push_image, push_index, push_manifest_raw
from tests.support.registry import RegistryServer
from tests.support.skopeo import skopeo_copy_all
from verifier.storage.gc_preview import GcOptions, GcVersion, preview_storage
from verifier.storage.layout import detect_layout

Tag = tuple[str, str]

REPOSITORIES = ("app", "lib/base", "team/tool")


@dataclass
class Built:
    """What one seed pushed and what it then damaged."""

    seed: int
    tags: set[Tag] = field(default_factory=set)
    damage: list[str] = field(default_factory=list)
    #: (repository, digest) of every index child, the usual victims of a lost revision link
    children: list[tuple[str, str]] = field(default_factory=list)
    #: what the real runs did, summed (so a soak shows it exercised something)
    stats: Counter[str] = field(default_factory=Counter)


def build_store(server: RegistryServer, seed: int) -> Built:
    """Push a random mix of content for `seed` (the server must be running)."""
    rng = random.Random(seed)
    built = Built(seed)
    shared = [make_layer("shared", str(seed), str(i)) for i in range(2)]
    repos = rng.sample(REPOSITORIES, rng.randint(1, len(REPOSITORIES)))
    for repo in repos:
        for n in range(rng.randint(1, 4)):
            tag = f"t{n}"
            kind = rng.choice(("single", "single", "shared", "oci", "docker", "child", "untagged"))
            s = f"{seed}-{repo}-{n}"
            if kind == "single":
                push_image(server, repo, tag, layers=rng.randint(1, 2), seed=s)
            elif kind == "shared":
                own = make_layer("own", s)
                push_image(server, repo, tag, layers=[rng.choice(shared), own], seed=s)
            elif kind in ("oci", "docker", "child"):
                index = push_index(
                    server, repo, tag, oci=kind != "docker", attestation=kind == "oci", seed=s
                )
                built.children.extend((repo, m.digest) for m in index.manifests)
                if kind == "child":
                    child = rng.choice(index.children)
                    push_manifest_raw(
                        server, repo, f"{tag}-child", child.manifest_bytes, child.media_type
                    )
                    built.tags.add((repo, f"{tag}-child"))
            else:  # an overwritten tag leaves an untagged manifest behind
                push_image(server, repo, tag, layers=1, seed=s + "-old")
                push_image(server, repo, tag, layers=1, seed=s)
            built.tags.add((repo, tag))
    return built


def _dirs(path: Path, pattern: str) -> list[Path]:
    return sorted(p for p in path.glob(pattern) if p.is_dir())


def damage_store(v2: Path, built: Built) -> None:
    """Damage the store the way production stores get damaged, seeded like the build."""
    rng = random.Random(built.seed * 7919 + 1)
    repos = v2 / "repositories"

    def pick(paths: list[Path], what: str) -> None:
        if paths:
            victim = rng.choice(paths)
            built.damage.append(f"{what}: {victim.relative_to(v2)}")
            if victim.is_dir():
                shutil.rmtree(victim)
            else:
                victim.unlink()

    for _ in range(rng.randint(1, 3)):
        action = rng.choice(
            ("tag", "tag", "child-link", "layers-dir", "layer-link", "blob-data", "tags-dir")
        )
        if action == "tag":
            pick(_dirs(repos, "**/_manifests/tags/*"), "tag folder removed")
        elif action == "child-link":
            children = [
                repos / repo / "_manifests" / "revisions" / "sha256" / d.split(":", 1)[1]
                for repo, d in built.children
            ]
            existing = [p for p in children if p.is_dir()]
            anywhere = _dirs(repos, "**/_manifests/revisions/sha256/*")
            pick(existing or anywhere, "revision link removed")
        elif action == "layers-dir":
            pick(_dirs(repos, "**/_layers"), "_layers folder removed")
        elif action == "layer-link":
            pick(_dirs(repos, "**/_layers/sha256/*"), "layer link removed")
        elif action == "blob-data":
            pick(sorted((v2 / "blobs").glob("sha256/*/*/data")), "blob data removed")
        elif rng.random() < 0.3:
            pick(_dirs(repos, "**/_manifests/tags"), "tags folder removed")


@dataclass(frozen=True)
class Tree:
    """What garbage-collect can delete, read straight from a storage tree."""

    blobs: frozenset[str]
    revisions: frozenset[tuple[str, str]]


def read_tree(v2: Path) -> Tree:
    """Every blob digest with data (any algorithm) and every revision link."""
    blobs = frozenset(
        f"{p.parent.parent.parent.name}:{p.parent.name}" for p in (v2 / "blobs").glob("*/*/*/data")
    )
    repos = v2 / "repositories"
    revisions = set()
    for link in repos.rglob("_manifests/revisions/*/*/link"):
        parts = link.relative_to(repos).parts
        revisions.add(("/".join(parts[:-5]), f"{parts[-3]}:{parts[-2]}"))
    return Tree(blobs, frozenset(revisions))


def pullable(server: RegistryServer, tags: Iterable[Tag], scratch: Path) -> dict[Tag, bool]:
    """``skopeo copy --all`` of each tag, a few at a time: tag → whether it succeeded."""

    def one(tag: Tag) -> bool:
        dest = scratch / uuid.uuid4().hex
        try:
            return skopeo_copy_all(f"{server.host}/{tag[0]}:{tag[1]}", dest).ok
        finally:
            shutil.rmtree(dest, ignore_errors=True)

    tags = sorted(tags)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(tags, pool.map(one, tags), strict=True))


@dataclass
class Prediction:
    """What gc-preview said, in the terms a real run can be judged by."""

    stops: bool
    blobs: set[str]
    revisions: set[tuple[str, str]]
    breaking: set[Tag]
    sizes: dict[str, int]


def predict(root: Path, delete_untagged: bool) -> Prediction:
    """Run the preview and read its JSON, as a user comparing with a real run would."""
    report = preview_storage(detect_layout(root), GcOptions(GcVersion.V2_8, delete_untagged))
    doc: dict[str, Any] = report.extra["gc_preview"]["registries"][0]
    return Prediction(
        stops=doc["gc_would_stop"] is not None,
        blobs={b["digest"] for b in doc["deleted_blobs"]},
        revisions={(m["repository"], m["digest"]) for m in doc["deleted_manifests"]},
        breaking={
            (f.repository, f.reference) for f in report.findings if f.kind == "gc_would_break"
        },
        sizes={b["digest"]: b["size"] for b in doc["deleted_blobs"]},
    )


@dataclass
class Mismatch:
    """One way a prediction differed from the real run."""

    seed: int
    mode: str
    what: str
    predicted: Any
    real: Any

    def __str__(self) -> str:
        head = f"seed {self.seed} {self.mode}: {self.what}"
        return f"{head}: predicted {self.predicted}, real {self.real}"


def run_seed(
    seed: int, work: Path, registry_bin: str | None = None
) -> tuple[Built, list[Mismatch]]:
    """Build, damage, predict, collect for real and compare; every server is stopped."""
    server = RegistryServer(workdir=work / "build", registry_bin=registry_bin)
    server.start()
    try:
        built = build_store(server, seed)
    finally:
        server.stop()
    damage_store(server.v2, built)
    tags = built.tags
    before_server = RegistryServer(workdir=work / "before", registry_bin=server.bin)
    shutil.copytree(server.root, before_server.root, symlinks=True, dirs_exist_ok=True)
    before_server.start()
    try:
        before = pullable(before_server, tags, work / "skopeo")
    finally:
        before_server.stop()
    tree_before = read_tree(server.v2)
    mismatches: list[Mismatch] = []
    for delete_untagged in (False, True):
        mode = "delete-untagged" if delete_untagged else "plain"
        predicted = predict(server.root, delete_untagged)
        copy = RegistryServer(workdir=work / mode, registry_bin=server.bin)
        shutil.copytree(server.root, copy.root, symlinks=True, dirs_exist_ok=True)
        run = copy.garbage_collect(delete_untagged=delete_untagged)
        stopped = run.returncode != 0
        tree_after = read_tree(copy.v2)

        def check(what: str, want: Any, got: Any, mode: str = mode) -> None:
            if want != got:
                mismatches.append(Mismatch(seed, mode, what, want, got))

        check("real run stopped", predicted.stops, stopped)
        check("blobs deleted", predicted.blobs, set(tree_before.blobs - tree_after.blobs))
        check(
            "revision links deleted",
            predicted.revisions,
            set(tree_before.revisions - tree_after.revisions),
        )
        for digest, size in predicted.sizes.items():
            algo, hex_ = digest.split(":", 1)
            data = server.v2 / "blobs" / algo / hex_[:2] / hex_ / "data"
            check(f"size of {digest}", size, data.stat().st_size)
        copy.start()
        try:
            after = pullable(copy, tags, work / "skopeo")
        finally:
            copy.stop()
        real_breaking = {t for t in tags if before[t] and not after[t]}
        check("tags broken", predicted.breaking, real_breaking)
        built.stats[f"{mode}: blobs deleted"] += len(tree_before.blobs - tree_after.blobs)
        built.stats[f"{mode}: tags broken"] += len(real_breaking)
        built.stats[f"{mode}: runs stopped"] += stopped
    return built, mismatches


# A few seeds per run; bench/gc_soak.py runs hundreds with the same code.
SUITE_SEEDS = (1, 2, 3, 5, 8, 13, 21, 34)


@pytest.mark.registry
@pytest.mark.skopeo
@pytest.mark.parametrize("seed", SUITE_SEEDS)
def test_prediction_equals_real_garbage_collect(
    seed: int, tmp_path: Path, registry_bin: str
) -> None:
    built, mismatches = run_seed(seed, tmp_path, registry_bin)
    assert not mismatches, "\n".join([*map(str, mismatches), "damage:", *built.damage])
