"""Checks on a station's raw OCPP-J frame made before it is parsed.

A frame is at most 64 KiB (the websocket's `max_size`), but 64 KiB of `[` nest 65,536
levels deep: Python's JSON decoder, the schema validator and every recursive walk of
the payload would hit the recursion limit (a RecursionError ended the session with
1011). The nesting depth is bounded before `json.loads` sees the text, with string
operations that run in C and never recurse.
"""

from __future__ import annotations

import json
import re

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a frame, the frame's own array
counted (a payload is at depth 2). OCPP 2.0.1's deepest messages (a charging profile's
schedule periods, a report's variable attributes) stay under 10."""

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_ONE_KIND = str.maketrans("{}", "[]")
_LEADING_ID = re.compile(r'\s*\[\s*([234])\s*,\s*("[^"\\]*(?:\\.[^"\\]*)*")', re.DOTALL)


def nested_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays and objects of the JSON ``text`` nest deeper than ``limit``
    (text that is not JSON may be called either; the parser refuses it anyway).

    Strings are cut out, brackets kept (one kind: the parser checks they match), and
    innermost pairs removed ``limit`` times: each round takes exactly one level off
    the deepest chain, so a pair left after that is deeper than ``limit``. A frame
    with no more than ``limit`` brackets in all, nearly every frame, is not scanned."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).translate(_ONE_KIND)
    for _ in range(limit):
        reduced = brackets.replace("[]", "")
        if reduced == brackets:
            return False  # nothing nested left (or brackets that do not match)
        brackets = reduced
    return "[]" in brackets


def leading_message_id(text: str) -> tuple[int, str] | None:
    """The MessageTypeId and MessageId of a frame read from its start without parsing
    the rest (for a frame whose payload cannot be parsed), or None."""
    match = _LEADING_ID.match(text)
    if match is None:
        return None
    try:
        message_id = json.loads(match.group(2))
    except ValueError:
        return None
    return int(match.group(1)), message_id
