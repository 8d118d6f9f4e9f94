"""Credentials discovery and the Basic/Bearer `httpx.Auth` flow, against respx mocks."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from verifier.errors import (
    AuthRefused,
    CredentialsError,
    IncompleteError,
    RegistryUnreachable,
)
from verifier.registry.auth import (
    Credentials,
    RegistryAuth,
    credentials_from_docker_config,
    docker_config_path,
    parse_challenge,
    resolve_credentials,
    scope_for_path,
)

REGISTRY = "http://reg.test"
REALM = "https://auth.test/token"
CHALLENGE = f'Bearer realm="{REALM}",service="reg.test",scope="repository:foo:pull"'


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- parse_challenge / scope_for_path --------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
         'scope="repository:library/alpine:pull"',
         "bearer",
         {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
          "scope": "repository:library/alpine:pull"}),
        ('BEARER Realm="https://a/t", Service="s"', "bearer", {"realm": "https://a/t",
                                                               "service": "s"}),
        ("Bearer realm=https://a/t,service=reg", "bearer", {"realm": "https://a/t",
                                                            "service": "reg"}),
        ('Bearer realm="https://a/t",scope="repository:a:pull,push"', "bearer",
         {"realm": "https://a/t", "scope": "repository:a:pull,push"}),
        ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
        ("Basic", "basic", {}),
        ("", "", {}),
    ],
)
def test_parse_challenge(header: str, scheme: str, params: dict[str, str]) -> None:
    assert parse_challenge(header) == (scheme, params)


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/v2/foo/manifests/latest", "repository:foo:pull"),
        ("/v2/a/b/c/manifests/sha256:" + "a" * 64, "repository:a/b/c:pull"),
        ("/v2/team/app/blobs/sha256:" + "b" * 64, "repository:team/app:pull"),
        ("/v2/team/app/tags/list", "repository:team/app:pull"),
        ("/v2/_catalog", "registry:catalog:*"),
        ("/v2/", ""),
        ("/other", ""),
    ],
)
def test_scope_for_path(path: str, scope: str) -> None:
    assert scope_for_path(path) == scope


def test_credentials_repr_hides_secrets() -> None:
    creds = Credentials("alice", "s3cr3t-pw", identity_token="s3cr3t-tok")
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert "alice" in text
        assert "s3cr3t" not in text


# -- credentials resolution ----------------------------------------------------------------


def _write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "docker" / "config.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def helper_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake `docker-credential-x` on PATH: knows reg.test and Docker Hub, logs what it got."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "helper.log"
    script = bindir / "docker-credential-x"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "host = sys.stdin.read()\n"
        f"open({str(log)!r}, 'a').write(sys.argv[1] + ' ' + host + '\\n')\n"
        "known = {'reg.test': ('helper-user', 'helper-pass'),\n"
        "         'https://index.docker.io/v1/': ('hub-user', 'hub-pass'),\n"
        "         'tok.test': ('<token>', 'refresh-me')}\n"
        "if host not in known:\n"
        "    print('credentials not found in native keychain')\n"
        "    sys.exit(1)\n"
        "user, secret = known[host]\n"
        "print(json.dumps({'ServerURL': host, 'Username': user, 'Secret': secret}))\n"
    )
    script.chmod(0o755)
    garbage = bindir / "docker-credential-garbage"
    garbage.write_text("#!/bin/sh\necho not json\n")
    garbage.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


def test_explicit_credentials_win(tmp_path: Path) -> None:
    config = _write_config(tmp_path, {"auths": {"reg.test": {"auth": _b64("cfg:cfg")}}})
    env = {"REGVERIFY_USERNAME": "env", "REGVERIFY_PASSWORD": "env-pw"}
    found = resolve_credentials("reg.test", username="cli", password="cli-pw", env=env,
                                docker_config=config)
    assert found == Credentials("cli", "cli-pw")


def test_username_without_password_is_a_usage_error() -> None:
    with pytest.raises(CredentialsError):
        resolve_credentials("reg.test", username="cli", env={})
    with pytest.raises(CredentialsError):
        resolve_credentials("reg.test", password="pw", env={})


def test_environment_beats_docker_config(tmp_path: Path) -> None:
    config = _write_config(tmp_path, {"auths": {"reg.test": {"auth": _b64("cfg:cfg")}}})
    env = {"REGVERIFY_USERNAME": "env", "REGVERIFY_PASSWORD": "env-pw"}
    assert resolve_credentials("reg.test", env=env, docker_config=config) == Credentials(
        "env", "env-pw")
    # Half an environment pair is ignored rather than guessed at.
    only_user = {"REGVERIFY_USERNAME": "env"}
    assert resolve_credentials("reg.test", env=only_user, docker_config=config) == Credentials(
        "cfg", "cfg")


def test_docker_config_path_honours_docker_config(tmp_path: Path) -> None:
    assert docker_config_path({"DOCKER_CONFIG": str(tmp_path)}) == tmp_path / "config.json"
    assert docker_config_path({}) == Path.home() / ".docker" / "config.json"
    config = _write_config(tmp_path, {"auths": {"reg.test": {"auth": _b64("u:p:with:colons")}}})
    env = {"DOCKER_CONFIG": str(config.parent)}
    assert resolve_credentials("reg.test", env=env) == Credentials("u", "p:with:colons")


@pytest.mark.parametrize(
    ("auths", "host", "expected"),
    [
        ({"reg.test": {"auth": _b64("a:b")}}, "reg.test", Credentials("a", "b")),
        ({"https://reg.test": {"auth": _b64("a:b")}}, "reg.test", Credentials("a", "b")),
        ({"reg.test:5000": {"auth": _b64("a:b")}}, "reg.test", None),
        ({"reg.test": {"username": "u", "password": "p"}}, "reg.test", Credentials("u", "p")),
        ({"reg.test": {"identitytoken": "tok"}}, "reg.test",
         Credentials("", "", identity_token="tok")),
        ({"reg.test": {}}, "reg.test", None),
        ({"https://index.docker.io/v1/": {"auth": _b64("hub:pw")}}, "docker.io",
         Credentials("hub", "pw")),
        # The CLI looks Docker Hub up by the host it talks to.
        ({"https://index.docker.io/v1/": {"auth": _b64("hub:pw")}}, "registry-1.docker.io",
         Credentials("hub", "pw")),
    ],
)
def test_docker_config_auths(
    tmp_path: Path, auths: dict[str, Any], host: str, expected: Credentials | None
) -> None:
    config = _write_config(tmp_path, {"auths": auths})
    assert credentials_from_docker_config(host, config) == expected


def test_missing_docker_config_is_anonymous(tmp_path: Path) -> None:
    assert credentials_from_docker_config("reg.test", tmp_path / "nope.json") is None
    assert resolve_credentials("reg.test", env={"DOCKER_CONFIG": str(tmp_path)}) is None


@pytest.mark.parametrize(
    "text",
    ["{not json", "[]", '"x"', "\xff",
     json.dumps({"auths": {"reg.test": {"auth": "%%%"}}}),
     json.dumps({"auths": {"reg.test": {"auth": _b64("no-colon")}}}),
     json.dumps({"auths": {"reg.test": {"auth": _b64(":pw-without-user")}}})],
)
def test_unreadable_docker_config_is_a_credentials_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(CredentialsError) as info:
        credentials_from_docker_config("reg.test", path)
    assert info.value.exit_code == 2


def test_cred_helpers_beat_auths(tmp_path: Path, helper_bin: Path) -> None:
    config = _write_config(tmp_path, {
        "auths": {"reg.test": {"auth": _b64("file:file")}},
        "credHelpers": {"reg.test": "x"},
    })
    assert credentials_from_docker_config("reg.test", config) == Credentials(
        "helper-user", "helper-pass")
    assert helper_bin.read_text() == "get reg.test\n"


def test_creds_store_used_when_auths_entry_is_empty(tmp_path: Path, helper_bin: Path) -> None:
    # What `docker login` writes with a credsStore: an empty placeholder under auths.
    config = _write_config(tmp_path, {"auths": {"reg.test": {}}, "credsStore": "x"})
    assert credentials_from_docker_config("reg.test", config) == Credentials(
        "helper-user", "helper-pass")


def test_creds_store_for_docker_hub(tmp_path: Path, helper_bin: Path) -> None:
    config = _write_config(tmp_path, {"credsStore": "x"})
    expected = Credentials("hub-user", "hub-pass")
    assert credentials_from_docker_config("registry-1.docker.io", config) == expected
    assert helper_bin.read_text() == "get https://index.docker.io/v1/\n"


def test_helper_token_username_means_identity_token(tmp_path: Path, helper_bin: Path) -> None:
    config = _write_config(tmp_path, {"credHelpers": {"tok.test": "x"}})
    found = credentials_from_docker_config("tok.test", config)
    assert found == Credentials("", "", identity_token="refresh-me")


def test_helper_not_found_is_anonymous(tmp_path: Path, helper_bin: Path) -> None:
    config = _write_config(tmp_path, {"credsStore": "x"})
    assert credentials_from_docker_config("other.test", config) is None


@pytest.mark.parametrize("helper", ["garbage", "does-not-exist"])
def test_broken_helper_is_a_credentials_error(
    tmp_path: Path, helper_bin: Path, helper: str
) -> None:
    config = _write_config(tmp_path, {"credHelpers": {"reg.test": helper}})
    with pytest.raises(CredentialsError, match=f"docker-credential-{helper}"):
        credentials_from_docker_config("reg.test", config)


# -- the Bearer / Basic flow ---------------------------------------------------------------


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _registry_handler(valid_tokens: dict[str, str]) -> Callable[[httpx.Request], httpx.Response]:
    """A registry: `Bearer <token>` valid for the repository it was issued for, else 401."""

    def handle(request: httpx.Request) -> httpx.Response:
        repo = scope_for_path(request.url.path).split(":")[1]
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer ") and valid_tokens.get(auth[7:]) == repo:
            return httpx.Response(200, json={"ok": repo})
        challenge = (f'Bearer realm="{REALM}",service="reg.test",'
                     f'scope="repository:{repo}:pull"')
        return httpx.Response(401, headers={"WWW-Authenticate": challenge},
                              json={"errors": [{"code": "UNAUTHORIZED"}]})

    return handle


def _token_handler(valid_tokens: dict[str, str], expires_in: int = 300
                   ) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        scope = request.url.params["scope"]
        token = f"tok{len(valid_tokens) + 1}"
        valid_tokens[token] = scope.split(":")[1]
        return httpx.Response(200, json={"token": token, "expires_in": expires_in})

    return handle


def _run_auth(
    credentials: Credentials | None,
    scenario: Callable[[httpx.AsyncClient, RegistryAuth, respx.MockRouter], Any],
    clock: Clock | None = None,
) -> Any:
    async def main() -> Any:
        with respx.mock(assert_all_called=False) as router:
            async with httpx.AsyncClient() as token_client:
                auth = RegistryAuth(credentials, token_client, clock=clock or Clock())
                async with httpx.AsyncClient(base_url=REGISTRY, auth=auth) as http:
                    return await scenario(http, auth, router)

    return asyncio.run(main())


def test_bearer_flow_fetches_a_token_with_basic_creds_and_retries() -> None:
    tokens: dict[str, str] = {}

    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        registry = router.route(host="reg.test").mock(side_effect=_registry_handler(tokens))
        token = router.get(REALM).mock(side_effect=_token_handler(tokens))
        response = await http.get("/v2/foo/manifests/latest")
        assert response.status_code == 200
        assert token.call_count == 1
        sent = token.calls.last.request
        assert sent.url.params["service"] == "reg.test"
        assert sent.url.params["scope"] == "repository:foo:pull"
        assert sent.headers["authorization"] == "Basic " + _b64("alice:pw")
        assert registry.call_count == 2
        first, second = (call.request for call in registry.calls)
        assert "authorization" not in first.headers
        assert second.headers["authorization"] == "Bearer tok1"
        assert auth.token_requests == 1

    _run_auth(Credentials("alice", "pw"), scenario)


def test_anonymous_bearer_flow_sends_no_authorization_to_the_realm() -> None:
    tokens: dict[str, str] = {}

    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        router.route(host="reg.test").mock(side_effect=_registry_handler(tokens))
        token = router.get(REALM).mock(side_effect=_token_handler(tokens))
        assert (await http.get("/v2/foo/tags/list")).status_code == 200
        assert "authorization" not in token.calls.last.request.headers

    _run_auth(None, scenario)


def test_tokens_are_cached_per_scope() -> None:
    tokens: dict[str, str] = {}

    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        registry = router.route(host="reg.test").mock(side_effect=_registry_handler(tokens))
        token = router.get(REALM).mock(side_effect=_token_handler(tokens))
        await http.get("/v2/foo/manifests/latest")
        assert token.call_count == 1
        # Same repository, another endpoint: the cached token goes out first time.
        before = registry.call_count
        assert (await http.head("/v2/foo/blobs/sha256:" + "a" * 64)).status_code == 200
        assert token.call_count == 1
        assert registry.call_count == before + 1
        assert registry.calls.last.request.headers["authorization"] == "Bearer tok1"
        # Another repository needs its own token: one new token request.
        assert (await http.get("/v2/bar/manifests/latest")).status_code == 200
        assert token.call_count == 2
        assert token.calls.last.request.url.params["scope"] == "repository:bar:pull"
        assert registry.calls.last.request.headers["authorization"] == "Bearer tok2"
        # And the first one is still cached.
        await http.get("/v2/foo/manifests/v2")
        assert token.call_count == 2

    _run_auth(Credentials("alice", "pw"), scenario)


def test_expired_token_is_renewed() -> None:
    tokens: dict[str, str] = {}
    clock = Clock()

    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        router.route(host="reg.test").mock(side_effect=_registry_handler(tokens))
        token = router.get(REALM).mock(side_effect=_token_handler(tokens, expires_in=60))
        await http.get("/v2/foo/manifests/latest")
        clock.now += 50  # still valid (renewed 5 s early)
        await http.get("/v2/foo/manifests/latest")
        assert token.call_count == 1
        clock.now += 10  # past expires_in - 5
        registry_calls = len(router.calls)
        response = await http.get("/v2/foo/manifests/latest")
        assert response.status_code == 200
        assert token.call_count == 2
        # The expired token is never sent: anonymous attempt, challenge, new token, retry.
        assert len(router.calls) == registry_calls + 3
        attempt, _, retried = (call.request for call in router.calls[registry_calls:])
        assert "authorization" not in attempt.headers
        assert retried.headers["authorization"] == "Bearer tok2"

    _run_auth(Credentials("alice", "pw"), scenario, clock)


def test_revoked_token_is_replaced_once() -> None:
    tokens: dict[str, str] = {}

    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        router.route(host="reg.test").mock(side_effect=_registry_handler(tokens))
        token = router.get(REALM).mock(side_effect=_token_handler(tokens))
        await http.get("/v2/foo/manifests/latest")
        tokens.clear()  # the registry forgets every token
        response = await http.get("/v2/foo/manifests/latest")
        assert response.status_code == 200
        assert token.call_count == 2

    _run_auth(Credentials("alice", "pw"), scenario)


@pytest.mark.parametrize("status", [401, 403])
def test_token_service_refusal_is_auth_refused(status: int) -> None:
    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        router.route(host="reg.test").mock(
            return_value=httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE}))
        router.get(REALM).mock(return_value=httpx.Response(status, json={"details": "no"}))
        with pytest.raises(AuthRefused) as info:
            await http.get("/v2/foo/manifests/latest")
        assert info.value.exit_code == 3
        assert "repository:foo:pull" in str(info.value)
        assert "hunter2" not in str(info.value)

    _run_auth(Credentials("alice", "hunter2"), scenario)


@pytest.mark.parametrize(
    ("token_response", "match"),
    [
        (httpx.Response(400), "HTTP 400"),
        (httpx.Response(200, content=b"<html>"), "unparseable"),
        (httpx.Response(200, json=["token"]), "unparseable"),
        (httpx.Response(200, json={"token": "t", "expires_in": "soon"}), "unparseable"),
        (httpx.Response(200, content=b'{"token": "t", "expires_in": 1e400}'), "unparseable"),
        (httpx.Response(200, json={"expires_in": 60}), "without a token"),
        (httpx.Response(200, json={"token": 42}), "without a token"),
    ],
)
def test_bad_token_responses_are_auth_refused(token_response: httpx.Response, match: str) -> None:
    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        router.route(host="reg.test").mock(
            return_value=httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE}))
        router.get(REALM).mock(return_value=token_response)
        with pytest.raises(AuthRefused, match=match):
            await http.get("/v2/foo/manifests/latest")

    _run_auth(None, scenario)


@pytest.mark.parametrize("status", [500, 503])
def test_token_service_failure_is_incomplete_not_refused(status: int) -> None:
    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        router.route(host="reg.test").mock(
            return_value=httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE}))
        router.get(REALM).mock(return_value=httpx.Response(status))
        with pytest.raises(IncompleteError, match=f"HTTP {status}") as info:
            await http.get("/v2/foo/manifests/latest")
        assert info.value.exit_code == 3

    _run_auth(None, scenario)


def test_access_token_field_and_challenge_without_realm() -> None:
    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        router.get(f"{REGISTRY}/v2/foo/manifests/latest").mock(side_effect=[
            httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE}),
            httpx.Response(200),
        ])
        router.get(REALM).mock(return_value=httpx.Response(200, json={"access_token": "at"}))
        assert (await http.get("/v2/foo/manifests/latest")).status_code == 200
        assert router.calls.last.request.headers["authorization"] == "Bearer at"
        router.get(f"{REGISTRY}/v2/bar/manifests/latest").mock(
            return_value=httpx.Response(401, headers={"WWW-Authenticate": 'Bearer service="x"'}))
        with pytest.raises(AuthRefused, match="without a realm"):
            await http.get("/v2/bar/manifests/latest")

    _run_auth(None, scenario)


def test_identity_token_uses_the_oauth_refresh_grant() -> None:
    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        router.get(f"{REGISTRY}/v2/foo/manifests/latest").mock(side_effect=[
            httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE}),
            httpx.Response(200),
        ])
        token = router.post(REALM).mock(return_value=httpx.Response(200, json={"token": "t"}))
        assert (await http.get("/v2/foo/manifests/latest")).status_code == 200
        form = dict(x.split("=", 1) for x in token.calls.last.request.content.decode().split("&"))
        assert form["grant_type"] == "refresh_token"
        assert form["refresh_token"] == "refresh-me"
        assert form["service"] == "reg.test"
        assert "authorization" not in token.calls.last.request.headers

    _run_auth(Credentials("", "", identity_token="refresh-me"), scenario)


def test_token_service_unreachable() -> None:
    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        router.route(host="reg.test").mock(
            return_value=httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE}))
        router.get(REALM).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(RegistryUnreachable, match="auth.test"):
            await http.get("/v2/foo/manifests/latest")

    _run_auth(None, scenario)


def test_basic_challenge_is_answered_then_sent_up_front() -> None:
    basic = "Basic " + _b64("alice:pw")

    def handle(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") == basic:
            return httpx.Response(200)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})

    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        route = router.route(host="reg.test").mock(side_effect=handle)
        assert (await http.get("/v2/")).status_code == 200
        assert route.call_count == 2
        assert (await http.get("/v2/foo/manifests/latest")).status_code == 200
        assert route.call_count == 3  # no second challenge

    _run_auth(Credentials("alice", "pw"), scenario)


def test_refused_basic_credentials_do_not_loop() -> None:
    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        route = router.route(host="reg.test").mock(
            return_value=httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'}))
        assert (await http.get("/v2/")).status_code == 401
        assert route.call_count == 2
        assert (await http.get("/v2/")).status_code == 401
        assert route.call_count == 3

    _run_auth(Credentials("alice", "wrong"), scenario)


def test_basic_challenge_without_credentials_returns_the_401() -> None:
    async def scenario(http: httpx.AsyncClient, auth: RegistryAuth,
                       router: respx.MockRouter) -> None:
        route = router.route(host="reg.test").mock(
            return_value=httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'}))
        assert (await http.get("/v2/")).status_code == 401
        assert route.call_count == 1

    _run_auth(None, scenario)


def test_sync_clients_are_refused() -> None:
    auth = RegistryAuth(None, httpx.AsyncClient())
    with httpx.Client(auth=auth, transport=httpx.MockTransport(lambda r: httpx.Response(200))
                      ) as client, pytest.raises(NotImplementedError):
        client.get("http://reg.test/v2/")
    asyncio.run(auth._token_client.aclose())
