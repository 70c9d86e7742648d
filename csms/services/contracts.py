"""Authorize with an ISO 15118 contract (OCPP C07): the eMAID's contract certificate
chain, or the hash data of its certificates, checked before the idToken itself.

- With a PEM chain: the path to a trusted MO or V2G root and the ISO 15118 rules
  (`pki.contract`), then the contract certificate's revocation status by OCSP from the
  responder its (now validated) AIA names, the response's signature checked against
  the issuing sub-CA.
- With iso15118CertificateHashData only: each certificate's OCSP status from the
  station's responderURL, asked only if allowed (GetCertificateStatus's rules). The
  station holds the chain; the signature of those responses is the EV's to check.
- Then the eMAID as an idToken: Accepted, or ContractCancelled when it is blocked or
  not known.

Revocation status that cannot be had (responder refused, unreachable, unusable answer)
fails closed: CertChainError, idToken Invalid, and the reason logged.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.x509 import ocsp

from csms.services.certificate_status import StatusAnswer, query_for
from csms.services.inventory import hash_data_of
from csms.services.tokens import TokenStatus
from pki.clock import Clock
from pki.contract import ContractOutcome, check_contract
from pki.ocsp import CertState, Query, Responder, UnusableResponse, ocsp_urls, verified_status

LOG = logging.getLogger("pkictl.contracts")


class StatusLookup(Protocol):
    async def lookup(
        self, query: Query, url: str, also_allowed: frozenset[str] = frozenset()
    ) -> StatusAnswer: ...


class TokenStatuses(Protocol):
    async def status(self, id_token: str, type_: str) -> TokenStatus: ...


@dataclass(frozen=True)
class ContractAnswer:
    certificate_status: str
    """OCPP AuthorizeCertificateStatusEnumType."""
    token_status: str
    """OCPP AuthorizationStatusEnumType of idTokenInfo."""
    reason: str


_REFUSED_TOKEN = {
    ContractOutcome.CERTIFICATE_EXPIRED: "Expired",
}


@dataclass
class ContractAuthorizer:
    roots: Callable[[], Awaitable[list[x509.Certificate]]]
    """The MO and V2G roots we trust."""
    status: StatusLookup
    tokens: TokenStatuses
    clock: Clock

    async def authorize(
        self, station_id: str, emaid: str, certificate: str | None,
        hash_data: Sequence[Mapping[str, Any]] | None,
    ) -> ContractAnswer:  # fmt: skip
        """C07. Every refusal -- of the contract or of the eMAID behind a valid one
        (ContractCancelled: blocked or not known) -- is logged at WARNING with the
        station, the eMAID and the reason."""
        if certificate:
            refused = await self._check_chain(emaid, certificate)
        else:
            refused = await self._check_hash_data(hash_data or [])
        if refused is None:
            token = await self.tokens.status(emaid, "eMAID")
            if token is TokenStatus.ACCEPTED:
                return ContractAnswer("Accepted", "Accepted", "valid contract")
            refused = ContractAnswer(
                "ContractCancelled", token.value, f"the eMAID is {token.value.lower()}"
            )
        LOG.warning(
            "%s: contract of eMAID %r refused: %s/%s (%s)", station_id, emaid,
            refused.certificate_status, refused.token_status, refused.reason,
        )  # fmt: skip
        return refused

    async def _check_chain(self, emaid: str, pem: str) -> ContractAnswer | None:
        check = check_contract(pem, emaid, await self.roots(), self.clock.now())
        if check.outcome is not ContractOutcome.ACCEPTED:
            return ContractAnswer(
                check.outcome.value, _REFUSED_TOKEN.get(check.outcome, "Invalid"), check.reason
            )
        leaf, issuer = check.chain[0], check.chain[1]
        name_hash, key_hash = next(
            (n, k) for a, n, k in Responder.cert_ids_of(issuer) if a == "sha256"
        )
        query = Query("sha256", name_hash, key_hash, leaf.serial_number, None)
        urls = ocsp_urls(leaf)
        if not urls:
            return ContractAnswer("CertChainError", "Invalid", "the contract names no OCSP URL")
        answer = await self.status.lookup(query, urls[0], also_allowed=frozenset(urls))
        if answer.ocsp_result is None:
            return ContractAnswer("CertChainError", "Invalid", f"no OCSP status: {answer.detail}")
        try:
            status = verified_status(
                base64.b64decode(answer.ocsp_result), leaf, issuer, self.clock.now()
            )
        except UnusableResponse as exc:
            return ContractAnswer("CertChainError", "Invalid", f"OCSP: {exc}")
        return _revocation_refusal(status.state)

    async def _check_hash_data(self, entries: Sequence[Mapping[str, Any]]) -> ContractAnswer | None:
        if not entries:
            return ContractAnswer("NoCertificateAvailable", "Invalid", "no certificate given")
        for entry in entries:
            try:
                data = hash_data_of(entry)
            except ValueError as exc:
                return ContractAnswer("CertChainError", "Invalid", f"hash data: {exc}")
            answer = await self.status.lookup(query_for(data), str(entry.get("responder_url", "")))
            if answer.ocsp_result is None:
                return ContractAnswer(
                    "CertChainError", "Invalid", f"no OCSP status: {answer.detail}"
                )
            response = ocsp.load_der_ocsp_response(base64.b64decode(answer.ocsp_result))
            refused = _revocation_refusal(CertState[response.certificate_status.name])
            if refused is not None:
                return refused
        return None


def _revocation_refusal(state: CertState) -> ContractAnswer | None:
    if state is CertState.GOOD:
        return None
    if state is CertState.REVOKED:
        return ContractAnswer("CertificateRevoked", "Invalid", "revoked (OCSP)")
    return ContractAnswer("CertChainError", "Invalid", "unknown to its OCSP responder")
