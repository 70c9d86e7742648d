"""Meter values: OCPP MeterValueType into plain samples, and the energy they add up to.

Pure. OCPP's defaults apply: a sampled value without a measurand is
Energy.Active.Import.Register, without a unit Wh; `unitOfMeasure.multiplier` is a power
of ten.

A sampled value that is no reading is dropped, with the reason, and the rest of the
message kept (`read_samples`): a register (`*.Register`, a meter's running total) below
zero, or a value that is not finite once its multiplier is applied. Such a message is
valid against its JSON schema, and OCPP 2.0.1 Part 2 FR.02 asks for a CALLRESULT then;
a CALLERROR would make the station send the whole transaction event again and finally
discard it (E13.FR.02/04), losing its valid parts. A timestamp that is no date-time
refuses the whole message (`InvalidField`): the readings would have no time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from csms.domain.fields import parse_time

ENERGY_REGISTER = "Energy.Active.Import.Register"
TO_WH = {"Wh": 1.0, "kWh": 1000.0}


@dataclass(frozen=True)
class Sample:
    timestamp: datetime
    measurand: str
    phase: str | None
    value: float
    unit: str | None


@dataclass(frozen=True)
class DroppedSample:
    """A sampled value that is no reading: not stored, not billed."""

    field: str
    """OCPP's path to it, e.g. ``meterValue[0].sampledValue[1].value``."""
    value: object
    reason: str


def read_samples(
    meter_values: Iterable[Mapping[str, Any]], path: str = "meterValue"
) -> tuple[list[Sample], list[DroppedSample]]:
    """MeterValueType dicts (snake_case keys, as the `ocpp` library hands them over):
    the samples, and the sampled values dropped with their reasons. Raises
    `InvalidField` for a timestamp that is no date-time."""
    samples: list[Sample] = []
    dropped: list[DroppedSample] = []
    for m, meter_value in enumerate(meter_values):
        timestamp = parse_time(meter_value["timestamp"], f"{path}[{m}].timestamp")
        for s, sampled in enumerate(meter_value["sampled_value"]):
            field = f"{path}[{m}].sampledValue[{s}].value"
            unit = sampled.get("unit_of_measure") or {}
            measurand = sampled.get("measurand", ENERGY_REGISTER)
            value, reason = _reading(sampled["value"], int(unit.get("multiplier", 0)), measurand)
            if reason is not None:
                dropped.append(DroppedSample(field, sampled["value"], reason))
                continue
            samples.append(
                Sample(
                    timestamp=timestamp,
                    measurand=measurand,
                    phase=sampled.get("phase"),
                    value=value,
                    unit=unit.get("unit", "Wh"),
                )
            )
    return samples, dropped


def _reading(raw: Any, multiplier: int, measurand: str) -> tuple[float, str | None]:
    """The value with its multiplier applied, or why it is no reading."""
    try:
        value = float(raw) * 10.0**multiplier
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        return 0.0, f"not a finite number (multiplier {multiplier})"
    if value < 0 and measurand.endswith(".Register"):
        return 0.0, f"{measurand} below zero: a register only counts up"
    return value, None


def samples_of(meter_values: Iterable[Mapping[str, Any]]) -> list[Sample]:
    """The samples of ``meter_values`` (those `read_samples` keeps)."""
    return read_samples(meter_values)[0]


def register_wh(samples: Sequence[Sample]) -> list[tuple[datetime, float]]:
    """The energy register readings in Wh (all phases together), oldest first."""
    readings = [
        (s.timestamp, s.value * TO_WH[s.unit or "Wh"])
        for s in samples
        if s.measurand == ENERGY_REGISTER and s.phase is None and (s.unit or "Wh") in TO_WH
    ]
    return sorted(readings)
