"""pkictl.toml: the [serve] table and command-line values over it; the [renewal] and
[ocsp] tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from csms.home import HomeConfig, HomeError, load_config, render_config
from csms.serve_options import ServeOptions
from csms.service import serve_options
from csms.services.renewal_ports import RenewalSettings

CONFIG = HomeConfig("Example CPO", "DE", ("csms.example.com",), "http://x:8080", frozenset({"cso"}))


def write(home: Path, serve_table: str) -> Path:
    home.mkdir(exist_ok=True)
    (home / "pkictl.toml").write_text(render_config(CONFIG) + serve_table, encoding="utf-8")
    return home


def cores(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(count)))


def test_the_rendered_config_reads_back_with_serve_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(write(tmp_path, ""))
    assert config == CONFIG
    cores(monkeypatch, 1)
    assert serve_options(config) == ServeOptions()


@pytest.mark.parametrize(
    ("table", "given", "workers", "count", "expected"),
    [
        ("", None, 1, 2, True),  # auto: a core to spare for the one worker
        ("", None, 1, 1, False),
        ("", None, 2, 2, False),  # auto: two workers take both cores
        ("", None, 2, 4, True),
        ('signing_process = "off"\n', None, 1, 8, False),
        ('signing_process = "on"\n', None, 1, 1, True),
        ('signing_process = "off"\n', "on", 1, 1, True),  # the command line wins
        ('signing_process = "on"\n', "auto", 1, 1, False),
    ],
)
def test_signing_process_auto_on_off(  # noqa: PLR0917 -- the parameters
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    table: str,
    given: str | None,
    workers: int,
    count: int,
    expected: bool,
) -> None:
    cores(monkeypatch, count)
    config = load_config(write(tmp_path, table))
    options = serve_options(config, workers, signing_process=given)
    assert options.signing_process is expected


def test_serve_table_then_command_line(tmp_path: Path) -> None:
    # render_config ends with a commented [serve] table: append keys to it.
    config = load_config(
        write(tmp_path, 'host = "127.0.0.1"\nocpp_port = 9443\nplain_port = 9081\n')
    )
    assert serve_options(config, signing_process="off") == ServeOptions(
        "127.0.0.1", 9443, 8080, 9081
    )
    assert serve_options(config, ocpp_port=7443, host=None, signing_process="off") == ServeOptions(
        "127.0.0.1", 7443, 8080, 9081
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("ocpp_prot = 1\n", "serve.ocpp_prot: unknown key"),
        ('ocpp_port = "8443"\n', "serve.ocpp_port: must be a number"),
        ("http_port = 70000\n", "serve.http_port: 70000 is not a port number"),
        ("plain_port = true\n", "serve.plain_port: must be a number"),
        ('signing_process = "yes"\n', "serve.signing_process: 'yes' is not one of auto, on"),
        ("signing_process = 1\n", "serve.signing_process: must be a string"),
    ],
)
def test_bad_serve_values_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(HomeError, match=message):
        load_config(write(tmp_path, table))


def with_keys(home: Path, table: str, keys: str) -> Path:
    """The rendered config with ``keys`` in its (commented) ``table``."""
    home.mkdir(exist_ok=True)
    text = render_config(CONFIG).replace(f"[{table}]\n", f"[{table}]\n" + keys)
    (home / "pkictl.toml").write_text(text, encoding="utf-8")
    return home


def test_the_renewal_table_configures_the_daemon(tmp_path: Path) -> None:
    config = load_config(with_keys(tmp_path, "renewal", "max_in_flight = 7\nretry_after_s = 60\n"))
    assert config.renewal == {"max_in_flight": 7, "retry_after_s": 60}
    assert RenewalSettings(**config.renewal) == RenewalSettings(max_in_flight=7, retry_after_s=60)
    capped = load_config(with_keys(tmp_path, "renewal", "max_certificates_per_day = 2\n"))
    assert RenewalSettings(**capped.renewal).max_certificates_per_day == 2


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("max_inflight = 1\n", "renewal.max_inflight: unknown key"),
        ("max_attempts = 0\n", "renewal.max_attempts: must be a whole number of at least 1"),
        ('scan_interval_s = "1h"\n', "renewal.scan_interval_s: must be a whole number"),
    ],
)
def test_bad_renewal_values_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(HomeError, match=message):
        load_config(with_keys(tmp_path, "renewal", table))


def test_ocsp_responders_are_http_urls(tmp_path: Path) -> None:
    config = load_config(
        with_keys(tmp_path / "a", "ocsp", 'responders = ["http://ocsp.mo.example/"]\n')
    )
    assert config.ocsp_responders == ("http://ocsp.mo.example/",)
    for keys, message in (
        ('responders = ["ftp://x/"]\n', "ocsp.responders: must be a list of http"),
        ('responder = ["http://x/"]\n', "ocsp: must be a table with only responders"),
    ):
        with pytest.raises(HomeError, match=message):
            load_config(with_keys(tmp_path / "b", "ocsp", keys))
