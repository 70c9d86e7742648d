"""Subjects: rendered from profile templates, never copied from a request."""

from __future__ import annotations

from collections.abc import Mapping

from cryptography import x509
from cryptography.x509.oid import NameOID

from pki.errors import IssuanceRefused, ReasonCode
from pki.policy import Profile, SubjectTemplate

ATTRIBUTE_OIDS: dict[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "L": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "DC": NameOID.DOMAIN_COMPONENT,
    "serialNumber": NameOID.SERIAL_NUMBER,
}

FIELD_MEANING = {
    "station.serial": "the station's registered serial number",
    "station.secc_id": "the station's registered SECC id",
    "station.id": "the station id",
    "organization": "the CSO organization",
    "country": "the CSO country",
}


def render_subject(profile: Profile, bindings: Mapping[str, str | None]) -> x509.Name:
    """The subject a profile gives to an identity; refuses when a needed value is unset."""
    return _name(_rendered_values(profile, bindings))


def _rendered_values(
    profile: Profile, bindings: Mapping[str, str | None]
) -> list[tuple[SubjectTemplate, str]]:
    values = []
    for template in profile.subject:
        value = template.render(bindings)
        if value is None:
            raise IssuanceRefused(
                ReasonCode.STATION_IDENTITY_INCOMPLETE,
                f"subject {template.attribute} needs {template.template}, which is not set "
                f"for this station",
                field=template.attribute,
            )
        values.append((template, value))
    return values


def _name(values: list[tuple[SubjectTemplate, str]]) -> x509.Name:
    return x509.Name(
        [
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(ATTRIBUTE_OIDS[template.attribute], value)]
            )
            for template, value in values
        ]
    )


def check_requested_subject(
    requested: x509.Name, profile: Profile, bindings: Mapping[str, str | None]
) -> x509.Name:
    """Every templated attribute must be in the CSR with exactly the bound value.

    Returns the subject to issue, built from the templates. Attributes the profile does
    not name are ignored, not copied.
    """
    values = _rendered_values(profile, bindings)
    for template, expected in values:
        found = [
            str(a.value)
            for a in requested.get_attributes_for_oid(ATTRIBUTE_OIDS[template.attribute])
        ]
        if found == [expected]:
            continue
        meaning = next(
            (FIELD_MEANING[f] for f in FIELD_MEANING if "{" + f + "}" == template.template),
            repr(expected),
        )
        if not found:
            raise IssuanceRefused(
                ReasonCode.SUBJECT_MISSING_ATTRIBUTE,
                f"CSR subject has no {template.attribute}; it must be {meaning} ({expected!r})",
                field=template.attribute,
            )
        raise IssuanceRefused(
            ReasonCode.SUBJECT_MISMATCH,
            f"CSR subject {template.attribute} is {', '.join(map(repr, found))}; "
            f"it must be {meaning} ({expected!r})",
            field=template.attribute,
        )
    return _name(values)
