"""The [bench] section of the config, composed of the sections each bench stage owns."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from edge_agent.pipelines.bench.capture_config import CameraConfig, ScannerConfig, TriggerConfig
from edge_agent.pipelines.bench.image_config import OcrConfig, PreprocessConfig, QualityConfig
from edge_agent.pipelines.bench.rules_config import FieldsConfig, PrivacyConfig, ReviewConfig, ValidationConfig
from edge_agent.station.config import StationConfig  # [bench.station]: the operator station (edge_agent/station)

SCANNER_REQUIRED = (
    'a [bench.scanner] section (kind = "serial" or "hid") when bench.trigger.mode is "scan-then-capture" '
    '(or set mode = "still" or "manual")'
)


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    quality: QualityConfig = Field(default_factory=QualityConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    ocr: OcrConfig = Field(default_factory=OcrConfig)
    fields: FieldsConfig = Field(default_factory=FieldsConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    camera: CameraConfig | None = None
    # Before the scanner, so the scanner's check below can see the mode.
    trigger: TriggerConfig = Field(default_factory=TriggerConfig)
    scanner: ScannerConfig | None = Field(default=None, validate_default=True)
    station: StationConfig = Field(default_factory=StationConfig)

    @field_validator("scanner", mode="after")
    @classmethod
    def _scanner_for_scan_trigger(cls, v: object, info: ValidationInfo) -> object:
        # The same rule the bench service applies at start, so `config check` and `run` agree.
        # A config without a camera is not a bench (other profiles carry the default bench section).
        trigger = info.data.get("trigger")
        if v is None and info.data.get("camera") is not None and getattr(trigger, "mode", None) == "scan-then-capture":
            raise PydanticCustomError("scanner_required", SCANNER_REQUIRED)
        return v

    def check_runnable(self, source: str) -> list[str]:
        """What `run` needs beyond the schema, so `config check` and doctor report it before `run` exits on it: a
        camera. Other commands (ocr, review) need none, and other profiles carry the default bench section."""
        if self.camera is None:
            problems = [
                f'{source}: bench.camera: expected a [bench.camera] section (kind = "opencv", "picamera2" or '
                '"folder") for the bench profile, got none: uncomment the one in the config and adapt it'
            ]
            # The scanner rule waits for a camera (see above): name it now too, not after the camera is fixed.
            if self.scanner is None and self.trigger.mode == "scan-then-capture":
                problems.append(f"{source}: bench.scanner: expected {SCANNER_REQUIRED}, got none")
            return problems
        return []

    def check_warnings(self, source: str, state_dir: Path) -> list[str]:
        """What `run` starts without but a technician should hear of from `config check`: a configured manifest
        that is not there. The bench then sends every slip to review; one central sent (state_dir) wins."""
        from edge_agent.pipelines.bench.manifest import sent_by_central

        path = self.validation.manifest
        if path is None or path.exists() or sent_by_central(state_dir) is not None:
            return []
        return [
            f"{source}: warning: bench.validation.manifest: {path}: no such file (expected the expected-returns "
            "CSV or JSON). The bench runs, but sends every slip to review until it is there: fix the path "
            "(edge-agent config set bench.validation.manifest PATH) or put the file there"
        ]
