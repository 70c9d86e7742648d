"""Meter values: OCPP defaults, multipliers and units; the register in Wh."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from csms.domain.fields import InvalidField, parse_time
from csms.domain.metering import ENERGY_REGISTER, read_samples, register_wh, samples_of


def test_defaults_multiplier_units_and_phases() -> None:
    samples = samples_of(
        [
            {
                "timestamp": "2026-11-26T12:00:05Z",
                "sampled_value": [{"value": 1.5, "unit_of_measure": {"unit": "kWh"}}],
            },
            {
                "timestamp": "2026-11-26T12:00:00Z",
                "sampled_value": [
                    {"value": 1200},  # Energy.Active.Import.Register in Wh by default
                    {"value": 400, "phase": "L1"},
                    {
                        "value": 7.2,
                        "measurand": "Power.Active.Import",
                        "unit_of_measure": {"unit": "kW", "multiplier": 3},
                    },
                ],
            },
        ]
    )
    assert [s.measurand for s in samples] == [
        ENERGY_REGISTER,
        ENERGY_REGISTER,
        ENERGY_REGISTER,
        "Power.Active.Import",
    ]
    assert samples[3].value == 7200.0
    assert register_wh(samples) == [
        (datetime(2026, 11, 26, 12, 0, tzinfo=UTC), 1200.0),
        (datetime(2026, 11, 26, 12, 0, 5, tzinfo=UTC), 1500.0),
    ]


def test_readings_that_are_no_readings_are_dropped_with_their_reason() -> None:
    samples, dropped = read_samples(
        [
            {
                "timestamp": "2026-11-26T12:00:00+01:00",
                "sampled_value": [
                    {"value": -1e9},  # a register below zero
                    {"value": -2.5, "measurand": "Energy.Reactive.Export.Register"},
                    {"value": -7.5, "measurand": "Power.Active.Import"},  # may be negative
                    {"value": 1e300, "unit_of_measure": {"multiplier": 9}},  # inf once scaled
                    {"value": 5, "unit_of_measure": {"multiplier": 400}},  # 10**400
                    {"value": 12},
                ],
            }
        ]
    )
    assert [(s.measurand, s.value) for s in samples] == [
        ("Power.Active.Import", -7.5),
        (ENERGY_REGISTER, 12.0),
    ]
    assert samples[0].timestamp == datetime(2026, 11, 26, 11, 0, tzinfo=UTC)
    assert [(d.field, d.reason.split(":")[0]) for d in dropped] == [
        ("meterValue[0].sampledValue[0].value", f"{ENERGY_REGISTER} below zero"),
        ("meterValue[0].sampledValue[1].value", "Energy.Reactive.Export.Register below zero"),
        ("meterValue[0].sampledValue[3].value", "not a finite number (multiplier 9)"),
        ("meterValue[0].sampledValue[4].value", "not a finite number (multiplier 400)"),
    ]


@pytest.mark.parametrize(
    "timestamp",
    ["", "yesterday", "2026-11-26T10:00:00", "2026-13-01T00:00:00Z", "2026-11-26T24:00:00Z",
     "0000-01-01T00:00:00Z", "20261126T100000Z", "2026-11-26", "9999-12-31T23:59:59-23:59",
     "2026-11-26T10:00:00.1234567890Z", "２０２６-11-26T10:00:00Z"],
)  # fmt: skip
def test_a_timestamp_that_is_no_date_time_names_its_field(timestamp: str) -> None:
    with pytest.raises(InvalidField) as refused:
        read_samples([{"timestamp": "2026-11-26T10:00:00Z", "sampled_value": []},
                      {"timestamp": timestamp, "sampled_value": [{"value": 1}]}])  # fmt: skip
    assert refused.value.field == "meterValue[1].timestamp"


def test_rfc_3339_date_times_are_read_in_utc() -> None:
    assert parse_time("2026-11-26t10:00:00.5z", "t") == datetime(
        2026, 11, 26, 10, 0, 0, 500_000, tzinfo=UTC
    )
    assert parse_time("2026-11-26T10:00:00-02:30", "t") == datetime(
        2026, 11, 26, 12, 30, tzinfo=UTC
    )
