"""The lifecycle of a call from the CSMS to a station, as one transition table.

queued --send--> sent --answer--> answered
                 sent --call_error--> failed      (the station answered CALLERROR)
                 sent --timeout--> timed_out      (no answer within the response timeout)
                 sent --disconnect--> queued      (sent again when the station is back)
queued --withdraw--> failed                       (the station was removed)

Anything else is a bug: `advance` raises rather than guess.
"""

from __future__ import annotations

from enum import StrEnum


class CallState(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    ANSWERED = "answered"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


class CallEvent(StrEnum):
    SEND = "send"
    ANSWER = "answer"
    CALL_ERROR = "call_error"
    TIMEOUT = "timeout"
    DISCONNECT = "disconnect"
    WITHDRAW = "withdraw"
    """The station was removed: what is queued for it is never sent."""


TRANSITIONS: dict[tuple[CallState, CallEvent], CallState] = {
    (CallState.QUEUED, CallEvent.SEND): CallState.SENT,
    (CallState.SENT, CallEvent.ANSWER): CallState.ANSWERED,
    (CallState.SENT, CallEvent.CALL_ERROR): CallState.FAILED,
    (CallState.SENT, CallEvent.TIMEOUT): CallState.TIMED_OUT,
    (CallState.SENT, CallEvent.DISCONNECT): CallState.QUEUED,
    (CallState.QUEUED, CallEvent.WITHDRAW): CallState.FAILED,
}

FINAL = frozenset({CallState.ANSWERED, CallState.FAILED, CallState.TIMED_OUT})


class InvalidTransition(Exception):
    """An event that the state does not allow."""


def advance(state: CallState, event: CallEvent) -> CallState:
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise InvalidTransition(f"{event} is not allowed in state {state}") from None
