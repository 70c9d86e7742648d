"""Meter values: OCPP MeterValueType into plain samples, and the energy they add up to.

Pure. OCPP's defaults apply: a sampled value without a measurand is
Energy.Active.Import.Register, without a unit Wh; `unitOfMeasure.multiplier` is a power
of ten.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

ENERGY_REGISTER = "Energy.Active.Import.Register"
TO_WH = {"Wh": 1.0, "kWh": 1000.0}


@dataclass(frozen=True)
class Sample:
    timestamp: datetime
    measurand: str
    phase: str | None
    value: float
    unit: str | None


def samples_of(meter_values: Iterable[Mapping[str, Any]]) -> list[Sample]:
    """MeterValueType dicts (snake_case keys, as the `ocpp` library hands them over)."""
    samples = []
    for meter_value in meter_values:
        timestamp = datetime.fromisoformat(str(meter_value["timestamp"]).replace("Z", "+00:00"))
        for sampled in meter_value["sampled_value"]:
            unit = sampled.get("unit_of_measure") or {}
            multiplier = 10.0 ** int(unit.get("multiplier", 0))
            samples.append(
                Sample(
                    timestamp=timestamp,
                    measurand=sampled.get("measurand", ENERGY_REGISTER),
                    phase=sampled.get("phase"),
                    value=float(sampled["value"]) * multiplier,
                    unit=unit.get("unit", "Wh"),
                )
            )
    return samples


def register_wh(samples: Sequence[Sample]) -> list[tuple[datetime, float]]:
    """The energy register readings in Wh (all phases together), oldest first."""
    readings = [
        (s.timestamp, s.value * TO_WH[s.unit or "Wh"])
        for s in samples
        if s.measurand == ENERGY_REGISTER and s.phase is None and (s.unit or "Wh") in TO_WH
    ]
    return sorted(readings)
