"""What is installed on each station (M03-M05): GetInstalledCertificateIds, kept as the
station's inventory and matched with what we know; InstallCertificate of roots;
DeleteCertificate, never of a station's last CSMSRootCertificate.

Every call goes through the outbox, so it waits for an offline station. The inventory is
replaced by each answer; `refreshed_at` says how old it is. The station's own client
certificate is never in it (OCPP lists only roots and V2G/MO chains): that one is known
from the handshake.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from csms.domain.outbox import CallState
from csms.services.outbox import Outbox, OutboxItem
from pki.clock import Clock
from pki.errors import ConflictError, InputError, NotFoundError
from pki.hashdata import CertificateHashData, hash_data_for
from pki.serials import parse_serial, serial_hex

LOG = logging.getLogger("pkictl.inventory")
GET_INSTALLED = "GetInstalledCertificateIds"
ROOT_TYPES = (
    "CSMSRootCertificate", "V2GRootCertificate", "MORootCertificate",
    "ManufacturerRootCertificate",
)  # fmt: skip
LISTED_TYPES = (*ROOT_TYPES, "V2GCertificateChain")
MAX_CERTIFICATE_PEM = 5500  # OCPP InstallCertificateRequest.certificate


@dataclass(frozen=True)
class InstalledCertificate:
    station_id: str
    certificate_type: str
    hash_data: CertificateHashData
    children: tuple[CertificateHashData, ...]
    refreshed_at: datetime


@dataclass(frozen=True)
class KnownCertificate:
    """A certificate we can name: one of our CAs, or a trust anchor an operator added."""

    name: str
    certificate: x509.Certificate


class InventoryStore(Protocol):
    async def replace(
        self, station_id: str, installed: Sequence[InstalledCertificate], at: datetime
    ) -> None: ...
    async def list(self, station_id: str) -> list[InstalledCertificate]: ...
    async def refreshed_at(self, station_id: str) -> datetime | None: ...


# The `ocpp` library hands payloads over in snake_case; CertificateHashData speaks OCPP.
_CAMEL = {
    "hash_algorithm": "hashAlgorithm", "issuer_name_hash": "issuerNameHash",
    "issuer_key_hash": "issuerKeyHash", "serial_number": "serialNumber",
}  # fmt: skip
_SNAKE = {camel: snake for snake, camel in _CAMEL.items()}


def hash_data_of(snake_case: Mapping[str, Any]) -> CertificateHashData:
    """OCPP CertificateHashData as the `ocpp` library hands it over (snake_case); other
    keys (a responderURL) are ignored. ValueError names what is wrong."""
    return CertificateHashData.from_ocpp({_CAMEL.get(k, k): v for k, v in snake_case.items()})


def installed_from_answer(
    station_id: str, answer: dict[str, Any], at: datetime
) -> list[InstalledCertificate]:
    """The inventory in a GetInstalledCertificateIds answer (snake_case, as sent)."""
    if answer.get("status") != "Accepted":
        return []  # NotFound: nothing of the types asked for is installed
    installed = []
    for chain in answer.get("certificate_hash_data_chain") or []:
        own = hash_data_of(chain["certificate_hash_data"])
        children = chain.get("child_certificate_hash_data") or []
        installed.append(
            InstalledCertificate(
                station_id,
                chain["certificate_type"],
                own,
                tuple(hash_data_of(c) for c in children),
                at,
            )
        )
    return installed


def self_signed_root(pem: str) -> x509.Certificate:
    """The certificate in ``pem`` if it is a single self-signed CA certificate (only
    self-signed roots are installed); InputError naming what is wrong otherwise."""
    if len(pem) > MAX_CERTIFICATE_PEM:
        raise InputError(f"certificate: {len(pem)} characters, OCPP allows {MAX_CERTIFICATE_PEM}")
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise InputError(f"certificate: not a PEM certificate: {exc}") from None
    if len(certificates) != 1:
        raise InputError(f"certificate: {len(certificates)} certificates; install one root")
    (certificate,) = certificates
    try:
        certificate.verify_directly_issued_by(certificate)
    except (InvalidSignature, ValueError, TypeError):
        raise InputError("certificate: not self-signed; only roots are installed") from None
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise InputError("certificate: not a CA certificate (basicConstraints cA is not set)")
    return certificate


@dataclass
class CertificateManagement:
    store: InventoryStore
    outbox: Outbox
    clock: Clock
    known: Callable[[], Awaitable[list[KnownCertificate]]]
    """Our CAs and the operator's trust anchors, loaded when entries are named."""

    async def refresh(self, station_id: str) -> int:
        """Ask the station what it has installed; the answer replaces its inventory."""
        return await self.outbox.enqueue(
            station_id, GET_INSTALLED, {"certificate_type": list(LISTED_TYPES)}
        )

    async def call_finished(self, item: OutboxItem) -> None:
        if item.state is not CallState.ANSWERED or item.response is None:
            return
        try:
            installed = installed_from_answer(item.station_id, item.response, self.clock.now())
        except (KeyError, ValueError, TypeError) as exc:
            LOG.warning("station %s: unusable %s answer: %s", item.station_id, GET_INSTALLED, exc)
            return
        await self.store.replace(item.station_id, installed, self.clock.now())

    async def inventory(self, station_id: str) -> list[InstalledCertificate]:
        return await self.store.list(station_id)

    async def named(
        self, installed: Sequence[InstalledCertificate]
    ) -> list[tuple[InstalledCertificate, str | None]]:
        """Each entry with the name of the CA or trust anchor it is, if we know it."""
        roots = [k for k in await self.known() if k.certificate.issuer == k.certificate.subject]
        named = []
        for entry in installed:
            algorithm = entry.hash_data.hash_algorithm
            name = next(
                (
                    k.name for k in roots
                    if hash_data_for(k.certificate, k.certificate.public_key(), algorithm)
                    == entry.hash_data
                ),
                None,
            )  # fmt: skip
            named.append((entry, name))
        return named

    async def install_root(
        self, station_ids: Iterable[str], certificate_type: str, pem: str
    ) -> list[int]:
        if certificate_type not in ROOT_TYPES:
            raise InputError(f"type: {certificate_type!r} is not one of {', '.join(ROOT_TYPES)}")
        certificate = self_signed_root(pem)
        text = certificate.public_bytes(serialization.Encoding.PEM).decode()
        payload = {"certificate_type": certificate_type, "certificate": text}
        return [await self.outbox.enqueue(s, "InstallCertificate", payload) for s in station_ids]

    async def serial_of(self, fingerprint_sha256: str) -> str:
        """The serial of the CA certificate or trust anchor with this SHA-256 fingerprint
        (hex, colons allowed): how an operator names a root we know."""
        wanted = fingerprint_sha256.replace(":", "").strip().lower()
        if len(wanted) != 64 or any(c not in "0123456789abcdef" for c in wanted):
            raise InputError(
                f"HASH: {fingerprint_sha256!r} is not a SHA-256 fingerprint (64 hex digits)"
            )
        for known in await self.known():
            der = known.certificate.public_bytes(serialization.Encoding.DER)
            if hashlib.sha256(der).hexdigest() == wanted:
                return serial_hex(known.certificate.serial_number)
        raise NotFoundError(
            f"no CA certificate or trust anchor with fingerprint {wanted}; use --serial"
        )

    async def delete(self, station_ids: Iterable[str], serial_text: str) -> list[int]:
        """DeleteCertificate with the hash data each station reported, as it reported it.
        All stations are checked before anything is queued."""
        try:
            serial = serial_hex(parse_serial(serial_text))
        except ValueError as exc:
            raise InputError(f"serial: {exc}") from None
        calls = []
        for station_id in station_ids:
            installed = await self.store.list(station_id)
            if not installed and await self.store.refreshed_at(station_id) is None:
                raise NotFoundError(
                    f"station {station_id}: no inventory yet; run `pkictl station certs "
                    f"{station_id} --refresh` first"
                )
            matches = [i for i in installed if i.hash_data.serial_number == serial]
            if not matches:
                raise NotFoundError(f"station {station_id}: no certificate with serial {serial}")
            for entry in matches:
                csms_roots = [i for i in installed if i.certificate_type == "CSMSRootCertificate"]
                if entry.certificate_type == "CSMSRootCertificate" and len(csms_roots) <= 1:
                    raise ConflictError(
                        f"station {station_id}: {serial} is its only CSMSRootCertificate; "
                        "deleting it would cut the station off (install the new root first)"
                    )
                calls.append((station_id, entry))
        queued = []
        for station_id, entry in calls:
            # exactly as the station reported it (M04): matching it to our serial above
            # was case-insensitive, the station's own lookup may not be
            hash_data = {_SNAKE[k]: v for k, v in entry.hash_data.as_reported().items()}
            payload = {"certificate_hash_data": hash_data}
            queued.append(await self.outbox.enqueue(station_id, "DeleteCertificate", payload))
        return queued
