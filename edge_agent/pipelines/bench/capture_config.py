"""Config models for the bench's capture stages: [bench.camera], [bench.scanner] and [bench.trigger]."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from edge_agent.drivers.camera.config import FolderCameraConfig, OpenCvCameraConfig, Picamera2Config
from edge_agent.drivers.scanner.config import HidScannerConfig, SerialScannerConfig
from edge_agent.schema import Expect


def _kind(value: Any) -> str | None:
    """The `kind` of a section (raw table or model), which picks its model."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if isinstance(kind, str) else None


# [bench.camera]: kind = "folder" | "opencv" | "picamera2" picks the model. A callable
# discriminator, so a wrong or missing kind gets one plain message.
CameraConfig = Annotated[
    Annotated[FolderCameraConfig, Tag("folder")]
    | Annotated[OpenCvCameraConfig, Tag("opencv")]
    | Annotated[Picamera2Config, Tag("picamera2")],
    Discriminator(
        _kind,
        custom_error_type="camera_kind",
        custom_error_message='a table with kind = "folder", "opencv" or "picamera2"',
    ),
    Expect('a table with kind = "folder", "opencv" or "picamera2"'),
]
# [bench.scanner]: kind = "serial" | "hid".
ScannerConfig = Annotated[
    Annotated[SerialScannerConfig, Tag("serial")] | Annotated[HidScannerConfig, Tag("hid")],
    Discriminator(
        _kind, custom_error_type="scanner_kind", custom_error_message='a table with kind = "serial" or "hid"'
    ),
    Expect('a table with kind = "serial" or "hid"'),
]

Fraction = Annotated[float, Field(gt=0, lt=1), Expect("a fraction between 0 and 1")]


class TriggerConfig(BaseModel):
    """[bench.trigger]: when a photo is taken and which scan it belongs to."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # scan-then-capture: a scan asks for the next frame (the usual bench flow);
    # still: a label that has come to rest under the camera is captured (frame differencing);
    # manual: `edge-agent bench capture` asks for one.
    mode: Annotated[
        Literal["scan-then-capture", "still", "manual"], Expect('"scan-then-capture", "still" or "manual"')
    ] = "scan-then-capture"
    # The same code again within this time is a double scan, not a second parcel.
    debounce_s: Annotated[float, Field(ge=0, le=60), Expect("a number of seconds 0-60")] = 2.0
    # A scan and a photo belong together when they are at most this far apart.
    timeout_s: Annotated[float, Field(gt=0, le=60), Expect("a number of seconds > 0 and <= 60")] = 3.0
    # Streaming cameras: wait this long after the scan so the hand holding the scanner is out of the picture.
    capture_delay_s: Annotated[float, Field(ge=0, le=10), Expect("a number of seconds 0-10")] = 0.3
    # Still detection, on a grey thumbnail still_width_px wide: a pixel "moved" when it changed by more
    # than pixel_delta; the scene is still when under motion_frac of pixels moved for still_s, and worth
    # a photo when more than change_frac differ from both the empty bench and the last photo.
    still_width_px: Annotated[int, Field(ge=32, le=1024), Expect("a width in pixels, 32-1024")] = 160
    pixel_delta: Annotated[int, Field(ge=1, le=255), Expect("a grey-level difference 1-255")] = 25
    motion_frac: Fraction = 0.01
    change_frac: Fraction = 0.05
    still_s: Annotated[float, Field(ge=0, le=10), Expect("a number of seconds 0-10")] = 0.5

    @model_validator(mode="after")
    def _check_fracs(self) -> TriggerConfig:
        if self.motion_frac >= self.change_frac:
            raise ValueError("motion_frac must be below change_frac (else a still label never differs enough)")
        return self
