"""skopeo, the reference client: what it can copy is pullable."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.registry import HarnessError

# --- skopeo ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkopeoResult:
    """Outcome of one skopeo run."""

    ok: bool
    returncode: int
    stderr: str


_POLICY = '{"default": [{"type": "insecureAcceptAnything"}]}\n'


def skopeo_available() -> bool:
    """Whether a ``skopeo`` binary is on PATH."""
    return shutil.which("skopeo") is not None


def skopeo_copy_all(
    image_ref: str,
    dest_dir: Path,
    *,
    tls_verify: bool = False,
    creds: str | None = None,
    timeout: float = 120,
) -> SkopeoResult:
    """``skopeo copy --all docker://REF dir:DEST``: the reference client's verdict on REF.

    A timeout raises HarnessError rather than counting as a failure, so a hang can never
    pass a test that expects the pull to fail.
    """
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise HarnessError("skopeo is not installed (Debian package 'skopeo')")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="regverify-skopeo-") as tmp:
        # Our own policy and no ambient credentials: the host's containers config must not
        # change the verdict.
        policy = Path(tmp) / "policy.json"
        policy.write_text(_POLICY)
        cmd = [
            skopeo,
            "--policy",
            str(policy),
            "copy",
            "--all",
            "--retry-times",
            "0",
            f"--src-tls-verify={'true' if tls_verify else 'false'}",
        ]
        cmd += ["--src-creds", creds] if creds is not None else ["--src-no-creds"]
        cmd += [f"docker://{image_ref}", f"dir:{dest_dir}"]
        env = dict(os.environ)
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
            env.pop(var, None)
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"skopeo timed out after {timeout}s: {' '.join(cmd)}") from exc
    return SkopeoResult(ok=proc.returncode == 0, returncode=proc.returncode, stderr=proc.stderr)
