"""The [bench.scanner] section: serial and HID keyboard-wedge scanners (pydantic and stdlib only)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.schema import Expect

Name = Annotated[str, Field(min_length=1, max_length=64), Expect("a short name for logs, 1-64 characters")]
Affix = Annotated[str, Field(max_length=16), Expect('a string of up to 16 characters, e.g. "\\u0002"')]


class SerialScannerConfig(BaseModel):
    """[bench.scanner] kind = "serial": a scanner in CDC-ACM (virtual COM) or RS-232 mode."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["serial"]
    name: Name = "scanner"
    port: Annotated[str, Field(min_length=1), Expect("a serial device or pyserial URL, e.g. /dev/ttyACM0")]
    baud: Annotated[int, Field(ge=300, le=921600), Expect("a baud rate such as 9600 or 115200")] = 9600
    prefix: Affix = ""
    suffix: Affix = ""
    terminator: Annotated[Literal["\r", "\n", "\r\n"], Expect('"\\r", "\\n" or "\\r\\n"')] = "\r"
    encoding: Annotated[Literal["utf-8", "latin-1", "ascii"], Expect('"utf-8", "latin-1" or "ascii"')] = "utf-8"


class HidScannerConfig(BaseModel):
    """[bench.scanner] kind = "hid": a keyboard-wedge scanner read from its Linux input device."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["hid"]
    name: Name = "scanner"
    # /dev/input/eventN, a stable /dev/input/by-id/...-event-kbd link, or the device's name as
    # listed in /proc/bus/input/devices (N: Name="...").
    device: Annotated[str, Field(min_length=1), Expect("an input device path or the scanner's device name")]
    grab: bool = True
    terminator: Annotated[Literal["enter", "tab"], Expect('"enter" or "tab"')] = "enter"
    prefix: Affix = ""
    suffix: Affix = ""


ScannerDriverConfig = SerialScannerConfig | HidScannerConfig
