"""The CA's revocation service on the HTTP port: OCSP for our own CAs (RFC 6960) and
their latest CRLs.

Every OCSP request looks the certificate's status up in the database (one indexed
query), so a revocation -- by this process or by `pkictl cert revoke` elsewhere --
shows at once. The signed response is kept per CA, CertID hash and serial, and served
again while the status is the same and less than half its validity has passed; then it
is signed anew, well before its nextUpdate. A request with a nonce gets a response of
its own (the nonce is echoed), never a kept one.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from cryptography.x509 import ocsp

from pki.clock import Clock
from pki.keys import KeyStore
from pki.ocsp import (
    CertState,
    MalformedRequest,
    Query,
    Responder,
    Status,
    parse_request,
    unsuccessful,
)
from pki.records import Authority, AuthorityRole
from pki.serials import serial_hex

LOG = logging.getLogger("pkictl.ocsp")
MAX_KEPT = 200_000  # responses kept in memory, least recently served dropped first


@dataclass(frozen=True)
class LoggedResponse:
    """An OCSP response kept by CertID: ours as signed, or another responder's."""

    algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str
    serial_hex: str
    responder: str
    """"ca:NAME" for ours, else the URL that was asked."""
    cert_status: str
    der: bytes
    produced_at: datetime
    next_update: datetime | None


class ResponseLog(Protocol):
    async def keep(self, response: LoggedResponse) -> None:
        """Insert, or replace the one kept for the same CertID."""
        ...

    async def get(self, algorithm: str, issuer_name_hash: str, issuer_key_hash: str,
                  serial_hex: str) -> LoggedResponse | None: ...  # fmt: skip
    async def list(self, limit: int) -> list[LoggedResponse]: ...


def logged(query: Query, responder: str, der: bytes, at: datetime) -> LoggedResponse:
    response = ocsp.load_der_ocsp_response(der)
    return LoggedResponse(
        query.algorithm, query.issuer_name_hash.hex(), query.issuer_key_hash.hex(),
        serial_hex(query.serial), responder, response.certificate_status.name.lower(), der,
        at, response.next_update_utc,
    )  # fmt: skip


@dataclass(frozen=True)
class KeptResponse:
    der: bytes
    status: Status
    refresh_at: datetime


@dataclass
class OcspService:
    authorities: Callable[[], Awaitable[list[Authority]]]
    keys: KeyStore
    status_of: Callable[[str, int], Awaitable[Status]]
    """(issuer name hash, serial) -> the certificate's status as the database has it."""
    clock: Clock
    validity: timedelta
    log: ResponseLog
    _responders: dict[tuple[str, bytes, bytes], Responder] | None = field(default=None)
    _kept: OrderedDict[tuple[str, str, int], KeptResponse] = field(default_factory=OrderedDict)

    def forget(self) -> None:
        """The authorities changed (a root rollover): find the responders again."""
        self._responders = None
        self._kept.clear()

    async def answer(self, request_der: bytes) -> bytes:
        """The DER OCSPResponse to a DER OCSPRequest (an unsuccessful one if need be)."""
        try:
            query = parse_request(request_der)
        except MalformedRequest as exc:
            LOG.info("OCSP request refused: %s", exc)
            return unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        der = await self.answer_query(query)
        if der is None:  # not one of our CAs: we are not authoritative
            return unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        return der

    async def answer_query(self, query: Query) -> bytes | None:
        """The signed response about ``query``'s certificate; None if its issuer is not
        one of our CAs."""
        responders = await self._by_cert_id()
        responder = responders.get((query.algorithm, query.issuer_name_hash,
                                    query.issuer_key_hash))  # fmt: skip
        if responder is None:
            return None
        status = await self.status_of(responder.issuer_name_hash, query.serial)
        now = self.clock.now()
        key = (responder.ca_name, query.algorithm, query.serial)
        kept = self._kept.get(key)
        if query.nonce is None and kept and kept.status == status and now < kept.refresh_at:
            return kept.der
        der = responder.respond(query, status, now, self.validity)
        # Kept (and logged) only for certificates we issued: anyone can ask about any
        # number of serials, and an "unknown" is cheap to sign again.
        if query.nonce is None and status.state is not CertState.UNKNOWN:
            self._kept[key] = KeptResponse(der, status, now + self.validity / 2)
            self._kept.move_to_end(key)
            if len(self._kept) > MAX_KEPT:
                self._kept.popitem(last=False)
            await self.log.keep(logged(query, f"ca:{responder.ca_name}", der, now))
        return der

    async def _by_cert_id(self) -> dict[tuple[str, bytes, bytes], Responder]:
        if self._responders is None:
            authorities = await self.authorities()
            by_name = {a.name: a for a in authorities}
            responders = {}
            for signer in authorities:
                ca = by_name.get(signer.issuer or "")
                if signer.role is not AuthorityRole.OCSP_SIGNER or ca is None:
                    continue
                responder = Responder(ca.name, ca.certificate(), signer.certificate(),
                                      self.keys.open(signer.key_name))  # fmt: skip
                for cert_id in responder.cert_ids():
                    responders[cert_id] = responder
            self._responders = responders
        return self._responders
