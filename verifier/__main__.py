"""`python -m verifier` runs the same CLI as `regverify`."""

from __future__ import annotations

from verifier.cli.main import main

if __name__ == "__main__":
    main()
