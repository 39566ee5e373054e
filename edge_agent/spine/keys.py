"""Ed25519 device keys: generation, mode-0600 storage, key ids and public-key export."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.errors import KeyError_


def key_id_for(public: Ed25519PublicKey) -> str:
    """`ed25519:` + the first 16 hex digits of SHA-256 over the 32 raw public-key bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_raw_b64(public: Ed25519PublicKey) -> str:
    import base64

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class DeviceKey:
    private: Ed25519PrivateKey
    key_id: str

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def generate_key(path: Path, *, force: bool = False, what: str = "device key") -> DeviceKey:
    """Write a new Ed25519 key (PKCS#8 PEM, mode 0600); refuse to overwrite unless force."""
    if path.exists() and not force:
        raise KeyError_(f"{path}: a {what} already exists; refusing to overwrite it (use --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return DeviceKey(private, key_id_for(private.public_key()))


def load_key(path: Path, *, check_mode: bool = True) -> DeviceKey:
    """Read the device key; refuse a key readable by group or others."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyError_(
            f"{path}: device key not found (make one with `edge-agent keys generate`; init makes one with a new config)"
        ) from None
    except OSError as exc:
        raise KeyError_(f"{path}: cannot reach the device key ({exc.strerror or exc}); check its folder") from None
    if not stat.S_ISREG(st.st_mode):  # before its mode: `chmod 600` is no remedy for a folder
        raise KeyError_(f"{path}: expected the device key file, got a folder or device")
    if check_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyError_(
            f"{path}: key file mode is {stat.S_IMODE(st.st_mode):04o}, expected 0600 (run: chmod 600 {path})"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(
            f"{path}: cannot read the device key ({exc.strerror or exc}); it must belong to the user the agent "
            f"runs as (chown, then chmod 600 {path})"
        ) from None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"{path}: not a PEM Ed25519 private key ({exc})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyError_(f"{path}: expected an Ed25519 private key, got {type(private).__name__}")
    return DeviceKey(private, key_id_for(private.public_key()))


MAX_PUBLIC_KEY_FILE_BYTES = 64 * 1024


def load_public_keys(path: Path) -> list[Ed25519PublicKey]:
    """Read one or more PEM public keys (SubjectPublicKeyInfo) from a file."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang the agent; only regular files are read.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise KeyError_(f"{path}: expected a PEM public key file, got a device, FIFO or folder")
            # A key file is a few hundred bytes; /dev/zero or a huge file must not fill memory.
            data = f.read(MAX_PUBLIC_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read public key file: {exc.strerror}") from None
    if len(data) > MAX_PUBLIC_KEY_FILE_BYTES:
        raise KeyError_(f"{path}: expected a PEM public key file, got more than {MAX_PUBLIC_KEY_FILE_BYTES} bytes")
    keys: list[Ed25519PublicKey] = []
    marker = b"-----BEGIN PUBLIC KEY-----"
    for chunk in data.split(marker)[1:]:
        try:
            key = serialization.load_pem_public_key(marker + chunk)
        except ValueError as exc:
            raise KeyError_(f"{path}: malformed PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyError_(f"{path}: expected an Ed25519 public key, got {type(key).__name__}")
        keys.append(key)
    if not keys:
        raise KeyError_(f"{path}: expected a PEM public key ('-----BEGIN PUBLIC KEY-----'), found none")
    return keys
