"""A small Docker token server for tests: JWTs per scope, signed with a key the registry trusts.

Distribution's `auth: token:` config names a realm, a service, an issuer and a root certificate
bundle; a token is accepted when its `x5c` header carries a certificate that chains to that
bundle, its signature verifies, `iss`/`aud` match and `exp` (plus distribution's 60 s leeway)
has not passed. This server signs RS256 tokens with a throwaway self-signed certificate.

Two clocks can be set apart on purpose: `expires_in` is what the client is told, `lifetime` is
when the registry really stops accepting the token. A lifetime shorter than `expires_in` makes
the registry answer 401 to a token the client still holds, which is exactly "the token expired
mid-scan". Everything received and issued is recorded for assertions.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.support.faultproxy import Exchange, LoopbackHTTPServer

#: distribution adds this to `exp` before refusing a token (registry/auth/token/token.go).
REGISTRY_LEEWAY = 60


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server received."""

    method: str
    scopes: tuple[str, ...]
    service: str | None
    user: str | None
    authorization: str | None
    status: int


class TokenServer(LoopbackHTTPServer):
    """Issues pull tokens per scope to `users` (and to anonymous clients if `anonymous`)."""

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None,
                 anonymous: bool = False, refresh_tokens: dict[str, str] | None = None,
                 expires_in: int = 300, lifetime: int | None = None,
                 service: str = "regverify-test-registry",
                 issuer: str = "regverify-test-token-issuer") -> None:
        super().__init__(self._handle)
        self.users = dict(users or {})
        self.anonymous = anonymous
        self.refresh_tokens = dict(refresh_tokens or {})
        self.expires_in = expires_in
        self.lifetime = expires_in if lifetime is None else lifetime
        self.service = service
        self.issuer = issuer
        self.received: list[TokenRequest] = []
        self.issued: list[str] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._cert = self._self_signed()
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path = workdir / "token-signer.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def _self_signed(self) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regverify test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def realm(self) -> str:
        """The URL the registry's Bearer challenge points clients to."""
        return f"{self.url}/token"

    def registry_config(self) -> dict[str, Any]:
        """The `auth:` section for a `RegistryServer(extra_config=...)`; start() this first."""
        return {"auth": {"token": {"realm": self.realm, "service": self.service,
                                   "issuer": self.issuer,
                                   "rootcertbundle": str(self.cert_path)}}}

    def scopes_requested(self) -> list[str]:
        """Every scope asked for, in order, once per token request."""
        return [s for r in self.received for s in r.scopes]

    # -- tokens -----------------------------------------------------------------------------

    def make_token(self, subject: str, scopes: tuple[str, ...]) -> str:
        """A signed JWT granting pull (or the catalog) on each scope."""
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a in ("pull", "*")]
            if kind and name:
                access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self._cert.public_bytes(
                      serialization.Encoding.DER)).decode()]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service,
                  # The registry refuses a token REGISTRY_LEEWAY seconds after exp.
                  "exp": now + self.lifetime - REGISTRY_LEEWAY,
                  "nbf": now - 5, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode())
                                 for part in (header, claims))
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = f"{signing_input}.{_b64url(signature)}"
        self.issued.append(token)
        return token

    def _authenticate(self, authorization: str | None) -> tuple[bool, str | None]:
        if not authorization:
            return self.anonymous, None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False, None
        return self.users.get(user) == password and user in self.users, user

    async def _handle(self, exchange: Exchange) -> None:
        request = exchange.request
        if request.path != "/token" or request.method not in ("GET", "POST"):
            await exchange.respond(404, b"not found\n")
            return
        params = parse_qsl(request.query, keep_blank_values=True)
        if request.method == "POST":
            params += parse_qsl(request.body.decode(errors="replace"), keep_blank_values=True)
        form = dict(params)
        scopes = tuple(s for k, v in params if k == "scope" for s in v.split(" ") if s)
        authorization = request.header("authorization")
        if request.method == "POST" and form.get("grant_type") == "refresh_token":
            user = self.refresh_tokens.get(form.get("refresh_token", ""))
            ok = user is not None
        else:
            ok, user = self._authenticate(authorization)
        status = 200 if ok else 401
        self.received.append(TokenRequest(request.method, scopes, form.get("service"), user,
                                          authorization, status))
        if not ok:
            await exchange.respond(401, b'{"details":"incorrect username or password"}',
                                   [("Content-Type", "application/json"),
                                    ("WWW-Authenticate", 'Basic realm="token"')])
            return
        token = self.make_token(user or "", scopes)
        body = json.dumps({"token": token, "access_token": token, "expires_in": self.expires_in,
                           "issued_at": datetime.datetime.now(datetime.UTC).isoformat()})
        await exchange.respond(200, body.encode(), [("Content-Type", "application/json")])
