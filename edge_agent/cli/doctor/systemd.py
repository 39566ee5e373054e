"""Doctor checks of the systemd unit: installed, enabled, Type=notify with a watchdog."""

from __future__ import annotations

import logging
from pathlib import Path

from edge_agent.cli.doctor.base import (
    FAIL,
    OK,
    UNIT_DIRS,
    UNIT_NAME,
    Check,
    run_quietly,
)

log = logging.getLogger(__name__)


def find_unit(root: Path) -> Path | None:
    for d in UNIT_DIRS:
        p = root / d / UNIT_NAME
        if p.exists():
            return p
    return None


def check_systemd(root: Path) -> list[Check]:
    unit = find_unit(root)
    if unit is None:
        return [
            Check(
                "systemd unit",
                FAIL,
                f"{UNIT_NAME} is not installed",
                "run `sudo edge-agent install-service` so the agent starts at boot and restarts on failure",
            )
        ]
    text = unit.read_text()
    settings = {
        k.strip(): v.strip()
        for k, eq, v in (ln.partition("=") for ln in text.splitlines())
        if eq and not k.lstrip().startswith("#")
    }
    checks = [Check("systemd unit", OK, f"{unit} installed")]
    wants = list((root / "etc/systemd/system").glob(f"*.wants/{UNIT_NAME}"))
    enabled = bool(wants)
    if not enabled and root == Path("/"):
        out = run_quietly(["systemctl", "is-enabled", UNIT_NAME])
        enabled = out is not None and out.strip() == "enabled"
    checks.append(
        Check("systemd enabled", OK, f"enabled ({wants[0].parent.name})" if wants else "enabled")
        if enabled
        else Check(
            "systemd enabled",
            FAIL,
            "not enabled: the agent will not start at boot",
            f"sudo systemctl enable --now {UNIT_NAME}",
        )
    )
    wd = settings.get("WatchdogSec", "")
    if settings.get("Type") != "notify" or not wd or wd in ("0", "infinity"):
        checks.append(
            Check(
                "systemd watchdog",
                FAIL,
                f"Type={settings.get('Type')}, WatchdogSec={wd or 'unset'}",
                "reinstall the unit (`sudo edge-agent install-service`): it needs Type=notify and "
                "WatchdogSec=30 so a hung agent is restarted",
            )
        )
    else:
        checks.append(Check("systemd watchdog", OK, f"Type=notify, WatchdogSec={wd}"))
    return checks
