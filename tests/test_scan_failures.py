"""scan_failures.py: a listing or request that failed becomes a finding, never a defect verdict."""

from __future__ import annotations

import pytest

from verifier.errors import AuthRefused, IncompleteError
from verifier.model.findings import Kind
from verifier.registry.client import RequestFailed
from verifier.registry.listing import ListingError
from verifier.scan_failures import catalog_failure, image_failure, tag_list_failure


def _failed(status: int | None) -> RequestFailed:
    return RequestFailed("GET /v2/_catalog failed after 5 attempts: HTTP 503", method="GET",
                         url="/v2/_catalog", status=status)


def test_catalog_refused_names_the_scope_and_the_explicit_names() -> None:
    error = ListingError("/v2/_catalog answered HTTP 401 UNAUTHORIZED", status=401, refused=True)
    failure = catalog_failure("reg.test", error, last=None, explicit=2)
    assert failure.refused
    assert failure.finding.kind is Kind.CATALOG_INACCESSIBLE and failure.finding.is_incomplete
    assert failure.finding.registry == "reg.test" and failure.finding.http_status == 401
    assert failure.finding.message == (
        "catalog could not be read from the start: /v2/_catalog answered HTTP 401 UNAUTHORIZED"
        " (a token needs the registry:catalog:* scope); carrying on with the 2 repositories"
        " named explicitly")


def test_catalog_cut_off_midway_is_incomplete() -> None:
    failure = catalog_failure("reg.test", _failed(503), last="team/app", explicit=0)
    assert not failure.refused and failure.finding.http_status == 503
    assert failure.finding.message.startswith("catalog could not be read after 'team/app': GET")
    refused = catalog_failure("reg.test", AuthRefused("token refused"), last=None, explicit=0)
    assert refused.refused and refused.finding.http_status is None
    assert "credentials refused for the catalog: token refused" in refused.finding.message


def test_tag_list_404_depends_on_who_named_the_repository() -> None:
    error = ListingError("/v2/a/tags/list answered HTTP 404 NAME_UNKNOWN", status=404)
    assert tag_list_failure("a", error, explicit_only=False) is None
    found = tag_list_failure("a", error, explicit_only=True)
    assert found is not None and found.kind is Kind.MANIFEST_MISSING and found.is_defect
    assert found.message == "repository not found (/v2/a/tags/list answered HTTP 404 NAME_UNKNOWN)"


@pytest.mark.parametrize(("error", "kind", "status"), [
    (ListingError("refused", status=403, refused=True), Kind.AUTH_FAILED, 403),
    (ListingError("pagination loops"), Kind.REQUEST_FAILED, None),
    (AuthRefused("no"), Kind.AUTH_FAILED, None),
    (_failed(502), Kind.REQUEST_FAILED, 502),
])
def test_other_tag_list_failures_are_incomplete(error: Exception, kind: Kind,
                                                status: int | None) -> None:
    assert isinstance(error, ListingError | AuthRefused | RequestFailed)
    found = tag_list_failure("a", error, explicit_only=False)
    assert found is not None and found.kind is kind and found.http_status == status
    assert found.is_incomplete and found.message.startswith("tag list: ")


def test_image_failure() -> None:
    auth = image_failure("a", "v1", AuthRefused("refused"))
    gone = image_failure("a", "v1", IncompleteError("unreachable"))
    assert (auth.kind, gone.kind) == (Kind.AUTH_FAILED, Kind.REQUEST_FAILED)
    assert (gone.repository, gone.reference, gone.message) == ("a", "v1", "unreachable")
