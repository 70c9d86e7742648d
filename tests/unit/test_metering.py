"""Meter values: OCPP defaults, multipliers and units; the register in Wh."""

from __future__ import annotations

from datetime import UTC, datetime

from csms.domain.metering import ENERGY_REGISTER, register_wh, samples_of


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
