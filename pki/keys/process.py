"""Station CSRs checked and signed in a child process that holds the issuing CA keys.

Why: half of an issuance is cryptography (the CSR's signature check, building and
signing the certificate), and on the event loop it runs on the loop's core while the
machine's other cores idle; a thread does not help, as cryptography holds the GIL while
it builds and signs. A certificate builder cannot cross a process boundary and the key
must be where the signing happens, so the child runs the whole pure pipeline
(`issue_from_csr`: the same code, the same checks in the same order) and the parent
keeps what needs the database: the station lookup, the serial, the record and its audit
entry (ADR 15). Nothing is signed in the child that the parent does not record or
discard: a certificate exists for the CA only once its record is committed.

The two processes speak over the child's stdin and stdout: length-prefixed pickles of
plain values (strings, numbers, datetimes, bytes). Both ends are this module, started
by the parent; no other process can reach the pipes. The passphrase goes over the pipe
too, never on the command line or in the environment.

If the child dies, every request it held runs again inline in the parent (nothing is
signed twice: the child's certificates were never recorded or sent) and requests stay
inline for ``RESPAWN_AFTER_S`` before the child is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import struct
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pki.errors import IssuanceRefused, KeyAccessError, ReasonCode
from pki.issuance.build import Issuer, RevocationUrls
from pki.issuance.pipeline import Draft, Signed, issue_from_csr
from pki.keys.file import FileKeyStore
from pki.policy import Policy

LOG = logging.getLogger(__name__)

HEADER = struct.Struct("!I")
RESULTS_PER_FRAME = 16  # the child answers in frames of this many: fewer wake-ups
RESPAWN_AFTER_S = 5.0
STOP_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 30.0
"""A child that holds a request this long is hung: it is killed and what it held is
signed inline (an answer takes milliseconds)."""

# Request: (id, csr_pem, bindings, profile, issuer, key name, issuer DER, serial, now,
# days, base URL). Result: (id, "ok", DER, validity), (id, "refused", reason, message,
# field) or (id, "error", exception type, text).
Request = tuple[Any, ...]
Result = tuple[Any, ...]


def frame(value: object) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


# --- the parent's side ---------------------------------------------------------------


@dataclass
class _Pending:
    future: asyncio.Future[Signed]
    args: tuple[str, Mapping[str, str | None], Draft]
    asked_at: float


class _Child(asyncio.SubprocessProtocol):
    """Reads the child's result frames as they arrive on its stdout."""

    def __init__(self, owner: SigningProcess) -> None:
        self.owner = owner
        self.buffer = bytearray()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, offset)
            end = offset + HEADER.size + size
            if len(buffer) < end:
                break
            frame_data = buffer[offset + HEADER.size : end]
            for result in pickle.loads(frame_data):  # noqa: S301 -- our child, our pipe
                self.owner.deliver(result)
            offset = end
        del buffer[:offset]

    def process_exited(self) -> None:
        self.owner.child_exited()


class SigningProcess:
    """The `CsrIssuing` of `pkictl serve`: `issue_from_csr` in a child process.

    Drafts it cannot hand over run inline: a self-signed issuer, or a profile from
    another policy than the one the child was started with."""

    def __init__(
        self,
        keys_directory: Path,
        passphrase: Callable[[], bytes],
        policy: Policy,
        *,
        python: str = sys.executable,
    ) -> None:
        self._keys = keys_directory
        self._passphrase = passphrase
        self._policy = policy
        self._python = python
        self._transport: asyncio.SubprocessTransport | None = None
        self._exited = asyncio.Event()
        self._stdin: asyncio.WriteTransport | None = None
        self._starting = asyncio.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._outgoing: list[Request] = []
        self._inline_until = 0.0
        self._closing = False
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return None if self._transport is None else self._transport.get_pid()

    async def issue_from_csr(
        self, csr_pem: str, bindings: Mapping[str, str | None], draft: Draft
    ) -> Signed:
        if (
            self._closing
            or draft.issuer.certificate is None
            or self._policy.profiles.get(draft.profile.name) is not draft.profile
            or time.monotonic() < self._inline_until
        ):
            return issue_from_csr(csr_pem, bindings, draft)
        if self._stdin is None:
            try:
                await self._start()
            except OSError as exc:  # no process to be had (file or process limits)
                LOG.warning("signing process cannot start (%s): signing inline", exc)
                self._inline_until = time.monotonic() + RESPAWN_AFTER_S
                return issue_from_csr(csr_pem, bindings, draft)
        loop = asyncio.get_running_loop()
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Signed] = loop.create_future()
        self._pending[request_id] = _Pending(future, (csr_pem, bindings, draft), time.monotonic())
        issuer = draft.issuer
        assert issuer.certificate is not None
        self._outgoing.append((
            request_id,
            csr_pem,
            dict(bindings),
            draft.profile.name,
            issuer.name,
            issuer.signer.name,
            issuer.certificate.public_bytes(Encoding.DER),
            draft.serial,
            draft.now,
            draft.requested_days,
            None if draft.urls is None else draft.urls.base_url,
        ))  # fmt: skip
        if len(self._outgoing) == 1:
            loop.call_soon(self._flush)  # one frame for what this loop turn asked
        return await future

    def _flush(self) -> None:
        batch, self._outgoing = self._outgoing, []
        if self._stdin is None or self._stdin.is_closing():
            self._run_inline([request[0] for request in batch])
            return
        self._stdin.write(frame(batch))

    async def _start(self) -> None:
        async with self._starting:
            if self._stdin is not None:
                return
            passphrase = self._passphrase()  # KeyAccessError here, in the caller, if none
            loop = asyncio.get_running_loop()
            self._exited = asyncio.Event()
            transport, _ = await loop.subprocess_exec(
                lambda: _Child(self),
                self._python,
                "-m",
                __name__,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,
            )
            stdin = transport.get_pipe_transport(0)
            assert isinstance(stdin, asyncio.WriteTransport)
            stdin.write(frame((str(self._keys), passphrase, self._policy)))
            self._transport, self._stdin = transport, stdin
            loop.call_later(ANSWER_TIMEOUT_S, self._watch, transport)
            LOG.info("signing process %d started", transport.get_pid())

    def _watch(self, transport: asyncio.SubprocessTransport) -> None:
        """Kill the child if the oldest request it holds has waited past the timeout."""
        if transport is not self._transport:
            return  # that child is gone; its successor has a watch of its own
        oldest = next(iter(self._pending.values()), None)
        if oldest is not None and time.monotonic() - oldest.asked_at > ANSWER_TIMEOUT_S:
            LOG.warning(
                "signing process %d has not answered for %.0f s: killed",
                transport.get_pid(),
                ANSWER_TIMEOUT_S,
            )
            transport.kill()  # child_exited signs what it held inline
            return
        asyncio.get_running_loop().call_later(ANSWER_TIMEOUT_S / 4, self._watch, transport)

    def deliver(self, result: Result) -> None:
        pending = self._pending.pop(result[0], None)
        if pending is None or pending.future.done():
            return  # its caller was cancelled
        if result[1] == "ok":
            pending.future.set_result(_signed(result))
        else:
            pending.future.set_exception(_error(result))

    def child_exited(self) -> None:
        transport, self._transport, self._stdin = self._transport, None, None
        self._exited.set()
        code = None if transport is None else transport.get_returncode()
        if transport is not None:
            transport.close()
        if self._closing:
            return
        self.restarts += 1
        self._inline_until = time.monotonic() + RESPAWN_AFTER_S
        LOG.warning(
            "signing process exited (code %s) with %d requests: they run inline; "
            "a new one starts in %.0f s",
            code,
            len(self._pending),
            RESPAWN_AFTER_S,
        )
        self._run_inline(list(self._pending))

    def _run_inline(self, request_ids: list[int]) -> None:
        for request_id in request_ids:
            pending = self._pending.pop(request_id, None)
            if pending is None or pending.future.done():
                continue
            try:
                pending.future.set_result(issue_from_csr(*pending.args))
            except Exception as exc:  # noqa: BLE001 -- handed to the caller, as inline
                pending.future.set_exception(exc)

    async def aclose(self) -> None:
        """Stop the child after the requests it holds are answered (or time out)."""
        self._closing = True
        transport, stdin = self._transport, self._stdin
        if transport is None or stdin is None:
            return
        if self._pending:
            await asyncio.wait([p.future for p in self._pending.values()], timeout=STOP_TIMEOUT_S)
        stdin.close()  # EOF: the child returns
        try:
            await asyncio.wait_for(self._exited.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            LOG.warning("signing process %d did not stop: killed", transport.get_pid())
            transport.kill()
            await self._exited.wait()
        self._run_inline(list(self._pending))


def _signed(result: Result) -> Signed:
    _, _, der, validity = result
    certificate = x509.load_der_x509_certificate(der)
    return Signed(certificate, certificate.subject, validity)


def _error(result: Result) -> Exception:
    if result[1] == "refused":
        _, _, reason, message, field_name = result
        return IssuanceRefused(ReasonCode(reason), message, field=field_name)
    _, _, kind, message = result
    if kind == KeyAccessError.__name__:
        return KeyAccessError(message)
    return RuntimeError(f"signing process: {kind}: {message}")


# --- the child's side ----------------------------------------------------------------


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    if not data:
        return None
    if len(data) != size:
        raise EOFError("the parent closed the pipe inside a frame")
    return data


def _read_frame(stream: BinaryIO) -> Any:
    header = _read_exactly(stream, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    return pickle.loads(_read_exactly(stream, size) or b"")  # noqa: S301 -- our parent


class _Issuers:
    """The issuers the child has signed for, opened once per key and certificate."""

    def __init__(self, keys: FileKeyStore) -> None:
        self._keys = keys
        self._open: dict[tuple[str, str, bytes], Issuer] = {}

    def get(self, name: str, key_name: str, certificate_der: bytes) -> Issuer:
        cache_key = (name, key_name, certificate_der)
        issuer = self._open.get(cache_key)
        if issuer is None:
            certificate = x509.load_der_x509_certificate(certificate_der)
            issuer = Issuer(name, certificate, self._keys.open(key_name))
            self._open[cache_key] = issuer
        return issuer


def _issue(request: Request, issuers: _Issuers, policy: Policy) -> Result:
    (request_id, csr_pem, bindings, profile, name, key, der, serial, now, days, url) = request
    try:
        draft = Draft(
            profile=policy.profiles[profile],
            issuer=issuers.get(name, key, der),
            serial=serial,
            now=now,
            requested_days=days,
            urls=None if url is None else RevocationUrls(url),
        )
        signed = issue_from_csr(csr_pem, bindings, draft)
    except IssuanceRefused as refusal:
        return (request_id, "refused", refusal.reason.value, refusal.message, refusal.field)
    except Exception as exc:  # noqa: BLE001 -- every failure goes back to its request
        return (request_id, "error", type(exc).__name__, str(exc))
    return (request_id, "ok", signed.certificate.public_bytes(Encoding.DER), signed.validity)


def child_main() -> None:
    """Serve requests from stdin until EOF. stdout carries frames only: anything else
    that would print there goes to stderr. Ctrl-C in a terminal reaches the whole
    process group: the parent drains, and this process must answer it until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    source = sys.stdin.buffer
    hello = _read_frame(source)
    if hello is None:
        return
    keys_directory, passphrase, policy = hello
    issuers = _Issuers(FileKeyStore(Path(keys_directory), passphrase))
    while (batch := _read_frame(source)) is not None:
        results: list[Result] = []
        for request in batch:
            results.append(_issue(request, issuers, policy))
            if len(results) == RESULTS_PER_FRAME:
                out.write(frame(results))
                out.flush()
                results = []
        if results:
            out.write(frame(results))
            out.flush()


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        child_main()
