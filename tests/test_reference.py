"""Reference parsing: the Docker grammar, Docker Hub normalisation, and what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from verifier.errors import ExitCode, InvalidReference, UsageError
from verifier.model.reference import (
    ImageReference,
    is_valid_digest,
    is_valid_repository,
    parse_reference,
    parse_registry,
    validate_digest,
)

SHA = "sha256:" + "a" * 64
SHA512 = "sha512:" + "0123456789abcdef" * 8


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("alpine", "docker.io", "library/alpine", "latest", None),
        ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
        ("library/alpine", "docker.io", "library/alpine", "latest", None),
        ("docker.io/alpine", "docker.io", "library/alpine", "latest", None),
        ("index.docker.io/alpine:edge", "docker.io", "library/alpine", "edge", None),
        ("index.docker.io/user/app", "docker.io", "user/app", "latest", None),
        ("user/app", "docker.io", "user/app", "latest", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/a/b/c:v1", "localhost:5000", "a/b/c", "v1", None),
        ("registry.example.com/infra-ci:latest", "registry.example.com", "infra-ci",
         "latest", None),
        (f"127.0.0.1:5000/app/web@{SHA}", "127.0.0.1:5000", "app/web", None, SHA),
        (f"host.example/repo:v1.2_x-y@{SHA}", "host.example", "repo", "v1.2_x-y", SHA),
        (f"host.example/repo@{SHA512}", "host.example", "repo", None, SHA512),
        ("[::1]:5000/repo:tag", "[::1]:5000", "repo", "tag", None),
        ("[2001:db8::1]/team/repo", "[2001:db8::1]", "team/repo", "latest", None),
        ("Registry.Example.com/app", "Registry.Example.com", "app", "latest", None),
        ("my-host:443/a.b/c__d/e-f/g---h", "my-host:443", "a.b/c__d/e-f/g---h", "latest", None),
        ("host.example/repo:" + "t" * 128, "host.example", "repo", "t" * 128, None),
    ],
)
def test_parses_the_docker_grammar(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert ref == ImageReference(registry, repository, tag, digest)


def test_docker_hub_api_host_and_name() -> None:
    ref = parse_reference("alpine")
    assert ref.name == "docker.io/library/alpine"
    assert ref.api_host == "registry-1.docker.io"
    assert str(ref) == "docker.io/library/alpine:latest"
    assert parse_reference("localhost:5000/x").api_host == "localhost:5000"


def test_manifest_ref_prefers_the_digest() -> None:
    assert parse_reference(f"h.example/r:v1@{SHA}").manifest_ref == SHA
    assert parse_reference("h.example/r:v1").manifest_ref == "v1"
    assert parse_reference("h.example/r", default_tag=None).manifest_ref == "latest"
    assert parse_reference("h.example/r", default_tag=None).tag is None


def test_str_and_with_tag() -> None:
    ref = parse_reference(f"h.example:5000/a/b:v1@{SHA}")
    assert str(ref) == f"h.example:5000/a/b:v1@{SHA}"
    assert ref.with_tag("v2") == ImageReference("h.example:5000", "a/b", "v2", None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " alpine",
        "alpine ",
        "ALPINE",
        "example.com/Foo",
        "example.com/foo/Bar:v1",
        "example.com/foo bar",
        "example.com/foo$",
        "example.com/föo",
        "example.com/foo\n",
        "example.com/-foo",
        "example.com/foo-",
        "example.com/foo//bar",
        "example.com/foo/",
        "example.com/",
        "localhost:5000/",
        ":tag",
        "@" + SHA,
        "example.com/" + "a" * 250,
        "a" * 256,
        "repo:",
        "repo:-bad",
        "repo:.bad",
        "repo:" + "t" * 129,
        "repo:ta@g",
        "repo@md5:" + "a" * 32,
        "repo@sha256:abc",
        "repo@sha256:" + "a" * 63,
        "repo@sha256:" + "a" * 65,
        "repo@sha256:" + "A" * 64,
        "repo@sha256:" + "g" * 64,
        "repo@sha256:../../x",
        "repo@" + SHA + "@" + SHA,
        "repo@",
        "ho_st.example/repo",
        "host.example:port/repo",
        "-host.example/repo",
        "[::1/repo",
        "[zz::1]:5000/repo",
    ],
)
def test_rejects_malformed_references(text: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    assert isinstance(info.value, UsageError)
    assert info.value.exit_code is ExitCode.USAGE
    assert int(info.value.exit_code) == 2
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("invalid")


def test_name_length_limit_is_on_the_full_name() -> None:
    host = "h.example"  # 9 characters + "/" leaves 245 for the path
    assert parse_reference(f"{host}/{'a' * 245}").repository == "a" * 245
    with pytest.raises(InvalidReference, match="longer than 255"):
        parse_reference(f"{host}/{'a' * 246}")


@pytest.mark.parametrize(
    ("digest", "ok"),
    [
        (SHA, True),
        (SHA512, True),
        ("sha384:" + "b" * 96, True),
        ("sha256:" + "a" * 128, False),
        ("sha512:" + "a" * 64, False),
        ("blake3:" + "a" * 64, False),
        ("sha256:" + "A" * 64, False),
        ("sha256" + "a" * 64, False),
        ("", False),
        (42, False),
        (None, False),
    ],
)
def test_digest_validation(digest: object, ok: bool) -> None:
    assert is_valid_digest(digest) is ok
    if isinstance(digest, str):
        if ok:
            assert validate_digest(digest) == digest
        else:
            with pytest.raises(InvalidReference):
                validate_digest(digest)


def test_parse_registry_and_repository_helpers() -> None:
    assert parse_registry("https://registry.example.com/") == "registry.example.com"
    assert parse_registry("127.0.0.1:5000") == "127.0.0.1:5000"
    for bad in ("", "   ", "host/path", "ho st"):
        with pytest.raises(InvalidReference):
            parse_registry(bad)
    assert is_valid_repository("a/b-c/d_e")
    assert not is_valid_repository("A/b")
    assert not is_valid_repository("a" * 256)


# -- property-based ------------------------------------------------------------------------

_LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
_MIXED = _LOWER + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_alnum = st.text(_LOWER, min_size=1, max_size=8)
_separator = st.sampled_from([".", "_", "__", "-", "--"])
_component = st.builds(
    lambda first, rest: first + "".join(sep + part for sep, part in rest),
    _alnum, st.lists(st.tuples(_separator, _alnum), max_size=2),
)
_label = st.builds(
    lambda a, mid, z: a + mid + z if mid or z else a,
    st.sampled_from(_MIXED), st.text(_MIXED + "-", max_size=6), st.text(_MIXED, max_size=1),
).filter(lambda s: not s.endswith("-"))
_port = st.integers(min_value=1, max_value=65535).map(lambda p: f":{p}")
_dotted = st.builds(lambda a, b: f"{a}.{b}", _label,
                    st.lists(_label, min_size=1, max_size=3).map(".".join))
_hosts = st.one_of(
    _dotted,
    st.builds(lambda h, p: h + p, _label, _port),
    st.builds(lambda h, p: h + p, _dotted, _port),
    st.just("localhost"),
    st.builds(lambda p: "localhost" + p, _port),
    st.sampled_from(["[::1]", "[2001:db8::1]:5000", "[fe80::1]:443"]),
    st.just("docker.io"),
)
_tags = st.builds(lambda a, rest: a + rest, st.sampled_from(_MIXED + "_"),
                  st.text(_MIXED + "_.-", max_size=20))
_digests = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex()),
    st.binary(min_size=64, max_size=64).map(lambda b: "sha512:" + b.hex()),
)


@st.composite
def _references(draw: st.DrawFn) -> ImageReference:
    host = draw(_hosts)
    assume(host.lower() != "index.docker.io")  # normalised to docker.io, by design
    components = draw(st.lists(_component, min_size=1, max_size=4))
    if host == "docker.io" and len(components) == 1:
        components.insert(0, "library")
    tag = draw(st.none() | _tags)
    digest = draw(st.none() | _digests)
    if tag is None and digest is None:
        tag = "latest"
    ref = ImageReference(host, "/".join(components), tag, digest)
    assume(len(ref.name) <= 255)
    return ref


@settings(max_examples=200, deadline=None)
@given(_references())
def test_valid_references_round_trip(ref: ImageReference) -> None:
    parsed = parse_reference(str(ref))
    assert parsed == ref
    assert str(parsed) == str(ref)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_invalid_reference(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReference as exc:
        assert "\n" not in str(exc).replace("\\n", "")
        return
    # Anything accepted must itself round-trip.
    assert parse_reference(str(ref)) == ref


_alphabet = st.sampled_from(list("abcAZ09:/@._-[]") + ["sha256:", "a" * 64, "localhost"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_alphabet, max_size=12).map("".join))
def test_reference_like_text_raises_only_invalid_reference(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReference:
        return
    assert parse_reference(str(ref)) == ref
