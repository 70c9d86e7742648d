"""Full TLS handshakes/s of the OCPP endpoint's server context, with and without what
the OpenSSL seam (csms/transport/openssl_seam.py, ADR 17) changes: the session cache
turned off, and the verify callback that notes refused certificates.

The server is the real ``server_context`` behind an asyncio TLS server (as `pkictl
serve` has it, without the websocket layer) in a child process; the client is
`openssl s_time -new` presenting a station certificate (every connection a full
handshake with client authentication). Reported: handshakes/s as s_time counts them,
and the server process's CPU time per handshake -- the figure that a shared, busy
machine disturbs least. Variants alternate, ``--rounds`` times each, so
a busy machine slows each alike. Throwaway EC certificates in a temporary directory.

    python -m bench.tls_handshakes --version 1.2 --rounds 5 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import re
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PASSPHRASE = b"bench-passphrase"
VARIANTS = ("seam-off", "cache-off", "cache-off+callback")
"""seam-off: the context as before ADR 17 (session cache on, no verify callback)."""


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    ca: bool,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signer = issuer if issuer else (name, key)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )  # fmt: skip
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def _write(directory: Path) -> dict[str, Path]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("bench CA", ca_key, None, ca=True)
    files = {}
    for name in ("server", "station"):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(name, key, (ca.subject, ca_key), ca=False)
        files[name] = directory / f"{name}.pem"
        files[name].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        files[f"{name}-key"] = directory / f"{name}.key.pem"
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(PASSPHRASE)
            if name == "server" else serialization.NoEncryption()
        )  # fmt: skip
        files[f"{name}-key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
        )
    files["ca"] = directory / "ca.pem"
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return files


def _serve(files: dict[str, Path], version: str, variant: str, control: Connection) -> None:
    from csms.transport import openssl_seam, tls

    if variant == "seam-off":
        tls.disable_session_cache = lambda _context: None  # type: ignore[attr-defined]
    if variant != "cache-off+callback":
        openssl_seam.observe_rejected_certificates = lambda _context: None  # type: ignore[assignment]
        tls.observe_rejected_certificates = lambda _context: None  # type: ignore[attr-defined]
    context = tls.server_context(
        min_version=version,
        credentials=[tls.ServerCredential(files["server"], files["server-key"])],
        station_cas_pem=files["ca"].read_text(),
        passphrase=lambda: PASSPHRASE,
    )
    handshakes = 0

    async def main() -> None:
        async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal handshakes
            handshakes += 1
            writer.close()

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=context)
        control.send(server.sockets[0].getsockname()[1])
        while await asyncio.to_thread(control.recv) == "mark":
            control.send((handshakes, time.process_time()))

    asyncio.run(main())


def _round(
    files: dict[str, Path], version: str, variant: str, duration: int
) -> tuple[float, float]:
    """(handshakes/s as s_time counts them, server CPU µs per handshake)."""
    control, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(files, version, variant, child))
    server.start()
    try:
        port = control.recv()
        flag = "-tls1_2" if version == "1.2" else "-tls1_3"
        control.send("mark")
        count_before, cpu_before = control.recv()
        out = subprocess.run(
            ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", flag,
             "-time", str(duration), "-cert", str(files["station"]),
             "-key", str(files["station-key"]), "-CAfile", str(files["ca"])],
            capture_output=True, text=True, timeout=duration + 60, check=True,
        ).stdout  # fmt: skip
        time.sleep(0.5)  # the last connections finish on the server
        control.send("mark")
        count_after, cpu_after = control.recv()
        control.send("stop")
        match = re.search(r"(\d+) connections in (\d+) real seconds", out)
        assert match, out
        per_handshake = (cpu_after - cpu_before) / max(count_after - count_before, 1) * 1e6
        return int(match.group(1)) / int(match.group(2)), per_handshake
    finally:
        server.join(10)
        if server.is_alive():
            server.terminate()
            server.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--version", choices=("1.2", "1.3"), default="1.2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as directory:
        files = _write(Path(directory))
        for _ in range(args.rounds):
            for variant in VARIANTS:
                rate, per_handshake = _round(files, args.version, variant, args.duration)
                rates[variant].append(rate)
                cpu[variant].append(per_handshake)
    with contextlib.suppress(BrokenPipeError):
        print(json.dumps({
            "tls": args.version,
            "handshakes_per_s": {v: [round(r, 1) for r in rs] for v, rs in rates.items()},
            "median": {v: round(statistics.median(rs), 1) for v, rs in rates.items()},
            "server_cpu_us_per_handshake": {v: [round(c) for c in cs] for v, cs in cpu.items()},
            "median_cpu_us": {v: round(statistics.median(cs)) for v, cs in cpu.items()},
        }))  # fmt: skip


if __name__ == "__main__":
    main()
