"""One exception hierarchy for the whole tool; the CLI maps each class to a message and exit code.

    VerifierError                  (exit 3 unless a subclass says otherwise)
    ├── UsageError                 exit 2: bad input from the user
    │   ├── InvalidReference       malformed image reference
    │   └── CredentialsError       unreadable credentials / docker config
    ├── IncompleteError            exit 3: the verification could not be completed
    │   ├── RegistryUnreachable    connection refused, DNS, TLS failure
    │   ├── AuthRefused            the registry (or its token server) refused our credentials
    │   └── StorageUnavailable     a bucket or storage endpoint that cannot be read at all
    └── SafetyRefusal              exit 3: a safety rail stopped a storage change
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The one exit-code contract shared by every command."""

    CLEAN = 0
    DEFECTS = 1
    USAGE = 2
    INCOMPLETE = 3


class VerifierError(Exception):
    """Root of every error the tool raises on purpose; carries a one-line message."""

    exit_code: ExitCode = ExitCode.INCOMPLETE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(VerifierError):
    """The user gave us something we cannot use (exit 2)."""

    exit_code = ExitCode.USAGE


class InvalidReference(UsageError):
    """An image reference that does not follow the Docker reference grammar."""


class CredentialsError(UsageError):
    """Credentials that cannot be read: a missing file, bad JSON, a failing helper."""


class IncompleteError(VerifierError):
    """The verification could not be completed (exit 3)."""


class RegistryUnreachable(IncompleteError):
    """Connection refused, name resolution or TLS failure: nothing was verified."""


class AuthRefused(IncompleteError):
    """The registry or its token service refused our credentials."""


class StorageUnavailable(IncompleteError):
    """The storage could not be read at all: no such bucket, access denied, endpoint down."""


class SafetyRefusal(VerifierError):
    """A storage safety rail refused to change anything (exit 3)."""

    exit_code = ExitCode.INCOMPLETE
