"""The nesting bound on a raw frame agrees with the depth of what `json.loads` parses,
strings (brackets and escaped quotes inside them included) not counted."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from csms.protocol.framing import MAX_JSON_DEPTH, leading_message_id, nested_too_deep

TEXT = st.text(alphabet='[]{}"\\ab,:\n\u00e9', max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=40,
)


def depth(value: Any) -> int:
    """Nesting of arrays and objects, walked without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            pending.extend((child, level + 1) for child in children)
    return deepest


@given(JSON_VALUES, st.integers(min_value=0, max_value=8))
def test_the_bound_agrees_with_the_parsed_depth(value: Any, limit: int) -> None:
    text = json.dumps(value, ensure_ascii=False)
    assert nested_too_deep(text, limit) == (depth(value) > limit)


def test_deep_nesting_is_found_without_recursion() -> None:
    assert nested_too_deep("[" * 60_000 + "]" * 60_000)
    assert nested_too_deep('[2,"x","A",' + '{"a":' * 40 + "1" + "}" * 40 + "]")
    assert not nested_too_deep("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert nested_too_deep("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    wide = json.dumps([2, "x", "NotifyReport", {"d": [[{"a": [1]}] for _ in range(2_000)]}])
    assert not nested_too_deep(wide)
    in_a_string = json.dumps([2, "x", "A", {"s": "[" * 10_000 + '\\"' + "{" * 10_000}])
    assert not nested_too_deep(in_a_string)


def test_the_message_id_is_read_from_the_start_of_a_frame() -> None:
    assert leading_message_id(' [ 2 , "m\\"1" , "Heartbeat", [[[[') == (2, 'm"1')
    assert leading_message_id('[3,"r9",' + "[" * 5_000) == (3, "r9")
    assert leading_message_id('[2, 5, "Heartbeat"]') is None
    assert leading_message_id('{"a": 1}') is None
    assert leading_message_id("[" * 5_000) is None
