"""The contract of the OpenSSL seam (ADR 17): the SSL_CTX pointer it reads is the
context's own, settings read back, and when the layout assumption breaks it refuses
loudly -- conformance mode (TLS 1.2) does not start with session resumption left on."""

from __future__ import annotations

import ctypes
import logging
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from csms.transport import openssl_seam, tls
from csms.transport.openssl_seam import (
    SUPPORTED_PYTHONS,
    SeamUnavailable,
    disable_session_cache,
    observe_rejected_certificates,
    observes_rejected_certificates,
    session_cache_mode,
    ssl_ctx_pointer,
)

SSL_SESS_CACHE_SERVER = 0x0002
HEAD = object.__basicsize__
"""sizeof(PyObject): where PySSLContext keeps its SSL_CTX *."""
SEAM = Path(openssl_seam.__file__)


def test_this_python_is_a_supported_one() -> None:
    assert sys.version_info[:2] in SUPPORTED_PYTHONS


def test_the_pointer_answers_as_the_context_does() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pointer = ssl_ctx_pointer(context)
    assert ssl_ctx_pointer(context) == pointer
    # every setting made through the ssl module is seen through the pointer
    context.options |= ssl.OP_NO_TICKET | ssl.OP_NO_RENEGOTIATION
    context.verify_mode = ssl.CERT_OPTIONAL
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    assert ssl_ctx_pointer(context) == pointer
    assert ssl_ctx_pointer(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)) != pointer


def test_a_pointer_that_is_not_the_contexts_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout check: an SSL_CTX read from the wrong place (here: another context's)
    answers differently from the context, and nothing is done with it."""
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    other.options |= ssl.OP_NO_TICKET
    other.verify_mode = ssl.CERT_REQUIRED
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    monkeypatch.setattr(openssl_seam, "_pointer_field", lambda _: id(other) + HEAD)
    with pytest.raises(SeamUnavailable, match="layout changed"):
        ssl_ctx_pointer(context)
    with pytest.raises(SeamUnavailable, match="layout changed"):
        disable_session_cache(context)
    with pytest.raises(SeamUnavailable, match="layout changed"):
        observe_rejected_certificates(context)
    monkeypatch.undo()
    assert session_cache_mode(other) == SSL_SESS_CACHE_SERVER  # untouched
    assert not observes_rejected_certificates(other)


def test_a_null_pointer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # a fresh server context has no ALPN protocols: the field after SSL_CTX is NULL
    monkeypatch.setattr(
        openssl_seam, "_pointer_field", lambda c: id(c) + HEAD + ctypes.sizeof(ctypes.c_void_p)
    )
    with pytest.raises(SeamUnavailable, match="no SSL_CTX pointer"):
        ssl_ctx_pointer(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))


def test_the_session_cache_is_turned_off_and_reads_back() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert session_cache_mode(context) == SSL_SESS_CACHE_SERVER
    disable_session_cache(context)
    assert session_cache_mode(context) == 0
    assert context.session_stats()["cache_full"] == 0


def test_an_unsupported_python_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openssl_seam, "SUPPORTED_PYTHONS", ((3, 99),))
    monkeypatch.setattr(openssl_seam, "_library", None)
    with pytest.raises(SeamUnavailable, match=r"Python 3\.\d+: the SSL_CTX layout"):
        disable_session_cache(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))


def test_the_verify_callback_is_installed_and_keeps_the_verify_mode() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_OPTIONAL
    assert not observes_rejected_certificates(context)
    observe_rejected_certificates(context)
    assert observes_rejected_certificates(context)
    assert context.verify_mode is ssl.CERT_OPTIONAL
    observe_rejected_certificates(context)  # again: no harm
    assert observes_rejected_certificates(context)


def test_conformance_mode_does_not_start_with_resumption_left_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unavailable(_: ssl.SSLContext) -> None:
        raise SeamUnavailable("the PySSLContext layout changed")

    monkeypatch.setattr(tls, "disable_session_cache", unavailable)
    with pytest.raises(tls.TlsConfigError, match=r"1\.2.*session cache.*layout changed"):
        tls._no_session_cache(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), "1.2")
    monkeypatch.setattr(tls, "_warned", set())
    with caplog.at_level(logging.WARNING, "pkictl.tls"):
        tls._no_session_cache(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), "1.3")
    assert "session cache left on" in caplog.text


CONTRACT = """
import importlib.util, ssl, sys
spec = importlib.util.spec_from_file_location("seam", sys.argv[1])
seam = importlib.util.module_from_spec(spec)
sys.modules["seam"] = seam
spec.loader.exec_module(seam)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.minimum_version = ssl.TLSVersion.TLSv1_2
context.verify_mode = ssl.CERT_OPTIONAL
assert seam.session_cache_mode(context) == 2
seam.disable_session_cache(context)
assert seam.session_cache_mode(context) == 0
seam.observe_rejected_certificates(context)
assert seam.observes_rejected_certificates(context)
print("ok", sys.version_info[:2])
"""


def _installed(version: tuple[int, int]) -> str | None:
    """An interpreter of ``version`` on this machine: pyenv's, else python3.X on PATH
    (not a pyenv shim, which may refuse to run)."""
    major, minor = version
    pyenv = sorted(Path.home().glob(f".pyenv/versions/{major}.{minor}.*/bin/python"))
    if pyenv:
        return str(pyenv[-1])
    found = shutil.which(f"python{major}.{minor}")
    return found if found and "shims" not in Path(found).parts else None


@pytest.mark.parametrize("version", SUPPORTED_PYTHONS, ids=lambda v: f"{v[0]}.{v[1]}")
def test_the_layout_holds_on_each_supported_python(version: tuple[int, int]) -> None:
    """The seam needs only the standard library: run its contract under every supported
    CPython installed here."""
    interpreter = _installed(version)
    if interpreter is None:
        pytest.skip(f"no Python {version[0]}.{version[1]} on this machine")
    result = subprocess.run(
        [interpreter, "-c", CONTRACT, str(SEAM)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


@pytest.mark.parametrize("preverify_ok", [0, 1])
def test_the_verify_callback_returns_openssls_verdict_unchanged(
    monkeypatch: pytest.MonkeyPatch, preverify_ok: int
) -> None:
    """Called through its C thunk as OpenSSL calls it: whatever happens while noting a
    refused certificate, the verdict goes back as it came."""

    def broken(_: int) -> None:
        raise RuntimeError("a bug in the record")

    monkeypatch.setattr(openssl_seam, "_record", broken)
    openssl_seam.forget_rejected()
    assert openssl_seam._CALLBACK(preverify_ok, None) == preverify_ok
    assert openssl_seam.take_rejected() is None


def test_a_refusal_is_noted_once_per_handshake_step(monkeypatch: pytest.MonkeyPatch) -> None:
    noted: list[int] = []

    def record(store_ctx: int) -> None:
        noted.append(store_ctx)
        openssl_seam._seen.rejected = openssl_seam.RejectedCertificate(None, 18, "x", 0)

    monkeypatch.setattr(openssl_seam, "_record", record)
    openssl_seam.forget_rejected()
    for _ in range(3):  # OpenSSL may call again for further errors of the same chain
        assert openssl_seam._on_verify(0, 1234) == 0
    assert openssl_seam._on_verify(1, 1234) == 1
    assert noted == [1234]
    assert openssl_seam.take_rejected() == openssl_seam.RejectedCertificate(None, 18, "x", 0)
    assert openssl_seam.take_rejected() is None
