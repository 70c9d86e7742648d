"""`pkictl ocsp check` and `pkictl ocsp status`: ask a responder about one certificate
as a relying party would, and list the OCSP responses kept."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from cli.context import Context, json_option, run_with_app
from cli.errors import ExitCode
from cli.output import emit_fields, emit_json, emit_table, iso, note
from csms.app import App
from csms.domain.text import printable
from csms.services.certificate_status import OcspFetchError
from csms.services.ocsp import LoggedResponse
from csms.transport.ocsp_client import HttpOcspFetcher
from pki.errors import InputError
from pki.ocsp import UnusableResponse, ocsp_urls, verified_status
from pki.serials import serial_hex

STATUS_COLUMNS = ("responder", "serial", "cert_id_hash", "status", "produced_at", "next_update")


def _load(path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (ValueError, IndexError):
        raise InputError(f"{what}: {path} holds no PEM certificate") from None


async def _issuer_of(app: App, certificate: x509.Certificate) -> x509.Certificate:
    known = [a.certificate() for a in await app.store.list_authorities()]
    known += [t.certificate() for t in await app.trust.list()]
    for candidate in known:
        if candidate.subject == certificate.issuer:
            return candidate
    raise InputError(
        f"--issuer: {certificate.issuer.rfc4514_string()} is not one of our CAs or trust "
        "anchors; give its certificate"
    )


@click.group("ocsp")
def ocsp_group() -> None:
    """OCSP: check a certificate's status, list the responses kept."""


@ocsp_group.command("check")
@click.option(
    "--cert",
    "cert_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The certificate to ask about (PEM; the first one in the file).",
)
@click.option(
    "--issuer",
    "issuer_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Its issuer (PEM) [default: found among our CAs and trust anchors].",
)
@click.option("--url", help="The responder [default: the certificate's AIA OCSP URL].")
@json_option
@click.pass_obj
def ocsp_check(
    ctx: Context, cert_file: Path, issuer_file: Path | None, url: str | None, as_json: bool
) -> None:  # fmt: skip
    """Ask the responder about the certificate in --cert, with a nonce, and verify the
    answer: signed by the issuer or its delegated responder, about this certificate,
    current. Exit 0 with its status good or unknown, 10 when it is revoked; 7 when the
    answer cannot be relied on; 1 when the responder cannot be reached."""
    certificate = _load(cert_file, "--cert")
    if issuer_file is not None:
        issuer = _load(issuer_file, "--issuer")
    else:
        issuer = run_with_app(ctx, lambda app: _issuer_of(app, certificate))
    responder = url or next(iter(ocsp_urls(certificate)), None)
    if responder is None:
        raise InputError("--url: the certificate names no OCSP responder; give one")
    nonce = os.urandom(16)
    request = (
        ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA256())
        .add_extension(x509.OCSPNonce(nonce), critical=False).build()
    )  # fmt: skip
    try:
        der = asyncio.run(HttpOcspFetcher().fetch(responder, request.public_bytes(Encoding.DER)))
    except OcspFetchError as exc:
        click.echo(printable(f"error: {responder}: {exc}"), err=True)
        raise click.exceptions.Exit(int(ExitCode.ERROR)) from None
    now = datetime.now(UTC)
    try:
        status = verified_status(der, certificate, issuer, now)
    except UnusableResponse as exc:
        click.echo(printable(f"error: {responder}: {exc}"), err=True)
        raise click.exceptions.Exit(int(ExitCode.INTEGRITY)) from None
    response = ocsp.load_der_ocsp_response(der)
    view = _check_view(certificate, response, status.state.value, responder, nonce)
    if as_json:
        emit_json(view)
    else:
        emit_fields(view)
    if status.state.value == "revoked":  # a script must not read "revoked" as success
        raise click.exceptions.Exit(int(ExitCode.REVOKED))


def _check_view(
    certificate: x509.Certificate, response: ocsp.OCSPResponse, state: str, url: str,
    nonce: bytes,
) -> dict[str, Any]:  # fmt: skip
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        echoed = None
    signer = next(iter(response.certificates), None)
    return {
        "serial": serial_hex(certificate.serial_number),
        "status": state,
        "revoked_at": iso(response.revocation_time_utc),
        "revocation_reason": response.revocation_reason.value
        if response.revocation_reason
        else None,
        "produced_at": iso(response.produced_at_utc),
        "this_update": iso(response.this_update_utc),
        "next_update": iso(response.next_update_utc),
        "responder": signer.subject.rfc4514_string() if signer else "the issuer",
        "url": url,
        "nonce_echoed": echoed == nonce,
    }


@ocsp_group.command("status")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
@click.pass_obj
def ocsp_status(ctx: Context, limit: int, as_json: bool) -> None:
    """The OCSP responses kept, newest first: ours as signed for relying parties, and
    other responders' as fetched for stations (GetCertificateStatus, contracts). One per
    CertID: a certificate asked about with SHA-1 and with SHA-256 CertIDs (openssl asks
    with SHA-1, `ocsp check` with SHA-256) has a response for each, told apart by
    CERT ID HASH."""

    async def action(app: App) -> list[LoggedResponse]:
        return await app.ocsp.log.list(limit)

    now = datetime.now(UTC)
    rows = [
        {
            "responder": r.responder, "serial": r.serial_hex, "cert_id_hash": r.algorithm,
            "status": r.cert_status,
            "produced_at": iso(r.produced_at), "next_update": iso(r.next_update),
            "age_s": int((now - r.produced_at).total_seconds()),
            "expired": r.next_update is not None and r.next_update <= now,
        }
        for r in run_with_app(ctx, action)
    ]  # fmt: skip
    if as_json:
        emit_json(rows)
    elif rows:
        emit_table(rows, (*STATUS_COLUMNS, "age_s"))
    else:
        note("no OCSP responses kept yet")
