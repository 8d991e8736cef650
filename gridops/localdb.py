"""The embedded database: a private PostgreSQL + PostGIS cluster in a folder of its own.

`make demo` keeps one under ``var/pg/``; the test suite makes a throwaway one in a temporary
folder. The server listens on 127.0.0.1 only (no Unix socket, whose path length is limited),
on a free port, with a random password kept in ``cluster.json`` (mode 0600) beside the data.
When run as root the server runs as the ``postgres`` user, because initdb refuses root.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import psycopg

Mode = Literal["demo", "test"]

INSTALL_HINT = (
    "Install PostgreSQL and PostGIS from the distribution packages "
    "(Debian/Ubuntu: `sudo apt-get install postgresql postgresql-15-postgis-3`, "
    "or simply run `make demo`), or set GRIDOPS_DATABASE_URL to an existing PostGIS database."
)

# Tests trade durability for speed; the demo keeps PostgreSQL's safe defaults.
TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "60",
}
COMMON_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "timezone": "'Asia/Shanghai'",
    "log_timezone": "'Asia/Shanghai'",
}


class LocalDBError(RuntimeError):
    """The local cluster cannot be set up or reached; the message says what to do."""


class MissingBinaryError(LocalDBError):
    pass


@dataclass
class ClusterState:
    port: int
    user: str
    password: str
    dbname: str
    mode: str


def find_bindir() -> Path:
    """The folder holding initdb/pg_ctl/postgres, preferring the newest Debian version."""
    override = os.environ.get("GRIDOPS_PG_BINDIR")
    candidates: list[Path] = []
    if override:
        candidates.append(Path(override))
    else:
        debian = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        candidates.extend(debian)
        on_path = shutil.which("pg_ctl")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise MissingBinaryError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found"
        + (f" in {override}" if override else "")
        + ". "
        + INSTALL_HINT
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As PostgreSQL does, so that connections lingering in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _running_as_root() -> bool:
    return os.geteuid() == 0


class LocalCluster:
    """A PostgreSQL cluster owned by gridops under ``base`` (data in ``base/data``)."""

    def __init__(self, base: Path | str, *, mode: Mode = "demo", dbname: str = "gridops") -> None:
        self.base = Path(base).absolute()
        self.mode: Mode = mode
        self.dbname = dbname
        self.data_dir = self.base / "data"
        self.log_file = self.base / "log" / "server.log"
        self.state_file = self.base / "cluster.json"

    # -- state -----------------------------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return self.state_file.is_file() and (self.data_dir / "PG_VERSION").is_file()

    def state(self) -> ClusterState:
        if not self.state_file.is_file():
            raise LocalDBError(
                f"No local database in {self.base}: run `gridops db start` "
                "or set GRIDOPS_DATABASE_URL."
            )
        return ClusterState(**json.loads(self.state_file.read_text()))

    def _save_state(self, state: ClusterState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.state_file)

    def url(self, dbname: str | None = None) -> str:
        state = self.state()
        return (
            f"postgresql+psycopg://{state.user}:{state.password}@127.0.0.1:{state.port}/"
            f"{dbname or state.dbname}"
        )

    # -- running commands as the server's user ---------------------------------------------

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if _running_as_root():
            if shutil.which("runuser") is None:
                raise MissingBinaryError("runuser (util-linux) is needed to run PostgreSQL as root")
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self._as_server_user(argv), capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise LocalDBError(
                f"`{' '.join(argv[:2])}` failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()}" + self._log_tail()
            )
        return proc

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-8:]
        except OSError:
            return ""
        return "\nServer log (last lines):\n" + "\n".join(lines) if lines else ""

    def _give_to_server_user(self, *paths: Path) -> None:
        if not _running_as_root():
            return
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise MissingBinaryError(
                "Running as root needs the `postgres` system user to own the server. "
                + INSTALL_HINT
            ) from exc
        for path in paths:
            os.chown(path, pg.pw_uid, pg.pw_gid)
        self._make_reachable(self.base)

    def _make_reachable(self, path: Path) -> None:
        """Let the postgres user traverse every folder above the cluster (search bit only)."""
        for folder in [path, *path.parents]:
            mode = folder.stat().st_mode
            if not mode & 0o001:
                probe = subprocess.run(
                    ["runuser", "-u", "postgres", "--", "test", "-x", str(folder)],
                    capture_output=True,
                    check=False,
                )
                if probe.returncode != 0:
                    folder.chmod(mode | 0o001)

    # -- lifecycle -------------------------------------------------------------------------

    def init(self) -> None:
        """Create the cluster if it does not exist yet (idempotent)."""
        if self.initialised:
            return
        bindir = find_bindir()
        if self.data_dir.exists() and not (self.data_dir / "PG_VERSION").is_file():
            shutil.rmtree(self.data_dir)  # a half-made cluster from an interrupted init
        self.base.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700)
        self.log_file.parent.mkdir(exist_ok=True)
        self.log_file.touch()
        state = ClusterState(
            port=free_port(),
            user="gridops",
            password=secrets.token_urlsafe(18),
            dbname=self.dbname,
            mode=self.mode,
        )
        pwfile = self.base / "log" / ".initpw"
        pwfile.write_text(state.password + "\n")
        self._give_to_server_user(self.data_dir, self.log_file.parent, self.log_file, pwfile)
        try:
            self._run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    state.user,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        settings = dict(COMMON_SETTINGS)
        if self.mode == "test":
            settings.update(TEST_SETTINGS)
        conf = "\n".join(f"{key} = {value}" for key, value in settings.items())
        conf_path = self.data_dir / "postgresql.conf"
        with conf_path.open("a") as fh:
            fh.write(f"\n# gridops ({self.mode})\n{conf}\n")
        self._save_state(state)

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").is_file():
            return False
        bindir = find_bindir()
        proc = self._run([str(bindir / "pg_ctl"), "status", "-D", str(self.data_dir)], check=False)
        return proc.returncode == 0

    def start(self) -> str:
        """Initialise if needed, start if stopped, make sure the database and PostGIS exist.

        Returns the SQLAlchemy URL. Safe to call any number of times.
        """
        self.init()
        state = self.state()
        if not self.is_running():
            if not port_is_free(state.port):
                state.port = free_port()
                self._save_state(state)
            bindir = find_bindir()
            self._run(
                [
                    str(bindir / "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-o",
                    f"-p {state.port}",
                ]
            )
        self._wait_ready(state)
        self.create_database(state.dbname)
        return self.url()

    def _connect(self, dbname: str = "postgres") -> psycopg.Connection:
        state = self.state()
        return psycopg.connect(
            host="127.0.0.1",
            port=state.port,
            user=state.user,
            password=state.password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )

    def _wait_ready(self, state: ClusterState, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._connect():
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise LocalDBError(
                        f"PostgreSQL did not accept connections on port {state.port}: {exc}"
                        + self._log_tail()
                    ) from exc
                time.sleep(0.2)

    def create_database(self, dbname: str) -> None:
        """Create ``dbname`` with PostGIS if it is missing (idempotent)."""
        with self._connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{dbname}"')
        with self._connect(dbname) as conn:
            available = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'"
            ).fetchone()
            if available is None:
                raise MissingBinaryError(
                    "PostGIS is not installed for this PostgreSQL. " + INSTALL_HINT
                )
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")

    def drop_database(self, dbname: str) -> None:
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    def stop(self) -> bool:
        """Stop the server; returns False when it was not running."""
        if not self.is_running():
            return False
        bindir = find_bindir()
        self._run([str(bindir / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data_dir)])
        return True

    def status(self) -> dict[str, object]:
        info: dict[str, object] = {
            "base": str(self.base),
            "initialised": self.initialised,
            "running": self.is_running() if self.initialised else False,
        }
        if self.initialised:
            state = self.state()
            info.update(port=state.port, database=state.dbname, mode=state.mode)
        return info

    def destroy(self) -> None:
        """Stop and delete the whole cluster folder (used for throwaway test clusters)."""
        with contextlib.suppress(LocalDBError):
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def default_base() -> Path:
    """``$GRIDOPS_VAR_DIR/pg``, by default ``var/pg`` in the project folder."""
    from gridops.config import var_dir

    return var_dir() / "pg"
