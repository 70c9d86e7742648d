"""A real pkictl home for integration tests: initialized through the composition root,
with stations registered and client certificates issued by its CA (keys generated at
test time, written to a temporary directory only)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from csms.app import default_policy_text, initialize_home, open_app
from csms.home import HomeConfig
from pki.clock import FixedClock

ORG = "Example CPO"
PASSPHRASE = "integration-test-passphrase"
STATION_PASSWORD = "a-profile-2-password"

Identity = tuple[Path, Path]
"""A client certificate chain file (leaf first) and its unencrypted key file."""


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def csr(key: ec.EllipticCurvePrivateKey, serial: str, org: str = ORG) -> str:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, serial),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        ]
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class Home:
    path: Path
    directory: Path

    @property
    def root_pem(self) -> Path:
        return self.path / "certs" / "cso-root.pem"

    async def issue(
        self, name: str, *, station: str, serial: str, clock: FixedClock | None = None
    ) -> Identity:
        """A station certificate from the CA for ``station`` (whose registered serial
        must be ``serial``); ``clock`` in the past makes an expired one."""
        key = ec.generate_private_key(ec.SECP256R1())
        async with open_app(self.path, passphrase_file(self.directory), clock) as app:
            issued = await app.ca.issue_for_station(
                csr_pem=csr(key, serial), profile_name="charging-station",
                station_id=station, actor="test",
            )  # fmt: skip
        chain = self.directory / f"{name}.pem"
        chain.write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in issued.chain)
        )
        return chain, write_key(self.directory / f"{name}.key", key)

    def self_signed(self, name: str, cn: str) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        chain = self.directory / f"{name}.pem"
        chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return chain, write_key(self.directory / f"{name}.key", key)

    def client_context(
        self,
        identity: Identity | None,
        *,
        max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
        ciphers: str | None = None,
    ) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.root_pem)
        context.maximum_version = max_version
        if ciphers is not None:
            context.set_ciphers(ciphers)
        if identity is not None:
            context.load_cert_chain(*identity)
        return context


async def initialized_home(
    directory: Path,
    stations: dict[str, tuple[str, int, bool]],
    hierarchies: frozenset[str] = frozenset({"cso"}),
) -> Home:
    """A home under ``directory`` (CSO hierarchy only unless told); ``stations``: id ->
    (serial, profile, allow_expired). Profile 1/2 stations get STATION_PASSWORD."""
    home = directory / "ca"
    config = HomeConfig(ORG, "DE", ("localhost", "127.0.0.1"), "http://localhost:8080",
                        hierarchies)  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PKICTL_PASSPHRASE", PASSPHRASE)
        await initialize_home(home, config, policy_text=default_policy_text(), policy_source="t")
    async with open_app(home, passphrase_file=passphrase_file(directory)) as app:
        for station_id, (serial, profile, allow_expired) in stations.items():
            await app.stations.register(
                station_id, serial_number=serial, secc_id=None, security_profile=profile,
                password=STATION_PASSWORD if profile < 3 else None, actor="test",
                allow_expired=allow_expired,
            )  # fmt: skip
    return Home(home, directory)


def passphrase_file(directory: Path) -> Path:
    path = directory / "passphrase"
    if not path.exists():
        path.write_text(PASSPHRASE)
    return path
