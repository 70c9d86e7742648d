"""SecurityEventNotification: every event a station reports is kept, critical ones flagged.

Kept in the audit log (hash-chained, so a station's security history cannot be quietly
edited) and shown by `pkictl events list`. The list of types is open: unknown types are
stored as reported, not critical.
"""

from __future__ import annotations

import logging

from pki.audit import AuditEvent
from pki.clock import Clock
from pki.store import Store

LOG = logging.getLogger("pkictl.security")
SECURITY_EVENT_ACTION = "security.event"

# OCPP 2.0.1 Part 2 Appendix 1 (with the 2025 errata): the critical security events.
CRITICAL_EVENTS = frozenset(
    {
        "FirmwareUpdated",
        "SettingSystemTime",
        "StartupOfTheDevice",
        "ResetOrReboot",
        "SecurityLogWasCleared",
        "MemoryExhaustion",
        "TamperDetectionActivated",
        "InvalidFirmwareSignature",
        "InvalidFirmwareSigningCertificate",
        "InvalidCsmsCertificate",
        "InvalidChargingStationCertificate",
        "InvalidTLSVersion",
        "InvalidTLSCipherSuite",
        "MaintenanceLoginAccepted",
        "MaintenanceLoginFailed",
    }
)


class SecurityEvents:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def record(
        self, station_id: str, event_type: str, timestamp: str, tech_info: str | None
    ) -> bool:
        """Store one reported event; True when it is a critical one."""
        critical = event_type in CRITICAL_EVENTS
        LOG.log(
            logging.WARNING if critical else logging.INFO,
            "station %s reports %s%s",
            station_id,
            event_type,
            " (critical)" if critical else "",
        )
        target = f"station:{station_id}"
        await self._store.append_audit(
            AuditEvent(
                SECURITY_EVENT_ACTION,
                target,
                target,
                "reported",
                {
                    "type": event_type,
                    "critical": critical,
                    "timestamp": timestamp,
                    "tech_info": tech_info,
                },
            ),
            self._clock.now(),
        )
        return critical
