"""Registering charging stations: the identities certificates are bound to."""

from __future__ import annotations

from pki.audit import AuditEvent
from pki.clock import Clock
from pki.credentials import hash_password
from pki.errors import InputError, NotFoundError
from pki.records import STATION_ID_PATTERN, Station
from pki.store import Store

MAX_NAME_LENGTH = 64  # ub-common-name: CN carries the serial or the SECC id


def _check_name(value: str, field: str) -> str:
    value = value.strip()
    if not 0 < len(value) <= MAX_NAME_LENGTH or not value.isprintable():
        raise InputError(f"{field}: must be 1 to {MAX_NAME_LENGTH} printable characters")
    return value


class StationService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def register(
        self,
        station_id: str,
        *,
        serial_number: str,
        secc_id: str | None,
        security_profile: int,
        password: str | None,
        actor: str,
        allow_expired: bool = False,
    ) -> Station:
        if not STATION_ID_PATTERN.match(station_id):
            raise InputError(
                "id: a station id is 1 to 48 characters of A-Z a-z 0-9 . _ : - "
                "(it is the last segment of the OCPP URL)"
            )
        if security_profile not in (1, 2, 3):
            raise InputError("security-profile: must be 1, 2 or 3")
        if security_profile in (1, 2) and password is None:
            raise InputError(
                f"password-file: security profile {security_profile} stations authenticate "
                "with HTTP Basic auth and need a password"
            )
        try:
            password_hash = hash_password(password) if password is not None else None
        except ValueError as exc:
            raise InputError(f"password-file: {exc}") from None
        now = self._clock.now()
        station = Station(
            id=station_id,
            serial_number=_check_name(serial_number, "serial"),
            secc_id=_check_name(secc_id, "secc-id") if secc_id is not None else None,
            security_profile=security_profile,
            password_hash=password_hash,
            created_at=now,
            allow_expired=allow_expired,
        )
        await self._store.add_station(
            station,
            AuditEvent(
                "station.added",
                actor,
                f"station:{station_id}",
                "ok",
                {
                    "serial_number": station.serial_number,
                    "secc_id": station.secc_id,
                    "security_profile": security_profile,
                    "password": password is not None,
                    "allow_expired": allow_expired,
                },
            ),
            now,
        )
        return station

    async def get(self, station_id: str) -> Station:
        station = await self._store.get_station(station_id)
        if station is None:
            raise NotFoundError(f"no station {station_id!r}")
        return station

    async def list(self) -> list[Station]:
        return await self._store.list_stations()

    async def secc_id(self, station_id: str) -> str | None:
        return (await self.get(station_id)).secc_id

    async def set_secc_id(self, station_id: str, secc_id: str, actor: str) -> None:
        """The SECC id its V2G certificate is issued for (CN), e.g. as the station
        reported it (ISO15118Ctrlr.SeccId)."""
        checked = _check_name(secc_id, "secc-id")
        event = AuditEvent(
            "station.secc-id", actor, f"station:{station_id}", "ok", {"secc_id": checked}
        )
        await self._store.set_secc_id(station_id, checked, event, self._clock.now())

    async def remove(self, station_id: str, actor: str) -> None:
        """Deregister: the handshake then refuses the station whatever certificate it
        presents, so its certificates need not be revoked to cut it off."""
        await self._store.remove_station(
            station_id,
            AuditEvent("station.removed", actor, f"station:{station_id}"),
            self._clock.now(),
        )
