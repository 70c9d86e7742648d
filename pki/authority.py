"""The certificate authority as a service: identity lookup, pipeline, record, audit.

Everything outside -- storage, keys, time, randomness -- comes in through Protocols, so
the whole CA runs in memory in tests and under a simulated clock in the time-warp run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pki.audit import AuditEvent
from pki.clock import Clock
from pki.crl import build_crl
from pki.errors import (
    ConflictError,
    InputError,
    IssuanceRefused,
    NotFoundError,
    ReasonCode,
    StateError,
)
from pki.issuance.build import Issuer, RevocationUrls
from pki.issuance.pipeline import Draft, Signed, issue_for_key, issue_from_csr
from pki.keys import KeyStore
from pki.ocsp import CertState, Status
from pki.policy import Policy, Profile
from pki.records import (
    REVOCATION_REASONS,
    Authority,
    AuthorityRole,
    CertificateQuery,
    CertificateRecord,
    CertificateSource,
    CertificateStatus,
    Station,
)
from pki.renewal import renewal_due_at
from pki.serials import SerialSource, parse_serial, random_serial, serial_hex
from pki.store import Store

CRL_VALIDITY = timedelta(days=7)
SERIAL_ATTEMPTS = 3
HIERARCHIES = frozenset({"cso", "v2g"})
STATIONS_PER_QUERY = 500
MIN_SERIAL_PREFIX = 4
"""Hex digits a serial prefix needs (`cert show 3f2a`), as git's shortest commit ids."""
MAX_CANDIDATES = 10
"""Serials an ambiguous prefix names."""


@dataclass(frozen=True)
class CsoIdentity:
    organization: str
    country: str
    csms_hosts: tuple[str, ...]
    base_url: str

    def bindings(self) -> dict[str, str | None]:
        return {
            "organization": self.organization,
            "country": self.country,
            "host": self.csms_hosts[0] if self.csms_hosts else None,
        }


@dataclass(frozen=True)
class IssuedCertificate:
    record: CertificateRecord
    chain: tuple[x509.Certificate, ...]
    """Leaf first, then the issuing CAs, never the self-signed root (OCPP A02)."""


def station_bindings(identity: CsoIdentity, station: Station) -> dict[str, str | None]:
    return {
        **identity.bindings(),
        "station.id": station.id,
        "station.serial": station.serial_number,
        "station.secc_id": station.secc_id,
    }


class CsrIssuing(Protocol):
    """Where the pure pipeline runs for a station's CSR: inline by default; `pkictl
    serve` runs it in a child process on another core (pki.keys.process, ADR 15)."""

    async def issue_from_csr(
        self, csr_pem: str, bindings: Mapping[str, str | None], draft: Draft
    ) -> Signed: ...


class InlineIssuing:
    async def issue_from_csr(
        self, csr_pem: str, bindings: Mapping[str, str | None], draft: Draft
    ) -> Signed:
        return issue_from_csr(csr_pem, bindings, draft)


class CertificateAuthority:
    def __init__(
        self,
        *,
        store: Store,
        keys: KeyStore,
        policy: Policy,
        clock: Clock,
        identity: CsoIdentity,
        serials: SerialSource = random_serial,
        csr_issuing: CsrIssuing | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.policy = policy
        self.clock = clock
        self.identity = identity
        self._serials = serials
        self.csr_issuing: CsrIssuing = csr_issuing or InlineIssuing()
        self._urls = RevocationUrls(identity.base_url)
        # Authorities are immutable until a rollover, so the issuing CAs and their chains
        # are cached per process; forget_authorities() drops them when they change.
        self._issuers: dict[str, Issuer] = {}
        self._chains: dict[str, tuple[x509.Certificate, ...]] = {}
        # One lookup at a time: a thousand CSRs arriving together on a cold cache would
        # otherwise each read (and open the key of) the same authority.
        self._loading = asyncio.Lock()

    def forget_authorities(self) -> None:
        """Drop the cached issuers and chains; call after the authorities changed (a
        rollover, or another process re-initializing the database)."""
        self._issuers.clear()
        self._chains.clear()

    # --- hierarchy ------------------------------------------------------------------

    async def initialize(self, hierarchies: frozenset[str], actor: str) -> list[Authority]:
        """Create every CA of the chosen hierarchies, an OCSP signer per CA and the CSMS
        server certificates, and record them all in one audited transaction."""
        if await self.store.list_authorities():
            raise ConflictError("this database already holds a CA hierarchy")
        unknown = hierarchies - HIERARCHIES
        if unknown:
            raise ValueError(f"unknown hierarchies: {', '.join(sorted(unknown))}")
        now = self.clock.now()
        issuers: dict[str, Issuer] = {}
        created = self._create_cas(hierarchies, issuers, now)
        created += self._create_ocsp_signers(issuers, now)
        created += self._create_server_certificates(hierarchies, issuers, now)
        await self.store.record_authorities(
            created,
            AuditEvent(
                action="ca.init",
                actor=actor,
                target=self.identity.organization,
                detail={
                    "organization": self.identity.organization,
                    "country": self.identity.country,
                    "csms_hosts": list(self.identity.csms_hosts),
                    "base_url": self.identity.base_url,
                    "hierarchies": sorted(hierarchies),
                    "policy_digest": self.policy.digest,
                    "authorities": {a.name: r.serial_hex for a, r in created},
                },
            ),
            now,
        )
        self.forget_authorities()
        return [authority for authority, _ in created]

    def _create_cas(
        self, hierarchies: frozenset[str], issuers: dict[str, Issuer], now: datetime
    ) -> list[tuple[Authority, CertificateRecord]]:
        """CA profiles in issuer order; fills ``issuers`` as it goes."""
        created = []
        for profile in self.policy.ca_profiles(hierarchies):
            assert profile.key is not None
            signer = self.keys.create(profile.name, profile.key)
            parent = (
                issuers[profile.issuer] if profile.issuer else Issuer(profile.name, None, signer)
            )
            signed = issue_for_key(
                signer.public_key(), self.identity.bindings(), self.draft(profile, parent, now)
            )
            issuers[profile.name] = Issuer(profile.name, signed.certificate, signer)
            role = AuthorityRole.INTERMEDIATE if profile.issuer else AuthorityRole.ROOT
            created.append(self.authority_entry(profile.name, role, profile, parent, signed, now))
        return created

    def _create_ocsp_signers(
        self, issuers: dict[str, Issuer], now: datetime
    ) -> list[tuple[Authority, CertificateRecord]]:
        """One delegated OCSP signer per CA, so no CA key signs OCSP responses online."""
        profile = self._profile_of_kind("ocsp-signer")
        assert profile.key is not None
        created = []
        for name, issuer in issuers.items():
            assert issuer.certificate is not None
            signer = self.keys.create(f"{name}-ocsp", profile.key)
            bindings = {**self.identity.bindings(), "issuer.cn": common_name(issuer.certificate)}
            signed = issue_for_key(signer.public_key(), bindings, self.draft(profile, issuer, now))
            created.append(
                self.authority_entry(
                    f"{name}-ocsp", AuthorityRole.OCSP_SIGNER, profile, issuer, signed, now
                )
            )
        return created

    def _create_server_certificates(
        self, hierarchies: frozenset[str], issuers: dict[str, Issuer], now: datetime
    ) -> list[tuple[Authority, CertificateRecord]]:
        """The CSMS's TLS server certificates, one per key type of each server profile."""
        created = []
        for profile in self.policy.profiles.values():
            if profile.kind != "server" or profile.hierarchy not in hierarchies:
                continue
            assert profile.issuer is not None
            issuer = issuers[profile.issuer]
            for spec in profile.server_keys:
                name = f"{profile.name}-{spec.algorithm}"
                signer = self.keys.create(name, spec)
                signed = issue_for_key(
                    signer.public_key(),
                    self.identity.bindings(),
                    self.draft(profile, issuer, now),
                    hosts=self.identity.csms_hosts,
                )
                created.append(
                    self.authority_entry(
                        name, AuthorityRole.CSMS_SERVER, profile, issuer, signed, now
                    )
                )
        return created

    async def renew_server_certificate(self, name: str, actor: str) -> Authority:
        """A new key and certificate for the CSMS server certificate ``name`` (same
        profile, hosts and issuer), recorded and audited; the caller publishes it."""
        authority = await self.store.get_authority(name)
        if authority is None or authority.role is not AuthorityRole.CSMS_SERVER:
            raise NotFoundError(f"no CSMS server certificate named {name!r}")
        profile = self.policy.profile(authority.profile)
        spec = next(
            (s for s in profile.server_keys if f"{profile.name}-{s.algorithm}" == name), None
        )
        if spec is None or profile.issuer is None:
            raise ConflictError(f"the policy's {profile.name} profile no longer makes {name}")
        issuer = await self._issuer_in_force(profile.issuer)
        now = self.clock.now()
        signer = self.keys.replace(authority.key_name, spec)
        signed = issue_for_key(
            signer.public_key(), self.identity.bindings(), self.draft(profile, issuer, now),
            hosts=self.identity.csms_hosts,
        )  # fmt: skip
        renewed, record = self.authority_entry(
            name, AuthorityRole.CSMS_SERVER, profile, issuer, signed, now
        )
        event = AuditEvent(
            "csms-server.renewed", actor, f"authority:{name}", "ok",
            {"serial": record.serial_hex, "not_after": record.not_after.isoformat()},
        )  # fmt: skip
        await self.store.renew_authority(renewed, record, event, now, authority.certificate_der)
        return renewed

    async def _issuer_in_force(self, name: str) -> Issuer:
        """The issuer as the database has it now, not as cached: a root rollover in
        another process may have replaced it."""
        self._issuers.pop(name, None)
        self._chains.pop(name, None)
        return await self.issuer(name)

    def _profile_of_kind(self, kind: str) -> Profile:
        for profile in self.policy.profiles.values():
            if profile.kind == kind:
                return profile
        raise ConflictError(f"the policy has no {kind} profile")

    def draft(
        self, profile: Profile, issuer: Issuer, now: datetime, days: int | None = None
    ) -> Draft:
        return Draft(
            profile=profile,
            issuer=issuer,
            serial=self._serials(),
            now=now,
            requested_days=days,
            urls=self._urls,
        )

    def authority_entry(  # noqa: PLR0917 -- always called with all six
        self,
        name: str,
        role: AuthorityRole,
        profile: Profile,
        issuer: Issuer,
        signed: Signed,
        now: datetime,
    ) -> tuple[Authority, CertificateRecord]:
        self_signed = issuer.certificate is None
        authority = Authority(
            name=name,
            role=role,
            profile=profile.name,
            issuer=None if self_signed else issuer.name,
            key_name=name,
            certificate_der=signed.certificate.public_bytes(Encoding.DER),
            created_at=now,
        )
        return authority, self.record_for(signed, profile, issuer, None)

    def record_for(
        self,
        signed: Signed,
        profile: Profile,
        issuer: Issuer,
        station_id: str | None,
    ) -> CertificateRecord:
        return CertificateRecord.from_certificate(
            signed.certificate,
            renew_after=renewal_due_at(*signed.validity, profile.renewal),
            source=CertificateSource.ISSUED,
            issuer_ca=None if issuer.certificate is None else issuer.name,
            profile=profile.name,
            station_id=station_id,
            issuer_name=issuer.issuer_name,
            subject=signed.subject,
            validity=signed.validity,
        )

    async def issuer(self, name: str) -> Issuer:
        cached = self._issuers.get(name)
        if cached is not None:
            return cached
        async with self._loading:
            cached = self._issuers.get(name)
            return cached if cached is not None else await self._load_issuer(name)

    async def _load_issuer(self, name: str) -> Issuer:
        authority = await self.store.get_authority(name)
        if authority is None or authority.role not in (
            AuthorityRole.ROOT,
            AuthorityRole.INTERMEDIATE,
        ):
            raise IssuanceRefused(
                ReasonCode.ISSUER_UNAVAILABLE,
                f"issuing CA {name!r} does not exist",
                field="issuer",
            )
        issuer = Issuer(name, authority.certificate(), self.keys.open(authority.key_name))
        self._issuers[name] = issuer
        return issuer

    async def chain(self, name: str) -> list[x509.Certificate]:
        """The CA ``name`` and its issuers, up to but not including the self-signed root."""
        cached = self._chains.get(name)
        if cached is not None:
            return list(cached)
        async with self._loading:
            cached = self._chains.get(name)
            if cached is None:
                cached = await self._load_chain(name)
        return list(cached)

    async def _load_chain(self, name: str) -> tuple[x509.Certificate, ...]:
        out: list[x509.Certificate] = []
        current: str | None = name
        while current is not None:
            authority = await self.store.get_authority(current)
            if authority is None:
                raise NotFoundError(f"no authority {current!r}")
            if authority.issuer is None:
                break
            out.append(authority.certificate())
            current = authority.issuer
        self._chains[name] = tuple(out)
        return self._chains[name]

    # --- issuance -------------------------------------------------------------------

    async def issue_for_station(
        self,
        *,
        csr_pem: str,
        profile_name: str,
        station_id: str,
        actor: str,
        days: int | None = None,
    ) -> IssuedCertificate:
        now = self.clock.now()
        target = f"station:{station_id}"
        try:
            profile = self._csr_profile(profile_name)
            station = await self.store.get_station(station_id)
            if station is None:
                raise IssuanceRefused(
                    ReasonCode.UNKNOWN_STATION,
                    f"station {station_id!r} is not registered",
                    field="station",
                )
            assert profile.issuer is not None
            issuer = await self.issuer(profile.issuer)
            bindings = station_bindings(self.identity, station)
            certificate, record = await self._sign_and_record(
                csr_pem,
                bindings=bindings,
                profile=profile,
                issuer=issuer,
                now=now,
                days=days,
                station_id=station_id,
                actor=actor,
            )
        except IssuanceRefused as refusal:
            await self.store.append_audit(
                AuditEvent(
                    "certificate.refused",
                    actor,
                    target,
                    "refused",
                    {"profile": profile_name, **refusal.as_dict()},
                ),
                now,
            )
            raise
        return IssuedCertificate(record, (certificate, *await self.chain(issuer.name)))

    def _csr_profile(self, name: str) -> Profile:
        profile = self.policy.profiles.get(name)
        if profile is None:
            raise IssuanceRefused(
                ReasonCode.UNKNOWN_PROFILE,
                f"unknown profile {name!r} (known: {', '.join(sorted(self.policy.profiles))})",
                field="profile",
            )
        if profile.kind != "csr":
            raise IssuanceRefused(
                ReasonCode.PROFILE_NOT_FOR_CSR,
                f"profile {name!r} is not issued from CSRs",
                field="profile",
            )
        return profile

    async def _sign_and_record(
        self,
        csr_pem: str,
        *,
        bindings: Mapping[str, str | None],
        profile: Profile,
        issuer: Issuer,
        now: datetime,
        days: int | None,
        station_id: str,
        actor: str,
    ) -> tuple[x509.Certificate, CertificateRecord]:
        for attempt in range(1, SERIAL_ATTEMPTS + 1):
            signed = await self.csr_issuing.issue_from_csr(
                csr_pem, bindings, self.draft(profile, issuer, now, days)
            )
            record = self.record_for(signed, profile, issuer, station_id)
            event = AuditEvent(
                "certificate.issued",
                actor,
                f"station:{station_id}",
                "ok",
                {
                    "serial": record.serial_hex,
                    "profile": profile.name,
                    "issuer": issuer.name,
                    "subject": record.subject_dn,
                    "not_after": record.not_after.isoformat(),
                    "fingerprint_sha256": record.fingerprint_sha256,
                },
            )
            try:
                await self.store.record_certificate(record, event, now)
            except ConflictError:
                if attempt == SERIAL_ATTEMPTS:
                    raise
                continue
            return signed.certificate, record
        raise AssertionError("unreachable")

    # --- revocation -----------------------------------------------------------------

    async def find_by_serial(self, serial: int) -> CertificateRecord:
        matches = await self.store.find_certificates(CertificateQuery(serial=serial))
        if not matches:
            raise NotFoundError(f"no certificate with serial {serial:x}")
        if len(matches) > 1:
            raise ConflictError(
                f"serial {serial:x} matches {len(matches)} certificates from different issuers: "
                + "; ".join(m.issuer_dn for m in matches)
            )
        return matches[0]

    async def find_by_serial_text(self, text: str) -> CertificateRecord:
        """The certificate whose hex serial is ``text`` or, as git does with commit ids,
        starts with it (at least MIN_SERIAL_PREFIX digits): a prefix that more than one
        serial starts with is refused (InputError), naming them."""
        try:
            serial = parse_serial(text)
        except ValueError as exc:
            raise InputError(f"SERIAL: {exc}") from None
        exact = await self.store.find_certificates(CertificateQuery(serial=serial))
        if exact:
            return await self.find_by_serial(serial)
        prefix = serial_hex(serial) if serial else "0"
        if len(prefix) < MIN_SERIAL_PREFIX:
            raise NotFoundError(f"no certificate with serial {prefix}")
        found = await self.store.find_certificates(
            CertificateQuery(serial_prefix=prefix, limit=MAX_CANDIDATES + 1)
        )
        if not found:
            raise NotFoundError(f"no certificate with serial {prefix} or starting with it")
        if len(found) > 1:
            shown = "; ".join(f"{r.serial_hex} ({r.subject_dn})" for r in found[:MAX_CANDIDATES])
            more = " and more" if len(found) > MAX_CANDIDATES else ""
            raise InputError(
                f"SERIAL: {prefix} is ambiguous: it starts {shown}{more}; give more digits"
            )
        return found[0]

    async def ocsp_status(self, issuer_name_hash: str, serial: int) -> Status:
        """What OCSP says of ``serial`` under this CA: revoked (when, why), good (valid,
        superseded or expired), or unknown when the CA never issued it."""
        state = await self.store.revocation_state(serial, issuer_name_hash)
        if state is None or state.source is not CertificateSource.ISSUED:
            return Status(CertState.UNKNOWN)
        if state.status is CertificateStatus.REVOKED:
            return Status(CertState.REVOKED, state.revoked_at, state.reason)
        return Status(CertState.GOOD)

    async def due_for_renewal(
        self, limit: int, by: datetime | None = None
    ) -> list[CertificateRecord]:
        """Station certificates past their renewal point (policy threshold) now, or by
        ``by``, earliest first: the renewal daemon's work list."""
        return await self.store.due_certificates(by or self.clock.now(), limit)

    async def expiring_in_use(self, within: timedelta, limit: int) -> list[CertificateRecord]:
        """Station certificates still in use (valid, not superseded) that expire within
        ``within``: renewals that have not happened in time."""
        now = self.clock.now()
        return await self.store.expiring_certificates(now, now + within, limit)

    async def station_certificates(self, station_id: str) -> list[CertificateRecord]:
        return await self.store.find_certificates(CertificateQuery(station_id=station_id))

    async def certificates_of_stations(
        self, station_ids: Sequence[str]
    ) -> dict[str, list[CertificateRecord]]:
        """`station_certificates` of each station (none: an empty list), one query per
        500 stations (SQL parameter lists stay bounded)."""
        found: dict[str, list[CertificateRecord]] = {station_id: [] for station_id in station_ids}
        wanted = tuple(found)
        for start in range(0, len(wanted), STATIONS_PER_QUERY):
            query = CertificateQuery(station_ids=wanted[start : start + STATIONS_PER_QUERY])
            for record in await self.store.find_certificates(query):
                if record.station_id is not None:
                    found[record.station_id].append(record)
        return found

    async def issued(self, serial_hex: str) -> IssuedCertificate:
        """A certificate this CA issued, with the chain it was delivered with."""
        record = await self.find_by_serial(int(serial_hex, 16))
        if record.issuer_ca is None:
            raise NotFoundError(f"certificate {serial_hex} was not issued by this CA")
        chain = await self.chain(record.issuer_ca)
        return IssuedCertificate(record, (record.certificate(), *chain))

    async def supersede(self, serial_hex: str, actor: str) -> bool:
        """A renewal replaced this certificate: still valid until revoked or expired, but
        no longer the station's current one. False when it is not valid (any more)."""
        record = await self.find_by_serial(int(serial_hex, 16))
        event = AuditEvent(
            "certificate.superseded", actor, f"station:{record.station_id}", "ok",
            {"serial": record.serial_hex},
        )  # fmt: skip
        return await self.store.supersede_certificate(record, event, self.clock.now())

    async def revoke(self, serial: int, reason: str, actor: str) -> CertificateRecord:
        if reason not in REVOCATION_REASONS:
            raise ValueError(
                f"reason {reason!r} is not an RFC 5280 reason ({', '.join(REVOCATION_REASONS)})"
            )
        record = await self.find_by_serial(serial)
        if record.issuer_ca is None:
            raise StateError(
                f"certificate {record.serial_hex} was not issued by a CA of this instance "
                f"({record.source.value}); it cannot be revoked here"
            )
        now = self.clock.now()
        return await self.store.revoke_certificate(
            record,
            reason,
            AuditEvent(
                "certificate.revoked",
                actor,
                f"serial:{record.serial_hex}",
                "ok",
                {"reason": reason, "issuer": record.issuer_ca, "station": record.station_id},
            ),
            now,
        )

    async def crl(self, issuer_name: str, actor: str) -> x509.CertificateRevocationList:
        """A fresh CRL for ``issuer_name`` with the next number from the database."""
        authority = await self.store.get_authority(issuer_name)
        if authority is None or authority.role not in (
            AuthorityRole.ROOT,
            AuthorityRole.INTERMEDIATE,
        ):
            raise NotFoundError(f"no CA named {issuer_name!r}")
        profile = self.policy.profile(authority.profile)
        number = await self.store.allocate_crl_number(issuer_name)
        now = self.clock.now()
        entries = await self.store.revoked_entries(issuer_name, valid_at=now)
        crl = build_crl(
            issuer=authority.certificate(),
            signer=self.keys.open(authority.key_name),
            entries=entries,
            number=number,
            this_update=now,
            next_update=now + CRL_VALIDITY,
            hash_name=profile.signature_hash,
        )
        await self.store.record_crl(
            issuer_name,
            number,
            crl.public_bytes(Encoding.DER),
            AuditEvent(
                "crl.generated",
                actor,
                f"ca:{issuer_name}",
                "ok",
                {"number": number, "revoked": len(entries)},
            ),
            now,
        )
        return crl


def common_name(certificate: x509.Certificate) -> str:
    values = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if values else certificate.subject.rfc4514_string()
