"""Exit codes of `pkictl`, and the one place errors become exit codes.

| code | meaning |
|---|---|
| 0 | success |
| 1 | unexpected failure (a bug or an I/O error), or a database or disk fault (StorageError) |
| 2 | bad command line or input value (names the option or field) |
| 3 | not found (certificate, station, CA) |
| 4 | refused by policy (the reason code is printed) |
| 5 | conflict: exists already, or in a state that forbids the operation |
| 6 | home not initialized, or invalid configuration / policy file |
| 7 | integrity check failed (`audit verify`, also against a recorded `--head SEQ:HASH`) |
| 8 | CA key unavailable (passphrase missing or wrong, key file unreadable) |
| 9 | a wait ended first: `renew --wait`, `station certs --refresh`, `campaign status --wait` |
| 10 | `ocsp check`: the responder says the certificate is revoked (a verified answer) |

Exit 1 always comes with a message saying what failed. For a fault of the database or
its disk -- locked by another process, read-only, full, unreachable -- it is one line,
`error: database URL: CAUSE` (or `disk full (PATH: ...)`), and nothing is half written.
Exit 5 also refuses an `--out` file that exists, unless `--force` is given.
"""

from __future__ import annotations

from enum import IntEnum

from csms.home import HomeError
from pki.errors import (
    ConflictError,
    IdentityTaken,
    InputError,
    IssuanceRefused,
    KeyAccessError,
    NotFoundError,
    PkiError,
    PolicyError,
    StateError,
)


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    REFUSED = 4
    CONFLICT = 5
    CONFIG = 6
    INTEGRITY = 7
    KEY_ACCESS = 8
    INCOMPLETE = 9
    REVOKED = 10


_CODES: tuple[tuple[type[Exception], ExitCode], ...] = (
    (IssuanceRefused, ExitCode.REFUSED),
    (NotFoundError, ExitCode.NOT_FOUND),
    (ConflictError, ExitCode.CONFLICT),
    (StateError, ExitCode.CONFLICT),
    (HomeError, ExitCode.CONFIG),
    (PolicyError, ExitCode.CONFIG),
    (KeyAccessError, ExitCode.KEY_ACCESS),
    (InputError, ExitCode.USAGE),
)


def exit_code_for(error: PkiError) -> ExitCode:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return ExitCode.ERROR


def error_payload(error: PkiError) -> dict[str, object]:
    payload: dict[str, object] = {
        "error": type(error).__name__,
        "exit_code": int(exit_code_for(error)),
        "message": str(error),
    }
    if isinstance(error, IssuanceRefused):
        payload.update(reason=error.reason.value, field=error.field)
    if isinstance(error, IdentityTaken):
        payload.update(field=error.field, held_by=error.held_by)
    return payload
