"""Rolling a root CA over to a new key without cutting anyone off (OCPP M05.FR.09-16).

`begin` makes the next root -- its own key, the same profile, a name that tells the
generations apart ("... G2") -- and a link certificate: the next root's name and key
signed by the root in force, which stations with AdditionalRootCertificateCheck accept
in place of the bare new root. Nothing changes for anyone until `switch`: the root's
authority then takes the new certificate and key, and every certificate it signed
itself (the station CA, the OCSP signer, the CSMS server certificates) is certified
again under it, with the same key and subject. Station certificates already issued
stay valid: their issuer's name and key did not change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pki.audit import AuditEvent
from pki.authority import CertificateAuthority, common_name
from pki.errors import ConflictError, InputError, NotFoundError
from pki.issuance.build import Issuer
from pki.issuance.pipeline import issue_for_key
from pki.records import Authority, AuthorityRole, CertificateRecord, Rollover, RolloverState

GENERATION_MARK = re.compile(r" G[0-9]+$")
ROLLABLE_HIERARCHIES = frozenset({"cso"})
"""The CSO root: the CSMSRootCertificate stations install. A V2G root is the PKI
operator's to roll over in ISO 15118's own way, not an OCPP campaign's."""


def generation_subject(subject: x509.Name, generation: int) -> x509.Name:
    """``subject`` with its common name ending in " G<generation>" (in place of the
    mark of an earlier generation)."""
    attributes = [
        x509.NameAttribute(a.oid, f"{GENERATION_MARK.sub('', str(a.value))} G{generation}")
        if a.oid == x509.NameOID.COMMON_NAME else a
        for a in subject
    ]  # fmt: skip
    return x509.Name([x509.RelativeDistinguishedName([a]) for a in attributes])


@dataclass(frozen=True)
class SwitchResult:
    rollover: Rollover
    changed: tuple[Authority, ...]
    """The root, then each authority certified again under it."""


class RootRollover:
    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca

    async def current(self, name: str) -> Rollover | None:
        """The open rollover of ``name``, else its last one (None: never rolled)."""
        history = await self.ca.store.rollovers(name)
        open_ = [r for r in history if r.state is RolloverState.OPEN]
        latest = open_ or history
        return latest[-1] if latest else None

    async def open_rollover(self, name: str) -> Rollover:
        current = await self.current(name)
        if current is None or current.state is not RolloverState.OPEN:
            raise NotFoundError(f"no rollover of {name} is open; start one with "
                                f"`pkictl ca rollover {name}`")  # fmt: skip
        return current

    async def begin(self, name: str, actor: str) -> Rollover:
        root = await self._root(name)
        history = await self.ca.store.rollovers(name)
        if any(r.state is RolloverState.OPEN for r in history):
            raise ConflictError(f"a rollover of {name} is already open: see `pkictl campaign "
                                "status`; switch or abandon it first")  # fmt: skip
        generation = max((r.generation for r in history), default=1) + 1
        profile = self.ca.policy.profile(root.profile)
        assert profile.key is not None
        now = self.ca.clock.now()
        key_name = f"{name}-g{generation}"
        try:
            signer = self.ca.keys.create(key_name, profile.key)
        except ConflictError:  # made by a start that was cut before its record: unused
            signer = self.ca.keys.open(key_name)
        current = await self.ca.issuer(name)
        assert current.certificate is not None
        subject = generation_subject(current.certificate.subject, generation)
        bindings = self.ca.identity.bindings()
        public_key = signer.public_key()
        next_root = issue_for_key(
            public_key, bindings, self.ca.draft(profile, Issuer(name, None, signer), now),
            subject=subject,
        )  # fmt: skip
        link = issue_for_key(
            public_key, bindings, self.ca.draft(profile, current, now), subject=subject
        )
        rollover = Rollover(
            id=0, authority=name, generation=generation, state=RolloverState.OPEN,
            key_name=key_name, certificate_der=next_root.certificate.public_bytes(Encoding.DER),
            link_der=link.certificate.public_bytes(Encoding.DER),
            previous_der=current.certificate.public_bytes(Encoding.DER), started_at=now,
        )  # fmt: skip
        records = [
            self.ca.record_for(next_root, profile, Issuer(name, None, signer), None),
            self.ca.record_for(link, profile, current, None),
        ]
        event = AuditEvent(
            "ca.rollover.started", actor, f"ca:{name}", "ok",
            {"generation": generation, "root_serial": records[0].serial_hex,
             "root_fingerprint_sha256": records[0].fingerprint_sha256,
             "link_serial": records[1].serial_hex, "subject": records[0].subject_dn},
        )  # fmt: skip
        rollover_id = await self.ca.store.open_rollover(rollover, records, event, now)
        return replace(rollover, id=rollover_id)

    async def switch(self, name: str, actor: str, detail: dict[str, object]) -> SwitchResult:
        """Make the next root the one in force (``detail``, e.g. the stations left
        behind by a forced switch, goes into the audit entry)."""
        rollover = await self.open_rollover(name)
        root = await self._root(name)
        now = self.ca.clock.now()
        new_root = replace(
            root, key_name=rollover.key_name, certificate_der=rollover.certificate_der
        )
        issuer = Issuer(name, rollover.certificate(), self.ca.keys.open(rollover.key_name))
        authorities = await self.ca.store.list_authorities()
        certified = [await self._recertify(child, issuer, now)
                     for child in authorities if child.issuer == name]  # fmt: skip
        # each written only if it is still what was read here (ConflictError otherwise)
        previous = {a.name: a.certificate_der for a in authorities}
        changed = [new_root, *(authority for authority, _ in certified)]
        event = AuditEvent(
            "ca.rollover.switched", actor, f"ca:{name}", "ok",
            {"generation": rollover.generation, **detail,
             "certified_again": {a.name: r.serial_hex for a, r in certified}},
        )  # fmt: skip
        records = [record for _, record in certified]
        await self.ca.store.switch_rollover(
            rollover, [(a, previous[a.name]) for a in changed], records, event, now
        )
        self.ca.forget_authorities()
        switched = replace(rollover, state=RolloverState.SWITCHED, switched_at=now)
        return SwitchResult(switched, tuple(changed))

    async def abandon(self, name: str, actor: str) -> Rollover:
        rollover = await self.open_rollover(name)
        now = self.ca.clock.now()
        event = AuditEvent(
            "ca.rollover.abandoned", actor, f"ca:{name}", "ok",
            {"generation": rollover.generation},
        )  # fmt: skip
        await self.ca.store.abandon_rollover(rollover, event, now)
        return replace(rollover, state=RolloverState.ABANDONED)

    async def _recertify(
        self, child: Authority, issuer: Issuer, now: datetime
    ) -> tuple[Authority, CertificateRecord]:
        profile = self.ca.policy.profile(child.profile)
        assert issuer.certificate is not None
        bindings = {**self.ca.identity.bindings(), "issuer.cn": common_name(issuer.certificate)}
        public_key = child.certificate().public_key()  # the same key; no private key needed
        hosts = self.ca.identity.csms_hosts if child.role is AuthorityRole.CSMS_SERVER else ()
        subject = child.certificate().subject  # the same name: what it signed stays valid
        signed = issue_for_key(
            public_key, bindings, self.ca.draft(profile, issuer, now), hosts=hosts,
            subject=subject,
        )  # fmt: skip
        authority, record = self.ca.authority_entry(
            child.name, child.role, profile, issuer, signed, now
        )
        return replace(authority, key_name=child.key_name), record

    async def _root(self, name: str) -> Authority:
        authority = await self.ca.store.get_authority(name)
        if authority is None:
            raise NotFoundError(f"no CA named {name!r}")
        profile = self.ca.policy.profile(authority.profile)
        if (
            authority.role is not AuthorityRole.ROOT
            or profile.hierarchy not in ROLLABLE_HIERARCHIES
        ):
            raise InputError(
                f"NAME: {name} is not a root that pkictl rolls over (only the CSO root, "
                "the CSMSRootCertificate of stations)"
            )
        return authority
