"""GetCertificateStatus (OCPP M06): an OCSP response for a certificate of a station's
V2G or contract chain, which the station hands on to the EV.

Certificates of our own CAs are answered by our responder directly, without a request.
For any other, the responderURL the station names is asked only when it is on the
allow-list -- the OCSP URLs (AIA) of our CAs and of the CAs we trust, and those
configured in `[ocsp] responders` of pkictl.toml -- and never, unless configured, when it
is a private, loopback, link-local or otherwise special address: a station must not be
able to make the CSMS reach into a network it cannot (SSRF). Answers are kept by CertID
until their nextUpdate (in the database: they outlive a restart and `pkictl ocsp
status` lists them).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from csms.services.ocsp import ResponseLog, logged
from pki.clock import Clock
from pki.hashdata import HASH_ALGORITHMS, CertificateHashData
from pki.ocsp import CERT_ID_HASHES, Query
from pki.serials import serial_hex

LOG = logging.getLogger("pkictl.ocsp")
MAX_URL = 512  # OCPP OCSPRequestDataType.responderURL


class OcspFetchError(Exception):
    """The responder could not be asked, or did not answer in time."""


class OcspFetcher(Protocol):
    async def fetch(self, url: str, request_der: bytes) -> bytes:
        """POST the request; the response body. OcspFetchError on any failure."""
        ...


class LocalResponder(Protocol):
    async def answer_query(self, query: Query) -> bytes | None: ...


@dataclass(frozen=True)
class StatusAnswer:
    """The GetCertificateStatusResponse: Accepted with the base64 DER response, or
    Failed with a reasonCode (at most 20 characters) and why."""

    ocsp_result: str | None
    reason_code: str | None = None
    detail: str | None = None

    @property
    def accepted(self) -> bool:
        return self.ocsp_result is not None


def _failed(reason_code: str, detail: str) -> StatusAnswer:
    LOG.warning("GetCertificateStatus failed: %s (%s)", reason_code, detail)
    return StatusAnswer(None, reason_code, detail)


def _special_address(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower() in ("localhost", "localhost.localdomain")
    return not address.is_global or address.is_multicast


@dataclass
class CertificateStatusService:
    local: LocalResponder
    fetcher: OcspFetcher
    allowed: Callable[[], Awaitable[frozenset[str]]]
    """The OCSP URLs of our CAs and of the CAs we trust (their AIA)."""
    configured: frozenset[str]
    """`[ocsp] responders`: allowed, special addresses included."""
    clock: Clock
    log: ResponseLog

    async def status(self, request_data: Mapping[str, Any]) -> StatusAnswer:
        """``request_data``: OCPP OCSPRequestDataType as the `ocpp` library hands it over
        (snake_case)."""
        try:
            data = CertificateHashData.from_ocpp({
                "hashAlgorithm": request_data.get("hash_algorithm"),
                "issuerNameHash": request_data.get("issuer_name_hash"),
                "issuerKeyHash": request_data.get("issuer_key_hash"),
                "serialNumber": request_data.get("serial_number"),
            })  # fmt: skip
        except ValueError as exc:
            return _failed("InvalidHashData", str(exc))
        url = str(request_data.get("responder_url", "")).strip()
        return await self.lookup(query_for(data), url)

    async def lookup(
        self, query: Query, url: str, also_allowed: frozenset[str] = frozenset()
    ) -> StatusAnswer:
        """The OCSP response for ``query``: ours, kept, or asked of ``url`` if allowed
        (``also_allowed``: URLs the caller vouches for, e.g. the AIA of a chain it
        validated; special addresses are still refused unless configured)."""
        ours = await self.local.answer_query(query)
        if ours is not None:
            return StatusAnswer(base64.b64encode(ours).decode())
        kept = await self.log.get(
            query.algorithm, query.issuer_name_hash.hex(), query.issuer_key_hash.hex(),
            serial_hex(query.serial),
        )  # fmt: skip
        if (
            kept is not None
            and kept.next_update is not None
            and self.clock.now() < kept.next_update
        ):
            return StatusAnswer(base64.b64encode(kept.der).decode())
        refusal = await self._refusal(url, also_allowed)
        if refusal is not None:
            return _failed("ResponderNotAllowed", refusal)
        return await self._ask(url, query)

    async def _ask(self, url: str, query: Query) -> StatusAnswer:
        request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            query.issuer_name_hash, query.issuer_key_hash, query.serial,
            CERT_ID_HASHES[query.algorithm](),
        ).build()  # fmt: skip
        try:
            der = await self.fetcher.fetch(url, request.public_bytes(Encoding.DER))
        except OcspFetchError as exc:
            return _failed("ResponderUnreachable", f"{url}: {exc}")
        problem = _unusable(der, query)
        if problem is not None:
            return _failed("InvalidOcspResponse", f"{url}: {problem}")
        await self.log.keep(logged(query, url, der, self.clock.now()))
        return StatusAnswer(base64.b64encode(der).decode())

    async def _refusal(self, url: str, also_allowed: frozenset[str]) -> str | None:
        """Why ``url`` is not asked, or None."""
        if not url or len(url) > MAX_URL:
            return f"responderURL {url[:64]!r}: empty or over {MAX_URL} characters"
        if url in self.configured:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"responderURL {url!r}: not an http(s) URL"
        if _special_address(parts.hostname):
            return f"responderURL {url!r}: a private or special address, not configured"
        if url not in also_allowed and url not in await self.allowed():
            return (f"responderURL {url!r} is not the OCSP URL of a CA we trust, nor in "
                    "[ocsp] responders")  # fmt: skip
        return None


def query_for(data: CertificateHashData) -> Query:
    return Query(
        HASH_ALGORITHMS[data.hash_algorithm], bytes.fromhex(data.issuer_name_hash),
        bytes.fromhex(data.issuer_key_hash), int(data.serial_number, 16), None,
    )  # fmt: skip


def _unusable(der: bytes, query: Query) -> str | None:
    """Why the responder's answer cannot be handed on, or None."""
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        return f"not an OCSP response: {exc}"
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return f"responder said {response.response_status.name}"
    if (response.serial_number, response.issuer_name_hash, response.issuer_key_hash) != (
        query.serial,
        query.issuer_name_hash,
        query.issuer_key_hash,
    ):
        return "the response is about another certificate"
    return None
