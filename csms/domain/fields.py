"""Fields of a station's message that its JSON schema allows but that are no usable
value: an impossible or badly written date-time. Pure.

OCPP 2.0.1 Part 2 FR.03: a message that is not valid OCPP is answered CALLERROR; the
protocol layer answers `InvalidField` with FormatViolation ("payload for Action is
syntactically incorrect", OCPP-J 4.3), its text naming the field. Parsed before anything
is written, so a refused message leaves nothing behind.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

RFC_3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
SHOWN = 40  # characters of a refused value quoted back


class InvalidField(ValueError):
    """``field`` (OCPP's camelCase path, e.g. ``meterValue[0].timestamp``) holds no
    usable value, for ``reason``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def parse_time(value: object, field: str) -> datetime:
    """An OCPP dateTime: RFC 3339 with its UTC offset (Part 2, 3.1), in UTC."""
    text = str(value)
    if not RFC_3339.fullmatch(text):
        raise InvalidField(field, f"not an RFC 3339 date-time with offset: {text[:SHOWN]!r}")
    try:
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidField(field, f"not a valid date-time: {text!r} ({exc})") from None
