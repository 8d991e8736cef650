"""Backup and restore on the Foshan demo: `gridops backup`, `backup verify`, `restore`.

The demo is loaded once into a database of its own, with a few case photos stored. The backup
is made while another connection keeps writing patrol points, so the figures in the manifest
must come from the dump's own snapshot for `verify` to pass.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, make_url, pool, text
from sqlalchemy.orm import Session

from gridops import migrate
from gridops.backup import (
    DUMP_NAME,
    MANIFEST,
    SUMS,
    BackupError,
    compare_stats,
    database_stats,
    find_pg_tool,
    libpq_env,
    read_manifest,
    sha256_file,
    tool_major,
)
from gridops.cli import main
from gridops.demo import load_demo
from gridops.incidents.case_photos import PhotoStore, PhotoWrites, attach_photos, prepare_photos
from tests.test_case_photos import camera_jpeg, png


def new_database(server_url: str, *, schema: bool = False) -> str:
    """A new PostGIS database on the test server (``schema``: migrated, tables empty)."""
    name = f"gridops_bk_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
    engine.dispose()
    if schema:
        migrate.upgrade(url)
    return url


def drop_database(server_url: str, url: str) -> None:
    admin = create_engine(server_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def stats(url: str) -> dict:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as raw:
            conn = raw.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                return database_stats(conn)
    finally:
        engine.dispose()


def scalar(url: str, sql: str):
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def gridops(args: list[str], url: str, photo_dir: Path):
    env = {"GRIDOPS_DATABASE_URL": url, "GRIDOPS_PHOTO_DIR": str(photo_dir)}
    return CliRunner().invoke(main, args, env=env)


def store_photos(url: str, photo_dir: Path) -> list[str]:
    """Three case photos on demo incidents, stored the way intake stores them."""
    store = PhotoStore(photo_dir)
    engine = create_engine(url, poolclass=pool.NullPool)
    paths = []
    with Session(engine) as session:
        ids = session.execute(text("SELECT id FROM incident ORDER BY id LIMIT 2")).scalars().all()
        for case_id, uploads in zip(
            ids, ([camera_jpeg()], [png(), camera_jpeg(640, 480)]), strict=True
        ):
            with PhotoWrites(store) as writes:
                attach_photos(session, writes, case_id, prepare_photos(uploads, store.limits))
                session.commit()
        paths = session.execute(text("SELECT path FROM incident_photo ORDER BY id")).scalars().all()
    engine.dispose()
    return paths


@pytest.fixture(scope="module")
def demo_db(database_url, demo_data, tmp_path_factory) -> Iterator[dict]:
    """The loaded demo in a database of its own, with three case photos and a patroller."""
    url = new_database(database_url, schema=True)
    photo_dir = tmp_path_factory.mktemp("photos")
    try:
        engine = create_engine(url, poolclass=pool.NullPool)
        with Session(engine) as session:
            load_demo(session, demo_data, log=lambda _: None)
            from gridops.auth.service import create_user

            patroller = create_user(
                session, f"patroller-{uuid.uuid4().hex[:6]}", "Lychee-Bridge-47x"
            )
            session.commit()
        engine.dispose()
        photos = store_photos(url, photo_dir)
        yield {"url": url, "photos": photo_dir, "photo_paths": photos, "patroller": patroller}
    finally:
        drop_database(database_url, url)


class Writer:
    """Another client that keeps committing patrol points (with geometry) during a backup."""

    def __init__(self, url: str, user_id: int) -> None:
        self.engine = create_engine(url, poolclass=pool.NullPool)
        self.user_id = user_id
        self.stop = threading.Event()
        self.written = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                conn.execute(
                    text(
                        "INSERT INTO patrol_point (user_id, recorded_at, geom, accuracy_m) "
                        "VALUES (:user, clock_timestamp(), ST_SetSRID(ST_MakePoint("
                        "113.1 + random() / 10, 23.0 + random() / 10), 4326), 5)"
                    ),
                    {"user": self.user_id},
                )
                conn.commit()
                self.written += 1
                time.sleep(0.005)

    def __enter__(self) -> Writer:
        self.thread.start()
        while self.written < 20:  # writing for sure before the backup starts
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.engine.dispose()


@pytest.fixture(scope="module")
def backup(demo_db, tmp_path_factory) -> dict:
    """One backup of the demo, made with `gridops backup` while a writer commits."""
    out = tmp_path_factory.mktemp("backups") / "demo"
    with Writer(demo_db["url"], demo_db["patroller"]) as writer:
        started = time.perf_counter()
        result = gridops(["backup", "--out", str(out)], demo_db["url"], demo_db["photos"])
        seconds = time.perf_counter() - started
        during = writer.written
    assert result.exit_code == 0, result.output
    after = scalar(demo_db["url"], "SELECT count(*) FROM patrol_point")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"\nbackup: {size / 1e6:.1f} MB in {seconds:.1f} s (incl. CLI start)")
    return {"dir": out, "written_during": during, "points_after": after, "output": result.output}


def copy_of(backup: dict, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(backup["dir"], target)
    return target


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# -- backup ----------------------------------------------------------------------------------


def test_backup_holds_dump_photos_and_a_complete_manifest(backup, demo_db):
    folder = backup["dir"]
    manifest = read_manifest(folder)
    assert "backup written to" in backup["output"]
    assert sorted(p.name for p in folder.iterdir()) == [SUMS, DUMP_NAME, MANIFEST, "photos"]
    # Every photo file of the photo folder (photo and thumbnail of each stored photo).
    photo_entries = {f["path"]: f for f in manifest["files"] if f["path"].startswith("photos/")}
    assert len(photo_entries) == 2 * len(demo_db["photo_paths"]) == 6
    for rel in demo_db["photo_paths"]:
        entry = photo_entries[f"photos/{rel}"]
        original = demo_db["photos"] / rel
        assert entry["size"] == original.stat().st_size
        assert entry["sha256"] == sha256_file(original) == sha256_file(folder / entry["path"])
    assert manifest["dump"]["sha256"] == sha256_file(folder / DUMP_NAME)
    assert manifest["photos_referenced"] == 6 and manifest["photos_missing"] == []
    database = manifest["database"]
    assert database["schema_revision"] == migrate.head_revision()
    assert database["server_version"].startswith("15") and database["postgis_version"]
    assert database["snapshot"]
    tables = manifest["tables"]
    assert tables["public.incident"]["rows"] == 50_000
    assert tables["public.incident_photo"]["rows"] == 3
    assert set(tables["public.unit_grid"]["geometry"]) == {"geom"}
    assert "public.spatial_ref_sys" not in tables  # PostGIS's own, made by CREATE EXTENSION
    assert manifest["created_at"].endswith("+00:00")
    # SHA256SUMS is what `sha256sum -c` reads.
    check = subprocess.run(["sha256sum", "--check", "--quiet", SUMS], cwd=folder, check=False)
    assert check.returncode == 0


def test_manifest_figures_come_from_the_dump_snapshot_while_the_app_writes(backup):
    """Points were committed before, during and after the snapshot; the manifest has exactly
    the snapshot's count, which is neither the starting nor the final count."""
    manifest = read_manifest(backup["dir"])
    in_backup = manifest["tables"]["public.patrol_point"]["rows"]
    assert 20 <= in_backup < backup["points_after"]
    assert backup["written_during"] >= 20


# -- verify ----------------------------------------------------------------------------------


def test_verify_restores_into_a_scratch_database_and_everything_matches(backup, demo_db):
    before = scalar(demo_db["url"], "SELECT count(*) FROM pg_database")
    started = time.perf_counter()
    result = gridops(["backup", "verify", str(backup["dir"])], demo_db["url"], demo_db["photos"])
    print(f"\nverify: {time.perf_counter() - started:.1f} s (incl. CLI start)")
    assert result.exit_code == 0, result.output
    assert "verify OK" in result.output
    incident = next(line for line in result.output.splitlines() if "public.incident " in line)
    assert incident.split()[1:] == ["50000", "50000", "ok", "ok", "ok"]
    assert "MISMATCH" not in result.output
    # The scratch database is gone again.
    assert scalar(demo_db["url"], "SELECT count(*) FROM pg_database") == before


def test_verify_names_a_tampered_dump_and_does_not_restore_it(backup, demo_db, tmp_path):
    folder = copy_of(backup, tmp_path)
    dump = folder / DUMP_NAME
    flip_byte(dump, dump.stat().st_size // 2)
    result = gridops(["backup", "verify", str(folder)], demo_db["url"], demo_db["photos"])
    assert result.exit_code == 1, result.output
    assert f"BAD {DUMP_NAME}: SHA-256 does not match the manifest" in result.output
    assert "the dump was not restored" in result.output


def test_verify_finds_missing_extra_and_edited_files(backup, demo_db, tmp_path):
    folder = copy_of(backup, tmp_path)
    (folder / ("photos/" + demo_db["photo_paths"][0])).unlink()
    (folder / "photos" / "stray.jpg").write_bytes(b"not ours")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["photos_referenced"] = 7
    (folder / MANIFEST).write_text(json.dumps(manifest))
    result = gridops(["backup", "verify", str(folder)], demo_db["url"], demo_db["photos"])
    assert result.exit_code == 1
    assert f"BAD photos/{demo_db['photo_paths'][0]}: missing" in result.output
    assert "BAD photos/stray.jpg: not in the manifest" in result.output
    assert f"BAD {MANIFEST}: does not match its digest in {SUMS}" in result.output


def test_verify_names_a_tampered_photo_and_each_table_that_differs(backup, demo_db, tmp_path):
    """One run reports everything: a photo whose bytes changed, and tables whose figures in a
    (consistently re-signed) manifest disagree with the restored dump."""
    folder = copy_of(backup, tmp_path)
    photo = "photos/" + demo_db["photo_paths"][1]
    flip_byte(folder / photo, 200)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["tables"]["public.unit_grid"]["geometry"]["geom"] = "0" * 32
    manifest["tables"]["public.enterprise"]["rows"] += 1
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    digest = sha256_file(folder / MANIFEST)
    sums = [
        f"{digest}  {MANIFEST}" if line.endswith(f"  {MANIFEST}") else line
        for line in (folder / SUMS).read_text().splitlines()
    ]
    (folder / SUMS).write_text("\n".join(sums) + "\n")

    result = gridops(["backup", "verify", str(folder)], demo_db["url"], demo_db["photos"])
    assert result.exit_code == 1, result.output
    assert f"BAD {photo}: SHA-256 does not match the manifest" in result.output
    assert "files: 7 listed, 1 problem(s)" in result.output
    rows = {
        line.split()[0]: line.split()[1:]
        for line in result.output.splitlines()
        if line.startswith("public.")
    }
    assert rows["public.unit_grid"][2:] == ["differs:", "geom", "ok", "MISMATCH"]
    expected, restored = rows["public.enterprise"][:2]
    assert int(expected) == int(restored) + 1 and rows["public.enterprise"][-1] == "MISMATCH"
    assert rows["public.incident"][-1] == "ok"
    assert "verify FAILED" in result.output


def test_verify_of_a_folder_without_manifest_fails_clearly(demo_db, tmp_path):
    result = gridops(["backup", "verify", str(tmp_path)], demo_db["url"], demo_db["photos"])
    assert result.exit_code == 1
    assert "not a complete backup: it has no manifest.json" in result.output


# -- restore ---------------------------------------------------------------------------------


@pytest.fixture
def empty_target(database_url) -> Iterator[str]:
    url = new_database(database_url)
    yield url
    drop_database(database_url, url)


def test_restore_into_an_empty_database_then_over_it_only_with_yes(
    backup, demo_db, empty_target, tmp_path
):
    photos = tmp_path / "restored-photos"
    manifest = read_manifest(backup["dir"])
    result = gridops(["restore", str(backup["dir"])], empty_target, photos)
    assert result.exit_code == 0, result.output
    assert "restore OK" in result.output
    assert "photos: 6 written, 0 already in place" in result.output
    assert stats(empty_target) == manifest["tables"]  # counts, row and geometry checksums
    for rel in demo_db["photo_paths"]:
        assert sha256_file(photos / rel) == sha256_file(demo_db["photos"] / rel)
    # Sequences came back too: the next case gets a fresh id.
    next_id = scalar(empty_target, "SELECT nextval('incident_id_seq')")
    assert next_id > scalar(empty_target, "SELECT max(id) FROM incident")

    # Someone moves one point and damages one photo: the geometry checksum sees the move
    # although every count stays the same.
    engine = create_engine(empty_target, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE service_outlet SET geom = ST_Translate(geom, 0.00001, 0) "
                "WHERE id = (SELECT min(id) FROM service_outlet)"
            )
        )
    engine.dispose()
    flip_byte(photos / demo_db["photo_paths"][0], 50)
    changed = stats(empty_target)
    checks = {c.table: c for c in compare_stats(manifest["tables"], changed)}
    outlet = checks["public.service_outlet"]
    assert outlet.expected_rows == outlet.actual_rows
    assert (outlet.geometry, outlet.ok) == ("differs: geom", False)
    assert all(c.ok for name, c in checks.items() if name != "public.service_outlet")

    # The database now has tables: without --yes nothing is touched.
    result = gridops(["restore", str(backup["dir"])], empty_target, photos)
    assert result.exit_code == 1
    assert "is not empty" in result.output and "--yes" in result.output
    assert stats(empty_target) == changed
    assert sha256_file(photos / demo_db["photo_paths"][0]) != sha256_file(
        demo_db["photos"] / demo_db["photo_paths"][0]
    )

    # With --yes the backup replaces the contents: the point and the photo are as backed up.
    result = gridops(["restore", str(backup["dir"]), "--yes"], empty_target, photos)
    assert result.exit_code == 0, result.output
    assert "photos: 1 written, 5 already in place" in result.output
    assert stats(empty_target) == manifest["tables"]
    for rel in demo_db["photo_paths"]:
        assert sha256_file(photos / rel) == sha256_file(demo_db["photos"] / rel)


def test_restore_refuses_a_migrated_database_without_yes(backup, database_url, tmp_path):
    target = new_database(database_url, schema=True)  # tables, no cases
    try:
        before = stats(target)
        result = gridops(["restore", str(backup["dir"])], target, tmp_path / "photos")
        assert result.exit_code == 1
        assert "is not empty" in result.output and "--yes" in result.output
        assert stats(target) == before and not (tmp_path / "photos").exists()
    finally:
        drop_database(database_url, target)


def test_restore_refuses_tables_the_backup_does_not_have(backup, demo_db, empty_target, tmp_path):
    engine = create_engine(empty_target, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE newer_feature (id int PRIMARY KEY)"))
    engine.dispose()
    result = gridops(["restore", str(backup["dir"]), "--yes"], empty_target, tmp_path / "p")
    assert result.exit_code == 1
    assert "public.newer_feature" in result.output and "another schema revision" in result.output
    assert scalar(empty_target, "SELECT to_regclass('public.incident')") is None


def test_restore_refuses_a_damaged_backup_and_writes_nothing(
    backup, demo_db, empty_target, tmp_path
):
    folder = copy_of(backup, tmp_path)
    flip_byte(folder / ("photos/" + demo_db["photo_paths"][2]), 100)
    photos = tmp_path / "photos"
    result = gridops(["restore", str(folder)], empty_target, photos)
    assert result.exit_code == 1
    assert "nothing was restored" in result.output
    assert demo_db["photo_paths"][2] in result.output
    assert not photos.exists()
    assert scalar(empty_target, "SELECT to_regclass('public.incident')") is None


# -- interrupted backups ---------------------------------------------------------------------


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_a_backup_with_a_bad_database_url_leaves_nothing(demo_db, tmp_path):
    bad = make_url(demo_db["url"]).set(password="wrong").render_as_string(hide_password=False)
    out = tmp_path / "backups" / "b"
    result = gridops(["backup", "--out", str(out)], bad, demo_db["photos"])
    assert result.exit_code == 1
    assert "password authentication failed" in result.output
    assert "wrong" not in result.output  # the password is never echoed
    assert leftovers(out.parent) == []


def test_a_backup_that_fails_half_way_leaves_nothing(demo_db, tmp_path):
    """pg_dump cannot lock a table that a schema change holds: the backup fails after the dump
    and the photo copy began, and no folder (complete-looking or partial) remains."""
    out = tmp_path / "backups" / "b"
    engine = create_engine(demo_db["url"], poolclass=pool.NullPool)
    with engine.connect() as conn:
        conn.execute(text("LOCK TABLE work_calendar_year IN ACCESS EXCLUSIVE MODE"))
        result = gridops(
            ["backup", "--out", str(out), "--lock-timeout", "1"], demo_db["url"], demo_db["photos"]
        )
        conn.rollback()
    engine.dispose()
    assert result.exit_code == 1, result.output
    assert "lock" in result.output
    assert leftovers(out.parent) == []


def test_a_killed_backup_leaves_no_folder_that_looks_complete(demo_db, tmp_path):
    """`gridops backup` killed mid-way (SIGKILL, no clean-up): the final name never appears,
    and what is left is a hidden partial folder that verify refuses."""
    out = tmp_path / "backups" / "b"
    out.parent.mkdir()
    engine = create_engine(demo_db["url"], poolclass=pool.NullPool)
    env = {
        **os.environ,
        "GRIDOPS_DATABASE_URL": demo_db["url"],
        "GRIDOPS_PHOTO_DIR": str(demo_db["photos"]),
    }
    gridops_bin = Path(sys.executable).parent / "gridops"
    with engine.connect() as conn:
        # Held, so that pg_dump waits for it: the process is surely killed mid-backup.
        conn.execute(text("LOCK TABLE work_calendar_year IN ACCESS EXCLUSIVE MODE"))
        proc = subprocess.Popen(
            [str(gridops_bin), "backup", "--out", str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: pg_dump dies with it
        )
        try:
            deadline = time.monotonic() + 60
            while not any((p / DUMP_NAME).exists() for p in out.parent.iterdir()):
                assert time.monotonic() < deadline, "the backup never started its dump"
                assert proc.poll() is None, "the backup ended before it could be killed"
                time.sleep(0.1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        conn.rollback()
    engine.dispose()
    assert not out.exists()
    (partial,) = list(out.parent.iterdir())
    assert partial.name.startswith(".b.partial-")
    assert not (partial / MANIFEST).exists()
    result = gridops(["backup", "verify", str(partial)], demo_db["url"], demo_db["photos"])
    assert result.exit_code == 1
    assert "not a complete backup" in result.output


# -- tools and credentials -------------------------------------------------------------------


def test_credentials_go_to_the_tools_environment_decoded():
    env = libpq_env("postgresql://ops:p%40ss%3Aw%25rd@db.example:6543/city?sslmode=require")
    assert env == {
        "PGHOST": "db.example",
        "PGPORT": "6543",
        "PGUSER": "ops",
        "PGPASSWORD": "p@ss:w%rd",
        "PGDATABASE": "city",
        "PGSSLMODE": "require",
    }


def test_the_pg_dump_matching_the_server_is_found_and_an_older_one_refused(database_url):
    server_major = int(scalar(database_url, "SHOW server_version_num")) // 10000
    tool = find_pg_tool("pg_dump", server_major)
    assert tool_major(tool) == server_major
    with pytest.raises(BackupError, match="pg_dump for PostgreSQL 99 or newer was not found"):
        find_pg_tool("pg_dump", 99)
