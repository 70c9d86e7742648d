"""The session's own dispatch converts keys exactly as the `ocpp` library does (it
remembers each key's conversion instead of running the library's regular expressions
per message)."""

from __future__ import annotations

from typing import Any

import pytest
from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case
from ocpp.exceptions import OCPPError

from csms.protocol.schemas import check_answer
from csms.protocol.session import _call, _camel_case, _snake_case

PAYLOADS: list[dict[str, Any]] = [
    {
        "eventType": "Updated",
        "transactionInfo": {"transactionId": "TX-1", "chargingState": "Charging"},
        "meterValue": [
            {
                "timestamp": "2026-11-27T10:00:00Z",
                "sampledValue": [{"value": 1.5, "unitOfMeasure": {"unit": "Wh"}}],
            }
        ],
        "evse": {"id": 1, "connectorId": 1},
    },
    {"ocppCSMSURL": "wss://x", "responderURL": "http://y", "V2XChargingCtrlr": 1},
    {"iso15118CertificateHashData": [{"hashAlgorithm": "SHA256", "issuerNameHash": "ab"}]},
    {"evMaxV2XEnergyRequest": 1, "socLimitReached": True, "stateOfCharge": 80},
    {"customData": {"vendorId": "x", "anyKeyAtAll": [1, {"nestedKey": None}]}},
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_keys_convert_as_the_library_converts_them(payload: dict[str, Any]) -> None:
    snake = _snake_case(payload)
    assert snake == camel_to_snake_case(payload)
    assert _camel_case(snake) == snake_to_camel_case(snake)
    assert _snake_case(payload) == snake  # a second time, from memory


async def test_call_unique_id_only_for_handlers_that_ask_for_it() -> None:
    def plain(**arguments: Any) -> dict[str, Any]:
        return arguments

    async def asking(call_unique_id: str, **arguments: Any) -> dict[str, Any]:
        return {**arguments, "id": call_unique_id}

    assert await _call(plain, {"a": 1}, "m1") == {"a": 1}
    assert await _call(asking, {"a": 1}, "m1") == {"a": 1, "id": "m1"}


def test_answers_are_validated() -> None:
    check_answer("StatusNotification", {}, "2.0.1")
    check_answer("Heartbeat", {"currentTime": "2026-11-27T10:00:00.000Z"}, "2.0.1")
    with pytest.raises(OCPPError):
        check_answer("Heartbeat", {"currentTime": 5}, "2.0.1")
