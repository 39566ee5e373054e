"""Ethereum account keys for the anchor: created and read with eth-account, stored 0600, never logged."""

from __future__ import annotations

import stat
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from edge_agent.errors import KeyError_
from edge_agent.files import atomic_write


def new_eth_key(path: Path, *, force: bool = False) -> LocalAccount:
    """Write a fresh secp256k1 private key as one line of hex, mode 0600; refuse to overwrite unless force."""
    if path.is_dir():
        # `central keygen --out DIR` takes a folder; this one names the file, --force or not.
        raise KeyError_(
            f"{path}: is a folder; --out is the key FILE to write, e.g. --out {path / 'anchor.key'} "
            "(unlike `central keygen --out DIR`)"
        )
    if path.exists() and not force:
        raise KeyError_(f"{path}: an Ethereum key already exists; refusing to overwrite it (use --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    account: LocalAccount = Account.create()
    # atomic_write: a fresh temporary name, 0600 before the key is in it, removed if anything fails.
    atomic_write(path, (account.key.hex().removeprefix("0x") + "\n").encode("ascii"), mode=0o600)
    return account


def load_eth_key(path: Path) -> LocalAccount:
    """Read a hex private key file; refuse one readable by group or others, and say what is wrong without the key."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyError_(
            f"{path}: Ethereum key not found (create one with `edge-agent central anchor key new --out {path}`)"
        ) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyError_(
            f"{path}: key file mode is {stat.S_IMODE(st.st_mode):04o}, expected 0600 (run: chmod 600 {path})"
        )
    try:
        text = path.read_text(encoding="ascii").strip().removeprefix("0x")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyError_(f"{path}: cannot read the Ethereum key: {exc.__class__.__name__}") from None
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        # Never echo the content: it may be a key in another format.
        raise KeyError_(f"{path}: expected one line of 64 hex digits (a secp256k1 private key), found something else")
    try:
        account: LocalAccount = Account.from_key(bytes.fromhex(text))
    except ValueError:
        raise KeyError_(f"{path}: not a valid secp256k1 private key (out of range)") from None
    return account
