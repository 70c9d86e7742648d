"""The pass criteria of issue #8, judged on a finished simulation."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import text

from bench.timewarp.sim import CERTIFICATE_REFUSALS, SERVER_UNTRUSTED, Simulation
from pki.audit import verify_chain

MAX_DAY_SHARE = 0.02
STUCK_AFTER = timedelta(days=7)


async def judge(sim: Simulation) -> dict[str, Any]:
    """Every criterion with its figures and a verdict (run while the node is open)."""
    assert sim.app is not None
    refused = {cause: round(hours, 1) for cause, hours in sim.tally.refused_hours.items()}
    certificate_causes = {str(c) for c in CERTIFICATE_REFUSALS} | {SERVER_UNTRUSTED}
    refused_hours = sum(h for c, h in sim.tally.refused_hours.items() if c in certificate_causes)
    records = await _issuance_records(sim)
    spread = _expiry_spread(sim)
    return {
        "refused_station_hours": {
            "by_cause": refused,
            "certificate_caused": round(refused_hours, 1),
            "stations": len(sim.tally.refused_stations),
            "pass": refused_hours == 0,
        },
        "offline_across_window": await _expired_offline(sim),
        "renewals": records,
        "expiry_spread": spread,
        "server_certificates": await _server_certificates(sim),
        "rollover": _rollover(sim),
    }


async def _issuance_records(sim: Simulation) -> dict[str, Any]:
    """Renewals neither lost nor duplicated; every issued certificate recorded and
    audited; the station side agrees with the database."""
    assert sim.app is not None
    store = sim.app.store
    now = sim.clock.now()
    async with store.engine.connect() as connection:
        rows = (await connection.execute(text(
            "SELECT station_id, der FROM certificates "
            "WHERE source = 'issued' AND profile = 'charging-station'"))).all()  # fmt: skip
        audited = (await connection.execute(text(
            "SELECT count(*) FROM audit_log WHERE action = 'certificate.issued' "
            "AND target LIKE 'station:%'"))).scalar_one()  # fmt: skip
        states = dict((await connection.execute(text(
            "SELECT state, count(*) FROM renewals GROUP BY state"))).all())  # fmt: skip
        open_rows = (
            await connection.execute(
                text("SELECT updated_at FROM renewals WHERE state NOT IN ('confirmed', 'failed')")
            )
        ).all()
    keys = Counter(
        (station_id, x509.load_der_x509_certificate(der).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
        for station_id, der in rows
    )  # fmt: skip
    duplicated = sum(n - 1 for n in keys.values() if n > 1)
    stuck = sum(1 for (updated_at,) in open_rows if _aware(updated_at) < now - STUCK_AFTER)
    problems = verify_chain(await store.audit_entries(), await store.audit_head())
    installed = sum(s.counts.get("installed", 0) for s in sim.stations)
    return {
        "issued": len(rows),
        "audited": int(audited),
        "installed_by_stations": installed,
        "by_state": {str(k): int(v) for k, v in states.items()},
        "duplicated": duplicated,
        "stuck_open": stuck,
        "audit_chain_ok": not problems,
        "pass": duplicated == 0 and stuck == 0 and not problems and int(audited) == len(rows),
    }


async def _expired_offline(sim: Simulation) -> dict[str, Any]:
    """Stations offline across their whole renewal window: each must have had an alert
    before its certificate expired, and renews at reconnection (expired, admitted under
    the expired-certificate policy with Boot Pending)."""
    assert sim.app is not None
    first_alert: dict[str | None, datetime] = {}
    for alert in await sim.app.alerts.list(limit=1_000_000):
        if alert.code == "certificate-expiring":
            first_alert.setdefault(alert.station_id, alert.raised_at)
    tally = sim.tally
    stations = sorted(tally.expired_at_reconnect)
    missing = [
        s for s in stations
        if s not in first_alert or first_alert[s] >= tally.expired_at_reconnect[s][1]
    ]  # fmt: skip
    not_renewed = [s for s in stations if s not in tally.renewed_after_return]
    hours = list(tally.renewed_after_return.values())
    return {
        "stations": len(stations),
        "without_alert_before_expiry": missing[:20],
        "not_renewed_after_return": not_renewed[:20],
        "hours_to_renewal_after_return_max": round(max(hours), 2) if hours else None,
        "pass": not missing and not not_renewed,
    }


async def _server_certificates(sim: Simulation) -> dict[str, Any]:
    """How often the CSMS server certificates were issued (initial ones included);
    that stations never refused them is in refused_station_hours."""
    assert sim.app is not None
    async with sim.app.store.engine.connect() as connection:
        issued = (
            await connection.execute(
                text("SELECT count(*) FROM certificates WHERE profile = 'csms-server'")
            )
        ).scalar_one()
    return {"issued": int(issued), "pass": None}


def _rollover(sim: Simulation) -> dict[str, Any]:
    """The rollover switched, with every station holding the new root before it."""
    tally, start = sim.tally, sim.scenario.start
    if sim.scenario.rollover_day is None:
        return {"simulated": False, "pass": None}

    def day(at: Any) -> float | None:
        return None if at is None else round((at - start) / timedelta(days=1), 2)

    missing = tally.stations_without_new_root_at_switch
    return {
        "started_day": day(tally.rollover_started),
        "switched_day": day(tally.rollover_switched),
        "stations_without_new_root_at_switch": missing[:20],
        "pass": tally.rollover_switched is not None and not missing,
    }


def _expiry_spread(sim: Simulation) -> dict[str, Any]:
    """No day holds more than 2 % of the fleet's certificate expiries (their current
    certificates at the end, all renewed at least once by then)."""
    days = Counter(s.certificate.not_valid_after_utc.date() for s in sim.stations)
    busiest, count = days.most_common(1)[0]
    share = count / len(sim.stations)
    return {
        "busiest_day": busiest.isoformat(),
        "busiest_share": round(share, 4),
        "pass": share <= MAX_DAY_SHARE,
    }


def _aware(value: datetime | str) -> datetime:
    """A timestamp read with plain SQL (no type processing): naive UTC, maybe text."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
