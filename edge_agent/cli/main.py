"""The `edge-agent` command: provisioning, config, running, status, outbox and verification.

Over ~400 lines on purpose: the spine's commands (init, keys, config, run, status, outbox,
verify) and the one argparse table; command groups of other rooms register from their modules.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.cli.central import add_mqtt_args
from edge_agent.cli.common import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, add_config_arg, fail, load_or_exit, number_in
from edge_agent.errors import ConfigError, EdgeAgentError, KeyError_
from edge_agent.resources import config_file
from edge_agent.settings import (
    atomic_write,
    load_config,
    masked_dict,
    parse_config,
    resolve_config_path,
    run_problems,
    run_warnings,
    set_value,
)
from edge_agent.spine.keys import generate_key, load_key, load_public_keys, public_pem, public_raw_b64

log = logging.getLogger(__name__)

# Command groups: each profile's (from app.PROFILES), then the rooms every device has.
COMMON_MODULES = (
    "edge_agent.cli.capture",
    "edge_agent.cli.install",
    "edge_agent.demo.runner",
    "edge_agent.cli.doctor",
    "edge_agent.cli.central",
    "edge_agent.cli.central_ingest",
    "edge_agent.cli.central_anchor",
)


def plugin_modules() -> list[str]:
    from edge_agent.app import PROFILES

    return [m for m in dict.fromkeys(p.cli for p in PROFILES.values()) if m] + list(COMMON_MODULES)


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def render_config(profile: str, device_id: str, site: str, broker: str, state_dir: Path) -> str:
    """The commented config for a profile: base template plus the profile's section."""
    base = config_file("base.toml").read_text(encoding="utf-8")
    text = (
        base.replace("@PROFILE@", _toml_str(profile))
        .replace("@DEVICE_ID@", _toml_str(device_id))
        .replace("@SITE@", _toml_str(site))
        .replace("@BROKER@", _toml_str(broker))
        .replace("@STATE_DIR@", _toml_str(str(state_dir)))
    )
    section = config_file(f"{profile}.toml")
    if section.exists():
        text += "\n" + section.read_text(encoding="utf-8")
    return text


# ---------------------------------------------------------------- init / keys


INIT_SOURCE = "edge-agent init"
# Config keys init fills from its options: a problem with one names the option, not a file not yet written.
_INIT_OPTIONS = {
    "mqtt.url": "--broker",
    "device.id": "--device-id",
    "device.site": "--site",
    "state_dir": "--state-dir",
}


def _init_option(problem: str) -> str:
    text = problem.removeprefix(f"{INIT_SOURCE}: ")
    for key, option in _INIT_OPTIONS.items():
        if text.startswith(f"{key}: "):
            return f"{INIT_SOURCE}: {option} ({key}): {text[len(key) + 2 :]}"
    return problem


def cmd_init(args: argparse.Namespace) -> int:
    cfg_dir = Path(args.dir)
    cfg_path = cfg_dir / "config.toml"
    state_dir = Path(args.state_dir) if args.state_dir else cfg_dir / "state"
    if cfg_path.exists() and not args.force:
        return fail(
            f"{cfg_path} already exists; use --force to overwrite it (the device key is kept unless it is missing)"
        )
    text = render_config(args.profile, args.device_id, args.site, args.broker, state_dir.resolve())
    import tomllib

    try:
        cfg = parse_config(tomllib.loads(text), INIT_SOURCE)
    except ConfigError as exc:
        for p in exc.problems:
            print(_init_option(p), file=sys.stderr)
        return EXIT_CONFIG
    for option, folder in (("--dir", cfg_dir), ("--state-dir", state_dir)):
        if folder.exists() and not folder.is_dir():
            return fail(f"{option} {folder}: expected a folder, got a file", EXIT_CONFIG)
    foreign = _foreign_chain(cfg)
    if foreign is not None:
        from edge_agent.spine.outbox import FOREIGN_CHAIN_REMEDY

        return fail(f"--device-id: {foreign}; nothing written: {FOREIGN_CHAIN_REMEDY}", EXIT_CONFIG)
    try:  # the state dir (and key) first: a config is only written for a device that can run
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            key = generate_key(cfg.key_path, force=args.force_key)
            made = "generated"
        except KeyError_:
            key = load_key(cfg.key_path)
            made = "kept existing"
        cfg_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(cfg_path, text.encode("utf-8"), mode=0o640)
    except OSError as exc:
        return fail(f"{exc.filename or cfg_dir}: cannot create it ({exc.strerror or exc})")
    print(f"config:     {cfg_path}")
    print(f"state dir:  {state_dir}")
    print(f"device id:  {cfg.device.id}")
    print(f"site:       {cfg.device.site}")
    print(f"key id:     {key.key_id} ({made}, {cfg.key_path}, mode 0600)")
    print(f"public key: {public_raw_b64(key.public)} (raw Ed25519, base64)")
    print("Register the device centrally with: edge-agent keys export-public --config", cfg_path, "> device.pub.pem")
    return EXIT_OK


def _foreign_chain(cfg: Any) -> str | None:
    """Why the state dir's outbox cannot take cfg's device id (it holds another device's chain), or None."""
    from edge_agent.spine.outbox import Outbox

    if not cfg.db_path.exists():
        return None
    try:
        with Outbox(cfg.db_path, readonly=True) as ob:
            return ob.foreign_chain(cfg.device.id)
    except sqlite3.Error:
        return None  # a damaged outbox is the agent's to move aside; `doctor` reports it


def cmd_keys_show(args: argparse.Namespace) -> int:
    cfg = load_or_exit(args)
    key = load_key(cfg.key_path)  # a KeyError_ becomes one clean line in main()
    print(f"device id:  {cfg.device.id}")
    print(f"key id:     {key.key_id}")
    print(f"public key: {public_raw_b64(key.public)}")
    print(f"key file:   {cfg.key_path}")
    return EXIT_OK


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """A new device key where the config says (doctor's remedy for a lost or damaged key)."""
    cfg = load_or_exit(args)
    key = generate_key(cfg.key_path, force=args.force)  # refuses to overwrite without --force
    print(f"key id:     {key.key_id} ({cfg.key_path}, mode 0600)")
    print(f"public key: {public_raw_b64(key.public)} (raw Ed25519, base64)")
    print("Register it centrally: edge-agent keys export-public --config", cfg.source or "CONFIG", "> device.pub.pem")
    return EXIT_OK


def cmd_keys_export(args: argparse.Namespace) -> int:
    cfg = load_or_exit(args)
    key = load_key(cfg.key_path)  # a KeyError_ becomes one clean line in main()
    sys.stdout.write(public_pem(key.public).decode("ascii"))
    return EXIT_OK


# ---------------------------------------------------------------- config


def cmd_config_check(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    warnings: list[str] = []
    try:
        cfg = load_config(path)
        problems = run_problems(cfg, str(path))
        warnings = run_warnings(cfg, str(path))
    except ConfigError as exc:
        problems = exc.problems
    for p in problems + warnings:
        print(p, file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    print(f"{path}: ok" + (f" ({len(warnings)} warning{'' if len(warnings) == 1 else 's'})" if warnings else ""))
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    cfg = load_or_exit(args)
    print(json.dumps(masked_dict(cfg), indent=2, ensure_ascii=False))
    return EXIT_OK


def cmd_config_set(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    try:
        set_value(path, args.key, args.value)
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        print(f"{path}: not changed", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path}: {args.key} set")
    return EXIT_OK


# ---------------------------------------------------------------- run / status / outbox


def setup_logging(level: str) -> None:
    # journald adds its own timestamps; a terminal gets them from us.
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if os.environ.get("JOURNAL_STREAM")
        else ("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_or_exit(args)
    setup_logging(args.log_level or cfg.log.level)
    from edge_agent.app import Agent

    try:
        return Agent(cfg, config_path=resolve_config_path(args.config)).run()
    except EdgeAgentError as exc:
        return fail(str(exc))


def status_data(cfg: Any) -> dict[str, Any]:
    from edge_agent.app import read_runtime
    from edge_agent.spine.outbox import Outbox

    data: dict[str, Any] = {"device": cfg.device.id, "site": cfg.device.site, "profile": cfg.profile}
    st = None
    if cfg.db_path.exists():
        try:
            ob = Outbox(cfg.db_path, readonly=True)
            try:
                st = ob.stats()
            finally:
                ob.close()
        except sqlite3.Error as exc:
            data["outbox_error"] = f"{cfg.db_path}: cannot read ({exc}); run `edge-agent doctor`"
    if st is not None:
        data["chain_head"] = {"seq": st.head_seq, "hash": st.head_hash}
        data["outbox"] = {
            "depth": st.depth,
            "oldest_undelivered_ts": st.oldest_undelivered_ts,
            "oldest_undelivered_age_s": round(st.oldest_undelivered_age_s, 1) if st.oldest_undelivered_age_s else None,
            "stored": st.stored,
            "stored_mb": round(st.stored_bytes / 1048576, 3),
        }
        data["last_delivered_seq"] = st.last_delivered_seq
    else:
        data["chain_head"] = None
        data["outbox"] = None
    if cfg.profile == "bench":
        data["review"] = _review_waiting(cfg.state_dir)
    rt = read_runtime(cfg.state_dir)
    data["daemon"] = "running" if rt and rt.get("alive") else "not running"
    if rt and rt.get("runtime_error"):
        data["runtime_error"] = rt["runtime_error"]
    alive = bool(rt and rt.get("alive"))
    data["broker"] = ("connected" if rt and rt.get("mqtt_connected") else "disconnected") if alive else "unknown"
    live = rt if alive and rt else {}
    data["station"] = live.get("station_url")
    data["station_error"] = live.get("station_error")
    data["devices"] = live.get("devices") or {}
    faults = [f"{name}: {d['last_error']}" for name, d in data["devices"].items() if _device_fault(d)]
    station_fault = f"station not started: {data['station_error']}" if data["station_error"] else None
    data["last_error"] = (
        (rt or {}).get("mqtt_last_error")
        or (rt or {}).get("writer_last_error")
        or station_fault
        or (faults[0] if faults else None)
    )
    data["stale_stages"] = (rt or {}).get("stale_stages", [])
    return data


def _station_and_device_lines(data: dict[str, Any]) -> list[str]:
    """`station:` (its address, or why it did not start) and one `device NAME:` line per driver."""
    lines = []
    if data["station"]:
        lines.append(f"station:       {data['station']}")
    elif data["station_error"]:
        lines.append(f"station:       not started: {data['station_error']}")
    for name, d in data["devices"].items():
        tries = f" (lost {d['reconnects']} times)" if d.get("reconnects") else ""
        if d.get("connected") and d.get("recovering") and d.get("last_error"):
            # Open again after a failure, with no reading since: most likely the same failure on its way.
            state = f"connected, no reading since it failed{tries}: {d['last_error']}"
        elif d.get("connected"):
            state = "connected"
        else:
            state = f"not connected{tries}: {d.get('last_error') or 'not opened yet'}"
        lines.append(f"{f'device {name}:':<14} {state}")
    return lines


def _device_fault(d: dict[str, Any]) -> bool:
    """A driver that is not connected, or not read since it failed, and says why (a fresh one has no error)."""
    return (not d.get("connected") or bool(d.get("recovering"))) and bool(d.get("last_error"))


def _review_waiting(state_dir: Path) -> dict[str, Any] | None:
    """The bench's review queue for `status`: items waiting and the oldest one's age, or why it cannot be read."""
    from edge_agent.pipelines.bench.review import waiting

    try:
        got = waiting(state_dir)
    except sqlite3.Error as exc:
        return {"error": f"{state_dir / 'review.db'}: cannot read ({exc})"}
    if got is None:
        return None
    n, oldest = got
    age = None
    if oldest:  # _now(): ISO with a Z
        age = round((datetime.now(UTC) - datetime.fromisoformat(oldest.replace("Z", "+00:00"))).total_seconds(), 1)
    return {"waiting": n, "oldest_queued_at": oldest, "oldest_age_s": age}


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_or_exit(args)
    data = status_data(cfg)
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return EXIT_OK
    print(f"device:        {data['device']} (site {data['site']}, profile {data['profile']})")
    print(f"daemon:        {data['daemon']}")
    print(f"broker:        {data['broker']}")
    if data["chain_head"]:
        print(f"chain head:    seq {data['chain_head']['seq']} {data['chain_head']['hash'][:16]}...")
        ob = data["outbox"]
        age = f", oldest {ob['oldest_undelivered_age_s']} s" if ob["oldest_undelivered_age_s"] else ""
        print(f"outbox:        {ob['depth']} undelivered{age}; {ob['stored']} stored ({ob['stored_mb']} MB)")
        last = data["last_delivered_seq"]
        print(f"last delivered: {f'seq {last}' if last else 'none yet'}")
    elif data.get("outbox_error"):
        print(f"outbox:        {data['outbox_error']}")
    else:
        print("outbox:        none yet (the agent has not run)")
    if data.get("profile") == "bench":
        from edge_agent.cli.doctor.base import human_s

        rv = data.get("review")
        if rv is None:
            print("review queue:  none yet")
        elif "error" in rv:
            print(f"review queue:  {rv['error']}")
        else:
            oldest = f", oldest queued {human_s(rv['oldest_age_s'])} ago" if rv["oldest_age_s"] is not None else ""
            print(f"review queue:  {rv['waiting']} waiting{oldest}")
    for line in _station_and_device_lines(data):
        print(line)
    if data["stale_stages"]:
        print(f"stuck stages:  {', '.join(data['stale_stages'])}")
    print(f"last error:    {data['last_error'] or data.get('runtime_error') or '-'}")
    return EXIT_OK


def cmd_outbox_export(args: argparse.Namespace) -> int:
    from edge_agent.spine.outbox import Outbox

    if args.file is not None:
        return _export_damaged(Path(args.file), args.since or 0)
    cfg = load_or_exit(args)
    if not cfg.db_path.exists():
        return fail(f"{cfg.db_path}: no outbox yet (has the agent run?)")
    out = sys.stdout.buffer
    try:
        ob = Outbox(cfg.db_path, readonly=True)
        try:
            for data in ob.export(args.since or 0):
                out.write(data + b"\n")
        finally:
            ob.close()
    except BrokenPipeError:
        pass
    except sqlite3.Error as exc:
        return fail(
            f"{cfg.db_path}: damaged ({exc}). Start the agent: it moves a damaged outbox aside and sends what it "
            "can; then `edge-agent outbox export --file outbox.db.corrupt-<time>` gives the rest "
            "(`edge-agent doctor` says what is wrong)"
        )
    return EXIT_OK


def _export_damaged(path: Path, since: int) -> int:
    """`outbox export --file`: the whole records of an outbox the agent moved aside, on stdout; a count on stderr."""
    from edge_agent.spine.outbox import export_damaged

    if not path.is_file():
        what = "not a file" if path.exists() else "no such file"
        return fail(f"{path}: {what} (the agent keeps a damaged outbox as outbox.db.corrupt-<UTC time>)")
    out = sys.stdout.buffer
    n = first = last = 0
    try:
        for data in export_damaged(path, since):
            out.write(data + b"\n")
            last = int(json.loads(data)["seq"])
            first, n = first or last, n + 1
    except BrokenPipeError:
        return EXIT_OK
    except (sqlite3.Error, OSError) as exc:
        return fail(f"{path}: cannot be read as an outbox ({exc})")
    span = f", seq {first}-{last}" if n else ""
    missing = last - first + 1 - n if n else 0
    print(
        f"{n} whole record(s) from {path}{span}; {missing} seq(s) in between not readable. "
        "Check them with: edge-agent verify --pubkey device.pub.pem FILE",
        file=sys.stderr,
    )
    return EXIT_OK


# ---------------------------------------------------------------- verify


def cmd_verify(args: argparse.Namespace) -> int:  # noqa: PLR0911, PLR0912 - one exit per kind of bad input
    from edge_agent.spine.verify import FAIL, Verifier, check_checkpoint
    from edge_agent.spine.verify_feed import MqttSource, Sideline, feed_lines, feed_mqtt

    keys = load_public_keys(Path(args.pubkey))  # a KeyError_ becomes one clean line in main()
    cp: Any = None
    side = Sideline()
    if args.checkpoint:
        try:
            cp = json.loads(Path(args.checkpoint).read_bytes())
        except OSError as exc:
            return fail(f"{args.checkpoint}: cannot read: {exc.strerror}")
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            return fail(f"{args.checkpoint}: expected a checkpoint JSON object, got invalid JSON ({exc})")
    if args.mqtt:
        from pydantic import ValidationError

        from edge_agent.cli.central import mqtt_config

        v = Verifier(keys, strict_order=False, from_seq=args.from_seq, live=True, only_device=args.device)
        try:
            m = mqtt_config(args.mqtt, args)
        except ValidationError as exc:
            return fail(f"--mqtt: expected mqtt://host:port or mqtts://host:port ({exc.error_count()} problem(s))")
        topic = args.topic or f"edge/+/{args.device or '+'}/rec/#"
        src = MqttSource(
            m,
            topic,
            args.client_id or f"edge-verify-{os.getpid()}",
            count=args.count,
            idle_s=args.idle,
            timeout_s=args.timeout,
        )
        err = feed_mqtt(v, src, side)
        if err is not None:
            return fail(err)
    else:
        v = Verifier(keys, strict_order=True, from_seq=args.from_seq, only_device=args.device)
        src_name = args.records
        if src_name in (None, "-"):
            feed_lines(v, sys.stdin.buffer, None)
        else:
            try:
                with open(src_name, "rb") as f:
                    feed_lines(v, f, src_name)
            except OSError as exc:
                return fail(f"{src_name}: cannot read: {exc.strerror}")
    v.anchored_start = cp is not None
    findings = v.finish()
    if cp is not None:
        findings = findings + check_checkpoint(v, cp, keys)
        v.findings[:] = findings
    elif side.checkpoints:
        findings = findings + _live_checkpoints(v, side.checkpoints, keys)
        v.findings[:] = findings
    for line in (side.line(), v.others_line()):
        if line:
            print(line)
    for finding in findings:
        if finding.level == FAIL or args.verbose or finding.what in ("signed_gap", "checkpoint", "start"):
            print(finding.line())
    s = v.summary()
    if not s["received"]:
        return fail(_no_records(args))
    verdict = "INTACT" if v.ok else "NOT INTACT"
    tail = f"; checkpoint seq {cp.get('seq')!r}" if isinstance(cp, dict) else ""
    print(
        f"{verdict}: device {s['device']}, {s['unique']} record(s) (seq {s['first_seq']}..{s['last_seq']}), "
        f"{s['received']} received, {s['failures']} failure(s){tail}"
    )
    return EXIT_OK if v.ok and s["unique"] > 0 else EXIT_FAIL


def _no_records(args: argparse.Namespace) -> str:
    where = args.mqtt if args.mqtt else args.records if args.records not in (None, "-") else "stdin"
    if args.device:
        return f"{where}: no records of device {args.device!r} to verify (check --device)"
    return f"{where}: no records to verify (expected JSON lines, one record each)"


def _live_checkpoints(v: Any, checkpoints: list[tuple[str, bytes]], keys: list[Any]) -> list[Any]:
    """Each checkpoint a live subscription saw (.../checkpoint, retained), checked against the records seen."""
    from edge_agent.spine.records import parse_line
    from edge_agent.spine.verify import FAIL, Finding, check_live_checkpoint

    out: list[Any] = []
    for topic, payload in checkpoints:
        try:
            cp = parse_line(payload)
        except ValueError as exc:
            out.append(Finding(FAIL, "bad_checkpoint", None, f"{topic}: {exc}"))
            continue
        if v.device is not None and cp.get("device") != v.device:
            continue  # another device's (edge/#): counted among the skipped checkpoints, not this stream's
        out.extend(check_live_checkpoint(v, cp, keys))
    return out


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - the command table, in one place
    p = argparse.ArgumentParser(
        prog="edge-agent",
        description="Edge agent for after-sales logistics: signed records from benches, trucks and sensor points.",
    )
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("init", help="provision a device: config, state dir, Ed25519 key")
    s.add_argument("--profile", required=True, choices=["bench", "truck", "sensors"])
    s.add_argument("--device-id", required=True)
    s.add_argument("--site", required=True)
    s.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port or mqtts://host:port")
    s.add_argument("--dir", required=True, help="folder for config.toml (e.g. /etc/edge-agent)")
    s.add_argument("--state-dir", help="state folder (default: DIR/state; on a service install /var/lib/edge-agent)")
    s.add_argument("--force", action="store_true", help="overwrite an existing config.toml")
    s.add_argument(
        "--force-key", action="store_true", help="replace an existing device key (central must re-register it)"
    )
    s.set_defaults(func=cmd_init)

    k = sub.add_parser("keys", help="show or export the device key").add_subparsers(dest="keys_cmd", metavar="ACTION")
    k.required = True
    s = k.add_parser("show", help="device id, key id and public key")
    add_config_arg(s)
    s.set_defaults(func=cmd_keys_show)
    s = k.add_parser("generate", help="make the device key (refuses to replace one without --force)")
    add_config_arg(s)
    s.add_argument("--force", action="store_true", help="replace an existing key (central must re-register it)")
    s.set_defaults(func=cmd_keys_generate)
    s = k.add_parser("export-public", help="public key as PEM (SubjectPublicKeyInfo) on stdout, for `verify`")
    add_config_arg(s)
    s.set_defaults(func=cmd_keys_export)

    c = sub.add_parser("config", help="check, show or change the config").add_subparsers(
        dest="config_cmd", metavar="ACTION"
    )
    c.required = True
    s = c.add_parser("check", help="validate; exit 0 when good, 2 with one line per problem")
    add_config_arg(s)
    s.set_defaults(func=cmd_config_check)
    s = c.add_parser("show", help="effective config as JSON, secrets masked")
    add_config_arg(s)
    s.set_defaults(func=cmd_config_show)
    s = c.add_parser("set", help="change one dotted key in place (comments kept, validated, atomic)")
    add_config_arg(s)
    s.add_argument("key", help="dotted, e.g. mqtt.url; one meter by its name or index: sensors.meters.NAME.port")
    s.add_argument("value")
    s.set_defaults(func=cmd_config_set)

    s = sub.add_parser("run", help="run the agent in the foreground (systemd supervises it)")
    add_config_arg(s)
    s.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="chain head, outbox depth, broker state (daemon running or not)")
    add_config_arg(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    o = sub.add_parser("outbox", help="outbox tools").add_subparsers(dest="outbox_cmd", metavar="ACTION")
    o.required = True
    s = o.add_parser("export", help="records as JSON lines on stdout")
    add_config_arg(s)
    s.add_argument("--since", type=number_in(int, 0), metavar="SEQ", help="first seq to export")
    s.add_argument(
        "--file",
        metavar="PATH",
        help="a damaged outbox the agent moved aside (outbox.db.corrupt-...): every record still whole in it",
    )
    s.set_defaults(func=cmd_outbox_export)

    s = sub.add_parser("verify", help="check a record stream: signatures, links, seq, gaps (exit 0 only if intact)")
    s.add_argument("--pubkey", required=True, help="device public key PEM (from `keys export-public`)")
    s.add_argument("records", nargs="?", help="JSON-lines file, or - for stdin (default)")
    s.add_argument("--mqtt", metavar="URL", help="subscribe to a broker instead of reading a file")
    s.add_argument(
        "--device",
        metavar="ID",
        help="check this device's records only (others are counted); with --mqtt the default topic is edge/+/ID/rec/#",
    )
    s.add_argument(
        "--topic",
        help="topic filter (default edge/+/+/rec/#: the first device seen is checked unless --device)",
    )
    s.add_argument("--count", type=number_in(int, 0), default=0, help="stop after this many records")
    s.add_argument(
        "--idle", type=number_in(float, 0.1), default=5.0, help="stop after this many seconds without records"
    )
    s.add_argument("--timeout", type=number_in(float, 0.1), default=300.0, help="stop after this many seconds in all")
    add_mqtt_args(s)
    s.add_argument("--client-id")
    s.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="the device's signed checkpoint (retained on .../checkpoint): fail when the stream ends before it",
    )
    s.add_argument(
        "--from-seq",
        type=number_in(int, 1),
        metavar="SEQ",
        help="the stream is expected to start at SEQ (records before it were checked earlier)",
    )
    s.add_argument("--verbose", "-v", action="store_true", help="also print informational findings")
    s.set_defaults(func=cmd_verify)

    for name in plugin_modules():
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        register = getattr(mod, "register", None)
        if register is not None:
            register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except EdgeAgentError as exc:
        return fail(str(exc))
    except BrokenPipeError:
        # `edge-agent ... | head`: the reader left. Quietly, as cat does; stdout goes nowhere now
        # so the interpreter's own flush at exit does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
    except OSError as exc:
        # A path a command did not expect to be wrong (a file where a folder goes, no rights): the path and
        # why, not a traceback. Errors with no path (network) are the command's own to word.
        if exc.filename is None:
            raise
        return fail(_path_error(exc))
    return rc


def _path_error(exc: OSError) -> str:
    where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else exc.filename
    if isinstance(exc, FileExistsError):
        return f"{where}: expected a folder (or nothing), got a file"
    if isinstance(exc, NotADirectoryError):
        return f"{where}: part of this path is a file, where a folder was expected"
    return f"{where}: {exc.strerror or exc} (check the path and its rights)"


if __name__ == "__main__":
    sys.exit(main())
