"""OCPP payload checks on the message path, deciding exactly as the `ocpp` library does.

The library validates every request with jsonschema's Draft4Validator: about 350 us for
a TransactionEvent, a third of what a message cost us in all (bench/RESULTS.md). Here a
request is first checked by the same schema compiled to Python code (fastjsonschema,
in the same draft 4 dialect, no defaults filled in, formats not checked -- as the
library's validator does not check them). Only a payload the compiled check accepts
passes on its word; whatever it objects to goes to the library's own validator, which
decides, and names the error with the OCPP-J code the station would have had before.
Our answers are checked the same way before they are sent. tests/unit/test_schemas.py
holds the compiled checks to the library: on mutations of a request and of an answer of
every action the session handles, no payload the library refuses passes.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from typing import Any

import fastjsonschema
import ocpp.messages
from ocpp.exceptions import FormatViolationError
from ocpp.messages import Call, CallResult, MessageType

DRAFT_4 = "http://json-schema.org/draft-04/schema#"


def validate_inline() -> None:
    """Validate OCPP payloads on the event loop (process-wide). The `ocpp` library hands
    each validation to a thread pool by default: a thread hop per message, and on a busy
    loop a wait for the GIL on the way back."""
    ocpp.messages.ASYNC_VALIDATION = False


@functools.cache
def _compiled(message_type: MessageType, action: str, ocpp_version: str) -> Callable[[Any], Any]:
    """The library's schema of ``action``'s request or answer, compiled once."""
    schema = ocpp.messages.get_validator(message_type, action, ocpp_version).schema
    # the library reads every schema as draft 4, whatever its $schema says
    as_draft_4 = {**schema, "$schema": DRAFT_4}
    return fastjsonschema.compile(
        as_draft_4, use_default=False, use_formats=False, detailed_exceptions=False
    )


def check_request(message: Call, ocpp_version: str) -> None:
    """Raise the `ocpp` library's OCPPError for a request its schema refuses."""
    try:
        _compiled(MessageType.Call, message.action, ocpp_version)(message.payload)
    except Exception:  # noqa: BLE001 -- any objection: the library decides
        ocpp.messages._validate_payload(message, ocpp_version)


def check_answer(action: str, answer: dict[str, Any], ocpp_version: str) -> None:
    """Validate an answer before it is sent, as the `ocpp` library does: raise its
    OCPPError for an answer of ours that its schema refuses (a defect of ours)."""
    try:
        _compiled(MessageType.CallResult, action, ocpp_version)(answer)
    except Exception:  # noqa: BLE001 -- any objection: the library decides
        ocpp.messages._validate_payload(CallResult("-", answer, action), ocpp_version)


_LARGEST = int(sys.float_info.max)


def check_numbers(message: Call) -> None:
    """Raise FormatViolation naming the first number of the payload that is not a
    finite IEEE 754 double: `Infinity`, `-Infinity` and `NaN` are no JSON (RFC 8259;
    Python's parser reads them anyway), and a number beyond the double range (`1e309`,
    or 310 digits) is one RFC 8259 section 6 lets a receiver refuse -- as it must here:
    it cannot be stored, billed or written to valid JSON again. OCPP 2.0.1 Part 2 FR.03
    and OCPP-J 4.3: a CALLERROR, FormatViolation (the payload is syntactically
    incorrect), for every action and so every number field a station sends; nothing of
    the message is written. Whatever the schema checks decided is decided first."""
    if not _any_non_finite(message.payload):
        return
    found = _non_finite(message.payload)
    if found is not None:
        path = "".join(
            f"[{step}]" if isinstance(step, int) else f".{step}" for step in reversed(found)
        )
        raise FormatViolationError(
            description=f"{path.lstrip('.')}: not a finite number (Infinity, NaN and numbers "
            "beyond the IEEE 754 double range are refused)"
        )


def _any_non_finite(payload: Any) -> bool:
    """Whether any number in ``payload`` is not finite: the fast look every request
    gets (a few microseconds for a TransactionEvent; `_non_finite` names the field)."""
    stack = [payload]
    pop, extend, isfinite = stack.pop, stack.extend, math.isfinite
    while stack:
        value = pop()
        kind = value.__class__
        if kind is str:
            continue
        if kind is dict:
            extend(value.values())
        elif kind is list:
            extend(value)
        elif kind is float:
            if not isfinite(value):
                return True
        elif kind is int and not -_LARGEST <= value <= _LARGEST:
            return True
    return False


def _non_finite(value: Any) -> list[str | int] | None:
    """The path (last step first) to the first number in ``value`` that is not finite."""
    kind = type(value)
    if kind is float:
        return None if math.isfinite(value) else []
    if kind is int:
        return None if -_LARGEST <= value <= _LARGEST else []
    if kind is dict:
        for key, child in value.items():
            if (found := _non_finite(child)) is not None:
                found.append(str(key))
                return found
    elif kind is list:
        for index, child in enumerate(value):
            if (found := _non_finite(child)) is not None:
                found.append(index)
                return found
    return None
