"""The renewal of one station certificate, as one transition table (OCPP A02/A03).

due --trigger--> triggered             TriggerMessage(Sign...Certificate) queued
due | triggered --csr--> csr_received   the station sent SignCertificate
triggered --reject--> failed            the station refused the TriggerMessage (Rejected,
                                        NotImplemented, a CALLERROR), did not answer it
                                        in time, or accepted it and sent no CSR within
                                        retry_after_s: the renewal ends, its place under
                                        max_in_flight is freed, the scan retries it
                                        after the backoff
csr_received --sign--> signed           issued and recorded; CertificateSigned queued
csr_received --refuse--> failed         the issuance pipeline refused the CSR
signed --accept--> delivered            the station answered CertificateSigned Accepted
signed --reject--> failed               ... Rejected or CALLERROR; a station TLS
                                        certificate left unanswered waits for the
                                        station's next connection: another serial
                                        fails it, the new one confirms it
delivered | signed --confirm--> confirmed
                                        station TLS: it reconnected presenting the new
                                        serial; V2G: its Accepted is the confirmation
signed | delivered --replace--> signed  a CSR for another key, signed: its certificate
                                        replaces the unconfirmed one of the renewal
                                        (revoked at once, superseded); a refused one
                                        leaves the renewal as it was (EVerest drops an
                                        unused CSR key after an hour and starts over)
csr_received --resume--> due            a restart found the signing step unfinished
any open --withdraw--> failed           the station was removed (`station remove`): a
                                        registration under the same id starts clean

`confirmed` and `failed` end a renewal; the next attempt is a new one. Anything else is a
bug: `advance` raises rather than guess.
"""

from __future__ import annotations

from enum import StrEnum


class RenewalState(StrEnum):
    DUE = "due"
    TRIGGERED = "triggered"
    CSR_RECEIVED = "csr-received"
    SIGNED = "signed"
    DELIVERED = "delivered"
    CONFIRMED = "confirmed"
    FAILED = "failed"


class RenewalEvent(StrEnum):
    TRIGGER = "trigger"
    CSR = "csr"
    SIGN = "sign"
    REFUSE = "refuse"
    ACCEPT = "accept"
    REJECT = "reject"
    CONFIRM = "confirm"
    RESUME = "resume"
    REPLACE = "replace"
    WITHDRAW = "withdraw"


S, E = RenewalState, RenewalEvent
TRANSITIONS: dict[tuple[RenewalState, RenewalEvent], RenewalState] = {
    (S.DUE, E.TRIGGER): S.TRIGGERED,
    (S.DUE, E.CSR): S.CSR_RECEIVED,
    (S.TRIGGERED, E.CSR): S.CSR_RECEIVED,
    (S.TRIGGERED, E.REJECT): S.FAILED,
    (S.CSR_RECEIVED, E.SIGN): S.SIGNED,
    (S.CSR_RECEIVED, E.REFUSE): S.FAILED,
    (S.CSR_RECEIVED, E.RESUME): S.DUE,
    (S.SIGNED, E.ACCEPT): S.DELIVERED,
    (S.SIGNED, E.REJECT): S.FAILED,
    (S.SIGNED, E.CONFIRM): S.CONFIRMED,
    (S.SIGNED, E.REPLACE): S.SIGNED,
    (S.DELIVERED, E.CONFIRM): S.CONFIRMED,
    (S.DELIVERED, E.REPLACE): S.SIGNED,
}
TRANSITIONS.update(
    {(state, E.WITHDRAW): S.FAILED for state in S if state not in (S.CONFIRMED, S.FAILED)}
)
del S, E

ENDED = frozenset({RenewalState.CONFIRMED, RenewalState.FAILED})
UNDER_WAY = frozenset(RenewalState) - ENDED - {RenewalState.DUE}
"""Open and past `due` (triggered, a CSR received, signed, delivered): what the
in-flight cap counts, for connected stations."""


class CertificateKind(StrEnum):
    """OCPP's CertificateSigningUseEnumType: what a renewal renews."""

    STATION = "ChargingStationCertificate"
    V2G = "V2GCertificate"


TRIGGER_FOR = {
    CertificateKind.STATION: "SignChargingStationCertificate",
    CertificateKind.V2G: "SignV2GCertificate",
}


class InvalidTransition(Exception):
    """An event that the state does not allow."""


def advance(state: RenewalState, event: RenewalEvent) -> RenewalState:
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise InvalidTransition(f"{event} is not allowed in state {state}") from None
