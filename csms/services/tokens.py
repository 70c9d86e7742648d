"""Local id tokens: who may charge (Authorize, and the idToken of a TransactionEvent).

A token is Accepted only when it is registered and not blocked; an unregistered one is
Unknown. Adding and blocking tokens are audited. An eMAID presented with its contract
certificate is checked by `csms.services.contracts` first, then here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pki.audit import AuditEvent
from pki.clock import Clock
from pki.errors import InputError
from pki.store import Store

ID_TOKEN_TYPES = (
    "Central", "eMAID", "ISO14443", "ISO15693", "KeyCode", "Local", "MacAddress",
    "NoAuthorization",
)  # fmt: skip
MAX_ID_TOKEN = 36  # IdTokenType.idToken maxLength


class TokenStatus(StrEnum):
    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class IdToken:
    id_token: str
    type: str
    status: TokenStatus
    created_at: datetime


class TokenStore(Protocol):
    async def get(self, id_token: str, type_: str) -> IdToken | None: ...
    async def save(self, token: IdToken) -> None: ...
    async def list(self) -> list[IdToken]: ...


class TokenService:
    def __init__(self, tokens: TokenStore, audit: Store, clock: Clock) -> None:
        self._tokens = tokens
        self._audit = audit
        self._clock = clock

    async def status(self, id_token: str, type_: str) -> TokenStatus:
        if type_ == "NoAuthorization":  # free vend: the station charges without a token
            return TokenStatus.ACCEPTED
        token = await self._tokens.get(id_token, type_)
        return token.status if token else TokenStatus.UNKNOWN

    async def add(self, id_token: str, type_: str, actor: str) -> IdToken:
        _check(id_token, type_)
        return await self._set(
            IdToken(id_token, type_, TokenStatus.ACCEPTED, self._clock.now()), actor
        )

    async def block(self, id_token: str, type_: str, actor: str) -> IdToken:
        """Blocked from now on; a token not registered yet is registered blocked (an
        eMAID to refuse before it is ever seen)."""
        _check(id_token, type_)
        token = await self._tokens.get(id_token, type_)
        created = token.created_at if token else self._clock.now()
        return await self._set(IdToken(id_token, type_, TokenStatus.BLOCKED, created), actor)

    async def list(self) -> list[IdToken]:
        return await self._tokens.list()

    async def _set(self, token: IdToken, actor: str) -> IdToken:
        await self._tokens.save(token)
        await self._audit.append_audit(
            AuditEvent(
                f"token.{token.status.lower()}",
                actor,
                f"token:{token.type}:{token.id_token}",
            ),
            self._clock.now(),
        )
        return token


def _check(id_token: str, type_: str) -> None:
    if type_ not in ID_TOKEN_TYPES:
        raise InputError(f"type: {type_!r} is not one of {', '.join(ID_TOKEN_TYPES)}")
    if not 0 < len(id_token) <= MAX_ID_TOKEN or not id_token.isprintable():
        raise InputError(f"id-token: must be 1 to {MAX_ID_TOKEN} printable characters")
