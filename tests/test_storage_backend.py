"""The StorageBackend contract, run against both backends: a local folder and moto's S3.

Every contract test takes the parametrized `backend` fixture, so FsBackend (on tmp_path) and
S3Backend (on a fresh bucket of one moto_server per module, 127.0.0.1) must behave alike.
Backend-specific tests follow: symlinks for the folder, locations, errors and traffic for S3.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from verifier.errors import StorageUnavailable, UsageError
from verifier.storage.backend import (
    Listing,
    ObjectError,
    ObjectMissing,
    ObjectTooLarge,
    StorageBackend,
    StoredObject,
)
from verifier.storage.fsbackend import FsBackend
from verifier.storage.parallel import (
    blob_prefixes,
    registry_prefixes,
    repository_prefixes,
    walk_folders,
    walk_parallel,
)

if TYPE_CHECKING:
    from tests.support.s3 import MotoS3
    from verifier.storage.s3backend import S3Backend

ROOTDIR = "regverify/root"
V2 = "docker/registry/v2"
HEX_A = "ab" + "0" * 62
HEX_B = "ab" + "1" * 62
HEX_C = "0f" + "2" * 62


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials for moto in the environment, and nothing from the host's AWS set-up."""
    from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY

    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def make_s3(moto: MotoS3, location: str, **kwargs: Any) -> S3Backend:
    """An S3Backend on moto with short timeouts (the tests never wait on retries)."""
    from verifier.storage.s3backend import S3Backend

    options: dict[str, Any] = {"endpoint_url": moto.url, "path_style": True, "workers": 4,
                               "connect_timeout": 2.0, "read_timeout": 10.0}
    options.update(kwargs)
    return S3Backend(location, **options)


@pytest.fixture(params=["fs", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    """Each contract test runs once on a local folder and once on a fresh moto bucket."""
    if request.param == "fs":
        return FsBackend(tmp_path / "root")
    request.getfixturevalue("aws_env")
    moto: MotoS3 = request.getfixturevalue("moto_s3")
    return make_s3(moto, f"s3://{moto.new_bucket()}/{ROOTDIR}")


def fill(backend: StorageBackend, paths: list[str], workers: int = 8) -> None:
    """Write each path with its own name as content."""
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda p: backend.write(p, p.encode()), paths))


def walked(backend: StorageBackend, path: str = "") -> list[str]:
    return [o.path for o in backend.walk(path)]


# --- the contract ------------------------------------------------------------------------------


def test_write_read_stat_and_replace(backend: StorageBackend) -> None:
    backend.write("a/b/c", b"first")
    assert backend.read("a/b/c", 100) == b"first"
    assert backend.stat("a/b/c") == StoredObject("a/b/c", 5)
    backend.write("a/b/c", b"second!")
    assert backend.read("a/b/c", 100) == b"second!"
    assert backend.stat("a/b/c") == StoredObject("a/b/c", 7)
    backend.write("empty", b"")
    assert backend.read("empty", 10) == b""
    assert backend.read("empty", 0) == b""
    assert backend.stat("empty") == StoredObject("empty", 0)


def test_missing_objects_read_and_stat_as_none(backend: StorageBackend) -> None:
    backend.write("a/b/c", b"x")
    for path in ("nope", "a/nope", "x/y/z", "a/b/c/d", "a/b", "a"):
        assert backend.read(path, 10) is None, path
        assert backend.stat(path) is None, path


def test_read_over_the_limit_raises(backend: StorageBackend) -> None:
    backend.write("big", b"x" * 1000)
    assert backend.read("big", 1000) == b"x" * 1000
    with pytest.raises(ObjectTooLarge) as info:
        backend.read("big", 999)
    assert info.value.path == "big" and "\n" not in str(info.value)
    with pytest.raises(ObjectTooLarge):
        backend.read("big", 0)


def test_list_folder(backend: StorageBackend) -> None:
    fill(backend, ["a/b/c", "a/x", "a/y/z", "a/y/w", "a-b", "top", "a0/q"])
    assert backend.list_folder("") == Listing(
        ["a", "a0"], [StoredObject("a-b", 3), StoredObject("top", 3)])
    expected = Listing(["b", "y"], [StoredObject("a/x", 3)])
    assert backend.list_folder("a") == expected
    assert backend.list_folder("a/") == expected
    assert backend.list_folder("a/y") == Listing(
        [], [StoredObject("a/y/w", 5), StoredObject("a/y/z", 5)])
    assert backend.list_folder("missing") == Listing([], [])
    assert backend.list_folder("top") == Listing([], [])


def test_walk_is_in_key_order(backend: StorageBackend) -> None:
    # '-' (0x2d) and '.' sort before '/' (0x2f), '0' after: a folder's keys are not contiguous
    # with a sibling name that merely starts the same.
    paths = ["a/x", "a-b", "a/b/c", "a0", "a.z/q", "a/b-c/d", "a/b/c2", "b", "a/b0"]
    fill(backend, paths)
    assert walked(backend) == sorted(paths)
    assert walked(backend, "a") == sorted(p for p in paths if p.startswith("a/"))
    assert walked(backend, "a/") == walked(backend, "a")
    assert walked(backend, "a/b") == ["a/b/c", "a/b/c2"]
    assert walked(backend, "missing") == []
    assert walked(backend, "b") == []  # an object is not a folder
    assert [o.size for o in backend.walk("a/b")] == [5, 6]


def test_walk_crosses_pages(backend: StorageBackend) -> None:
    paths = [f"many/{i:05d}" for i in range(1050)] + ["many2/last", "before"]
    fill(backend, paths)
    requests = _count_list_requests(backend)
    got = walked(backend, "many")
    assert got == sorted(p for p in paths if p.startswith("many/"))
    listing = backend.list_folder("many")
    assert len(listing.objects) == 1050 and listing.folders == []
    if requests is not None:
        assert requests() >= 4  # two pages for the walk, two for the folder listing


def _count_list_requests(backend: StorageBackend) -> Any:
    """A counter of ListObjectsV2 requests for an S3 backend, None for a folder."""
    client = getattr(backend, "client", None)
    if client is None:
        return None
    calls: list[str] = []
    client.meta.events.register("before-send.s3.ListObjectsV2",
                                lambda **kw: calls.append(kw["request"].url))
    return lambda: len(calls)


def test_copy(backend: StorageBackend) -> None:
    backend.write("src/obj", b"\x00\x01binary\xff")
    backend.copy("src/obj", "dst/deep/obj")
    assert backend.read("dst/deep/obj", 100) == b"\x00\x01binary\xff"
    assert backend.read("src/obj", 100) == b"\x00\x01binary\xff"
    backend.write("other", b"new")
    backend.copy("other", "dst/deep/obj")  # replaces
    assert backend.read("dst/deep/obj", 100) == b"new"
    with pytest.raises(ObjectMissing) as info:
        backend.copy("no/such", "dst/x")
    assert info.value.path == "no/such"
    assert backend.stat("dst/x") is None


def test_delete(backend: StorageBackend) -> None:
    fill(backend, ["d/one", "d/two"])
    backend.delete("d/one")
    assert backend.stat("d/one") is None
    assert walked(backend) == ["d/two"]
    backend.delete("d/one")  # already gone: fine
    backend.delete("never/was")
    backend.delete("d")  # a folder is not an object
    assert walked(backend) == ["d/two"]


@pytest.mark.parametrize("bad", ["", "/abs", "../up", "a/../../b", "a//b", "a/./b", ".",
                                 "a/b/", "nul\0byte"])
def test_unsafe_paths_are_refused(backend: StorageBackend, bad: str) -> None:
    for call in (lambda: backend.read(bad, 10), lambda: backend.stat(bad),
                 lambda: backend.write(bad, b"x"), lambda: backend.delete(bad),
                 lambda: backend.copy(bad, "ok"), lambda: backend.copy("ok", bad)):
        with pytest.raises(ValueError):
            call()
    if bad not in ("", "a/b/"):  # the root, and a folder path's trailing slash, are fine
        with pytest.raises(ValueError):
            backend.list_folder(bad)
        with pytest.raises(ValueError):
            list(backend.walk(bad))
    assert walked(backend) == []


def test_backend_is_usable_from_many_threads(backend: StorageBackend) -> None:
    paths = [f"t/{i % 7}/{i:04d}" for i in range(200)]
    fill(backend, paths, workers=8)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda p: backend.read(p, 100), paths))
    assert got == [p.encode() for p in paths]


# --- the parallel listing ----------------------------------------------------------------------


def _registry_tree(prefix: str = "") -> list[str]:
    """A small distribution tree: blobs in three prefixes, nested repositories, an upload."""
    v2 = f"{prefix}{V2}"
    paths = [f"{v2}/blobs/sha256/{h[:2]}/{h}/data" for h in (HEX_A, HEX_B, HEX_C)]
    for repo in ("library/alpine", "library/busybox", "app", "app-b"):
        paths.append(f"{v2}/repositories/{repo}/_layers/sha256/{HEX_A}/link")
        paths.append(f"{v2}/repositories/{repo}/_manifests/revisions/sha256/{HEX_B}/link")
        paths.append(f"{v2}/repositories/{repo}/_manifests/tags/latest/current/link")
    paths.append(f"{v2}/repositories/app/_uploads/some-uuid/startedat")
    return paths


def test_blob_prefixes() -> None:
    prefixes = blob_prefixes()
    assert len(prefixes) == 256 == len(set(prefixes))
    assert prefixes[0] == f"{V2}/blobs/sha256/00/"
    assert prefixes[-1] == f"{V2}/blobs/sha256/ff/"
    assert prefixes == sorted(prefixes)
    assert blob_prefixes("some/root/")[0x0f] == f"some/root/{V2}/blobs/sha256/0f/"


def test_parallel_walk_equals_sequential_walk(backend: StorageBackend) -> None:
    paths = _registry_tree() + [f"{V2}/blobs/sha256/{i:02x}/{i:02x}{'3' * 62}/data"
                                for i in range(0, 256, 5)]
    fill(backend, paths)
    prefixes = registry_prefixes(backend)
    assert repository_prefixes(backend) == [
        f"{V2}/repositories/{name}/" for name in ("app", "app-b", "library")]
    seen: dict[str, list[StoredObject]] = {}
    for prefix, objects in walk_parallel(backend, prefixes, workers=4):
        assert prefix not in seen
        assert [o.path for o in objects] == sorted(o.path for o in objects)
        assert all(o.path.startswith(prefix) for o in objects)
        seen[prefix] = objects
    assert set(seen) == set(prefixes)
    everything = sorted((o for objs in seen.values() for o in objs), key=lambda o: o.path)
    assert everything == list(backend.walk(""))
    assert [o.path for o in everything] == sorted(paths)


class _SlowCounting:
    """A backend wrapper that counts walks running at once (each walk sleeps a little)."""

    def __init__(self, inner: StorageBackend, fail_on: str | None = None) -> None:
        self.inner = inner
        self.location = inner.location
        self.fail_on = fail_on
        self.running = 0
        self.peak = 0
        self.started: list[str] = []
        self._lock = threading.Lock()

    def walk(self, path: str) -> Iterator[StoredObject]:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.started.append(path)
        try:
            time.sleep(0.01)
            if path == self.fail_on:
                raise StorageUnavailable(f"{self.location}: boom")
            yield from self.inner.walk(path)
        finally:
            with self._lock:
                self.running -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_parallel_walk_is_bounded_and_stops(tmp_path: Path) -> None:
    inner = FsBackend(tmp_path / "root")
    fill(inner, [f"{V2}/blobs/sha256/{h[:2]}/{h}/data" for h in (HEX_A, HEX_B, HEX_C)])
    counting = _SlowCounting(inner)
    results = dict(walk_parallel(counting, blob_prefixes(), workers=3))  # type: ignore[arg-type]
    assert len(results) == 256 and 1 <= counting.peak <= 3
    assert [o.path for o in results[f"{V2}/blobs/sha256/ab/"]] == [
        f"{V2}/blobs/sha256/ab/{HEX_A}/data", f"{V2}/blobs/sha256/ab/{HEX_B}/data"]

    early = _SlowCounting(inner)
    it = walk_parallel(early, blob_prefixes(), workers=3)  # type: ignore[arg-type]
    next(it)
    it.close()  # the consumer went away: nothing more is started
    assert len(early.started) <= 4 and early.running == 0

    failing = _SlowCounting(inner, fail_on=blob_prefixes()[10])
    with pytest.raises(StorageUnavailable, match="boom"):
        list(walk_parallel(failing, blob_prefixes(), workers=3))  # type: ignore[arg-type]
    assert len(failing.started) < 256 and failing.running == 0
    with pytest.raises(ValueError):
        list(walk_parallel(inner, [], workers=0))

    # The reader's form: every folder in the order given, a failing one with its error.
    going_on = _SlowCounting(inner, fail_on=blob_prefixes()[10])
    walks = list(walk_folders(going_on, blob_prefixes(), workers=3))  # type: ignore[arg-type]
    assert [w.prefix for w in walks] == blob_prefixes()
    assert [w.prefix for w in walks if w.error is not None] == [blob_prefixes()[10]]
    assert isinstance(walks[10].error, StorageUnavailable) and going_on.running == 0
    assert [o.path for o in walks[0xab].objects] == [
        f"{V2}/blobs/sha256/ab/{HEX_A}/data", f"{V2}/blobs/sha256/ab/{HEX_B}/data"]


# --- the local folder --------------------------------------------------------------------------


def test_fs_symlinks_are_objects_never_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(b"outside")
    (outside / "sub" / "file").write_bytes(b"below")
    fs = FsBackend(root)
    fs.write("real/file", b"in")
    os.symlink(outside / "secret", root / "real" / "link")
    os.symlink(outside / "sub", root / "dirlink")

    # Each symlink is one object (lstat size), nothing is listed below a symlinked folder.
    assert walked(fs) == ["dirlink", "real/file", "real/link"]
    assert fs.list_folder("").folders == ["real"]
    assert walked(fs, "dirlink") == [] and fs.list_folder("dirlink") == Listing([], [])
    with pytest.raises(ObjectError, match="symlink"):
        fs.read("real/link", 100)
    assert fs.read("dirlink/file", 100) is None
    assert fs.stat("dirlink/file") is None
    with pytest.raises(ObjectError):
        fs.copy("real/link", "copied")
    with pytest.raises(ObjectError):
        fs.write("dirlink/new", b"x")
    assert not (outside / "sub" / "new").exists()
    fs.delete("dirlink/file")
    assert (outside / "sub" / "file").read_bytes() == b"below"
    fs.write("real/link", b"replaced")  # replaces the symlink itself, never its target
    assert not (root / "real" / "link").is_symlink()
    assert (outside / "secret").read_bytes() == b"outside"
    os.symlink(outside / "secret", root / "gone")
    fs.delete("gone")
    assert not os.path.lexists(root / "gone") and (outside / "secret").exists()


def test_fs_fifo_does_not_hang_and_no_temp_files_stay(tmp_path: Path) -> None:
    fs = FsBackend(tmp_path / "root")
    fs.write("f/ok", b"x")
    os.mkfifo(tmp_path / "root" / "f" / "pipe")
    with pytest.raises(ObjectError, match="not a regular file"):
        fs.read("f/pipe", 10)
    fs.copy("f/ok", "f/copy")
    assert sorted(os.listdir(tmp_path / "root" / "f")) == ["copy", "ok", "pipe"]


# --- S3 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    "http://bucket/prefix", "bucket/prefix", "s3://", "s3:///prefix", "s3://UPPER/prefix",
    "s3://ab/p", "s3://-bucket/p", "s3://bucket-/p", "s3://a..b/p", "s3://192.168.1.2/p",
    "s3://bucket/a/../b", "s3://bucket/a//b", "s3://bucket/./a", "s3://bucket/a\nb",
    "s3://bucket/a\0b", "s3://bucket:9000/p", "s3://b_u/p",
])
def test_bad_locations_are_usage_errors(aws_env: None, bad: str) -> None:
    from verifier.storage.s3backend import S3Backend

    with pytest.raises(UsageError) as info:
        S3Backend(bad)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def test_credentials_in_a_location_or_endpoint_are_never_echoed(aws_env: None) -> None:
    from verifier.storage.s3backend import S3Backend

    for kwargs in ({"location": "s3://AKIAEXAMPLE:s3cr3t@bucket/p"},
                   {"location": "s3://bucket/p", "endpoint_url": "http://AKIAEXAMPLE:s3cr3t@h:1"},
                   {"location": "s3://bucket/p", "endpoint_url": "ftp://h"}):
        with pytest.raises(UsageError) as info:
            S3Backend(**kwargs)
        assert "s3cr3t" not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)


def test_locations_parse(aws_env: None) -> None:
    from verifier.storage.s3backend import S3Location, parse_location

    assert parse_location("s3://bucket") == S3Location("bucket", "")
    assert parse_location("s3://bucket/") == S3Location("bucket", "")
    assert parse_location("s3://my.bucket-1//regverify/root/") == S3Location(
        "my.bucket-1", "regverify/root")
    assert str(parse_location("s3://bucket/a/b/")) == "s3://bucket/a/b"
    assert parse_location("s3://bucket/a").key("x/y") == "a/x/y"
    assert parse_location("s3://bucket").key("x/y") == "x/y"


def test_s3_keys_live_under_the_prefix(aws_env: None, moto_s3: MotoS3) -> None:
    from tests.support.s3 import ROOTDIRECTORY

    bucket = moto_s3.new_bucket()
    s3 = make_s3(moto_s3, f"s3://{bucket}{ROOTDIRECTORY}")
    assert s3.location == f"s3://{bucket}/{ROOTDIR}"
    s3.write(f"{V2}/x/link", b"sha256:" + HEX_A.encode())
    client = moto_s3.client()
    client.put_object(Bucket=bucket, Key="regverify/rootsibling/not-mine", Body=b"x")
    client.put_object(Bucket=bucket, Key=f"{ROOTDIR}/folder-marker/", Body=b"")
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == [
        f"{ROOTDIR}/docker/registry/v2/x/link", f"{ROOTDIR}/folder-marker/",
        "regverify/rootsibling/not-mine"]
    assert walked(s3) == [f"{V2}/x/link"]
    assert s3.list_folder("") == Listing(["docker", "folder-marker"], [])
    whole = make_s3(moto_s3, f"s3://{bucket}")
    assert walked(whole) == [f"{ROOTDIR}/{V2}/x/link", "regverify/rootsibling/not-mine"]
    assert whole.list_folder("").folders == ["regverify"]


def test_s3_read_asks_for_limit_plus_one_bytes(aws_env: None, moto_s3: MotoS3) -> None:
    s3 = make_s3(moto_s3, f"s3://{moto_s3.new_bucket()}/{ROOTDIR}")
    s3.write("blob", b"y" * (1 << 20))
    ranges: list[str | None] = []
    received: list[int] = []
    s3.client.meta.events.register(
        "before-send.s3.GetObject", lambda **kw: ranges.append(kw["request"].headers["Range"]))
    s3.client.meta.events.register(
        "after-call.s3.GetObject",
        lambda **kw: received.append(int(kw["http_response"].headers["Content-Length"])))
    with pytest.raises(ObjectTooLarge, match="1048576 bytes > 128"):
        s3.read("blob", 128)
    assert ranges == [b"bytes=0-128"] or ranges == ["bytes=0-128"]
    assert received == [129]  # the rest of the megabyte never crossed the wire


def test_s3_missing_bucket_is_storage_unavailable(aws_env: None, moto_s3: MotoS3) -> None:
    s3 = make_s3(moto_s3, "s3://no-such-bucket-here/root")
    for call in (lambda: s3.list_folder(""), lambda: list(s3.walk("")),
                 lambda: s3.read("a", 10), lambda: s3.stat("a"), lambda: s3.write("a", b"x"),
                 lambda: s3.copy("a", "b")):
        with pytest.raises(StorageUnavailable) as info:
            call()
        message = str(info.value)
        assert "s3://no-such-bucket-here/root" in message and "no such bucket" in message
        assert "\n" not in message


def test_s3_unreachable_endpoint_is_storage_unavailable(aws_env: None) -> None:
    from verifier.storage.s3backend import S3Backend

    with socket.socket() as sock:  # a port nobody listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s3 = S3Backend("s3://bucket/root", endpoint_url=f"http://127.0.0.1:{port}", path_style=True,
                   connect_timeout=1.0, read_timeout=1.0, max_attempts=1)
    started = time.monotonic()
    for call in (lambda: s3.list_folder(""), lambda: s3.read("a", 10), lambda: s3.stat("a")):
        with pytest.raises(StorageUnavailable) as info:
            call()
        message = str(info.value)
        assert message.startswith("s3://bucket/root: cannot reach the S3 endpoint "
                                  f"http://127.0.0.1:{port}")
        assert "\n" not in message
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(("code", "status", "expected"), [
    ("AccessDenied", 403, "access denied"),
    ("InvalidAccessKeyId", 403, "refused the AWS credentials (InvalidAccessKeyId)"),
    ("SignatureDoesNotMatch", 403, "refused the AWS credentials (SignatureDoesNotMatch)"),
    ("InternalError", 500, "InternalError (HTTP 500) after retries"),
])
def test_s3_refusals_are_storage_unavailable(aws_env: None, moto_s3: MotoS3, code: str,
                                             status: int, expected: str) -> None:
    from botocore.stub import Stubber  # type: ignore[import-untyped]

    from tests.support.s3 import ACCESS_KEY, SECRET_KEY

    s3 = make_s3(moto_s3, "s3://some-bucket/root")
    with Stubber(s3.client) as stub:
        stub.add_client_error("list_objects_v2", service_error_code=code,
                              service_message=f"key {ACCESS_KEY} secret {SECRET_KEY}",
                              http_status_code=status)
        with pytest.raises(StorageUnavailable) as info:
            s3.list_folder("")
    message = str(info.value)
    assert message.startswith("s3://some-bucket/root: ") and expected in message
    assert ACCESS_KEY not in message and SECRET_KEY not in message and "\n" not in message


def test_s3_without_credentials_is_storage_unavailable(
        aws_env: None, moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    s3 = make_s3(moto_s3, "s3://some-bucket/root")
    with pytest.raises(StorageUnavailable, match="no usable AWS credentials found"):
        s3.stat("x")


def test_s3_credentials_come_from_the_shared_files(
        aws_env: None, moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.support.s3 import ACCESS_KEY, SECRET_KEY

    # Made first: the harness's client (boto3's default session) must not see AWS_PROFILE.
    bucket = moto_s3.new_bucket()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    creds = tmp_path / "credentials"
    creds.write_text(f"[ci]\naws_access_key_id = {ACCESS_KEY}\n"
                     f"aws_secret_access_key = {SECRET_KEY}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", "ci")
    s3 = make_s3(moto_s3, f"s3://{bucket}/root")
    s3.write("x", b"y")
    assert s3.read("x", 10) == b"y"
    monkeypatch.setenv("AWS_PROFILE", "nope")
    with pytest.raises(UsageError, match="AWS profile 'nope' not found"):
        make_s3(moto_s3, "s3://some-bucket/root")


def test_s3_talks_to_the_given_endpoint_only(
        aws_env: None, moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = moto_s3.new_bucket()
    connects: list[Any] = []
    lookups: list[Any] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        connects.append(address)
        real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    s3 = make_s3(moto_s3, f"s3://{bucket}/{ROOTDIR}")  # credentials are resolved from here on
    fill(s3, _registry_tree(), workers=4)
    assert s3.read(f"{V2}/repositories/app/_uploads/some-uuid/startedat", 1000) is not None
    s3.stat("missing")
    s3.copy(_registry_tree()[0], "copied")
    s3.delete("copied")
    dict(walk_parallel(s3, registry_prefixes(s3), workers=4))
    assert connects and lookups
    assert {tuple(a[:2]) for a in connects} == {("127.0.0.1", moto_s3.port)}
    assert set(lookups) == {"127.0.0.1"}


def test_boto3_is_imported_only_when_an_s3_backend_is_made() -> None:
    code = ("import sys, verifier.cli.main, verifier.storage.s3backend, "
            "verifier.storage.fsbackend, verifier.storage.parallel; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))")
    tree = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": tree})
    assert out.stdout.strip() == "[]"
