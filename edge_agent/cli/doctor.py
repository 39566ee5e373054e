"""`edge-agent doctor`: every check a technician would otherwise do by hand, one line each, with the remedy."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import pwd
import re
import shutil
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.settings import AgentConfig, load_config, resolve_config_path

log = logging.getLogger(__name__)

Status = Literal["ok", "warn", "fail"]
OK: Status = "ok"
WARN: Status = "warn"
FAIL: Status = "fail"

UNIT_NAME = "edge-agent.service"
UNIT_DIRS = ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system")
CERT_WARN_DAYS = 30
OLDEST_UNDELIVERED_WARN_S = 3600.0
OLDEST_UNDELIVERED_FAIL_S = 7 * 24 * 3600.0
GPS_SKEW_WARN_S = 2.0
CLOCK_AHEAD_TOLERANCE_S = 1.0
DISK_MARGIN_MB = 100.0
SERIAL_LISTEN_S = 3.0
BROKER_TIMEOUT_S = 5.0
OCR_SLOW_S = 5.0
CHAIN_TAIL = 200  # how many of the newest stored records the link check walks


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    message: str
    remedy: str = ""

    def line(self) -> str:
        text = f"{self.status:<4} {self.name}: {self.message}"
        return text + (f"\n       -> {self.remedy}" if self.remedy and self.status != OK else "")


# ---------------------------------------------------------------- config and keys


def check_config(path: Path) -> tuple[Check, AgentConfig | None]:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        shown = exc.problems[:5] + ([f"... and {len(exc.problems) - 5} more"] if len(exc.problems) > 5 else [])
        return Check(
            "config",
            FAIL,
            "; ".join(shown),
            f"fix the key(s) named above in {path}, then run `edge-agent config check`",
        ), None
    return Check("config", OK, f"{path} is valid ({cfg.profile} profile, device {cfg.device.id})"), cfg


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


def check_secret_file(name: str, path: Path, user: str) -> Check:
    """A key or password file: present, mode 0600 (no group/other bits), owned by the service user."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return Check(
            name,
            FAIL,
            f"{path} is missing",
            "create it (`edge-agent init` makes the device key) or fix the path in the config",
        )
    except OSError as exc:
        return Check(
            name,
            FAIL,
            f"{path}: cannot read its metadata ({exc.strerror})",
            f"check the folder rights of {path.parent}",
        )
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

    base = check_secret_file("device key", cfg.key_path, user)
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


# ---------------------------------------------------------------- clock


@dataclass(frozen=True, slots=True)
class ClockFacts:
    timesyncd_synced: bool | None  # None: not installed / unknown
    chrony_synced: bool | None
    kernel_synced: bool | None


def gather_clock_facts(root: Path) -> ClockFacts:
    timesyncd: bool | None = None
    if (root / "run/systemd/timesync/synchronized").exists():
        timesyncd = True
    else:
        out = _run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
        if out is not None:
            timesyncd = out.strip() == "yes"
    chrony = None
    out = _run(["chronyc", "-n", "tracking"])
    if out is not None:
        m = re.search(r"Leap status\s*:\s*(.+)", out)
        chrony = bool(m) and m is not None and m.group(1).strip() == "Normal"
    kernel = None
    with contextlib.suppress(Exception):
        from edge_agent.spine.clock import system_clock_synced

        kernel = system_clock_synced()
    return ClockFacts(timesyncd, chrony, kernel)


def check_clock_sync(facts: ClockFacts) -> Check:
    sources = {
        "systemd-timesyncd": facts.timesyncd_synced,
        "chrony": facts.chrony_synced,
        "kernel": facts.kernel_synced,
    }
    synced = [n for n, v in sources.items() if v]
    if synced:
        return Check("clock sync", OK, f"synchronised ({', '.join(synced)})")
    known = [n for n, v in sources.items() if v is not None]
    return Check(
        "clock sync",
        WARN,
        f"not synchronised ({', '.join(known) or 'no time service found'}); records are marked clock=unsynced",
        "give the device network time: `timedatectl set-ntp true` (or configure chrony), and a GPS if it "
        "has no network",
    )


def last_record_time(cfg: AgentConfig) -> datetime | None:
    if not cfg.db_path.exists():
        return None
    conn = sqlite3.connect(f"file:{cfg.db_path}?mode=ro", uri=True, timeout=1)
    try:
        row = conn.execute("SELECT ts FROM records ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return datetime.fromisoformat(row[0].replace("Z", "+00:00")) if row else None


def check_clock_vs_records(cfg: AgentConfig, now: datetime) -> Check:
    last = last_record_time(cfg)
    if last is None:
        return Check("clock vs records", OK, "no records yet")
    ahead_s = (last - now).total_seconds()
    if ahead_s > CLOCK_AHEAD_TOLERANCE_S:
        return Check(
            "clock vs records",
            FAIL,
            f"system time {now:%Y-%m-%d %H:%M:%S}Z is {ahead_s:.0f} s before the last record's time "
            f"({last:%Y-%m-%d %H:%M:%S}Z): the clock went backwards",
            "set the clock (network time or GPS) before starting the agent; check the RTC battery if fitted",
        )
    return Check("clock vs records", OK, f"later than the last record ({last:%Y-%m-%d %H:%M:%S}Z)")


def last_gps_skew_s(cfg: AgentConfig) -> tuple[float | None, str | None]:
    """GPS minus system time from the newest health record, and that record's time."""
    if not cfg.db_path.exists():
        return None, None
    conn = sqlite3.connect(f"file:{cfg.db_path}?mode=ro", uri=True, timeout=1)
    try:
        row = conn.execute("SELECT data FROM records WHERE kind = 'health' ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None, None
    finally:
        conn.close()
    if not row:
        return None, None
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        rec = json.loads(row[0])
        skew = rec["body"]["clock"]["gps_skew_s"]
        return (float(skew) if skew is not None else None), rec["ts"]
    return None, None


def check_gps_time(cfg: AgentConfig) -> Check | None:
    if cfg.telematics.gps is None:
        return None
    skew, ts = last_gps_skew_s(cfg)
    if skew is None:
        return Check(
            "gps time",
            WARN,
            "no GPS time seen in the health records yet",
            "let the agent run with a GPS fix for a minute, then run doctor again",
        )
    if abs(skew) > GPS_SKEW_WARN_S:
        return Check(
            "gps time",
            WARN,
            f"system clock differs from GPS time by {skew:+.1f} s (health record of {ts})",
            "enable network time; until then records take GPS time (clock=gps)",
        )
    return Check("gps time", OK, f"system clock agrees with GPS within {abs(skew):.1f} s (health record of {ts})")


# ---------------------------------------------------------------- disk and outbox


def check_disk(cfg: AgentConfig) -> Check:
    from edge_agent.spine.outbox import Outbox

    folder = cfg.state_dir if cfg.state_dir.exists() else cfg.state_dir.parent
    free_mb = shutil.disk_usage(folder).free / 1048576
    stored_mb = 0.0
    if cfg.db_path.exists():
        with contextlib.suppress(sqlite3.Error, EdgeAgentError):
            ob = Outbox(cfg.db_path, readonly=True)
            try:
                stored_mb = ob.stats().stored_bytes / 1048576
            finally:
                ob.close()
    needed_mb = max(0.0, cfg.outbox.max_mb - stored_mb)
    msg = (
        f"{free_mb:.0f} MB free on {folder}; the outbox may still grow by {needed_mb:.0f} MB "
        f"(outbox.max_mb {cfg.outbox.max_mb:g})"
    )
    if free_mb < needed_mb:
        lower = max(free_mb - DISK_MARGIN_MB, 1)
        return Check("disk", FAIL, msg, f"free disk space or lower outbox.max_mb below {lower:.0f}")
    if free_mb < needed_mb + DISK_MARGIN_MB:
        return Check("disk", WARN, msg, "free some disk space: less than 100 MB would be left with a full outbox")
    return Check("disk", OK, msg)


def check_outbox(cfg: AgentConfig) -> Check:  # noqa: PLR0911 - one verdict per kind of damage
    """SQLite integrity, the chain links of the newest records, the head, and the oldest undelivered age."""
    from edge_agent.spine.outbox import Outbox

    if not cfg.db_path.exists():
        return Check("outbox", OK, f"{cfg.db_path} not created yet (the agent has not run)")
    try:
        conn = sqlite3.connect(f"file:{cfg.db_path}?mode=ro", uri=True, timeout=1)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            rows = conn.execute("SELECT seq, data FROM records ORDER BY seq DESC LIMIT ?", (CHAIN_TAIL,)).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        result, rows = str(exc), []
    if result != "ok":
        return Check(
            "outbox",
            FAIL,
            f"{cfg.db_path} failed its integrity check ({str(result)[:120]})",
            "restart the agent: it moves the damaged file aside and starts a fresh outbox; keep the old "
            "file for recovery",
        )
    ob = Outbox(cfg.db_path, readonly=True)
    try:
        st = ob.stats()
    finally:
        ob.close()
    recs = [json.loads(d) for _, d in reversed(rows)]
    for a, b in itertools.pairwise(recs):
        if b["seq"] == a["seq"] + 1 and b.get("prev") != a.get("hash"):
            return Check(
                "outbox",
                FAIL,
                f"chain broken between seq {a['seq']} and {b['seq']}",
                "the outbox was altered: keep a copy for the central team and report it",
            )
    if recs and recs[-1]["seq"] == st.head_seq and recs[-1].get("hash") != st.head_hash:
        return Check(
            "outbox",
            FAIL,
            f"stored head hash does not match record seq {st.head_seq}",
            "the outbox was altered: keep a copy for the central team and report it",
        )
    age = st.oldest_undelivered_age_s
    msg = f"intact; head seq {st.head_seq}, {st.depth} undelivered"
    if age is None:
        return Check("outbox", OK, msg)
    msg += f", oldest waiting {_human_s(age)}"
    if age > OLDEST_UNDELIVERED_FAIL_S:
        return Check("outbox", FAIL, msg, "records are not reaching the broker: see the broker checks below")
    if age > OLDEST_UNDELIVERED_WARN_S:
        return Check("outbox", WARN, msg, "records are slow to reach the broker: see the broker checks below")
    return Check("outbox", OK, msg)


def _human_s(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


# ---------------------------------------------------------------- broker


def check_broker_tcp(cfg: AgentConfig) -> Check:
    m = cfg.mqtt
    try:
        with socket.create_connection((m.host, m.port), timeout=1.0):
            pass
    except socket.gaierror as exc:
        return Check(
            "broker reachable",
            FAIL,
            f"cannot resolve {m.host!r} ({exc.strerror})",
            "check mqtt.url and the device's DNS (cat /etc/resolv.conf)",
        )
    except OSError as exc:
        return Check(
            "broker reachable",
            FAIL,
            f"{m.host}:{m.port}: {exc.strerror or exc}",
            "check the network link and mqtt.url (host and port), and that the broker runs",
        )
    return Check("broker reachable", OK, f"{m.host}:{m.port} accepts TCP connections")


def check_broker_tls(cfg: AgentConfig) -> Check | None:
    m = cfg.mqtt
    if not m.tls:
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(m.ca_file) if m.ca_file else None)
        if m.cert_file and m.key_file:
            ctx.load_cert_chain(str(m.cert_file), str(m.key_file))
    except (OSError, ssl.SSLError) as exc:
        return Check(
            "broker TLS",
            FAIL,
            f"cannot load the CA or client certificate: {exc}",
            "check mqtt.ca_file, mqtt.cert_file and mqtt.key_file point at PEM files",
        )
    try:
        with socket.create_connection((m.host, m.port), timeout=1.0) as raw:
            raw.settimeout(1.0)
            with ctx.wrap_socket(raw, server_hostname=m.host) as tls:
                version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        return Check(
            "broker TLS",
            FAIL,
            f"the broker's certificate is not trusted ({exc.verify_message})",
            "set mqtt.ca_file to the CA that signed the broker's certificate (ask the central team)",
        )
    except (OSError, ssl.SSLError) as exc:
        return Check(
            "broker TLS",
            FAIL,
            f"TLS handshake with {m.host}:{m.port} failed ({exc})",
            "check that the port speaks TLS (mqtts://, usually 8883) and the CA file",
        )
    return Check("broker TLS", OK, f"{version} handshake verified with {m.ca_file or 'the system CAs'}")


def check_client_cert(cfg: AgentConfig, now: datetime) -> Check | None:
    from cryptography import x509

    m = cfg.mqtt
    if m.cert_file is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(Path(m.cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        return Check(
            "client certificate",
            FAIL,
            f"{m.cert_file}: not a readable PEM certificate ({exc})",
            "install the client certificate the central team issued for this device",
        )
    left = cert.not_valid_after_utc - now
    when = f"{cert.not_valid_after_utc:%Y-%m-%d}"
    if left <= timedelta(0):
        return Check(
            "client certificate",
            FAIL,
            f"{m.cert_file} expired on {when}",
            "install a renewed client certificate (ask the central team)",
        )
    if left < timedelta(days=CERT_WARN_DAYS):
        return Check(
            "client certificate",
            WARN,
            f"{m.cert_file} expires in {left.days} day(s) ({when})",
            "ask the central team for a renewed client certificate now",
        )
    return Check("client certificate", OK, f"valid until {when} ({left.days} days)")


def check_broker_login(cfg: AgentConfig) -> Check:
    """A full MQTT CONNECT with the device's credentials, under its own client id (never the agent's)."""
    from edge_agent.spine.sync import describe_connect_error, make_client

    m = cfg.mqtt
    client_id = f"{m.client_id or f'edge-agent-{cfg.device.site}-{cfg.device.id}'}-doctor"
    try:
        client = make_client(m, client_id)
    except (EdgeAgentError, OSError) as exc:
        return Check("broker login", FAIL, str(exc), "fix the file paths under [mqtt]")
    result: list[Any] = []
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        result.append(reason)
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(m.host, m.port, 30)
    except (OSError, ssl.SSLError) as exc:
        return Check("broker login", FAIL, describe_connect_error(exc, m), "see the broker checks above")
    deadline = time.monotonic() + BROKER_TIMEOUT_S
    try:
        while not done.is_set() and time.monotonic() < deadline:
            if client.loop(timeout=0.2) != 0:
                break
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
    if not result:
        return Check(
            "broker login",
            FAIL,
            f"no answer to CONNECT from {m.host}:{m.port} within {BROKER_TIMEOUT_S:g} s",
            "check that mqtt.url points at an MQTT broker and mqtt.protocol matches it",
        )
    reason = result[0]
    if reason.is_failure:
        return Check(
            "broker login",
            FAIL,
            f"broker refused the login: {reason}",
            "check mqtt.username and mqtt.password_file (or the client certificate) with the central team",
        )
    return Check("broker login", OK, f"credentials accepted (MQTT {m.protocol})")


# ---------------------------------------------------------------- serial devices


def iter_models(obj: Any, path: str = "") -> Iterator[tuple[str, BaseModel]]:
    """Every nested pydantic model in the config with its dotted path."""
    if isinstance(obj, BaseModel):
        yield path, obj
        for name in type(obj).model_fields:
            yield from iter_models(getattr(obj, name), f"{path}.{name}" if path else name)
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from iter_models(item, f"{path}[{i}]")


def serial_devices(cfg: AgentConfig) -> list[tuple[str, Any]]:
    """Configured devices on serial ports: models with a `kind` and a `port`, for the active profile."""
    section = {"truck": "telematics", "sensors": "sensors", "bench": "bench"}[cfg.profile]
    return [
        (p, m)
        for p, m in iter_models(getattr(cfg, section), section)
        if isinstance(getattr(m, "kind", None), str) and isinstance(getattr(m, "port", None), str)
    ]


def _nmea_ok(line: bytes) -> bool:
    m = re.fullmatch(rb"\$([A-Z0-9]{3,10}),([\x20-\x7e]*)\*([0-9A-Fa-f]{2})", line.strip())
    if not m:
        return False
    body = line.strip()[1:].split(b"*")[0]
    x = 0
    for b in body:
        x ^= b
    return x == int(m.group(3), 16)


def probe_nmea(port: str, baud: int, listen_s: float = SERIAL_LISTEN_S) -> tuple[Status, str, str]:
    import serial

    try:
        ser = serial.serial_for_url(port, baudrate=baud, timeout=0.2)
    except (serial.SerialException, OSError, ValueError) as exc:
        return FAIL, f"{port}: cannot open ({exc})", "plug the GPS in and check the port (ls -l /dev/serial/by-id/)"
    got = bytearray()
    types: dict[str, int] = {}
    try:
        deadline = time.monotonic() + listen_s
        while time.monotonic() < deadline and sum(types.values()) < 5:
            got += ser.read(512)
            *lines, rest = bytes(got).split(b"\n")
            got = bytearray(rest)
            for line in lines:
                if _nmea_ok(line):
                    head = line.strip()[1:6].decode()
                    t = head if head.startswith("P") else head[2:]
                    types[t] = types.get(t, 0) + 1
    except (serial.SerialException, OSError) as exc:
        return FAIL, f"{port}: read failed ({exc})", "check the cable and that no other program holds the port"
    finally:
        ser.close()
    if types:
        n = sum(types.values())
        return OK, f"{port}: {n} NMEA sentence(s) with good checksums ({', '.join(sorted(types))})", ""
    if got or listen_s <= 0:
        return (
            FAIL,
            f"{port}: bytes arrive but no valid NMEA sentence in {listen_s:g} s",
            ("check the baud rate (GPS receivers use 4800, 9600 or 115200) or set autobaud = true"),
        )
    return FAIL, f"{port}: silent for {listen_s:g} s", "check the GPS power and wiring; a USB GPS may need replugging"


def probe_elm327(port: str, baud: int, listen_s: float = SERIAL_LISTEN_S) -> tuple[Status, str, str]:
    import serial

    try:
        ser = serial.serial_for_url(port, baudrate=baud, timeout=0.2, write_timeout=1.0)
    except (serial.SerialException, OSError, ValueError) as exc:
        return FAIL, f"{port}: cannot open ({exc})", "plug the OBD adapter in (ignition on) and check the port"
    got = b""
    try:
        for command in (b"ATZ\r", b"ATI\r"):
            ser.reset_input_buffer()
            ser.write(command)
            deadline = time.monotonic() + listen_s / 2
            got = b""
            while time.monotonic() < deadline and b">" not in got:
                got += ser.read(64)
            m = re.search(rb"ELM327 v[0-9.]+\w*", got)
            if m:
                return OK, f"{port}: adapter answers {m.group().decode()}", ""
    except (serial.SerialException, OSError) as exc:
        return FAIL, f"{port}: {exc}", "check the cable and that no other program holds the port"
    finally:
        ser.close()
    if got:
        return (
            FAIL,
            f"{port}: answers, but not like an ELM327 ({got[:40]!r})",
            ("check the baud rate (38400 for most USB adapters)"),
        )
    return FAIL, f"{port}: no answer to ATZ/ATI", "switch the ignition on and check the adapter's power LED"


def probe_with_driver(dev: Any, listen_s: float = SERIAL_LISTEN_S) -> tuple[Status, str, str]:
    """Open the agent's own driver for this kind and wait for one good reading."""
    from edge_agent.drivers.base import DeviceUnavailable, FrameError

    classes = {
        "scale": ("edge_agent.drivers.scale.driver", "ScaleDriver"),
        "lls": ("edge_agent.drivers.lls.driver", "LlsDriver"),
        "modbus": ("edge_agent.drivers.modbus.driver", "ModbusMeterDriver"),
    }
    where = classes.get(dev.kind)
    if where is None:
        return WARN, f"{dev.port}: doctor has no probe for kind {dev.kind!r}", "check the device by hand"
    import importlib

    driver = getattr(importlib.import_module(where[0]), where[1])(dev)
    what = {"scale": "scale replying", "lls": "fuel sensor replying", "modbus": "register readable"}[dev.kind]
    frames = 0
    try:
        driver.open()
        deadline = time.monotonic() + listen_s
        while time.monotonic() < deadline:
            try:
                reading = driver.read(0.5)
            except FrameError:
                frames += 1
                continue
            if reading is not None:
                return OK, f"{dev.port}: {what} ({_describe_reading(reading)})", ""
    except DeviceUnavailable as exc:
        return FAIL, str(exc), "check the power, the wiring (RS-485 A/B) and the port in the config"
    finally:
        driver.close()
    if frames:
        return (
            FAIL,
            f"{dev.port}: {frames} garbled frame(s), no good reading in {listen_s:g} s",
            ("check the baud rate, parity and protocol settings against the device's manual"),
        )
    return FAIL, f"{dev.port}: no reading in {listen_s:g} s", "check the power, the wiring and the device address"


def _describe_reading(reading: Any) -> str:
    for name in ("load_kg", "weight_kg", "level_l", "value", "gross_kg"):
        v = getattr(reading, name, None)
        if isinstance(v, (int, float)):
            return f"{name} {v:g}"
    return type(reading).__name__


def check_serial_device(path: str, dev: Any, listen_s: float = SERIAL_LISTEN_S) -> Check:
    if dev.kind == "nmea":
        status, msg, remedy = probe_nmea(dev.port, dev.baud, listen_s)
    elif dev.kind == "elm327":
        status, msg, remedy = probe_elm327(dev.port, dev.baud, listen_s)
    else:
        status, msg, remedy = probe_with_driver(dev, listen_s)
    return Check(f"{path} ({dev.kind})", status, msg, remedy)


# ---------------------------------------------------------------- cameras and OCR


def check_camera(path: str, cam: Any) -> Check:  # noqa: PLR0911 - one verdict per camera kind and fault
    name = f"{path} ({cam.kind})"
    if cam.kind == "folder":
        folder = Path(cam.path)
        if not folder.is_dir():
            return Check(
                name, FAIL, f"{folder} is not a folder", "create it and point the camera's FTP/SMB upload at it"
            )
        if not os.access(folder, os.W_OK):
            return Check(name, FAIL, f"{folder} is not writable by this user", "chown the folder to the service user")
        return Check(name, OK, f"{folder} exists and is writable")
    if cam.kind == "picamera2":
        if importlib.util.find_spec("picamera2") is None:
            return Check(name, FAIL, "picamera2 is not installed", "sudo apt install python3-picamera2")
        return Check(name, OK, "picamera2 available (frames not grabbed: the agent holds the camera)")
    if cam.kind == "opencv":
        return _check_opencv_camera(name, cam)
    return Check(name, WARN, f"doctor has no check for camera kind {cam.kind!r}", "check the camera by hand")


def _check_opencv_camera(name: str, cam: Any) -> Check:
    import cv2

    cap = cv2.VideoCapture(cam.source)
    try:
        if not cap.isOpened():
            return Check(name, FAIL, f"cannot open {cam.source!r}", "plug the camera in; check `ls /dev/video*`")
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok or frame is None:
        return Check(name, FAIL, f"{cam.source!r} opens but delivers no frame", "check the camera's cable and power")
    h, w = frame.shape[:2]
    want = (getattr(cam, "width", None), getattr(cam, "height", None))
    if all(want) and (w, h) != want:
        return Check(
            name,
            FAIL,
            f"frames are {w}x{h}, the config asks for {want[0]}x{want[1]}",
            "set width/height to a mode the camera supports (v4l2-ctl --list-formats-ext)",
        )
    return Check(name, OK, f"delivers {w}x{h} frames")


def _manifest_path(cfg: AgentConfig) -> Path:
    if cfg.bench.ocr.manifest is not None:
        return Path(cfg.bench.ocr.manifest)
    from edge_agent.resources import models_file

    return models_file("manifest.json")


def _model_file(entry: dict[str, Any], manifest: Path) -> Path:
    package = entry.get("package")
    if package:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(f"Python package {package!r} is not installed")
        return Path(spec.origin).parent / str(entry["file"])
    p = Path(entry["file"])
    return p if p.is_absolute() else manifest.parent / p


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_ocr_models(cfg: AgentConfig, run: bool = True) -> list[Check]:
    manifest = _manifest_path(cfg)
    model = cfg.bench.ocr.model
    try:
        data = json.loads(manifest.read_text())
        entries: dict[str, dict[str, Any]] = data["models"][model]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [
            Check(
                "ocr models",
                FAIL,
                f"{manifest}: no usable entry for model {model!r} ({exc})",
                "reinstall edge-agent, or fix bench.ocr.manifest",
            )
        ]
    checks = []
    for role, entry in entries.items():
        name = f"ocr model {role}"
        try:
            path = _model_file(entry, manifest)
            digest = sha256_file(path)
        except (OSError, KeyError) as exc:
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{entry.get('file')}: missing ({exc})",
                    f"reinstall the package that ships it ({entry.get('package') or 'see the manifest'})",
                )
            )
            continue
        if digest != entry.get("sha256"):
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{path}: sha256 {digest[:12]}... differs from the manifest's {str(entry.get('sha256'))[:12]}...",
                    "reinstall it: the file is damaged or a different version",
                )
            )
            continue
        if not run:
            checks.append(Check(name, OK, f"{path.name}: sha256 matches the manifest"))
            continue
        checks.append(_timed_run(name, path))
    return checks


def _timed_run(name: str, path: Path) -> Check:
    """Load the model and run it once on a blank image of a size it accepts; time both."""
    import numpy as np
    import onnxruntime as ort

    t0 = time.perf_counter()
    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else 64) for i, d in enumerate(inp.shape)]
        if len(shape) == 4 and not isinstance(inp.shape[1], int):
            shape[1] = 3
        t1 = time.perf_counter()
        sess.run(None, {inp.name: np.zeros(shape, dtype=np.float32)})
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        return Check(
            name,
            FAIL,
            f"{path.name}: sha256 matches, but it does not run ({str(exc)[:120]})",
            "reinstall onnxruntime for this platform (pip install --force-reinstall onnxruntime)",
        )
    load_s, run_s = t1 - t0, time.perf_counter() - t1
    size = "x".join(map(str, shape))
    msg = f"{path.name}: sha256 matches; loads in {load_s:.2f} s, one {size} run in {run_s * 1000:.0f} ms"
    if load_s + run_s > OCR_SLOW_S:
        return Check(name, WARN, msg, "the device is slow or busy: check `top` and the CPU temperature (throttling)")
    return Check(name, OK, msg)


# ---------------------------------------------------------------- systemd


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
        out = _run(["systemctl", "is-enabled", UNIT_NAME])
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


def _run(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=1.0, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 or out.stdout else None


# ---------------------------------------------------------------- all together


def run_checks(
    config_path: Path,
    *,
    root: Path = Path("/"),
    listen_s: float = SERIAL_LISTEN_S,
    now: datetime | None = None,
    on_check: Callable[[Check], None] | None = None,
) -> list[Check]:
    """Every check, in the order a technician would go; checks that need a valid config are skipped without one."""
    results: list[Check] = []

    def add(c: Check | None) -> None:
        if c is not None:
            results.append(c)
            if on_check is not None:
                on_check(c)

    first, cfg = check_config(config_path)
    add(first)
    if cfg is None:
        for c in check_systemd(root):
            add(c)
        return results
    t = now or datetime.now(UTC)
    user = service_user(root)
    add(check_device_key(cfg, user))
    for name in ("key_file", "password_file"):
        p = getattr(cfg.mqtt, name)
        if p is not None:
            add(check_secret_file(f"mqtt {name.replace('_', ' ')}", Path(p), user))
    add(check_trusted_keys(cfg))
    add(check_clock_sync(gather_clock_facts(root)))
    add(check_clock_vs_records(cfg, t))
    add(check_gps_time(cfg))
    add(check_disk(cfg))
    add(check_outbox(cfg))
    tcp = check_broker_tcp(cfg)
    add(tcp)
    if tcp.status == OK:
        add(check_broker_tls(cfg))
    add(check_client_cert(cfg, t))
    if tcp.status == OK:
        add(check_broker_login(cfg))
    for path, dev in serial_devices(cfg):
        add(check_serial_device(path, dev, listen_s))
    if cfg.profile == "bench":
        for path, m in iter_models(cfg.bench, "bench"):
            if getattr(m, "kind", None) in ("folder", "opencv", "picamera2"):
                add(check_camera(path, m))
        for c in check_ocr_models(cfg):
            add(c)
    for c in check_systemd(root):
        add(c)
    return results


def cmd_doctor(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    root = Path(args.root)
    if args.json:
        checks = run_checks(path, root=root, listen_s=args.listen_s)
        print(json.dumps([asdict(c) for c in checks], ensure_ascii=False, indent=1))
    else:
        checks = run_checks(path, root=root, listen_s=args.listen_s, on_check=lambda c: print(c.line(), flush=True))
        counts = {s: sum(1 for c in checks if c.status == s) for s in (OK, WARN, FAIL)}
        print(f"{counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} fail", file=sys.stderr)
    return 1 if any(c.status == FAIL for c in checks) else 0


def register(sub: Any) -> None:
    from edge_agent.cli.common import add_config_arg

    s = sub.add_parser("doctor", help="check config, keys, clock, disk, outbox, broker, devices, models, systemd")
    add_config_arg(s)
    s.add_argument("--json", action="store_true", help="one JSON list of {name, status, message, remedy}")
    s.add_argument("--listen-s", type=float, default=SERIAL_LISTEN_S, help="how long to listen to each serial device")
    s.add_argument("--root", default="/", help=argparse.SUPPRESS)  # a filesystem root, for tests and images
    s.set_defaults(func=cmd_doctor)
