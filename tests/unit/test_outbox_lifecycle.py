"""The outbox call lifecycle, as its transition table."""

from __future__ import annotations

import itertools

import pytest

from csms.domain.outbox import FINAL, CallEvent, CallState, InvalidTransition, advance

ALLOWED = {
    (CallState.QUEUED, CallEvent.SEND): CallState.SENT,
    (CallState.SENT, CallEvent.ANSWER): CallState.ANSWERED,
    (CallState.SENT, CallEvent.CALL_ERROR): CallState.FAILED,
    (CallState.SENT, CallEvent.TIMEOUT): CallState.TIMED_OUT,
    (CallState.SENT, CallEvent.DISCONNECT): CallState.QUEUED,
    (CallState.QUEUED, CallEvent.WITHDRAW): CallState.FAILED,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(CallState, CallEvent)))
def test_every_pair_is_allowed_exactly_as_the_table_says(
    state: CallState, event: CallEvent
) -> None:
    if (state, event) in ALLOWED:
        assert advance(state, event) is ALLOWED[state, event]
    else:
        with pytest.raises(InvalidTransition, match=f"{event} is not allowed in state {state}"):
            advance(state, event)


def test_final_states_have_no_way_out() -> None:
    assert all(state not in FINAL for state, _ in ALLOWED)
