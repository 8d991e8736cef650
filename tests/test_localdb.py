"""The embedded cluster: start, status, restart, idempotence and clear errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from gridops.cli import main
from gridops.localdb import LocalCluster, MissingBinaryError


@pytest.fixture(scope="module")
def own_cluster():
    base = Path(tempfile.mkdtemp(prefix="gridops-localdb-"))
    cluster = LocalCluster(base, mode="test")
    yield cluster
    cluster.destroy()


def _query(cluster: LocalCluster, sql: str):
    state = cluster.state()
    with psycopg.connect(
        host="127.0.0.1",
        port=state.port,
        user=state.user,
        password=state.password,
        dbname=state.dbname,
        autocommit=True,
    ) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def test_start_is_idempotent_and_has_postgis(own_cluster):
    url = own_cluster.start()
    assert url.startswith("postgresql+psycopg://gridops:")
    assert own_cluster.start() == url  # second start: same URL, nothing new
    assert _query(own_cluster, "SELECT postgis_lib_version()")[0][0].startswith("3.")
    assert _query(own_cluster, "SHOW fsync") == [("off",)]  # test mode


def test_state_file_is_private(own_cluster):
    own_cluster.start()
    assert own_cluster.state_file.stat().st_mode & 0o077 == 0


def test_stop_and_restart_keeps_data_and_moves_off_a_taken_port(own_cluster):
    own_cluster.start()
    _query(own_cluster, "CREATE TABLE IF NOT EXISTS kept (x int); INSERT INTO kept VALUES (1)")
    assert own_cluster.stop() is True
    assert own_cluster.status()["running"] is False
    assert own_cluster.stop() is False
    old_port = own_cluster.state().port
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", old_port))
    blocker.listen()
    try:
        own_cluster.start()
    finally:
        blocker.close()
    assert own_cluster.state().port != old_port
    assert _query(own_cluster, "SELECT count(*) FROM kept")[0][0] >= 1


def test_cli_status_and_url(own_cluster):
    own_cluster.start()
    runner = CliRunner()
    status = runner.invoke(main, ["db", "status", "--json", "--base", str(own_cluster.base)])
    assert status.exit_code == 0, status.output
    info = json.loads(status.output)
    assert info["running"] is True and info["port"] == own_cluster.state().port
    url = runner.invoke(main, ["db", "url", "--base", str(own_cluster.base)])
    assert url.output.strip() == own_cluster.url()


def test_cli_status_of_missing_cluster_exits_3(tmp_path):
    result = CliRunner().invoke(main, ["db", "status", "--base", str(tmp_path / "none")])
    assert result.exit_code == 3
    assert "gridops db start" in result.output


def test_missing_binaries_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("GRIDOPS_PG_BINDIR", str(tmp_path))
    with pytest.raises(MissingBinaryError, match="apt-get install postgresql"):
        LocalCluster(tmp_path / "pg").start()
    result = CliRunner().invoke(main, ["db", "start", "--base", str(tmp_path / "pg")])
    assert result.exit_code == 1
    assert "apt-get install" in result.output


def test_start_after_a_crash_recovers(own_cluster):
    """A power cut or reboot leaves a stale postmaster.pid; start must just work."""
    own_cluster.start()
    _query(own_cluster, "CREATE TABLE IF NOT EXISTS crash (x int); INSERT INTO crash VALUES (7)")
    _query(own_cluster, "CHECKPOINT")  # test clusters run without fsync/synchronous commit
    pid = int((own_cluster.data_dir / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while _alive(pid) or _server_children(own_cluster):
        assert time.monotonic() < deadline, "postmaster did not go away"
        time.sleep(0.1)
    assert (own_cluster.data_dir / "postmaster.pid").exists()  # stale, as after a reboot
    own_cluster.start()
    assert _query(own_cluster, "SELECT x FROM crash") == [(7,)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _server_children(cluster: LocalCluster) -> bool:
    """Backends of the killed postmaster still holding its shared memory."""
    port = str(cluster.state().port)
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return any(line.startswith("postgres:") and port in line for line in out.splitlines())
