"""`make demo`: a throwaway registry on 127.0.0.1, a few images, the real incident, regverify.

Starts distribution (Debian's docker-registry) with a temporary storage root, pushes images
through the HTTP API, runs `garbage-collect --delete-untagged` on a registry holding a tagged
multi-platform index (distribution#3324 class), deletes one layer's data file, and shows
`regverify` catching both while skopeo, the reference client, fails to pull the same images.
Everything it starts it stops; nothing outside the temporary folder is touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.images import push_image, push_index  # noqa
from tests.support.registry import RegistryServer, blob_data_path  # noqa
from tests.support.skopeo import skopeo_copy_all  # noqa


def _bold(text: str) -> str:
    # Escape codes only for a terminal: a log file or a pipe gets plain text.
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        return f"\033[1m{text}\033[0m"
    return text


def step(text: str) -> None:
    """Print a demo step heading."""
    print("\n" + _bold(f"==> {text}"), flush=True)


def regverify(*args: str) -> int:
    """Run the real CLI, show its output and its exit code."""
    print("$ regverify " + " ".join(args), flush=True)
    code = subprocess.run([sys.executable, "-m", "verifier", *args], check=False).returncode
    print(f"(exit {code})", flush=True)
    return code


def main() -> int:
    """Run the demo; exit 0 when regverify caught exactly what skopeo could not pull."""
    work = Path(tempfile.mkdtemp(prefix="regverify-demo-"))
    try:
        with RegistryServer(workdir=work / "registry") as registry:
            host = registry.host
            step(f"registry started on {host}, storage in {registry.root}")
            push_image(registry, "team/api", "1.0")
            push_image(registry, "team/web", "2.3", oci=False)
            push_index(registry, "infra/ci", "latest")
            print("pushed team/api:1.0 (OCI), team/web:2.3 (Docker v2), "
                  "infra/ci:latest (multi-platform OCI index with attestations)")

            step("before any fault: every image verifies clean (exit 0)")
            api = push_image(registry, "team/api", "1.1")
            codes = [regverify("image", f"{host}/{ref}", "--plain-http")
                     for ref in ("team/api:1.0", "team/api:1.1", "team/web:2.3",
                                 "infra/ci:latest")]

            step("fault 1: `garbage-collect --delete-untagged` on a registry holding a tagged "
                 "multi-platform index; it deletes the index's child manifests, the tag stays")
            registry.garbage_collect(delete_untagged=True)
            print("verdict on infra/ci:latest (expected: exit 1, manifest_missing per child):")
            broken_index = regverify("image", f"{host}/infra/ci:latest", "--plain-http")

            step("fault 2: delete the data file of one layer of team/api:1.1; its _layers link "
                 "stays and the registry's cache still lists the blob")
            # The GC restarted the registry; one clean pull puts the blob back in its cache,
            # which is the state production is in when a data file goes missing.
            warmed = subprocess.run([sys.executable, "-m", "verifier", "image",
                                     f"{host}/team/api:1.1", "--plain-http"],
                                    capture_output=True, check=False).returncode
            blob_data_path(registry.v2, api.layers[0].digest).unlink()
            print("verdict on team/api:1.1 (expected: exit 1, blob_unreadable; a HEAD still "
                  "answers 200):")
            broken_layer = regverify("image", f"{host}/team/api:1.1", "--plain-http")

            step("skopeo, the reference client, agrees")
            for ref in ("team/web:2.3", "infra/ci:latest", "team/api:1.1"):
                result = skopeo_copy_all(f"{host}/{ref}", work / "pull" / ref.replace("/", "_"))
                last = result.stderr.strip().splitlines()[-1:] or [""]
                print(f"skopeo copy --all {ref}: {'OK' if result.ok else 'FAILED: ' + last[0]}")
            step("the whole registry over HTTP: regverify scan")
            scan = regverify("scan", host, "--plain-http")
            step("the storage on the registry host: regverify fs scan (changes nothing)")
            fs_scan = regverify("fs", "scan", str(registry.root))
        verdicts = [broken_index, broken_layer, scan, fs_scan]
        ok = codes == [0] * 4 and warmed == 0 and verdicts == [1, 1, 1, 1]
        step("demo " + ("passed: regverify caught every breakage" if ok else "FAILED"))
        print("Run it yourself: .venv/bin/regverify --help (or `pip install .` / `pipx install .`"
              " for a regverify on your PATH); docs: README.md and docs/.")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
