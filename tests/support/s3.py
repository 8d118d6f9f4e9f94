"""An S3-backed registry on loopback: moto_server, a recording proxy, distribution's `s3` driver.

Production registries that outgrow one disk keep their blobs in object storage and answer every
blob GET with `307` to a presigned URL on the storage host. This module runs that setup for real:

    client ──► docker-registry (s3 driver) ──► StorageRecorder ──► moto_server
       └──── 307 Location: presigned URL ──────────┘

`MotoS3` runs `moto_server` (PyPI `moto[server]`) on 127.0.0.1; `S3RegistryServer` is the real
distribution registry with its `s3` storage driver pointed at a `StorageRecorder`, a
pass-through proxy in front of moto that records every request reaching storage (headers and
status), from the registry and from clients that followed its redirects alike. Test set-up and
damage go to moto directly through boto3, so they never show in a recording. Images are pushed
with skopeo from an OCI layout built from the same deterministic content as tests/support/images.py.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import botocore.config
import httpx
from httpx_aiohttp import AiohttpTransport

from tests.support.faultproxy import FaultPlan, FaultProxy, Handler, Request
from tests.support.images import (
    IN_TOTO,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Blob,
    PushedImage,
    PushedIndex,
    _canonical_json,
    _descriptor,
    _diff_id,
    _platform_dict,
    make_layer,
    sha256_digest,
)
from tests.support.registry import HarnessError, RegistryServer, _free_port
from tests.support.skopeo import _POLICY

# moto accepts any key pair; the registry and boto3 must merely agree on one.
ACCESS_KEY = "regverify-test"
SECRET_KEY = "regverify-test-secret"
REGION = "us-east-1"
ROOTDIRECTORY = "/regverify/root"
START_TIMEOUT = 30.0

_bucket_numbers = itertools.count()


class MotoS3:
    """One `moto_server` process on 127.0.0.1 (S3 and every other moto service, in memory)."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "moto.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start moto_server on a free port and wait until it answers HTTP."""
        for _ in range(3):
            self.port = _free_port()
            with open(self.log_path, "ab") as log:
                # `python -m moto.server` is the moto_server console script, found through the
                # interpreter running the tests whether or not the venv's bin is on PATH.
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=_without_aws_env(), start_new_session=True,
                )
            if self._wait_ready(timeout):
                return
        raise HarnessError(f"moto_server did not start:\n{self.log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    self._proc = None
                    return False  # most likely lost the race for the port: try another
                with contextlib.suppress(httpx.TransportError):
                    client.get(f"{self.url}/moto-api/")
                    return True
                time.sleep(0.05)
        self.stop()
        raise HarnessError(f"moto_server did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of moto_server's output."""
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log file)"

    def client(self) -> Any:
        """A boto3 S3 client talking to this server directly (never recorded)."""
        return boto3.client(
            "s3", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        """Create a bucket with a name no other test in this process uses; return the name."""
        name = f"regverify-{os.getpid()}-{next(_bucket_numbers)}"
        self.client().create_bucket(Bucket=name)
        return name

    def __enter__(self) -> MotoS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _without_aws_env() -> dict[str, str]:
    """This process's environment without AWS_* variables.

    distribution 2.8's s3 driver refuses to start when AWS_CA_BUNDLE is set (its HTTP client is
    not one the AWS SDK can load a bundle into), and ambient credentials or profiles must not
    decide which keys the registry signs with: its config names them.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """Run the body with `os.environ` replaced by `env` (for a child started inside it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class StorageRecorder(FaultProxy):
    """A pass-through proxy in front of moto that records every request reaching storage.

    The `Host` header is forwarded unchanged, so presigned URLs (signed for this proxy's host)
    stay valid. Bodies are read whole with their Content-Length (the registry's S3 client sends
    one); no faults unless a `FaultPlan` is given.
    """

    async def setup(self) -> None:
        """Open the upstream client on aiohttp, the cheaper transport per request: one blob
        pushed through the s3 driver makes some twenty storage requests."""
        self._client = httpx.AsyncClient(
            base_url=self.upstream, follow_redirects=False, trust_env=False, timeout=30.0,
            transport=AiohttpTransport())

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until every request received has been answered and recorded."""
        deadline = time.monotonic() + timeout
        while len(self.events) < len(self.requests) and time.monotonic() < deadline:
            time.sleep(0.005)

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.settle()
        self.requests.clear()
        self.events.clear()

    def exchanges(self) -> list[StorageExchange]:
        """Every request that reached storage so far, with moto's status, in order of answer."""
        self.settle()
        return [StorageExchange(e.request, e.status) for e in list(self.events)
                if e.request is not None]


@dataclass(frozen=True)
class StorageExchange:
    """One request as it reached storage, and the status storage answered."""

    request: Request
    status: int | None

    @property
    def method(self) -> str:
        """HTTP method."""
        return self.request.method

    @property
    def key(self) -> str:
        """The object key (path-style: the path without its leading `/BUCKET/`)."""
        path = self.request.path.lstrip("/")
        return path.partition("/")[2]

    @property
    def presigned(self) -> bool:
        """Whether the request came with a query-string signature (SigV4 or V2), as a
        client that followed the registry's redirect sends it."""
        query = parse_qs(self.request.query)
        return "X-Amz-Signature" in query or "Signature" in query

    def header(self, name: str) -> str | None:
        """The first value of a request header, or None."""
        return self.request.header(name)


class S3RegistryServer(RegistryServer):
    """distribution with its `s3` driver on `bucket`, through `endpoint` (redirects on)."""

    def __init__(self, *, endpoint: str, bucket: str, rootdirectory: str = ROOTDIRECTORY,
                 **kwargs: Any) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.rootdirectory = rootdirectory
        super().__init__(**kwargs)

    def config(self) -> dict[str, Any]:
        """The filesystem config with its storage swapped for the s3 driver."""
        cfg = super().config()
        storage = {k: v for k, v in cfg["storage"].items() if k != "filesystem"}
        # 2.8 has no forcepathstyle: it uses path-style URLs whenever regionendpoint is set,
        # which a loopback endpoint needs. Redirects stay on (the default).
        storage["s3"] = {
            "accesskey": ACCESS_KEY, "secretkey": SECRET_KEY, "region": REGION,
            "regionendpoint": self.endpoint, "bucket": self.bucket,
            "rootdirectory": self.rootdirectory, "secure": self.endpoint.startswith("https:"),
            "v4auth": True,
        }
        cfg["storage"] = storage
        return cfg

    def _start_once(self, timeout: float) -> None:
        # The registry inherits os.environ; it must not see AWS_CA_BUNDLE (see _without_aws_env).
        with _environ(_without_aws_env()):
            super()._start_once(timeout)

    def garbage_collect(self, delete_untagged: bool = False, dry_run: bool = False, *,
                        stop_server: bool = True,
                        timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """``registry garbage-collect`` on the bucket (same AWS_* caveat as serving)."""
        with _environ(_without_aws_env()):
            return super().garbage_collect(delete_untagged, dry_run, stop_server=stop_server,
                                           timeout=timeout)

    # -- object keys, mirroring tests/support/registry.py's storage paths -----------------------

    @property
    def v2_prefix(self) -> str:
        """Key prefix of distribution's layout: `<rootdirectory>/docker/registry/v2`."""
        return f"{self.rootdirectory.strip('/')}/docker/registry/v2"

    def blob_data_key(self, digest: str) -> str:
        """Key of a blob's bytes: `.../blobs/<algo>/<hex[:2]>/<hex>/data`."""
        algo, _, hexpart = digest.partition(":")
        return f"{self.v2_prefix}/blobs/{algo}/{hexpart[:2]}/{hexpart}/data"

    def layer_link_key(self, repo: str, digest: str) -> str:
        """Key of a blob's link in a repository: `.../repositories/<repo>/_layers/...`."""
        algo, _, hexpart = digest.partition(":")
        return f"{self.v2_prefix}/repositories/{repo}/_layers/{algo}/{hexpart}/link"

    def revision_link_key(self, repo: str, digest: str) -> str:
        """Key of a manifest revision link: `.../_manifests/revisions/<algo>/<hex>/link`."""
        algo, _, hexpart = digest.partition(":")
        return f"{self.v2_prefix}/repositories/{repo}/_manifests/revisions/{algo}/{hexpart}/link"


@dataclass
class S3Registry:
    """What a test gets: the registry, the recorder at storage, moto, and the bucket."""

    registry: S3RegistryServer
    recorder: StorageRecorder
    moto: MotoS3
    bucket: str
    s3: Any  # a boto3 S3 client straight to moto: set-up and damage are never recorded

    @property
    def host(self) -> str:
        """The registry's `127.0.0.1:PORT`."""
        return self.registry.host

    def delete_object(self, key: str) -> None:
        """Delete one object behind the registry's back."""
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    def keys(self, prefix: str = "") -> list[str]:
        """Every key in the bucket under `prefix`."""
        out: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix):
            out.extend(obj["Key"] for obj in page.get("Contents", []))
        return out

    def presigned_get_url(self, key: str, expires: int = 600) -> str:
        """A presigned GET for `key` on the recorder's address, as the registry would sign it."""
        signer = boto3.client(
            "s3", endpoint_url=self.recorder.url, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=botocore.config.Config(signature_version="s3v4"),  # as the registry signs
        )
        url: str = signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires)
        return url

    def storage_blob_reads(self) -> list[StorageExchange]:
        """GETs and HEADs of blob `data` objects that reached storage through presigned URLs."""
        return [x for x in self.recorder.exchanges()
                if x.presigned and x.key.startswith(f"{self.registry.v2_prefix}/blobs/")]


@contextlib.contextmanager
def start_s3_registry(moto: MotoS3, workdir: Path, *, registry_bin: str | None = None,
                      htpasswd: Path | None = None, plan: FaultPlan | None = None,
                      intercept: Handler | None = None, **kwargs: Any) -> Iterator[S3Registry]:
    """A started registry on a fresh bucket of `moto` behind a recorder; all stopped after.

    moto checks nothing of a presigned URL (signature, expiry, method, an extra Authorization
    header): a storage refusal has to be made by the recorder, with a `FaultPlan` or an
    `intercept` handler (tests/support/faultproxy.py). Other keyword arguments go to the registry.
    """
    bucket = moto.new_bucket()
    with StorageRecorder(moto.url, plan, intercept=intercept) as recorder:
        registry = S3RegistryServer(endpoint=recorder.url, bucket=bucket, workdir=workdir,
                                    registry_bin=registry_bin, htpasswd=htpasswd, **kwargs)
        registry.start()
        try:
            yield S3Registry(registry, recorder, moto, bucket, moto.client())
        finally:
            registry.stop()


# --- pushing with skopeo from an OCI layout ------------------------------------------------------


class OciLayout:
    """An OCI image layout on disk (`oci-layout`, `index.json`, `blobs/`), for `skopeo copy`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}\n')
        self._refs: list[dict[str, Any]] = []

    def add_blob(self, data: bytes) -> str:
        """Store `data` under its digest; return the digest."""
        digest = sha256_digest(data)
        (self.path / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return digest

    def tag(self, name: str, media_type: str, digest: str, size: int) -> None:
        """Name a top-level manifest in index.json (`org.opencontainers.image.ref.name`)."""
        self._refs.append(_descriptor(media_type, digest, size,
                                      annotations={"org.opencontainers.image.ref.name": name}))
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self._refs}
        (self.path / "index.json").write_text(json.dumps(index))

    def image(self, repo: str, tag: str | None, *, platform: str = "linux/amd64",
              layers: int = 2, layer_size: int = 2048, seed: str = "") -> PushedImage:
        """Add a single-platform OCI image with deterministic layers (not tagged in the layout)."""
        label = f"{seed}|{repo}|{tag}|{platform}"
        layer_data = [make_layer(seed, repo, str(tag), platform, str(i), size=layer_size)
                      for i in range(layers)]
        config_obj = {
            "created": "1970-01-01T00:00:00Z", **_platform_dict(platform),
            "config": {"Labels": {"org.regverify.test.seed": label}},
            "rootfs": {"type": "layers", "diff_ids": [_diff_id(b) for b in layer_data]},
        }
        return self._manifest(repo, tag, config_obj, layer_data, OCI_LAYER, platform)

    def _manifest(self, repo: str, tag: str | None, config_obj: dict[str, Any],
                  layer_data: list[bytes], layer_type: str, platform: str) -> PushedImage:
        config_bytes = _canonical_json(config_obj)
        config = Blob(self.add_blob(config_bytes), len(config_bytes), OCI_CONFIG, config_bytes)
        layers = [Blob(self.add_blob(b), len(b), layer_type, b) for b in layer_data]
        body = _canonical_json({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config.digest, config.size),
            "layers": [_descriptor(b.media_type, b.digest, b.size) for b in layers],
        })
        digest = self.add_blob(body)
        return PushedImage(repo, tag, digest, len(body), OCI_MANIFEST, body, config, layers,
                           platform)

    def index(self, repo: str, tag: str, *,
              platforms: Iterable[str] = ("linux/amd64", "linux/arm64"), layers: int = 2,
              attestation: bool = True, seed: str = "") -> PushedIndex:
        """Add an OCI index of one image per platform (plus in-toto attestations), tagged."""
        children = [self.image(repo, None, platform=p, layers=layers, seed=f"{seed}|{tag}")
                    for p in platforms]
        attestations = [self._attestation(repo, c) for c in children] if attestation else []
        descriptors = [_descriptor(c.media_type, c.digest, c.size,
                                   platform=_platform_dict(c.platform or ""))
                       for c in children]
        for child, att in zip(children, attestations, strict=False):
            descriptors.append(_descriptor(
                att.media_type, att.digest, att.size,
                annotations={"vnd.docker.reference.digest": child.digest,
                             "vnd.docker.reference.type": "attestation-manifest"},
                platform={"architecture": "unknown", "os": "unknown"}))
        body = _canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                "manifests": descriptors})
        digest = self.add_blob(body)
        self.tag(tag, OCI_INDEX, digest, len(body))
        return PushedIndex(repo, tag, digest, len(body), OCI_INDEX, body, children, attestations)

    def _attestation(self, repo: str, child: PushedImage) -> PushedImage:
        statement = {
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://slsa.dev/provenance/v0.2",
            "subject": [{"name": f"{repo}@{child.digest}",
                         "digest": {"sha256": child.digest[7:]}}],
            "predicate": {"builder": {"id": "regverify-harness"}},
        }
        layer = _canonical_json(statement)
        config_obj = {"architecture": "unknown", "os": "unknown", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]}}
        return self._manifest(repo, None, config_obj, [layer], IN_TOTO, "unknown/unknown")


def skopeo_push(layout: Path, name: str, dest_ref: str, *, creds: str | None = None,
                timeout: float = 120) -> None:
    """`skopeo copy --all --preserve-digests oci:LAYOUT:NAME docker://DEST_REF`, or raise."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise HarnessError("skopeo is not installed (Debian package 'skopeo')")
    with tempfile.TemporaryDirectory(prefix="regverify-skopeo-") as tmp:
        policy = Path(tmp) / "policy.json"
        policy.write_text(_POLICY)
        cmd = [skopeo, "--policy", str(policy), "copy", "--all", "--preserve-digests",
               "--retry-times", "0", "--dest-tls-verify=false",
               *(["--dest-creds", creds] if creds is not None else ["--dest-no-creds"]),
               f"oci:{layout}:{name}", f"docker://{dest_ref}"]
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"skopeo push to {dest_ref} failed: {proc.stderr.strip()}")


def push_image_with_skopeo(host: str, repo: str, tag: str, workdir: Path, *,
                           creds: str | None = None, seed: str = "") -> PushedImage:
    """Build a single-platform OCI image and push it to `host/repo:tag` with skopeo."""
    layout = OciLayout(workdir / f"layout-{repo.replace('/', '_')}-{tag}")
    image = layout.image(repo, tag, seed=seed)
    layout.tag(tag, image.media_type, image.digest, image.size)
    skopeo_push(layout.path, tag, f"{host}/{repo}:{tag}", creds=creds)
    return image


def push_index_with_skopeo(host: str, repo: str, tag: str, workdir: Path, *,
                           creds: str | None = None, seed: str = "", layers: int = 2,
                           attestation: bool = True) -> PushedIndex:
    """Build an OCI index (two platforms, attestations) and push it with skopeo."""
    layout = OciLayout(workdir / f"layout-{repo.replace('/', '_')}-{tag}")
    index = layout.index(repo, tag, layers=layers, seed=seed, attestation=attestation)
    skopeo_push(layout.path, tag, f"{host}/{repo}:{tag}", creds=creds)
    return index


def blob_digests(pushed: PushedImage | PushedIndex) -> set[str]:
    """Every blob (configs and layers) an image or index references."""
    images = pushed.manifests if isinstance(pushed, PushedIndex) else [pushed]
    return {b.digest for image in images for b in image.blobs}

