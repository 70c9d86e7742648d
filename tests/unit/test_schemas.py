"""The compiled checks decide as the `ocpp` library's validator does.

For the request and the answer of every action a station sends and the session
handles, a payload with every property filled in, and mutations of it at every path
(each JSON type in place of the value, numbers at and past the bounds, strings past
their length, values outside an enum, a property too many, a required one missing,
arrays empty and too long): whenever the library refuses one, `check_request` (or
`check_answer`) must refuse it too, with the library's own error; whenever the library
accepts one, so must they.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ocpp
import pytest
from ocpp.exceptions import FormatViolationError, OCPPError
from ocpp.messages import Call, CallResult, MessageType, _validate_payload

from csms.protocol.schemas import _compiled, check_answer, check_request
from csms.protocol.session import StationSession, _class_routes

VERSION = "2.0.1"
SCHEMAS = Path(ocpp.__file__).parent / "v201" / "schemas"
ACTIONS = sorted(_class_routes(StationSession))
SMALL_LIMIT = 10  # arrays up to this long are also tried at and below the bound
Path_ = tuple[str | int, ...]


def _schema(action: str, kind: str = "Request") -> dict[str, Any]:
    return dict(json.loads((SCHEMAS / f"{action}{kind}.json").read_text("utf-8-sig")))


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, name = node["$ref"].split("/")
        node = root["definitions"][name]
    return node


def _instance(node: dict[str, Any], root: dict[str, Any]) -> Any:  # noqa: PLR0911
    """A value of ``node`` with every property present."""
    node = _resolve(node, root)
    kind = node.get("type")
    if "enum" in node:
        return node["enum"][0]
    if kind == "object":
        properties = node.get("properties", {})
        return {name: _instance(child, root) for name, child in properties.items()}
    if kind == "array":
        return [_instance(node["items"], root)] * max(1, node.get("minItems", 1))
    if kind == "integer":
        return max(1, node.get("minimum", 1))
    if kind == "number":
        return max(1.5, node.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "string":
        return "x" * min(3, node.get("maxLength", 3))
    return "anything"  # no type: anything goes


def _replacements(node: dict[str, Any], root: dict[str, Any]) -> Iterator[Any]:
    """Values to put where ``node``'s value was: valid ones and invalid ones."""
    node = _resolve(node, root)
    yield from (None, True, False, 0, 1, -1, 1.0, 1.5, -0.5, "", "x", "1", [], {}, {"a": 1})
    for bound in ("minimum", "maximum", "maxLength", "minLength", "minItems", "maxItems"):
        if bound in node:
            limit = node[bound]
            if bound.endswith("Length"):
                yield from ("y" * max(0, limit - 1), "y" * limit, "y" * (limit + 1))
            elif bound.endswith("Items"):
                item = _instance(node["items"], root)
                yield [item] * (limit + 1)
                if limit <= SMALL_LIMIT:
                    yield from ([item] * max(0, limit - 1), [item] * limit)
            else:
                yield from (limit - 1, limit, limit + 1, limit - 0.5, limit + 0.5, float(limit))
    if "enum" in node:
        yield from (*node["enum"], node["enum"][0].lower(), node["enum"][0] + " ")
    if node.get("type") == "object":
        value = _instance(node, root)
        yield {**value, "notInTheSchema": 1}
        for name in node.get("required", []):
            yield {k: v for k, v in value.items() if k != name}


def _paths(value: Any, path: Path_ = ()) -> Iterator[Path_]:
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*path, key))
    elif isinstance(value, list) and value:
        yield from _paths(value[0], (*path, 0))


def _node_at(path: Path_, schema: dict[str, Any]) -> dict[str, Any]:
    node = schema
    for step in path:
        node = _resolve(node, schema)
        node = node["items"] if isinstance(step, int) else node["properties"][step]
    return node


def _replaced(value: Any, path: Path_, new: Any) -> Any:
    if not path:
        return new
    copied = copy.deepcopy(value)
    holder = copied
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = new
    return copied


def _payloads(action: str, kind: str) -> Iterator[Any]:
    schema = _schema(action, kind)
    full = _instance(schema, schema)
    yield full
    for path in _paths(full):
        for new in _replacements(_node_at(path, schema), schema):
            yield _replaced(full, path, new)


def _message(kind: str, action: str, payload: Any) -> Call | CallResult:
    return Call("m", action, payload) if kind == "Request" else CallResult("m", payload, action)


def _library_verdict(kind: str, action: str, payload: Any) -> type[OCPPError] | None:
    try:
        _validate_payload(_message(kind, action, copy.deepcopy(payload)), VERSION)
    except OCPPError as error:
        return type(error)
    return None


def _our_verdict(kind: str, action: str, payload: Any) -> type[OCPPError] | None:
    try:
        if kind == "Request":
            check_request(Call("m", action, payload), VERSION)
        else:
            check_answer(action, payload, VERSION)
    except OCPPError as error:
        return type(error)
    return None


@pytest.mark.parametrize("kind", ["Request", "Response"])
@pytest.mark.parametrize("action", ACTIONS)
def test_every_payload_is_decided_as_the_library_decides(kind: str, action: str) -> None:
    checked = refused = 0
    for payload in _payloads(action, kind):
        expected = _library_verdict(kind, action, payload)
        assert _our_verdict(kind, action, payload) == expected, f"{action}: {payload!r}"
        compiled_accepts = _accepts(kind, action, payload)
        assert not (compiled_accepts and expected), f"{action} compiled check let {payload!r} by"
        checked += 1
        refused += expected is not None
    assert refused > 0  # the mutations do reach both verdicts
    assert checked > refused


def _accepts(kind: str, action: str, payload: Any) -> bool:
    message_type = MessageType.Call if kind == "Request" else MessageType.CallResult
    try:
        _compiled(message_type, action, VERSION)(payload)
    except Exception:  # noqa: BLE001
        return False
    return True


def test_the_common_case_is_decided_by_the_compiled_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shortcut is taken: a valid payload never reaches the library's validator,
    an invalid one does."""

    def library(*_: Any) -> None:
        raise AssertionError("the library's validator was called")

    monkeypatch.setattr("ocpp.messages._validate_payload", library)
    schema = _schema("TransactionEvent")
    check_request(Call("m", "TransactionEvent", _instance(schema, schema)), VERSION)
    check_answer("Heartbeat", {"currentTime": "2026-11-27T10:00:00.000Z"}, VERSION)
    with pytest.raises(AssertionError):
        check_request(Call("m", "Heartbeat", {"unexpected": 1}), VERSION)
    with pytest.raises(AssertionError):
        check_answer("Heartbeat", {}, VERSION)


def test_a_refused_request_gets_the_libraries_error() -> None:
    with pytest.raises(FormatViolationError, match="unexpected"):
        check_request(Call("m", "Heartbeat", {"unexpected": 1}), VERSION)
