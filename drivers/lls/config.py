"""The config of one Omnicomm LLS fuel-level sensor on RS-485 (pydantic and stdlib only)."""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.schema import Expect


class LlsConfig(BaseModel):
    """One Omnicomm LLS (or LLS-compatible) level sensor on an RS-485 line, polled by network address."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["lls"]
    name: Annotated[str, Field(min_length=1, max_length=64), Expect("a short name for logs, 1-64 characters")] = "lls"
    port: Annotated[str, Field(min_length=1), Expect("a serial device or pyserial URL, e.g. /dev/ttyUSB0")]
    baud: Annotated[int, Field(ge=1200, le=115200), Expect("a baud rate such as 9600 or 19200")] = 19200
    address: Annotated[int, Field(ge=0, le=254), Expect("a sensor network address 0-254")] = 1
    poll_interval_s: Annotated[float, Field(gt=0, le=3600), Expect("a number of seconds > 0")] = 1.0
    response_timeout_s: Annotated[float, Field(gt=0, le=1), Expect("a number of seconds > 0 and <= 1")] = 0.3
    # No valid answer for this long: the sensor (or its cable) counts as gone.
    silence_timeout_s: Annotated[float, Field(gt=0, le=3600), Expect("a number of seconds > 0")] = 10.0
    # Raw level (N) of a full scale; LLS sensors are set up to 0..1023 or 0..4095 (default) counts.
    raw_max: Annotated[int, Field(ge=1, le=65535), Expect("the sensor's full-scale raw level, 1-65535")] = 4095
    # Tank calibration table: [raw level, litres] points, raw strictly increasing, interpolated linearly.
    calibration: Annotated[
        list[tuple[int, float]],
        Expect("a list of [raw level, litres] pairs with raw strictly increasing, at least 2"),
    ] = Field(default_factory=list)
    # Used when there is no calibration table: litres = raw * litres_per_count.
    litres_per_count: Annotated[float | None, Field(gt=0), Expect("a number of litres per raw count > 0")] = None

    @field_validator("calibration")
    @classmethod
    def _check_calibration(cls, v: list[tuple[int, float]]) -> list[tuple[int, float]]:
        if v and (len(v) < 2 or any(b[0] <= a[0] for a, b in itertools.pairwise(v))):
            raise ValueError("calibration needs >= 2 points with raw strictly increasing")
        return v
