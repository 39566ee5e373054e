"""Who may sign in to the station: the operators file, PINs and badges hashed with scrypt, checked in constant time.

File format (TOML; mode 0600, or 0640 in a folder shared with the agent's group), written by
`python -m edge_agent.station.operators add FILE ID`:

    [[operator]]
    id = "han.mei"
    role = "supervisor"          # "operator" (default) or "supervisor": sees the queue history
    pin = "scrypt$16384$8$1$<salt>$<hash>"
    badge = "scrypt$16384$8$1$<salt>$<hash>"   # optional: the badge's barcode, hashed too
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import os
import re
import secrets
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from edge_agent.errors import ConfigError
from edge_agent.files import atomic_write

if TYPE_CHECKING:
    from tomlkit import TOMLDocument

Role = Literal["operator", "supervisor"]
ROLES: tuple[Role, ...] = ("operator", "supervisor")
# scrypt cost: n=2**14, r=8 takes ~16 MB and ~50 ms on a Pi 4 per check: slow for guessing, fine for a sign-in.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
ID_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
PIN_RE = re.compile(r"^[0-9]{4,12}$")


def hash_secret(secret: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """`scrypt$n$r$p$salt$hash` (urlsafe base64) of a PIN or badge code."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def check_secret(secret: str, stored: str) -> bool:
    """True when `secret` hashes to `stored`; False for any malformed stored value."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.urlsafe_b64decode(digest)
        got = hashlib.scrypt(
            secret.encode(),
            salt=base64.urlsafe_b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 1024 * 1024,
            dklen=len(want),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


@dataclass(frozen=True, slots=True)
class Operator:
    id: str
    role: Role
    pin: str | None  # scrypt hash
    badge: str | None  # scrypt hash


def load_operators(path: Path) -> dict[str, Operator]:  # noqa: PLR0912 - one message per problem, all at once
    """Read and check the operators file; every problem names the file and the entry."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the operators file: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    entries = data.get("operator", [])
    problems: list[str] = []
    if not isinstance(entries, list):
        raise ConfigError([f"{path}: operator: expected a list of [[operator]] tables, got {type(entries).__name__}"])
    out: dict[str, Operator] = {}
    for i, e in enumerate(entries):
        where = f"{path}: operator[{i}]"
        if not isinstance(e, dict):
            problems.append(f"{where}: expected a table, got {type(e).__name__}")
            continue
        unknown = sorted(set(e) - {"id", "role", "pin", "badge"})
        if unknown:
            problems.append(f"{where}.{unknown[0]}: unknown key (expected id, role, pin, badge)")
        oid, role = e.get("id"), e.get("role", "operator")
        if not isinstance(oid, str) or not ID_RE.match(oid):
            problems.append(f"{where}.id: expected 1-64 letters, digits or ._@-, got {oid!r}")
            continue
        if role not in ROLES:
            problems.append(f"{where}.role: expected one of {', '.join(ROLES)}, got {role!r}")
            continue
        pin, badge = e.get("pin"), e.get("badge")
        for key, value in (("pin", pin), ("badge", badge)):
            if value is not None and not (isinstance(value, str) and value.startswith("scrypt$")):
                problems.append(
                    f"{where}.{key}: expected a scrypt hash from `python -m edge_agent.station.operators add`, "
                    "got something else (never put a PIN in clear)"
                )
        if pin is None and badge is None:
            problems.append(f"{where}: expected a pin or a badge hash, got neither")
        if oid in out:
            problems.append(f"{where}.id: {oid!r} appears twice")
        out[oid] = Operator(oid, role, pin if isinstance(pin, str) else None, badge if isinstance(badge, str) else None)
    if problems:
        raise ConfigError(problems)
    return out


def authenticate(operators: dict[str, Operator], who: str, pin: str) -> Operator | None:
    """An operator id and PIN, or a badge scan alone (pin empty): the operator, or None."""
    who = who.strip()
    if pin:
        op = operators.get(who)
        if op is None or op.pin is None:
            check_secret(pin, hash_secret("x", n=2**10))  # same shape of work either way
            return None
        return op if check_secret(pin, op.pin) else None
    if not who:
        return None
    for op in operators.values():
        if op.badge is not None and check_secret(who, op.badge):
            return op
    return None


# ---------------------------------------------------------------- `python -m edge_agent.station.operators add`


def read_operators_doc(path: Path) -> TOMLDocument:
    """The operators file as an editable document (empty when the file is new); refuse anything else.

    The agent's own config.toml given by mistake must stay untouched: an operators file holds
    [[operator]] tables and nothing else, so any other key means another file.
    """
    import tomlkit

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise ConfigError(
                [
                    f"{path}: the folder {path.parent} does not exist; expected an existing folder "
                    "(create it, or fix the path)"
                ]
            ) from None
        return tomlkit.document()
    except IsADirectoryError:
        raise ConfigError(
            [f"{path}: is a folder; expected the operators FILE to write, e.g. {path / 'operators.toml'}"]
        ) from None
    except OSError as exc:
        raise ConfigError(
            [f"{path}: cannot read the operators file: {exc.strerror or exc} (check the path and its rights)"]
        ) from None
    try:
        doc = tomlkit.parse(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomlkit.exceptions.ParseError) as exc:
        raise ConfigError(
            [f"{path}: not valid TOML ({exc}); expected an operators file of [[operator]] tables, left it unchanged"]
        ) from None
    for key in doc:
        if key != "operator":
            raise ConfigError(
                [
                    f"{path}: found key {key!r}, but an operators file holds only [[operator]] tables: this looks like "
                    "another file (the agent's config.toml?); left it unchanged, give the operators file's path"
                ]
            )
    table = doc.get("operator")
    if table is not None and not isinstance(table, tomlkit.items.AoT):
        raise ConfigError(
            [f"{path}: operator: expected [[operator]] tables, got {type(table).__name__}; left it unchanged"]
        )
    return doc


def _write_operators(path: Path, text: str) -> None:
    """Replace the file atomically, readable by whom it was before and never by others.

    The station reads the file inside the agent, which runs as the service user (systemd/edge-agent.service);
    install-service makes /etc/edge-agent root:edge-agent 0750 and its files 0640. So an existing file keeps its
    owner, group and mode less any bits for others (never wider); a new file is 0640 with the folder's group
    when the folder is shared with its group and closed to others (as install-service makes it), else 0600.
    """
    target = path.resolve()  # through a symlink: the link stays, its target is replaced
    groups = {os.getegid(), *os.getgroups()}
    root = os.geteuid() == 0
    try:
        st = target.stat()
    except FileNotFoundError:
        st = None
    if st is not None:
        if not root and (st.st_uid != os.geteuid() or st.st_gid not in groups):
            raise ConfigError(
                [f"{path}: cannot keep its owner and group ({st.st_uid}:{st.st_gid}); run as root or as its owner"]
            )
        mode, owner = stat.S_IMODE(st.st_mode) & 0o770, (st.st_uid, st.st_gid)
    else:
        fst = target.parent.stat()
        shared = fst.st_mode & 0o010 and not fst.st_mode & 0o007
        # The folder's group is ours to give only as root or as one of its members: else private to us.
        if shared and (root or fst.st_gid in groups):
            mode, owner = 0o640, (-1, fst.st_gid)
        else:
            mode, owner = 0o600, None
    atomic_write(target, text.encode("utf-8"), mode=mode, owner=owner)


def add_operator(path: Path, oid: str, role: Role, pin: str | None, badge: str | None) -> None:
    """Add or replace one operator in the file; any other file is refused and left untouched."""
    import tomlkit

    if not ID_RE.match(oid):
        raise ConfigError([f"operator id: expected 1-64 letters, digits or ._@-, got {oid!r}"])
    if pin is not None and not PIN_RE.match(pin):
        raise ConfigError(["PIN: expected 4 to 12 digits"])
    doc = read_operators_doc(path)
    table = doc.get("operator")
    if table is None:
        table = tomlkit.aot()
        doc["operator"] = table
    entry = tomlkit.table()
    entry["id"], entry["role"] = oid, role
    if pin is not None:
        entry["pin"] = hash_secret(pin)
    if badge is not None:
        entry["badge"] = hash_secret(badge)
    kept = [t for t in table if t.get("id") != oid]
    table.clear()
    for t in [*kept, entry]:
        table.append(t)
    try:
        _write_operators(path, tomlkit.dumps(doc))
    except OSError as exc:
        raise ConfigError(
            [f"{path}: cannot write the operators file: {exc.strerror or exc} (check the folder's rights)"]
        ) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge_agent.station.operators", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add", help="add or replace an operator; asks for the PIN (or reads it from stdin)")
    a.add_argument("file", type=Path)
    a.add_argument("id")
    a.add_argument("--role", choices=ROLES, default="operator")
    a.add_argument("--badge", action="store_true", help="also ask for the badge's barcode (scan it)")
    a.add_argument("--no-pin", action="store_true", help="badge only")
    args = ap.parse_args(argv)
    interactive = sys.stdin.isatty()
    try:
        read_operators_doc(args.file)  # a wrong path is said before the PIN is typed
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2

    def ask(prompt: str) -> str:
        return getpass.getpass(prompt) if interactive else sys.stdin.readline().strip()

    pin = None if args.no_pin else ask("PIN (4-12 digits): ")
    badge = ask("scan the badge: ") if args.badge else None
    try:
        add_operator(args.file, args.id, args.role, pin, badge)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    print(f"operator {args.id} ({args.role}) saved in {args.file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
