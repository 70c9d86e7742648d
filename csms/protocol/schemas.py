"""OCPP payload checks on the message path, deciding exactly as the `ocpp` library does.

The library validates every request with jsonschema's Draft4Validator: about 350 us for
a TransactionEvent, a third of what a message cost us in all (bench/RESULTS.md). Here a
request is first checked by the same schema compiled to Python code (fastjsonschema,
in the same draft 4 dialect, no defaults filled in, formats not checked -- as the
library's validator does not check them). Only a payload the compiled check accepts
passes on its word; whatever it objects to goes to the library's own validator, which
decides, and names the error with the OCPP-J code the station would have had before.
tests/unit/test_schemas.py holds the compiled checks to that: on mutations of a payload
of every OCPP 2.0.1 request, no payload the library refuses may pass the compiled check.

Answers, which we build, are checked by the library before they are sent, and a valid
one is remembered: most are constant.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import fastjsonschema
import ocpp.messages
from ocpp.messages import Call, CallResult, MessageType

DRAFT_4 = "http://json-schema.org/draft-04/schema#"


def validate_inline() -> None:
    """Validate OCPP payloads on the event loop (process-wide). The `ocpp` library hands
    each validation to a thread pool by default: a thread hop per message, and on a busy
    loop a wait for the GIL on the way back."""
    ocpp.messages.ASYNC_VALIDATION = False


@functools.cache
def _compiled(action: str, ocpp_version: str) -> Callable[[Any], Any]:
    """The library's schema of ``action``'s request, compiled once."""
    schema = ocpp.messages.get_validator(MessageType.Call, action, ocpp_version).schema
    # the library reads every schema as draft 4, whatever its $schema says
    as_draft_4 = {**schema, "$schema": DRAFT_4}
    return fastjsonschema.compile(
        as_draft_4, use_default=False, use_formats=False, detailed_exceptions=False
    )


def check_request(message: Call, ocpp_version: str) -> None:
    """Raise the `ocpp` library's OCPPError for a request its schema refuses."""
    try:
        _compiled(message.action, ocpp_version)(message.payload)
    except Exception:  # noqa: BLE001 -- any objection: the library decides
        ocpp.messages._validate_payload(message, ocpp_version)


@functools.lru_cache(maxsize=1024)
def check_answer(action: str, answer_json: str, ocpp_version: str) -> None:
    """Validate an answer before it is sent, as the `ocpp` library does. An answer found
    valid is not checked again: most are constant (`{}` for StatusNotification,
    MeterValues and most TransactionEvents). Only valid answers are remembered: an
    invalid one raises, and raises again the next time."""
    answer = CallResult("-", json.loads(answer_json), action)
    ocpp.messages._validate_payload(answer, ocpp_version)  # the library's own check
