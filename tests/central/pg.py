"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, pg_ctl on a free loopback port, stop."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import weakref
from pathlib import Path

from tests.broker import free_port

START_TIMEOUT_S = 30


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return candidate
    raise RuntimeError(f"{name} not found: install Debian's postgresql package (see .ci/apt-packages.txt)")


def _run_as() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: use the `postgres` account Debian's package creates."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True, timeout=30)
        return pwd.getpwnam("postgres")


def _stop(pg_ctl: str, data: Path, user: pwd.struct_passwd | None) -> None:
    if (data / "postmaster.pid").exists():
        subprocess.run(
            [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            capture_output=True,
            timeout=30,
            check=False,
        )


class Postgres:
    """A real postgres server owned by the test session; `dsn()` gives a fresh database per call."""

    def __init__(self, base_dir: Path | None = None, *, durable: bool = False) -> None:
        self.durable = durable  # benchmarks: PostgreSQL's own durable defaults; tests: no fsync
        self.user = _run_as()
        self.dir = Path(tempfile.mkdtemp(prefix="pg-", dir=base_dir))
        self.data = self.dir / "data"
        self.port = free_port()
        self.initdb = _pg_bin("initdb")
        self.pg_ctl = _pg_bin("pg_ctl")
        self._n = 0

    def _as_owner(self, args: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
        u = self.user
        return subprocess.run(
            args,
            user=u.pw_uid if u else None,
            group=u.pw_gid if u else None,
            capture_output=True,
            timeout=START_TIMEOUT_S + 30,
            check=False,
            cwd=str(self.dir),
            **kw,  # type: ignore[arg-type]
        )

    def start(self) -> Postgres:
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        r = self._as_owner(
            [self.initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr.decode(errors='replace')[-2000:]}")
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} "
            "-c max_connections=50"
        )
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        r = self._as_owner(
            [
                self.pg_ctl,
                "-D",
                str(self.data),
                "-o",
                opts,
                "-l",
                str(self.dir / "log"),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "start",
            ]
        )
        if r.returncode != 0:
            log = (self.dir / "log").read_text(errors="replace") if (self.dir / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stderr.decode(errors='replace')}\n{log[-2000:]}")
        weakref.finalize(self, _stop, self.pg_ctl, self.data, self.user)
        return self

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh empty database on this server; returns its DSN."""
        import psycopg

        self._n += 1
        name = f"t{self._n}_{os.getpid()}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self) -> None:
        _stop(self.pg_ctl, self.data, self.user)
        shutil.rmtree(self.dir, ignore_errors=True)
