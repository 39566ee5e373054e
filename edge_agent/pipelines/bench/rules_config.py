"""Config models for the bench's rules stages: field templates, validation, review queue, privacy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.schema import Expect

FieldName = Literal["order_no", "sku", "quantity", "reason", "customer_id", "return_date"]
FIELD_NAMES: tuple[FieldName, ...] = ("order_no", "sku", "quantity", "reason", "customer_id", "return_date")

Confidence = Annotated[float, Field(ge=0.0, le=1.0), Expect("a confidence from 0.0 to 1.0")]


class FieldsConfig(BaseModel):
    """[bench.fields]: which templates find the fields, and how sure a field must be to pass unreviewed."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # The shipped template (config/templates/default.toml) is read first unless turned off;
    # a site's own template files are merged over it in order (labels added, patterns replaced).
    builtin_template: bool = True
    templates: Annotated[list[Path], Expect("a list of template file paths")] = Field(default_factory=list)
    extra_labels: Annotated[dict[FieldName, list[str]], Expect("a table of field name -> list of extra labels")] = (
        Field(default_factory=dict)
    )
    # Calibrated on generated slips (see docs/records-bench.md): below this a field goes to review.
    min_confidence: Annotated[dict[FieldName, Confidence], Expect("a table of field name -> confidence 0.0-1.0")] = (
        Field(default_factory=dict)
    )
    default_min_confidence: Confidence = 0.85

    def threshold(self, name: str) -> float:
        return float(self.min_confidence.get(name, self.default_min_confidence))  # type: ignore[call-overload]


class ValidationConfig(BaseModel):
    """[bench.validation]: the expected-returns manifest and the rules a return must meet."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # CSV or JSON of expected returns; a manifest received from central (state_dir/manifest.json) wins.
    manifest: Annotated[Path | None, Expect("a path to a CSV or JSON manifest")] = None
    return_window_days: Annotated[int, Field(ge=1, le=3650), Expect("a number of days 1-3650")] = 30
    max_quantity: Annotated[int, Field(ge=1, le=100000), Expect("an integer 1-100000")] = 999
    # The canonical reasons; empty means the shipped list (config/reasons.toml).
    reasons: Annotated[list[str], Expect("a list of reason strings")] = Field(default_factory=list)
    reason_synonyms: Annotated[dict[str, list[str]], Expect("a table of reason -> list of phrases meaning it")] = Field(
        default_factory=dict
    )


class ReviewConfig(BaseModel):
    """[bench.review]: the review queue and how long raw images are kept."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # "until_reviewed": the image of a queued item is deleted when a person decides on it;
    # "hours": kept keep_images_h hours after capture, reviewed or not; "never": not stored.
    keep_images: Annotated[
        Literal["until_reviewed", "hours", "never"], Expect('"until_reviewed", "hours" or "never"')
    ] = "until_reviewed"
    keep_images_h: Annotated[float, Field(gt=0, le=24 * 365), Expect("hours > 0")] = 24.0
    # Images of items that passed without review are not kept unless this is set.
    keep_accepted_images: bool = False


class PrivacyConfig(BaseModel):
    """[bench.privacy]: what is masked in any OCR text that is stored or sent."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mask_phones: bool = True
    mask_id_cards: bool = True
    mask_names: bool = True
    mask_addresses: bool = True
    mask_emails: bool = True
    # Site-specific labels whose values are personal (added to the template's name/address labels).
    extra_name_labels: list[str] = Field(default_factory=list)
    extra_address_labels: list[str] = Field(default_factory=list)
    # Extra regular expressions whose matches are masked (e.g. a loyalty card format).
    extra_patterns: Annotated[list[str], Expect("a list of valid regular expressions")] = Field(default_factory=list)

    @field_validator("extra_patterns")
    @classmethod
    def _check_patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"bad regular expression {p!r}: {exc}") from None
        return v
