"""Encrypted-file key backend: PKCS#8 PEM under the home's keys/ directory.

Keys are encrypted with cryptography's BestAvailableEncryption (PBES2 with a modern KDF
and AES-256), written atomically (temporary file, fsync, rename) with mode 0600, and
never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from pki.errors import ConflictError, KeyAccessError
from pki.keys import InMemorySigner, KeySpec, Signer

KEY_SUFFIX = ".key.pem"


def atomic_write(path: Path, data: bytes, mode: int = 0o644, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never
    a half-written one. With ``exclusive`` an existing file is never replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive and path.exists():
        raise ConflictError(f"{path} exists; refusing to overwrite it")
    # A unique name: a temporary file left by a crash (whose pid the next run, in a
    # container, may well reuse) must not block every later write.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.chmod(mode)
        if exclusive:
            try:
                path.hardlink_to(temporary)  # fails if path appeared meanwhile
            except FileExistsError:
                raise ConflictError(f"{path} exists; refusing to overwrite it") from None
            temporary.unlink()
        else:
            temporary.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class FileKeyStore:
    def __init__(self, directory: Path, passphrase: bytes | Callable[[], bytes]) -> None:
        """``passphrase`` may be a callable so that it is only looked for when a key is
        first used: listing certificates must not need the CA passphrase."""
        self._directory = directory
        self._passphrase_source = passphrase
        self._open: dict[str, Signer] = {}

    @property
    def _passphrase(self) -> bytes:
        source = self._passphrase_source
        passphrase = source() if callable(source) else source
        if not passphrase:
            raise KeyAccessError("an empty passphrase cannot protect CA keys")
        return passphrase

    def path(self, name: str) -> Path:
        return self._directory / f"{name}{KEY_SUFFIX}"

    def create(self, name: str, spec: KeySpec) -> Signer:
        return self._write(name, spec, exclusive=True)

    def replace(self, name: str, spec: KeySpec) -> Signer:
        """The old key stays beside it as NAME.key.pem.replaced (one generation), so a
        renewal that must be undone still can be."""
        path = self.path(name)
        if not path.exists():
            raise KeyAccessError(f"key file {path} is missing")
        previous = path.with_name(path.name + ".replaced")
        atomic_write(previous, path.read_bytes(), 0o600)
        return self._write(name, spec, exclusive=False)

    def _write(self, name: str, spec: KeySpec, *, exclusive: bool) -> Signer:
        key = spec.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.path(name), pem, 0o600, exclusive=exclusive)
        signer = InMemorySigner(name, key)
        self._open[name] = signer
        return signer

    def open(self, name: str) -> Signer:
        if name in self._open:
            return self._open[name]
        path = self.path(name)
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise KeyAccessError(f"key file {path} is missing") from None
        except OSError as exc:
            raise KeyAccessError(f"key file {path} cannot be read: {exc.strerror}") from None
        try:
            key = serialization.load_pem_private_key(pem, password=self._passphrase)
        except (ValueError, TypeError):
            raise KeyAccessError(
                f"key file {path} cannot be decrypted: wrong passphrase or damaged file"
            ) from None
        signer = InMemorySigner(name, key)
        self._open[name] = signer
        return signer
