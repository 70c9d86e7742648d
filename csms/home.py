"""The pkictl home directory and its `pkictl.toml`.

The home is where the embedded mode keeps everything (keys, certificates, CRLs, the
SQLite database, the policy in force). Writing the configuration file is the last step
of `pkictl init`: a home without it is not initialized, whatever else it contains.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pki.authority import CsoIdentity
from pki.errors import InputError, PkiError

CONFIG_FILE = "pkictl.toml"
POLICY_FILE = "policy.toml"
DATABASE_FILE = "pkictl.db"
PASSPHRASE_FILE = Path("secrets") / "passphrase"
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
COUNTRY = re.compile(r"^[A-Z]{2}$")


class HomeError(PkiError):
    """The home is missing, not initialized, or its configuration is invalid."""


@dataclass(frozen=True)
class HomeConfig:
    organization: str
    country: str
    csms_hosts: tuple[str, ...]
    base_url: str
    hierarchies: frozenset[str]
    database_url: str | None = None
    serve: Mapping[str, str | int] = field(default_factory=dict)
    """The optional [serve] table: host, ocpp_port, http_port, plain_port."""
    renewal: Mapping[str, int] = field(default_factory=dict)
    """The optional [renewal] table: RENEWAL_KEYS, each a positive whole number."""
    ocsp_responders: tuple[str, ...] = ()
    """[ocsp] responders: OCSP URLs GetCertificateStatus may ask besides the AIA of the
    CAs we trust (special addresses included)."""
    audit: Mapping[str, str | int] = field(default_factory=dict)
    """The optional [audit] table: head_file (where `pkictl serve` writes the audit head,
    relative to the home unless absolute) and head_interval_s."""

    def identity(self) -> CsoIdentity:
        return CsoIdentity(self.organization, self.country, self.csms_hosts, self.base_url)


def validate_identity(
    organization: str, country: str, hosts: tuple[str, ...], base_url: str | None
) -> tuple[str, str, tuple[str, ...], str]:
    """Check `pkictl init` inputs; returns them normalised, with the default base URL."""
    organization = organization.strip()
    if not 0 < len(organization) <= 64:
        raise InputError("--org: the organization name must be 1 to 64 characters")
    if not COUNTRY.match(country.upper()):
        raise InputError(f"--country: {country!r} is not a two-letter ISO 3166 code")
    if not hosts:
        raise InputError("--csms-host: at least one host name or IP address is required")
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not HOSTNAME.match(host):
                raise InputError(
                    f"--csms-host: {host!r} is not a host name or IP address"
                ) from None
    if base_url is None:
        first = hosts[0]
        shown = f"[{first}]" if ":" in first else first
        base_url = f"http://{shown}:8080"
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", base_url):
        raise InputError(f"--base-url: {base_url!r} is not an http(s) URL")
    return organization, country.upper(), tuple(dict.fromkeys(hosts)), base_url.rstrip("/")


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def render_config(config: HomeConfig) -> str:
    hosts = ", ".join(_toml_string(h) for h in config.csms_hosts)
    hierarchies = ", ".join(_toml_string(h) for h in sorted(config.hierarchies))
    lines = [
        "# pkictl instance configuration, written by `pkictl init`.",
        "[ca]",
        f"organization = {_toml_string(config.organization)}",
        f"country = {_toml_string(config.country)}",
        f"csms_hosts = [{hosts}]",
        f"base_url = {_toml_string(config.base_url)}",
        f"hierarchies = [{hierarchies}]",
        "",
        "[database]",
        '# Default: SQLite at HOME/pkictl.db. PostgreSQL: "postgresql+asyncpg://user@host/db".',
    ]
    if config.database_url:
        lines.append(f"url = {_toml_string(config.database_url)}")
    lines += [
        "",
        "[renewal]",
        "# The renewal daemon of `pkictl serve` (thresholds are per profile, in the policy):",
        "# scan_interval_s = 3600  # how often certificates are checked (and at each boot)",
        "# max_in_flight = 100     # renewals open at once; the next scan starts more",
        "# retry_after_s = 600     # wait after a failed attempt; doubles with each failure",
        "# max_attempts = 5        # then no more automatic attempts, and an alert",
        "# jitter_s = 259200       # renewals start up to this long after their threshold",
        "# revoke_replaced_after_s = 604800  # then a replaced certificate is revoked",
        "# expiry_warning_days = 90  # alert (warning) if a renewal is not progressing by then",
        "# expiry_critical_days = 30  # alert (critical) for a certificate still in use, and",
        "# expiry_alert_days = 14     # again at this many days before expiry",
        "# max_certificates_per_day = 5  # a station's CSRs past this are refused, alerted",
        "",
        "[ocsp]",
        "# OCSP responders GetCertificateStatus may ask for stations, besides the OCSP URLs",
        "# of the CAs we trust (private and loopback addresses are asked only if listed):",
        '# responders = ["http://ocsp.mo.example.com/"]',
        "",
        "[audit]",
        "# `pkictl serve` publishes the audit log's head (SEQ:HASH) in its log, and in this",
        "# file if set -- keep it where the database cannot reach (another disk, host or",
        "# a WORM store); `pkictl audit verify --head SEQ:HASH` then detects a truncated log:",
        '# head_file = "/var/lib/pkictl-anchor/audit-head"',
        "# head_interval_s = 300",
        "",
        "[serve]",
        "# Defaults of `pkictl serve` (its options override them):",
        '# host = "0.0.0.0"',
        "# ocpp_port = 8443    # wss, mutual TLS (security profiles 2 and 3)",
        "# http_port = 8080    # /health, OCSP (/ocsp) and CRLs (/crl/NAME.crl)",
        "# plain_port = 8081   # ws:// for security profile 1 stations; off unless set",
        '# signing_process = "auto"  # station CSRs checked and signed in a child process',
        "#   on another core: on, off, or auto (on when each worker has a core to spare)",
    ]
    return "\n".join(lines) + "\n"


def load_config(home: Path) -> HomeConfig:
    path = home / CONFIG_FILE
    if not path.exists():
        raise HomeError(
            f"{home} is not an initialized pkictl home (no {CONFIG_FILE}); run `pkictl init`"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise HomeError(f"{path}: not valid TOML: {exc}") from None
    ca = data.get("ca")
    if not isinstance(ca, dict):
        raise HomeError(f"{path}: ca: missing table [ca]")
    for key in ("organization", "country", "csms_hosts", "base_url"):
        if key not in ca:
            raise HomeError(f"{path}: ca.{key}: required")
    if not isinstance(ca["csms_hosts"], list) or not ca["csms_hosts"]:
        raise HomeError(f"{path}: ca.csms_hosts: must be a non-empty list of host names")
    database = data.get("database", {})
    url = database.get("url") if isinstance(database, dict) else None
    if url is not None and not isinstance(url, str):
        raise HomeError(f"{path}: database.url: must be a string")
    return HomeConfig(
        organization=str(ca["organization"]),
        country=str(ca["country"]),
        csms_hosts=tuple(str(h) for h in ca["csms_hosts"]),
        base_url=str(ca["base_url"]),
        hierarchies=frozenset(str(h) for h in ca.get("hierarchies", ["cso", "v2g"])),
        database_url=url,
        serve=_serve_table(path, data.get("serve", {})),
        renewal=_renewal_table(path, data.get("renewal", {})),
        ocsp_responders=_ocsp_responders(path, data.get("ocsp", {})),
        audit=_audit_table(path, data.get("audit", {})),
    )


AUDIT_KEYS = {"head_file": str, "head_interval_s": int}


def _audit_table(path: Path, table: object) -> dict[str, str | int]:
    if not isinstance(table, dict):
        raise HomeError(f"{path}: audit: must be a table")
    for key, value in table.items():
        kind = AUDIT_KEYS.get(key)
        if kind is None:
            raise HomeError(f"{path}: audit.{key}: unknown key (known: {', '.join(AUDIT_KEYS)})")
        if kind is str and (not isinstance(value, str) or not value.strip()):
            raise HomeError(f"{path}: audit.{key}: must be a file path")
        if kind is int and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise HomeError(f"{path}: audit.{key}: must be a whole number of seconds, at least 1")
    return dict(table)


def _ocsp_responders(path: Path, table: object) -> tuple[str, ...]:
    if not isinstance(table, dict) or set(table) - {"responders"}:
        raise HomeError(f"{path}: ocsp: must be a table with only responders = [URL, ...]")
    urls = table.get("responders", [])
    if not isinstance(urls, list) or not all(
        isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls
    ):
        raise HomeError(f"{path}: ocsp.responders: must be a list of http(s) URLs")
    return tuple(urls)


SERVE_KEYS = {
    "host": str, "ocpp_port": int, "http_port": int, "plain_port": int, "signing_process": str,
}  # fmt: skip
SIGNING_PROCESS_CHOICES = ("auto", "on", "off")


def _serve_table(path: Path, table: object) -> dict[str, str | int]:
    if not isinstance(table, dict):
        raise HomeError(f"{path}: serve: must be a table")
    for key, value in table.items():
        kind = SERVE_KEYS.get(key)
        if kind is None:
            raise HomeError(f"{path}: serve.{key}: unknown key (known: {', '.join(SERVE_KEYS)})")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise HomeError(
                f"{path}: serve.{key}: must be {'a string' if kind is str else 'a number'}"
            )
        if key == "signing_process" and value not in SIGNING_PROCESS_CHOICES:
            raise HomeError(
                f"{path}: serve.{key}: {value!r} is not one of {', '.join(SIGNING_PROCESS_CHOICES)}"
            )
        if isinstance(value, int) and not 0 <= value <= 65535:
            raise HomeError(f"{path}: serve.{key}: {value} is not a port number")
    return dict(table)


RENEWAL_KEYS = (
    "scan_interval_s", "max_in_flight", "retry_after_s", "max_attempts", "jitter_s",
    "revoke_replaced_after_s", "expiry_warning_days", "expiry_critical_days",
    "expiry_alert_days", "max_certificates_per_day",
)  # fmt: skip


def _renewal_table(path: Path, table: object) -> dict[str, int]:
    if not isinstance(table, dict):
        raise HomeError(f"{path}: renewal: must be a table")
    for key, value in table.items():
        if key not in RENEWAL_KEYS:
            raise HomeError(
                f"{path}: renewal.{key}: unknown key (known: {', '.join(RENEWAL_KEYS)})"
            )
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise HomeError(f"{path}: renewal.{key}: must be a whole number of at least 1")
    return dict(table)


def database_url(home: Path, config: HomeConfig | None, given: str | None = None) -> str:
    """``given`` (--database-url), else PKICTL_DATABASE_URL, else the configured URL,
    else SQLite in the home."""
    override = given or os.environ.get("PKICTL_DATABASE_URL")
    if override:
        return override
    if config is not None and config.database_url:
        return config.database_url
    return f"sqlite+aiosqlite:///{(home / DATABASE_FILE).resolve()}"
