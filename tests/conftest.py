"""Shared fixtures of the pkictl test suite.

Real crypto, real databases: the CA runs with a MemoryKeyStore (real keys, kept in memory)
over a real SQLite file or a real PostgreSQL schema. Nothing under test is mocked.

PostgreSQL: PKICTL_TEST_POSTGRES_URL (default below). When it is unreachable the
PostgreSQL variants are skipped -- except under CI=true, where they fail: CI must run them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from sqlalchemy.engine import make_url

from pki.audit import AuditEvent
from pki.authority import CertificateAuthority, CsoIdentity
from pki.clock import FixedClock
from pki.keys import MemoryKeyStore
from pki.policy import Policy, load_policy
from pki.records import Station
from pki.store.sql import SqlStore, open_store

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POLICY = REPO / "policies" / "default.toml"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

# One instant for the whole session: near the real time (so that certificates the CA
# issues are valid for tools that look at the wall clock), with microseconds so that
# truncation and backdating are exercised.
NOW = datetime.now(UTC).replace(microsecond=250_000)

ORGANIZATION = "Example CPO"
COUNTRY = "DE"
STATION_ID = "CS001"
STATION_SERIAL = "SN-0001"
STATION_SECC_ID = "SECC0001"


# --- time, policy, identity -----------------------------------------------------------


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy(DEFAULT_POLICY)


@pytest.fixture(scope="session")
def identity() -> CsoIdentity:
    return CsoIdentity(
        ORGANIZATION, COUNTRY, ("csms.example.com", "127.0.0.1"), "http://csms.example.com:8080"
    )


@pytest.fixture
def station(clock: FixedClock) -> Station:
    return Station(STATION_ID, STATION_SERIAL, STATION_SECC_ID, 3, None, clock.now())


# --- stores ---------------------------------------------------------------------------


def _postgres_url() -> str:
    return os.environ.get("PKICTL_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _reset_postgres(url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
    try:
        await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL URL, after checking once per session that the server answers."""
    url = _postgres_url()

    async def probe() -> None:
        import asyncpg

        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
        await connection.close()

    try:
        # In a thread of its own: the fixture is first requested from inside the event
        # loop of an async fixture, where asyncio.run() cannot start another loop.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, probe()).result()
    except (OSError, TimeoutError, ConnectionError) as exc:
        message = f"PostgreSQL at {url} is unreachable: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: the PostgreSQL tests must run)")
        pytest.skip(message)
    except Exception as exc:  # noqa: BLE001 -- asyncpg's own errors: bad database, auth, ...
        message = f"PostgreSQL at {url} cannot be used: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: the PostgreSQL tests must run)")
        pytest.skip(message)
    return url


@pytest.fixture
async def fresh_postgres(postgres_url: str) -> str:
    """The PostgreSQL URL, its database emptied: for tests whose nodes open it themselves."""
    await _reset_postgres(postgres_url)
    return postgres_url


async def _open(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> SqlStore:
    if backend == "sqlite":
        return await open_store(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")
    url = request.getfixturevalue("postgres_url")
    await _reset_postgres(url)
    return await open_store(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    """A freshly migrated store, on SQLite and on PostgreSQL."""
    opened = await _open(request.param, tmp_path, request)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    """For tests where the database does not matter: SQLite only, to keep the suite fast."""
    opened = await open_store(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")
    try:
        yield opened
    finally:
        await opened.close()


# --- the CA ---------------------------------------------------------------------------


async def initialized_ca(
    store: SqlStore,
    *,
    policy: Policy,
    clock: FixedClock,
    identity: CsoIdentity,
    station: Station | None,
    **kwargs: object,
) -> CertificateAuthority:
    """Both hierarchies initialized, and (unless None) ``station`` registered."""
    ca = CertificateAuthority(
        store=store,
        keys=MemoryKeyStore(),
        policy=policy,
        clock=clock,
        identity=identity,
        **kwargs,
    )
    await ca.initialize(frozenset({"cso", "v2g"}), "test")
    if station is not None:
        await store.add_station(
            station, AuditEvent("station.added", "test", station.id), clock.now()
        )
    return ca


@pytest.fixture
async def ca(
    store: SqlStore,
    policy: Policy,
    clock: FixedClock,
    identity: CsoIdentity,
    station: Station,
) -> CertificateAuthority:
    """An initialized CA (both hierarchies) with station CS001, on SQLite and PostgreSQL."""
    return await initialized_ca(
        store, policy=policy, clock=clock, identity=identity, station=station
    )


@pytest.fixture
async def sqlite_ca(
    sqlite_store: SqlStore,
    policy: Policy,
    clock: FixedClock,
    identity: CsoIdentity,
    station: Station,
) -> CertificateAuthority:
    """The same CA on SQLite only, for tests where the database is irrelevant."""
    return await initialized_ca(
        sqlite_store, policy=policy, clock=clock, identity=identity, station=station
    )


# --- CSRs -----------------------------------------------------------------------------

_P256_KEY = ec.generate_private_key(ec.SECP256R1())


def build_csr(
    key: CertificateIssuerPrivateKeyTypes | None = None,
    *,
    cn: str | None = STATION_SERIAL,
    o: str | None = ORGANIZATION,
    dc: str | None = None,
    extra: Sequence[tuple[x509.ObjectIdentifier, str]] = (),
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
    hash: hashes.HashAlgorithm | None = None,
    rsa_padding: padding.PSS | padding.PKCS1v15 | None = None,
) -> str:
    """A PEM CSR signed by ``key`` (a shared P-256 key by default). None omits an attribute."""
    attributes = []
    if cn is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    if o is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    if dc is not None:
        attributes.append(x509.NameAttribute(NameOID.DOMAIN_COMPONENT, dc))
    attributes.extend(x509.NameAttribute(oid, value) for oid, value in extra)
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    csr = builder.sign(key or _P256_KEY, hash or hashes.SHA256(), rsa_padding=rsa_padding)
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="session")
def make_csr() -> Callable[..., str]:
    """Factory: make_csr(key=None, cn=..., o=..., dc=None, extensions=(), hash=None)."""
    return build_csr


# --- conformance: openssl verify and pkilint ------------------------------------------

# pkilint findings we accept, by code, each with the condition under which it is
# accepted and why (also documented in tests/vectors/README.md). Anything else at
# ERROR or FATAL fails the test.
ISO15118_DC_VALUES = frozenset({"V2G", "CPO", "MO", "OEM"})


def _dc_values(certificate: x509.Certificate) -> set[str]:
    return {
        str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.DOMAIN_COMPONENT)
    }


def _iso15118_role_dc(certificate: x509.Certificate) -> bool:
    # ISO 15118-2 marks the role of a certificate with DC=V2G / CPO / MO / OEM. These
    # are role tags, not DNS labels, so pkilint's "domainComponent must be a valid domain
    # name" check cannot pass for them; accepted only when every DC is such a tag.
    values = _dc_values(certificate)
    return bool(values) and values <= ISO15118_DC_VALUES


PKILINT_ALLOWED: dict[str, Callable[[x509.Certificate], bool]] = {
    "pkix.name_domain_components_invalid_domain_name": _iso15118_role_dc,
}


def pkilint_findings(certificate: x509.Certificate) -> list[tuple[str, str, str | None]]:
    """(severity, code, message) of every pkilint RFC 5280 finding above INFO."""
    from pkilint import loader
    from pkilint.pkix import certificate as pkix_certificate
    from pkilint.pkix import extension, name
    from pkilint.validation import ValidationFindingSeverity

    validator = pkix_certificate.create_pkix_certificate_validator_container(
        pkix_certificate.create_decoding_validators(
            name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
        ),
        [
            pkix_certificate.create_issuer_validator_container([]),
            pkix_certificate.create_validity_validator_container(),
            pkix_certificate.create_subject_validator_container([]),
            pkix_certificate.create_extensions_validator_container([]),
            pkix_certificate.create_spki_validator_container([]),
        ],
    )
    document = loader.RFC5280CertificateDocumentLoader().load_der_document(
        certificate.public_bytes(serialization.Encoding.DER), "certificate"
    )
    return [
        (f.finding.severity.name, f.finding.code, f.message)
        for result in validator.validate(document.root)
        for f in result.finding_descriptions
        if f.finding.severity <= ValidationFindingSeverity.WARNING
    ]


def pkilint_errors(certificate: x509.Certificate) -> list[tuple[str, str, str | None]]:
    """pkilint ERROR/FATAL findings that the allow-list does not justify."""
    return [
        (severity, code, message)
        for severity, code, message in pkilint_findings(certificate)
        if severity in ("ERROR", "FATAL")
        and not (code in PKILINT_ALLOWED and PKILINT_ALLOWED[code](certificate))
    ]


def pem(certificates: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def openssl_verify(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    root: x509.Certificate,
    *,
    directory: Path,
    at: datetime,
    purpose: str = "any",
) -> tuple[int, str]:
    """``openssl verify -x509_strict`` of ``leaf``; (exit code, combined output)."""
    import subprocess

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "root.pem").write_bytes(pem([root]))
    (directory / "leaf.pem").write_bytes(pem([leaf]))
    command = [
        "openssl",
        "verify",
        "-x509_strict",
        "-purpose",
        purpose,
        "-attime",
        str(int(at.timestamp())),
        "-CAfile",
        str(directory / "root.pem"),
    ]
    if intermediates:
        (directory / "intermediates.pem").write_bytes(pem(intermediates))
        command += ["-untrusted", str(directory / "intermediates.pem")]
    command.append(str(directory / "leaf.pem"))
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    return done.returncode, done.stdout + done.stderr


class Conformance:
    """The external checkers, as a fixture: ``openssl verify`` and pkilint."""

    allowed = PKILINT_ALLOWED
    findings = staticmethod(pkilint_findings)
    pkilint_errors = staticmethod(pkilint_errors)
    openssl_verify = staticmethod(openssl_verify)


@pytest.fixture(scope="session")
def conformance() -> Conformance:
    return Conformance()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs, to fill: the disk-full paths (mounting needs root, as CI runs)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
