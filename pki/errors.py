"""Typed errors of the PKI core.

Every refusal carries a machine-readable reason code (stable, used in the audit log, in
OCPP statusInfo.reasonCode and in CLI exit codes) and the field it is about, so that an
operator reading a one-line message knows what to fix.
"""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    CSR_NOT_PEM = "csr-not-pem"
    CSR_TOO_LARGE = "csr-too-large"
    CSR_BAD_SIGNATURE = "csr-bad-signature"
    KEY_TYPE_NOT_ALLOWED = "key-type-not-allowed"
    KEY_TOO_WEAK = "key-too-weak"
    SUBJECT_MISMATCH = "subject-mismatch"
    SUBJECT_MISSING_ATTRIBUTE = "subject-missing-attribute"
    CA_REQUESTED = "ca-requested"
    UNKNOWN_STATION = "unknown-station"
    STATION_IDENTITY_INCOMPLETE = "station-identity-incomplete"
    UNKNOWN_PROFILE = "unknown-profile"
    PROFILE_NOT_FOR_CSR = "profile-not-for-csr"
    VALIDITY_INVALID = "validity-invalid"
    ISSUER_UNAVAILABLE = "issuer-unavailable"
    ISO15118_VIOLATION = "iso15118-violation"


class PkiError(Exception):
    """Base of every error the core raises on purpose."""


class IssuanceRefused(PkiError):
    """A request the policy does not allow. Never a bug: an answer."""

    def __init__(self, reason: ReasonCode, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message

    def as_dict(self) -> dict[str, str | None]:
        return {"reason": self.reason.value, "field": self.field, "message": self.message}


class InputError(PkiError):
    """A value a user supplied is invalid; the message starts with the field's name."""


class PolicyError(PkiError):
    """A policy file that cannot be used; the message names the file and the key."""


class NotFoundError(PkiError):
    """A named object (certificate, station, authority) does not exist."""


class ConflictError(PkiError):
    """The operation would overwrite or duplicate something that exists."""


class IdentityTaken(ConflictError):
    """A station identity (serial number, SECC id) that another station holds."""

    def __init__(self, field: str, value: str, held_by: str) -> None:
        what = "serial number" if field == "serial" else "SECC id"
        super().__init__(
            f"{field}: {value!r} is the {what} of station {held_by!r}; "
            f"a {what} identifies one station"
        )
        self.field = field
        self.value = value
        self.held_by = held_by


class StateError(PkiError):
    """The object exists but is in a state that forbids the operation."""


class KeyAccessError(PkiError):
    """A private key cannot be read (missing file, wrong passphrase)."""


class StorageError(PkiError):
    """The database or the disk under it cannot be read or written: locked by another
    process, read-only, full, unreachable. Not a bug; the message names the cause."""
