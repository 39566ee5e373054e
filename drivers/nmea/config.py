"""The [telematics.gps] section: one NMEA 0183 receiver on a serial port (pydantic and stdlib only)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.schema import Expect


class NmeaConfig(BaseModel):
    """One NMEA 0183 GPS receiver on a serial port (USB dongle, UART HAT, Bluetooth SPP)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["nmea"]
    name: Annotated[str, Field(min_length=1, max_length=64), Expect("a short name for logs, 1-64 characters")] = "gps"
    port: Annotated[str, Field(min_length=1), Expect("a serial device or pyserial URL, e.g. /dev/ttyACM0")]
    baud: Annotated[int, Field(ge=1200, le=921_600), Expect("a baud rate such as 4800, 9600 or 115200")] = 9600
    # Try the usual NMEA rates (starting with `baud`) until a line with a valid checksum arrives.
    autobaud: Annotated[bool, Expect("true or false")] = False
    # A sentence without *hh is accepted unless this is true (old receivers omit it; see mtk-3301 $POLYN).
    require_checksum: Annotated[bool, Expect("true or false")] = False
    # No bytes at all for this long means the receiver is gone: the runner reopens the port.
    silence_timeout_s: Annotated[float, Field(gt=0, le=600), Expect("a number of seconds > 0 and <= 600")] = 5.0
