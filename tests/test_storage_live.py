"""fs fix next to a live registry: pushes and re-pushes while fixes run lose nothing.

A pusher thread damages images (deletes their layer data, leaving orphan layer links), re-pushes
them with skopeo (which re-uploads the blobs and rewrites the links) and pushes new images,
while the main thread runs `fs fix` again and again on the same storage. Afterwards, against a
restarted registry, skopeo must pull every image whose last push succeeded.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.images import PushedImage, push_image
from tests.support.registry import RegistryServer, blob_data_path
from tests.support.skopeo import skopeo_copy_all
from verifier.model.findings import Kind
from verifier.storage.layout import detect_layout
from verifier.storage.repair import FixOptions, fix_storage
from verifier.storage.scan import scan_storage

DAMAGED = 4
ROUNDS = 3
POLICY = '{"default": [{"type": "insecureAcceptAnything"}]}\n'


def skopeo_push(src_dir: Path, ref: str) -> bool:
    """``skopeo copy dir:SRC docker://REF``: True when the push succeeded."""
    with tempfile.TemporaryDirectory(prefix="regverify-skopeo-") as tmp:
        policy = Path(tmp) / "policy.json"
        policy.write_text(POLICY)
        proc = subprocess.run(
            [
                "skopeo", "--policy", str(policy), "copy", "--retry-times", "0",
                "--dest-tls-verify=false", "--dest-no-creds", f"dir:{src_dir}", f"docker://{ref}",
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    return proc.returncode == 0


@pytest.mark.registry
@pytest.mark.skopeo
def test_pushes_during_repeated_fixes_lose_nothing(registry_bin: str, tmp_path: Path) -> None:
    # No blob cache: a re-push then really re-uploads data the test deleted (with the cache on,
    # the registry would answer from memory and the push would skip the blob).
    with RegistryServer(
        workdir=tmp_path / "registry", registry_bin=registry_bin, blobdescriptor_cache=False
    ) as registry:
        for i in range(20):
            push_image(registry, "lib/base", f"v{i}")
        damaged: list[tuple[PushedImage, Path]] = []
        for i in range(DAMAGED):
            pushed = push_image(registry, f"app/d{i}", "v1")
            saved = tmp_path / f"saved{i}"
            assert skopeo_copy_all(f"{registry.host}/app/d{i}:v1", saved).ok
            damaged.append((pushed, saved))

        last_push_ok: dict[str, bool] = {}
        done = threading.Event()
        errors: list[BaseException] = []

        def pusher() -> None:
            try:
                for r in range(ROUNDS):
                    for i, (pushed, saved) in enumerate(damaged):
                        for layer in pushed.layers:  # production damage: the data goes
                            blob_data_path(registry.v2, layer.digest).unlink(missing_ok=True)
                        ref = f"{registry.host}/app/d{i}:v1"
                        last_push_ok[ref] = skopeo_push(saved, ref)
                    new = push_image(registry, f"app/new{r}", "v1")
                    last_push_ok[f"{registry.host}/app/new{r}:v1"] = bool(new.digest)
            except BaseException as exc:  # surfaced by the main thread
                errors.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=pusher)
        thread.start()
        fixes = 0
        quarantined = put_back = skipped = 0
        try:
            while not done.is_set() or fixes < 2:
                started = datetime.now(UTC)
                report = fix_storage(
                    detect_layout(registry.root),
                    None,
                    FixOptions(quarantine=tmp_path / "q", force=True),
                    started=started,
                )
                fixes += 1
                quarantined += report.counters["quarantined"]
                skipped += report.counters["skipped"]
                put_back += sum(
                    1
                    for f in report.findings
                    if "during the move" in str(f.details.get("skipped", ""))
                )
        finally:
            thread.join()
        assert not errors, errors
        assert quarantined > 0, "the fixes never had anything to do: the test proved nothing"
        assert all(last_push_ok.values()), last_push_ok

        # one more fix with nothing running, then judge with a cold registry
        fix_storage(
            detect_layout(registry.root), None, FixOptions(quarantine=tmp_path / "q", force=True)
        )
        registry.restart()
        for n, ref in enumerate(sorted(last_push_ok)):
            result = skopeo_copy_all(ref, tmp_path / f"pull{n}")
            assert result.ok, f"{ref} unpullable after {fixes} fixes: {result.stderr}"
        final = scan_storage(detect_layout(registry.root)).report
        assert not [
            f
            for f in final.defects
            if f.kind in (Kind.ORPHAN_LAYER_LINK, Kind.IMAGE_BLOB_MISSING, Kind.LAYER_LINK_MISSING)
        ], [f.message for f in final.defects]
    shutil.rmtree(tmp_path / "q", ignore_errors=True)
