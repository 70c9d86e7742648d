"""Get15118EVCertificate (OCPP M02/C07 side): installing or updating a contract
certificate in the EV goes through a contract certificate provider (the MO's, or a
certificate pool service) that answers the EV's EXI request. pkictl has no provider
yet -- that is a later issue -- so with none configured the answer is Failed with
reason code `NoProvider` and the request is logged: never a made-up certificate."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

LOG = logging.getLogger("pkictl.contracts")


@dataclass(frozen=True)
class EvCertificateAnswer:
    accepted: bool
    exi_response: str
    """Base64 EXI from the provider ("" when there is none)."""
    reason_code: str | None = None
    detail: str | None = None


class ContractCertificateProvider(Protocol):
    async def answer(
        self, station_id: str, schema_version: str, action: str, exi_request: str
    ) -> EvCertificateAnswer: ...


@dataclass(frozen=True)
class EvCertificates:
    provider: ContractCertificateProvider | None = None

    async def answer(
        self, station_id: str, schema_version: str, action: str, exi_request: str
    ) -> EvCertificateAnswer:
        if self.provider is None:
            LOG.warning("station %s: Get15118EVCertificate (%s, %s) but no contract "
                        "certificate provider is configured", station_id, action,
                        schema_version)  # fmt: skip
            return EvCertificateAnswer(
                False, "", "NoProvider", "no contract certificate provider is configured"
            )
        return await self.provider.answer(station_id, schema_version, action, exi_request)
