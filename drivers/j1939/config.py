"""The config of one SAE J1939 CAN bus connection (pydantic and stdlib only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_agent.schema import Expect


class J1939Config(BaseModel):
    """A J1939 bus (250 or 500 kbit/s) through SocketCAN (can0) or an slcan USB adapter (CANable, USBtin)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["j1939"]
    name: Annotated[str, Field(min_length=1, max_length=64), Expect("a short name for logs, 1-64 characters")] = "j1939"
    interface: Annotated[Literal["socketcan", "slcan"], Expect('"socketcan" (can0) or "slcan" (a USB adapter)')] = (
        "socketcan"
    )
    # socketcan: the network interface (can0); slcan: the adapter's serial device (/dev/ttyACM0).
    channel: Annotated[str, Field(min_length=1), Expect('an interface such as "can0", or a serial device for slcan')]
    bitrate: Annotated[Literal[250_000, 500_000], Expect("250000 or 500000 (J1939-11 / J1939-14)")] = 250_000
    # Listen only: the adapter never acknowledges or transmits (slcan `L`). A device that
    # transmits on a truck's bus can disturb it; see the README before turning this off.
    listen_only: Annotated[bool, Expect("true or false")] = True
    # Ask for on-request PGNs (VIN, total fuel used, engine hours) with the Request PGN 59904.
    # Off by default: it transmits, which needs listen_only = false and the fleet's consent.
    request_pgns: Annotated[bool, Expect("true or false")] = False
    request_interval_s: Annotated[float, Field(ge=10, le=3600), Expect("a number of seconds 10-3600")] = 60.0
    # The address our requests come from: 249 is the J1939 address of an off-board diagnostic tool.
    source_address: Annotated[int, Field(ge=0, le=253), Expect("a J1939 source address 0-253")] = 249
    # Readings are handed on at most this often per quantity (EEC1 arrives every 10-20 ms).
    emit_interval_s: Annotated[float, Field(ge=0, le=60), Expect("a number of seconds 0-60")] = 1.0
    # No frame for this long: the bus (ignition) is off or the adapter is gone; the runner reopens.
    silence_timeout_s: Annotated[float, Field(gt=0, le=600), Expect("a number of seconds > 0 and <= 600")] = 5.0
    # slcan adapters reset when the port opens; python-can waits this long before talking to them.
    sleep_after_open_s: Annotated[float, Field(ge=0, le=10), Expect("a number of seconds 0-10")] = 2.0
    # A site's own CAN map (CSV, same columns as drivers/j1939/spns.csv), added to the shipped table:
    # e.g. an electric van's state of charge and energy counters.
    spn_map: Annotated[Path | None, Expect("a path to a CSV of PGN/SPN rows")] = None

    @model_validator(mode="after")
    def _requests_need_transmit(self) -> J1939Config:
        if self.request_pgns and self.listen_only:
            raise ValueError("request_pgns = true transmits on the bus: it needs listen_only = false")
        return self
