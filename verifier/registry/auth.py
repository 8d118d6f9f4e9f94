"""Registry authentication: credentials discovery and an `httpx.Auth` for Basic and Bearer.

The Bearer flow follows the Docker token spec: on `401` with `WWW-Authenticate: Bearer
realm=...,service=...,scope=...` fetch a token for that scope, cache it until it expires, retry
once.

Where credentials may go: to the registry's own origin, and to the token realm named in a
challenge that origin sent -- nowhere else. A challenge from any other host (object storage a
blob was redirected to) is not answered; a realm must be `https` when the registry is; a token
request follows a redirect to another origin only without Authorization, and a token request
with a body (the refresh-token grant) never follows one.
Secrets are never put in an exception message or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from verifier.errors import AuthRefused, CredentialsError, RegistryUnreachable
from verifier.model.reference import DOCKER_HUB, DOCKER_HUB_API_HOST
from verifier.registry.bodies import BodyCutShort, BodyDecodingError, read_capped

_DOCKER_HUB_CONFIG_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")
#: Every name Docker Hub goes by: the CLI looks credentials up by the API host it talks to.
_DOCKER_HUB_HOSTS = frozenset({DOCKER_HUB, DOCKER_HUB_API_HOST, "index.docker.io"})
_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')
_REPO_PATH = re.compile(r"^/v2/(.+?)/(?:manifests|blobs|tags)/")


@dataclass(frozen=True)
class Credentials:
    """A username and password (or an identity token used as a refresh token)."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never show the secret, even in a debugger dump
        return f"Credentials(username={self.username!r}, password=***)"


def _decode_auth_field(value: str, host: str) -> Credentials:
    # Strict like Docker's decodeAuth: lenient base64 would turn garbage into empty credentials.
    try:
        user, colon, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        message = f"docker config: the 'auth' entry for {host} is not base64"
        raise CredentialsError(message) from None
    if not colon or not user:
        raise CredentialsError(f"docker config: the 'auth' entry for {host} is not user:password")
    return Credentials(user, password)


def _run_helper(helper: str, host: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run(
            [program, "get"], input=host, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        message = f"credential helper {program} failed: {type(exc).__name__}"
        raise CredentialsError(message) from None
    if proc.returncode != 0:
        # Helpers answer "credentials not found" with a non-zero exit: not an error for us.
        return None
    try:
        data = json.loads(proc.stdout)
        username, secret = str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"credential helper {program} printed unparseable output") from None
    if username == "<token>":
        return Credentials("", "", identity_token=secret)
    return Credentials(username, secret)


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`."""
    env = os.environ if env is None else env
    base = env.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def credentials_from_docker_config(host: str, path: Path) -> Credentials | None:
    """Look `host` up in a Docker config file: credHelpers, auths, then credsStore."""
    if not path.exists():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot read docker config {path}: {type(exc).__name__}") from None
    if not isinstance(config, dict):
        raise CredentialsError(f"docker config {path} is not a JSON object")
    keys = _DOCKER_HUB_CONFIG_KEYS if host in _DOCKER_HUB_HOSTS else (host, f"https://{host}")
    helpers = config.get("credHelpers") or {}
    for key in keys:
        if isinstance(helpers, dict) and isinstance(helpers.get(key), str):
            return _run_helper(helpers[key], key)
    auths = config.get("auths") or {}
    for key in keys:
        entry = auths.get(key) if isinstance(auths, dict) else None
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("identitytoken"), str):
            return Credentials("", "", identity_token=entry["identitytoken"])
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            return _decode_auth_field(entry["auth"], key)
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"])
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return _run_helper(store, keys[0])
    return None


def resolve_credentials(
    host: str,
    *,
    username: str | None = None,
    password: str | None = None,
    env: Mapping[str, str] | None = None,
    docker_config: Path | None = None,
) -> Credentials | None:
    """Explicit options first, then REGVERIFY_USERNAME/PASSWORD, then the Docker config."""
    env = os.environ if env is None else env
    if username is not None or password is not None:
        if username is None or password is None:
            raise CredentialsError("--username and --password-stdin must be given together")
        return Credentials(username, password)
    env_user, env_pass = env.get("REGVERIFY_USERNAME"), env.get("REGVERIFY_PASSWORD")
    if env_user is not None and env_pass is not None:
        return Credentials(env_user, env_pass)
    return credentials_from_docker_config(host, docker_config or docker_config_path(env))


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split `Bearer realm="...",service="..."` into a lowercased scheme and its parameters."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def scope_for_path(path: str) -> str:
    """The token scope a request path needs: pull on its repository, or the catalog."""
    if path.startswith("/v2/_catalog"):
        return "registry:catalog:*"
    match = _REPO_PATH.match(path)
    return f"repository:{match.group(1)}:pull" if match else ""


#: Token-service answers that say "not now" rather than "no": retried like registry answers.
_TOKEN_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
#: Redirects a token request may follow.
_MAX_TOKEN_REDIRECTS = 5
#: Largest token answer read (a JWT is a few KiB).
MAX_TOKEN_BYTES = 256 * 1024


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def _netloc(url: httpx.URL) -> str:
    return url.host if url.port is None else f"{url.host}:{url.port}"


class TokenServiceUnavailable(RegistryUnreachable):
    """The token service failed transiently (connection error, 429, 5xx): worth a retry.

    The client's retry loop catches it around each attempt; should it escape, it still means
    "could not verify" (exit 3), never "refused".
    """

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass
class _Token:
    value: str
    expires_at: float


class RegistryAuth(httpx.Auth):
    """Anonymous, Basic or Bearer, decided by the registry's challenge; tokens cached per scope."""

    def __init__(
        self,
        credentials: Credentials | None,
        token_client: httpx.AsyncClient,
        *,
        clock: object = time.monotonic,
        origin: httpx.URL | None = None,
        exchanges: Counter[str] | None = None,
    ) -> None:
        """`origin`: the registry's URL; requests to any other origin get no credentials.
        `exchanges`: counts token-service answers by status, as the client counts its own."""
        self._credentials = credentials
        self._token_client = token_client
        self._clock = clock
        self._origin = _origin(origin) if origin is not None else None
        self._exchanges = exchanges
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._use_basic = False
        self.token_requests = 0

    def _now(self) -> float:
        clock = self._clock
        assert callable(clock)
        return float(clock())

    def _basic_header(self) -> str | None:
        creds = self._credentials
        if creds is None or creds.identity_token:
            return None
        raw = f"{creds.username}:{creds.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _cached(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        if token is None or token.expires_at <= self._now():
            return None
        return token.value

    async def _token_exchange(self, method: str, realm: httpx.URL, query: dict[str, str],
                              headers: dict[str, str], form: dict[str, str] | None
                              ) -> tuple[int, httpx.Headers, bytes]:
        """One token request, redirects followed under the confinement rules; status,
        headers and the (capped) body of the last answer."""
        url = realm
        params: dict[str, str] | None = query
        for _ in range(_MAX_TOKEN_REDIRECTS + 1):
            request = self._token_client.build_request(method, url, params=params,
                                                       headers=headers, data=form)
            try:
                response = await self._token_client.send(request, stream=True,
                                                         follow_redirects=False)
            except httpx.TransportError as exc:
                raise TokenServiceUnavailable(
                    f"token service {_netloc(url)} unreachable: {type(exc).__name__}"
                ) from None
            if self._exchanges is not None:
                self._exchanges[str(response.status_code)] += 1
            try:
                location = response.headers.get("location")
                if response.status_code not in _REDIRECT_STATUS or location is None:
                    try:
                        body, _, too_large = await read_capped(response, MAX_TOKEN_BYTES)
                    except (BodyCutShort, BodyDecodingError, httpx.TransportError) as exc:
                        raise TokenServiceUnavailable(
                            f"token service {_netloc(url)}: answer cut short "
                            f"({type(exc).__name__})") from None
                    return response.status_code, response.headers, b"" if too_large else body
            finally:
                await response.aclose()
            try:
                target = url.join(location.strip())
            except httpx.InvalidURL:
                raise AuthRefused("token service redirected to an unusable location") from None
            if target.scheme not in ("http", "https") or _origin(target) != _origin(url):
                if form is not None:
                    raise AuthRefused(
                        f"token service {_netloc(url)} redirected the token request to "
                        f"another origin ({_netloc(target)}): not sent there")
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            elif form is not None and response.status_code not in (307, 308):
                raise AuthRefused(f"token service {_netloc(url)} redirected a POST with "
                                  f"HTTP {response.status_code}")
            # The query is part of the Location now; the first one is not added again.
            url, params = target, None
        raise AuthRefused(f"token service {_netloc(realm)}: too many redirects")

    async def _fetch_token(self, params: dict[str, str], scope: str,
                           challenger: httpx.URL) -> str:
        realm_text = params.get("realm")
        if not realm_text:
            raise AuthRefused("registry sent a Bearer challenge without a realm")
        try:
            realm = httpx.URL(realm_text)
        except httpx.InvalidURL:
            raise AuthRefused("registry sent a Bearer challenge with an unusable realm") from None
        if realm.scheme not in ("http", "https") or not realm.host:
            raise AuthRefused(f"token realm {realm_text[:80]!r} is not an HTTP(S) URL")
        if challenger.scheme == "https" and realm.scheme != "https":
            # Credentials (and the token) would cross the network in clear text, where every
            # other request to this registry is encrypted.
            raise AuthRefused(f"token realm {_netloc(realm)} is not HTTPS while the registry "
                              "is: credentials not sent")
        query: dict[str, str] = {}
        if params.get("service"):
            query["service"] = params["service"]
        wanted = params.get("scope") or scope
        if wanted:
            query["scope"] = wanted
        creds = self._credentials
        self.token_requests += 1
        if creds is not None and creds.identity_token:
            status, headers, body = await self._token_exchange(
                "POST", realm, {}, {},
                {**query, "grant_type": "refresh_token",
                 "refresh_token": creds.identity_token, "client_id": "regverify"})
        else:
            basic = self._basic_header()
            status, headers, body = await self._token_exchange(
                "GET", realm, query, {"Authorization": basic} if basic else {}, None)
        if status in _TOKEN_TRANSIENT_STATUS:
            retry_after = headers.get("retry-after", "").strip()
            raise TokenServiceUnavailable(
                f"token service answered HTTP {status}",
                status=status,
                retry_after=float(retry_after) if retry_after.isascii()
                and retry_after.isdigit() else None,
            )
        if status in (401, 403):
            raise AuthRefused(
                f"token service refused the credentials for scope {wanted!r} "
                f"(HTTP {status})"
            )
        if status != 200:
            raise AuthRefused(f"token service answered HTTP {status}")
        try:
            data = json.loads(body)
            value = data.get("token") or data.get("access_token")
            expires_in = int(data.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError, OverflowError, RecursionError):
            raise AuthRefused("token service answered with unparseable JSON") from None
        if not isinstance(value, str) or not value:
            raise AuthRefused("token service answered without a token")
        # Renew a little early so a token never expires between check and use.
        self._tokens[scope] = _Token(value, self._now() + max(expires_in - 5, 1))
        return value

    @property
    def challenged(self) -> bool:
        """True once the registry has asked for authentication (a token or Basic is in use).

        Until then every request goes out bare, which is what the flow would send too: a
        client may skip the flow and start it only when a 401 comes back.
        """
        return self._use_basic or bool(self._tokens)

    def _confined(self, url: httpx.URL) -> bool:
        """True when `url` is not the registry's origin: no credentials go there."""
        return self._origin is not None and _origin(url) != self._origin

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Attach what we know works, answer one challenge of the registry's own, retry once."""
        if self._confined(request.url):
            yield request
            return
        scope = scope_for_path(request.url.path)
        token = self._cached(scope)
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        elif self._use_basic and (basic := self._basic_header()):
            request.headers["Authorization"] = basic
        response = yield request
        if response.status_code != 401:
            return
        try:
            answered_by = response.request.url
        except RuntimeError:  # a response built without its request
            answered_by = request.url
        if _origin(answered_by) != _origin(request.url) or self._confined(answered_by):
            # A redirect took the request elsewhere (object storage) and that host wants
            # credentials: never ours. Its 401 is the answer.
            return
        scheme, params = parse_challenge(response.headers.get("www-authenticate", ""))
        if scheme == "bearer":
            refused = request.headers.get("Authorization")
            # One renewal per scope at a time: when a token expires mid-scan, every request in
            # flight gets a 401; the first renews, the others reuse its token.
            async with self._locks.setdefault(scope, asyncio.Lock()):
                token = self._cached(scope)
                if token is None or f"Bearer {token}" == refused:
                    self._tokens.pop(scope, None)
                    token = await self._fetch_token(params, scope, answered_by)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request
        elif scheme == "basic" and (basic := self._basic_header()):
            if "Authorization" in request.headers:
                return  # our credentials were already refused
            self._use_basic = True
            request.headers["Authorization"] = basic
            yield request

    def sync_auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        """The tool is async-only; a sync client would skip our flow silently, so refuse."""
        raise NotImplementedError("RegistryAuth works with httpx.AsyncClient only")
