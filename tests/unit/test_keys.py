"""The encrypted-file key backend and atomic_write: real keys, real files."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from pki.errors import ConflictError, KeyAccessError
from pki.keys import KeySpec, Signer
from pki.keys.file import FileKeyStore, atomic_write

PASSPHRASE = b"correct horse battery staple"
P256 = KeySpec.parse("ec:secp256r1")
RSA2048 = KeySpec.parse("rsa:2048")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def public_der(signer: Signer) -> bytes:
    return signer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def self_signed(signer: Signer, hash_name: str = "sha256") -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{signer.name} test")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(signer.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    return signer.sign_certificate(builder, hash_name)


def leftovers(directory: Path, *expected: str) -> list[str]:
    """Names in ``directory`` other than ``expected`` (temporary files, say)."""
    return sorted(p.name for p in directory.iterdir() if p.name not in expected)


# --- FileKeyStore ---------------------------------------------------------------------


def test_created_key_is_private_encrypted_pkcs8(tmp_path: Path) -> None:
    directory = tmp_path / "home" / "keys"
    keys = FileKeyStore(directory, PASSPHRASE)
    signer = keys.create("cso-root", P256)

    path = keys.path("cso-root")
    assert path == directory / "cso-root.key.pem"
    assert mode(path) == 0o600
    assert mode(directory) == 0o700
    assert leftovers(directory, path.name) == []

    pem = path.read_bytes()
    begin = b"-----BEGIN "  # in pieces: no file here should look like it holds a key
    assert pem.startswith(begin + b"ENCRYPTED PRIVATE KEY-----\n")
    assert begin + b"PRIVATE KEY" not in pem
    assert begin + b"EC PRIVATE KEY" not in pem

    loaded = serialization.load_pem_private_key(pem, password=PASSPHRASE)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.public_key() == signer.public_key()
    with pytest.raises(TypeError):  # encrypted: cannot be loaded without the passphrase
        serialization.load_pem_private_key(pem, password=None)
    with pytest.raises(ValueError):  # noqa: PT011 -- cryptography's wrong-password error
        serialization.load_pem_private_key(pem, password=b"wrong")


def test_key_reopens_with_the_passphrase(tmp_path: Path) -> None:
    created = FileKeyStore(tmp_path, PASSPHRASE).create("ca", P256)
    reopened = FileKeyStore(tmp_path, PASSPHRASE).open("ca")
    assert reopened.name == "ca"
    assert public_der(reopened) == public_der(created)
    certificate = self_signed(reopened)
    certificate.verify_directly_issued_by(certificate)


def test_wrong_passphrase_is_a_clear_key_access_error(tmp_path: Path) -> None:
    FileKeyStore(tmp_path, PASSPHRASE).create("ca", P256)
    with pytest.raises(KeyAccessError) as caught:
        FileKeyStore(tmp_path, b"not the passphrase").open("ca")
    message = str(caught.value)
    assert str(tmp_path / "ca.key.pem") in message
    assert "wrong passphrase" in message


def test_damaged_key_file_is_a_key_access_error(tmp_path: Path) -> None:
    keys = FileKeyStore(tmp_path, PASSPHRASE)
    keys.create("ca", P256)
    pem = keys.path("ca").read_bytes()
    keys.path("ca").write_bytes(pem[:100] + pem[-40:])
    with pytest.raises(KeyAccessError, match="cannot be decrypted"):
        FileKeyStore(tmp_path, PASSPHRASE).open("ca")


def test_missing_key_file_names_the_path(tmp_path: Path) -> None:
    calls: list[int] = []

    def passphrase() -> bytes:
        calls.append(1)
        return PASSPHRASE

    with pytest.raises(KeyAccessError) as caught:
        FileKeyStore(tmp_path / "keys", passphrase).open("cso-root")
    assert str(tmp_path / "keys" / "cso-root.key.pem") in str(caught.value)
    assert "missing" in str(caught.value)
    assert calls == []  # no passphrase prompt for a key that is not there


def test_create_refuses_to_overwrite_an_existing_key(tmp_path: Path) -> None:
    keys = FileKeyStore(tmp_path, PASSPHRASE)
    original = keys.create("ca", P256)
    before = keys.path("ca").read_bytes()

    with pytest.raises(ConflictError, match="exists"):
        keys.create("ca", P256)
    with pytest.raises(ConflictError, match="exists"):
        FileKeyStore(tmp_path, PASSPHRASE).create("ca", P256)

    assert keys.path("ca").read_bytes() == before
    assert mode(keys.path("ca")) == 0o600
    assert leftovers(tmp_path, "ca.key.pem") == []
    assert public_der(keys.open("ca")) == public_der(original)
    assert public_der(FileKeyStore(tmp_path, PASSPHRASE).open("ca")) == public_der(original)


@pytest.mark.parametrize(
    "passphrase", [b"", lambda: b""], ids=["empty-bytes", "callable-returning-empty"]
)
def test_empty_passphrase_is_refused(tmp_path: Path, passphrase: object) -> None:
    keys = FileKeyStore(tmp_path / "keys", passphrase)  # type: ignore[arg-type]
    with pytest.raises(KeyAccessError, match="empty passphrase"):
        keys.create("ca", P256)
    assert not keys.path("ca").exists()

    FileKeyStore(tmp_path / "keys", PASSPHRASE).create("other", P256)
    with pytest.raises(KeyAccessError, match="empty passphrase"):
        keys.open("other")


def test_passphrase_is_asked_only_when_a_key_is_used(tmp_path: Path) -> None:
    calls: list[int] = []

    def passphrase() -> bytes:
        calls.append(1)
        return PASSPHRASE

    keys = FileKeyStore(tmp_path / "keys", passphrase)
    assert keys.path("ca") == tmp_path / "keys" / "ca.key.pem"
    assert calls == []
    assert not (tmp_path / "keys").exists()  # constructing does no I/O either

    keys.create("ca", P256)
    assert len(calls) == 1

    other = FileKeyStore(tmp_path / "keys", passphrase)
    assert len(calls) == 1
    other.open("ca")
    assert len(calls) == 2


@pytest.mark.parametrize("hash_name", ["sha256", "sha384"])
def test_ec_signatures_verify_with_the_public_key(tmp_path: Path, hash_name: str) -> None:
    signer = FileKeyStore(tmp_path, PASSPHRASE).create("ec", KeySpec.parse("ec:secp384r1"))
    reopened = FileKeyStore(tmp_path, PASSPHRASE).open("ec")
    certificate = self_signed(reopened, hash_name)
    public = signer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert certificate.signature_hash_algorithm is not None
    assert certificate.signature_hash_algorithm.name == hash_name
    public.verify(
        certificate.signature,
        certificate.tbs_certificate_bytes,
        ec.ECDSA(certificate.signature_hash_algorithm),
    )
    with pytest.raises(InvalidSignature):
        public.verify(
            certificate.signature,
            certificate.tbs_certificate_bytes + b"x",
            ec.ECDSA(certificate.signature_hash_algorithm),
        )

    crl = reopened.sign_crl(
        x509.CertificateRevocationListBuilder()
        .issuer_name(certificate.subject)
        .last_update(datetime.now(UTC))
        .next_update(datetime.now(UTC) + timedelta(days=1)),
        hash_name,
    )
    assert crl.is_signature_valid(public)


def test_rsa_signatures_are_pss_and_verify_with_the_public_key(tmp_path: Path) -> None:
    signer = FileKeyStore(tmp_path, PASSPHRASE).create("rsa", RSA2048)
    reopened = FileKeyStore(tmp_path, PASSPHRASE).open("rsa")
    certificate = self_signed(reopened)
    assert certificate.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    parameters = certificate.signature_algorithm_parameters
    assert isinstance(parameters, padding.PSS)
    public = signer.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(
        certificate.signature,
        certificate.tbs_certificate_bytes,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    with pytest.raises(InvalidSignature):  # not PKCS#1 v1.5
        public.verify(
            certificate.signature,
            certificate.tbs_certificate_bytes,
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    certificate.verify_directly_issued_by(certificate)

    crl = reopened.sign_crl(
        x509.CertificateRevocationListBuilder()
        .issuer_name(certificate.subject)
        .last_update(datetime.now(UTC))
        .next_update(datetime.now(UTC) + timedelta(days=1)),
        "sha256",
    )
    assert crl.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    assert crl.is_signature_valid(public)


# --- atomic_write ---------------------------------------------------------------------


def test_atomic_write_writes_with_mode_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.pem"
    atomic_write(target, b"one", 0o640)
    assert target.read_bytes() == b"one"
    assert mode(target) == 0o640
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert mode(target) == 0o644
    assert leftovers(target.parent, "file.pem") == []


def test_atomic_write_exclusive_refuses_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "file.pem"
    atomic_write(target, b"original", 0o600, exclusive=True)
    with pytest.raises(ConflictError, match="exists"):
        atomic_write(target, b"replacement", 0o600, exclusive=True)
    assert target.read_bytes() == b"original"
    assert leftovers(tmp_path, "file.pem") == []


def test_atomic_write_exclusive_refuses_a_path_that_appears_meanwhile(tmp_path: Path) -> None:
    """A dangling symlink is invisible to exists() but occupies the name, like a file
    created between the check and the link: still a ConflictError, nothing replaced."""
    target = tmp_path / "file.pem"
    target.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConflictError):
        atomic_write(target, b"data", 0o600, exclusive=True)
    assert target.is_symlink()
    assert not (tmp_path / "nowhere").exists()
    assert leftovers(tmp_path, "file.pem") == []


def test_atomic_write_leaves_no_temporary_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "directory"
    target.mkdir()  # replacing a directory with a file fails after the temporary is written
    with pytest.raises(OSError):  # noqa: PT011 -- IsADirectoryError or similar, by platform
        atomic_write(target, b"data")
    assert target.is_dir()
    assert leftovers(tmp_path, "directory") == []

    with pytest.raises(TypeError):  # fails while writing the temporary file
        atomic_write(tmp_path / "file", "not bytes")  # type: ignore[arg-type]
    assert leftovers(tmp_path, "directory") == []


def test_atomic_write_survives_a_stale_temporary_file(tmp_path: Path) -> None:
    """A crash (kill -9, power loss) can leave a temporary file behind; in a container
    the next run has the same pid. The next write must still succeed."""
    target = tmp_path / "file.pem"
    stale = tmp_path / f".file.pem.{os.getpid()}.tmp"
    stale.write_bytes(b"half-written")
    atomic_write(target, b"data", 0o600, exclusive=True)
    assert target.read_bytes() == b"data"
    atomic_write(target, b"more")
    assert target.read_bytes() == b"more"
