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

import asyncio
import base64
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from csms.services.inventory import hash_data_of
from csms.services.ocsp import ResponseLog, logged
from pki.clock import Clock
from pki.hashdata import HASH_ALGORITHMS, CertificateHashData
from pki.ocsp import CERT_ID_HASHES, Query, current
from pki.serials import serial_hex

LOG = logging.getLogger("pkictl.ocsp")
MAX_URL = 512  # OCPP OCSPRequestDataType.responderURL
MAX_RESULT_DER = 5500 * 3 // 4  # OCPP ocspResult: base64, at most 5500 characters


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


def _http_target(url: str) -> tuple[str, int] | str:
    """(host, port) of an http(s) URL, or why it is not one."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return f"responderURL {url!r}: not a URL"
    if parts.scheme not in ("http", "https") or not host:
        return f"responderURL {url!r}: not an http(s) URL"
    return host, port or (443 if parts.scheme == "https" else 80)


def _special(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def _resolves_to_special(host: str, port: int) -> bool:
    """True if ``host`` is, or resolves to, any address outside the global unicast
    space (private, loopback, link-local, the metadata address ...), in any spelling
    ("2130706433", "0x7f.1", "[::ffff:10.0.0.1]"), or does not resolve at all."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return True
    return not infos or any(_special(str(info[4][0])) for info in infos)


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
            data = hash_data_of(request_data)
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
            and kept.responder == url  # another responder's word is not this one's
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
        problem = _unusable(der, query, self.clock.now())
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
        target = _http_target(url)
        if isinstance(target, str):
            return target
        if url not in also_allowed and url not in await self.allowed():
            return (f"responderURL {url!r} is not the OCSP URL of a CA we trust, nor in "
                    "[ocsp] responders")  # fmt: skip
        if await _resolves_to_special(*target):
            return f"responderURL {url!r}: a private or special address, not configured"
        return None


def query_for(data: CertificateHashData) -> Query:
    return Query(
        HASH_ALGORITHMS[data.hash_algorithm], bytes.fromhex(data.issuer_name_hash),
        bytes.fromhex(data.issuer_key_hash), int(data.serial_number, 16), None,
    )  # fmt: skip


def _unusable(der: bytes, query: Query, now: datetime) -> str | None:
    """Why the responder's answer cannot be handed on, or None. (Its signature is for
    whoever holds the issuer's certificate to check: the EV, or `pki.ocsp.verified_status`
    on the contract path.)"""
    if len(der) > MAX_RESULT_DER:
        return f"{len(der)} bytes: over what OCPP's ocspResult can carry"
    try:
        response = ocsp.load_der_ocsp_response(der)
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            return f"responder said {response.response_status.name}"
        (single,) = list(response.responses)
    except ValueError as exc:
        return f"not an OCSP response about one certificate: {exc}"
    if (single.serial_number, single.issuer_name_hash, single.issuer_key_hash) != (
        query.serial,
        query.issuer_name_hash,
        query.issuer_key_hash,
    ):
        return "the response is about another certificate"
    if not current(single.this_update_utc, single.next_update_utc, now):
        return "the response is not current"
    return None
