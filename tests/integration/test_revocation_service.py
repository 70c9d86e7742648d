"""The CA's revocation service on the HTTP port of a real `pkictl serve` (issue #5):
`openssl ocsp` as the client, with SHA-1 and SHA-256 CertIDs, with and without a nonce;
a revocation by the CLI shows at once; CRLs as `openssl crl` reads them. And
GetCertificateStatus (M06) from a station, with an MO responder of the test's own."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from integration_support import Home, initialized_home, passphrase_file
from ocpp.v201 import call
from simulated_station import Service, pkictl, pkictl_json, serving

from csms.transport.http import HttpServer, Reply
from pki.hashdata import hash_data_for

FLEET = {"CS1": ("SN-CS1", 3, False)}
DOWN = "http://127.0.0.1:9/ocsp"  # configured, but nothing listens (discard port)


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
    # the kept "good" is not served again; without a nonce the answer is kept, by CertID
    for options in (("-no_nonce",), ("-sha256",), ("-sha256", "-no_nonce")):
        out = await asyncio.to_thread(openssl_ocsp, service, leaf, *options)
        assert f"{leaf}: revoked" in out, out
        assert "Reason: keyCompromise" in out

    unknown = await asyncio.to_thread(openssl_ocsp, service, leaf, serial="0x1234abcd")
    assert "0x1234abcd: unknown" in unknown, unknown

    url = f"http://127.0.0.1:{service.ports.http_port}/ocsp"
    done = await asyncio.to_thread(
        pkictl, home, "ocsp", "check", "--cert", str(leaf), "--url", url, "--json"
    )
    assert done.exit_code == 10, done.output  # revoked: its own exit code (#22 item 27)
    checked = json.loads(done.stdout)
    assert (checked["status"], checked["revocation_reason"], checked["nonce_echoed"]) == (
        "revoked", "keyCompromise", True,
    )  # fmt: skip
    assert "OCSP Signer" in checked["responder"]
    human = await asyncio.to_thread(
        pkictl, home, "ocsp", "check", "--cert", str(leaf), "--url", url
    )
    assert human.exit_code == 10, repr(human.exception)
    assert "nonce echoed yes" in " ".join(human.stdout.split())  # not True
    kept = await asyncio.to_thread(pkictl_json, home, "ocsp", "status")
    ours = {(k["responder"], k["serial"], k["cert_id_hash"], k["status"]) for k in kept}
    assert ours >= {
        ("ca:cso-station-ca", serial, "sha1", "revoked"),  # openssl's default CertID
        ("ca:cso-station-ca", serial, "sha256", "revoked"),  # -sha256
    }
    table = (await asyncio.to_thread(pkictl, home, "ocsp", "status")).stdout
    assert "CERT ID HASH" in table
    rows = [line.split() for line in table.splitlines() if line.startswith("ca:cso-station")]
    assert {(row[1], row[2]) for row in rows} >= {(serial[:12], "sha1"), (serial[:12], "sha256")}
    foreign = home.directory / "foreign.pem"
    foreign.write_text(MoResponder().root.public_bytes(serialization.Encoding.PEM).decode())
    not_ours = await asyncio.to_thread(pkictl, home, "ocsp", "check", "--cert", str(foreign))
    assert not_ours.exit_code == 2
    assert "--issuer" in not_ours.output


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


class MoResponder:
    """An eMobility operator's OCSP responder on loopback, for a hierarchy made here:
    a root and one contract certificate it issued. It answers good, and counts."""

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test MO Root")])
        self.root = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        contract = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DEABCC12345678")])
        self.contract = (
            x509.CertificateBuilder().subject_name(contract).issuer_name(name)
            .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.requests = 0

    async def handle(self, method: str, target: str, body: bytes) -> Reply:
        self.requests += 1
        request = ocsp.load_der_ocsp_request(body)
        assert request.serial_number == self.contract.serial_number
        now = datetime.now(UTC).replace(microsecond=0)
        response = (
            ocsp.OCSPResponseBuilder()
            .add_response(self.contract, self.root, hashes.SHA256(), ocsp.OCSPCertStatus.GOOD,
                          now, now + timedelta(hours=1), None, None)
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self.root)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        return Reply(200, response.public_bytes(serialization.Encoding.DER),
                     "application/ocsp-response")  # fmt: skip

    def request_data(self, url: str) -> dict[str, str]:
        data = hash_data_for(self.contract, self.root.public_key()).to_ocpp()
        return {"hash_algorithm": data["hashAlgorithm"], "issuer_name_hash": data["issuerNameHash"],
                "issuer_key_hash": data["issuerKeyHash"], "serial_number": data["serialNumber"],
                "responder_url": url}  # fmt: skip


async def test_get_certificate_status_ours_allowed_and_refused(tmp_path: Path) -> None:
    """M06: our certificate from our responder without a request; a responder on the
    allow-list asked once, then its answer kept; private addresses never asked."""
    mo = MoResponder()
    http = HttpServer(mo.handle)
    server = await http.start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    allowed = f"http://127.0.0.1:{port}/ocsp"
    home = await initialized_home(tmp_path, FLEET)
    config = home.path / "pkictl.toml"
    config.write_text(config.read_text().replace(
        '# responders = ["http://ocsp.mo.example.com/"]', f'responders = ["{allowed}", "{DOWN}"]'
    ))  # fmt: skip
    try:
        async with serving(home, FLEET) as service:
            station = await service.station("CS1")
            client, listener = await service.connect(station, station.identity)

            async def status(data: dict[str, str]) -> Any:
                return await client.call(call.GetCertificateStatus(ocsp_request_data=data))

            leaf, station_ca = x509.load_pem_x509_certificates(station.identity[0].read_bytes())
            own = hash_data_for(leaf, station_ca.public_key()).to_ocpp()
            ours = await status({
                "hash_algorithm": own["hashAlgorithm"], "issuer_name_hash": own["issuerNameHash"],
                "issuer_key_hash": own["issuerKeyHash"], "serial_number": own["serialNumber"],
                "responder_url": "http://10.0.0.1/not-asked",
            })  # fmt: skip
            assert ours.status == "Accepted"
            answer = ocsp.load_der_ocsp_response(base64.b64decode(ours.ocsp_result))
            assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD

            for _ in range(2):
                remote = await status(mo.request_data(allowed))
                assert remote.status == "Accepted", remote
            assert mo.requests == 1  # the second from what was kept until nextUpdate
            remote_answer = ocsp.load_der_ocsp_response(base64.b64decode(remote.ocsp_result))
            assert remote_answer.serial_number == mo.contract.serial_number

            for url in ("http://10.0.0.1/ocsp", "http://169.254.169.254/latest",
                        "http://ocsp.unknown.example/", "file:///etc/passwd"):  # fmt: skip
                mo.contract = MoResponder().contract  # not kept: a new certificate each time
                refused = await status(mo.request_data(url))
                assert refused.status == "Failed", url
                assert refused.status_info["reason_code"] == "ResponderNotAllowed", url
            assert mo.requests == 1
            down = await status(mo.request_data(DOWN))
            assert down.status_info["reason_code"] == "ResponderUnreachable"
            listener.cancel()
    finally:
        server.close()
        await http.close()
