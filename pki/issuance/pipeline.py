"""The ordered pipeline from a CSR (or a key the CA generated) to a signed certificate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from pki.errors import IssuanceRefused, ReasonCode
from pki.issuance.build import Issuer, RevocationUrls, build_and_sign, validity_window
from pki.issuance.csr import check_key, check_no_ca_request, check_proof_of_possession, parse_csr
from pki.issuance.lint import lint_issued
from pki.issuance.subject import check_requested_subject, render_subject
from pki.policy import Profile


@dataclass(frozen=True)
class Draft:
    """Everything the pipeline needs besides the public key and subject source."""

    profile: Profile
    issuer: Issuer
    serial: int
    now: datetime
    requested_days: int | None = None
    urls: RevocationUrls | None = None


@dataclass(frozen=True)
class Signed:
    """A certificate fresh from signing, with the subject and validity the pipeline gave
    it: what the certificate says, without parsing it back out (the record needs it)."""

    certificate: x509.Certificate
    subject: x509.Name
    validity: tuple[datetime, datetime]


def issue_from_csr(csr_pem: str, bindings: Mapping[str, str | None], draft: Draft) -> Signed:
    """Run every check on a station's CSR, then build, sign and lint."""
    if draft.profile.kind != "csr":
        raise IssuanceRefused(
            ReasonCode.PROFILE_NOT_FOR_CSR,
            f"profile {draft.profile.name} is not issued from CSRs",
            field="profile",
        )
    csr = parse_csr(csr_pem)
    check_proof_of_possession(csr)
    public_key = csr.public_key()
    check_key(public_key, draft.profile.allowed_keys)
    check_no_ca_request(csr)
    subject = check_requested_subject(csr.subject, draft.profile, bindings)
    return _finish(draft, subject, public_key, ())


def issue_for_key(
    public_key: CertificatePublicKeyTypes,
    bindings: Mapping[str, str | None],
    draft: Draft,
    hosts: Sequence[str] = (),
    subject: x509.Name | None = None,
) -> Signed:
    """Issue for a key the CA generated itself (CAs, OCSP signers, server certificates).
    ``subject`` replaces the profile's only where the CA must tell generations of one
    authority apart (a root rollover)."""
    if subject is None:
        subject = render_subject(draft.profile, bindings)
    return _finish(draft, subject, public_key, hosts)


def _finish(
    draft: Draft,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    hosts: Sequence[str],
) -> Signed:
    issuer_cert = draft.issuer.certificate
    validity = validity_window(
        draft.profile,
        draft.now,
        draft.requested_days,
        issuer_cert.not_valid_after_utc if issuer_cert else None,
        spread_seed=draft.serial,
    )
    certificate = build_and_sign(
        profile=draft.profile,
        subject=subject,
        public_key=public_key,
        issuer=draft.issuer,
        serial=draft.serial,
        validity=validity,
        urls=draft.urls,
        hosts=hosts,
    )
    lint_issued(certificate, draft.profile)
    return Signed(certificate, subject, validity)
