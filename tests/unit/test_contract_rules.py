"""The pure parts of contract validation and OCSP verification (pki.contract, pki.ocsp):
ISO 15118-2 rules and what a relying party must check in a response; and which
responder addresses GetCertificateStatus refuses to ask."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from mo_pki import MoPki, certificate, pem

from csms.services.certificate_status import CertificateStatusService
from pki.contract import ContractOutcome, check_contract, normalized_emaid
from pki.ocsp import CertState, Responder, UnusableResponse, verified_status

EMAID = "DEABCC123456789"


@pytest.fixture(scope="module")
def mo(tmp_path_factory: pytest.TempPathFactory) -> MoPki:
    return MoPki(tmp_path_factory.mktemp("mo"))


def now() -> datetime:
    return datetime.now(UTC)


def test_a_valid_chain_leads_to_the_root(mo: MoPki) -> None:
    check = check_contract(mo.contract(EMAID), "DE-ABC-C12345678-9", [mo.root], now())
    assert check.outcome is ContractOutcome.ACCEPTED, check.reason
    assert check.chain[-1] == mo.root
    with_root = mo.contract(EMAID) + pem(mo.root)  # a station may send the root too
    assert check_contract(with_root, EMAID, [mo.root], now()).outcome is ContractOutcome.ACCEPTED


def test_iso15118_rules(mo: MoPki) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, EMAID),
                      x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "MO")])  # fmt: skip
    rsa_leaf = certificate(name, rsa_key, (mo.sub2, mo.sub2_key), ca=False)  # type: ignore[arg-type]
    no_dc = certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, EMAID)]),
                        ec.generate_private_key(ec.SECP256R1()), (mo.sub2, mo.sub2_key),
                        ca=False)  # fmt: skip
    too_deep = mo.contract(EMAID) + pem(mo.sub1)  # four below the root
    for chain, reason in (
        (pem(rsa_leaf, mo.sub2, mo.sub1), "not P-256"),
        (pem(no_dc, mo.sub2, mo.sub1), "no DC=MO"),
        (too_deep, "at most 3"),
        (mo.contract("DEABCC000000000"), "not the idToken"),
        ("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", "not a PEM"),
    ):
        check = check_contract(chain, EMAID, [mo.root], now())
        assert check.outcome is ContractOutcome.CERT_CHAIN_ERROR, reason
        assert reason in check.reason
    assert check_contract("", EMAID, [mo.root], now()).outcome is ContractOutcome.NO_CERTIFICATE
    nothing_trusted = check_contract(mo.contract(EMAID), EMAID, [], now())
    assert "no MO or V2G root" in nothing_trusted.reason
    assert normalized_emaid("de-abc-c12345678-9") == "DEABCC123456789"


Signer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def response(
    mo: MoPki, leaf: x509.Certificate, *, signer: Signer, serial: int | None = None,
    next_update: timedelta = timedelta(hours=1),
) -> bytes:  # fmt: skip
    """An OCSP response saying good about ``leaf`` (or ``serial``), signed by ``signer``."""
    _, name_hash, key_hash = next(c for c in Responder.cert_ids_of(mo.sub2) if c[0] == "sha256")
    at = now().replace(microsecond=0)
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=name_hash, issuer_key_hash=key_hash,
        serial_number=serial or leaf.serial_number, algorithm=hashes.SHA256(),
        cert_status=ocsp.OCSPCertStatus.GOOD, this_update=at - timedelta(hours=2),
        next_update=at + next_update, revocation_time=None, revocation_reason=None,
    )  # fmt: skip
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, signer[0])
    builder = builder.certificates([signer[0]])
    return builder.sign(signer[1], hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def delegate(
    mo: MoPki, *, ocsp_signing: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MO OCSP")]))
        .issuer_name(mo.sub2.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - timedelta(hours=1)).not_valid_after(now() + timedelta(days=1))
    )  # fmt: skip
    if ocsp_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
    return builder.sign(mo.sub2_key, hashes.SHA256()), key


def test_a_response_is_relied_on_only_from_the_issuer_or_its_delegate(mo: MoPki) -> None:
    mo.contract(EMAID)
    leaf = mo.issued[-1]
    for signer in ((mo.sub2, mo.sub2_key), delegate(mo, ocsp_signing=True)):
        der = response(mo, leaf, signer=signer)
        assert verified_status(der, leaf, mo.sub2, now()).state is CertState.GOOD
    for stranger in (delegate(mo, ocsp_signing=False), (mo.root, mo.root_key)):
        with pytest.raises(UnusableResponse, match="not signed by the issuer"):
            verified_status(response(mo, leaf, signer=stranger), leaf, mo.sub2, now())
    other = response(mo, leaf, signer=(mo.sub2, mo.sub2_key), serial=7)
    with pytest.raises(UnusableResponse, match="another certificate"):
        verified_status(other, leaf, mo.sub2, now())
    stale = response(mo, leaf, signer=(mo.sub2, mo.sub2_key), next_update=-timedelta(hours=1))
    with pytest.raises(UnusableResponse, match="not current"):
        verified_status(stale, leaf, mo.sub2, now())


def test_a_ca_certificate_is_no_contract(mo: MoPki) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, EMAID),
                      x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "MO")])  # fmt: skip
    ca_leaf = certificate(name, ec.generate_private_key(ec.SECP256R1()),
                          (mo.sub2, mo.sub2_key), ca=True)  # fmt: skip
    check = check_contract(pem(ca_leaf, mo.sub2, mo.sub1), EMAID, [mo.root], now())
    assert check.outcome is ContractOutcome.CERT_CHAIN_ERROR
    assert "is a CA certificate" in check.reason


@pytest.mark.parametrize(
    "url",
    ["http://2130706433/", "http://0x7f.1/", "http://127.1/", "http://[::ffff:10.0.0.1]/",
     "http://169.254.169.254/", "http://localhost/", "http://[::1/"],
)  # fmt: skip
async def test_responder_addresses_are_judged_after_resolution(url: str) -> None:
    """Every spelling of a private or special address is refused (allow-listed or not)."""
    service = CertificateStatusService(
        local=None, fetcher=None, allowed=lambda: _allowed(url), configured=frozenset(),  # type: ignore[arg-type]
        clock=None, log=None,  # type: ignore[arg-type]
    )  # fmt: skip
    refusal = await service._refusal(url, frozenset())
    assert refusal is not None
    assert "special address" in refusal or "not a URL" in refusal


async def _allowed(url: str) -> frozenset[str]:
    return frozenset({url})
