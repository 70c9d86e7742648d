"""The log of `pkictl serve` (and its workers): one line per record, whatever a station
sends (#22 item 9).

Station-controlled strings reach log messages as arguments (a station id, a reported
event type, a certificate subject). `EscapingFormatter` escapes control characters in
the formatted message -- arguments included -- so "\\n" cannot forge a second log line
and an ESC sequence cannot reach the terminal or the log viewer. A traceback stays
several lines, but each of them is indented and escaped, so none can pass for a log
record; a database or disk fault is one line with its cause, not a traceback (#22 item
21).
"""

from __future__ import annotations

import logging

from csms.domain.text import printable
from pki.store.faults import storage_fault

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET = ("alembic", "websockets", "apscheduler", "ocpp")
"""pkictl logs admissions, refusals, sessions and renewals itself; the libraries'
per-message, per-request, per-job and migration chatter only at WARNING (the `ocpp`
library logs every message at INFO: a formatted line per message)."""


class EscapingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        saved = record.msg, record.args, record.exc_info, record.exc_text
        message = printable(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            fault = storage_fault(record.exc_info[1])
            if fault is not None:  # a fault of the database or the disk: its cause
                message += f" ({printable(fault.message())})"
                record.exc_info, record.exc_text = None, None
        record.msg, record.args = message, None
        try:
            return super().format(record)
        finally:
            record.msg, record.args, record.exc_info, record.exc_text = saved

    def formatException(self, ei: logging._SysExcInfoType) -> str:  # noqa: N802 -- logging's name
        return "\n".join(
            f"    {printable(line)}" for line in super().formatException(ei).splitlines()
        )

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 -- logging's name
        return "\n".join(f"    {printable(line)}" for line in stack_info.splitlines())


def configure_logging(level: int = logging.INFO) -> None:
    """The root logger writes escaped one-line records to stderr (`pkictl serve`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for chatty in QUIET:
        logging.getLogger(chatty).setLevel(logging.WARNING)
