"""The config of one ELM327 OBD-II adapter (pydantic and stdlib only)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.schema import Expect

Quantity = Literal["speed", "fuel_rate", "fuel_level"]
_ALL_QUANTITIES: tuple[Quantity, ...] = ("speed", "fuel_rate", "fuel_level")


class Elm327Config(BaseModel):
    """One ELM327 (or clone) OBD-II adapter on a serial port (USB, Bluetooth SPP rfcomm, UART)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["elm327"]
    name: Annotated[str, Field(min_length=1, max_length=64), Expect("a short name for logs, 1-64 characters")] = (
        "elm327"
    )
    port: Annotated[str, Field(min_length=1), Expect("a serial device or pyserial URL, e.g. /dev/ttyUSB0")]
    baud: Annotated[int, Field(ge=1200, le=2_000_000), Expect("a baud rate such as 9600, 38400 or 115200")] = 38400
    # Time between the start of two polling cycles (speed, fuel rate, level).
    poll_interval_s: Annotated[float, Field(gt=0, le=3600), Expect("a number of seconds > 0")] = 1.0
    # How long one request may take before it counts as unanswered; the first request after
    # ATSP0 may show SEARCHING... for several seconds while the adapter finds the bus protocol.
    response_timeout_s: Annotated[float, Field(gt=0, le=30), Expect("a number of seconds > 0 and <= 30")] = 5.0
    # ATSP argument: "0" automatic, 1-9 / A-C a fixed OBD protocol (ELM327 data sheet, "ATSP h").
    protocol: Annotated[str, Field(pattern=r"^[0-9A-Ca-c]$"), Expect('one protocol digit "0"-"9" or "A"-"C"')] = "0"
    # What the MAF fallback assumes is burnt: sets the air/fuel ratio and fuel density.
    fuel_type: Annotated[Literal["petrol", "diesel"], Expect('"petrol" or "diesel"')] = "diesel"
    # Overrides of the fuel_type defaults (e.g. a diesel's measured mean lambda * 14.5).
    afr: Annotated[float | None, Field(gt=1, lt=100), Expect("an air/fuel mass ratio between 1 and 100")] = None
    fuel_density_g_l: Annotated[
        float | None, Field(gt=500, lt=1200), Expect("a fuel density in g/L between 500 and 1200")
    ] = None
    pids: Annotated[
        list[Quantity],
        Field(min_length=1),
        Expect('a non-empty list of "speed", "fuel_rate", "fuel_level"'),
    ] = Field(default_factory=lambda: list(_ALL_QUANTITIES))
