"""A throwaway PostgreSQL cluster for tests: initdb into a temporary folder,
``pg_ctl start`` on a free loopback port, databases on demand, and everything
stopped and removed afterwards (also when a test or the start fails).

Nothing here needs a PostgreSQL already running or configured on the machine,
only its server binaries (``initdb``, ``pg_ctl``, ``postgres``): on PATH, or in
Debian's ``/usr/lib/postgresql/<version>/bin``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

# initdb and postgres refuse to run as root; as root the cluster belongs to
# this account (Debian's packages create it).
OS_USER = "postgres"
SUPERUSER = "postgres"


class PostgresUnavailable(Exception):
    """The PostgreSQL server binaries (or a user to run them) are missing."""


def find_binaries() -> Path:
    """The folder holding initdb, pg_ctl and postgres, or PostgresUnavailable."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    # Debian and Ubuntu keep the server binaries off PATH.
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if all((folder / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH "
        "or in /usr/lib/postgresql/*/bin: install PostgreSQL 15 (Debian: apt-get install "
        "postgresql-15), or set SMDP_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    """One running throwaway cluster; ``dsn(name)`` reaches one of its databases."""

    bindir: Path
    root: Path
    port: int
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    def create_database(self) -> str:
        """A new, empty database; its DSN."""
        name = f"smdp_test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as db:
            db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        assert isinstance(name, str)
        with psycopg.connect(self.dsn(), autocommit=True) as db:
            # FORCE: a server process a failed test left behind must not keep
            # the database (and the cluster's teardown) hostage.
            db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", OS_USER, "--", *cmd]
    return ["su", OS_USER, "-s", "/bin/sh", "-c", shlex.join(cmd)]


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    done = subprocess.run(_as_owner(cmd), cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stdout}{done.stderr}")


@contextlib.contextmanager
def cluster() -> Iterator[PgCluster]:
    """Start a throwaway cluster; stop it and delete its files on the way out."""
    bindir = find_binaries()
    uid = gid = -1
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(OS_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root, but there is no {OS_USER!r} user to own the test cluster "
                "(initdb refuses root)"
            ) from None
        uid, gid = owner.pw_uid, owner.pw_gid
    # Not pytest's tmp_path: that lives under a root-only folder the cluster's
    # owner could not enter.
    root = Path(tempfile.mkdtemp(prefix="smdp-pg-"))
    started = False
    try:
        if uid >= 0:
            os.chown(root, uid, gid)
        pg = PgCluster(bindir, root, 0)
        _run([str(bindir / "initdb"), "-D", str(pg.data), "-U", SUPERUSER, "-A", "trust",
              "-E", "UTF8", "--no-locale", "--no-sync"], root, "initdb")
        for _attempt in range(3):
            # A free port can be taken between the check and the bind: retry.
            pg.port = _free_port()
            with (pg.data / "postgresql.conf").open("a") as conf:
                conf.write(
                    "\n# smdp tests\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"port = {pg.port}\n"
                    f"unix_socket_directories = '{root}'\n"
                    "fsync = on\n"  # the durability the store relies on, tested as deployed
                    "shared_buffers = 16MB\n"
                    "max_connections = 60\n"
                    "max_wal_size = 256MB\n"
                    # New WAL segments are not zero-filled first (a copy-on-write
                    # file system does not need it; here it only costs time).
                    "wal_init_zero = off\n"
                )
            done = subprocess.run(
                _as_owner([str(bindir / "pg_ctl"), "-D", str(pg.data), "-l", str(pg.logfile),
                           "-w", "-t", "60", "start"]),
                cwd=root, capture_output=True, text=True, timeout=90, check=False,
            )
            if done.returncode == 0:
                started = True
                break
        if not started:
            raise RuntimeError(f"pg_ctl start failed: {done.stdout}{done.stderr}\n{pg.log()}")
        yield pg
    finally:
        if started:
            subprocess.run(
                _as_owner([str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate",
                           "-w", "-t", "30", "stop"]),
                cwd=root, capture_output=True, timeout=60, check=False,
            )
        shutil.rmtree(root, ignore_errors=True)
