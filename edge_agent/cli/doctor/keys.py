"""Doctor checks of the config file, the device key, the MQTT secrets and the trusted command keys."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import stat
from pathlib import Path

from edge_agent.cli.doctor.base import (
    FAIL,
    OK,
    WARN,
    Check,
)
from edge_agent.cli.doctor.systemd import find_unit
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.settings import AgentConfig, load_config, run_problems

log = logging.getLogger(__name__)


def check_config(path: Path) -> tuple[Check, AgentConfig | None]:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return _config_fails(path, exc.problems), None
    missing = run_problems(cfg, str(path))
    if missing:  # valid, and the checks below can run on it; `run` would exit on it all the same
        return _config_fails(path, missing), cfg
    return Check("config", OK, f"{path} is valid ({cfg.profile} profile, device {cfg.device.id})"), cfg


def _config_fails(path: Path, problems: list[str]) -> Check:
    shown = problems[:5] + ([f"... and {len(problems) - 5} more"] if len(problems) > 5 else [])
    return Check(
        "config", FAIL, "; ".join(shown), f"fix the key(s) named above in {path}, then run `edge-agent config check`"
    )


def service_user(root: Path) -> str:
    """The User= of the installed unit, else the user running doctor."""
    unit = find_unit(root)
    if unit is not None:
        with contextlib.suppress(OSError):
            for line in unit.read_text().splitlines():
                if line.strip().startswith("User="):
                    return line.split("=", 1)[1].strip()
    return pwd.getpwuid(os.geteuid()).pw_name


def _owner(st: os.stat_result) -> str:
    try:
        return pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        return str(st.st_uid)


def check_secret_file(name: str, path: Path, user: str, make: str) -> Check:
    """A key or password file: present, mode 0600 (no group/other bits), owned by the service user. `make`
    says how to create it when it is missing."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return Check(name, FAIL, f"{path} is missing", f"{make}, or fix the path in the config")
    except OSError as exc:
        return Check(
            name,
            FAIL,
            f"{path}: cannot read its metadata ({exc.strerror})",
            f"check the folder rights of {path.parent}",
        )
    if not stat.S_ISREG(st.st_mode):  # before its mode: `chmod 600` is no remedy for a folder
        return Check(name, FAIL, f"{path}: expected a file, got a folder or device", f"{make}, or fix the path")
    problems, remedies = [], []
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        problems.append(f"mode {mode:04o} (others can read it)")
        remedies.append(f"chmod 600 {path}")
    owner = _owner(st)
    if owner != user:
        problems.append(f"owned by {owner}, not by the service user {user}")
        remedies.append(f"chown {user} {path}")
    if problems:
        return Check(name, FAIL, f"{path}: " + "; ".join(problems), "run: " + " && ".join(remedies))
    return Check(name, OK, f"{path} (mode 0600, owner {user})")


def check_device_key(cfg: AgentConfig, user: str) -> Check:
    from edge_agent.spine.keys import load_key

    base = check_secret_file("device key", cfg.key_path, user, "make one with `edge-agent keys generate`")
    if base.status == FAIL:
        return base
    try:
        key = load_key(cfg.key_path, check_mode=False)
    except EdgeAgentError as exc:
        return Check(
            "device key",
            FAIL,
            str(exc),
            "restore the key from backup, or make a new one with `edge-agent keys generate` and register it centrally",
        )
    return Check("device key", OK, f"{base.message}, key id {key.key_id}")


def check_trusted_keys(cfg: AgentConfig) -> Check:
    from edge_agent.spine.keys import key_id_for, load_public_keys

    if not cfg.commands.trusted_keys:
        return Check(
            "command keys",
            WARN,
            "commands.trusted_keys is empty: the device obeys no remote command",
            "copy central.pub.pem from the central team and list it in commands.trusted_keys",
        )
    ids = []
    for p in cfg.commands.trusted_keys:
        try:
            ids += [key_id_for(k) for k in load_public_keys(p)]
        except EdgeAgentError as exc:
            return Check("command keys", FAIL, str(exc), "ask the central team for their public key file")
    return Check("command keys", OK, f"{len(ids)} trusted central key(s): {', '.join(ids)}")
