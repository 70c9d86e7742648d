"""Station Basic-auth passwords (security profiles 1 and 2): salted scrypt hashes.

OCPP's BasicAuthPassword is 16 to 40 characters; we store only the hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

MIN_LENGTH, MAX_LENGTH = 16, 40
_N, _R, _P = 2**14, 8, 1


def validate_password(password: str) -> None:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValueError(
            f"password must be {MIN_LENGTH} to {MAX_LENGTH} characters (OCPP BasicAuthPassword), "
            f"got {len(password)}"
        )


def hash_password(password: str, salt: bytes | None = None) -> str:
    validate_password(password)
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    encoded = [base64.b64encode(salt).decode(), base64.b64encode(digest).decode()]
    return "$".join(["scrypt", str(_N), str(_R), str(_P), *encoded])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(
        password.encode(),
        salt=base64.b64decode(salt_b64),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=32,
    )
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))
