"""Real-registry test harness: run distribution 2.8, push images over its API, ask skopeo.

Every integration test goes through this module, so it talks to the real registry binary
(Debian's ``docker-registry``) on 127.0.0.1 and never mocks it.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

# --- media types -------------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"

# All four must be sent: without the OCI types 2.8 answers 404 for OCI content, and without the
# list types it silently downgrades a tag to one child (observed on distribution 2.8).
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])

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


# --- image building and pushing ----------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """A pushed blob and its descriptor fields."""

    digest: str
    size: int
    media_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class PushedImage:
    """A pushed single-platform manifest (``tag`` is None for index children)."""

    repository: str
    tag: str | None
    digest: str
    size: int
    media_type: str
    manifest_bytes: bytes = field(repr=False)
    config: Blob
    layers: list[Blob]
    platform: str | None

    @property
    def blobs(self) -> list[Blob]:
        """Config then layers."""
        return [self.config, *self.layers]


@dataclass(frozen=True)
class PushedIndex:
    """A pushed OCI index or Docker manifest list with its children and attestations."""

    repository: str
    tag: str | None
    digest: str
    size: int
    media_type: str
    manifest_bytes: bytes = field(repr=False)
    children: list[PushedImage]
    attestations: list[PushedImage]

    @property
    def manifests(self) -> list[PushedImage]:
        """Children then attestation manifests, in index order."""
        return [*self.children, *self.attestations]


ServerOrUrl = RegistryServer | str
Auth = tuple[str, str] | None


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _base_url(server_or_url: ServerOrUrl) -> str:
    if isinstance(server_or_url, RegistryServer):
        return server_or_url.url
    url = server_or_url.rstrip("/")
    return url if "://" in url else f"http://{url}"


def _client(server_or_url: ServerOrUrl, auth: Auth) -> httpx.Client:
    # trust_env=False: an ambient HTTP(S)_PROXY must never intercept loopback test traffic.
    return httpx.Client(base_url=_base_url(server_or_url), auth=auth, trust_env=False, timeout=30.0)


def _check(resp: httpx.Response, what: str) -> None:
    if resp.status_code >= 300:
        raise HarnessError(
            f"{what}: {resp.request.method} {resp.request.url} -> {resp.status_code} {resp.text}"
        )


def _push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    digest = sha256_digest(data)
    resp = client.post(f"/v2/{repo}/blobs/uploads/")
    _check(resp, "start blob upload")
    # Location may be relative or absolute and carries _state query params to keep.
    location = resp.url.join(resp.headers["Location"])
    put_url = location.copy_merge_params({"digest": digest})
    resp = client.put(
        put_url,
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    _check(resp, "finish blob upload")
    got = resp.headers.get("Docker-Content-Digest", digest)
    if got != digest:
        raise HarnessError(f"registry stored blob as {got}, expected {digest}")
    return digest


def _push_manifest(client: httpx.Client, repo: str, ref: str, body: bytes, media_type: str) -> str:
    resp = client.put(
        f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type}
    )
    _check(resp, f"push manifest {repo}:{ref}")
    return resp.headers.get("Docker-Content-Digest") or sha256_digest(body)


def push_blob(server_or_url: ServerOrUrl, repo: str, data: bytes, *, auth: Auth = None) -> str:
    """Upload ``data`` monolithically (POST then PUT ?digest=) and return its digest."""
    with _client(server_or_url, auth) as client:
        return _push_blob(client, repo, data)


def push_manifest_raw(
    server_or_url: ServerOrUrl,
    repo: str,
    ref: str,
    body: bytes,
    media_type: str,
    *,
    auth: Auth = None,
) -> str:
    """PUT ``body`` as a manifest under tag or digest ``ref``; return the registry's digest."""
    with _client(server_or_url, auth) as client:
        return _push_manifest(client, repo, ref, body, media_type)


def _rng(*parts: str) -> random.Random:
    # Seeded from a hash so contents are stable across runs and Python versions.
    seed = hashlib.sha256("\x00".join(parts).encode()).digest()
    return random.Random(int.from_bytes(seed, "big"))


def make_layer(*seed_parts: str, size: int = 2048) -> bytes:
    """A real, deterministic tar+gzip layer holding one file of pseudo-random bytes."""
    rng = _rng(*seed_parts)
    payload = rng.randbytes(size)
    name = f"regverify/{hashlib.sha256(payload).hexdigest()[:16]}.bin"
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mtime = 0
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(payload))
    # mtime=0 keeps the gzip header, hence the digest, reproducible.
    return gzip.compress(tar_buf.getvalue(), mtime=0)


def _diff_id(layer: bytes) -> str:
    """The uncompressed digest a config lists; for non-gzip test bytes, the bytes themselves."""
    if layer[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError):
            return sha256_digest(gzip.decompress(layer))
    return sha256_digest(layer)


def _platform_dict(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform must be os/arch[/variant], got {platform!r}")
    out = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


def _descriptor(media_type: str, digest: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def _push_image(
    client: httpx.Client,
    repo: str,
    ref: str | None,
    *,
    tag: str | None,
    oci: bool,
    layer_data: list[bytes],
    platform: str,
    seed_label: str,
) -> PushedImage:
    plat = _platform_dict(platform)
    layer_type = OCI_LAYER if oci else DOCKER_LAYER
    config_type = OCI_CONFIG if oci else DOCKER_CONFIG
    config_obj: dict[str, Any] = {
        "created": "1970-01-01T00:00:00Z",
        **plat,
        # The label makes each (seed, repo, tag, platform) config unique, so images that share
        # every layer still get distinct manifests.
        "config": {"Labels": {"org.regverify.test.seed": seed_label}},
        "rootfs": {"type": "layers", "diff_ids": [_diff_id(b) for b in layer_data]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "regverify harness"}]
        * len(layer_data),
    }
    config_bytes = _canonical_json(config_obj)
    config = Blob(sha256_digest(config_bytes), len(config_bytes), config_type, config_bytes)
    _push_blob(client, repo, config_bytes)
    layers = []
    for data in layer_data:
        layers.append(Blob(_push_blob(client, repo, data), len(data), layer_type, data))
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": _descriptor(config_type, config.digest, config.size),
        "layers": [_descriptor(b.media_type, b.digest, b.size) for b in layers],
    }
    body = _canonical_json(manifest)
    digest = sha256_digest(body)
    pushed = _push_manifest(client, repo, ref or digest, body, media_type)
    if pushed != digest:
        raise HarnessError(f"registry digested manifest as {pushed}, expected {digest}")
    return PushedImage(repo, tag, digest, len(body), media_type, body, config, layers, platform)


def push_image(
    server_or_url: ServerOrUrl,
    repo: str,
    tag: str,
    *,
    oci: bool = True,
    layers: int | list[bytes] = 2,
    platform: str = "linux/amd64",
    seed: str = "",
    layer_bytes: list[bytes] | None = None,
    auth: Auth = None,
) -> PushedImage:
    """Push a single-platform image under ``tag`` (OCI by default, Docker v2 with oci=False).

    Layers are deterministic tar.gz from seed+repo+tag unless given as bytes (``layer_bytes``
    or a list in ``layers``), which is how two images share blobs.
    """
    data = _layer_list(layers, layer_bytes, seed, repo, tag, platform)
    with _client(server_or_url, auth) as client:
        return _push_image(
            client,
            repo,
            tag,
            tag=tag,
            oci=oci,
            layer_data=data,
            platform=platform,
            seed_label=f"{seed}|{repo}|{tag}|{platform}",
        )


def _layer_list(
    layers: int | list[bytes],
    layer_bytes: list[bytes] | None,
    seed: str,
    repo: str,
    tag: str,
    platform: str,
) -> list[bytes]:
    if layer_bytes is not None:
        return list(layer_bytes)
    if isinstance(layers, list):
        return list(layers)
    return [make_layer(seed, repo, tag, platform, str(i)) for i in range(layers)]


def _push_attestation(
    client: httpx.Client, repo: str, child: PushedImage, seed_label: str
) -> PushedImage:
    """Push a buildx-style in-toto attestation manifest for ``child`` (by digest, untagged)."""
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": f"{repo}@{child.digest}", "digest": {"sha256": child.digest[7:]}}],
        "predicate": {"builder": {"id": "regverify-harness"}, "seed": seed_label},
    }
    layer_data = _canonical_json(statement)
    layer = Blob(sha256_digest(layer_data), len(layer_data), IN_TOTO, layer_data)
    config_obj = {
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    }
    config_bytes = _canonical_json(config_obj)
    config = Blob(sha256_digest(config_bytes), len(config_bytes), OCI_CONFIG, config_bytes)
    _push_blob(client, repo, config_bytes)
    _push_blob(client, repo, layer_data)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor(OCI_CONFIG, config.digest, config.size),
        "layers": [
            _descriptor(
                IN_TOTO,
                layer.digest,
                layer.size,
                annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
            )
        ],
    }
    body = _canonical_json(manifest)
    digest = _push_manifest(client, repo, sha256_digest(body), body, OCI_MANIFEST)
    return PushedImage(
        repo, None, digest, len(body), OCI_MANIFEST, body, config, [layer], "unknown/unknown"
    )


def push_index(
    server_or_url: ServerOrUrl,
    repo: str,
    tag: str,
    *,
    oci: bool = True,
    platforms: Iterable[str] = ("linux/amd64", "linux/arm64"),
    attestation: bool = True,
    seed: str = "",
    auth: Auth = None,
) -> PushedIndex:
    """Push children by digest, then (OCI only) attestations, then the index under ``tag``.

    ``oci=False`` pushes Docker v2 children and a Docker manifest list (never attestations).
    """
    children: list[PushedImage] = []
    attestations: list[PushedImage] = []
    with _client(server_or_url, auth) as client:
        for platform in platforms:
            label = f"{seed}|{repo}|{tag}|{platform}"
            data = _layer_list(2, None, seed, repo, tag, platform)
            children.append(
                _push_image(
                    client,
                    repo,
                    None,
                    tag=None,
                    oci=oci,
                    layer_data=data,
                    platform=platform,
                    seed_label=label,
                )
            )
            if oci and attestation:
                attestations.append(_push_attestation(client, repo, children[-1], label))
        descriptors = [
            _descriptor(c.media_type, c.digest, c.size, platform=_platform_dict(c.platform or ""))
            for c in children
        ]
        for child, att in zip(children, attestations, strict=False):
            descriptors.append(
                _descriptor(
                    att.media_type,
                    att.digest,
                    att.size,
                    annotations={
                        "vnd.docker.reference.digest": child.digest,
                        "vnd.docker.reference.type": "attestation-manifest",
                    },
                    platform={"architecture": "unknown", "os": "unknown"},
                )
            )
        media_type = OCI_INDEX if oci else DOCKER_MANIFEST_LIST
        body = _canonical_json(
            {"schemaVersion": 2, "mediaType": media_type, "manifests": descriptors}
        )
        digest = _push_manifest(client, repo, tag, body, media_type)
    return PushedIndex(repo, tag, digest, len(body), media_type, body, children, attestations)


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
