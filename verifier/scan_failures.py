"""What a scan makes of a listing or a request that failed: the finding it becomes.

A catalog, a tag list or an image that could not be read is never a defect of the registry's
content: it becomes a `catalog_inaccessible`, `auth_failed` or `request_failed` finding (exit 3)
-- except a tag list that answers 404, which is either a repository with nothing to pull or,
for a name the user gave, a repository that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.errors import AuthRefused, IncompleteError
from verifier.model.findings import Finding, Kind, Severity
from verifier.registry.client import RequestFailed
from verifier.registry.listing import ListingError

#: How reading a listing (catalog or tag list) can fail.
ListingFailure = ListingError | AuthRefused | RequestFailed


@dataclass(frozen=True)
class CatalogFailure:
    """A catalog that could not be read (further): its finding, and whether access was refused."""

    refused: bool
    finding: Finding


def catalog_failure(registry: str, error: ListingFailure, *, last: str | None,
                    explicit: int) -> CatalogFailure:
    """The finding for a catalog that stopped after `last` (None: at the start).

    `explicit` is the number of repositories named without wildcards, which the scan still
    covers without the catalog.
    """
    if isinstance(error, ListingError):
        refused, message, status = error.refused, error.message, error.status
    elif isinstance(error, AuthRefused):
        refused, message, status = True, f"credentials refused for the catalog: {error}", None
    else:
        refused, message, status = False, str(error), error.status
    where = f"after {last!r}" if last else "from the start"
    carry = (f"; carrying on with the {explicit} repositories named explicitly"
             if explicit else "")
    if status in (401, 403):
        message += " (a token needs the registry:catalog:* scope)"
    return CatalogFailure(refused, Finding(
        kind=Kind.CATALOG_INACCESSIBLE, severity=Severity.ERROR, registry=registry,
        http_status=status,
        message=f"catalog could not be read {where}: {message}{carry}",
    ))


def tag_list_failure(repository: str, error: ListingFailure, *,
                     explicit_only: bool) -> Finding | None:
    """The finding for a tag list that could not be read; None when there is nothing to say.

    A 404 for a repository the catalog listed means it holds no tags (distribution does this
    for a repository of uploaded blobs only): nothing to pull, nothing broken, so None. For a
    name only the user gave, it is what `regverify image` says for it: not found.
    """
    if isinstance(error, AuthRefused):
        return Finding(kind=Kind.AUTH_FAILED, severity=Severity.ERROR, repository=repository,
                       message=f"tag list: {error}")
    if isinstance(error, RequestFailed):
        return Finding(kind=Kind.REQUEST_FAILED, severity=Severity.ERROR, repository=repository,
                       http_status=error.status, message=f"tag list: {error}")
    status = error.status
    if status == 404:
        if not explicit_only:
            return None
        return Finding(kind=Kind.MANIFEST_MISSING, severity=Severity.ERROR,
                       repository=repository, http_status=404,
                       message=f"repository not found ({error.message})")
    kind = Kind.AUTH_FAILED if status in (401, 403) else Kind.REQUEST_FAILED
    return Finding(kind=kind, severity=Severity.ERROR, repository=repository,
                   http_status=status, message=f"tag list: {error.message}")


def image_failure(repository: str, tag: str, error: AuthRefused | IncompleteError) -> Finding:
    """The finding for an image that could not be verified at all (not a verdict on it)."""
    kind = Kind.AUTH_FAILED if isinstance(error, AuthRefused) else Kind.REQUEST_FAILED
    return Finding(kind=kind, severity=Severity.ERROR, message=str(error),
                   repository=repository, reference=tag)
