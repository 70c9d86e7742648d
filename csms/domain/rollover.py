"""One station's part in a root rollover campaign, as one transition table (OCPP M05).

pending --install--> install-sent     its AdditionalRootCertificateCheck is known;
                                      InstallCertificate (new root, or link) queued
install-sent --accept--> installed    Accepted; GetInstalledCertificateIds queued
install-sent --reject--> failed       Rejected, Failed, CALLERROR or no answer
installed --missing--> failed         Accepted, yet the station does not list it
* --verify--> verified                the station lists the new root (or the link
                                      certificate) among its CSMSRootCertificates
pending --reject--> failed            the check itself got no answer
* --retry--> pending                  `--retry`: any station not verified starts over

Only `verified` lets the switch go ahead for the station. Anything else is a bug:
`advance` raises rather than guess.
"""

from __future__ import annotations

from enum import StrEnum


class StationRolloverState(StrEnum):
    PENDING = "pending"
    INSTALL_SENT = "install-sent"
    INSTALLED = "installed"
    VERIFIED = "verified"
    FAILED = "failed"


class StationRolloverEvent(StrEnum):
    INSTALL = "install"
    ACCEPT = "accept"
    REJECT = "reject"
    MISSING = "missing"
    VERIFY = "verify"
    RETRY = "retry"


class InstallMethod(StrEnum):
    ROOT = "root"
    """The new self-signed root: what a station without AdditionalRootCertificateCheck
    installs beside the old one."""
    LINK = "link"
    """The link certificate (new root's key, signed by the old root): a station with
    AdditionalRootCertificateCheck accepts only a CSMS root the old one signed, and
    keeps the old as a fallback until it has connected under the new (M05.FR.09-16)."""


S, E = StationRolloverState, StationRolloverEvent
TRANSITIONS: dict[tuple[StationRolloverState, StationRolloverEvent], StationRolloverState] = {
    (S.PENDING, E.INSTALL): S.INSTALL_SENT,
    (S.PENDING, E.REJECT): S.FAILED,
    (S.INSTALL_SENT, E.ACCEPT): S.INSTALLED,
    (S.INSTALL_SENT, E.REJECT): S.FAILED,
    (S.INSTALLED, E.MISSING): S.FAILED,
    **{(state, E.RETRY): S.PENDING for state in S if state is not S.VERIFIED},
    **{(state, E.VERIFY): S.VERIFIED for state in S if state is not S.VERIFIED},
}
del S, E


class InvalidTransition(Exception):
    """An event that the state does not allow."""


def advance(state: StationRolloverState, event: StationRolloverEvent) -> StationRolloverState:
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise InvalidTransition(f"{event} is not allowed in state {state}") from None
