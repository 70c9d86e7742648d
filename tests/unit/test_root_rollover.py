"""Root rollover in the CA (pki.rollover): the next root and its link certificate, the
switch that certifies the root's children again, and what stays valid across it; and a
station's part in the campaign (csms.domain.rollover)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from csms.domain.rollover import (
    InvalidTransition,
    StationRolloverEvent,
    StationRolloverState,
    advance,
)
from pki.audit import AuditEvent
from pki.authority import CertificateAuthority
from pki.errors import ConflictError, InputError, NotFoundError
from pki.records import AuthorityRole, RolloverState
from pki.rollover import RootRollover, generation_subject

MakeCsr = Callable[..., str]


def cn(certificate: x509.Certificate) -> str:
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


async def test_begin_makes_a_self_signed_next_root_and_a_link_from_the_root_in_force(
    ca: CertificateAuthority,
) -> None:
    old = (await ca.issuer("cso-root")).certificate
    assert old is not None
    rollover = await RootRollover(ca).begin("cso-root", "test")

    root, link = rollover.certificate(), rollover.link()
    assert cn(root) == f"{cn(old)} G2"
    root.verify_directly_issued_by(root)
    assert (link.subject, link.public_key()) == (root.subject, root.public_key())
    link.verify_directly_issued_by(old)
    assert link.not_valid_after_utc <= old.not_valid_after_utc
    assert link.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    # nothing is in force yet: the root and the chains are the old ones
    assert (await ca.store.get_authority("cso-root")).certificate() == old  # type: ignore[union-attr]
    entries = await ca.store.audit_entries()
    assert entries[-1].event.action == "ca.rollover.started"
    with pytest.raises(ConflictError, match="already open"):
        await RootRollover(ca).begin("cso-root", "test")


async def test_the_switch_keeps_issued_station_certificates_valid_under_the_new_root(
    ca: CertificateAuthority, make_csr: MakeCsr
) -> None:
    before = await ca.issue_for_station(
        csr_pem=make_csr(), profile_name="charging-station", station_id="CS001", actor="test"
    )
    rollovers = RootRollover(ca)
    rollover = await rollovers.begin("cso-root", "test")
    result = await rollovers.switch("cso-root", "test", {"forced": False})

    new_root = rollover.certificate()
    assert result.changed[0].name == "cso-root"
    assert {a.name for a in result.changed} >= {"cso-station-ca", "cso-root-ocsp"}
    assert result.rollover.state is RolloverState.SWITCHED
    station_ca = (await ca.store.get_authority("cso-station-ca")).certificate()  # type: ignore[union-attr]
    station_ca.verify_directly_issued_by(new_root)
    before.record.certificate().verify_directly_issued_by(station_ca)  # same name and key

    after = await ca.issue_for_station(
        csr_pem=make_csr(), profile_name="charging-station", station_id="CS001", actor="test"
    )
    leaf, chained_ca = after.chain
    assert chained_ca == station_ca
    leaf.verify_directly_issued_by(station_ca)
    for server in await ca.store.list_authorities():
        if server.role is AuthorityRole.CSMS_SERVER:
            server.certificate().verify_directly_issued_by(new_root)
    assert (await ca.store.get_setting("authorities.revision")) == f"rollover:{rollover.id}"

    with pytest.raises(NotFoundError, match="no rollover of cso-root is open"):
        await rollovers.switch("cso-root", "test", {})
    third = await rollovers.begin("cso-root", "test")
    assert (third.generation, cn(third.certificate()).endswith(" G3")) == (3, True)
    third.link().verify_directly_issued_by(new_root)


async def test_only_the_cso_root_rolls_over_and_an_open_rollover_can_be_abandoned(
    ca: CertificateAuthority,
) -> None:
    rollovers = RootRollover(ca)
    for name in ("v2g-root", "cso-station-ca"):
        with pytest.raises(InputError, match="not a root that pkictl rolls over"):
            await rollovers.begin(name, "test")
    first = await rollovers.begin("cso-root", "test")
    assert (await rollovers.abandon("cso-root", "test")).state is RolloverState.ABANDONED
    again = await rollovers.begin("cso-root", "test")
    assert (again.generation, again.id != first.id) == (3, True)


def test_a_generation_mark_replaces_the_previous_one() -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CPO Root G2"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CPO G2")])  # fmt: skip
    marked = generation_subject(subject, 3)
    assert marked.rfc4514_string() == "O=CPO G2,CN=CPO Root G3"


def test_a_station_is_verified_whenever_its_inventory_shows_the_new_root() -> None:
    for state in StationRolloverState:
        if state is not StationRolloverState.VERIFIED:
            assert advance(state, StationRolloverEvent.VERIFY) is StationRolloverState.VERIFIED
    with pytest.raises(InvalidTransition):
        advance(StationRolloverState.VERIFIED, StationRolloverEvent.MISSING)
    with pytest.raises(InvalidTransition):  # a verified station does not start over
        advance(StationRolloverState.VERIFIED, StationRolloverEvent.RETRY)
    path = [StationRolloverEvent.INSTALL, StationRolloverEvent.ACCEPT, StationRolloverEvent.MISSING,
            StationRolloverEvent.RETRY]  # fmt: skip
    state = StationRolloverState.PENDING
    for event in path:
        state = advance(state, event)
    assert state is StationRolloverState.PENDING


async def test_a_process_that_cached_the_old_root_renews_under_the_new_one(
    ca: CertificateAuthority,
) -> None:
    """`pkictl serve` caches issuers; the switch is made by the CLI, another process."""
    await ca.issuer("cso-root")  # cached
    other = CertificateAuthority(store=ca.store, keys=ca.keys, policy=ca.policy,
                                 clock=ca.clock, identity=ca.identity)  # fmt: skip
    rollovers = RootRollover(other)
    rollover = await rollovers.begin("cso-root", "cli")
    await rollovers.switch("cso-root", "cli", {})

    renewed = await ca.renew_server_certificate("csms-server-ec", "daemon")
    renewed.certificate().verify_directly_issued_by(rollover.certificate())
    stale = await ca.store.get_authority("cso-station-ca")
    assert stale is not None
    record = await ca.find_by_serial(stale.certificate().serial_number)
    with pytest.raises(ConflictError, match="changed meanwhile"):  # nothing written over
        await ca.store.renew_authority(
            stale, record, AuditEvent("test", "test", "x"), ca.clock.now(), b"not what it holds"
        )
