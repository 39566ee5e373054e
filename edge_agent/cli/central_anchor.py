"""`edge-agent central anchor|prove|verify-proof`: put verified records on an EVM chain and prove any one of them.

`register_anchor(cs)` adds the actions to the `central` group's subparsers (see cli/central.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import threading
from pathlib import Path
from typing import Any

from edge_agent.cli.common import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, fail, number_in
from edge_agent.errors import EdgeAgentError
from edge_agent.signals import SignalRelay

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


def parse_duration_s(text: str) -> float:
    """'90', '90s', '10m', '1h' -> seconds; ValueError naming what is expected."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"--every {text!r}: expected a positive duration such as 30s, 10m or 1h")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2) or "s"]


def _add_chain_args(p: argparse.ArgumentParser, *, key: bool, contract: bool) -> None:
    p.add_argument("--rpc", metavar="URL", help="EVM JSON-RPC endpoint, e.g. http://127.0.0.1:8545 (Besu, GoQuorum)")
    if contract:
        p.add_argument("--contract", metavar="ADDRESS", help="the deployed RecordAnchor contract")
    if key:
        p.add_argument("--key", metavar="FILE", help="the member's Ethereum key file (hex, mode 0600)")


def _need(args: argparse.Namespace, *names: str) -> str | None:
    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n, None)]
    return f"{', '.join(missing)} required" if missing else None


def register_anchor(cs: Any) -> None:
    """Add `anchor` (with `deploy` and `key`), `prove` and `verify-proof` to the central group."""
    from edge_agent.cli.central import db_command

    a = cs.add_parser(
        "anchor",
        help="anchor verified records on an EVM chain (one transaction per batch); deploy the contract; member keys",
        description="Builds an RFC 9162 Merkle tree over the records verified since the last anchor and sends "
        "its root, with the batch id, record count and each device's seq range, to the RecordAnchor contract. "
        "Transaction hash, block number and block hash are stored per record. A batch whose transaction is "
        "refused or not mined stays in the database and is tried again on the next run.",
    )
    a.add_argument("--db", metavar="DSN", help="central database: sqlite:///path or postgresql://...")
    _add_chain_args(a, key=True, contract=True)
    a.add_argument("--every", metavar="DURATION", help="keep running, one anchor run every DURATION (e.g. 10m)")
    a.add_argument(
        "--max-records", type=number_in(int, 1), default=1_000_000, help="leaves per batch (default 1000000)"
    )
    a.add_argument(
        "--receipt-timeout-s",
        type=number_in(float, 1),
        default=120.0,
        help="wait for a receipt this long (default 120)",
    )
    a.set_defaults(func=db_command(cmd_anchor))
    asub = a.add_subparsers(dest="anchor_cmd", metavar="[deploy|endorse|key]")

    d = asub.add_parser("deploy", help="deploy the RecordAnchor contract with its members and k")
    _add_chain_args(d, key=True, contract=False)
    d.add_argument("--members", metavar="ADDR,...", help="consortium member addresses, comma separated")
    d.add_argument(
        "--k",
        type=number_in(int, 1),
        default=1,
        help="members that must submit the same root to confirm it (default 1)",
    )
    d.set_defaults(func=cmd_deploy)

    e = asub.add_parser(
        "endorse",
        help="check other members' batches against this database's verified records and endorse those that match",
        description="For k-of-n: each other member runs this instead of `central anchor`. Every batch on the "
        "contract not yet stored here is rebuilt from this database's own verified records (device seq ranges "
        "read from its transaction); an identical root is endorsed and the batch stored here, so this member "
        "can prove its records too. Batches whose records are not all verified here yet wait for a later run.",
    )
    e.add_argument("--db", metavar="DSN", help="this member's central database")
    _add_chain_args(e, key=True, contract=True)
    e.add_argument("--every", metavar="DURATION", help="keep running, one pass every DURATION (e.g. 10m)")
    e.set_defaults(func=db_command(cmd_endorse))

    k = asub.add_parser("key", help="create a member's Ethereum key, or show its address")
    ksub = k.add_subparsers(dest="key_cmd", metavar="ACTION")
    ksub.required = True
    kn = ksub.add_parser("new", help="new secp256k1 key, written as hex with mode 0600; prints the address")
    kn.add_argument("--out", required=True, metavar="FILE", help="the key file to write (a file, not a folder)")
    kn.add_argument("--force", action="store_true", help="replace an existing key file")
    kn.set_defaults(func=cmd_key_new)
    ks = ksub.add_parser("show", help="the address of a key file (never the key)")
    ks.add_argument("--key", required=True, metavar="FILE")
    ks.set_defaults(func=cmd_key_show)

    p = cs.add_parser("prove", help="print a self-contained JSON inclusion proof for one anchored record")
    p.add_argument("--db", required=True, metavar="DSN")
    p.add_argument("--device", required=True)
    p.add_argument("--seq", required=True, type=number_in(int, 1))
    p.add_argument("--out", metavar="FILE", help="write the proof here instead of stdout")
    p.add_argument("--compact", action="store_true", help="one line, no indentation (about 300 bytes smaller)")
    p.set_defaults(func=db_command(cmd_prove))

    v = cs.add_parser(
        "verify-proof",
        help="check a proof: device signature, Merkle path to the root, and (with --rpc) the root on chain",
        description="Exit 0 only when every check holds: the record's signature with the device key (from the "
        "proof or --pubkey), the audit path leading to the root, and, asked directly over --rpc, the contract "
        "holding that root at that block with its confirmations. Without --rpc, say --offline to accept the "
        "first two alone.",
    )
    v.add_argument("proof", metavar="PROOF.json", help="the proof file, or - for stdin")
    v.add_argument("--rpc", metavar="URL", help="EVM JSON-RPC endpoint of the chain the proof names")
    v.add_argument("--pubkey", metavar="PEM", help="the device's public key (PEM) to use instead of the proof's")
    v.add_argument("--offline", action="store_true", help="check only the signature and the path (no chain)")
    v.add_argument("--json", action="store_true", help="the checks as JSON")
    v.set_defaults(func=cmd_verify_proof)


# ---------------------------------------------------------------- anchor


def cmd_anchor(args: argparse.Namespace) -> int:
    if args.max_records < 1:
        return fail(f"--max-records: expected at least 1, got {args.max_records}", EXIT_CONFIG)
    from edge_agent.central.anchor.run import AnchorSettings, anchor_once

    settings = AnchorSettings(max_records=args.max_records, receipt_timeout_s=args.receipt_timeout_s)

    def one(db: Any, contract: Any) -> bool:
        report = anchor_once(db, contract, settings)
        _print_report(report)
        return report.complete

    return _member_loop(args, "central anchor", one)


def cmd_endorse(args: argparse.Namespace) -> int:
    from edge_agent.central.anchor.run import endorse_once

    def one(db: Any, contract: Any) -> bool:
        report = endorse_once(db, contract)
        print(
            f"checked and stored {len(report.recorded)} batch(es) of other members, endorsed {len(report.endorsed)}; "
            f"{len(report.not_yet)} waiting for records not verified here yet; {len(report.mismatched)} mismatched"
        )
        for b in report.mismatched:
            print(f"batch {b}: this database's records give another root: NOT endorsed")
        return report.complete

    return _member_loop(args, "central anchor endorse", one)


def _member_loop(args: argparse.Namespace, what: str, one: Any) -> int:
    """Open the key, the database and the contract, then run `one` once or every --every until SIGTERM."""
    problem = _need(args, "db", "rpc", "contract", "key")
    if problem:
        return fail(f"{what}: {problem}", EXIT_CONFIG)
    try:
        every_s = parse_duration_s(args.every) if args.every else None
    except ValueError as exc:
        return fail(str(exc), EXIT_CONFIG)
    from edge_agent.central.anchor import store  # noqa: F401 - registers the anchor tables before open_db migrates
    from edge_agent.central.anchor.chain import AnchorContract, connect
    from edge_agent.central.anchor.ethkeys import load_eth_key
    from edge_agent.central.db import open_db

    try:
        account = load_eth_key(Path(args.key))
        db = open_db(args.db, must_exist=True)  # a mistyped path must not become an empty database
    except EdgeAgentError as exc:
        return fail(str(exc))
    stop = threading.Event()
    relay = SignalRelay(lambda _signum: stop.set()).start() if every_s is not None else None
    code = EXIT_OK
    try:
        while True:
            try:
                contract = AnchorContract(connect(args.rpc), args.contract, account)
                if not contract.is_member(account.address):
                    return fail(f"{account.address} is not a member of the anchor contract {contract.address}")
                code = EXIT_OK if one(db, contract) else EXIT_FAIL
            except EdgeAgentError as exc:
                if every_s is None:
                    return fail(str(exc))
                # A node restart or a network blip must not end a long-running run: try next time.
                log.warning("%s failed: %s; next try in %.0f s", what, exc, every_s)
                code = EXIT_FAIL
            if every_s is None or stop.wait(every_s):
                return code
    finally:
        if relay is not None:
            relay.stop()
        db.close()


def _print_report(report: Any) -> None:
    if not report.anchored and not report.waiting and not report.failed:
        print("nothing to anchor: no record verified since the last anchor")
        return
    print(
        f"anchored {len(report.anchored)} batch(es), {report.records} record(s)"
        + (f"; {len(report.recovered)} found on chain from an earlier run" if report.recovered else "")
        + (f"; endorsed {len(report.endorsed)}" if report.endorsed else "")
    )
    for b in report.waiting:
        print(f"batch {b}: sent, not mined yet; the next run checks it")
    for b in report.failed:
        print(f"batch {b}: not anchored (see the log); the next run tries again")


def cmd_deploy(args: argparse.Namespace) -> int:
    problem = _need(args, "rpc", "key", "members")
    if problem:
        return fail(f"central anchor deploy: {problem}", EXIT_CONFIG)
    from edge_agent.central.anchor.chain import connect, deploy
    from edge_agent.central.anchor.ethkeys import load_eth_key

    members = [m.strip() for m in args.members.split(",") if m.strip()]
    try:
        account = load_eth_key(Path(args.key))
        address, tx = deploy(connect(args.rpc), account, members, args.k)
    except EdgeAgentError as exc:
        return fail(str(exc))
    print(f"contract: {address}")
    print(f"tx:       {tx}")
    print(f"members:  {len(members)}, k = {args.k}")
    return EXIT_OK


def cmd_key_new(args: argparse.Namespace) -> int:
    from edge_agent.central.anchor.ethkeys import new_eth_key

    try:
        account = new_eth_key(Path(args.out), force=args.force)
    except EdgeAgentError as exc:
        return fail(str(exc))
    print(f"address: {account.address}")
    print(f"key:     {args.out} (mode 0600; fund this address on the chain and list it in --members)")
    return EXIT_OK


def cmd_key_show(args: argparse.Namespace) -> int:
    from edge_agent.central.anchor.ethkeys import load_eth_key

    try:
        print(load_eth_key(Path(args.key)).address)
    except EdgeAgentError as exc:
        return fail(str(exc))
    return EXIT_OK


# ---------------------------------------------------------------- prove / verify


def cmd_prove(args: argparse.Namespace) -> int:
    from edge_agent.central.anchor import store  # noqa: F401
    from edge_agent.central.anchor.proof import build_proof
    from edge_agent.central.db import open_db

    try:
        with open_db(args.db, must_exist=True) as db:
            proof = build_proof(db, args.device, args.seq)
    except EdgeAgentError as exc:
        return fail(str(exc))
    if args.compact:
        text = json.dumps(proof, separators=(",", ":"), ensure_ascii=False) + "\n"
    else:
        text = json.dumps(proof, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_verify_proof(args: argparse.Namespace) -> int:
    if not args.rpc and not args.offline:
        return fail(
            "verify-proof: give --rpc URL to check the root on chain, or --offline to check only the signature "
            "and the path",
            EXIT_CONFIG,
        )
    from edge_agent.central.anchor.chain import AnchorContract, connect
    from edge_agent.central.anchor.proof import verify_proof
    from edge_agent.spine.keys import load_public_keys

    try:
        text = sys.stdin.read() if args.proof == "-" else Path(args.proof).read_text(encoding="utf-8")
        proof = json.loads(text)
    except OSError as exc:
        return fail(f"{args.proof}: cannot read the proof: {exc.strerror}", EXIT_CONFIG)
    except json.JSONDecodeError as exc:
        return fail(f"{args.proof}: not JSON ({exc.msg} at line {exc.lineno})", EXIT_CONFIG)
    if not isinstance(proof, dict):
        return fail(f"{args.proof}: expected a JSON object, got {type(proof).__name__}", EXIT_CONFIG)
    try:
        public = load_public_keys(Path(args.pubkey))[0] if args.pubkey else None
        contract = None
        if args.rpc:
            address = str((proof.get("anchor") or {}).get("contract") or "")
            contract = AnchorContract(connect(args.rpc), address, check_code=False)
    except EdgeAgentError as exc:
        return fail(str(exc))
    checks = verify_proof(proof, public=public, contract=contract)
    ok = all(c.ok for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks]}))
    else:
        for c in checks:
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
        if not args.rpc:
            print("--   chain: not checked (--offline)")
        print("VERIFIED" if ok else "NOT VERIFIED")
    return EXIT_OK if ok else EXIT_FAIL


def register(sub: Any) -> None:
    """Add the anchor actions to the `central` group, whichever module created it (it is listed before us)."""
    central = sub.choices.get("central")
    if central is None:
        return
    for action in central._actions:
        if isinstance(action, argparse._SubParsersAction):
            register_anchor(action)
            return
