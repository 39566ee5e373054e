"""`edge-agent central devices|ingest|import|status|anomalies|export|simulate`: the receiving side's commands."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from edge_agent.cli.common import EXIT_FAIL, EXIT_OK, fail, number_in

EXIT_USAGE = 2


def _mqtt_config(args: argparse.Namespace, url: str, client_id: str | None) -> Any:
    """The spine's MqttConfig (so TLS, mTLS and passwords work as on the device), from command-line options."""
    from pydantic import ValidationError

    from edge_agent.settings import MqttConfig

    try:
        return MqttConfig(
            url=url,
            topic_prefix=args.topic_prefix,
            client_id=client_id,
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
            username=args.username,
            password_file=args.password_file,
            backoff_min_s=0.5,
            backoff_max_s=10.0,
        )
    except ValidationError as exc:
        if any(e["loc"] and e["loc"][0] == "url" for e in exc.errors()):
            raise SystemExit(fail(f"{url!r}: expected mqtt://host:port or mqtts://host:port", EXIT_USAGE)) from None
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SystemExit(fail(f"MQTT options: {problems}", EXIT_USAGE)) from None


def _open(dsn: str, *, must_exist: bool = True) -> Any:
    """The central database; one that is not there yet is made only by the commands that fill it."""
    from edge_agent.central.db import open_db

    return open_db(dsn, must_exist=must_exist)


def _log_setup(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ---------------------------------------------------------------- devices


def cmd_devices_add(args: argparse.Namespace) -> int:
    from edge_agent.central.registry import add_device, load_key_file

    public = load_key_file(Path(args.pubkey))
    db = _open(args.db, must_exist=False)
    try:
        kid = add_device(db, args.device, args.site, public, replace=args.replace)
    finally:
        db.close()
    print(f"registered {args.device} at site {args.site} with key {kid}")
    return EXIT_OK


def cmd_devices_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from edge_agent.central.registry import list_devices

    db = _open(args.db)
    try:
        devices = list_devices(db)
    finally:
        db.close()
    if args.json:
        print(json.dumps([asdict(d) for d in devices], indent=1))
        return EXIT_OK
    print(f"{'device':24} {'site':12} {'status':8} {'key':26} {'head':>8} {'verified':>8}")
    for d in devices:
        print(f"{d.device:24} {d.site:12} {d.status:8} {d.key_id:26} {d.head_seq:>8} {d.verified_through:>8}")
    return EXIT_OK


def cmd_devices_revoke(args: argparse.Namespace) -> int:
    from edge_agent.central.registry import revoke_device

    db = _open(args.db)
    try:
        head = revoke_device(db, args.device)
    finally:
        db.close()
    print(f"revoked {args.device}: records after seq {head} are refused from now on")
    return EXIT_OK


# ---------------------------------------------------------------- ingest


def cmd_ingest(args: argparse.Namespace) -> int:
    import socket

    from edge_agent.central.db import open_db
    from edge_agent.central.ingest import IngestSettings
    from edge_agent.central.service import run_ingest
    from edge_agent.central.worker import WorkerSettings
    from edge_agent.spine.remote.message import MAX_TTL_S

    _log_setup(args.verbose)
    client_id = args.client_id or f"edge-central-{socket.gethostname()}-{args.share or 'solo'}"
    m = _mqtt_config(args, args.mqtt, client_id)
    if not 0 < args.resend_every_s <= MAX_TTL_S:
        return fail(f"--resend-every-s: expected seconds in (0, {MAX_TTL_S:.0f}], got {args.resend_every_s}")
    if args.resend_max < 1:
        return fail(f"--resend-max: expected at least 1, got {args.resend_max}")
    resend_key = None
    if args.resend_key:
        from edge_agent.cli.central import load_private
        from edge_agent.errors import KeyError_

        try:
            resend_key = load_private(Path(args.resend_key))
        except KeyError_ as exc:
            return fail(f"--resend-key: {exc}")
    # A wrong DSN fails now, with its message, not in a retry loop. A mistyped SQLite path must not become a
    # new database that takes every record in as an unknown device's (and acknowledges it).
    from edge_agent.central.registry import list_devices

    db = open_db(args.db, must_exist=True)
    try:
        registered, where = len(list_devices(db)), db.where
    finally:
        db.close()
    if not registered:
        logging.getLogger("edge_agent.central").warning(
            "no device is registered in %s: every record will be stored as an unknown_device anomaly until "
            "its device is added (central devices add); check --db",
            where,
        )
    settings = WorkerSettings(
        dsn=args.db,
        mqtt=m,
        share=args.share,
        client_id=client_id,
        batch_max=args.batch_max,
        receive_max=args.receive_max,
        session_expiry_s=args.session_expiry_s,
        sweep_every_s=args.sweep_every_s,
        ingest=IngestSettings(
            topic_prefix=args.topic_prefix,
            max_bytes=args.max_bytes,
            hole_after_s=args.hole_after_s,
            replay_window_s=args.replay_window_s,
            resend_every_s=args.resend_every_s,
            resend_max=args.resend_max,
        ),
        resend_key=resend_key,
    )
    return run_ingest(settings, metrics_port=args.metrics_port, metrics_addr=args.metrics_addr)


# ---------------------------------------------------------------- status, anomalies, export


def cmd_status(args: argparse.Namespace) -> int:
    from edge_agent.central import queries

    db = _open(args.db)
    try:
        rows = queries.status(db, args.device)
        where = db.where
    finally:
        db.close()
    if args.device and not rows:
        return fail(f"--device {args.device}: no such device is registered in {where} (central devices list)")
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return EXIT_OK
    print(f"{'device':20} {'head':>7} {'verified':>8} {'lag_s':>7} {'last seen':24} {'open':>4}  by kind")
    for r in rows:
        lag = "-" if r["lag_s"] is None else f"{r['lag_s']:.1f}"
        kinds = " ".join(f"{k}={n}" for k, n in r["by_kind"].items())
        print(
            f"{r['device']:20} {r['head_seq']:>7} {r['verified_through']:>8} {lag:>7} "
            f"{r['last_seen'] or '-':24} {r['anomalies']:>4}  {kinds}"
        )
    return EXIT_OK


def cmd_anomalies(args: argparse.Namespace) -> int:
    from edge_agent.central import queries
    from edge_agent.central.ingest import ANOMALY_KINDS

    if args.kind is not None and args.kind not in ANOMALY_KINDS:
        return fail(f"--kind {args.kind}: expected one of {', '.join(sorted(ANOMALY_KINDS))}", EXIT_USAGE)
    since = _since(args.since)
    db = _open(args.db)
    try:
        rows = queries.anomalies(
            db, device=args.device, kind=args.kind, open_only=args.open, since=since, limit=args.limit
        )
    finally:
        db.close()
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return EXIT_OK
    for a in rows:
        state = "open" if a["resolved_at"] is None else "resolved"
        times = f" x{a['count']}" if a["count"] > 1 else ""
        head = f"{a['detected_at']} {a['severity'].upper():4} {a['kind']:15} {a['device'] or '-':20}"
        print(f"{head} {state:8}{times} {a['message']}")
    if not rows:
        print("no anomalies", file=sys.stderr)
    return EXIT_OK


def _since(text: str | None) -> float | None:
    from edge_agent.central.queries import parse_since

    if text is None:
        return None
    try:
        return parse_since(text)
    except ValueError as exc:
        raise SystemExit(fail(str(exc), EXIT_USAGE)) from None


def cmd_export(args: argparse.Namespace) -> int:
    from edge_agent.central import queries

    since = _since(args.since)
    db = _open(args.db)
    try:
        rows = queries.export_records(db, device=args.device, kind=args.kind, since=since)
        if args.out in (None, "-"):
            n = queries.write_export(rows, args.format, sys.stdout)
        else:
            # Written beside --out and moved over it only when something matched: a mistyped filter must
            # not leave an empty file where a good export was.
            out = Path(args.out)
            tmp = out.with_name(f".{out.name}.partial")
            try:
                with tmp.open("w", encoding="utf-8", newline="") as f:
                    n = queries.write_export(rows, args.format, f)
                if n or not (args.device or args.kind):
                    tmp.replace(out)
            finally:
                tmp.unlink(missing_ok=True)
        if n == 0 and (args.device or args.kind):
            return fail(_nothing_matched(db, args.device, args.kind))
    finally:
        db.close()
    print(f"exported {n} record(s)", file=sys.stderr)
    return EXIT_OK


def _nothing_matched(db: Any, device: str | None, kind: str | None) -> str:
    """Why a filtered export found nothing: a device or kind that was never stored, named with the ones there."""
    if device and not db.query("SELECT 1 FROM devices WHERE device = ?", (device,)):
        return f"--device {device}: no such device is registered in {db.where} (central devices list); nothing written"
    if kind:
        kinds = [r[0] for r in db.query("SELECT DISTINCT kind FROM records ORDER BY kind")]
        if kind not in kinds:
            stored = ", ".join(kinds) or "none"
            return f"--kind {kind}: no record of that kind is stored (stored: {stored}); nothing written"
    return "no record matches the filters; nothing written"


# ---------------------------------------------------------------- import


def _import_message(ing: Any, sites: dict[str, str | None], line: bytes, max_bytes: int) -> Any:
    """One exported line as the message it would have come as, or why it cannot be (a str)."""
    import time

    from edge_agent.central.ingest import Message

    if len(line) > max_bytes:
        return f"{len(line)} bytes, more than --max-bytes {max_bytes}"
    try:
        obj = json.loads(line)
        device, kind = obj["device"], obj["kind"]
        if not isinstance(device, str) or not isinstance(kind, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return "not a record (expected a JSON object with device and kind)"
    if device not in sites:
        sites[device] = ing.site_of(device)
    site = sites[device]
    if site is None:
        return f"device {device!r} is not registered (central devices add)"
    return Message(ing.records_topic(site, device, kind), line, time.time())


def cmd_import(args: argparse.Namespace) -> int:
    """Records from files (`edge-agent outbox export`, or `central export`) through the ingest's own checks."""
    import math
    from collections import Counter

    from edge_agent.central.ingest import Ingestor, IngestSettings, Message

    # A record that comes back days later is expected here, not a replay; everything else is checked as live.
    settings = IngestSettings(topic_prefix=args.topic_prefix, max_bytes=args.max_bytes, replay_window_s=math.inf)
    counts: Counter[str] = Counter()
    anomalies: Counter[str] = Counter()
    refused: list[str] = []
    sites: dict[str, str | None] = {}
    for name in args.files:  # each is opened before anything is stored: a typo in the last file stores nothing
        try:
            open(name, "rb").close()
        except OSError as exc:
            return fail(f"{name}: cannot read: {exc.strerror or exc}; nothing imported")
    db = _open(args.db)
    ing = Ingestor(db, settings)

    def run(batch: list[Message]) -> None:
        while batch:
            result = ing.process(batch)
            counts.update(stored=result.stored, duplicates=result.duplicates)
            anomalies.update(a.kind for a in result.anomalies)
            batch = ing.take_pending(result.rotated) if result.rotated else []

    try:
        batch: list[Message] = []
        for name in args.files:
            try:
                f = open(name, "rb")  # noqa: SIM115 - closed below, read line by line
            except OSError as exc:
                return fail(f"{name}: cannot read: {exc.strerror or exc}")
            with f:
                for n, raw in enumerate(f, 1):
                    line = raw.rstrip(b"\r\n")
                    if line.strip():
                        counts["lines"] += 1
                        got = _import_message(ing, sites, line, args.max_bytes)
                        if isinstance(got, str):
                            refused.append(f"{name}:{n}: {got}")
                        else:
                            batch.append(got)
                    if len(batch) >= args.batch_max:
                        run(batch)
                        batch = []
        run(batch)
        run(ing.take_pending(ing.releasable()))
    finally:
        db.close()
    for why in refused[:10]:
        print(why, file=sys.stderr)
    if len(refused) > 10:
        print(f"... and {len(refused) - 10} more line(s) refused", file=sys.stderr)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(anomalies.items()))
    print(
        f"{counts['lines']} line(s): {counts['stored']} record(s) stored, {counts['duplicates']} already stored, "
        f"{len(refused)} refused" + (f"; anomalies recorded: {kinds} (central anomalies)" if anomalies else ""),
        file=sys.stderr,
    )
    return EXIT_FAIL if refused or anomalies else EXIT_OK


# ---------------------------------------------------------------- simulate


def cmd_simulate(args: argparse.Namespace) -> int:
    import os

    from edge_agent.central.service import run_simulation
    from edge_agent.central.simulate import MISBEHAVIOURS

    _log_setup(False)
    misbehave: dict[str, int] = {}
    for item in args.misbehave or []:
        name, _, count = item.partition("=")
        if name not in MISBEHAVIOURS or (count and not count.isdigit()):
            return fail(
                f"--misbehave {item!r}: expected NAME or NAME=COUNT with NAME one of {', '.join(MISBEHAVIOURS)}",
                EXIT_USAGE,
            )
        misbehave[name] = misbehave.get(name, 0) + (int(count) if count else 1)
    if sum(misbehave.values()) > args.devices:
        return fail(
            f"--misbehave: {sum(misbehave.values())} misbehaving devices but only --devices {args.devices}", EXIT_USAGE
        )
    m = _mqtt_config(args, args.broker, args.client_id or f"edge-central-sim-{os.getpid()}")
    return run_simulation(
        m,
        devices=args.devices,
        rate_hz=args.rate,
        duration_s=args.duration,
        seed=args.seed,
        site=args.site,
        misbehave=misbehave,
        at_seq=args.at_seq,
        register_dsn=args.register,
        report_path=args.report,
        records=args.records,
        name_prefix=args.name_prefix,
    )


# ---------------------------------------------------------------- argparse


def _mqtt_options(p: argparse.ArgumentParser) -> None:
    from edge_agent.cli.central import add_mqtt_args

    p.add_argument("--topic-prefix", default="edge", help="topic prefix (default edge)")
    p.add_argument("--client-id", help="MQTT client id; give each worker a stable one (its session survives restarts)")
    add_mqtt_args(p)  # --ca-file --cert-file --key-file --username --password-file, as for sign-command


def add_commands(cs: Any) -> None:  # noqa: PLR0915 - one block per subcommand reads best
    """Add the receiving side's subcommands to the `central` group's subparsers."""
    from edge_agent.cli.central import db_command

    db_help = "sqlite:///path/central.db or postgresql://user@host:port/dbname"

    d = cs.add_parser("devices", help="the device registry: add, list, revoke")
    ds = d.add_subparsers(dest="devices_cmd", metavar="ACTION")
    ds.required = True
    s = ds.add_parser("add", help="register a device and its public key")
    s.add_argument("--db", required=True, help=db_help)
    s.add_argument("--device", required=True, metavar="ID")
    s.add_argument("--site", required=True)
    s.add_argument(
        "--pubkey",
        required=True,
        metavar="FILE",
        help="a file: the PEM of edge-agent keys export-public, or the raw key in base64 on one line",
    )
    s.add_argument("--replace", action="store_true", help="replace the key of a known device (re-provisioned)")
    s.set_defaults(func=db_command(cmd_devices_add))
    s = ds.add_parser("list", help="registered devices and their chain heads")
    s.add_argument("--db", required=True, help=db_help)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=db_command(cmd_devices_list))
    s = ds.add_parser("revoke", help="refuse the device's records from now on")
    s.add_argument("--db", required=True, help=db_help)
    s.add_argument("--device", required=True, metavar="ID")
    s.set_defaults(func=db_command(cmd_devices_revoke))

    s = cs.add_parser("ingest", help="verify and store every record from the broker (runs until stopped)")
    s.add_argument("--mqtt", required=True, metavar="URL", help="mqtt://host:port or mqtts://host:port")
    s.add_argument("--db", required=True, help=db_help)
    s.add_argument("--share", metavar="GROUP", help="MQTT 5 shared subscription group: workers in it split the stream")
    _mqtt_options(s)
    s.add_argument(
        "--batch-max", type=number_in(int, 1), default=1000, help="records per database transaction (default 1000)"
    )
    s.add_argument(
        "--receive-max",
        type=number_in(int, 1, 65535),
        default=4000,
        help="unacknowledged messages in flight (default 4000)",
    )
    s.add_argument(
        "--session-expiry-s",
        type=number_in(int, 0, 4294967295),
        default=3600,
        help="broker keeps our session this long",
    )
    s.add_argument(
        "--max-bytes",
        type=number_in(int, 1),
        default=256 * 1024,
        help="larger payloads are anomalies (default 256 KiB)",
    )
    s.add_argument(
        "--hole-after-s", type=number_in(float, 0), default=300.0, help="a silent hole older than this is an anomaly"
    )
    s.add_argument(
        "--replay-window-s", type=number_in(float, 0), default=600.0, help="a record resent later than this is a replay"
    )
    s.add_argument(
        "--sweep-every-s", type=number_in(float, 0.1), default=5.0, help="how often to look for holes and short tails"
    )
    s.add_argument(
        "--resend-key",
        metavar="PRIV",
        help="central's command key (central keygen): ask devices to resend their holes with a signed resend",
    )
    s.add_argument(
        "--resend-every-s",
        type=float,
        default=600.0,
        help="ask again for a hole still open after this long, once the device was heard from (default 600)",
    )
    s.add_argument(
        "--resend-max",
        type=int,
        default=6,
        help="asks per hole before leaving it to a person (default 6)",
    )
    s.add_argument("--metrics-port", type=number_in(int, 1, 65535), help="serve Prometheus metrics on this port")
    s.add_argument("--metrics-addr", default="127.0.0.1", help="address for the metrics endpoint (default 127.0.0.1)")
    s.add_argument("--verbose", "-v", action="store_true")
    s.set_defaults(func=db_command(cmd_ingest))

    s = cs.add_parser("status", help="per device: head, verified-through, lag, last seen, open anomalies")
    s.add_argument("--db", required=True, help=db_help)
    s.add_argument("--device", metavar="ID")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=db_command(cmd_status))

    s = cs.add_parser("anomalies", help="what the ingest found, with evidence (--json)")
    s.add_argument("--db", required=True, help=db_help)
    s.add_argument("--device", metavar="ID")
    s.add_argument("--kind", help="e.g. fork, hole, bad_signature, signed_gap")
    s.add_argument("--open", action="store_true", help="only unresolved ones")
    s.add_argument("--since", help="ISO time or a duration back from now (15m, 2h, 7d)")
    s.add_argument("--limit", type=number_in(int, 1), default=1000)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=db_command(cmd_anomalies))

    s = cs.add_parser(
        "import",
        help="verify and store records from JSON-lines files (edge-agent outbox export, central export), "
        "with the same checks as ingest",
    )
    s.add_argument("files", nargs="+", metavar="FILE", help="one record per line, as exported")
    s.add_argument("--db", required=True, help=db_help)
    s.add_argument("--topic-prefix", default="edge")
    s.add_argument(
        "--batch-max", type=number_in(int, 1), default=1000, help="records per database transaction (default 1000)"
    )
    s.add_argument(
        "--max-bytes", type=number_in(int, 1), default=256 * 1024, help="larger lines are refused (default 256 KiB)"
    )
    s.set_defaults(func=db_command(cmd_import))

    s = cs.add_parser("export", help="stored records as JSON lines (exactly as received) or CSV")
    s.add_argument("--db", required=True, help=db_help)
    s.add_argument("--device", metavar="ID")
    s.add_argument("--kind")
    s.add_argument("--since", help="ISO time or a duration back from now (15m, 2h, 7d), by ingest time")
    s.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    s.add_argument("--out", metavar="FILE", help="default: standard output")
    s.set_defaults(func=db_command(cmd_export))

    s = cs.add_parser("simulate", help="a fleet of virtual devices with real signed chains (load tests, demos)")
    s.add_argument("--devices", type=number_in(int, 1, 1_000_000), required=True, metavar="N")
    s.add_argument(
        "--rate", type=number_in(float, 0.001), default=1.0, metavar="R", help="records per second per device"
    )
    s.add_argument("--duration", type=number_in(float, 0), default=60.0, metavar="S", help="seconds (default 60)")
    s.add_argument(
        "--records", type=number_in(int, 1), help="instead of --duration: this many records per device, unpaced"
    )
    s.add_argument("--broker", required=True, metavar="URL", help="mqtt://host:port or mqtts://host:port")
    s.add_argument("--register", metavar="DSN", help="also register the devices' keys in this central database")
    s.add_argument("--seed", default="demo", help="keys derive from it: the same seed registers the same keys")
    s.add_argument("--site", default="sim")
    s.add_argument("--name-prefix", default="sim", help="devices are named PREFIX-00000, PREFIX-00001, ...")
    s.add_argument(
        "--misbehave",
        action="append",
        metavar="NAME[=COUNT]",
        help="fork, forge, hole, gap or rotate; repeatable; the first devices misbehave, one each",
    )
    s.add_argument("--at-seq", type=number_in(int, 1), default=3, help="the seq at which misbehaving devices misbehave")
    s.add_argument("--report", metavar="FILE", help="write what was published and what central should find (JSON)")
    _mqtt_options(s)
    s.set_defaults(func=cmd_simulate)


def register(sub: Any) -> None:
    """Until the `central` group has its own module: add to the group the spine's commands module created."""
    central = sub.choices.get("central")
    if central is None:
        return
    for action in central._actions:
        if isinstance(action, argparse._SubParsersAction):
            add_commands(action)
            return


__all__ = ["EXIT_FAIL", "add_commands", "register"]
