"""Certificate serial numbers: 128 random bits, positive (A00.FR.5xx, RFC 5280 4.1.2.2)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

SerialSource = Callable[[], int]

SERIAL_BITS = 128


def random_serial(randbits: Callable[[int], int] = secrets.randbits) -> int:
    """A positive serial with 128 bits of entropy; DER-encoded it takes at most 17 bytes."""
    while True:
        serial = randbits(SERIAL_BITS)
        if serial > 0:
            return serial


def serial_hex(serial: int) -> str:
    """Lower-case hex without leading zeros: the OCPP serialNumber form, and ours."""
    return format(serial, "x")


def parse_serial(text: str) -> int:
    """Accept hex as users paste it: any case, optional 0x, colons or spaces between bytes."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "").replace(" ", "")
    if not cleaned or any(c not in "0123456789abcdef" for c in cleaned):
        raise ValueError(f"serial {text!r} is not hexadecimal")
    return int(cleaned, 16)
