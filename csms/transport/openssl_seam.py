"""The one place pkictl reaches past Python's ssl module into OpenSSL (ADR 17).

Two things the ssl module cannot do are done here, through ctypes on the ``SSL_CTX *``
of an ``ssl.SSLContext``:

- **Turn the server's session cache off** (``SSL_CTX_set_session_cache_mode(ctx,
  SSL_SESS_CACHE_OFF)``). CPython gives every context a session ID context, so a TLS 1.2
  client that saved its session resumes it by session ID -- as the station whose key it
  never proves again. Off, OpenSSL sends no session ID and keeps nothing.
- **See the client certificate OpenSSL refuses** (``SSL_CTX_set_verify`` with a callback
  that returns OpenSSL's own verdict, ``preverify_ok``, unchanged). A certificate that
  fails verification never reaches ``getpeercert``; the callback copies it (DER) with the
  verification error, for the record of the failed handshake.

The ``SSL_CTX *`` is private CPython state: the first field after ``PyObject_HEAD`` of
``PySSLContext`` (CPython 3.11-3.13, ``Modules/_ssl.c``). Before any use the pointer is
checked against what the context reports through the public API -- options, verify
mode, protocol versions -- and every setting is read back. Anything unexpected raises
:class:`SeamUnavailable`; nothing is left half set and nothing is silently skipped. The
libssl and libcrypto functions are looked up through the ``_ssl`` extension module
already loaded, so they are the very library that context lives in.
"""

from __future__ import annotations

import contextlib
import ctypes
import ssl
import sys
import threading
from dataclasses import dataclass
from typing import Any

SUPPORTED_PYTHONS = ((3, 11), (3, 12), (3, 13))
"""CPython versions whose ``PySSLContext`` layout was checked: ``SSL_CTX *ctx`` first."""
MIN_OPENSSL = (1, 1, 1)

# ssl.h
SSL_CTRL_SET_SESS_CACHE_MODE = 44
SSL_CTRL_GET_SESS_CACHE_MODE = 45
SSL_CTRL_GET_MIN_PROTO_VERSION = 130
SSL_CTRL_GET_MAX_PROTO_VERSION = 131
SSL_SESS_CACHE_OFF = 0x0000
SSL_VERIFY_NONE = 0x00
SSL_VERIFY_PEER = 0x01
SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x02

MAX_REJECTED_DER = 64 * 1024
"""A refused certificate longer than this is recorded without its DER (OpenSSL itself
takes up to 100 KiB of certificate chain)."""

VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


class SeamUnavailable(Exception):
    """The SSL_CTX of a context cannot be reached or changed as this module expects; the
    message says what was found."""


@dataclass(frozen=True)
class RejectedCertificate:
    """A client certificate OpenSSL refused, as the verify callback saw it."""

    der: bytes | None
    """The certificate being verified (the leaf); None when it could not be copied."""
    error: int
    """OpenSSL's X509_V_ERR_* code."""
    reason: str
    """X509_verify_cert_error_string of it, e.g. "self-signed certificate"."""
    depth: int
    """Where in the chain the error is (0: the leaf itself)."""


class _Library:
    """libssl / libcrypto as loaded by ``_ssl``, with the prototypes this module uses."""

    def __init__(self) -> None:
        import _ssl  # noqa: PLC0415 -- the extension module ssl has already loaded

        if sys.version_info[:2] not in SUPPORTED_PYTHONS:
            raise SeamUnavailable(
                f"Python {sys.version_info[0]}.{sys.version_info[1]}: the SSL_CTX layout is "
                f"checked for {', '.join(f'{v[0]}.{v[1]}' for v in SUPPORTED_PYTHONS)} only"
            )
        if ssl.OPENSSL_VERSION_INFO[:3] < MIN_OPENSSL:
            raise SeamUnavailable(f"{ssl.OPENSSL_VERSION}: OpenSSL 1.1.1 or newer is needed")
        path = getattr(_ssl, "__file__", None)
        if path is None:
            raise SeamUnavailable("the _ssl module is built into the interpreter: no symbols")
        try:
            lib = ctypes.CDLL(path)
            self.ctrl = _function(
                lib.SSL_CTX_ctrl,
                ctypes.c_long,
                ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p,
            )  # fmt: skip
            self.get_options = _function(lib.SSL_CTX_get_options, ctypes.c_uint64, ctypes.c_void_p)
            self.get_verify_mode = _function(
                lib.SSL_CTX_get_verify_mode, ctypes.c_int, ctypes.c_void_p
            )
            self.get_verify_callback = _function(
                lib.SSL_CTX_get_verify_callback, ctypes.c_void_p, ctypes.c_void_p
            )
            self.set_verify = _function(lib.SSL_CTX_set_verify, None,
                                        ctypes.c_void_p, ctypes.c_int, VERIFY_CALLBACK)  # fmt: skip
            self.store_cert = _function(
                lib.X509_STORE_CTX_get0_cert, ctypes.c_void_p, ctypes.c_void_p
            )
            self.store_error = _function(
                lib.X509_STORE_CTX_get_error, ctypes.c_int, ctypes.c_void_p
            )
            self.store_depth = _function(
                lib.X509_STORE_CTX_get_error_depth, ctypes.c_int, ctypes.c_void_p
            )
            self.error_string = _function(
                lib.X509_verify_cert_error_string, ctypes.c_char_p, ctypes.c_long
            )
            self.i2d_x509 = _function(lib.i2d_X509, ctypes.c_int,
                                      ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p))  # fmt: skip
        except (OSError, AttributeError) as exc:
            raise SeamUnavailable(f"libssl functions not reachable through {path}: {exc}") from None


def _function(function: Any, restype: object, *argtypes: object) -> Any:
    function.restype = restype
    function.argtypes = argtypes
    return function


_library: _Library | SeamUnavailable | None = None
_library_lock = threading.Lock()


def _lib() -> _Library:
    global _library  # noqa: PLW0603 -- loaded once per process
    with _library_lock:
        if _library is None:
            try:
                _library = _Library()
            except SeamUnavailable as exc:
                _library = exc
    if isinstance(_library, SeamUnavailable):
        raise _library
    return _library


_VERIFY_MODES = {
    ssl.CERT_NONE: SSL_VERIFY_NONE,
    ssl.CERT_OPTIONAL: SSL_VERIFY_PEER,
    ssl.CERT_REQUIRED: SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
}


def _protocol_number(version: ssl.TLSVersion, unset: ssl.TLSVersion) -> int:
    """What SSL_CTX_get_{min,max}_proto_version answer for a TLSVersion (0: no bound)."""
    return 0 if version is unset else int(version)


def _pointer_field(context: ssl.SSLContext) -> int:
    """The address of ``PySSLContext.ctx``: right after PyObject_HEAD (whose size,
    object.__basicsize__, differs in debug and free-threaded builds)."""
    return id(context) + object.__basicsize__


def ssl_ctx_pointer(context: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` of ``context``, once it has been shown to be that context's:
    its options, verify mode and protocol bounds, read through OpenSSL, are what the
    ssl module reports. SeamUnavailable otherwise."""
    lib = _lib()
    if not isinstance(context, ssl.SSLContext):
        raise SeamUnavailable(f"{type(context).__name__} is not an ssl.SSLContext")
    pointer = ctypes.c_void_p.from_address(_pointer_field(context)).value
    if not pointer:
        raise SeamUnavailable("no SSL_CTX pointer where PySSLContext keeps it")
    found = (
        lib.get_options(pointer),
        lib.get_verify_mode(pointer),
        lib.ctrl(pointer, SSL_CTRL_GET_MIN_PROTO_VERSION, 0, None),
        lib.ctrl(pointer, SSL_CTRL_GET_MAX_PROTO_VERSION, 0, None),
    )
    expected = (
        int(context.options),
        _VERIFY_MODES[context.verify_mode],
        _protocol_number(context.minimum_version, ssl.TLSVersion.MINIMUM_SUPPORTED),
        _protocol_number(context.maximum_version, ssl.TLSVersion.MAXIMUM_SUPPORTED),
    )
    if found != expected:
        raise SeamUnavailable(
            f"the SSL_CTX found does not answer as the context does (options, verify mode, "
            f"min and max version: {found} != {expected}): the PySSLContext layout changed"
        )
    return pointer


def session_cache_mode(context: ssl.SSLContext) -> int:
    """OpenSSL's session cache mode of ``context`` (SSL_SESS_CACHE_*; the default for a
    server is SSL_SESS_CACHE_SERVER)."""
    return int(_lib().ctrl(ssl_ctx_pointer(context), SSL_CTRL_GET_SESS_CACHE_MODE, 0, None))


def disable_session_cache(context: ssl.SSLContext) -> None:
    """No server-side session cache: a TLS 1.2 ServerHello carries no session ID and an
    offered one is never resumed. Read back; SeamUnavailable if it did not take."""
    lib = _lib()
    pointer = ssl_ctx_pointer(context)
    lib.ctrl(pointer, SSL_CTRL_SET_SESS_CACHE_MODE, SSL_SESS_CACHE_OFF, None)
    mode = lib.ctrl(pointer, SSL_CTRL_GET_SESS_CACHE_MODE, 0, None)
    if mode != SSL_SESS_CACHE_OFF:
        raise SeamUnavailable(f"the session cache mode reads {mode:#x} after turning it off")


# --- the certificate OpenSSL refused --------------------------------------------------

_seen = threading.local()
"""Per thread: the certificate refused during the handshake step running on it. The
verify callback runs inside SSL_do_handshake, on the thread that called it, so the
caller reads what its own step produced (see :func:`take_rejected`)."""


def _record(store_ctx: int) -> None:
    lib = _lib()
    error = int(lib.store_error(store_ctx))
    text = lib.error_string(error)
    der = None
    certificate = lib.store_cert(store_ctx)
    if certificate:
        length = lib.i2d_x509(certificate, None)
        if 0 < length <= MAX_REJECTED_DER:
            buffer = ctypes.create_string_buffer(length)
            cursor = ctypes.c_void_p(ctypes.addressof(buffer))
            if lib.i2d_x509(certificate, ctypes.byref(cursor)) == length:
                der = buffer.raw
    _seen.rejected = RejectedCertificate(
        der=der,
        error=error,
        reason=text.decode("ascii", "replace") if text else f"X509_V_ERR {error}",
        depth=int(lib.store_depth(store_ctx)),
    )


def _on_verify(preverify_ok: int, store_ctx: int) -> int:
    """OpenSSL's verify callback: returns ``preverify_ok`` as given -- the trust
    decision is OpenSSL's alone -- and notes the first failure of a handshake."""
    if not preverify_ok and getattr(_seen, "rejected", None) is None:
        # never let the record change the verdict, whatever happens in it
        with contextlib.suppress(BaseException):
            _record(store_ctx)
    return preverify_ok


_CALLBACK = VERIFY_CALLBACK(_on_verify)
"""Kept for the life of the process: OpenSSL holds a pointer to it."""
_CALLBACK_ADDRESS = ctypes.cast(_CALLBACK, ctypes.c_void_p).value


def observe_rejected_certificates(context: ssl.SSLContext) -> None:
    """Install the verify callback on ``context``, keeping its verify mode. Call it after
    the last ``verify_mode`` assignment (CPython may reset the callback there). Refuses
    (SeamUnavailable) if someone else's callback is installed or if it does not read
    back."""
    lib = _lib()
    pointer = ssl_ctx_pointer(context)
    current = lib.get_verify_callback(pointer)
    if current not in (None, _CALLBACK_ADDRESS):
        raise SeamUnavailable(f"the context already has a verify callback ({current:#x})")
    mode = lib.get_verify_mode(pointer)
    lib.set_verify(pointer, mode, _CALLBACK)
    if lib.get_verify_callback(pointer) != _CALLBACK_ADDRESS:
        raise SeamUnavailable("the verify callback does not read back")
    if lib.get_verify_mode(pointer) != mode:
        raise SeamUnavailable("the verify mode changed with the callback")


def observes_rejected_certificates(context: ssl.SSLContext) -> bool:
    """Whether ``context`` has this module's verify callback."""
    return bool(_lib().get_verify_callback(ssl_ctx_pointer(context)) == _CALLBACK_ADDRESS)


def forget_rejected() -> None:
    """Before a handshake step: nothing refused yet on this thread."""
    _seen.rejected = None


def take_rejected() -> RejectedCertificate | None:
    """After a handshake step failed: the certificate its verify callback refused, if
    one was (on this thread), and forget it."""
    rejected: RejectedCertificate | None = getattr(_seen, "rejected", None)
    _seen.rejected = None
    return rejected
