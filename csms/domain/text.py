"""Station-controlled text made safe to show: one line, no terminal escape sequences.

A station chooses what it reports (a security event's tech info, a vendor id, a
certificate's subject); a newline in it forged a log line and raw ESC sequences reached
the terminal of whoever ran `events list` (#22 item 9). The log formatter and the CLI's
human output both escape through :func:`printable`.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls, the Unicode line and paragraph separators and the
# bidirectional overrides and isolates ("Trojan Source")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character escaped (\\n, \\r, \\t, \\x1b, \\u2028 ...):
    one line, no terminal escape sequences."""
    return _CONTROL.sub(_escape, text)
