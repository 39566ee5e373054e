"""`edge-agent install-service`: system user, config and state folders, the systemd unit, enable."""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import subprocess
import sys
from importlib import resources
from pathlib import Path, PurePath, PurePosixPath

from edge_agent.cli.common import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, fail
from edge_agent.errors import EdgeAgentError
from edge_agent.settings import atomic_write

log = logging.getLogger(__name__)

UNIT_NAME = "edge-agent.service"
DEFAULT_USER = "edge-agent"
DEFAULT_VENV = Path("/opt/edge-agent/venv")
CONFIG_DIR = PurePosixPath("/etc/edge-agent")
STATE_DIR = PurePosixPath("/var/lib/edge-agent")
UNIT_DIR = PurePosixPath("/etc/systemd/system")
CONFIG_DIR_MODE = 0o750
STATE_DIR_MODE = 0o700
UNIT_MODE = 0o644
# Serial ports, cameras, HID scanners; the same list as SupplementaryGroups= in the unit.
DEVICE_GROUPS = ("dialout", "video", "input")
# useradd and systemctl are one-shot admin commands, not daemon loops: a Pi's
# daemon-reload can take several seconds, so they get longer than the 1 s rule.
COMMAND_TIMEOUT_S = 120.0

_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# systemd splits ExecStart= on whitespace and expands % and $: keep venv paths plain.
_SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._+/-]*$")


class InstallError(EdgeAgentError):
    """The service cannot be installed as asked (bad argument, missing file, a command failed)."""


def default_unit_path() -> Path:
    """The unit file: systemd/ of the checkout when running from one, else the copy shipped in the package."""
    checkout = Path(__file__).resolve().parent.parent / "systemd" / UNIT_NAME
    if checkout.is_file():
        return checkout
    return Path(str(resources.files("edge_agent.resources.systemd").joinpath(UNIT_NAME)))


def _under(root: Path, path: PurePosixPath) -> Path:
    """`path` (absolute on the target system) as seen from here, below `root`."""
    return root / path.relative_to("/")


def render_unit(text: str, *, venv: PurePath, user: str) -> str:
    """The unit with ExecStart= pointing at `venv`'s edge-agent and User=/Group= set to `user`."""
    out: list[str] = []
    found = False
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key == "ExecStart":
            args = value.split(maxsplit=1)
            rest = f" {args[1]}" if len(args) > 1 else ""
            out.append(f"ExecStart={venv}/bin/edge-agent{rest}")
            found = True
        elif sep and key in ("User", "Group"):
            out.append(f"{key}={user}")
        else:
            out.append(line)
    if not found:
        raise InstallError(f"{UNIT_NAME}: expected an ExecStart= line in the [Service] section, got none")
    return "\n".join(out) + "\n"


def _read_db(root: Path, name: str) -> dict[str, list[str]] | None:
    """<root>/etc/passwd or /etc/group as {name: fields}; None when the file is absent."""
    try:
        text = _under(root, PurePosixPath("/etc") / name).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    rows = (line.split(":") for line in text.splitlines() if line and not line.startswith("#"))
    return {row[0]: row for row in rows if len(row) >= 4}


def _ids(root: Path, user: str) -> tuple[int, int] | None:
    """uid and gid of `user` in the target's passwd file; None when unknown."""
    passwd = _read_db(root, "passwd")
    if passwd is None or user not in passwd:
        return None
    row = passwd[user]
    try:
        return int(row[2]), int(row[3])
    except ValueError:
        return None


def _group_gid(root: Path, group: str) -> int | None:
    groups = _read_db(root, "group")
    if groups is None or group not in groups:
        return None
    try:
        return int(groups[group][2])
    except ValueError:
        return None


def _run(cmd: list[str]) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise InstallError(f"{cmd[0]}: command not found (expected on Debian/Raspberry Pi OS)") from None
    except subprocess.TimeoutExpired:
        raise InstallError(f"{shlex.join(cmd)}: no answer within {COMMAND_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise InstallError(f"{shlex.join(cmd)}: failed with exit code {proc.returncode}: {' / '.join(tail)}")


def _check_names(user: str, venv: Path) -> PurePosixPath:
    if not _USER_RE.match(user):
        raise InstallError(
            f"--user: expected a system user name like edge-agent ([a-z_][a-z0-9_-]*, "
            f"at most 32 characters), got {user!r}"
        )
    if not _SAFE_PATH_RE.match(str(venv)):
        raise InstallError(
            f"--venv: expected an absolute path of letters, digits, '.', '_', '+', '-', got {str(venv)!r}"
        )
    return PurePosixPath(str(venv))


def _check_state_dir(root: Path) -> None:
    """Refuse a config whose state_dir is not the unit's: the sandbox lets the agent write only STATE_DIR, and the
    config folder is made group-readable, which would expose a device key kept below it (init --dir without
    --state-dir puts it in DIR/state)."""
    import tomllib

    path = _under(root, CONFIG_DIR / "config.toml")
    try:
        state_dir = tomllib.loads(path.read_text(encoding="utf-8")).get("state_dir", str(STATE_DIR))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return  # no config yet, or one `config check` reports: the folders are still right for the unit
    if isinstance(state_dir, str) and PurePosixPath(state_dir) != STATE_DIR:
        raise InstallError(
            f"{CONFIG_DIR}/config.toml: state_dir: expected {STATE_DIR} (the only folder the service may write), "
            f"got {state_dir!r}; nothing changed. Move that folder's files into {STATE_DIR}, run "
            f"`edge-agent config set state_dir {STATE_DIR}`, then install-service again"
        )


def _useradd_command(root: Path, user: str, *, chroot: bool) -> list[str]:
    """useradd for a system user in the device groups that exist on the target."""
    known_groups = _read_db(root, "group")
    groups = [g for g in DEVICE_GROUPS if known_groups is None or g in known_groups]
    for g in DEVICE_GROUPS:
        if g not in groups:
            log.warning("group %s does not exist on the target: the agent will not be in it", g)
    # Home is the state folder (never created by useradd), so nothing points at a missing /home/<user>.
    cmd = [
        "useradd",
        "--system",
        "--no-create-home",
        "--home-dir",
        str(STATE_DIR),
        "--shell",
        "/usr/sbin/nologin",
        "--user-group",
    ]
    if groups:
        cmd += ["--groups", ",".join(groups)]
    if chroot:
        cmd += ["--root", str(root)]
    return [*cmd, user]


def _owner_spec(root: Path, user: str, *, chroot: bool) -> tuple[str, str]:
    """Owner and group for chown: names, or the target's numbers when installing into another root."""
    ids = _ids(root, user)
    if not chroot or ids is None:
        return user, user
    # chown would look names up in this system's passwd, not the target's: use numbers.
    gid = _group_gid(root, user)
    return str(ids[0]), str(gid if gid is not None else ids[1])


def install_service(
    unit_src: Path,
    *,
    root: Path = Path("/"),
    user: str = DEFAULT_USER,
    venv: Path,
    dry_run: bool,
    write: bool = True,
) -> list[str]:
    """Install edge-agent as a systemd service below `root`; return the commands run (or, dry, to run).

    Folders and the unit are written below `root` unless not `write` (a dry run on the live system, which
    then writes nothing and lists them as would-be steps); commands (useradd, chown, chmod, systemctl) run
    only when not `dry_run`. With a `root` other than "/" (an image being built) useradd and systemctl act
    on that root, chown uses the target's numeric ids and daemon-reload is skipped.
    """
    venv_p = _check_names(user, venv)
    root = root.absolute()  # useradd --root and systemctl --root take absolute paths only
    try:
        unit_text = Path(unit_src).read_text(encoding="utf-8")
    except OSError as exc:
        raise InstallError(f"{unit_src}: cannot read the unit file: {exc.strerror}") from None
    rendered = render_unit(unit_text, venv=venv_p, user=user)
    _check_state_dir(root)
    executable = _under(root, venv_p / "bin" / "edge-agent")
    if (not dry_run or not write) and not os.access(executable, os.X_OK):
        raise InstallError(
            f"--venv: expected {venv_p}/bin/edge-agent to be an executable below {root}, "
            "got none (pip install edge-agent into that venv first)"
        )
    chroot = root.resolve() != Path("/")
    commands: list[list[str]] = []

    def run(cmd: list[str]) -> None:
        commands.append(cmd)
        if not dry_run:
            _run(cmd)

    # 1. the system user, only when missing
    if _ids(root, user) is None:
        run(_useradd_command(root, user, chroot=chroot))

    # 2. folders: config readable by the agent's group only, state private to the agent.
    #    Files made earlier by a root `edge-agent init` get the same owners (keys stay 0600).
    config_dir = _under(root, CONFIG_DIR)
    state_dir = _under(root, STATE_DIR)
    for folder, mode in ((config_dir, CONFIG_DIR_MODE), (state_dir, STATE_DIR_MODE)):
        if write:
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(mode)
        else:
            commands.append(["install", "-d", "-m", f"{mode:o}", str(folder)])
    owner, group = _owner_spec(root, user, chroot=chroot)
    run(["chown", "-R", f"root:{group}", str(config_dir)])
    run(["chmod", "-R", "g+rX,g-w,o=", str(config_dir)])
    run(["chown", "-R", f"{owner}:{group}", str(state_dir)])

    # 3. the unit, with ExecStart pointing at this venv
    unit_path = _under(root, UNIT_DIR / UNIT_NAME)
    if write:
        atomic_write(unit_path, rendered.encode("utf-8"), mode=UNIT_MODE)
        log.info("wrote %s", unit_path)
    else:
        commands.append(["write", str(unit_path), f"(mode {UNIT_MODE:o}; ExecStart={venv_p}/bin/edge-agent run)"])

    # 4. systemd picks it up and starts it at boot
    if chroot:
        run(["systemctl", f"--root={root}", "enable", UNIT_NAME])
    else:
        run(["systemctl", "daemon-reload"])
        run(["systemctl", "enable", UNIT_NAME])
    return [shlex.join(c) for c in commands]


# ---------------------------------------------------------------- CLI


def _default_venv() -> Path:
    """The venv this edge-agent runs from, when it runs from one; else /opt/edge-agent/venv."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix)
    return DEFAULT_VENV


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `install-service` subcommand."""
    s = subparsers.add_parser(
        "install-service",
        help="install the systemd unit, the edge-agent user and folders, and enable the service (as root)",
    )
    s.add_argument(
        "--venv",
        type=Path,
        default=None,
        help=f"venv holding edge-agent (default: the running one, else {DEFAULT_VENV})",
    )
    s.add_argument("--user", default=DEFAULT_USER, help=f"system user to run as (default: {DEFAULT_USER})")
    s.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="install into this root file system (an image being built); default /",
    )
    s.add_argument("--unit", type=Path, default=None, help="unit file to install (default: the shipped one)")
    s.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be done; below --root DIR (an image) the files are written there, on the live "
        "system nothing is",
    )
    s.set_defaults(func=cmd_install_service)


def cmd_install_service(args: argparse.Namespace) -> int:
    root: Path = args.root
    if os.geteuid() != 0 and not args.dry_run and root.resolve() == Path("/"):
        return fail(
            "install-service must run as root (sudo edge-agent install-service), or pass --dry-run or --root DIR",
            EXIT_FAIL,
        )
    venv: Path = args.venv if args.venv is not None else _default_venv()
    try:
        commands = install_service(
            args.unit or default_unit_path(),
            root=root,
            user=args.user,
            venv=venv,
            dry_run=args.dry_run,
            # A dry run on the live system writes nothing; below --root DIR (an image) it writes its files.
            write=not (args.dry_run and root.resolve() == Path("/")),
        )
    except InstallError as exc:
        return fail(str(exc), EXIT_CONFIG)
    for cmd in commands:
        print(("would run: " if args.dry_run else "ran: ") + cmd)
    unit = _under(root, UNIT_DIR / UNIT_NAME)
    print(f"unit: {unit}")
    if not _under(root, CONFIG_DIR / "config.toml").exists():
        print(
            f"next: create {CONFIG_DIR}/config.toml (edge-agent init --dir {CONFIG_DIR} "
            f"--state-dir {STATE_DIR} ...), then: systemctl start edge-agent"
        )
    else:
        print("next: systemctl restart edge-agent; journalctl -u edge-agent -f")
    return EXIT_OK
