"""DataTransfer from a station (OCPP 2.0.1 P02): vendor-specific messages.

This CSMS implements no vendor extension: every vendorId is unknown unless configured,
so the answer is a DataTransferResponse with status UnknownVendorId (P02.FR.06), and
UnknownMessageId for a known vendor whose messageId is not one of its messages
(P02.FR.07) -- never a CALLERROR: DataTransfer is a message OCPP 2.0.1 defines, and the
recipient without an implementation for a vendor answers with a status. Each one is
logged (station, vendorId, messageId, status), the ids escaped: they are the station's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

LOG = logging.getLogger("pkictl.datatransfer")


class DataTransferStatus(StrEnum):
    """OCPP DataTransferStatusEnumType."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    UNKNOWN_MESSAGE_ID = "UnknownMessageId"
    UNKNOWN_VENDOR_ID = "UnknownVendorId"


@dataclass(frozen=True)
class DataTransfers:
    vendors: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """vendorId -> the messageIds this CSMS implements for it (none today)."""

    def answer(self, station_id: str, vendor_id: str, message_id: str | None) -> DataTransferStatus:
        messages = self.vendors.get(vendor_id)
        if messages is None:
            status = DataTransferStatus.UNKNOWN_VENDOR_ID
        elif message_id is not None and message_id not in messages:
            status = DataTransferStatus.UNKNOWN_MESSAGE_ID
        else:  # a vendor implementation would decide; none is configured today
            status = DataTransferStatus.REJECTED
        LOG.info(
            "%s: DataTransfer vendorId=%r messageId=%r answered %s",
            station_id, vendor_id, message_id, status.value,
        )  # fmt: skip
        return status
