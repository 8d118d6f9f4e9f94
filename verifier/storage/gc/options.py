"""The ``garbage-collect`` invocation a prediction is for."""

from __future__ import annotations

from dataclasses import dataclass

from verifier.model.manifest import DEFAULT_MAX_MANIFEST_BYTES
from verifier.storage.defaults import GcVersion


@dataclass(frozen=True)
class GcOptions:
    """The ``garbage-collect`` invocation to predict."""

    version: GcVersion = GcVersion.V2_8
    delete_untagged: bool = False
    #: distribution reads manifests of any size; above this we say "cannot predict" instead.
    max_manifest_bytes: int = 4 * DEFAULT_MAX_MANIFEST_BYTES

    @property
    def command(self) -> str:
        """How the predicted command reads, for messages."""
        flag = " --delete-untagged" if self.delete_untagged else ""
        return f"garbage-collect{flag} (distribution {self.version})"
