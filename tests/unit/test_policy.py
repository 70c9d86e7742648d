"""Policy parsing: the default policy loads; every error names file, key path and reason."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import pytest

from pki.errors import PolicyError
from pki.keys import KeySpec
from pki.policy import Policy, load_policy, parse_policy

DEFAULT = Path(__file__).resolve().parents[2] / "policies" / "default.toml"
DEFAULT_TEXT = DEFAULT.read_text(encoding="utf-8")


def variant(*replacements: tuple[str, str]) -> str:
    """The default policy with each (old, new) replaced; ``old`` must occur exactly once."""
    text = DEFAULT_TEXT
    for old, new in replacements:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text


def load_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    return path, str(caught.value)


def assert_names(message: str, path: Path, key: str, reason: str) -> None:
    assert message.startswith(f"{path}: {key}: "), message
    assert reason in message.removeprefix(f"{path}: {key}: "), message


# --- the default policy ---------------------------------------------------------------


def test_default_policy_loads(policy: Policy) -> None:
    assert set(policy.profiles) == {
        "cso-root",
        "cso-station-ca",
        "charging-station",
        "csms-server",
        "ocsp-signer",
        "v2g-root",
        "cpo-sub-ca-1",
        "cpo-sub-ca-2",
        "v2g-secc",
    }
    assert policy.source == str(DEFAULT)
    assert policy.digest == hashlib.sha256(DEFAULT_TEXT.encode()).hexdigest()
    assert policy.tls_min_version == "1.3"
    assert policy.ocsp_validity == timedelta(hours=24)


def test_default_charging_station_profile(policy: Policy) -> None:
    profile = policy.profile("charging-station")
    assert profile.kind == "csr"
    assert profile.issuer == "cso-station-ca"
    assert profile.allowed_keys.ec_curves == {"secp256r1", "secp384r1", "secp521r1"}
    assert profile.allowed_keys.rsa_min_bits == 2048
    assert (profile.validity_days, profile.max_validity_days) == (365, 730)
    assert profile.key_usage == ("digitalSignature",)
    assert profile.extended_key_usage == ()
    assert profile.backdate_seconds == 60
    assert profile.signature_hash == "sha256"
    assert profile.renewal.before_expiry_days == 90
    assert [(t.attribute, t.template) for t in profile.subject] == [
        ("CN", "{station.serial}"),
        ("O", "{organization}"),
    ]


def test_default_v2g_profiles(policy: Policy) -> None:
    secc = policy.profile("v2g-secc")
    assert secc.iso15118 is True
    assert secc.allowed_keys.ec_curves == {"secp256r1"}
    assert secc.allowed_keys.rsa_min_bits is None
    assert secc.renewal.lifetime_fraction == Fraction(2, 3)
    assert secc.renewal.before_expiry_days is None
    assert policy.profile("v2g-root").path_length is None
    assert policy.profile("cpo-sub-ca-1").path_length == 1
    assert policy.profile("cpo-sub-ca-2").path_length == 0
    assert policy.profile("v2g-root").key == KeySpec("ec", curve="secp256r1")


def test_default_server_profile_keys(policy: Policy) -> None:
    server = policy.profile("csms-server")
    assert server.server_keys == (KeySpec("ec", curve="secp256r1"), KeySpec("rsa", bits=3072))
    assert server.key_usage_for("rsa") == ("digitalSignature", "keyEncipherment")
    assert server.key_usage_for("ec") == ("digitalSignature",)
    assert server.extended_key_usage == ("serverAuth",)


def test_ca_profiles_come_issuer_first(policy: Policy) -> None:
    ordered = [p.name for p in policy.ca_profiles(frozenset({"cso", "v2g"}))]
    assert sorted(ordered) == sorted(
        ["cso-root", "cso-station-ca", "v2g-root", "cpo-sub-ca-1", "cpo-sub-ca-2"]
    )
    for name in ordered:
        issuer = policy.profile(name).issuer
        if issuer is not None:
            assert ordered.index(issuer) < ordered.index(name)
    assert [p.name for p in policy.ca_profiles(frozenset({"cso"}))] == [
        "cso-root",
        "cso-station-ca",
    ]


def test_unknown_profile_lookup_names_the_known_ones(policy: Policy) -> None:
    with pytest.raises(PolicyError, match=r"unknown profile 'nope' \(known: charging-station"):
        policy.profile("nope")


# --- errors ---------------------------------------------------------------------------


def test_unknown_key_in_profile(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path, variant(("validity_days = 365\nmax", "validty_days = 365\nmax"))
    )
    assert_names(message, path, "profiles.charging-station.validty_days", "unknown key")
    assert "validity_days" in message  # the allowed keys are listed


@pytest.mark.parametrize("value", ["365", "-1", "true", '"30"'])
def test_validity_spread_must_be_shorter_than_the_validity(tmp_path: Path, value: str) -> None:
    path, message = load_error(
        tmp_path, variant(("validity_spread_days = 45\n", f"validity_spread_days = {value}\n"))
    )
    assert_names(
        message, path, "profiles.charging-station.validity_spread_days",
        "must be an integer from 0 to validity_days - 1",
    )  # fmt: skip


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, variant(("[tls]", "[tsl]")))
    assert_names(message, path, "tsl", "unknown key")


def test_unknown_key_in_defaults(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path, variant(("backdate_seconds = 60\n", "backdate_secs = 60\n"))
    )
    assert_names(message, path, "defaults.backdate_secs", "unknown key")


def test_bad_kind(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        variant(
            ('kind = "csr"\nissuer = "cso-station-ca"', 'kind = "leaf"\nissuer = "cso-station-ca"')
        ),
    )
    assert_names(message, path, "profiles.charging-station.kind", "must be one of ca, csr, server")


def test_missing_required_key(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        variant(
            (
                'allowed_keys = ["ec:secp256r1", "ec:secp384r1", "ec:secp521r1", "rsa:2048"]\n',
                "",
            )
        ),
    )
    assert_names(
        message, path, "profiles.charging-station.allowed_keys", "is required for kind 'csr'"
    )


def test_missing_renewal(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, variant(('renewal = { lifetime_fraction = "2/3" }\n', "")))
    assert_names(message, path, "profiles.v2g-secc.renewal", "is required for kind 'csr'")


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("ec:secp999r1", "unknown curve 'secp999r1'"),
        ("rsa:512", "RSA size '512' is not a number of bits >= 1024"),
        ("dsa:2048", "unknown key algorithm 'dsa'"),
        ("secp256r1", "is not 'ec:<curve>' or 'rsa:<bits>'"),
    ],
)
def test_bad_key_spec(tmp_path: Path, spec: str, reason: str) -> None:
    path, message = load_error(
        tmp_path,
        variant(
            (
                'hierarchy = "cso"\nkey = "ec:secp256r1"\nvalidity_days = 7305',
                f'hierarchy = "cso"\nkey = "{spec}"\nvalidity_days = 7305',
            )
        ),
    )
    assert_names(message, path, "profiles.cso-root.key", reason)


def test_bad_allowed_key_spec(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path, variant(('allowed_keys = ["ec:secp256r1"]\n', 'allowed_keys = ["ec:p256"]\n'))
    )
    assert_names(message, path, "profiles.v2g-secc.allowed_keys", "unknown curve 'p256'")


def test_unknown_template_field(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path, variant(('CN = "{station.serial}"', 'CN = "{station.name}"'))
    )
    assert_names(
        message, path, "profiles.charging-station.subject.CN", "unknown field {station.name}"
    )


def test_unknown_subject_attribute(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path, variant(('CN = "{station.serial}"', 'commonName = "{station.serial}"'))
    )
    assert_names(message, path, "profiles.charging-station.subject.commonName", "unknown attribute")


def test_broken_template(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path, variant(('CN = "{station.serial}"', 'CN = "{station.serial"'))
    )
    assert_names(message, path, "profiles.charging-station.subject.CN", "bad template")


def test_iso15118_csr_profile_with_non_p256_key(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        variant(('allowed_keys = ["ec:secp256r1"]\n', 'allowed_keys = ["ec:secp384r1"]\n')),
    )
    assert_names(message, path, "profiles.v2g-secc.iso15118", "allow only ec:secp256r1 keys")


def test_iso15118_csr_profile_allowing_rsa(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        variant(
            ('allowed_keys = ["ec:secp256r1"]\n', 'allowed_keys = ["ec:secp256r1", "rsa:2048"]\n')
        ),
    )
    assert_names(message, path, "profiles.v2g-secc.iso15118", "allow only ec:secp256r1 keys")


def test_iso15118_ca_profile_with_non_p256_key(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        variant(
            (
                'hierarchy = "v2g"\nkey = "ec:secp256r1"\nvalidity_days = 14610',
                'hierarchy = "v2g"\nkey = "ec:secp384r1"\nvalidity_days = 14610',
            )
        ),
    )
    assert_names(message, path, "profiles.v2g-root.iso15118", "allow only ec:secp256r1 keys")


def test_iso15118_profile_needs_sha256(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        variant(("validity_days = 60\n", 'validity_days = 60\nsignature_hash = "sha384"\n')),
    )
    assert_names(message, path, "profiles.v2g-secc.signature_hash", "requires sha256")


def test_iso15118_profile_needs_dc(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        variant(
            (
                'subject = { CN = "{station.secc_id}", O = "{organization}", DC = "CPO" }',
                'subject = { CN = "{station.secc_id}", O = "{organization}" }',
            )
        ),
    )
    assert_names(message, path, "profiles.v2g-secc.subject", "need a DC attribute")


def test_max_validity_below_validity(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path, variant(("max_validity_days = 730\n", "max_validity_days = 100\n"))
    )
    assert_names(
        message, path, "profiles.charging-station.max_validity_days", "must be >= validity_days"
    )


@pytest.mark.parametrize("value", ["0", "-5", '"365"', "true"])
def test_validity_must_be_positive_integer(tmp_path: Path, value: str) -> None:
    path, message = load_error(
        tmp_path, variant(("validity_days = 60\n", f"validity_days = {value}\n"))
    )
    assert_names(message, path, "profiles.v2g-secc.validity_days", "must be a positive integer")


def test_issuer_not_a_ca(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        variant(
            ('kind = "csr"\nissuer = "cso-station-ca"', 'kind = "csr"\nissuer = "csms-server"')
        ),
    )
    assert_names(
        message, path, "profiles.charging-station.issuer", "'csms-server' is not a CA profile"
    )


def test_issuer_does_not_exist(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path, variant(('issuer = "cpo-sub-ca-2"', 'issuer = "cpo-sub-ca-3"'))
    )
    assert_names(message, path, "profiles.v2g-secc.issuer", "'cpo-sub-ca-3' is not a CA profile")


def test_issuer_cycle(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        variant(
            (
                'kind = "ca"\nhierarchy = "v2g"\nkey = "ec:secp256r1"\nvalidity_days = 14610',
                'kind = "ca"\nhierarchy = "v2g"\nissuer = "cpo-sub-ca-2"\n'
                'key = "ec:secp256r1"\nvalidity_days = 14610',
            )
        ),
    )
    assert "issuer chain has a cycle" in message
    assert message.startswith(f"{path}: profiles.")


@pytest.mark.parametrize(
    ("rule", "key", "reason"),
    [
        ("{ every_days = 30 }", "renewal.every_days", "unknown rule"),
        ('{ lifetime_fraction = "3/2" }', "renewal.lifetime_fraction", "between 0 and 1"),
        ('{ lifetime_fraction = "0" }', "renewal.lifetime_fraction", "between 0 and 1"),
        ('{ lifetime_fraction = "two thirds" }', "renewal.lifetime_fraction", "a fraction"),
        ("{ before_expiry_days = 0 }", "renewal.before_expiry_days", "positive integer"),
        ("{ before_expiry_days = true }", "renewal.before_expiry_days", "positive integer"),
        (
            '{ before_expiry_days = 9, lifetime_fraction = "1/2" }',
            "renewal",
            "must be { before_expiry_days = N }",
        ),
        ("90", "renewal", "must be { before_expiry_days = N }"),
    ],
)
def test_bad_renewal_rule(tmp_path: Path, rule: str, key: str, reason: str) -> None:
    path, message = load_error(
        tmp_path,
        variant(("renewal = { before_expiry_days = 90 }", f"renewal = {rule}")),
    )
    assert_names(message, path, f"profiles.charging-station.{key}", reason)


def test_ca_profile_needs_key_cert_sign(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        variant(
            (
                'validity_days = 7305\nkey_usage = ["keyCertSign", "cRLSign"]',
                'validity_days = 7305\nkey_usage = ["cRLSign"]',
            )
        ),
    )
    assert_names(message, path, "profiles.cso-root.key_usage", "must include keyCertSign")


def test_leaf_profile_cannot_sign_certificates(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        variant(
            (
                'key_usage = ["digitalSignature", "keyAgreement"]',
                'key_usage = ["digitalSignature", "keyCertSign"]',
            )
        ),
    )
    assert_names(message, path, "profiles.v2g-secc.key_usage", "for CA profiles only")


def test_unknown_key_usage_value(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        variant(
            (
                'key_usage = ["digitalSignature", "keyAgreement"]',
                'key_usage = ["digitalSignature", "keyAgreemnt"]',
            )
        ),
    )
    assert_names(message, path, "profiles.v2g-secc.key_usage", "unknown value 'keyAgreemnt'")


def test_path_length_only_on_ca(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path, variant(("validity_days = 60\n", "validity_days = 60\npath_length = 0\n"))
    )
    assert_names(message, path, "profiles.v2g-secc.path_length", "only CA profiles")


def test_bad_tls_min_version(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, variant(('min_version = "1.3"', 'min_version = "1.1"')))
    assert_names(message, path, "tls.min_version", 'must be "1.2" or "1.3"')


def test_schema_must_be_1(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, variant(("schema = 1\n", "schema = 2\n")))
    assert_names(message, path, "schema", "must be 1")


def test_invalid_toml(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, variant(("schema = 1\n", "schema = = 1\n")))
    assert message.startswith(f"{path}: not valid TOML: ")
    assert "line" in message  # tomllib says where


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(PolicyError, match=r"missing\.toml: cannot read: "):
        load_policy(missing)


def test_parse_policy_names_its_source() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy("schema = 1\n", source="inline-source")
    assert str(caught.value) == "inline-source: profiles: at least one profile is required"


# --- loopholes that must stay closed -------------------------------------------------


def test_iso15118_server_profile_with_rsa_key_is_refused(tmp_path: Path) -> None:
    path, message = load_error(
        tmp_path,
        variant(
            (
                'subject = { CN = "{host}", O = "{organization}" }',
                'iso15118 = true\nsubject = { CN = "{host}", O = "{organization}", DC = "CPO" }',
            )
        ),
    )
    assert_names(message, path, "profiles.csms-server.iso15118", "only ec:secp256r1")


@pytest.mark.parametrize("template", ["{station.serial!r}", "{station.serial:>9}"])
def test_template_with_format_spec_is_refused(tmp_path: Path, template: str) -> None:
    path, message = load_error(tmp_path, variant(('CN = "{station.serial}"', f'CN = "{template}"')))
    assert_names(message, path, "profiles.charging-station.subject.CN", "format spec")


def test_ocsp_validity_is_bounded_by_seven_days(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, variant(("validity_hours = 24", "validity_hours = 169")))
    assert_names(message, path, "ocsp.validity_hours", "at most 168")
    path, message = load_error(tmp_path, variant(("validity_hours = 24", "validity_hours = 0")))
    assert_names(message, path, "ocsp.validity_hours", "positive integer")
