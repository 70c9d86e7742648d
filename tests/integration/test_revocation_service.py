"""The CA's revocation service on the HTTP port of a real `pkictl serve` (issue #5):
`openssl ocsp` as the client, with SHA-1 and SHA-256 CertIDs, with and without a nonce;
a revocation by the CLI shows at once; CRLs as `openssl crl` reads them."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from integration_support import Home, initialized_home, passphrase_file
from simulated_station import Service, pkictl, serving

FLEET = {"CS1": ("SN-CS1", 3, False)}


def openssl_ocsp(service: Service, leaf: Path, *options: str, serial: str | None = None) -> str:
    """`openssl ocsp` against our responder, trusting the CSO root; its output. The
    certificate asked about is ``leaf``, or ``serial`` under the same issuer."""
    certs = service.home.path / "certs"
    target = ("-serial", serial) if serial else ("-cert", str(leaf))
    command = [
        "openssl", "ocsp", *options, "-issuer", str(certs / "cso-station-ca.pem"), *target,
        "-url", f"http://127.0.0.1:{service.ports.http_port}/ocsp",
        "-CAfile", str(certs / "cso-root.pem"),
        "-verify_other", str(certs / "cso-station-ca.pem"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr
    assert "Response verify OK" in result.stderr, result.stderr
    return result.stdout


def read_url(request: urllib.request.Request | str) -> bytes:
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 -- loopback
        body: bytes = response.read()
    return body


def http_get(service: Service, path: str) -> bytes:
    return read_url(f"http://127.0.0.1:{service.ports.http_port}{path}")


def leaf_of(home: Home, identity: tuple[Path, Path]) -> Path:
    leaf = x509.load_pem_x509_certificates(identity[0].read_bytes())[0]
    path = home.directory / "leaf.pem"
    path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    home = await initialized_home(tmp_path, FLEET)
    async with serving(home, FLEET) as running:
        yield running


async def test_openssl_ocsp_verifies_good_then_revoked_at_once(service: Service) -> None:
    home = service.home
    leaf = leaf_of(home, await home.issue("CS1", station="CS1", serial="SN-CS1"))
    for options in ((), ("-sha256",), ("-no_nonce",), ("-no_nonce",)):  # nonce echoed; kept
        out = await asyncio.to_thread(openssl_ocsp, service, leaf, *options)
        assert f"{leaf}: good" in out, out
        assert "Next Update:" in out

    serial = format(x509.load_pem_x509_certificate(leaf.read_bytes()).serial_number, "x")
    revoked = await asyncio.to_thread(
        pkictl, home, "--passphrase-file", str(passphrase_file(home.directory)),
        "cert", "revoke", serial, "--reason", "keyCompromise",
    )  # fmt: skip
    assert revoked.exit_code == 0, revoked.output
    for options in (("-no_nonce",), ("-sha256",)):  # the kept "good" is not served again
        out = await asyncio.to_thread(openssl_ocsp, service, leaf, *options)
        assert f"{leaf}: revoked" in out, out
        assert "Reason: keyCompromise" in out

    unknown = await asyncio.to_thread(openssl_ocsp, service, leaf, serial="0x1234abcd")
    assert "0x1234abcd: unknown" in unknown, unknown


async def test_get_requests_unknown_issuers_and_garbage(service: Service) -> None:
    home = service.home
    identity = await home.issue("CS1", station="CS1", serial="SN-CS1")
    leaf = x509.load_pem_x509_certificate(leaf_of(home, identity).read_bytes())
    issuer_pem = (home.path / "certs" / "cso-station-ca.pem").read_bytes()
    issuer = x509.load_pem_x509_certificate(issuer_pem)
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA256()).build()
    encoded = base64.b64encode(request.public_bytes(serialization.Encoding.DER)).decode()
    path = f"/ocsp/{urllib.parse.quote(encoded, safe='')}"
    answer = ocsp.load_der_ocsp_response(await asyncio.to_thread(http_get, service, path))
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert answer.serial_number == leaf.serial_number

    # a CertID whose issuer is not one of our CAs: we are not authoritative
    sha1 = hashes.SHA1()  # noqa: S303 -- the CertID hash most clients send
    stranger = ocsp.OCSPRequestBuilder().add_certificate(leaf, leaf, sha1).build()
    post = urllib.request.Request(
        f"http://127.0.0.1:{service.ports.http_port}/ocsp",
        data=stranger.public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
    )
    refused = ocsp.load_der_ocsp_response(await asyncio.to_thread(read_url, post))
    assert refused.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    junk = "/ocsp/" + base64.b64encode(b"junk").decode()
    garbage = ocsp.load_der_ocsp_response(await asyncio.to_thread(http_get, service, junk))
    assert garbage.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


async def test_crls_are_served_and_read_by_openssl(service: Service) -> None:
    der = await asyncio.to_thread(http_get, service, "/crl/cso-station-ca.crl")
    crl = service.home.directory / "station-ca.crl"
    crl.write_bytes(der)
    command = ["openssl", "crl", "-inform", "DER", "-in", str(crl), "-noout", "-issuer",
               "-nextupdate"]  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=20, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Charging Station CA" in result.stdout
    with pytest.raises(urllib.error.HTTPError, match="404"):
        await asyncio.to_thread(http_get, service, "/crl/no-such-ca.crl")
