"""Seeded devices for the sensors example: household water meters and pressure sensors.

Every device belongs to one of three districts. A **water meter** reports, every minute,
the litres its household drew in that minute (0..63) as a ``sumvec`` measurement with
its reading in its district's slot; a **pressure sensor** reports which of six pressure
bands (kPa) it reads as a ``histogram`` bucket ``district * 6 + band``. A group of meters
with a firmware fault reports 500 litres a minute, far outside the range: it encodes the
value anyway and proves honestly over the bad encoding (:class:`FaultySumVec`), which is
what a broken or malicious device can do -- the aggregators must reject it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from datafed.collect import DeviceTask
from datafed.hazmat import Field128, SumVecCircuit
from datafed.protocols import Prio3

DISTRICTS = ("north", "east", "south")
BANDS = ("<250", "250-300", "300-350", "350-400", "400-450", ">=450")
MAX_LITRES = 63
FAULTY_LITRES = 500


@dataclass(frozen=True)
class Device:
    """One device: kind, district, its second within each minute, and its own rates."""

    kind: str  # meter | sensor | faulty
    district: int
    offset: int
    level: float


class FaultySumVec(SumVecCircuit):
    """A meter with a firmware fault: its reading lands unencoded in the first bit slot."""

    def encode(self, measurement: list[int]) -> list[int]:
        bits = [0] * (self.length * self.bits)
        for i, value in enumerate(measurement):
            bits[i * self.bits] = value % self.field.MODULUS
        return bits


def faulty_task(task: DeviceTask) -> DeviceTask:
    """The water-use task as a faulty meter runs it (same VDAF id, invalid encodings)."""
    import dataclasses

    v: Any = task.task.vdaf
    circuit = FaultySumVec(Field128, v.length, v.max_measurement, v.chunk_length)
    vdaf = Prio3(circuit, shares=2, vdaf_id=v.ID)
    return dataclasses.replace(task, task=dataclasses.replace(task.task, vdaf=vdaf))


def devices(meters: int, sensors: int, faulty: int, seed: int) -> list[Device]:
    """The device population, reproducible from ``seed``."""
    rng = random.Random(seed)
    out = [
        Device("meter", rng.randrange(3), rng.randrange(60), rng.uniform(0.5, 1.5))
        for _ in range(meters)
    ]
    out += [
        Device("sensor", rng.randrange(3), rng.randrange(60), rng.uniform(330, 420))
        for _ in range(sensors)
    ]
    out += [Device("faulty", 1, rng.randrange(60), 0.0) for _ in range(faulty)]  # all in east
    return out


def litres(device: Device, minute: int, rng: random.Random) -> int:
    """A household's draw in one minute: more in the morning and evening peaks."""
    hour = (minute // 60) % 24
    peak = 1.0 + 0.8 * math.exp(-((hour - 7) ** 2) / 4) + 0.6 * math.exp(-((hour - 19) ** 2) / 6)
    if rng.random() > 0.18 * peak * device.level:
        return 0
    return min(MAX_LITRES, int(rng.expovariate(1 / 9)) + 1)


def band(device: Device, minute: int, rng: random.Random, dip: bool) -> int:
    """The pressure band a sensor reads (120 kPa lower in the south while a main has burst)."""
    kpa = rng.gauss(device.level, 25) - (120 if dip and device.district == 2 else 0)
    return max(0, min(len(BANDS) - 1, int((kpa - 200) // 50)))


def readings(
    population: list[Device], minute: int, t: int, seed: int, *, dip: bool = False
) -> dict[str, list[tuple[Any, int, int]]]:
    """Every device's reading for one minute starting at ``t``: kind -> (measurement, time, district)."""
    rng = random.Random(seed * 1_000_003 + minute)
    out: dict[str, list[tuple[Any, int, int]]] = {"meter": [], "sensor": [], "faulty": []}
    for d in population:
        at = t + d.offset
        if d.kind == "meter":
            vec = [0, 0, 0]
            vec[d.district] = litres(d, minute, rng)
            out["meter"].append((vec, at, d.district))
        elif d.kind == "sensor":
            out["sensor"].append(
                (d.district * len(BANDS) + band(d, minute, rng, dip), at, d.district)
            )
        else:
            vec = [0, 0, 0]
            vec[d.district] = FAULTY_LITRES
            out["faulty"].append((vec, at, d.district))
    return out
