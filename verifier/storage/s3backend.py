"""`StorageBackend` over an S3 bucket (or any S3-compatible store): distribution's ``s3`` driver.

`S3Backend("s3://BUCKET/PREFIX")` reads the tree distribution's ``s3`` driver keeps below
``PREFIX`` (the registry's ``rootdirectory``). Credentials and region are found exactly as the
AWS tools find them (boto3's default chain: environment, shared config and credentials files,
container, instance and web-identity roles); nothing here reads or prints them. This is the only
module that imports boto3, and only when a backend is made, so start-up never pays for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from verifier.errors import StorageUnavailable, UsageError
from verifier.storage.backend import (
    Listing,
    ObjectError,
    ObjectMissing,
    ObjectTooLarge,
    StoredObject,
    folder_path,
    object_path,
)

T = TypeVar("T")

_SCHEME = "s3://"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d+\.\d+\.\d+\.\d+")
_CONTENT_RANGE_TOTAL = re.compile(r"bytes \d+-\d+/(\d+)")
#: Error codes meaning the credentials themselves were refused (not a permission on one key).
_CREDENTIAL_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidClientTokenId",
})
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "403", "Forbidden"})
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def _shown(text: str) -> str:
    """`text` fit for a one-line message: bounded, control characters escaped."""
    return repr(text[:200])[1:-1]


@dataclass(frozen=True)
class S3Location:
    """A parsed ``s3://BUCKET/PREFIX``; `prefix` has no leading or trailing ``/``."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"{_SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{_SCHEME}{self.bucket}"

    def key(self, path: str) -> str:
        """The object key of a backend path ("" is the root itself)."""
        if not self.prefix:
            return path
        return f"{self.prefix}/{path}" if path else self.prefix

    def folder_prefix(self, folder: str) -> str:
        """The key prefix listing below a folder path: ends in ``/`` except for a bare bucket."""
        key = self.key(folder)
        return f"{key}/" if key else ""


def parse_location(text: str) -> S3Location:
    """Parse and check ``s3://BUCKET[/PREFIX]``; anything else raises a one-line UsageError."""
    if not text.startswith(_SCHEME):
        raise UsageError(f"not an s3 location (expected s3://BUCKET/PREFIX): '{_shown(text)}'")
    bucket, _, prefix = text[len(_SCHEME):].partition("/")
    if "@" in bucket or ":" in bucket:
        # Never echoed: whatever stands before '@' may be a key pair typed in the wrong place.
        raise UsageError("an s3 location names a bucket only (s3://BUCKET/PREFIX); credentials "
                         "and ports do not belong in it (use the AWS environment or config)")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IPV4.fullmatch(bucket):
        raise UsageError(f"not a valid S3 bucket name in '{_shown(text)}' (3-63 lowercase "
                         "letters, digits, '.' and '-', starting and ending with a letter or "
                         "digit)")
    prefix = prefix.strip("/")
    if prefix and (any(ord(c) < 0x20 or c == "\x7f" for c in prefix)
                   or any(part in ("", ".", "..") for part in prefix.split("/"))):
        raise UsageError(f"unsafe prefix in s3 location '{_shown(text)}' (an empty, '.' or '..' "
                         "part, or a control character)")
    return S3Location(bucket, prefix)


def _check_endpoint(url: str) -> str:
    """An ``http(s)://host[:port]`` endpoint, or a UsageError that never echoes user info."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise UsageError(f"not an endpoint URL: '{_shown(url)}'") from None
    if parts.username is not None or parts.password is not None:
        raise UsageError("the S3 endpoint URL must not hold credentials "
                         "(use the AWS environment or config)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"not an http(s) endpoint URL: '{_shown(url)}'")
    return url


class S3Backend:
    """An S3 bucket prefix as a `StorageBackend`, on one thread-safe boto3 client.

    `workers` sizes the connection pool (the parallel listing's pool); botocore retries in
    "standard" mode (`max_attempts` in all, throttling and 5xx with backoff).
    """

    def __init__(self, location: str, *, endpoint_url: str | None = None,
                 path_style: bool = False, workers: int = 16, connect_timeout: float = 10.0,
                 read_timeout: float = 60.0, max_attempts: int = 3) -> None:
        self.loc = parse_location(location)
        self.location = str(self.loc)
        if endpoint_url is not None:
            _check_endpoint(endpoint_url)
        # Imported here, not at the top: `regverify` start-up must not pay for boto3.
        import boto3  # type: ignore[import-untyped]
        import botocore.config  # type: ignore[import-untyped]
        import botocore.exceptions  # type: ignore[import-untyped]

        self._exc: Any = botocore.exceptions
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            max_pool_connections=max(1, workers),
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            s3={"addressing_style": "path" if path_style else "auto"},
        )
        try:
            session = boto3.session.Session()
            #: The boto3 S3 client (thread-safe); exposed for event hooks (request counting).
            self.client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)
        except botocore.exceptions.ProfileNotFound as exc:
            profile = _shown(str(exc.kwargs.get("profile", "")))
            raise UsageError(f"{self.location}: AWS profile '{profile}' not found in the AWS "
                             "config") from None
        except (ValueError, botocore.exceptions.BotoCoreError) as exc:
            raise UsageError(f"{self.location}: cannot set up the S3 client "
                             f"({type(exc).__name__})") from None
        self._bucket_checked = False

    # --- errors -----------------------------------------------------------------------------

    @property
    def _endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def _call(self, what: str, path: str, fn: Callable[[], T]) -> T:
        """Run one request; storage-wide failures become StorageUnavailable (one line)."""
        exc_mod = self._exc
        try:
            return fn()
        except exc_mod.ClientError as exc:
            raise self._client_error(exc, what, path) from None
        except (exc_mod.EndpointConnectionError, exc_mod.ConnectTimeoutError) as exc:
            raise StorageUnavailable(
                f"{self.location}: cannot reach the S3 endpoint {self._endpoint} "
                f"({type(exc).__name__})") from None
        except exc_mod.ReadTimeoutError:
            raise StorageUnavailable(f"{self.location}: the S3 endpoint {self._endpoint} did not "
                                     f"answer in time ({what} {_shown(path) or '/'})") from None
        except (exc_mod.NoCredentialsError, exc_mod.PartialCredentialsError):
            raise StorageUnavailable(
                f"{self.location}: no usable AWS credentials found (environment, shared "
                "config/credentials files, container or instance role)") from None
        except exc_mod.BotoCoreError as exc:
            raise StorageUnavailable(f"{self.location}: {what} {_shown(path) or '/'} failed "
                                     f"({type(exc).__name__})") from None

    def _client_error(self, exc: Any, what: str, path: str) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or "?"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        # The server's own message is left out: some services echo request details in it.
        if code == "NoSuchBucket":
            return StorageUnavailable(f"{self.location}: no such bucket '{self.loc.bucket}'")
        if code in _CREDENTIAL_CODES:
            return StorageUnavailable(f"{self.location}: the storage refused the AWS "
                                      f"credentials ({code})")
        # Without s3:ListBucket, S3 answers 403 even for a missing key: the storage cannot be
        # read as needed, so this too is storage-wide.
        if code in _DENIED_CODES or status == 403:
            return StorageUnavailable(f"{self.location}: access denied ({what} "
                                      f"{_shown(path) or '/'}: {code})")
        if status is not None and status < 500 and code not in ("SlowDown", "Throttling"):
            return ObjectError(f"{self.location}: {what} {_shown(path) or '/'}: {code} "
                               f"(HTTP {status})", path)
        return StorageUnavailable(f"{self.location}: {what} {_shown(path) or '/'}: {code} "
                                  f"(HTTP {status}) after retries")

    @staticmethod
    def _code(exc: Any) -> str:
        return str(exc.response.get("Error", {}).get("Code", ""))

    def _ensure_bucket(self) -> None:
        """HeadBucket once: a HEAD's 404 alone cannot tell a missing key from a missing bucket."""
        if self._bucket_checked:
            return

        def head() -> None:
            try:
                self.client.head_bucket(Bucket=self.loc.bucket)
            except self._exc.ClientError as exc:
                if self._code(exc) in ("404", "NoSuchBucket", "NotFound"):
                    raise StorageUnavailable(
                        f"{self.location}: no such bucket '{self.loc.bucket}'") from None
                raise

        self._call("check bucket", "", head)
        self._bucket_checked = True  # a race only costs a second HeadBucket

    # --- listing ----------------------------------------------------------------------------

    def _pages(self, folder: str, delimiter: str | None) -> Iterator[dict[str, Any]]:
        """ListObjectsV2 pages below `folder`, each fetched when the previous one is used."""
        args: dict[str, Any] = {"Bucket": self.loc.bucket,
                                "Prefix": self.loc.folder_prefix(folder)}
        if delimiter is not None:
            args["Delimiter"] = delimiter
        while True:
            page: dict[str, Any] = self._call(
                "list", folder, lambda: self.client.list_objects_v2(**args))
            yield page
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:
                raise StorageUnavailable(f"{self.location}: a truncated listing of "
                                         f"{folder or '/'} came without a continuation token")
            args["ContinuationToken"] = token

    def _rel(self, key: str) -> str:
        return key[len(self.loc.folder_prefix("")):]

    def list_folder(self, path: str) -> Listing:
        """One level below `path` (ListObjectsV2 with Delimiter "/", every page)."""
        folder = folder_path(path)
        cut = len(self.loc.folder_prefix(folder))
        folders: list[str] = []
        objects: list[StoredObject] = []
        for page in self._pages(folder, "/"):
            folders.extend(cp["Prefix"][cut:-1] for cp in page.get("CommonPrefixes", []))
            objects.extend(StoredObject(self._rel(o["Key"]), int(o["Size"]))
                           for o in page.get("Contents", []) if not o["Key"].endswith("/"))
        return Listing(sorted(folders), sorted(objects, key=lambda o: o.path))

    def walk(self, path: str) -> Iterator[StoredObject]:
        """Every object below `path` in key order, yielded page by page as pages arrive.

        Keys ending in ``/`` (folder markers some tools create) are not objects and are skipped.
        """
        folder = folder_path(path)
        for page in self._pages(folder, None):
            for o in page.get("Contents", []):
                if not o["Key"].endswith("/"):
                    yield StoredObject(self._rel(o["Key"]), int(o["Size"]))

    # --- objects ----------------------------------------------------------------------------

    def read(self, path: str, limit: int) -> bytes | None:
        """GetObject of the first `limit` + 1 bytes: a larger object is detected, not fetched."""
        rel = object_path(path)
        if limit < 0:
            raise ValueError(f"negative read limit {limit}")
        key = self.loc.key(rel)

        def get() -> bytes | None:
            try:
                resp = self.client.get_object(Bucket=self.loc.bucket, Key=key,
                                              Range=f"bytes=0-{limit}")
            except self._exc.ClientError as exc:
                code = self._code(exc)
                if code in ("NoSuchKey", "404"):
                    return None
                if code == "InvalidRange":
                    return b""  # byte 0 is past the end: the object exists and is empty
                raise
            body = resp["Body"]
            try:
                total = _CONTENT_RANGE_TOTAL.fullmatch(resp.get("ContentRange") or "")
                if total is not None and int(total.group(1)) > limit:
                    raise ObjectTooLarge(f"{self.location}: {rel}: {total.group(1)} bytes > "
                                         f"{limit}", rel)
                data: bytes = body.read(limit + 1)
            finally:
                body.close()
            if len(data) > limit:
                raise ObjectTooLarge(f"{self.location}: {rel}: more than {limit} bytes", rel)
            return data

        return self._call("read", rel, get)

    def stat(self, path: str) -> StoredObject | None:
        """HeadObject: the size, or None when the object does not exist."""
        rel = object_path(path)
        key = self.loc.key(rel)

        def head() -> StoredObject | None:
            try:
                resp = self.client.head_object(Bucket=self.loc.bucket, Key=key)
            except self._exc.ClientError as exc:
                if self._code(exc) in _MISSING_KEY_CODES:
                    return None
                raise
            return StoredObject(rel, int(resp["ContentLength"]))

        found = self._call("stat", rel, head)
        if found is None:
            self._ensure_bucket()
        return found

    def copy(self, src: str, dst: str) -> None:
        """CopyObject, server-side (one request: fine for links and journals, up to 5 GiB)."""
        src_rel, dst_rel = object_path(src), object_path(dst)
        source = {"Bucket": self.loc.bucket, "Key": self.loc.key(src_rel)}

        def copy() -> None:
            try:
                self.client.copy_object(Bucket=self.loc.bucket, Key=self.loc.key(dst_rel),
                                        CopySource=source)
            except self._exc.ClientError as exc:
                if self._code(exc) in ("NoSuchKey", "404"):
                    raise ObjectMissing(f"{self.location}: copy source {src_rel} does not "
                                        "exist", src_rel) from None
                raise

        self._call("copy", src_rel, copy)

    def write(self, path: str, data: bytes) -> None:
        """PutObject (creates or replaces)."""
        rel = object_path(path)
        self._call("write", rel, lambda: self.client.put_object(
            Bucket=self.loc.bucket, Key=self.loc.key(rel), Body=data,
            ContentType="application/octet-stream"))

    def write_new(self, path: str, data: bytes) -> bool:
        """PutObject with ``If-None-Match: *``: True if created, False if an object was there
        (412, or 409 from a concurrent conditional write). S3 and most compatible stores honour
        the condition; one that ignores it behaves like `write`."""
        rel = object_path(path)
        exc_mod = self._exc

        def put() -> bool:
            try:
                self.client.put_object(Bucket=self.loc.bucket, Key=self.loc.key(rel), Body=data,
                                       ContentType="application/octet-stream", IfNoneMatch="*")
            except exc_mod.ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if self._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or (
                        status in (409, 412)):
                    return False
                raise
            return True

        return self._call("write", rel, put)

    def delete(self, path: str) -> None:
        """DeleteObject (S3 answers 204 for a missing key too)."""
        rel = object_path(path)

        def delete() -> None:
            try:
                self.client.delete_object(Bucket=self.loc.bucket, Key=self.loc.key(rel))
            except self._exc.ClientError as exc:
                if self._code(exc) != "NoSuchKey":
                    raise

        self._call("delete", rel, delete)
