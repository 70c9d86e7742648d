"""Property tests of the small pure pieces: serials, the validity window, OCPP hash data.

Where a property restates what the code computes, the expected value is computed another
way: DER lengths with pyasn1's encoder, the issuer key hash from the issuer certificate's
own SubjectPublicKeyInfo (pyasn1) and from cryptography's OCSP CertID.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc5280

from pki.errors import IssuanceRefused, ReasonCode
from pki.hashdata import CertificateHashData, hash_data_for, public_key_bits
from pki.issuance.build import validity_window
from pki.policy import Profile, load_policy
from pki.serials import SERIAL_BITS, parse_serial, random_serial, serial_hex

POLICY = load_policy(Path(__file__).resolve().parents[2] / "policies" / "default.toml")
HEX = "0123456789abcdef"
HASH_SIZES = {"SHA256": 32, "SHA384": 48, "SHA512": 64}
HASH_CLASSES = {"SHA256": hashes.SHA256, "SHA384": hashes.SHA384, "SHA512": hashes.SHA512}

FAST = settings(max_examples=100)
CRYPTO = settings(max_examples=50, deadline=None)


def der_integer_content_length(value: int) -> int:
    """Content octets of ``value`` as a DER INTEGER, by pyasn1's encoder."""
    encoded = encoder.encode(univ.Integer(value))
    assert encoded[0] == 0x02
    assert encoded[1] < 0x80
    assert len(encoded) == 2 + encoded[1]
    return encoded[1]


# --- serials --------------------------------------------------------------------------

serials = st.integers(min_value=1, max_value=2**SERIAL_BITS - 1)


@FAST
@given(zeros=st.integers(min_value=0, max_value=5), value=serials)
def test_random_serial(zeros: int, value: int) -> None:
    """From any 128-bit source: the first non-zero draw, positive, at most 17 DER bytes."""
    outputs = iter([0] * zeros + [value])
    calls: list[int] = []

    def randbits(k: int) -> int:
        calls.append(k)
        return next(outputs)

    serial = random_serial(randbits)
    assert serial == value
    assert calls == [128] * (zeros + 1)
    assert 0 < serial < 2**128
    assert der_integer_content_length(serial) <= 17


def test_random_serial_default_source() -> None:
    drawn = [random_serial() for _ in range(2000)]
    assert all(0 < s < 2**128 for s in drawn)
    assert all(der_integer_content_length(s) <= 17 for s in drawn)
    assert len(set(drawn)) == len(drawn)
    # 128 bits of entropy: half of all draws have the top bit set (and so need the 17th
    # DER byte); none at all in 2000 draws has probability 2**-2000.
    assert any(s.bit_length() == 128 for s in drawn)
    assert any(der_integer_content_length(s) == 17 for s in drawn)


@FAST
@given(serial=st.integers(min_value=0, max_value=2**160 - 1))
def test_serial_hex_round_trip(serial: int) -> None:
    text = serial_hex(serial)
    assert all(c in HEX for c in text)
    assert text == "0" or not text.startswith("0")
    assert parse_serial(text) == serial


@FAST
@given(serial=st.integers(min_value=0, max_value=2**160 - 1), zeros=st.integers(0, 3))
def test_parse_serial_accepts_pasted_forms(serial: int, zeros: int) -> None:
    text = "0" * zeros + serial_hex(serial)
    pairs = serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")
    forms = [
        text.upper(),
        "0x" + text,
        "0X" + text.upper(),
        pairs.hex(":"),
        pairs.hex(":").upper(),
        pairs.hex(" "),
        f"  {text}\n",
    ]
    for form in forms:
        assert parse_serial(form) == serial, form


NON_HEX = st.characters(
    codec="utf-8",
    exclude_characters=set(HEX + HEX.upper() + ": xX"),  # "0X0" is 0x0, a valid serial
    exclude_categories=("Cs",),
)


@FAST
@given(
    head=st.text(alphabet=HEX, min_size=1, max_size=20),
    bad=NON_HEX,
    tail=st.text(alphabet=HEX, min_size=1, max_size=20),
)
def test_parse_serial_rejects_non_hex(head: str, bad: str, tail: str) -> None:
    with pytest.raises(ValueError, match="not hexadecimal"):
        parse_serial(head + bad + tail)


@pytest.mark.parametrize("text", ["", " ", "0x", ":", "::", "0x:", "g", "-1", "1_0", "+1"])
def test_parse_serial_rejects_empty_and_signed(text: str) -> None:
    with pytest.raises(ValueError, match="not hexadecimal"):
        parse_serial(text)


# --- the validity window --------------------------------------------------------------

instants = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 -- bounds of st.datetimes are naive
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@st.composite
def profiles(draw: st.DrawFn) -> Profile:
    base = POLICY.profile(draw(st.sampled_from(sorted(POLICY.profiles))))
    maximum = draw(st.integers(min_value=1, max_value=15000))
    return replace(
        base,
        max_validity_days=maximum,
        validity_days=draw(st.integers(min_value=1, max_value=maximum)),
        backdate_seconds=draw(st.integers(min_value=0, max_value=86400)),
    )


@CRYPTO
@given(
    profile=profiles(),
    now=instants,
    requested=st.none() | st.integers(min_value=-5, max_value=15005),
    issuer_offset=st.none()
    | st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=16000)),
)
@example(
    profile=POLICY.profile("charging-station"),
    now=datetime(2030, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC),
    requested=None,
    issuer_offset=timedelta(microseconds=-1),
)
def test_validity_window(
    profile: Profile, now: datetime, requested: int | None, issuer_offset: timedelta | None
) -> None:
    issuer_not_after = None if issuer_offset is None else now + issuer_offset
    days = profile.validity_days if requested is None else requested

    if not 1 <= days <= profile.max_validity_days:
        with pytest.raises(IssuanceRefused) as caught:
            validity_window(profile, now, requested, issuer_not_after)
        assert caught.value.reason is ReasonCode.VALIDITY_INVALID
        assert caught.value.field == "days"
        assert f"{days} days" in caught.value.message
        assert f"1..{profile.max_validity_days}" in caught.value.message
        return

    if issuer_not_after is not None and issuer_not_after <= now:
        with pytest.raises(IssuanceRefused) as caught:
            validity_window(profile, now, requested, issuer_not_after)
        assert caught.value.reason is ReasonCode.ISSUER_UNAVAILABLE
        assert caught.value.field == "issuer"
        return

    not_before, not_after = validity_window(profile, now, requested, issuer_not_after)
    whole_seconds = now.replace(microsecond=0)
    assert not_before == whole_seconds - timedelta(seconds=profile.backdate_seconds)
    assert not_before.microsecond == 0
    assert not_before <= now
    assert now - not_before < timedelta(seconds=profile.backdate_seconds + 1)
    assert not_after > now
    assert not_after - now <= timedelta(days=days)
    if issuer_not_after is not None:
        assert not_after <= issuer_not_after
    assert not_after == min(
        whole_seconds + timedelta(days=days),
        issuer_not_after or datetime.max.replace(tzinfo=UTC),
    )


@CRYPTO
@given(
    now=instants,
    lateness=st.timedeltas(min_value=timedelta(0), max_value=timedelta(seconds=1))
    | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)),
)
@example(now=datetime(2030, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC), lateness=timedelta(0))
@example(
    now=datetime(2030, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC), lateness=timedelta(microseconds=1)
)
def test_validity_window_refuses_expired_issuer(now: datetime, lateness: timedelta) -> None:
    profile = POLICY.profile("charging-station")
    with pytest.raises(IssuanceRefused) as caught:
        validity_window(profile, now, None, now - lateness)
    assert caught.value.reason is ReasonCode.ISSUER_UNAVAILABLE
    assert caught.value.field == "issuer"
    assert "expired" in caught.value.message


# --- OCPP CertificateHashData ---------------------------------------------------------

algorithms = st.sampled_from(sorted(HASH_SIZES))


@st.composite
def hash_data(draw: st.DrawFn) -> CertificateHashData:
    algorithm = draw(algorithms)
    size = HASH_SIZES[algorithm]
    return CertificateHashData(
        hash_algorithm=algorithm,
        issuer_name_hash=draw(st.binary(min_size=size, max_size=size)).hex(),
        issuer_key_hash=draw(st.binary(min_size=size, max_size=size)).hex(),
        serial_number=serial_hex(draw(st.integers(min_value=1, max_value=2**160 - 1))),
    )


@FAST
@given(data=hash_data())
def test_hash_data_round_trip(data: CertificateHashData) -> None:
    ocpp_form = data.to_ocpp()
    assert set(ocpp_form) == {"hashAlgorithm", "issuerNameHash", "issuerKeyHash", "serialNumber"}
    assert CertificateHashData.from_ocpp(ocpp_form) == data


@FAST
@given(data=hash_data(), zeros=st.integers(min_value=1, max_value=39), upper=st.booleans())
def test_hash_data_accepts_upper_case_and_leading_zeros(
    data: CertificateHashData, zeros: int, upper: bool
) -> None:
    serial = "0" * min(zeros, 40 - len(data.serial_number)) + data.serial_number

    def case(text: str) -> str:
        return text.upper() if upper else text

    lenient = {
        "hashAlgorithm": data.hash_algorithm,
        "issuerNameHash": data.issuer_name_hash.upper(),
        "issuerKeyHash": case(data.issuer_key_hash),
        "serialNumber": case(serial),
    }
    parsed = CertificateHashData.from_ocpp(lenient)
    assert parsed == data
    assert parsed.to_ocpp()["serialNumber"] == data.serial_number
    assert parsed.issuer_name_hash == parsed.issuer_name_hash.lower()
    assert parsed.as_reported() == lenient  # sent back byte for byte (DeleteCertificate)
    assert CertificateHashData.from_ocpp(parsed.as_reported()).as_reported() == lenient


@FAST
@given(
    data=hash_data(),
    field=st.sampled_from(["issuerNameHash", "issuerKeyHash"]),
    length=st.integers(min_value=0, max_value=140),
)
def test_hash_data_rejects_wrong_hash_length(
    data: CertificateHashData, field: str, length: int
) -> None:
    assume(length != 2 * HASH_SIZES[data.hash_algorithm])
    broken = {**data.to_ocpp(), field: ("ab" * 70)[:length]}
    with pytest.raises(ValueError, match=field):
        CertificateHashData.from_ocpp(broken)


@FAST
@given(
    data=hash_data(),
    field=st.sampled_from(["issuerNameHash", "issuerKeyHash", "serialNumber"]),
    position=st.integers(min_value=0, max_value=127),
    bad=NON_HEX,
)
def test_hash_data_rejects_non_hex(
    data: CertificateHashData, field: str, position: int, bad: str
) -> None:
    value = data.to_ocpp()[field]
    assume(len(value) >= 2)
    # Strictly inside the value, so that strip() cannot remove it; the hashes keep their
    # length (the bad character replaces a digit), the serial gets one more character.
    if field == "serialNumber":
        index = 1 + position % (len(value) - 1)
        bad_value = value[:index] + bad + value[index:]
    else:
        index = 1 + position % (len(value) - 2)
        bad_value = value[:index] + bad + value[index + 1 :]
    broken = {**data.to_ocpp(), field: bad_value}
    with pytest.raises(ValueError, match=field):
        CertificateHashData.from_ocpp(broken)


@pytest.mark.parametrize("serial", ["", "1" * 41, "0" * 41])
def test_hash_data_rejects_serial_length(serial: str) -> None:
    data = {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": "00" * 32,
        "issuerKeyHash": "00" * 32,
        "serialNumber": serial,
    }
    with pytest.raises(ValueError, match="serialNumber"):
        CertificateHashData.from_ocpp(data)


@pytest.mark.parametrize("algorithm", ["SHA1", "MD5", "", "SHA-256"])
def test_hash_data_rejects_unknown_algorithm(algorithm: str) -> None:
    data = {
        "hashAlgorithm": algorithm,
        "issuerNameHash": "00" * 32,
        "issuerKeyHash": "00" * 32,
        "serialNumber": "1",
    }
    with pytest.raises(ValueError, match="hashAlgorithm"):
        CertificateHashData.from_ocpp(data)


# hash_data_for against independent computations

_LEAF_KEY = ec.generate_private_key(ec.SECP256R1())
IssuerKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def issuer_keys() -> dict[str, IssuerKey]:
    return {
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "rsa2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


names = st.builds(
    lambda cn, o, c: x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            *([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o)] if o else []),
            *([x509.NameAttribute(NameOID.COUNTRY_NAME, c)] if c else []),
        ]
    ),
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
        min_size=1,
        max_size=16,  # ub-common-name is 64, counted by cryptography in UTF-8 bytes
    ),
    st.none() | st.text(alphabet=string.ascii_letters + " -", min_size=1, max_size=32),
    st.none() | st.sampled_from(["DE", "FR", "NL", "US"]),
)


def certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    signer: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    serial: int,
) -> x509.Certificate:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(signer, hashes.SHA256())
    )


def issuer_name_der(leaf: x509.Certificate) -> bytes:
    """The issuer Name exactly as encoded in the leaf's tbsCertificate."""
    decoded, _ = decoder.decode(
        leaf.public_bytes(serialization.Encoding.DER), asn1Spec=rfc5280.Certificate()
    )
    return encoder.encode(decoded["tbsCertificate"]["issuer"])


def issuer_key_bits(issuer: x509.Certificate) -> bytes:
    """The value of the subjectPublicKey BIT STRING of the issuer certificate's SPKI."""
    decoded, _ = decoder.decode(
        issuer.public_bytes(serialization.Encoding.DER), asn1Spec=rfc5280.Certificate()
    )
    return decoded["tbsCertificate"]["subjectPublicKeyInfo"]["subjectPublicKey"].asOctets()


@CRYPTO
@given(
    issuer_name=names,
    key_name=st.sampled_from(["p256", "p384", "rsa2048"]),
    serial=st.integers(min_value=1, max_value=2**159 - 1),
    algorithm=algorithms,
)
def test_hash_data_for_matches_independent_computation(
    issuer_keys: dict[str, IssuerKey],
    issuer_name: x509.Name,
    key_name: str,
    serial: int,
    algorithm: str,
) -> None:
    issuer_key = issuer_keys[key_name]
    issuer = certificate(issuer_name, issuer_name, issuer_key.public_key(), issuer_key, 1)
    leaf = certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]),
        issuer_name,
        _LEAF_KEY.public_key(),
        issuer_key,
        serial,
    )
    data = hash_data_for(leaf, issuer_key.public_key(), algorithm)

    digest = algorithm.lower()
    assert data.hash_algorithm == algorithm
    assert data.issuer_name_hash == hashlib.new(digest, issuer_name_der(leaf)).hexdigest()
    assert data.issuer_key_hash == hashlib.new(digest, issuer_key_bits(issuer)).hexdigest()
    assert data.serial_number == f"{serial:x}"
    assert int(data.serial_number, 16) == serial

    # A third implementation: the CertID of an OCSP request built by cryptography.
    request = (
        ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, HASH_CLASSES[algorithm]()).build()
    )
    assert data.issuer_name_hash == request.issuer_name_hash.hex()
    assert data.issuer_key_hash == request.issuer_key_hash.hex()
    assert data.serial_number == serial_hex(request.serial_number)

    # What hash_data_for emits, from_ocpp reads back unchanged.
    assert CertificateHashData.from_ocpp(data.to_ocpp()) == data


def test_public_key_bits_refuses_other_key_types() -> None:
    with pytest.raises(TypeError, match="Ed25519"):
        public_key_bits(ed25519.Ed25519PrivateKey.generate().public_key())
