"""Where a storage command works: a local folder, or ``s3://BUCKET/PREFIX`` in object storage.

`open_storage` turns the command line's location into the layout the engines take and the
reader that fills their records; everything after it is the same for both. The S3 modules
(boto3) are imported only when a location is an ``s3://`` one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from verifier.cli.options import ObjectStore
from verifier.errors import UsageError
from verifier.storage.layout import (
    StorageLayout,
    check_registry_names,
    detect_layout,
    select_registries,
)

if TYPE_CHECKING:
    from verifier.storage.backend import StorageBackend
    from verifier.storage.records import StorageReader

S3_SCHEME = "s3://"


def is_object_location(text: str) -> bool:
    """Whether a location names object storage (``s3://...``) rather than a local path."""
    return text.startswith(S3_SCHEME)


@dataclass(frozen=True)
class ObjectStorage:
    """An ``s3://BUCKET/PREFIX`` opened twice: at PREFIX (what is read) and at the bucket
    (where a quarantine beside PREFIX lives); `prefix` is PREFIX's key in the bucket."""

    backend: StorageBackend
    bucket: StorageBackend
    prefix: str


@dataclass(frozen=True)
class OpenedStorage:
    """A storage location, ready for the engines: `reader` None means the local filesystem."""

    layout: StorageLayout
    reader: StorageReader | None = None
    objects: ObjectStorage | None = None


def open_bucket(location: str, store: ObjectStore) -> ObjectStorage:
    """The S3 backends of `location` (``s3://BUCKET[/PREFIX]``); nothing is read yet."""
    from verifier.storage.s3backend import S3Backend, parse_location

    loc = parse_location(location)

    def backend(at: str) -> StorageBackend:
        return S3Backend(at, endpoint_url=store.endpoint, path_style=store.path_style,
                         workers=store.workers)

    return ObjectStorage(backend(str(loc)), backend(f"{S3_SCHEME}{loc.bucket}"), loc.prefix)


def open_storage(location: str, store: ObjectStore, registry: list[str] | None,
                 proxy_cache: list[str] | None) -> OpenedStorage:
    """Detect the layout at `location`, check every name given, narrow it to ``--registry``.

    An empty or wrong bucket prefix is refused (exit 2) like a folder without registry
    storage; a bucket that cannot be read at all raises `StorageUnavailable` (exit 3).
    """
    reader: StorageReader | None = None
    objects: ObjectStorage | None = None
    if is_object_location(location):
        from verifier.storage.objectread import ObjectStoreReader, object_layout

        objects = open_bucket(location, store)
        layout = object_layout(objects.backend)
        reader = ObjectStoreReader(objects.backend, workers=store.workers)
    else:
        layout = detect_layout(Path(location))
    check_registry_names(layout, proxy_cache or [], "--proxy-cache")
    return OpenedStorage(select_registries(layout, registry or []), reader, objects)


def quarantine_key(given: str | None, location: str) -> str | None:
    """``--quarantine s3://BUCKET/PREFIX`` as a key in the bucket of `location`, the one being
    fixed (None: the default); checked before anything is read."""
    if given is None:
        return None
    from verifier.storage.s3backend import parse_location

    if not is_object_location(given):
        raise UsageError(f"--quarantine {given}: an s3:// location is fixed into an s3:// "
                         "quarantine (s3://BUCKET/PREFIX in the same bucket)")
    loc = parse_location(given)
    bucket = parse_location(location).bucket
    if loc.bucket != bucket or not loc.prefix:
        raise UsageError(f"--quarantine {given}: must be a prefix in the bucket being fixed "
                         f"({S3_SCHEME}{bucket}/PREFIX)")
    return loc.prefix


def local_only(flags: dict[str, bool]) -> None:
    """Refuse (exit 2) the options that only a local filesystem supports, when given."""
    given = [name for name, on in flags.items() if on]
    if given:
        raise UsageError(f"{', '.join(given)}: available for local storage only, not for "
                         "s3:// locations")
