"""`edge-agent central ...`: tools for the central team (command keys, signed commands).

Central engineers add their subcommands here: `register(sub)` makes the `central` group and
returns its subparsers, and each `_register_*` function adds one family of actions.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from edge_agent.cli.common import EXIT_OK, fail
from edge_agent.errors import KeyError_, SyncError
from edge_agent.files import atomic_write
from edge_agent.spine.config import MqttConfig
from edge_agent.spine.keys import generate_key, public_pem
from edge_agent.spine.remote.message import COMMANDS, CommandRefused, parse_args, sign_command


def load_private(path: Path) -> Ed25519PrivateKey:
    """Central's Ed25519 private key from a PEM file; KeyError_ saying what is wrong."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read the central key: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{path}: expected an Ed25519 private key, got {type(key).__name__}")
    return key


def db_command(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command on --db whose database fails under it (a damaged SQLite file, PostgreSQL gone mid-command) ends
    with one line naming the database and what the driver said, not a traceback."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except Exception as exc:
            from edge_agent.central.db import driver_error

            err = driver_error(args.db, exc)
            if err is None:
                raise
            return fail(str(err))

    return run


def add_mqtt_args(parser: argparse.ArgumentParser) -> None:
    """The broker options every central tool that talks MQTT takes."""
    parser.add_argument("--ca-file")
    parser.add_argument("--cert-file")
    parser.add_argument("--key-file")
    parser.add_argument("--username")
    parser.add_argument("--password-file")


def mqtt_config(url: str, args: argparse.Namespace) -> MqttConfig:
    """An MqttConfig from a URL and the add_mqtt_args options; ValidationError on a bad URL."""
    return MqttConfig(
        url=url,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        username=args.username,
        password_file=args.password_file,
    )


def cmd_central_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    priv_path, pub_path = out / "central.key", out / "central.pub.pem"
    try:
        key = generate_key(priv_path, force=args.force, what="central key")
    except KeyError_ as exc:
        return fail(str(exc))
    atomic_write(pub_path, public_pem(key.public), mode=0o644)
    print(f"key id:      {key.key_id}")
    print(f"private key: {priv_path} (mode 0600; keep it on the central side only)")
    print(f"public key:  {pub_path} (copy to each device and list it in commands.trusted_keys)")
    return EXIT_OK


def cmd_central_sign(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one exit per kind of bad input
    try:
        private = load_private(Path(args.key))
    except KeyError_ as exc:
        return fail(str(exc))
    try:
        cmd_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        return fail(f"--args: expected a JSON object, got invalid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(cmd_args, dict):
        return fail(f"--args: expected a JSON object, got {type(cmd_args).__name__}")
    if args.manifest:
        try:
            cmd_args["data_b64"] = base64.b64encode(Path(args.manifest).read_bytes()).decode("ascii")
        except OSError as exc:
            return fail(f"--manifest: {args.manifest}: cannot read: {exc.strerror}")
    if args.name not in COMMANDS:
        return fail(f"--name: expected one of {', '.join(COMMANDS)}, got {args.name!r}")
    problem = _publish_problem(args)  # before anything is signed or printed
    if problem:
        return fail(problem)
    try:
        parse_args(args.name, cmd_args)
        msg = sign_command(private, device=args.device, name=args.name, args=cmd_args, ttl_s=args.ttl_s)
    except (CommandRefused, ValueError) as exc:
        return fail(str(exc))
    data = json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
    print(data)
    if args.publish:
        topic = f"{args.topic_prefix}/{args.site}/{args.device}/cmd/{args.name}"
        err = publish_once(args.publish, args, topic, data.encode("utf-8"))
        if err:
            return fail(err)
        print(f"published to {topic}", file=sys.stderr)
    return EXIT_OK


def _publish_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the device id, and with --publish, --site and the broker URL, or None."""
    from edge_agent.central.registry import topic_level_problem

    problem = topic_level_problem("--device", args.device)
    if problem or not args.publish:
        return problem
    if not args.site:
        return "--publish needs --site (topics are <prefix>/<site>/<device>/cmd/<name>)"
    problem = topic_level_problem("--site", args.site)
    if problem:
        return problem
    try:
        mqtt_config(args.publish, args)
    except ValidationError:
        return f"--publish {args.publish!r}: expected mqtt://host:port or mqtts://host:port"
    return None


def publish_once(url: str, args: argparse.Namespace, topic: str, payload: bytes) -> str | None:
    """Connect, publish QoS 1, wait for PUBACK, disconnect; an error message or None."""
    from edge_agent.spine.sync import describe_connect_error, make_client

    try:
        m = mqtt_config(url, args)
        client = make_client(m, f"edge-central-{os.getpid()}")
    except (SyncError, ValidationError) as exc:
        return str(exc).splitlines()[0]
    try:
        client.connect(m.host, m.port, 30)
    except OSError as exc:
        return describe_connect_error(exc, m)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(10.0)
        if not info.is_published():
            return f"no PUBACK from {m.host}:{m.port} within 10 s (credentials or ACL?)"
    except (RuntimeError, ValueError) as exc:
        return f"publish failed: {exc}"
    finally:
        client.disconnect()
        client.loop_stop()
    return None


def _register_commands(cs: Any) -> None:
    s = cs.add_parser("keygen", help="new central Ed25519 key pair: central.key (0600) and central.pub.pem")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--force", action="store_true", help="replace an existing central.key")
    s.set_defaults(func=cmd_central_keygen)
    s = cs.add_parser("sign-command", help="print a signed command message (and optionally publish it)")
    s.add_argument("--key", required=True, metavar="PRIV", help="central private key (from `central keygen`)")
    s.add_argument("--device", required=True, metavar="ID")
    s.add_argument("--name", required=True, choices=COMMANDS)
    s.add_argument("--args", default="{}", metavar="JSON", help='command arguments, e.g. {"first_seq":1,"last_seq":9}')
    s.add_argument("--manifest", metavar="FILE", help="replace_manifest: the manifest file (sets data_b64)")
    s.add_argument("--ttl-s", type=float, default=600.0, help="seconds until the command expires (default 600)")
    s.add_argument("--publish", metavar="URL", help="also publish it: mqtt://host:port or mqtts://host:port")
    s.add_argument("--topic-prefix", default="edge")
    s.add_argument("--site")
    add_mqtt_args(s)
    s.set_defaults(func=cmd_central_sign)


def register(sub: Any) -> Any:
    """`edge-agent central ACTION`; returns the group's subparsers so other modules can add actions."""
    c = sub.add_parser(
        "central",
        help="the central side: device registry, verified ingest and import, status and anomalies, signed "
        "commands, ledger anchoring and proofs",
    )
    cs = c.add_subparsers(dest="central_cmd", metavar="ACTION")
    cs.required = True
    _register_commands(cs)
    return cs
