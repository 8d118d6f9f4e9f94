"""registry-verifier: prove that every image in a container registry can really be pulled."""

from __future__ import annotations

__version__ = "0.1.0"
