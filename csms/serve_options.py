"""What `pkictl serve` listens on and how, apart from the service itself: the CLI's
option defaults and the worker supervisor read these without loading the OCPP stack."""

from __future__ import annotations

from dataclasses import dataclass

from csms.services.health import PROBE_INTERVAL_S
from csms.services.outbox import POLL_INTERVAL_S, RESPONSE_TIMEOUT_S


@dataclass(frozen=True)
class ServeOptions:
    host: str = "0.0.0.0"  # noqa: S104 -- a CSMS listens for stations on every interface
    ocpp_port: int = 8443
    http_port: int = 8080
    plain_port: int | None = None
    """ws:// for security profile 1 stations (Basic auth, no TLS); off when None."""
    response_timeout: float = RESPONSE_TIMEOUT_S
    """Seconds a station has to answer a call from the outbox."""
    outbox_poll_interval: float = POLL_INTERVAL_S
    """How often a connected station's outbox is checked for calls queued elsewhere."""
    reuse_port: bool = False
    """Listen beside other `pkictl serve` processes on the same ports (SO_REUSEPORT):
    `pkictl serve --workers N` runs N such nodes."""
    signing_process: bool = False
    """Check and sign station CSRs in a child process, on another core (ADR 15)."""
    health_interval: float = PROBE_INTERVAL_S
    """How often the database is probed for `/health` (a write and a read)."""


@dataclass(frozen=True)
class Listening:
    ocpp_port: int
    http_port: int
    plain_port: int | None = None
