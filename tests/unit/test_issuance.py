"""Station certificate issuance through ``CertificateAuthority.issue_for_station``.

Every refusal: the exact reason code and field, a message naming the field/value, no
certificate row, exactly one ``certificate.refused`` audit entry. Every success: the
certificate carries only what the profile says (subject from the templates, fixed
extensions, bounded validity), the chain stops below the root, and the record and audit
entry are written.
"""

from __future__ import annotations

import base64
import itertools
import secrets
import textwrap
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    ExtensionOID,
    NameOID,
    SignatureAlgorithmOID,
)
from pyasn1.codec.der import decoder, encoder
from pyasn1_alt_modules import rfc5280

from pki.audit import AuditEvent
from pki.authority import CertificateAuthority, CsoIdentity, IssuedCertificate
from pki.clock import FixedClock
from pki.errors import IssuanceRefused, ReasonCode
from pki.issuance.build import validity_window
from pki.issuance.csr import check_key
from pki.keys import MemoryKeyStore
from pki.policy import Policy
from pki.records import (
    CertificateQuery,
    CertificateRecord,
    CertificateSource,
    CertificateStatus,
    Station,
)
from pki.store.sql import SqlStore

STATION_ID = "CS001"
STATION_SERIAL = "SN-0001"
SECC_ID = "SECC0001"
ORGANIZATION = "Example CPO"
BASE_URL = "http://csms.example.com:8080"
ACTOR = "tester"

MakeCsr = Callable[..., str]

# CSR keys, made once per module (the RSA ones in module fixtures, on first use).
P256 = ec.generate_private_key(ec.SECP256R1())
P384 = ec.generate_private_key(ec.SECP384R1())
P521 = ec.generate_private_key(ec.SECP521R1())
P224 = ec.generate_private_key(ec.SECP224R1())
P192 = ec.generate_private_key(ec.SECP192R1())


@pytest.fixture(scope="module")
def rsa2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa1024() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 -- the weak key is the point


def station_csr(make_csr: MakeCsr, **kwargs: object) -> str:
    """A charging-station CSR: CN = the registered serial, O = the organization."""
    return make_csr(**kwargs)


def secc_csr(make_csr: MakeCsr, **kwargs: object) -> str:
    """A v2g-secc CSR: CN = the registered SECC id, O = the organization, DC=CPO."""
    return make_csr(**{"cn": SECC_ID, "dc": "CPO", **kwargs})


def to_pem(der: bytes) -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"


def der_serial_length(certificate: x509.Certificate) -> int:
    """Content octets of the serialNumber INTEGER, read from the certificate's own DER."""
    decoded, _ = decoder.decode(
        certificate.public_bytes(serialization.Encoding.DER), asn1Spec=rfc5280.Certificate()
    )
    encoded = encoder.encode(decoded["tbsCertificate"]["serialNumber"])
    assert encoded[0] == 0x02  # INTEGER
    assert encoded[1] < 0x80  # short-form length: a serial is never 128 bytes
    return encoded[1]


async def certificate_rows(ca: CertificateAuthority, station_id: str) -> list[CertificateRecord]:
    return await ca.store.find_certificates(CertificateQuery(station_id=station_id))


async def refuse(
    ca: CertificateAuthority,
    csr_pem: str,
    *,
    profile: str = "charging-station",
    station_id: str = STATION_ID,
    days: int | None = None,
) -> IssuanceRefused:
    """Issue, expect a refusal; check that nothing was recorded and one audit entry was."""
    all_before = await ca.store.find_certificates(CertificateQuery())
    audit_before = await ca.store.audit_entries()
    with pytest.raises(IssuanceRefused) as caught:
        await ca.issue_for_station(
            csr_pem=csr_pem, profile_name=profile, station_id=station_id, actor=ACTOR, days=days
        )
    refusal = caught.value
    assert str(refusal) == refusal.message

    assert await certificate_rows(ca, station_id) == []
    assert await ca.store.find_certificates(CertificateQuery()) == all_before

    audit_after = await ca.store.audit_entries()
    assert audit_after[: len(audit_before)] == audit_before
    new = audit_after[len(audit_before) :]
    assert len(new) == 1, [e.event for e in new]
    event = new[0].event
    assert event.action == "certificate.refused"
    assert event.outcome == "refused"
    assert event.actor == ACTOR
    assert event.target == f"station:{station_id}"
    assert event.detail == {
        "profile": profile,
        "reason": refusal.reason.value,
        "field": refusal.field,
        "message": refusal.message,
    }
    return refusal


async def issue(
    ca: CertificateAuthority,
    csr_pem: str,
    *,
    profile: str = "charging-station",
    days: int | None = None,
) -> IssuedCertificate:
    return await ca.issue_for_station(
        csr_pem=csr_pem, profile_name=profile, station_id=STATION_ID, actor=ACTOR, days=days
    )


async def authority_certificate(ca: CertificateAuthority, name: str) -> x509.Certificate:
    authority = await ca.store.get_authority(name)
    assert authority is not None
    return authority.certificate()


# --- refusals: the CSR itself ---------------------------------------------------------


async def test_refuses_tampered_signature(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr
) -> None:
    # A valid CSR, then one bit of its signature value flipped: subject and key are still
    # acceptable, only the proof of possession fails.
    csr = x509.load_pem_x509_csr(station_csr(make_csr).encode())
    assert csr.is_signature_valid
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    assert der.endswith(csr.signature)
    der[-1] ^= 0x01
    tampered = x509.load_der_x509_csr(bytes(der))
    assert tampered.subject == csr.subject
    assert tampered.public_key() == csr.public_key()
    assert not tampered.is_signature_valid

    refusal = await refuse(sqlite_ca, to_pem(bytes(der)))
    assert refusal.reason is ReasonCode.CSR_BAD_SIGNATURE
    assert refusal.field == "csr.signature"
    assert "signature does not verify" in refusal.message


async def test_refuses_rsa_1024(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr, rsa1024: rsa.RSAPrivateKey
) -> None:
    refusal = await refuse(sqlite_ca, station_csr(make_csr, key=rsa1024))
    assert refusal.reason is ReasonCode.KEY_TOO_WEAK
    assert refusal.field == "csr.publicKey"
    assert "RSA key of 1024 bits is too weak" in refusal.message
    assert "rsa>=2048" in refusal.message


async def test_refuses_p192(sqlite_ca: CertificateAuthority, make_csr: MakeCsr) -> None:
    # cryptography (OpenSSL 3) still signs with P-192, so the CSR is a real, valid one.
    csr_pem = station_csr(make_csr, key=P192)
    assert x509.load_pem_x509_csr(csr_pem.encode()).is_signature_valid
    refusal = await refuse(sqlite_ca, csr_pem)
    assert refusal.reason is ReasonCode.KEY_TOO_WEAK
    assert refusal.field == "csr.publicKey"
    assert "secp192r1 (192 bits) is too weak" in refusal.message


async def test_refuses_curve_not_in_profile(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr
) -> None:
    # P-224 is strong enough for A00 but the default profile does not list it.
    refusal = await refuse(sqlite_ca, station_csr(make_csr, key=P224))
    assert refusal.reason is ReasonCode.KEY_TYPE_NOT_ALLOWED
    assert refusal.field == "csr.publicKey"
    assert "ec:secp224r1" in refusal.message


async def test_refuses_ed25519(sqlite_ca: CertificateAuthority, make_csr: MakeCsr) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    csr_pem = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, STATION_SERIAL),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                ]
            )
        )
        .sign(key, None)
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    refusal = await refuse(sqlite_ca, csr_pem)
    assert refusal.reason is ReasonCode.KEY_TYPE_NOT_ALLOWED
    assert refusal.field == "csr.publicKey"
    assert "Ed25519" in refusal.message


async def test_refuses_rsa_for_secc(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr, rsa2048: rsa.RSAPrivateKey
) -> None:
    refusal = await refuse(sqlite_ca, secc_csr(make_csr, key=rsa2048), profile="v2g-secc")
    assert refusal.reason is ReasonCode.KEY_TYPE_NOT_ALLOWED
    assert refusal.field == "csr.publicKey"
    assert "rsa:2048" in refusal.message
    assert "ec:secp256r1" in refusal.message


def test_check_key_p192_directly(policy: Policy) -> None:
    """The key check on its own, for both CSR profiles."""
    for name in ("charging-station", "v2g-secc"):
        with pytest.raises(IssuanceRefused) as caught:
            check_key(P192.public_key(), policy.profile(name).allowed_keys)
        assert caught.value.reason is ReasonCode.KEY_TOO_WEAK
        assert caught.value.field == "csr.publicKey"
    check_key(P256.public_key(), policy.profile("v2g-secc").allowed_keys)


async def test_refuses_cn_other_than_registered_serial(
    ca: CertificateAuthority, make_csr: MakeCsr
) -> None:
    refusal = await refuse(ca, station_csr(make_csr, cn="SN-9999"))
    assert refusal.reason is ReasonCode.SUBJECT_MISMATCH
    assert refusal.field == "CN"
    assert "'SN-9999'" in refusal.message
    assert f"'{STATION_SERIAL}'" in refusal.message
    assert "registered serial number" in refusal.message


async def test_refuses_second_cn(sqlite_ca: CertificateAuthority, make_csr: MakeCsr) -> None:
    # The right CN plus another one: a name checker that looks at the first CN only
    # would let the second through to a relying party that reads the last one.
    refusal = await refuse(
        sqlite_ca, station_csr(make_csr, extra=[(NameOID.COMMON_NAME, "SN-9999")])
    )
    assert refusal.reason is ReasonCode.SUBJECT_MISMATCH
    assert refusal.field == "CN"
    assert "'SN-9999'" in refusal.message


async def test_refuses_missing_cn(sqlite_ca: CertificateAuthority, make_csr: MakeCsr) -> None:
    refusal = await refuse(sqlite_ca, station_csr(make_csr, cn=None))
    assert refusal.reason is ReasonCode.SUBJECT_MISSING_ATTRIBUTE
    assert refusal.field == "CN"
    assert "no CN" in refusal.message
    assert f"'{STATION_SERIAL}'" in refusal.message


async def test_refuses_o_other_than_organization(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr
) -> None:
    refusal = await refuse(sqlite_ca, station_csr(make_csr, o="Other CPO"))
    assert refusal.reason is ReasonCode.SUBJECT_MISMATCH
    assert refusal.field == "O"
    assert "'Other CPO'" in refusal.message
    assert f"'{ORGANIZATION}'" in refusal.message


async def test_refuses_secc_without_dc_cpo(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr
) -> None:
    refusal = await refuse(sqlite_ca, secc_csr(make_csr, dc=None), profile="v2g-secc")
    assert refusal.reason is ReasonCode.SUBJECT_MISSING_ATTRIBUTE
    assert refusal.field == "DC"
    assert "no DC" in refusal.message
    assert "'CPO'" in refusal.message


async def test_refuses_secc_with_station_serial_as_cn(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr
) -> None:
    refusal = await refuse(sqlite_ca, secc_csr(make_csr, cn=STATION_SERIAL), profile="v2g-secc")
    assert refusal.reason is ReasonCode.SUBJECT_MISMATCH
    assert refusal.field == "CN"
    assert f"'{SECC_ID}'" in refusal.message
    assert "SECC id" in refusal.message


async def test_refuses_basic_constraints_ca_true(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr
) -> None:
    csr_pem = station_csr(
        make_csr, extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)]
    )
    refusal = await refuse(sqlite_ca, csr_pem)
    assert refusal.reason is ReasonCode.CA_REQUESTED
    assert refusal.field == "csr.extensions.basicConstraints"
    assert "CA:TRUE" in refusal.message


def key_usage(**chosen: bool) -> x509.KeyUsage:
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{name: chosen.get(name, False) for name in names})


@pytest.mark.parametrize("usage", ["key_cert_sign", "crl_sign"])
async def test_refuses_ca_key_usage(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr, usage: str
) -> None:
    csr_pem = station_csr(
        make_csr, extensions=[(key_usage(digital_signature=True, **{usage: True}), True)]
    )
    refusal = await refuse(sqlite_ca, csr_pem)
    assert refusal.reason is ReasonCode.CA_REQUESTED
    assert refusal.field == "csr.extensions.keyUsage"
    assert "keyCertSign" in refusal.message


def padded_csr(make_csr: MakeCsr, length: int) -> str:
    """A valid CSR of exactly ``length`` characters: grown by a real (opaque) extension
    to within a few characters of ``length``, then trailing newlines (which PEM readers
    ignore; ECDSA signatures vary in length, so exact sizing by content alone is not
    reproducible)."""
    oid = x509.ObjectIdentifier("1.3.6.1.4.1.55555.7")

    def build(size: int) -> str:
        value = b"\x04\x82" + size.to_bytes(2, "big") + b"A" * size  # OCTET STRING
        return make_csr(extensions=[(x509.UnrecognizedExtension(oid, value), False)])

    size = (length - 400) * 3 // 4
    pem = build(size)
    while len(pem) > length:
        size -= 8
        pem = build(size)
    assert length - len(pem) < 100, len(pem)
    return pem + "\n" * (length - len(pem))


async def test_refuses_csr_over_5500_characters(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr
) -> None:
    csr_pem = padded_csr(make_csr, 5501)
    assert len(csr_pem) == 5501
    assert x509.load_pem_x509_csr(csr_pem.encode()).is_signature_valid
    refusal = await refuse(sqlite_ca, csr_pem)
    assert refusal.reason is ReasonCode.CSR_TOO_LARGE
    assert refusal.field == "csr"
    assert "5501 characters" in refusal.message
    assert "5500" in refusal.message


async def test_accepts_csr_of_exactly_5500_characters(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr
) -> None:
    csr_pem = padded_csr(make_csr, 5500)
    assert len(csr_pem) == 5500
    issued = await issue(sqlite_ca, csr_pem)
    # The padding extension was in the CSR; it is not in the certificate.
    oids = {e.oid.dotted_string for e in issued.chain[0].extensions}
    assert "1.3.6.1.4.1.55555.7" not in oids


async def test_refuses_garbage(sqlite_ca: CertificateAuthority) -> None:
    refusal = await refuse(sqlite_ca, "this is not a certificate request")
    assert refusal.reason is ReasonCode.CSR_NOT_PEM
    assert refusal.field == "csr"
    assert "-----BEGIN CERTIFICATE REQUEST-----" in refusal.message


async def test_refuses_certificate_pem(sqlite_ca: CertificateAuthority) -> None:
    certificate = await authority_certificate(sqlite_ca, "cso-station-ca")
    refusal = await refuse(sqlite_ca, certificate.public_bytes(serialization.Encoding.PEM).decode())
    assert refusal.reason is ReasonCode.CSR_NOT_PEM
    assert refusal.field == "csr"
    assert "-----BEGIN CERTIFICATE REQUEST-----" in refusal.message


async def test_refuses_unparsable_pem_body(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr
) -> None:
    lines = station_csr(make_csr).splitlines()
    broken = "\n".join([lines[0], "AAAA" + lines[1][4:], *lines[2:]])
    refusal = await refuse(sqlite_ca, broken)
    assert refusal.reason is ReasonCode.CSR_NOT_PEM
    assert refusal.field == "csr"
    assert "cannot be parsed" in refusal.message


# --- refusals: station, profile, validity ---------------------------------------------


async def test_refuses_unknown_station(ca: CertificateAuthority, make_csr: MakeCsr) -> None:
    refusal = await refuse(ca, station_csr(make_csr), station_id="CS999")
    assert refusal.reason is ReasonCode.UNKNOWN_STATION
    assert refusal.field == "station"
    assert "'CS999'" in refusal.message
    assert await certificate_rows(ca, STATION_ID) == []


async def test_refuses_station_without_secc_id(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr, clock: FixedClock
) -> None:
    await sqlite_ca.store.add_station(
        Station("CS002", "SN-0002", None, 3, None, clock.now()),
        AuditEvent("station.added", "test", "CS002"),
        clock.now(),
    )
    refusal = await refuse(
        sqlite_ca, secc_csr(make_csr, cn="SN-0002"), profile="v2g-secc", station_id="CS002"
    )
    assert refusal.reason is ReasonCode.STATION_IDENTITY_INCOMPLETE
    assert refusal.field == "CN"
    assert "{station.secc_id}" in refusal.message


async def test_refuses_unknown_profile(sqlite_ca: CertificateAuthority, make_csr: MakeCsr) -> None:
    refusal = await refuse(sqlite_ca, station_csr(make_csr), profile="no-such-profile")
    assert refusal.reason is ReasonCode.UNKNOWN_PROFILE
    assert refusal.field == "profile"
    assert "'no-such-profile'" in refusal.message
    assert "charging-station" in refusal.message  # the known profiles are listed


@pytest.mark.parametrize(
    "profile", ["cso-root", "cso-station-ca", "csms-server", "ocsp-signer", "cpo-sub-ca-2"]
)
async def test_refuses_profile_not_for_csr(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr, profile: str
) -> None:
    refusal = await refuse(sqlite_ca, station_csr(make_csr), profile=profile)
    assert refusal.reason is ReasonCode.PROFILE_NOT_FOR_CSR
    assert refusal.field == "profile"
    assert f"'{profile}'" in refusal.message


@pytest.mark.parametrize(
    ("profile", "days", "bounds"),
    [
        ("charging-station", 731, "1..730"),
        ("charging-station", 0, "1..730"),
        ("charging-station", -1, "1..730"),
        ("v2g-secc", 93, "1..92"),
    ],
)
async def test_refuses_days_outside_profile(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr, profile: str, days: int, bounds: str
) -> None:
    csr_pem = secc_csr(make_csr) if profile == "v2g-secc" else station_csr(make_csr)
    refusal = await refuse(sqlite_ca, csr_pem, profile=profile, days=days)
    assert refusal.reason is ReasonCode.VALIDITY_INVALID
    assert refusal.field == "days"
    assert f"validity of {days} days" in refusal.message
    assert bounds in refusal.message
    assert profile in refusal.message


async def test_refuses_when_issuer_expired(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr, clock: FixedClock
) -> None:
    issuer = await authority_certificate(sqlite_ca, "cso-station-ca")
    clock.advance(issuer.not_valid_after_utc - clock.now() + timedelta(seconds=1))
    refusal = await refuse(sqlite_ca, station_csr(make_csr))
    assert refusal.reason is ReasonCode.ISSUER_UNAVAILABLE
    assert refusal.field == "issuer"
    assert "expired" in refusal.message


async def test_refuses_secc_certificate_over_800_bytes(
    sqlite_store: SqlStore, policy: Policy, clock: FixedClock, make_csr: MakeCsr
) -> None:
    """The ISO 15118 lint runs after signing: a certificate that would exceed 800 bytes
    DER is discarded, never recorded, and the request refused. A 64-character SECC id and
    a long base URL (in AIA and CRL DP) make the leaf too large while the CAs still fit."""
    ca = CertificateAuthority(
        store=sqlite_store,
        keys=MemoryKeyStore(),
        policy=policy,
        clock=clock,
        identity=CsoIdentity(ORGANIZATION, "DE", ("csms.example.com",), BASE_URL + "/" + "p" * 58),
    )
    await ca.initialize(frozenset({"cso", "v2g"}), "test")
    for name in ("v2g-root", "cpo-sub-ca-1", "cpo-sub-ca-2"):
        size = len((await authority_certificate(ca, name)).public_bytes(serialization.Encoding.DER))
        assert size <= 800, (name, size)
    long_secc_id = "S" * 64
    await sqlite_store.add_station(
        Station(STATION_ID, STATION_SERIAL, long_secc_id, 3, None, clock.now()),
        AuditEvent("station.added", "test", STATION_ID),
        clock.now(),
    )
    refusal = await refuse(ca, secc_csr(make_csr, cn=long_secc_id), profile="v2g-secc")
    assert refusal.reason is ReasonCode.ISO15118_VIOLATION
    assert refusal.field == "certificate.size"
    assert "bytes DER" in refusal.message
    assert "800" in refusal.message


# --- success --------------------------------------------------------------------------

CUSTOM_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")
EXPECTED_EXTENSIONS = {
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    ExtensionOID.CRL_DISTRIBUTION_POINTS,
}


def loaded_csr(make_csr: MakeCsr, **kwargs: object) -> str:
    """A CSR carrying everything a hostile or sloppy requester might ask for besides the
    required subject: extra subject attributes and extensions the profile does not give."""
    extra = [
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "Ops"),
        (NameOID.COUNTRY_NAME, "US"),
        (NameOID.LOCALITY_NAME, "Springfield"),
        (NameOID.EMAIL_ADDRESS, "root@example.com"),
    ]
    extensions = [
        (x509.SubjectAlternativeName([x509.DNSName("evil.example.com")]), False),
        (
            x509.ExtendedKeyUsage(
                [
                    ExtendedKeyUsageOID.SERVER_AUTH,
                    ExtendedKeyUsageOID.CLIENT_AUTH,
                    ExtendedKeyUsageOID.OCSP_SIGNING,
                ]
            ),
            False,
        ),
        (x509.UnrecognizedExtension(CUSTOM_OID, b"\x0c\x05hello"), True),
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            key_usage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=True,
            ),
            True,
        ),
        (x509.OCSPNoCheck(), False),
    ]
    return make_csr(extra=extra, extensions=extensions, **kwargs)


def assert_only_profile_extensions(
    certificate: x509.Certificate, issuer: x509.Certificate, issuer_name: str
) -> None:
    assert {e.oid for e in certificate.extensions} == EXPECTED_EXTENSIONS
    extensions = certificate.extensions
    with pytest.raises(x509.ExtensionNotFound):
        extensions.get_extension_for_class(x509.ExtendedKeyUsage)  # A00.FR.514
    with pytest.raises(x509.ExtensionNotFound):
        extensions.get_extension_for_class(x509.SubjectAlternativeName)

    basic = extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value == x509.BasicConstraints(ca=False, path_length=None)

    ski = extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert not ski.critical
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(certificate.public_key())
    aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert not aki.critical
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.value.key_identifier == issuer_ski.value.digest

    aia = extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    assert not aia.critical
    assert list(aia.value) == [
        x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(f"{BASE_URL}/ocsp")
        )
    ]
    crl = extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert not crl.critical
    assert list(crl.value) == [
        x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(f"{BASE_URL}/crl/{issuer_name}.crl")],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
    ]


def assert_chain(chain: tuple[x509.Certificate, ...], expected_cas: list[x509.Certificate]) -> None:
    """Leaf first, then the issuing CAs in order, each issuing the one before; no root."""
    assert list(chain[1:]) == expected_cas
    for child, parent in itertools.pairwise(chain):
        child.verify_directly_issued_by(parent)
    for certificate in chain:
        assert certificate.subject != certificate.issuer, "a self-signed root is in the chain"


def truncated(now: datetime) -> datetime:
    return now.replace(microsecond=0)


async def new_audit_entries(
    ca: CertificateAuthority, before: int
) -> list[tuple[str, str, dict[str, object]]]:
    entries = await ca.store.audit_entries()
    return [(e.event.action, e.event.outcome, dict(e.event.detail)) for e in entries[before:]]


async def test_issues_charging_station_certificate(
    ca: CertificateAuthority, make_csr: MakeCsr, clock: FixedClock
) -> None:
    audit_before = len(await ca.store.audit_entries())
    csr_pem = loaded_csr(make_csr)
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    issued = await issue(ca, csr_pem)
    leaf = issued.chain[0]

    station_ca = await authority_certificate(ca, "cso-station-ca")
    assert_chain(issued.chain, [station_ca])

    # Subject from the templates, in template order, nothing else from the CSR.
    assert leaf.subject == x509.Name(
        [
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.COMMON_NAME, STATION_SERIAL)]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]
            ),
        ]
    )
    assert leaf.issuer == station_ca.subject
    assert leaf.public_key() == csr.public_key()
    assert leaf.version is x509.Version.v3
    assert leaf.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256

    assert_only_profile_extensions(leaf, station_ca, "cso-station-ca")
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value == key_usage(digital_signature=True)

    assert leaf.serial_number > 0
    assert der_serial_length(leaf) <= 20

    now = truncated(clock.now())
    assert leaf.not_valid_before_utc == now - timedelta(seconds=60)
    spread = timedelta(seconds=leaf.serial_number % (45 * 86400))  # validity_spread_days
    assert leaf.not_valid_after_utc == now + timedelta(days=365) - spread
    assert leaf.not_valid_before_utc <= clock.now()

    # The record, as stored, and as returned.
    rows = await certificate_rows(ca, STATION_ID)
    assert rows == [issued.record]
    record = rows[0]
    assert record.serial == leaf.serial_number
    assert record.der == leaf.public_bytes(serialization.Encoding.DER)
    assert record.status is CertificateStatus.VALID
    assert record.source is CertificateSource.ISSUED
    assert record.profile == "charging-station"
    assert record.issuer_ca == "cso-station-ca"
    assert record.station_id == STATION_ID
    assert record.not_before == leaf.not_valid_before_utc
    assert record.not_after == leaf.not_valid_after_utc
    assert record.renew_after == leaf.not_valid_after_utc - timedelta(days=90)

    assert await new_audit_entries(ca, audit_before) == [
        (
            "certificate.issued",
            "ok",
            {
                "serial": format(leaf.serial_number, "x"),
                "profile": "charging-station",
                "issuer": "cso-station-ca",
                "subject": record.subject_dn,
                "not_after": leaf.not_valid_after_utc.isoformat(),
                "fingerprint_sha256": record.fingerprint_sha256,
            },
        )
    ]


async def test_issues_v2g_secc_certificate(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr, clock: FixedClock
) -> None:
    audit_before = len(await sqlite_ca.store.audit_entries())
    csr_pem = loaded_csr(make_csr, cn=SECC_ID, dc="CPO")
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    issued = await issue(sqlite_ca, csr_pem, profile="v2g-secc")
    leaf = issued.chain[0]

    sub_ca_2 = await authority_certificate(sqlite_ca, "cpo-sub-ca-2")
    sub_ca_1 = await authority_certificate(sqlite_ca, "cpo-sub-ca-1")
    assert_chain(issued.chain, [sub_ca_2, sub_ca_1])

    assert leaf.subject == x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, SECC_ID)]),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]
            ),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "CPO")]),
        ]
    )
    assert leaf.public_key() == csr.public_key()

    assert_only_profile_extensions(leaf, sub_ca_2, "cpo-sub-ca-2")
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value == key_usage(digital_signature=True, key_agreement=True)

    # ISO 15118-2: size, curve, signature algorithm.
    assert len(leaf.public_bytes(serialization.Encoding.DER)) <= 800
    public_key = leaf.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    assert leaf.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256

    assert leaf.serial_number > 0
    assert der_serial_length(leaf) <= 20
    now = truncated(clock.now())
    assert leaf.not_valid_before_utc == now - timedelta(seconds=60)
    assert leaf.not_valid_after_utc == now + timedelta(days=60)

    rows = await certificate_rows(sqlite_ca, STATION_ID)
    assert rows == [issued.record]
    record = rows[0]
    assert record.status is CertificateStatus.VALID
    assert record.source is CertificateSource.ISSUED
    assert record.profile == "v2g-secc"
    assert record.issuer_ca == "cpo-sub-ca-2"
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert record.renew_after == leaf.not_valid_before_utc + lifetime * 2 / 3
    # A 90-day threshold would already be due at issuance; 2/3 of 60 days is not.
    assert record.renew_after > clock.now() + timedelta(days=39)

    audit = await new_audit_entries(sqlite_ca, audit_before)
    assert [(action, outcome) for action, outcome, _ in audit] == [("certificate.issued", "ok")]
    assert audit[0][2]["serial"] == format(leaf.serial_number, "x")
    assert audit[0][2]["profile"] == "v2g-secc"
    assert audit[0][2]["issuer"] == "cpo-sub-ca-2"


@pytest.mark.parametrize("key_name", ["p256", "p384", "p521", "rsa2048-pss", "rsa2048-pkcs1"])
async def test_issues_for_every_allowed_key_type(
    sqlite_ca: CertificateAuthority,
    make_csr: MakeCsr,
    rsa2048: rsa.RSAPrivateKey,
    key_name: str,
) -> None:
    keys = {"p256": P256, "p384": P384, "p521": P521}
    if key_name.startswith("rsa"):
        rsa_padding = (
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            if key_name.endswith("pss")
            else padding.PKCS1v15()
        )
        csr_pem = make_csr(key=rsa2048, rsa_padding=rsa_padding)
    else:
        csr_pem = make_csr(key=keys[key_name])
    issued = await issue(sqlite_ca, csr_pem)
    leaf = issued.chain[0]
    assert leaf.public_key() == x509.load_pem_x509_csr(csr_pem.encode()).public_key()
    # charging-station has no RSA-specific key usage: digitalSignature for every key.
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value == key_usage(
        digital_signature=True
    )
    assert await certificate_rows(sqlite_ca, STATION_ID) == [issued.record]


async def test_serials_are_distinct(ca: CertificateAuthority, make_csr: MakeCsr) -> None:
    issued = [await issue(ca, make_csr()) for _ in range(8)]
    serials = {i.chain[0].serial_number for i in issued}
    assert len(serials) == 8
    assert all(s > 0 and s.bit_length() <= 128 for s in serials)
    rows = await certificate_rows(ca, STATION_ID)
    assert {r.serial for r in rows} == serials


@pytest.mark.parametrize(("profile", "days"), [("charging-station", 730), ("v2g-secc", 1)])
async def test_requested_days_within_bounds(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr, clock: FixedClock, profile: str, days: int
) -> None:
    csr_pem = secc_csr(make_csr) if profile == "v2g-secc" else station_csr(make_csr)
    issued = await issue(sqlite_ca, csr_pem, profile=profile, days=days)
    leaf = issued.chain[0]
    assert leaf.not_valid_after_utc == truncated(clock.now()) + timedelta(days=days)


async def test_not_after_capped_by_issuer(
    sqlite_ca: CertificateAuthority, make_csr: MakeCsr, clock: FixedClock
) -> None:
    # Late in the station CA's life: 365 days would outlive it, so the issuer's notAfter
    # is the certificate's notAfter.
    station_ca = await authority_certificate(sqlite_ca, "cso-station-ca")
    clock.advance(station_ca.not_valid_after_utc - clock.now() - timedelta(days=100))
    issued = await issue(sqlite_ca, station_csr(make_csr))
    leaf = issued.chain[0]
    assert leaf.not_valid_after_utc == station_ca.not_valid_after_utc
    assert leaf.not_valid_before_utc == truncated(clock.now()) - timedelta(seconds=60)
    assert issued.record.renew_after == station_ca.not_valid_after_utc - timedelta(days=90)


def test_validity_window_caps_at_short_lived_issuer(policy: Policy, clock: FixedClock) -> None:
    profile = policy.profile("charging-station")
    now = clock.now()
    issuer_not_after = truncated(now) + timedelta(days=10, hours=3)
    not_before, not_after = validity_window(profile, now, None, issuer_not_after)
    assert not_before == truncated(now) - timedelta(seconds=profile.backdate_seconds)
    assert not_after == issuer_not_after
    # An issuer that outlives the request does not move notAfter.
    _, not_after = validity_window(profile, now, 30, issuer_not_after + timedelta(days=365))
    assert not_after == truncated(now) + timedelta(days=30)


def test_validity_window_backdate_from_profile(policy: Policy, clock: FixedClock) -> None:
    profile = replace(policy.profile("charging-station"), backdate_seconds=3600)
    not_before, _ = validity_window(profile, clock.now(), None, None)
    assert not_before == truncated(clock.now()) - timedelta(hours=1)


def test_validity_spread_fixed_by_serial_and_bounded(policy: Policy) -> None:
    """A profile's validity_spread_days shortens each certificate by an amount its
    serial fixes: never more than the spread, the same for the same serial, spread out
    over a batch; an explicitly requested validity is not shortened."""
    profile = policy.profile("charging-station")
    assert profile.validity_spread_days == 45
    now = datetime(2030, 1, 1, tzinfo=UTC)
    full = now + timedelta(days=profile.validity_days)
    serials = [secrets.randbits(127) for _ in range(500)]
    ends = [validity_window(profile, now, None, None, spread_seed=s)[1] for s in serials]
    assert all(full - timedelta(days=45) < end <= full for end in ends)
    assert validity_window(profile, now, None, None, spread_seed=serials[0])[1] == ends[0]
    assert len({end.date() for end in ends}) > 40  # spread over the window
    assert validity_window(profile, now, 365, None, spread_seed=serials[0])[1] == full
