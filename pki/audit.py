"""The audit log as a hash chain: each entry commits to the one before it.

Editing or deleting any entry breaks the chain at that point; deleting entries at the
end is caught by the head (sequence and hash of the last entry) kept beside the log
and advanced in the same transaction. Someone able to rewrite the whole database and
the head can forge a new chain, or empty the log and rewind the head: anchor the head
elsewhere -- `pkictl audit verify` prints it, `pkictl serve` publishes it periodically
(log line, optional file) -- and check against it with `pkictl audit verify --head
SEQ:HASH` (`verify_anchor`) to detect that too (ADR 3).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class AuditEvent:
    action: str
    actor: str
    target: str | None = None
    outcome: str = "ok"
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    event: AuditEvent
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "action": self.event.action,
            "actor": self.event.actor,
            "target": self.event.target,
            "outcome": self.event.outcome,
            "detail": dict(self.event.detail),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class AuditHead:
    seq: int
    hash: str


def _utc(at: datetime) -> datetime:
    """The instant in UTC: the store keeps instants, not offsets, so the hash must not
    depend on the offset ``at`` was given in (or entries fail to verify on reload)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("audit times must be timezone-aware")
    return at.astimezone(UTC)


def entry_hash(prev_hash: str, seq: int, at: datetime, event: AuditEvent) -> str:
    body = json.dumps(
        {
            "seq": seq,
            "at": _utc(at).isoformat(),
            "action": event.action,
            "actor": event.actor,
            "target": event.target,
            "outcome": event.outcome,
            "detail": dict(event.detail),  # as stored: any Mapping reads back a dict
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def seal(event: AuditEvent, *, at: datetime, previous: AuditHead | None) -> AuditEntry:
    seq = previous.seq + 1 if previous else 1
    prev_hash = previous.hash if previous else GENESIS_HASH
    at = _utc(at)
    return AuditEntry(seq, at, event, prev_hash, entry_hash(prev_hash, seq, at, event))


def seal_chain(
    events: Iterable[tuple[AuditEvent, datetime]], previous: AuditHead | None
) -> list[AuditEntry]:
    """Seal several events in order after ``previous``: one write of a batch."""
    entries = []
    for event, at in events:
        entry = seal(event, at=at, previous=previous)
        entries.append(entry)
        previous = AuditHead(entry.seq, entry.hash)
    return entries


def verify_chain(entries: Iterable[AuditEntry], head: AuditHead | None) -> list[str]:
    """Problems found, in order; an empty list means the log is intact."""
    problems: list[str] = []
    expected_seq, expected_prev = 1, GENESIS_HASH
    last: AuditEntry | None = None
    for entry in entries:
        if entry.seq != expected_seq:
            problems.append(f"entry {expected_seq} is missing (next is {entry.seq})")
        if entry.prev_hash != expected_prev:
            problems.append(f"entry {entry.seq}: link to the previous entry is broken")
        if entry_hash(entry.prev_hash, entry.seq, entry.at, entry.event) != entry.hash:
            problems.append(f"entry {entry.seq}: content does not match its hash (edited)")
        expected_seq, expected_prev, last = entry.seq + 1, entry.hash, entry
    if head is None:
        if last is not None:
            problems.append("audit head is missing")
    elif last is None or (last.seq, last.hash) != (head.seq, head.hash):
        problems.append(
            f"log ends at entry {last.seq if last else 0} but the head records entry "
            f"{head.seq}: entries were deleted from the end"
        )
    return problems


def parse_head(text: str) -> AuditHead:
    """``SEQ:HASH`` as `audit verify` prints it and `pkictl serve` publishes it."""
    seq, _, digest = text.strip().partition(":")
    digest = digest.lower()
    if (
        not seq.isdigit()
        or int(seq) < 1
        or len(digest) != 64
        or not all(c in "0123456789abcdef" for c in digest)
    ):
        raise ValueError(f"{text!r} is not SEQ:HASH (a sequence number, a colon, 64 hex digits)")
    return AuditHead(int(seq), digest)


def format_head(head: AuditHead) -> str:
    return f"{head.seq}:{head.hash}"


def verify_anchor(entries: Iterable[AuditEntry], anchor: AuditHead) -> list[str]:
    """Problems with the log against a head recorded elsewhere (``anchor``): the log must
    still hold entry ``anchor.seq`` with that hash. A log emptied or cut short, with its
    own head rewound to match, passes `verify_chain` but not this."""
    last = 0
    for entry in entries:
        last = entry.seq
        if entry.seq == anchor.seq:
            if entry.hash != anchor.hash:
                return [
                    f"entry {anchor.seq} has hash {entry.hash}, the recorded head says "
                    f"{anchor.hash}: the log was rewritten"
                ]
            return []
    return [
        f"the log ends at entry {last} but the recorded head is entry {anchor.seq}: "
        "entries were deleted (the log was truncated or emptied)"
    ]
