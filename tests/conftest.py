"""Shared pytest fixtures for tests against the real distribution registry."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import cli
from tests.support.registry import HarnessError, RegistryServer, find_registry_bin
from tests.support.skopeo import skopeo_available

if TYPE_CHECKING:  # imported lazily below: only S3 tests need moto and boto3
    from tests.support.s3 import MotoS3, S3Registry

ALLOW_SKIP_ENV = "REGVERIFY_ALLOW_SKIP"


def _allow_skip() -> bool:
    return os.environ.get(ALLOW_SKIP_ENV) == "1"


def _missing(reason: str) -> None:
    """Skip when the developer opted in, otherwise fail: CI must never skip silently."""
    if _allow_skip():
        pytest.skip(reason)
    pytest.fail(f"{reason} (set {ALLOW_SKIP_ENV}=1 to skip instead of failing)", pytrace=False)


def _registry_bin_or_none() -> tuple[str | None, str]:
    try:
        return find_registry_bin(), ""
    except HarnessError as exc:
        return None, str(exc)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip or fail ``registry``/``skopeo``-marked tests whose tools are missing."""
    if item.get_closest_marker("registry") is not None:
        found, reason = _registry_bin_or_none()
        if found is None:
            _missing(reason)
    if item.get_closest_marker("skopeo") is not None and not skopeo_available():
        _missing("skopeo is not installed (Debian package 'skopeo')")


@pytest.fixture
def run_cli() -> cli.RunCli:
    """Run `regverify ARGS` (in-process; `subprocess=True` for a real process): a `CliResult`."""
    return cli.run_cli


@pytest.fixture(scope="session")
def registry_bin() -> str:
    """Path of the distribution registry binary."""
    found, reason = _registry_bin_or_none()
    if found is None:
        _missing(reason)
    assert found is not None
    return found


@pytest.fixture
def registry(
    registry_bin: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[RegistryServer]:
    """A fresh, started registry with its own storage; stopped after the test.

    Its workdir (config, log, storage) lives under tmp_path so it survives a failing test.
    """
    server = RegistryServer(workdir=tmp_path / "registry", registry_bin=registry_bin)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        # Shown by pytest with the failure report, so a broken test shows what the registry said.
        request.node.add_report_section(
            "teardown", "registry log", f"{server.log_path}\n{server.log_tail()}"
        )


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """One ``moto_server`` per test module on 127.0.0.1; each test takes its own bucket."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        _missing("moto[server] and boto3 are not installed (pip install -e '.[test]')")
    from tests.support.s3 import MotoS3

    with MotoS3(tmp_path_factory.mktemp("moto")) as moto:
        yield moto


@pytest.fixture
def s3_registry(
    moto_s3: MotoS3, registry_bin: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[S3Registry]:
    """A started registry on the ``s3`` driver (redirects on) over a fresh moto bucket.

    Its storage traffic goes through a recorder (``.recorder``); stopped after the test.
    """
    from tests.support.s3 import start_s3_registry

    with start_s3_registry(moto_s3, tmp_path / "registry", registry_bin=registry_bin) as s3:
        try:
            yield s3
        finally:
            request.node.add_report_section(
                "teardown", "registry log",
                f"{s3.registry.log_path}\n{s3.registry.log_tail()}")
