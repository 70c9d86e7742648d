"""One station's OCPP 2.0.1 session over the `ocpp` library's message routing."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ocpp.charge_point import (
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.exceptions import FormatViolationError, NotSupportedError, OCPPError
from ocpp.exceptions import NotImplementedError as UnknownActionError
from ocpp.messages import Call, CallError, CallResult, MessageType
from ocpp.routing import after, create_route_map, on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action, GenericStatusEnumType, RegistrationStatusEnumType
from websockets.exceptions import ConnectionClosed

from csms.domain.fields import InvalidField
from csms.domain.renewal import CertificateKind
from csms.protocol.framing import MAX_JSON_DEPTH, leading_message_id, nested_too_deep
from csms.protocol.schemas import check_answer, check_numbers, check_request
from csms.services.certificate_status import CertificateStatusService
from csms.services.contracts import ContractAuthorizer
from csms.services.data_transfer import DataTransfers
from csms.services.ev_certificates import EvCertificates
from csms.services.outbox import CallRejected, Outbox, StationGone
from csms.services.renewals import RenewalService
from csms.services.reports import ReportService
from csms.services.security_events import SecurityEvents
from csms.services.sessions import SessionService
from csms.services.tokens import TokenService
from csms.services.transactions import TransactionService


def ocpp_time(at: datetime) -> str:
    """RFC 3339 UTC with a Z, millisecond precision, as OCPP's dateTime wants it."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


KNOWN_ACTIONS = frozenset(a.value for a in Action)
MAX_AFTER_TASKS = 8
"""After-hooks (the renewal scan after a BootNotification) running at once for one
session; past it the session reads the station's next frame once one has ended, so a
station repeating BootNotification cannot pile up tasks."""
LOG = logging.getLogger("pkictl.session")


@dataclass(frozen=True)
class SessionServices:
    """What a station's messages are delegated to."""

    sessions: SessionService
    security_events: SecurityEvents
    tokens: TokenService
    transactions: TransactionService
    reports: ReportService
    renewals: RenewalService
    certificate_status: CertificateStatusService
    contracts: ContractAuthorizer
    ev_certificates: EvCertificates
    data_transfers: DataTransfers = field(default_factory=DataTransfers)


_CLASS_ROUTES: dict[type, dict[str, dict[str, Any]]] = {}


def _class_routes(cls: type) -> dict[str, dict[str, Any]]:
    routes = _CLASS_ROUTES.get(cls)
    if routes is None:
        routes = _CLASS_ROUTES[cls] = create_route_map(cls)
    return routes


class _BoundRoutes(Mapping[str, dict[str, Any]]):
    """The routes of a session's class, bound to the session on lookup. The `ocpp`
    library builds a map of bound methods per connection: ~2 KiB of every idle
    station's memory for what is the same for all of them."""

    __slots__ = ("_session",)

    def __init__(self, session: StationSession) -> None:
        self._session = session

    def _routes(self) -> dict[str, dict[str, Any]]:
        return _class_routes(type(self._session))

    def __getitem__(self, action: str) -> dict[str, Any]:
        return {
            option: handler.__get__(self._session) if callable(handler) else handler
            for option, handler in self._routes()[action].items()
        }

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes())

    def __len__(self) -> int:
        return len(self._routes())


class _ResponseQueue:
    """The answers to our calls, as the `ocpp` library queues them, made when the first
    call is sent: most stations are never called, and an asyncio.Queue costs ~2.5 KiB.
    It holds only answers to the calls in flight (``expect``): an answer to a call
    never sent, or answered already, is dropped and counted -- queued, 4,000 of 60 KB
    kept 231 MB until the connection closed. Closed when the connection ends, so a
    call waiting for its answer fails at once (StationGone) instead of at its timeout."""

    __slots__ = ("_closed", "_dropped", "_expected", "_queue", "_station_id")

    def __init__(self, station_id: str) -> None:
        self._station_id = station_id
        self._queue: asyncio.Queue[Any] | None = None
        self._closed = False
        self._expected: tuple[str, ...] = ()  # the calls in flight (the outbox: one)
        self._dropped = 0

    def _made(self) -> asyncio.Queue[Any]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    def expect(self, unique_id: str) -> None:
        self._expected = (*self._expected, unique_id)

    def forget(self, unique_id: str) -> None:
        self._expected = tuple(i for i in self._expected if i != unique_id)

    def answered(self, frame: list[Any]) -> None:
        """A CALLRESULT or CALLERROR frame: queued if it answers a call in flight."""
        unique_id: str = frame[1]
        if self._closed or unique_id not in self._expected:
            self._drop("answers to calls never sent", unique_id)
            return
        message = _answer(frame)
        if message is None:
            self._drop("malformed answers", unique_id)
            return
        self.forget(unique_id)  # answered once
        self._made().put_nowait(message)

    def _drop(self, what: str, unique_id: str) -> None:
        """Logged at the 1st, 10th, 100th ... drop: a flood does not flood the log."""
        self._dropped += 1
        if str(self._dropped).rstrip("0") == "1":
            LOG.warning("%s: %s dropped (%d so far in this session; last MessageId %r)",
                        self._station_id, what, self._dropped, unique_id[:40])  # fmt: skip

    async def get(self) -> Any:
        message = None if self._closed else await self._made().get()
        if message is None:
            self._closed = True
            raise StationGone(self._station_id)
        return message

    def close(self) -> None:
        if self._dropped:
            LOG.warning("%s: %d answers dropped in the session (to calls never sent, or "
                        "malformed)", self._station_id, self._dropped)  # fmt: skip
            self._dropped = 0
        if not self._closed:
            self._closed = True
            self._made().put_nowait(None)  # wakes a waiting get()


def _answer(frame: list[Any]) -> CallResult | CallError | None:
    """The library's message for a CALLRESULT ([3, id, payload]) or CALLERROR ([4, id,
    code, description, details]) frame; None for a frame of another length."""
    if frame[0] == MessageType.CallResult and len(frame) == CALL_RESULT_LENGTH:
        return CallResult(frame[1], frame[2])
    if frame[0] == MessageType.CallError and len(frame) in CALL_ERROR_LENGTHS:
        return CallError(*frame[1:])
    return None


class StationSession(ChargePoint):
    def __init__(
        self, station_id: str, connection: Any, services: SessionServices, security_profile: int,
        outbox: Outbox | None = None,
    ) -> None:  # fmt: skip
        super().__init__(station_id, connection)
        self._security_profile = security_profile
        self._outbox = outbox
        """Told of the station's messages and boot answer (B02.FR.02: calls to it wait
        for its boot to be answered Accepted)."""
        self._boot_accepted = False
        self._after_tasks: set[asyncio.Task[Any]] = set()
        self._renewals = services.renewals
        self.route_map = _BoundRoutes(self)
        self._response_queue = _ResponseQueue(station_id)
        self._sessions = services.sessions
        self._security_events = services.security_events
        self._tokens = services.tokens
        self._transactions = services.transactions
        self._reports = services.reports
        self._certificate_status = services.certificate_status
        self._contracts = services.contracts
        self._ev_certificates = services.ev_certificates
        self._data_transfers = services.data_transfers

    async def connection_ended(self) -> None:
        """Fail the call in flight now rather than at its response timeout, and let the
        work a message started finish before the session is gone."""
        self._response_queue.close()
        while self._after_tasks:
            await asyncio.gather(*self._after_tasks, return_exceptions=True)

    async def send(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The outbox's Sender for this station: one CSMS-initiated call."""
        try:
            request = getattr(call, action)(**payload)
        except (AttributeError, TypeError) as exc:
            raise CallRejected(f"cannot build {action} from {payload}: {exc}") from None
        unique_id = str(self._unique_id_generator())
        self._response_queue.expect(unique_id)  # before it is sent: answers come fast
        try:
            result = await self.call(request, suppress=False, unique_id=unique_id)
        except OCPPError as error:
            raise CallRejected(f"{error.code}: {error.description}") from None
        except ConnectionClosed:
            raise StationGone(self.id) from None
        finally:
            self._response_queue.forget(unique_id)
        answer: dict[str, Any] = remove_nones(asdict(result))  # as the station sent it
        return answer

    async def _get_specific_response(self, unique_id: str, within_s: float) -> Any:
        """The answer to the call ``unique_id`` within ``within_s`` seconds (TimeoutError;
        the library passes both by position). The library's own recursed once per other
        answer queued and logged each."""
        async with asyncio.timeout(within_s):
            while True:
                response = await self._response_queue.get()
                if response.unique_id == unique_id:
                    return response

    async def route_message(self, raw_msg: str) -> Any:
        """A frame that is not an OCPP-J message is answered RpcFrameworkError (OCPP-J
        4.3), with MessageId "-1" when none can be read; the `ocpp` library would only log
        it. The connection stays open. A frame nested deeper than MAX_JSON_DEPTH is not
        parsed: a CALL is answered FormatViolation (OCPP-J 4.3: its payload is
        syntactically incorrect), an answer dropped, anything else RpcFrameworkError."""
        if nested_too_deep(raw_msg):
            return await self._refuse_too_deep(raw_msg)
        try:
            frame = json.loads(raw_msg)
        except ValueError:
            frame = None
        if (
            isinstance(frame, list)
            and len(frame) >= 3
            and frame[0] in (2, 3, 4)
            and isinstance(frame[1], str)
        ):
            if frame[0] == MessageType.Call and len(frame) == CALL_LENGTH:
                return await self._route_call(Call(*frame[1:]))  # parsed once, not twice
            if (wrong := _wrong_length_call(frame)) is not None:
                return await self._send(wrong)
            if frame[0] != MessageType.Call:
                self._response_queue.answered(frame)
                return None
            return await super().route_message(raw_msg)
        has_id = isinstance(frame, list) and len(frame) > 1 and isinstance(frame[1], str)
        message_id = frame[1] if has_id else "-1"
        await self._send(
            json.dumps([4, message_id, "RpcFrameworkError", "not a valid OCPP-J message", {}])
        )
        return None

    async def _refuse_too_deep(self, raw_msg: str) -> None:
        leading = leading_message_id(raw_msg)
        if leading is not None and leading[0] != MessageType.Call:
            LOG.warning("%s: an answer nested deeper than %d levels dropped (%s)",
                        self.id, MAX_JSON_DEPTH, leading[1][:64])  # fmt: skip
            return
        LOG.warning("%s: a frame nested deeper than %d levels refused", self.id, MAX_JSON_DEPTH)
        description = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
        if leading is None:
            await self._send(json.dumps([4, "-1", "RpcFrameworkError", description, {}]))
        else:
            await self._send(json.dumps([4, leading[1], "FormatViolation", description, {}]))

    async def _route_call(self, msg: Call) -> None:
        """What the `ocpp` library's route_message does with a Call."""
        if self._outbox is not None:
            self._outbox.heard(self.id, self.send, msg.action)
        try:
            await self._handle_call(msg)
        except OCPPError as error:
            LOG.warning("%s: %s refused: %s", self.id, msg.action, error)
            await self._send(msg.create_call_error(error).to_json())

    async def _handle_call(self, msg: Any) -> Any:
        """The `ocpp` library's dispatch, the same steps in the same order (validate the
        request, call the handler with snake_case keywords, validate and send the
        answer, start the after-hook), without its per-message costs: its key case
        conversion by regular expression and its two `inspect.signature` per message
        were an eighth of a message's time (bench/RESULTS.md). Actions we do not handle
        get OCPP-J's codes, which the library swaps: NotImplemented for an action OCPP
        2.0.1 does not know, NotSupported for one it knows that this CSMS does not handle
        (yet)."""
        handlers = self.route_map.get(msg.action)
        if handlers is None or "_on_action" not in handlers:
            error = (
                NotSupportedError(description="Requested Action is recognized but not supported")
                if msg.action in KNOWN_ACTIONS
                else UnknownActionError(description="Requested Action is not known by receiver")
            )
            await self._send(msg.create_call_error(error).to_json())
            return None
        validate = not handlers.get("_skip_schema_validation", False)
        if validate:
            check_request(msg, self._ocpp_version)
            check_numbers(msg)
        arguments = _snake_case(msg.payload)
        handler = handlers["_on_action"]
        try:
            response = await _call(handler, arguments, msg.unique_id)
        except InvalidField as invalid:  # a value its schema allows, but no value: FR.03
            raise FormatViolationError(description=str(invalid)[:255]) from None
        except Exception as exc:
            LOG.exception("%s: handling %s failed", self.id, msg.action)
            await self._send(msg.create_call_error(exc).to_json())
            return None
        answer = _camel_case(remove_nones(serialize_as_dict(response)))
        if validate:
            check_answer(msg.action, answer, self._ocpp_version)
        await self._send(msg.create_call_result(answer).to_json())
        after = handlers.get("_after_action")
        if after is not None:  # in a task of its own, as the library runs it
            while len(self._after_tasks) >= MAX_AFTER_TASKS:  # the station's next frame waits
                await asyncio.wait(tuple(self._after_tasks), return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.ensure_future(_call(after, arguments, msg.unique_id))
            self._after_tasks.add(task)  # kept: the session's end waits for it
            task.add_done_callback(self._after_tasks.discard)
        return response

    @on(Action.boot_notification)
    async def on_boot_notification(self, **_: Any) -> call_result.BootNotification:
        answer = await self._sessions.boot(self.id)
        self._boot_accepted = answer.accepted
        status = (
            RegistrationStatusEnumType.accepted
            if answer.accepted
            else RegistrationStatusEnumType.pending
        )
        return call_result.BootNotification(
            current_time=ocpp_time(answer.at), interval=answer.interval, status=status
        )

    @after(Action.boot_notification)
    async def after_boot_notification(self, **_: Any) -> None:
        """A booted station's certificates are checked at once, after the answer (so a
        TriggerMessage follows the BootNotificationResponse), in a task the session's end
        waits for (`_handle_call`). Calls queued for the station go out from now on
        (all if Accepted, what B02 allows if Pending)."""
        if self._outbox is not None:
            self._outbox.booted(self.id, self.send, accepted=self._boot_accepted)
        try:
            await self._renewals.scan(self.id)
        except Exception:  # the periodic scan tries again; the session goes on
            LOG.exception("renewal scan at the boot of %s failed", self.id)

    @on(Action.heartbeat)
    async def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        session = await self._sessions.seen(self.id)
        return call_result.Heartbeat(current_time=ocpp_time(session.last_seen))

    async def _report(self, action: Action, payload: dict[str, Any]) -> None:
        await self._sessions.seen(self.id)
        await self._reports.received(self.id, action.value, payload)

    @on(Action.status_notification)
    async def on_status_notification(self, **payload: Any) -> call_result.StatusNotification:
        await self._report(Action.status_notification, payload)
        return call_result.StatusNotification()

    @on(Action.notify_event)
    async def on_notify_event(self, **payload: Any) -> call_result.NotifyEvent:
        await self._report(Action.notify_event, payload)
        return call_result.NotifyEvent()

    @on(Action.notify_report)
    async def on_notify_report(self, **payload: Any) -> call_result.NotifyReport:
        await self._report(Action.notify_report, payload)
        return call_result.NotifyReport()

    @on(Action.firmware_status_notification)
    async def on_firmware_status_notification(
        self, **payload: Any
    ) -> call_result.FirmwareStatusNotification:
        await self._report(Action.firmware_status_notification, payload)
        return call_result.FirmwareStatusNotification()

    @on(Action.log_status_notification)
    async def on_log_status_notification(self, **payload: Any) -> call_result.LogStatusNotification:
        await self._report(Action.log_status_notification, payload)
        return call_result.LogStatusNotification()

    @on(Action.security_event_notification)
    async def on_security_event_notification(
        self, type: str, timestamp: str, tech_info: str | None = None, **_: Any
    ) -> call_result.SecurityEventNotification:
        await self._sessions.seen(self.id)
        await self._security_events.record(self.id, type, timestamp, tech_info)
        return call_result.SecurityEventNotification()

    @on(Action.authorize)
    async def on_authorize(
        self, id_token: dict[str, Any], certificate: str | None = None,
        iso15118_certificate_hash_data: list[dict[str, Any]] | None = None, **_: Any,
    ) -> call_result.Authorize:  # fmt: skip
        """C01 for local tokens; C07 for an eMAID with its contract certificate (chain
        or hash data): the contract first, then the eMAID as a token."""
        await self._sessions.seen(self.id)
        if id_token["type"] == "eMAID" and (certificate or iso15118_certificate_hash_data):
            answer = await self._contracts.authorize(
                self.id, id_token["id_token"], certificate, iso15118_certificate_hash_data
            )
            return call_result.Authorize(
                id_token_info={"status": answer.token_status},
                certificate_status=answer.certificate_status,
            )
        status = await self._tokens.status(id_token["id_token"], id_token["type"])
        return call_result.Authorize(id_token_info={"status": status.value})

    @on(Action.get_15118_ev_certificate)
    async def on_get_15118_ev_certificate(
        self, iso15118_schema_version: str, action: str, exi_request: str, **_: Any
    ) -> call_result.Get15118EVCertificate:
        """Through the contract certificate provider; Failed `NoProvider` without one."""
        await self._sessions.seen(self.id)
        answer = await self._ev_certificates.answer(
            self.id, iso15118_schema_version, action, exi_request
        )
        if answer.accepted:
            return call_result.Get15118EVCertificate(
                status="Accepted", exi_response=answer.exi_response
            )
        info = {"reason_code": (answer.reason_code or "Failed")[:20],
                "additional_info": (answer.detail or "")[:512]}  # fmt: skip
        return call_result.Get15118EVCertificate(
            status="Failed", exi_response=answer.exi_response, status_info=info
        )

    @on(Action.transaction_event)
    async def on_transaction_event(self, **payload: Any) -> call_result.TransactionEvent:
        await self._sessions.seen(self.id)
        await self._transactions.event(self.id, payload)
        id_token = payload.get("id_token")
        if id_token is None:
            return call_result.TransactionEvent()
        status = await self._tokens.status(id_token["id_token"], id_token["type"])
        return call_result.TransactionEvent(id_token_info={"status": status.value})

    @on(Action.meter_values)
    async def on_meter_values(
        self, evse_id: int, meter_value: list[dict[str, Any]], **_: Any
    ) -> call_result.MeterValues:
        await self._sessions.seen(self.id)
        await self._transactions.meter_values(self.id, evse_id, meter_value)
        return call_result.MeterValues()

    @on(Action.data_transfer)
    async def on_data_transfer(
        self, vendor_id: str, message_id: str | None = None, **_: Any
    ) -> call_result.DataTransfer:
        """P02: a status, not a CALLERROR -- UnknownVendorId (P02.FR.06) or
        UnknownMessageId (P02.FR.07); no vendor extension is implemented."""
        await self._sessions.seen(self.id)
        status = self._data_transfers.answer(self.id, vendor_id, message_id)
        return call_result.DataTransfer(status=status.value)

    @on(Action.sign_certificate)
    async def on_sign_certificate(
        self, csr: str, certificate_type: str | None = None, **_: Any
    ) -> call_result.SignCertificate:
        """A02/A03. Certificate operations are refused over profile 1 (no TLS); a combined
        certificate (no certificateType) is not issued: its profile is not defined yet."""
        await self._sessions.seen(self.id)
        if self._security_profile < 2:
            return _rejected("InsecureConnection", "certificate operations need TLS")
        if certificate_type is None:
            return _rejected("CombinedNotSupported", "ask for each certificateType separately")
        answer = await self._renewals.sign(self.id, csr, CertificateKind(certificate_type))
        if answer.accepted:
            return call_result.SignCertificate(status=GenericStatusEnumType.accepted)
        return _rejected(answer.reason_code or "Rejected", answer.detail)

    @on(Action.get_certificate_status)
    async def on_get_certificate_status(
        self, ocsp_request_data: dict[str, Any], **_: Any
    ) -> call_result.GetCertificateStatus:
        """M06: our responder for our CAs, an allow-listed responder for the rest."""
        await self._sessions.seen(self.id)
        answer = await self._certificate_status.status(ocsp_request_data)
        if answer.accepted:
            return call_result.GetCertificateStatus(
                status=GenericStatusEnumType.accepted, ocsp_result=answer.ocsp_result
            )
        info = {"reason_code": (answer.reason_code or "Failed")[:20],
                "additional_info": (answer.detail or "")[:512]}  # fmt: skip
        return call_result.GetCertificateStatus(status="Failed", status_info=info)


def _rejected(reason_code: str, detail: str | None) -> call_result.SignCertificate:
    info: dict[str, str] = {"reason_code": reason_code[:20]}
    if detail:
        info["additional_info"] = detail[:512]
    return call_result.SignCertificate(status=GenericStatusEnumType.rejected, status_info=info)


CALL_LENGTH = 4  # [2, id, action, payload]
CALL_RESULT_LENGTH = 3  # [3, id, payload]
CALL_ERROR_LENGTHS = (4, 5)  # [4, id, code, description, details]; details may be left out


def _wrong_length_call(frame: list[Any]) -> str | None:
    """The CALLERROR for a CALL frame without exactly 4 elements (OCPP-J 4.2.1: type,
    MessageId, Action, Payload), which the `ocpp` library drops unanswered:
    RpcFrameworkError, "content of the call is not a valid RPC Request" (OCPP-J 4.3),
    with its MessageId (frames too short to carry one are answered before this)."""
    if frame[0] != MessageType.Call or len(frame) == CALL_LENGTH:
        return None
    description = f"a CALL has {CALL_LENGTH} elements, this one {len(frame)}"
    return json.dumps([4, frame[1], "RpcFrameworkError", description, {}])


@functools.cache
def _wants_unique_id(function: Callable[..., Any]) -> bool:
    return "call_unique_id" in inspect.signature(function).parameters


async def _call(handler: Callable[..., Any], arguments: dict[str, Any], unique_id: str) -> Any:
    """``handler(**arguments)``, with ``call_unique_id`` only if it asks for it (as the
    `ocpp` library does); its signature is read once per function, not per message."""
    function = getattr(handler, "__func__", handler)
    if _wants_unique_id(function):
        response = handler(**arguments, call_unique_id=unique_id)
    else:
        response = handler(**arguments)
    return await response if inspect.isawaitable(response) else response


@functools.lru_cache(maxsize=4096)
def _snake_key(key: str) -> str:
    """The `ocpp` library's conversion of one key, remembered (a few hundred keys occur)."""
    return str(next(iter(camel_to_snake_case({key: None}))))


@functools.lru_cache(maxsize=4096)
def _camel_key(key: str) -> str:
    return str(next(iter(snake_to_camel_case({key: None}))))


def _snake_case(data: Any) -> Any:
    return _convert_keys(data, _snake_key)


def _camel_case(data: Any) -> Any:
    return _convert_keys(data, _camel_key)


def _convert_keys(data: Any, convert: Callable[[str], str]) -> Any:
    """``data`` with every dictionary key, at any depth, passed through ``convert``."""
    if isinstance(data, dict):
        return {convert(key): _convert_keys(value, convert) for key, value in data.items()}
    if isinstance(data, list):
        return [_convert_keys(value, convert) for value in data]
    return data
