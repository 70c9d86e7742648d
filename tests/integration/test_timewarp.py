"""The CI copy of the time-warp fleet simulation (#8, `python -m bench.timewarp`):
2,000 stations (the full run has 10,000), two simulated years.

The real service -- CA, renewal daemon, outbox, handlers, database -- runs on a
simulated clock with in-process stations that behave like EVerest's: factory
certificates expiring in cohorts, stations offline for weeks (two of them through
their whole renewal window), 1 % of CSRs and CertificateSigned answers failing, a node
restart every month, the CSO root rolled over in month 9, the CSMS server certificate
renewed twice. Every pass criterion of the issue is asserted.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.timewarp.cli import simulate
from bench.timewarp.sim import Scenario

pytestmark = pytest.mark.slow
STATIONS = 2_000


async def test_two_simulated_years_no_certificate_expires_unnoticed(tmp_path: Path) -> None:
    sim, verdict = await simulate(Scenario(stations=STATIONS, days=730, long_absences=2), tmp_path)

    refused = verdict["refused_station_hours"]
    assert refused["certificate_caused"] == 0, refused
    # Two stations away through their whole renewal window: alerted on before their
    # certificate expired, admitted expired (Boot Pending) on return and renewed at once.
    away = verdict["offline_across_window"]
    assert away["pass"], away
    assert away["stations"] == 2
    assert away["hours_to_renewal_after_return_max"] < 1
    renewals = verdict["renewals"]
    assert renewals["pass"], renewals
    assert renewals["duplicated"] == 0
    assert renewals["stuck_open"] == 0
    assert renewals["issued"] == renewals["audited"]
    # Every station renewed its factory certificate and then its first own one at least.
    assert renewals["by_state"]["confirmed"] >= 2 * STATIONS
    assert renewals["installed_by_stations"] == renewals["by_state"]["confirmed"]
    spread = verdict["expiry_spread"]  # after the first renewal cycle, jitter and spread
    assert spread["pass"], spread
    assert spread["busiest_share"] <= 0.02
    rollover = verdict["rollover"]
    assert rollover["pass"], rollover
    assert 270 <= rollover["started_day"] <= rollover["switched_day"] < 330
    # The scenario happened as planned: faults, restarts, absences.
    assert sim.tally.restarts == 24
    counts = Counter[str]()
    for station in sim.stations:
        counts.update(station.counts)
    assert counts["csr_faults"] + counts["delivery_faults"] > 0
    if counts["csrs_rejected"]:  # a rejected CSR is sent again (EVerest's resend)
        assert counts["csr_resends"] > 0
    assert counts["offline_periods"] == round(0.05 * STATIONS) + 2  # + the long absences
    # The CSMS server certificates (ECDSA and RSA, 365 days) were renewed before each
    # expiry in the period and the stations kept trusting them: no refusal above.
    assert verdict["server_certificates"]["issued"] >= 2 + 2 * 2
