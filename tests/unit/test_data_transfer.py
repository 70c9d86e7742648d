"""DataTransfer answers (OCPP 2.0.1 P02.FR.06/07)."""

from __future__ import annotations

import pytest

from csms.services.data_transfer import DataTransfers, DataTransferStatus


@pytest.mark.parametrize(
    ("vendor_id", "message_id", "expected"),
    [
        ("com.unknown", "x", DataTransferStatus.UNKNOWN_VENDOR_ID),
        ("com.unknown", None, DataTransferStatus.UNKNOWN_VENDOR_ID),
        ("com.example", "notOurs", DataTransferStatus.UNKNOWN_MESSAGE_ID),
        ("com.example", "known", DataTransferStatus.REJECTED),
    ],
)
def test_unknown_vendors_and_messages_get_their_status(
    vendor_id: str, message_id: str | None, expected: DataTransferStatus
) -> None:
    transfers = DataTransfers({"com.example": frozenset({"known"})})
    assert transfers.answer("CS001", vendor_id, message_id) is expected


def test_no_vendor_is_known_by_default() -> None:
    assert DataTransfers().answer("CS001", "com.example", "known") is (
        DataTransferStatus.UNKNOWN_VENDOR_ID
    )


def test_station_strings_are_logged_escaped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="pkictl.datatransfer")
    DataTransfers().answer("CS001", "evil\nFAKE LOG LINE", None)
    assert "\n" not in caplog.records[0].getMessage()
