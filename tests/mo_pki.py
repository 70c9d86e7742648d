"""An eMobility operator's PKI made for the tests (ISO 15118-2 shape): MO root ->
MO sub-CA 1 -> MO sub-CA 2 -> contract certificates (CN = eMAID, DC=MO), with
`openssl ocsp` as the MO's own OCSP responder process on loopback. Keys are made at
test time and written to the test's temporary directory only."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

Key = ec.EllipticCurvePrivateKey


def _name(cn: str, dc: str = "MO") -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test MO"),
        x509.NameAttribute(NameOID.DOMAIN_COMPONENT, dc),
    ])  # fmt: skip


def certificate(
    subject: x509.Name, key: Key, issuer: tuple[x509.Certificate, Key] | None, *,
    ca: bool, path_length: int | None = None, ocsp_url: str | None = None,
    not_before: datetime | None = None, days: int = 365,
) -> x509.Certificate:  # fmt: skip
    now = datetime.now(UTC)
    start = not_before or now - timedelta(hours=1)
    issuer_name = issuer[0].subject if issuer else subject
    signer = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=not ca, content_commitment=not ca, key_encipherment=not ca,
            data_encipherment=False, key_agreement=not ca, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )  # fmt: skip
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    if ocsp_url:
        access = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
        )
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def pem(*certificates: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class MoPki:
    directory: Path
    label: str = "Test MO"
    port: int = field(default_factory=free_port)
    revoked: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.root_key, self.sub1_key, self.sub2_key = (
            ec.generate_private_key(ec.SECP256R1()) for _ in range(3)
        )
        self.root = certificate(
            _name(f"{self.label} Root"), self.root_key, None, ca=True, days=3650
        )
        self.sub1 = certificate(_name(f"{self.label} Sub-CA 1"), self.sub1_key,
                                (self.root, self.root_key), ca=True, path_length=1)  # fmt: skip
        self.sub2 = certificate(_name(f"{self.label} Sub-CA 2"), self.sub2_key,
                                (self.sub1, self.sub1_key), ca=True, path_length=0)  # fmt: skip
        self.issued: list[x509.Certificate] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def contract(self, emaid: str, *, ocsp_url: str | None = None, **kwargs: object) -> str:
        """A contract certificate for ``emaid`` and its chain below the root (PEM)."""
        leaf = certificate(
            _name(emaid), ec.generate_private_key(ec.SECP256R1()), (self.sub2, self.sub2_key),
            ca=False, ocsp_url=ocsp_url or self.url, **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
        self.issued.append(leaf)
        return pem(leaf, self.sub2, self.sub1)

    def write_index(self) -> Path:
        """openssl's CA database: V(alid) or R(evoked) per issued contract."""
        lines = []
        for issued in self.issued:
            expires = issued.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
            serial = format(issued.serial_number, "X")
            if issued.serial_number in self.revoked:
                revoked_at = datetime.now(UTC).strftime("%y%m%d%H%M%SZ")
                line = f"R\t{expires}\t{revoked_at},keyCompromise\t{serial}\tunknown\t/CN={serial}"
            else:
                line = f"V\t{expires}\t\t{serial}\tunknown\t/CN={serial}"  # subjects unique
            lines.append(line)
        path = self.directory / "index.txt"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_responder(self) -> subprocess.Popen[bytes]:
        """`openssl ocsp` answering for sub-CA 2 (signing as sub-CA 2 itself)."""
        files = {}
        for name, value in (("sub2.pem", pem(self.sub2).encode()), ("sub2.key", self.sub2_key
                            .private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))):  # fmt: skip
            files[name] = self.directory / name
            files[name].write_bytes(value)
        log = self.directory / "responder.log"
        with log.open("wb") as errors:  # the child keeps its own descriptor
            process = subprocess.Popen(
                ["openssl", "ocsp", "-index", str(self.write_index()), "-port", str(self.port),
                 "-rsigner", str(files["sub2.pem"]), "-rkey", str(files["sub2.key"]),
                 "-CA", str(files["sub2.pem"]), "-nmin", "10", "-ignore_err"],
                stdout=subprocess.DEVNULL, stderr=errors,
            )  # fmt: skip
        # Wait for its banner: a probe connection would hold up this one-at-a-time server.
        deadline = time.monotonic() + 10
        while b"waiting for OCSP client connections" not in log.read_bytes():
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"openssl ocsp did not start: {log.read_text()}")
            time.sleep(0.05)
        return process
