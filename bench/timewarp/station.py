"""Simulated charging stations with the certificate behaviour of EVerest's libocpp
(OCPP-SECURITY.md): a new P-256 key per CSR, one CSR outstanding at a time, its key
dropped after an hour, self-renewal when the certificate has less than 30 days left
(checked every 12 h), the CertificateSigned chain checked against the installed CSMS
roots before it is installed, a reconnection with the new certificate.

A station is its state (`SimStation`) and, while connected, an OCPP link
(`StationLink`) over an in-memory pipe. Faults are drawn from the station's own
seeded random source, so a scenario replays exactly.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from websockets.exceptions import ConnectionClosed

from pki.clock import Clock
from pki.hashdata import hash_data_for

SELF_RENEW_BEFORE = timedelta(days=30)
SELF_CHECK_EVERY = timedelta(hours=12)
CSR_KEY_LIFETIME = timedelta(hours=1)
CSR_RESEND_AFTER = timedelta(seconds=60)
"""EVerest's CertSigningWaitMinimum: a rejected CSR is sent again (a new key) after
this, doubling each time, at most CSR_REPEAT_TIMES times."""
CSR_REPEAT_TIMES = 3
CHAIN_DEPTH = 5


def chain_valid(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
) -> bool:
    """Whether ``leaf`` chains to one of ``roots`` through ``intermediates`` with every
    signature right and every certificate valid at ``now`` (a station's check of the
    CSMS server certificate and of a CertificateSigned chain)."""
    current = leaf
    for _ in range(CHAIN_DEPTH):
        if not current.not_valid_before_utc <= now < current.not_valid_after_utc:
            return False
        if any(current == root for root in roots):
            return True
        issuer = _issuer_of(current, [*intermediates, *roots])
        if issuer is None:
            return False
        current = issuer
    return False


def _issuer_of(
    certificate: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != certificate.issuer or candidate == certificate:
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


def make_csr(key: ec.EllipticCurvePrivateKey, serial: str, organization: str) -> str:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, serial),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(eq=False)
class SimStation:
    index: int
    station_id: str
    serial: str
    organization: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    roots: list[x509.Certificate]
    """The CSMSRootCertificates installed."""
    random: random.Random
    fault_rate: float
    pending_key: ec.EllipticCurvePrivateKey | None = None
    pending_since: datetime | None = None
    link: StationLink | None = None
    csr_attempts: int = 0
    """CSRs rejected in a row (EVerest resends, CertSigningRepeatTimes at most)."""
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def remote(self) -> str:
        return f"sim-{self.index}:{40000 + self.index % 20000}"

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def fails(self) -> bool:
        return self.random.random() < self.fault_rate

    def needs_self_renewal(self, now: datetime) -> bool:
        return self.certificate.not_valid_after_utc - now < SELF_RENEW_BEFORE

    def csr_pending(self, now: datetime) -> bool:
        return self.pending_since is not None and now - self.pending_since < CSR_KEY_LIFETIME

    def new_csr(self, now: datetime) -> str:
        """A new key and its CSR; the injected fault is a CSR the CSMS must refuse (the
        subject names another serial)."""
        self.pending_key = ec.generate_private_key(ec.SECP256R1())
        self.pending_since = now
        serial = f"{self.serial}-BROKEN" if self.fails() else self.serial
        if serial != self.serial:
            self.count("csr_faults")
        return make_csr(self.pending_key, serial, self.organization)


class Driver(Protocol):
    """What a station's link tells the simulation."""

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine as a task the simulation waits for before the clock moves on."""

    def installed(self, station: SimStation) -> None:
        """A new certificate is installed: the station reconnects with it."""

    def csr_rejected(self, station: SimStation) -> None:
        """The CSMS rejected the station's CSR: it sends a new one after a while."""


class StationLink(ChargePoint):  # type: ignore[misc]
    """The station's side of one connection."""

    def __init__(
        self,
        station: SimStation,
        connection: Any,
        clock: Clock,
        driver: Driver,
    ) -> None:
        super().__init__(station.station_id, connection)
        self.station = station
        self._clock = clock
        self._driver = driver

    async def run(self) -> None:
        """Handle the CSMS's messages until the connection ends."""
        with contextlib.suppress(ConnectionClosed):
            await self.start()

    async def hang_up(self) -> None:
        await self._connection.close()

    async def boot(self) -> str:
        answer = await self.call(
            call.BootNotification(
                charging_station={"model": "TimeWarp", "vendor_name": "pkictl"},
                reason="PowerUp",
            )
        )
        return str(answer.status)

    async def sign(self) -> None:
        """Send a CSR (A02 when triggered, A03 when the station renews by itself)."""
        station = self.station
        csr = station.new_csr(self._clock.now())
        station.count("csrs")
        answer = await self.call(
            call.SignCertificate(csr=csr, certificate_type="ChargingStationCertificate")
        )
        if answer.status != "Accepted":
            station.count("csrs_rejected")
            station.csr_attempts += 1
            self._driver.csr_rejected(station)

    @on(Action.trigger_message)
    async def on_trigger_message(self, requested_message: str, **_: Any) -> Any:
        if requested_message != "SignChargingStationCertificate":
            return call_result.TriggerMessage(status="NotImplemented")
        self.station.count("triggers")
        self._driver.spawn(self.sign())
        return call_result.TriggerMessage(status="Accepted")

    @on(Action.certificate_signed)
    async def on_certificate_signed(self, certificate_chain: str, **_: Any) -> Any:
        station = self.station
        now = self._clock.now()
        chain = x509.load_pem_x509_certificates(certificate_chain.encode())
        leaf, intermediates = chain[0], chain[1:]
        fits = (
            station.pending_key is not None
            and station.csr_pending(now)
            and leaf.public_key() == station.pending_key.public_key()
        )
        if not fits:
            station.count("deliveries_without_key")
            return call_result.CertificateSigned(status="Rejected")
        if station.fails():
            station.count("delivery_faults")
            return call_result.CertificateSigned(status="Rejected")
        if not chain_valid(leaf, intermediates, station.roots, now):
            station.count("deliveries_untrusted")
            return call_result.CertificateSigned(status="Rejected")
        assert station.pending_key is not None
        station.key, station.certificate = station.pending_key, leaf
        station.pending_key = station.pending_since = None
        station.csr_attempts = 0
        station.count("installed")
        self._driver.installed(station)
        return call_result.CertificateSigned(status="Accepted")

    @on(Action.get_variables)
    async def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        """AdditionalRootCertificateCheck is false (as most stations ship): a new CSMS
        root is installed as itself, not through a link certificate."""
        results = [
            {
                "attribute_status": "Accepted"
                if item["variable"]["name"] == "AdditionalRootCertificateCheck"
                else "UnknownVariable",
                "component": item["component"],
                "variable": item["variable"],
                **(
                    {"attribute_value": "false"}
                    if item["variable"]["name"] == "AdditionalRootCertificateCheck"
                    else {}
                ),
            }
            for item in get_variable_data
        ]
        return call_result.GetVariables(get_variable_result=results)

    @on(Action.install_certificate)
    async def on_install_certificate(
        self, certificate_type: str, certificate: str, **_: Any
    ) -> Any:
        root = x509.load_pem_x509_certificate(certificate.encode())
        if certificate_type == "CSMSRootCertificate" and root not in self.station.roots:
            self.station.roots.append(root)
        return call_result.InstallCertificate(status="Accepted")

    @on(Action.get_installed_certificate_ids)
    async def on_get_installed_certificate_ids(self, **_: Any) -> Any:
        chains = [
            {
                "certificate_type": "CSMSRootCertificate",
                "certificate_hash_data": hash_data_for(root, root.public_key()).to_ocpp(),
            }
            for root in self.station.roots
        ]
        return call_result.GetInstalledCertificateIds(
            status="Accepted" if chains else "NotFound",
            certificate_hash_data_chain=chains or None,
        )

    @on(Action.delete_certificate)
    async def on_delete_certificate(self, certificate_hash_data: dict[str, Any], **_: Any) -> Any:
        for root in self.station.roots:
            if _same_serial(root, certificate_hash_data):
                self.station.roots.remove(root)
                return call_result.DeleteCertificate(status="Accepted")
        return call_result.DeleteCertificate(status="NotFound")


def _same_serial(root: x509.Certificate, hash_data: dict[str, Any]) -> bool:
    return f"{root.serial_number:x}" == str(hash_data.get("serial_number", "")).lower().lstrip("0")
