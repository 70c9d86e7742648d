"""Revoking a certificate, then publishing its CA's next CRL at once: what `pkictl cert
revoke` and the renewal daemon both do, so the CRL on disk never lags a revocation
(the OCSP responder and the CRL endpoint of #5 serve from the same records)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pki.authority import CertificateAuthority
from pki.errors import KeyAccessError, StateError
from pki.records import AuthorityRole, CertificateRecord

LOG = logging.getLogger("pkictl.revocation")


@dataclass(frozen=True)
class Revocations:
    ca: CertificateAuthority
    write_file: Callable[[str, bytes], Path]
    """Writes a file under the home (relative path, content), atomically."""

    async def revoke(
        self, serial: int, reason: str, actor: str
    ) -> tuple[CertificateRecord, x509.CertificateRevocationList | None]:
        """Revoke, then publish the issuing CA's CRL. The revocation stands if the CRL
        cannot be signed (no passphrase): that is logged, and None returned for it."""
        record = await self.ca.revoke(serial, reason, actor)
        assert record.issuer_ca is not None  # the CA refuses what it did not issue
        return record, await self._publish_or_warn(record.issuer_ca, actor)

    async def revoke_all(
        self, serials: Sequence[tuple[int, str]], reason: str, actor: str
    ) -> list[CertificateRecord]:
        """Revoke each (serial, actor) not revoked yet, then publish the CRL of each CA
        concerned once, as ``actor``. A scan that revokes a thousand superseded
        certificates publishes one CRL, not a thousand ever larger ones."""
        revoked = []
        for serial, revoking_actor in serials:
            with contextlib.suppress(StateError):  # already revoked
                revoked.append(await self.ca.revoke(serial, reason, revoking_actor))
        for name in sorted({r.issuer_ca for r in revoked if r.issuer_ca is not None}):
            await self._publish_or_warn(name, actor)
        return revoked

    async def _publish_or_warn(
        self, name: str, actor: str
    ) -> x509.CertificateRevocationList | None:
        """The revocation stands if the CRL cannot be signed (no passphrase)."""
        try:
            revocation_list, _ = await self.publish_crl(name, actor)
        except KeyAccessError as exc:
            LOG.warning("CRL of %s not regenerated (%s): run `pkictl crl %s`", name, exc, name)
            return None
        return revocation_list

    async def refresh_crls(self, actor: str) -> list[str]:
        """Publish the next CRL of every CA whose latest one is past half its validity,
        missing, or from another generation of the CA (a root rollover), so relying
        parties never hold one past its nextUpdate."""
        now = self.ca.clock.now()
        refreshed = []
        for authority in await self.ca.store.list_authorities():
            if authority.role not in (AuthorityRole.ROOT, AuthorityRole.INTERMEDIATE):
                continue
            der = await self.ca.store.latest_crl(authority.name)
            if der is not None:
                latest = x509.load_der_x509_crl(der)
                next_update = latest.next_update_utc or now
                fresh = now < next_update - (next_update - latest.last_update_utc) / 2
                if fresh and latest.issuer == authority.certificate().subject:
                    continue
            await self.publish_crl(authority.name, actor)
            refreshed.append(authority.name)
        return refreshed

    async def publish_crl(
        self, name: str, actor: str
    ) -> tuple[x509.CertificateRevocationList, Path]:
        """Issue the next CRL of CA ``name`` and save it as HOME/crl/NAME.crl."""
        revocation_list = await self.ca.crl(name, actor)
        path = self.write_file(f"crl/{name}.crl", revocation_list.public_bytes(Encoding.DER))
        return revocation_list, path
