"""The [bench] section of the config, composed of the sections each bench stage owns."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.pipelines.bench.capture_config import CameraConfig, ScannerConfig, TriggerConfig
from edge_agent.pipelines.bench.image_config import OcrConfig, PreprocessConfig, QualityConfig
from edge_agent.pipelines.bench.rules_config import FieldsConfig, PrivacyConfig, ReviewConfig, ValidationConfig
from edge_agent.station.config import StationConfig  # [bench.station]: the operator station (edge_agent/station)


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quality: QualityConfig = Field(default_factory=QualityConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    ocr: OcrConfig = Field(default_factory=OcrConfig)
    fields: FieldsConfig = Field(default_factory=FieldsConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    camera: CameraConfig | None = None
    scanner: ScannerConfig | None = None
    trigger: TriggerConfig = Field(default_factory=TriggerConfig)
    station: StationConfig = Field(default_factory=StationConfig)
