"""The real registry under test: find distribution's binary, run it on 127.0.0.1, break its storage.

Every integration test goes through here, so it talks to the real registry binary (Debian's
``docker-registry``, or upstream's ``registry``) and never mocks it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class HarnessError(RuntimeError):
    """The harness could not do what a test asked (no binary, registry would not start)."""


# --- registry binary and server ----------------------------------------------------------------


def find_registry_bin() -> str:
    """The registry binary: ``$REGISTRY_BIN``, else ``docker-registry``, else ``registry``."""
    env = os.environ.get("REGISTRY_BIN")
    if env:
        resolved = shutil.which(env)
        if resolved is None:
            raise HarnessError(f"$REGISTRY_BIN={env!r} is not an executable file")
        return resolved
    for name in ("docker-registry", "registry"):
        resolved = shutil.which(name)
        if resolved is not None:
            return resolved
    raise HarnessError(
        "no distribution registry binary found: set $REGISTRY_BIN, or install Debian's "
        "'docker-registry' package (or put distribution's 'registry' on PATH)"
    )


def _free_port() -> int:
    """Ask the kernel for a currently unused loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``extra`` merged in recursively (``extra`` wins on conflicts)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class RegistryServer:
    """One ``registry serve`` process on 127.0.0.1 with a private storage root and config."""

    def __init__(
        self,
        *,
        blobdescriptor_cache: bool = True,
        htpasswd: Path | None = None,
        extra_config: dict[str, Any] | None = None,
        workdir: Path | None = None,
        registry_bin: str | None = None,
        port: int | None = None,
    ) -> None:
        self.bin = registry_bin or find_registry_bin()
        # Owning the workdir means deleting it on close(); a caller-supplied one (pytest's
        # tmp_path) is kept so the log survives a failing test.
        self._owns_workdir = workdir is None
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="regverify-registry-"))
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir.resolve()
        self.root = self.workdir / "storage"
        self.root.mkdir(exist_ok=True)
        self.v2 = self.root / "docker" / "registry" / "v2"
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self._port_fixed = port is not None
        self.port = port if port is not None else _free_port()
        self.blobdescriptor_cache = blobdescriptor_cache
        self.htpasswd = htpasswd.resolve() if htpasswd is not None else None
        self.extra_config = extra_config or {}
        self._proc: subprocess.Popen[bytes] | None = None
        self.last_start_seconds: float | None = None
        self._write_config()

    # -- addresses ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as used in image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        """Whether the registry process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- config ---------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The registry configuration as a dict (what gets written to ``config_path``)."""
        storage: dict[str, Any] = {
            "filesystem": {"rootdirectory": str(self.root)},
            "delete": {"enabled": True},
        }
        if self.blobdescriptor_cache:
            storage["cache"] = {"blobdescriptor": "inmemory"}
        cfg: dict[str, Any] = {
            "version": "0.1",
            # Access log off: it is info-level noise; warnings and errors still reach the log.
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": storage,
            # A fixed secret keeps upload state valid across restart() and silences a warning.
            "http": {"addr": self.host, "secret": "regverify-test-harness-secret"},
        }
        if self.htpasswd is not None:
            cfg["auth"] = {"htpasswd": {"realm": "regverify-test", "path": str(self.htpasswd)}}
        return _deep_merge(cfg, self.extra_config)

    def _write_config(self) -> None:
        # JSON is valid YAML, and avoids a PyYAML dependency in the harness.
        self.config_path.write_text(json.dumps(self.config(), indent=2) + "\n")

    # -- lifecycle ------------------------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        """Last ``lines`` lines of the registry's log file (stdout and stderr)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log file)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the registry and wait until ``GET /v2/`` answers (200, or 401 with auth)."""
        if self.running:
            return
        attempts = 1 if self._port_fixed else 3
        for attempt in range(attempts):
            try:
                self._start_once(timeout)
                return
            except _PortInUse:
                if attempt == attempts - 1:
                    raise HarnessError(
                        f"registry could not bind {self.host}:\n{self.log_tail()}"
                    ) from None
                # Another process took the port between _free_port() and bind; pick another.
                self.port = _free_port()
                self._write_config()

    def _start_once(self, timeout: float) -> None:
        self._write_config()
        t0 = time.monotonic()
        # Judge a failed start only by what this run logged, not by an earlier run's lines.
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [self.bin, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the test run must not race our SIGTERM
            )
        deadline = t0 + timeout
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while True:
                rc = self._proc.poll()
                if rc is not None:
                    self._proc = None
                    tail = self.log_tail()
                    with open(self.log_path, "rb") as f:
                        f.seek(log_offset)
                        this_run = f.read().decode(errors="replace")
                    if "address already in use" in this_run:
                        raise _PortInUse()
                    raise HarnessError(
                        f"registry exited with {rc} while starting ({self.config_path}):\n{tail}"
                    )
                try:
                    resp = client.get(f"{self.url}/v2/")
                    if resp.status_code in (200, 401):
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise HarnessError(
                        f"registry did not answer GET {self.url}/v2/ within {timeout}s:\n"
                        f"{self.log_tail()}"
                    )
                time.sleep(0.01)
        self.last_start_seconds = time.monotonic() - t0
        self._port_fixed = True  # clients now hold the URL; restarts must not move it

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the registry: SIGTERM, wait, SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> None:
        """Stop and start on the same port and root; this empties the in-memory blob cache."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the registry and delete the workdir if this server created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RegistryServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RegistryServer {self.url} root={self.root} {state}>"

    # -- garbage collection ---------------------------------------------------------------------

    def garbage_collect(
        self,
        delete_untagged: bool = False,
        dry_run: bool = False,
        *,
        stop_server: bool = True,
        timeout: float = 300.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``registry garbage-collect`` on this storage; stdout+stderr are in ``.stdout``.

        With ``stop_server`` (the default) a running server is stopped first and restarted after,
        as distribution requires, so the blob descriptor cache ends up empty.
        """
        was_running = self.running
        if stop_server and was_running:
            self.stop()
        cmd = [self.bin, "garbage-collect"]
        if dry_run:
            cmd.append("--dry-run")
        if delete_untagged:
            cmd.append("--delete-untagged")
        cmd.append(str(self.config_path))
        try:
            # GC exits 0 whatever it finds or breaks, so the caller must judge the output.
            return subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
        finally:
            if stop_server and was_running:
                self.start()


class _PortInUse(Exception):
    """The registry lost the race for its port."""


# --- storage paths for fault injection ---------------------------------------------------------


def _split_digest(digest: str) -> tuple[str, str]:
    algo, _, hexpart = digest.partition(":")
    if not algo or not hexpart:
        raise ValueError(f"not a digest: {digest!r}")
    return algo, hexpart


def blob_data_path(v2: Path, digest: str) -> Path:
    """``v2/blobs/<algo>/<hex[:2]>/<hex>/data``: the bytes of any blob or manifest."""
    algo, hexpart = _split_digest(digest)
    return v2 / "blobs" / algo / hexpart[:2] / hexpart / "data"


def layer_link_path(v2: Path, repo: str, digest: str) -> Path:
    """``v2/repositories/<repo>/_layers/<algo>/<hex>/link``: a blob's membership in a repo."""
    algo, hexpart = _split_digest(digest)
    return v2 / "repositories" / repo / "_layers" / algo / hexpart / "link"


def revision_link_path(v2: Path, repo: str, digest: str) -> Path:
    """``v2/repositories/<repo>/_manifests/revisions/<algo>/<hex>/link``: a manifest in a repo."""
    algo, hexpart = _split_digest(digest)
    return v2 / "repositories" / repo / "_manifests" / "revisions" / algo / hexpart / "link"


def tag_dir(v2: Path, repo: str, tag: str) -> Path:
    """``v2/repositories/<repo>/_manifests/tags/<tag>`` (holds ``current/link`` and ``index/``)."""
    return v2 / "repositories" / repo / "_manifests" / "tags" / tag
