"""Secrets never printed, Authorization never sent to another origin, TLS verified by default.

Real registries throughout: htpasswd Basic auth, Bearer tokens from `TokenServer` (short-lived,
so they expire mid-run), TLS with a throwaway CA (trustme), and a loopback "registry front" that
answers blob requests with 307 to a second loopback "storage" server, whose received headers
are the evidence.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.support.cli import CliResult, run_cli
from tests.support.faultproxy import Exchange, FaultPlan, FaultProxy, LoopbackHTTPServer
from tests.support.images import push_image, push_index
from tests.support.registry import RegistryServer, blob_data_path
from tests.support.tokenserver import TokenServer
from verifier.output import Format

pytestmark = pytest.mark.registry

USER = "ci-robot"
PASSWORD = "Pw-7f3a9c2e-never-print-me"
# bcrypt(PASSWORD, cost 5), made once with libxcrypt: the registry accepts only bcrypt entries.
HTPASSWD = f"{USER}:$2b$05$dAW3CWAJevxXweI9mrggPuii1TMv/yax4N3Uxn/rRIlUYqijdQOzC\n"
IDENTITY_TOKEN = "idtok-51c0ffee-never-print-me"


def written(runs: list[CliResult]) -> dict[str, str]:
    """Path -> text of every file the runs wrote through `--output`."""
    files: dict[str, str] = {}
    for run in runs:
        if "--output" in run.args:
            path = Path(run.args[run.args.index("--output") + 1])
            if path.exists():
                files[str(path)] = path.read_text()
    return files


def assert_no_secret(runs: list[CliResult], secrets: list[str]) -> None:
    """No secret, and no Authorization value, in any output of any run (files it wrote
    through `--output` included)."""
    secrets = [s for s in secrets if s]
    for run in runs:
        for text in [run.stdout, run.stderr, *written([run]).values()]:
            for secret in secrets:
                assert secret not in text, (run.args, secret[:12] + "...")
            assert "Authorization" not in text and "eyJ" not in text, run.args


def basic_secrets() -> list[str]:
    """Every form the Basic credentials could leak in."""
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return [PASSWORD, encoded, encoded[:16], IDENTITY_TOKEN]


# --- registries ----------------------------------------------------------------------------------


@dataclass
class Secured:
    """A registry behind authentication, with one healthy and one broken image."""

    server: RegistryServer
    healthy: str
    broken: str
    tokens: TokenServer | None = None


def _populate(server: RegistryServer, auth: tuple[str, str] | None) -> tuple[str, str]:
    push_index(server, "private/app", "v1", auth=auth)
    broken = push_image(server, "private/broken", "v1", auth=auth)
    blob_data_path(server.v2, broken.layers[0].digest).unlink()
    return "private/app:v1", "private/broken:v1"


@pytest.fixture(scope="module")
def basic(registry_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """htpasswd Basic auth, the Debian registry's own."""
    workdir = tmp_path_factory.mktemp("basic")
    (workdir / "htpasswd").write_text(HTPASSWD)
    server = RegistryServer(htpasswd=workdir / "htpasswd", workdir=workdir / "registry",
                            registry_bin=registry_bin)
    server.start()
    try:
        healthy, broken = _populate(server, (USER, PASSWORD))
        server.restart()  # cold cache: the deleted layer is a 404
        yield Secured(server, healthy, broken)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bearer(registry_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """Token auth: the registry trusts `TokenServer`'s signing certificate."""
    workdir = tmp_path_factory.mktemp("bearer")
    tokens = TokenServer(workdir, users={USER: PASSWORD},
                         refresh_tokens={IDENTITY_TOKEN: USER})
    tokens.start()
    server = RegistryServer(workdir=workdir / "registry", registry_bin=registry_bin)
    try:
        server.start()
        healthy, broken = _populate(server, None)  # pushed before auth is switched on
        server.stop()
        server.extra_config = tokens.registry_config()
        server.start()
        yield Secured(server, healthy, broken, tokens)
    finally:
        server.stop()
        tokens.stop()


@pytest.fixture
def fresh_tokens(bearer: Secured) -> Iterator[TokenServer]:
    """The bearer registry's token server, records cleared and lifetimes restored after."""
    tokens = bearer.tokens
    assert tokens is not None
    tokens.received.clear()
    yield tokens
    tokens.expires_in = tokens.lifetime = 300


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(tmp_path), **extra}


# --- nothing secret in any output ------------------------------------------------------------


def _every_output_runs(secured: Secured, tmp_path: Path) -> list[CliResult]:
    """Every command x format x credential source, a failing login and a lost registry."""
    host = secured.server.host
    creds = _env(tmp_path / "empty", REGVERIFY_USERNAME=USER, REGVERIFY_PASSWORD=PASSWORD)
    config_dir = tmp_path / "docker"
    config_dir.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    entry = {"identitytoken": IDENTITY_TOKEN} if secured.tokens else {"auth": auth}
    (config_dir / "config.json").write_text(json.dumps({"auths": {host: entry}}))
    jobs: list[tuple[tuple[str, ...], dict[str, Any]]] = [
        (("image", f"{host}/{secured.healthy}", "--plain-http", "--format", "json",
          "--verbose"), {"env": creds}),
        (("image", f"{host}/{secured.broken}", "--plain-http", "--verbose"), {"env": creds}),
    ]
    for fmt in Format:
        jobs.append((("scan", host, "--plain-http", "--format", str(fmt), "--verbose"),
                     {"env": creds}))
        jobs.append((("scan", host, "--plain-http", "--format", str(fmt),
                      "--output", str(tmp_path / f"report.{fmt}")), {"env": creds}))
    jobs.append((("scan", host, "--plain-http", "--format", "json", "-u", USER,
                  "--password-stdin", "--verbose"),
                 {"env": _env(tmp_path / "empty"), "input": PASSWORD + "\n"}))
    jobs.append((("scan", host, "--plain-http", "--format", "json", "--verbose"),
                 {"env": _env(config_dir)}))
    wrong = _env(tmp_path / "empty", REGVERIFY_USERNAME=USER,
                 REGVERIFY_PASSWORD=PASSWORD[:-1] + "X")
    jobs.append((("scan", host, "--plain-http", "--verbose"), {"env": wrong}))
    jobs.append((("image", "127.0.0.1:1/private/app:v1", "--plain-http", "--retries", "0",
                  "--verbose"), {"env": creds}))
    # Two in real processes (what a CI log would capture), the rest in-process.
    runs = [run_cli(*args, subprocess=True, **kw) for args, kw in (jobs[0], jobs[-1])]
    runs[1:1] = [run_cli(*args, **kw) for args, kw in jobs[1:-1]]
    return runs


@pytest.mark.parametrize("kind", ["basic", "bearer"])
def test_no_output_ever_shows_a_secret(kind: str, request: pytest.FixtureRequest,
                                       tmp_path: Path) -> None:
    secured: Secured = request.getfixturevalue(kind)
    (tmp_path / "empty").mkdir()
    runs = _every_output_runs(secured, tmp_path)
    # The runs did what they were meant to: the secrets really were in play.
    for run in runs[:-2]:
        target = run.args[1]
        expected = 0 if target.endswith(secured.healthy) else 1
        assert run.exit_code == expected, (run.args, run.stderr)
    assert runs[-2].exit_code == 3 and runs[-1].exit_code == 3
    assert "Traceback" in runs[-1].stderr  # --verbose really printed a traceback
    assert written(runs)
    secrets = basic_secrets()
    if secured.tokens is not None:
        assert secured.tokens.issued
        secrets += secured.tokens.issued + [t.split(".")[2] for t in secured.tokens.issued]
    assert_no_secret(runs, secrets)


# --- Authorization never leaves its origin -----------------------------------------------------


class Storage(LoopbackHTTPServer):
    """Object storage stand-in: serves blobs from the registry's disk, records what it got."""

    def __init__(self, v2: Path) -> None:
        super().__init__(self._serve)
        self.v2 = v2

    async def _serve(self, exchange: Exchange) -> None:
        digest = exchange.request.path.rsplit("/", 1)[1]
        path = blob_data_path(self.v2, digest)
        if not path.exists():
            await exchange.respond(404, b"NoSuchKey")
            return
        data = path.read_bytes()
        spec = exchange.request.header("range")
        if spec and exchange.request.method == "GET":
            first, _, last = spec.removeprefix("bytes=").partition("-")
            await exchange.respond(206, data[int(first): int(last) + 1],
                                   [("Content-Range", f"bytes {first}-{last}/{len(data)}")])
            return
        await exchange.respond(200, data, content_length=len(data))


def _redirecting_front(registry: RegistryServer, storage: Storage) -> FaultProxy:
    """A registry front that, once a blob request is authenticated, redirects it to storage."""

    async def redirect_blobs(exchange: Exchange) -> None:
        request = exchange.request
        if "/blobs/sha256:" in request.path and request.header("authorization"):
            digest = request.path.rsplit("/", 1)[1]
            where = f"{storage.url}/bucket/{digest}?X-Amz-Signature=deadbeef&X-Amz-Expires=60"
            await exchange.respond(307, b"", [("Location", where)])

    return FaultProxy(registry.url, intercept=redirect_blobs)


@pytest.mark.parametrize("kind", ["basic", "bearer"])
@pytest.mark.parametrize("deep", [False, True], ids=["probe", "deep"])
def test_authorization_never_follows_a_redirect_to_another_origin(
    kind: str, deep: bool, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    secured: Secured = request.getfixturevalue(kind)
    with Storage(secured.server.v2) as storage, \
            _redirecting_front(secured.server, storage) as front:
        run = run_cli("image", f"{front.host}/{secured.healthy}", "--plain-http", "--format",
                      "json", *(["--deep"] if deep else []),
                      env=_env(tmp_path, REGVERIFY_USERNAME=USER, REGVERIFY_PASSWORD=PASSWORD),
                      subprocess=True)
        blob_requests = [r for r in front.requests if "/blobs/" in r.path]
    assert run.exit_code == 0, (run.stderr, run.json()["findings"])
    # Every blob went through the redirect, with credentials at the front, none at storage.
    assert blob_requests and storage.requests
    assert all(r.header("authorization") for r in blob_requests if r in front.requests)
    assert {r.path.rsplit("/", 1)[1] for r in storage.requests} == {
        r.path.rsplit("/", 1)[1] for r in blob_requests}
    for received in storage.requests:
        names = {k.lower() for k, _ in received.headers}
        assert "authorization" not in names and "cookie" not in names, received.headers
        assert "X-Amz-Signature=deadbeef" in received.query


# --- TLS ---------------------------------------------------------------------------------------


@dataclass
class Tls:
    """A TLS registry and the files a user would point regverify at."""

    server: RegistryServer
    ca: trustme.CA
    ca_pem: Path
    other_ca_pem: Path


@contextmanager
def _serve_tls(server: RegistryServer, cert: Path, key: Path, ca_pem: Path) -> Iterator[None]:
    # The harness polls its registry over plain HTTP, so the TLS one is started (and polled
    # over HTTPS with the test CA) here, on the same storage and port.
    config = server.config()
    config["http"]["tls"] = {"certificate": str(cert), "key": str(key)}
    path = server.workdir / "tls-config.json"
    path.write_text(json.dumps(config))
    with open(server.log_path, "ab") as log:
        proc = subprocess.Popen([server.bin, "serve", str(path)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        context = ssl.create_default_context(cafile=str(ca_pem))
        deadline = time.monotonic() + 10
        with httpx.Client(verify=context, trust_env=False, timeout=1.0) as client:
            while True:
                assert proc.poll() is None, server.log_tail()
                try:
                    if client.get(f"https://{server.host}/v2/").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.02)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def tls(registry_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    """The real registry serving HTTPS with a certificate from a throwaway CA."""
    workdir = tmp_path_factory.mktemp("tls")
    server = RegistryServer(workdir=workdir / "registry", registry_bin=registry_bin)
    server.start()
    push_index(server, "secure/app", "v1")
    server.stop()
    ca, other = trustme.CA(), trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca_pem, other_pem = workdir / "ca.pem", workdir / "other-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    other.cert_pem.write_to_path(str(other_pem))
    with _serve_tls(server, cert, key, ca_pem):
        yield Tls(server, ca, ca_pem, other_pem)


def test_tls_verified_by_default_and_ca_cert_works(tls: Tls, tmp_path: Path) -> None:
    ref = f"{tls.server.host}/secure/app:v1"
    env = _env(tmp_path)
    runs = {
        "default": run_cli("image", ref, "--format", "json", env=env, subprocess=True),
        "ca-cert": run_cli("image", ref, "--format", "json", "--ca-cert",
                           str(tls.ca_pem), env=env),
        "other-ca": run_cli("image", ref, "--format", "json", "--ca-cert",
                            str(tls.other_ca_pem), env=env),
        "insecure": run_cli("image", ref, "--format", "json", "--insecure",
                            env=env),
        "scan": run_cli("scan", tls.server.host, "--format", "json", "--ca-cert",
                        str(tls.ca_pem), env=env),
    }
    assert runs["ca-cert"].exit_code == 0, runs["ca-cert"].stderr
    assert runs["ca-cert"].json()["images"][0]["status"] == "ok"
    assert runs["insecure"].exit_code == 0 and runs["scan"].exit_code == 0
    for name in ("default", "other-ca"):
        run = runs[name]
        assert run.exit_code == 3 and run.stdout == ""
        assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
        assert f"TLS verification failed for {tls.server.host}" in run.stderr
        assert "--ca-cert" in run.stderr and "--insecure" in run.stderr


def test_tls_name_mismatch_and_unusable_ca_file(tls: Tls, tmp_path: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.ca.issue_cert("registry.wrong.example").configure_cert(context)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    with FaultProxy(f"https://{tls.server.host}", tls=context) as wrong_name:
        mismatch = run_cli("image", f"{wrong_name.host}/secure/app:v1",
                           "--ca-cert", str(tls.ca_pem), env=_env(tmp_path))
    assert mismatch.exit_code == 3 and "TLS verification failed" in mismatch.stderr
    unusable = run_cli("image", f"{tls.server.host}/secure/app:v1", "--ca-cert",
                       str(garbage), env=_env(tmp_path))
    assert unusable.exit_code == 2 and "cannot load CA certificate" in unusable.stderr
    assert unusable.stderr.count("\n") == 1


# --- Basic and Bearer against the real registry -------------------------------------------------


def test_basic_auth_scan(basic: Secured, tmp_path: Path) -> None:
    run = run_cli("scan", basic.server.host, "--plain-http", "--format", "json",
                  env=_env(tmp_path, REGVERIFY_USERNAME=USER, REGVERIFY_PASSWORD=PASSWORD),
                  subprocess=True)
    doc = run.json()
    assert run.exit_code == 1
    assert {i["repository"]: i["status"] for i in doc["images"]} == {
        "private/app": "ok", "private/broken": "broken"}
    assert {f["kind"] for f in doc["findings"]} == {"blob_missing"}


def test_bearer_tokens_are_per_scope_and_cached(bearer: Secured, fresh_tokens: TokenServer,
                                                tmp_path: Path) -> None:
    run = run_cli("scan", bearer.server.host, "--plain-http", "--format", "json",
                  env=_env(tmp_path, REGVERIFY_USERNAME=USER, REGVERIFY_PASSWORD=PASSWORD),
                  subprocess=True)
    assert run.exit_code == 1, run.stderr
    scopes = fresh_tokens.scopes_requested()
    assert sorted(scopes) == ["registry:catalog:*", "repository:private/app:pull",
                              "repository:private/broken:pull"]  # one token each, reused
    assert all(r.user == USER and r.status == 200 for r in fresh_tokens.received)


def test_bearer_identity_token_from_docker_config(bearer: Secured, fresh_tokens: TokenServer,
                                                  tmp_path: Path) -> None:
    config = {"auths": {bearer.server.host: {"identitytoken": IDENTITY_TOKEN}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    run = run_cli("image", f"{bearer.server.host}/{bearer.healthy}", "--plain-http",
                  env=_env(tmp_path), subprocess=True)
    assert run.exit_code == 0, run.stderr
    assert {r.method for r in fresh_tokens.received} == {"POST"}
    assert_no_secret([run], basic_secrets() + fresh_tokens.issued)


def test_bearer_refused_is_incomplete(bearer: Secured, fresh_tokens: TokenServer,
                                      tmp_path: Path) -> None:
    run = run_cli("image", f"{bearer.server.host}/{bearer.healthy}", "--plain-http",
                  "--format", "json",
                  env=_env(tmp_path, REGVERIFY_USERNAME=USER, REGVERIFY_PASSWORD="wrong"),
                  subprocess=True)
    assert run.exit_code == 3
    assert {f["kind"] for f in run.json()["findings"]} == {"auth_failed"}
    assert run.json()["images"][0]["status"] == "error"


def _slow() -> FaultPlan:
    """Every request delayed, so a run outlives the tokens' two-second lifetime (with one
    ranged GET per blob, the scan sends about half the requests it used to)."""
    return FaultPlan(rate=1.0, faults=("delay",), delay=(0.16, 0.16))


def _bearer_401s(proxy: FaultProxy) -> int:
    """Requests that carried a Bearer token and were answered 401 (the token was refused)."""
    return sum(1 for e in proxy.events if e.status == 401 and e.request is not None
               and (e.request.header("authorization") or "").startswith("Bearer "))


def test_token_expiring_mid_scan_is_renewed_on_401(bearer: Secured, fresh_tokens: TokenServer,
                                                   tmp_path: Path) -> None:
    """The client is told 300 s, the registry stops accepting after 2 s: a 401 mid-scan."""
    fresh_tokens.expires_in, fresh_tokens.lifetime = 300, 2
    with FaultProxy(bearer.server.url, _slow()) as slow:
        run = run_cli("scan", slow.host, "--plain-http", "--format", "json", "--concurrency", "1",
                      env=_env(tmp_path, REGVERIFY_USERNAME=USER, REGVERIFY_PASSWORD=PASSWORD),
                      subprocess=True)
    doc = run.json()
    assert run.exit_code == 1, doc["findings"]
    assert {i["repository"]: i["status"] for i in doc["images"]} == {
        "private/app": "ok", "private/broken": "broken"}
    assert _bearer_401s(slow) >= 1  # a token the client still trusted was refused ...
    scopes = fresh_tokens.scopes_requested()
    assert len(scopes) > len(set(scopes))  # ... and renewed, and the scan carried on


def test_short_expires_in_renews_before_the_registry_refuses(
    bearer: Secured, fresh_tokens: TokenServer, tmp_path: Path
) -> None:
    # exp has one-second granularity: a lifetime of 3 s is at least 2 s, twice what the
    # client is told, so an honest short expires_in is always renewed in time.
    fresh_tokens.expires_in, fresh_tokens.lifetime = 1, 3
    with FaultProxy(bearer.server.url, _slow()) as slow:
        run = run_cli("scan", slow.host, "--plain-http", "--format", "json", "--concurrency", "1",
                      env=_env(tmp_path, REGVERIFY_USERNAME=USER, REGVERIFY_PASSWORD=PASSWORD),
                      subprocess=True)
    assert run.exit_code == 1, run.json()["findings"]
    scopes = fresh_tokens.scopes_requested()
    assert len(scopes) > len(set(scopes))
    assert _bearer_401s(slow) == 0


def test_flaky_token_service_is_retried_not_refused(
    bearer: Secured, fresh_tokens: TokenServer, tmp_path: Path, registry_bin: str
) -> None:
    """The token service answers 503/429, resets, cuts bodies: transient, so retried."""
    plan = FaultPlan(seed=4, rate=0.6, faults=("503", "429", "reset", "truncate", "502"),
                     max_streak=2, retry_after_seconds=(0,))
    with FaultProxy(fresh_tokens.url, plan) as flaky:
        server = RegistryServer(workdir=tmp_path / "registry", registry_bin=registry_bin)
        server.extra_config = fresh_tokens.registry_config()
        server.extra_config["auth"]["token"]["realm"] = f"{flaky.url}/token"
        # The same storage as the bearer registry: same images, same damage.
        server.extra_config["storage"] = {"filesystem": {"rootdirectory": str(bearer.server.root)}}
        server.start()
        try:
            run = run_cli("scan", server.host, "--plain-http", "--format", "json",
                          env=_env(tmp_path, REGVERIFY_USERNAME=USER,
                                   REGVERIFY_PASSWORD=PASSWORD), subprocess=True)
        finally:
            server.stop()
    doc = run.json()
    assert flaky.injected, flaky.events
    assert run.exit_code == 1, doc["findings"]
    assert {i["repository"]: i["status"] for i in doc["images"]} == {
        "private/app": "ok", "private/broken": "broken"}


# --- credentials confined to the registry: a hostile storage host on 127.0.0.2 ---------------


class HostileStorage(LoopbackHTTPServer):
    """Object storage on a second loopback address that asks for credentials: a challenge of
    its choosing on every request, and a token endpoint of its own that records what came."""

    def __init__(self, status: int, challenge: str | None) -> None:
        super().__init__(self._serve, address="127.0.0.2")
        self.status = status
        self.challenge = challenge

    async def _serve(self, exchange: Exchange) -> None:
        challenge = (self.challenge or "").replace("SELF", self.url)
        headers = [("WWW-Authenticate", challenge)] if challenge else []
        await exchange.respond(self.status, b"<Error><Code>AccessDenied</Code></Error>",
                               headers)


def _storage_front(registry: RegistryServer, storage_url: str, *,
                   tls: ssl.SSLContext | None = None) -> FaultProxy:
    """The registry, behind a front that redirects every authenticated blob request to
    `storage_url` (as distribution's s3 driver does, with a presigned URL)."""

    async def redirect_blobs(exchange: Exchange) -> None:
        request = exchange.request
        if "/blobs/sha256:" in request.path and request.header("authorization"):
            digest = request.path.rsplit("/", 1)[1]
            where = f"{storage_url}/bucket/{digest}?X-Amz-Signature=deadbeef"
            await exchange.respond(307, b"", [("Location", where)])

    return FaultProxy(registry.url, intercept=redirect_blobs, tls=tls)


@pytest.mark.parametrize(("status", "challenge"), [
    (401, 'Bearer realm="SELF/token",service="storage"'),   # a realm on the storage host
    (401, 'Bearer realm="http://127.0.0.3:9/token"'),       # a realm on a third host
    (401, 'Basic realm="storage"'),
    (403, None),
], ids=["bearer-self", "bearer-third-host", "basic", "403"])
def test_a_redirect_targets_challenge_is_never_answered(
    basic: Secured, tmp_path: Path, status: int, challenge: str | None
) -> None:
    """The registry (Basic auth) redirects blobs to storage that wants credentials: none go
    there, none go to a realm it names, and the refusal is the blob's verdict."""
    with HostileStorage(status, challenge) as storage, \
            _storage_front(basic.server, storage.url) as front:
        run = run_cli("image", f"{front.host}/{basic.healthy}", "--plain-http", "--format",
                      "json", "--retries", "0",
                      env=_env(tmp_path, REGVERIFY_USERNAME=USER, REGVERIFY_PASSWORD=PASSWORD),
                      subprocess=True)
        received = list(storage.requests)
        front_auth = [r.header("authorization") for r in front.requests
                      if "/blobs/" in r.path]
    doc = run.json()
    assert run.exit_code == 1, (run.stderr, doc["findings"])
    assert front_auth and all(front_auth)  # the registry did get the credentials
    assert received, "the redirect was not followed"
    assert all(r.path.startswith("/bucket/") for r in received)  # no token request at all
    for r in received:
        assert {k.lower() for k, _ in r.headers}.isdisjoint({"authorization", "cookie"})
    assert {f["kind"] for f in doc["findings"]} == {"blob_unreadable"}
    assert all(storage.host in f["message"] for f in doc["findings"])
    assert all(f["details"]["storage_host"] == storage.host for f in doc["findings"])
    assert doc["images"][0]["status"] == "broken"


def test_redirect_hops_are_counted(basic: Secured, tmp_path: Path) -> None:
    """A redirected blob probe is two exchanges, 307 then 206, and both are counted."""
    with Storage(basic.server.v2) as storage, \
            _storage_front(basic.server, storage.url) as front:
        run = run_cli("image", f"{front.host}/{basic.healthy}", "--plain-http", "--format",
                      "json",
                      env=_env(tmp_path, REGVERIFY_USERNAME=USER, REGVERIFY_PASSWORD=PASSWORD),
                      subprocess=True)
        redirects = sum(1 for e in front.events if e.status == 307)
        ranged = len(storage.requests)
        answered = len(front.events)
    doc = run.json()
    assert run.exit_code == 0, doc["findings"]
    by_code = doc["summary"]["requests_by_code"]
    assert redirects and by_code["307"] == redirects
    assert by_code["206"] == ranged == redirects
    # Every exchange with the front and with storage, nothing else and nothing twice.
    assert doc["summary"]["requests"] == answered + ranged


class _Recorder(LoopbackHTTPServer):
    """Records every request; answers 401 (a token service that knows nobody)."""

    def __init__(self, address: str = "127.0.0.2") -> None:
        super().__init__(self._serve, address=address)

    async def _serve(self, exchange: Exchange) -> None:
        await exchange.respond(401, b'{"details":"who are you"}')


class _RedirectingRealm(LoopbackHTTPServer):
    """A token realm on the registry's side that redirects every request to `target`."""

    def __init__(self, target: str, status: int = 307) -> None:
        super().__init__(self._serve)
        self.target = target
        self.status = status

    async def _serve(self, exchange: Exchange) -> None:
        await exchange.respond(self.status, b"",
                               [("Location", f"{self.target}{exchange.request.target}")])


@pytest.mark.parametrize("grant", ["basic", "refresh-token"])
def test_token_requests_never_take_credentials_to_another_origin(
    bearer: Secured, fresh_tokens: TokenServer, tmp_path: Path, registry_bin: str, grant: str
) -> None:
    """The realm the registry names redirects to another origin: the password never goes
    there, and a refresh-token POST is not sent there at all."""
    with _Recorder() as thief, _RedirectingRealm(thief.url) as realm:
        server = RegistryServer(workdir=tmp_path / "registry", registry_bin=registry_bin)
        server.extra_config = fresh_tokens.registry_config()
        server.extra_config["auth"]["token"]["realm"] = f"{realm.url}/token"
        server.extra_config["storage"] = {"filesystem": {"rootdirectory": str(bearer.server.root)}}
        server.start()
        try:
            if grant == "basic":
                env = _env(tmp_path, REGVERIFY_USERNAME=USER, REGVERIFY_PASSWORD=PASSWORD)
            else:
                (tmp_path / "config.json").write_text(json.dumps(
                    {"auths": {server.host: {"identitytoken": IDENTITY_TOKEN}}}))
                env = _env(tmp_path)
            run = run_cli("image", f"{server.host}/{bearer.healthy}", "--plain-http",
                          "--format", "json", "--retries", "0", env=env, subprocess=True)
        finally:
            server.stop()
        stolen = list(thief.requests)
    assert run.exit_code == 3, run.stderr
    assert {f["kind"] for f in run.json()["findings"]} == {"auth_failed"}
    assert realm.requests  # the registry's realm was asked
    if grant == "refresh-token":
        assert stolen == []
    for r in stolen:
        assert r.header("authorization") is None and not r.body
    assert_no_secret([run], basic_secrets())


def test_token_realm_must_be_https_when_the_registry_is(tls: Tls, tmp_path: Path) -> None:
    """An HTTPS registry that names an http:// realm: no credentials are sent in clear."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.ca.issue_cert("127.0.0.1").configure_cert(context)
    with _Recorder() as clear_realm:
        async def challenge(exchange: Exchange) -> None:
            if not exchange.request.header("authorization"):
                await exchange.respond(401, b"{}", [(
                    "WWW-Authenticate",
                    f'Bearer realm="{clear_realm.url}/token",service="registry"')])

        with FaultProxy(f"https://{tls.server.host}", intercept=challenge,
                        tls=context) as front:
            run = run_cli("image", f"{front.host}/secure/app:v1", "--ca-cert",
                          str(tls.ca_pem), "--format", "json", "--retries", "0",
                          env=_env(tmp_path, REGVERIFY_USERNAME=USER,
                                   REGVERIFY_PASSWORD=PASSWORD), subprocess=True)
        received = list(clear_realm.requests)
    assert run.exit_code == 3, run.stderr
    assert received == []
    assert any("not HTTPS" in f["message"] for f in run.json()["findings"])


# --- trust: --ca-cert adds to the system store ------------------------------------------------


def test_ca_cert_adds_to_the_system_trust_store(basic: Secured, tmp_path: Path) -> None:
    """Registry on a private CA, its storage on another CA the system trusts (SSL_CERT_FILE):
    `--ca-cert` for the registry's CA must keep the system's, as curl and skopeo do."""
    private, public = trustme.CA(), trustme.CA()
    front_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    private.issue_cert("127.0.0.1").configure_cert(front_tls)
    storage_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    public.issue_cert("127.0.0.2").configure_cert(storage_tls)
    private_pem, system_bundle = tmp_path / "private.pem", tmp_path / "system.pem"
    private.cert_pem.write_to_path(str(private_pem))
    public.cert_pem.write_to_path(str(system_bundle))
    storage = Storage(basic.server.v2)
    storage.tls, storage.address = storage_tls, "127.0.0.2"
    with storage, _storage_front(basic.server, storage.url, tls=front_tls) as front:
        creds = {"REGVERIFY_USERNAME": USER, "REGVERIFY_PASSWORD": PASSWORD}
        ok = run_cli("image", f"{front.host}/{basic.healthy}", "--ca-cert", str(private_pem),
                     "--format", "json",
                     env=_env(tmp_path, SSL_CERT_FILE=str(system_bundle), **creds), subprocess=True)
        fetched = len(storage.requests)
        untrusted = run_cli("image", f"{front.host}/{basic.healthy}", "--ca-cert",
                            str(private_pem), "--retries", "0", "--verbose",
                            env=_env(tmp_path, SSL_CERT_FILE=str(private_pem), **creds),
                            subprocess=True)
    assert ok.exit_code == 0, (ok.stderr, ok.json()["findings"])
    assert fetched  # the blobs really came from the storage host, over its TLS
    # The storage host's certificate failed: the message names it and says why; -v shows
    # OpenSSL's own error.
    assert untrusted.exit_code == 3
    assert f"TLS verification failed for {storage.host}: " in untrusted.stderr
    assert "certificate" in untrusted.stderr.splitlines()[-1]
    assert "SSLCertVerificationError" in untrusted.stderr


def test_plain_http_server_on_a_tls_handshake_gets_plain_http_advice(
    basic: Secured, tmp_path: Path
) -> None:
    ref = f"{basic.server.host}/{basic.healthy}"
    runs = [run_cli("image", ref, *extra, "--retries", "0", env=_env(tmp_path))
            for extra in ((), ("--insecure",))]
    for run in runs:
        assert run.exit_code == 3 and run.stderr.count("\n") == 1, run.stderr
        assert "this server speaks plain HTTP: use --plain-http" in run.stderr
        assert "--insecure" not in run.stderr
        assert basic.server.host in run.stderr


def test_an_http_url_means_plain_http_for_scan_and_image(basic: Secured, tmp_path: Path) -> None:
    env = _env(tmp_path, REGVERIFY_USERNAME=USER, REGVERIFY_PASSWORD=PASSWORD)
    host = basic.server.host
    scan = run_cli("scan", f"http://{host}", "--format", "json", env=env)
    image = run_cli("image", f"http://{host}/{basic.healthy}", "--format", "json",
                    env=env)
    assert scan.exit_code == 1 and image.exit_code == 0, (scan.stderr, image.stderr)
    assert {i["status"] for i in scan.json()["images"]} == {"ok", "broken"}
    for command, target in (("scan", f"https://{host}"),
                            ("image", f"https://{host}/{basic.healthy}")):
        clash = run_cli(command, target, "--plain-http", env=env)
        assert clash.exit_code == 2 and "https:// but --plain-http" in clash.stderr
