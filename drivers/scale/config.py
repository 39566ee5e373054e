"""The config of one serial scale or axle-load indicator (pydantic and stdlib only)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.schema import Expect


class ScaleConfig(BaseModel):
    """One scale or axle-load indicator on a serial port."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["scale"]
    name: Annotated[str, Field(min_length=1, max_length=64), Expect("a short name for logs, 1-64 characters")] = "scale"
    port: Annotated[str, Field(min_length=1), Expect("a serial device or pyserial URL, e.g. /dev/ttyUSB0")]
    baud: Annotated[int, Field(ge=300, le=115200), Expect("a baud rate such as 1200, 9600 or 19200")] = 9600
    parity: Annotated[Literal["N", "E", "O"], Expect('"N", "E" or "O"')] = "N"
    stopbits: Annotated[Literal[1, 2], Expect("1 or 2")] = 1
    protocol: Annotated[Literal["mt-sics", "continuous", "auto"], Expect('"mt-sics", "continuous" or "auto"')] = "auto"
    # MT-SICS: ask for a value instead of waiting for a stream. "SI" answers at once (S S stable
    # or S D dynamic); "S" waits for a stable value.
    poll: bool = False
    poll_command: Annotated[Literal["SI", "S"], Expect('"SI" or "S"')] = "SI"
    poll_interval_s: Annotated[float, Field(gt=0, le=3600), Expect("a number of seconds > 0")] = 0.5
    # Nothing heard for this long (stream) or no answer to polls: the device counts as gone.
    # 0 turns this off, for scales that print only when a key is pressed.
    silence_timeout_s: Annotated[float, Field(ge=0, le=3600), Expect("a number of seconds >= 0 (0: never)")] = 10.0
