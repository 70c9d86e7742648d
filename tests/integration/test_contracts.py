"""Authorize with ISO 15118 contract certificates (OCPP C07) end to end: a station on a
real `pkictl serve` presents contract chains of an MO hierarchy made here, whose OCSP
responder is an `openssl ocsp` process on loopback; the MO root is trusted with
`pkictl trust add --role mo-root`. Every row of the status table, and the responder
addresses that must never be asked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from integration_support import Home, initialized_home
from mo_pki import MoPki, pem
from ocpp.v201 import call
from simulated_station import Renewing, pkictl, pkictl_json, serving

from pki.hashdata import hash_data_for

FLEET = {"CS1": ("SN-CS1", 3, False)}
EMAID = "DEABCC123456789"
DOWN = "http://127.0.0.1:9/"  # configured, nothing listens


@dataclass
class Setup:
    station: Renewing
    mo: MoPki
    home: Home
    chains: dict[str, str]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    mo = MoPki(tmp_path)
    home = await initialized_home(tmp_path, FLEET)
    config = home.path / "pkictl.toml"
    config.write_text(config.read_text().replace(
        '# responders = ["http://ocsp.mo.example.com/"]', f'responders = ["{mo.url}", "{DOWN}"]'
    ))  # fmt: skip
    root_file = tmp_path / "mo-root.pem"
    root_file.write_text(pem(mo.root))
    await asyncio.to_thread(pkictl_json, home, "trust", "add", "--role", "mo-root", str(root_file))
    chains = {
        "good": mo.contract(EMAID),
        "revoked": mo.contract(EMAID),
        "expired": mo.contract(EMAID, not_before=datetime.now(UTC) - timedelta(days=40), days=30),
        "other-emaid": mo.contract("DEABCC999999999"),
        "down": mo.contract(EMAID, ocsp_url=DOWN),
        "private": mo.contract(EMAID, ocsp_url="http://10.0.0.1/ocsp"),
        "metadata": mo.contract(EMAID, ocsp_url="http://169.254.169.254/latest/"),
    }
    mo.revoked.add(mo.issued[1].serial_number)
    responder = await asyncio.to_thread(mo.start_responder)
    try:
        async with serving(home, FLEET) as service:
            station = await service.station("CS1")
            client, listener = await service.connect(station, station.identity)
            await asyncio.to_thread(pkictl_json, home, "token", "add", EMAID, "--type", "eMAID")
            yield Setup(client, mo, home, chains)
            listener.cancel()
    finally:
        responder.kill()
        responder.wait()


async def authorize(client: Renewing, emaid: str = EMAID, **contract: Any) -> tuple[str, str]:
    answer = await client.call(call.Authorize(id_token={"id_token": emaid, "type": "eMAID"},
                                              **contract))  # fmt: skip
    return answer.certificate_status, answer.id_token_info["status"]


def tampered(chain: str) -> str:
    """The contract certificate with one bit of its signature flipped."""
    leaf, *rest = x509.load_pem_x509_certificates(chain.encode())
    der = bytearray(leaf.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01
    return pem(x509.load_der_x509_certificate(bytes(der)), *rest)


async def test_contract_chains_are_answered_as_c07_says(setup: Setup, tmp_path: Path) -> None:
    client, chains = setup.station, setup.chains
    expected = {
        "good": ("Accepted", "Accepted"),
        "revoked": ("CertificateRevoked", "Invalid"),
        "expired": ("CertificateExpired", "Expired"),
        "other-emaid": ("CertChainError", "Invalid"),  # CN is not the idToken
        "down": ("CertChainError", "Invalid"),  # no revocation status: fails closed
        "private": ("CertChainError", "Invalid"),  # never asked
        "metadata": ("CertChainError", "Invalid"),  # never asked
    }
    for name, answer in expected.items():
        assert await authorize(client, certificate=chains[name]) == answer, name
    assert await authorize(client, certificate=tampered(chains["good"])) == (
        "SignatureError", "Invalid",
    )  # fmt: skip
    stranger = MoPki(tmp_path, label="Other MO")  # a hierarchy nobody trusts
    assert await authorize(client, certificate=stranger.contract(EMAID)) == (
        "CertChainError", "Invalid",
    )  # fmt: skip

    await asyncio.to_thread(pkictl_json, setup.home, "token", "block", EMAID, "--type", "eMAID")
    assert await authorize(client, certificate=chains["good"]) == ("ContractCancelled", "Blocked")
    unknown = setup.mo.contract("DEABCC111111111")
    assert await authorize(client, "DEABCC111111111", certificate=unknown) == (
        "CertChainError", "Invalid",  # issued after the responder started: unknown to it
    )  # fmt: skip


async def test_hash_data_alone_is_checked_by_allowed_responders(setup: Setup) -> None:
    client, mo = setup.station, setup.mo
    good, revoked = mo.issued[0], mo.issued[1]

    def hash_data(certificate: x509.Certificate, url: str) -> dict[str, str]:
        data = hash_data_for(certificate, mo.sub2.public_key()).to_ocpp()
        return {"hash_algorithm": data["hashAlgorithm"],
                "issuer_name_hash": data["issuerNameHash"],
                "issuer_key_hash": data["issuerKeyHash"],
                "serial_number": data["serialNumber"], "responder_url": url}  # fmt: skip

    not_asked_yet = mo.issued[3], mo.issued[4]  # nothing kept for them
    for certificate, url, answer in (
        (good, mo.url, ("Accepted", "Accepted")),
        (revoked, mo.url, ("CertificateRevoked", "Invalid")),
        (not_asked_yet[0], "http://169.254.169.254/latest/", ("CertChainError", "Invalid")),
        (not_asked_yet[1], "http://10.0.0.1/", ("CertChainError", "Invalid")),
    ):
        data = [hash_data(certificate, url)]
        assert await authorize(client, iso15118_certificate_hash_data=data) == answer, url
    refused = await asyncio.to_thread(
        pkictl, setup.home, "trust", "add", "--role", "mo-root",
        str(write_pem(setup.home.directory / "sub.pem", mo.sub2)),
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "self-signed root" in refused.output


async def test_get_15118_ev_certificate_fails_without_a_provider(setup: Setup) -> None:
    answer = await setup.station.call(call.Get15118EVCertificate(
        iso15118_schema_version="urn:iso:15118:2:2013:MsgDef", action="Install",
        exi_request="gAQ=",
    ))  # fmt: skip
    assert (answer.status, answer.status_info["reason_code"]) == ("Failed", "NoProvider")


def write_pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_text(pem(certificate))
    return path


async def test_every_contract_refusal_is_logged_with_station_emaid_and_reason(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    """A valid contract (hash data, OCSP good) for a blocked or unknown eMAID is refused
    ContractCancelled: logged like every other refusal (issue 22, item 17)."""
    client, mo = setup.station, setup.mo
    data = hash_data_for(mo.issued[0], mo.sub2.public_key()).to_ocpp()
    entry = {"hash_algorithm": data["hashAlgorithm"], "issuer_name_hash": data["issuerNameHash"],
             "issuer_key_hash": data["issuerKeyHash"], "serial_number": data["serialNumber"],
             "responder_url": mo.url}  # fmt: skip
    caplog.set_level(logging.WARNING, logger="pkictl.contracts")
    assert await authorize(client, iso15118_certificate_hash_data=[entry]) == (
        "Accepted", "Accepted",
    )  # fmt: skip
    assert not [r for r in caplog.records if r.name == "pkictl.contracts"]
    await asyncio.to_thread(pkictl_json, setup.home, "token", "block", EMAID, "--type", "eMAID")
    assert await authorize(client, iso15118_certificate_hash_data=[entry]) == (
        "ContractCancelled", "Blocked",
    )  # fmt: skip
    assert await authorize(client, "DEABCC000000001", iso15118_certificate_hash_data=[entry]) == (
        "ContractCancelled", "Unknown",
    )  # fmt: skip
    assert await authorize(client, certificate=setup.chains["revoked"]) == (
        "CertificateRevoked", "Invalid",
    )  # fmt: skip
    refusals = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "pkictl.contracts"]
    assert refusals == [
        (logging.WARNING, f"CS1: contract of eMAID '{EMAID}' refused: "
                          "ContractCancelled/Blocked (the eMAID is blocked)"),
        (logging.WARNING, "CS1: contract of eMAID 'DEABCC000000001' refused: "
                          "ContractCancelled/Unknown (the eMAID is unknown)"),
        (logging.WARNING, f"CS1: contract of eMAID '{EMAID}' refused: "
                          "CertificateRevoked/Invalid (revoked (OCSP))"),
    ]  # fmt: skip
