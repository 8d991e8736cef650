"""Backups: a pg_dump of the database plus the photo files, with a checksummed manifest.

A backup is a folder::

    database.dump   pg_dump --format=custom
    photos/…        a copy of GRIDOPS_PHOTO_DIR (the same relative paths)
    manifest.json   every file's size and SHA-256, the schema revision, the server and PostGIS
                    versions, and per table the row count and checksums of its rows and of
                    each geometry column
    SHA256SUMS      the same digests plus the manifest's, for ``sha256sum -c``

Consistency while the app keeps writing: one REPEATABLE READ transaction exports its snapshot
and pg_dump runs with ``--snapshot``, so the dump and the manifest's counts and checksums see
the same database state. The photos are copied after the snapshot was taken; a photo file is
written before its row commits (see ``incidents.case_photos``), so every row in the dump has
its files in the copy (later uploads are copied too, as harmless extras).

Atomicity: everything is written into a hidden ``.<name>.partial-…`` sibling folder that is
renamed to its final name only when the manifest is complete; a failure removes it, and a
killed process leaves a folder that is hidden, named partial and has no manifest.

``verify_backup`` checks every digest, restores the dump into a scratch database on the same
server and compares the tables with the manifest. ``restore_backup`` puts a backup back
(pg_restore --clean --if-exists --no-owner in one transaction, then the photos) and compares
the same figures afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, make_url, pool, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

FORMAT = "gridops-backup"
FORMAT_VERSION = 1
DUMP_NAME = "database.dump"
PHOTOS = "photos"
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
CHUNK = 1024 * 1024
LOCK_NOT_AVAILABLE = "55P03"

# Session settings under which row text is the same on every server and in every session,
# so that a row's checksum depends on its values only.
STABLE_TEXT_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "statement_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
}

# libpq connection parameters that may come in the URL's query string, and their variables.
LIBPQ_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "gssencmode": "PGGSSENCMODE",
}

# Tables whose columns name files under the photo folder (relative paths).
PHOTO_REFERENCES = {"public.incident_photo": ("path", "thumb_path")}


class BackupError(RuntimeError):
    """A backup cannot be made, read or restored; the message says why and what to do."""


Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# -- connections and tools ---------------------------------------------------------------


def _url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _engine(url: str | URL) -> Engine:
    parsed = _url(url) if isinstance(url, str) else url
    # No pool: every connection here is long and single; no statement timeout either.
    return create_engine(
        parsed,
        poolclass=pool.NullPool,
        connect_args={"connect_timeout": 10, "options": "-c jit=off"},
    )


def libpq_env(url: str | URL) -> dict[str, str]:
    """The libpq variables (PGHOST, PGPASSWORD …) that connect pg_dump/pg_restore to ``url``.

    Passed in the environment so that the password never shows in a process list.
    """
    parsed = _url(url) if isinstance(url, str) else url
    env: dict[str, str] = {}
    if parsed.host:
        env["PGHOST"] = parsed.host
    if parsed.port:
        env["PGPORT"] = str(parsed.port)
    if parsed.username:
        env["PGUSER"] = parsed.username
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    if parsed.database:
        env["PGDATABASE"] = parsed.database
    for key, value in parsed.query.items():
        if key in LIBPQ_ENV:
            env[LIBPQ_ENV[key]] = value if isinstance(value, str) else value[-1]
    return env


def _tool_env(url: str | URL) -> dict[str, str]:
    env = dict(os.environ)
    # A service file or another database in the caller's environment must not redirect us.
    for name in ("PGSERVICE", "PGSERVICEFILE", "PGDATABASE", "PGHOST", "PGHOSTADDR", "PGPORT"):
        env.pop(name, None)
    env.update(libpq_env(url))
    return env


def _conninfo_dbname(name: str) -> str:
    # pg_restore -d takes a conninfo string; quoting makes any database name safe in it.
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def tool_major(tool: Path) -> int | None:
    """The PostgreSQL major version of a client tool (``pg_dump --version``), None if unknown."""
    try:
        out = subprocess.run(
            [str(tool), "--version"], capture_output=True, text=True, check=False, timeout=20
        ).stdout
    except OSError:
        return None
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(found.group(1)) if found else None


def find_pg_tool(name: str, server_major: int) -> Path:
    """pg_dump or pg_restore for a server of ``server_major``: the same major if installed
    (GRIDOPS_PG_BINDIR, then /usr/lib/postgresql/<major>/bin as the local cluster uses), else
    the oldest newer one, else the one on PATH if it is new enough (docker's client package).
    An older tool than the server refuses to dump it, so it is never picked."""
    candidates: list[Path] = []
    override = os.environ.get("GRIDOPS_PG_BINDIR")
    if override:
        candidates.append(Path(override) / name)
    debian = Path("/usr/lib/postgresql")
    candidates.append(debian / str(server_major) / "bin" / name)
    newer = sorted(
        (p for p in debian.glob("*/bin") if p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
    )
    candidates.extend(p / name for p in newer if int(p.parent.name) > server_major)
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    seen: list[str] = []
    for tool in candidates:
        if not (tool.is_file() and os.access(tool, os.X_OK)):
            continue
        major = tool_major(tool)
        seen.append(f"{tool} ({major})")
        if major is not None and major >= server_major:
            return tool
    raise BackupError(
        f"{name} for PostgreSQL {server_major} or newer was not found"
        + (f" (found: {', '.join(seen)})" if seen else "")
        + f". Install the client (Debian: `apt-get install postgresql-client-{server_major}`) "
        "or set GRIDOPS_PG_BINDIR to its bin folder."
    )


def _run_tool(argv: list[str], url: str | URL, what: str) -> None:
    proc = subprocess.run(argv, env=_tool_env(url), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BackupError(f"{what} failed ({proc.returncode}): {_tail(proc.stderr)}")


def _tail(stderr: str, lines: int = 12) -> str:
    kept = [line for line in stderr.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:]) or "(no message)"


def _db_error(exc: DBAPIError, url: str | URL) -> BackupError:
    parsed = _url(url) if isinstance(url, str) else url
    reason = str(exc.orig) if exc.orig is not None else str(exc)
    reason = reason.strip().splitlines()[0] if reason.strip() else type(exc).__name__
    return BackupError(
        f"cannot use database {parsed.database!r} on {parsed.host}:{parsed.port}: {reason}"
    )


# -- what the database holds --------------------------------------------------------------


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _stable_session(conn: Connection) -> None:
    for name, value in STABLE_TEXT_SETTINGS.items():
        conn.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})


def user_tables(conn: Connection) -> list[tuple[str, str, int]]:
    """(schema, table, oid) of every table pg_dump dumps as ours: not a system table, not a
    member of an extension (PostGIS's spatial_ref_sys comes with CREATE EXTENSION)."""
    rows = conn.execute(
        text(
            "SELECT n.nspname, c.relname, c.oid::bigint FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' "
            "AND n.nspname NOT LIKE 'pg\\_%' "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
            "AND d.objid = c.oid AND d.deptype = 'e') "
            "ORDER BY 1, 2"
        )
    ).all()
    return [(r[0], r[1], int(r[2])) for r in rows]


def extension_tables(conn: Connection) -> list[str]:
    """schema.table of the tables that belong to extensions (their data is the extension's)."""
    return list(
        conn.execute(
            text(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid "
                "AND d.deptype = 'e' WHERE c.relkind IN ('r', 'p') ORDER BY 1"
            )
        ).scalars()
    )


def table_stats(conn: Connection, oid: int, schema: str, table: str) -> dict[str, Any]:
    """Row count, a checksum of every row and one per geometry column, in primary-key order.

    ``content_md5`` is the md5 of the rows' md5s (of their text form, geometry included);
    ``geometry`` maps each geometry/geography column to the md5 of its rows' EWKB md5s.
    Text keys are ordered with the C collation, so the order does not depend on the server.
    """
    key = conn.execute(
        text(
            "SELECT a.attname, a.attcollation <> 0 FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = :oid AND i.indisprimary ORDER BY k.ord"
        ),
        {"oid": oid},
    ).all()
    geometry_columns = list(
        conn.execute(
            text(
                "SELECT a.attname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                "WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped "
                "AND t.typname IN ('geometry', 'geography') ORDER BY a.attnum"
            ),
            {"oid": oid},
        ).scalars()
    )
    row = "_gridops_row"
    row_md5 = f"md5({row}::text)"
    if key:
        order = ", ".join(
            f"{row}.{_qi(name)}" + (' COLLATE "C"' if collatable else "")
            for name, collatable in key
        )
    else:
        order = f'{row_md5} COLLATE "C"'  # no key: the rows' own digests give the order
    parts = [
        "count(*)",
        f"md5(coalesce(string_agg({row_md5}, '' ORDER BY {order}), ''))",
    ]
    for column in geometry_columns:
        digest = f"coalesce(md5(ST_AsEWKB({row}.{_qi(column)}::geometry)), '-')"
        parts.append(f"md5(coalesce(string_agg({digest}, '' ORDER BY {order}), ''))")
    values = conn.execute(
        text(f"SELECT {', '.join(parts)} FROM {_qi(schema)}.{_qi(table)} AS {row}")
    ).one()
    return {
        "rows": int(values[0]),
        "content_md5": values[1],
        "geometry": dict(zip(geometry_columns, values[2:], strict=True)),
    }


def database_stats(conn: Connection) -> dict[str, dict[str, Any]]:
    """``table_stats`` of every user table, keyed ``schema.table``. Run it inside one
    transaction (REPEATABLE READ) to get one consistent picture."""
    _stable_session(conn)
    stats = {}
    for schema, table, oid in user_tables(conn):
        try:
            stats[f"{schema}.{table}"] = table_stats(conn, oid, schema, table)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                raise BackupError(
                    f"table {schema}.{table} is locked by another session (a schema change?) "
                    "for longer than the lock timeout; try again later"
                ) from exc
            raise
    return stats


def server_facts(conn: Connection) -> dict[str, Any]:
    """Server and PostGIS versions, extensions and the Alembic schema revision."""
    facts: dict[str, Any] = {
        "server_version": conn.execute(text("SHOW server_version")).scalar_one(),
        "server_version_num": int(conn.execute(text("SHOW server_version_num")).scalar_one()),
        "extensions": {
            name: {"version": version, "schema": schema}
            for name, version, schema in conn.execute(
                text(
                    "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e "
                    "JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY 1"
                )
            ).all()
        },
        "postgis_version": None,
        "schema_revision": None,
    }
    if "postgis" in facts["extensions"]:
        facts["postgis_version"] = conn.execute(text("SELECT postgis_lib_version()")).scalar()
    if conn.execute(text("SELECT to_regclass('public.alembic_version')")).scalar() is not None:
        facts["schema_revision"] = conn.execute(
            text("SELECT string_agg(version_num, ',' ORDER BY version_num) FROM alembic_version")
        ).scalar()
    return facts


def referenced_photos(conn: Connection) -> set[str]:
    """Relative paths of the photo files the database's rows point at."""
    paths: set[str] = set()
    for qualified, columns in PHOTO_REFERENCES.items():
        if conn.execute(text("SELECT to_regclass(:t)"), {"t": qualified}).scalar() is None:
            continue
        schema, table = qualified.split(".", 1)
        for column in columns:
            paths.update(
                conn.execute(
                    text(
                        f"SELECT {_qi(column)} FROM {_qi(schema)}.{_qi(table)} "
                        f"WHERE {_qi(column)} IS NOT NULL"
                    )
                ).scalars()
            )
    return paths


# -- files --------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_hashed(source: Path, target: Path) -> tuple[int, str]:
    """Copy a file, fsync it, and return (size, sha256) of the bytes written."""
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return size, digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def photo_files(photo_dir: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, absolute path) of every regular photo file, sorted; hidden files
    (uploads being written, ``.upload-*.tmp``) and symlinks are left out."""
    if not photo_dir.is_dir():
        return
    found: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(photo_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            found.append((path.relative_to(photo_dir).as_posix(), path))
    yield from sorted(found)


def _copy_photos(photo_dir: Path, target: Path) -> list[dict[str, Any]]:
    entries = []
    for rel, source in photo_files(photo_dir):
        destination = target / rel
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            size, digest = _copy_hashed(source, destination)
        except FileNotFoundError:
            continue  # removed while we walked (an upload whose transaction failed)
        entries.append({"path": f"{PHOTOS}/{rel}", "size": size, "sha256": digest})
    return entries


# -- backup -------------------------------------------------------------------------------


@dataclass
class BackupResult:
    path: Path
    manifest: dict[str, Any]
    seconds: float
    missing_photos: list[str] = field(default_factory=list)

    @property
    def dump_bytes(self) -> int:
        return int(self.manifest["dump"]["size"])

    @property
    def photo_count(self) -> int:
        return sum(1 for f in self.manifest["files"] if f["path"].startswith(PHOTOS + "/"))

    @property
    def total_bytes(self) -> int:
        return sum(int(f["size"]) for f in self.manifest["files"])


def default_backup_dir() -> Path:
    from gridops.config import var_dir

    return var_dir() / "backups" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def create_backup(
    url: str,
    photo_dir: Path,
    out: Path | None = None,
    *,
    lock_timeout_s: float = 60.0,
    log: Log = _quiet,
) -> BackupResult:
    """Write a backup of the database at ``url`` and of ``photo_dir`` into ``out`` (which must
    not exist; default ``var/backups/<UTC time>``). All or nothing: on any failure no folder
    of that name appears. ``lock_timeout_s`` bounds the wait behind a schema change's lock."""
    started = time.perf_counter()
    final = (out or default_backup_dir()).absolute()
    if final.exists():
        raise BackupError(f"{final} already exists; give another --out")
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        manifest, missing = _write_backup(_url(url), Path(photo_dir), work, lock_timeout_s, log)
        manifest["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        _write_manifest(work, manifest)
        os.rename(work, final)  # the only step that makes the backup visible under its name
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BackupResult(final, manifest, time.perf_counter() - started, missing)


def _write_backup(
    url: URL, photo_dir: Path, work: Path, lock_timeout_s: float, log: Log
) -> tuple[dict[str, Any], list[str]]:
    engine = _engine(url)
    lock_ms = max(1, int(lock_timeout_s * 1000))
    try:
        with engine.connect() as raw:
            conn = raw.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                conn.execute(text("SET TRANSACTION READ ONLY"))
                snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
                conn.execute(text(f"SET LOCAL lock_timeout = {lock_ms}"))
                facts = server_facts(conn)
                pg_dump = find_pg_tool("pg_dump", facts["server_version_num"] // 10000)
                argv = [
                    str(pg_dump),
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    f"--lock-wait-timeout={lock_ms}",
                    "--no-password",
                    f"--file={work / DUMP_NAME}",
                ]
                log(f"pg_dump of {url.database} (snapshot {snapshot})")
                # pg_dump runs beside us, in our snapshot, while we count and copy.
                proc = subprocess.Popen(
                    argv,
                    env=_tool_env(url),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                try:
                    stats = database_stats(conn)
                    referenced = referenced_photos(conn)
                    ext_tables = extension_tables(conn)
                    log(f"copying photos from {photo_dir}")
                    photos = _copy_photos(photo_dir, work / PHOTOS)
                    _, stderr = proc.communicate()
                except BaseException:
                    proc.kill()
                    proc.wait()
                    raise
                if proc.returncode != 0:
                    raise BackupError(f"pg_dump failed ({proc.returncode}): {_tail(stderr)}")
    except DBAPIError as exc:
        raise _db_error(exc, url) from exc
    finally:
        engine.dispose()
    dump = work / DUMP_NAME
    dump_entry = {"path": DUMP_NAME, "size": dump.stat().st_size, "sha256": sha256_file(dump)}
    copied = {entry["path"][len(PHOTOS) + 1 :] for entry in photos}
    missing = sorted(referenced - copied)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": None,
        "database": {
            "name": url.database,
            "host": url.host,
            "port": url.port,
            "snapshot": snapshot,
            **facts,
        },
        "dump": {**dump_entry, "tool": str(pg_dump), "tool_major": tool_major(pg_dump)},
        "photo_dir": str(photo_dir),
        "photos_referenced": len(referenced),
        "photos_missing": missing,
        "extension_tables": ext_tables,
        "tables": stats,
        "files": [dump_entry, *photos],
    }
    return manifest, missing


def _write_manifest(work: Path, manifest: dict[str, Any]) -> None:
    body = json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    (work / MANIFEST).write_text(body, encoding="utf-8")
    sums = [f"{f['sha256']}  {f['path']}" for f in manifest["files"]]
    sums.append(f"{hashlib.sha256(body.encode('utf-8')).hexdigest()}  {MANIFEST}")
    (work / SUMS).write_text("\n".join(sums) + "\n", encoding="ascii")
    for path in (work / DUMP_NAME, work / MANIFEST, work / SUMS):
        with path.open("rb+") as fh:
            os.fsync(fh.fileno())
    for folder, _, _ in os.walk(work):
        _fsync_dir(Path(folder))


# -- reading a backup ---------------------------------------------------------------------


@dataclass
class FileProblem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def read_manifest(backup: Path) -> dict[str, Any]:
    path = Path(backup) / MANIFEST
    if not path.is_file():
        raise BackupError(
            f"{backup} is not a complete backup: it has no {MANIFEST} "
            "(an interrupted backup never gets one)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupError(f"{path} is damaged: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path} is not a gridops backup manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"{path} has format version {manifest.get('format_version')}; "
            f"this gridops reads version {FORMAT_VERSION}"
        )
    return manifest


def _safe_member(backup: Path, rel: str) -> Path | None:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        return None
    return backup.joinpath(*pure.parts)


def check_files(backup: Path, manifest: Mapping[str, Any]) -> list[FileProblem]:
    """Every problem with the backup's files: a missing, resized or altered file, one the
    manifest does not list, or a manifest that does not match SHA256SUMS."""
    backup = Path(backup)
    problems: list[FileProblem] = []
    listed: set[str] = {MANIFEST, SUMS}
    sums_path = backup / SUMS
    if sums_path.is_file():
        recorded = {}
        for line in sums_path.read_text(encoding="ascii", errors="replace").splitlines():
            digest, _, name = line.partition("  ")
            recorded[name] = digest
        actual = sha256_file(backup / MANIFEST)
        if recorded.get(MANIFEST) != actual:
            problems.append(FileProblem(MANIFEST, f"does not match its digest in {SUMS}"))
    else:
        problems.append(FileProblem(SUMS, "missing"))
    for entry in manifest.get("files", []):
        rel = str(entry.get("path", ""))
        listed.add(rel)
        path = _safe_member(backup, rel)
        if path is None:
            problems.append(FileProblem(rel, "not a path inside the backup"))
            continue
        if not path.is_file():
            problems.append(FileProblem(rel, "missing"))
            continue
        size = path.stat().st_size
        if size != entry.get("size"):
            problems.append(FileProblem(rel, f"size {size} bytes, manifest says {entry['size']}"))
            continue
        if sha256_file(path) != entry.get("sha256"):
            problems.append(FileProblem(rel, "SHA-256 does not match the manifest"))
    for folder, _, files in os.walk(backup):
        for name in files:
            rel = (Path(folder) / name).relative_to(backup).as_posix()
            if rel not in listed:
                problems.append(FileProblem(rel, "not in the manifest"))
    return problems


# -- restoring a dump ---------------------------------------------------------------------


def _restore_list(pg_restore: Path, dump: Path, manifest: Mapping[str, Any], target: Path) -> Path:
    """The dump's table of contents without the extensions (created beforehand, so a restore
    never drops or re-creates PostGIS) and without the data of extension-owned tables (which
    CREATE EXTENSION fills; restoring it again would collide)."""
    proc = subprocess.run(
        [str(pg_restore), "--list", str(dump)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BackupError(f"pg_restore cannot read {dump.name}: {_tail(proc.stderr)}")
    skip_data = {tuple(t.split(".", 1)) for t in manifest.get("extension_tables", [])}
    kept = []
    for line in proc.stdout.splitlines():
        fields = line.split()
        if line.startswith(";") or len(fields) < 4:
            kept.append(line)
            continue
        desc = fields[3:]
        if desc[0] == "EXTENSION" or desc[:3] == ["COMMENT", "-", "EXTENSION"]:
            continue
        if desc[:2] == ["TABLE", "DATA"] and tuple(desc[2:4]) in skip_data:
            continue
        kept.append(line)
    target.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return target


def _create_extensions(conn: Connection, manifest: Mapping[str, Any]) -> None:
    for name, info in manifest["database"].get("extensions", {}).items():
        if name == "plpgsql":
            continue
        conn.execute(
            text(f"CREATE EXTENSION IF NOT EXISTS {_qi(name)} WITH SCHEMA {_qi(info['schema'])}")
        )


def _pg_restore(
    backup: Path, manifest: Mapping[str, Any], url: URL, server_major: int, *, clean: bool
) -> None:
    pg_restore = find_pg_tool("pg_restore", server_major)
    with tempfile.TemporaryDirectory(prefix="gridops-restore-") as scratch:
        listing = _restore_list(
            pg_restore, backup / DUMP_NAME, manifest, Path(scratch) / "toc.list"
        )
        argv = [
            str(pg_restore),
            f"--dbname={_conninfo_dbname(str(url.database))}",
            "--no-owner",
            "--single-transaction",  # all or nothing; implies --exit-on-error
            "--no-password",
            f"--use-list={listing}",
        ]
        if clean:
            argv += ["--clean", "--if-exists"]
        _run_tool([*argv, str(backup / DUMP_NAME)], url, "pg_restore")


def _server_major(conn: Connection) -> int:
    return int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000


# -- comparing ----------------------------------------------------------------------------


@dataclass
class TableCheck:
    table: str
    expected_rows: int | None
    actual_rows: int | None
    geometry: str  # "ok", "-" (no geometry column) or what differs
    content: str
    ok: bool


def compare_stats(
    expected: Mapping[str, Mapping[str, Any]], actual: Mapping[str, Mapping[str, Any]]
) -> list[TableCheck]:
    """Table by table: row counts, geometry checksums and row checksums."""
    checks = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        if want is None or got is None:
            checks.append(
                TableCheck(
                    table,
                    want["rows"] if want else None,
                    got["rows"] if got else None,
                    "-",
                    "missing after restore" if got is None else "not in the backup",
                    False,
                )
            )
            continue
        columns = sorted(set(want["geometry"]) | set(got["geometry"]))
        differing = [c for c in columns if want["geometry"].get(c) != got["geometry"].get(c)]
        geometry = "differs: " + ", ".join(differing) if differing else "ok"
        if not columns:
            geometry = "-"
        content = "ok" if want["content_md5"] == got["content_md5"] else "differs"
        ok = want["rows"] == got["rows"] and not differing and content == "ok"
        checks.append(TableCheck(table, want["rows"], got["rows"], geometry, content, ok))
    return checks


def format_checks(checks: list[TableCheck]) -> str:
    header = ("table", "rows (backup)", "rows (restored)", "geometry", "rows md5", "result")
    body = [
        (
            c.table,
            "-" if c.expected_rows is None else str(c.expected_rows),
            "-" if c.actual_rows is None else str(c.actual_rows),
            c.geometry,
            c.content,
            "ok" if c.ok else "MISMATCH",
        )
        for c in checks
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    numeric = {1, 2}
    lines = []
    for r in [header, *body]:
        cells = [
            r[i].rjust(widths[i]) if i in numeric else r[i].ljust(widths[i])
            for i in range(len(header))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _stats_of(url: URL) -> tuple[dict[str, dict[str, Any]], set[str]]:
    engine = _engine(url)
    try:
        with engine.connect() as raw:
            conn = raw.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                return database_stats(conn), referenced_photos(conn)
    finally:
        engine.dispose()


# -- verify -------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    backup: Path
    manifest: dict[str, Any]
    file_problems: list[FileProblem]
    tables: list[TableCheck]
    restored: bool
    photos_missing: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return (
            self.restored
            and not self.file_problems
            and not self.photos_missing
            and all(t.ok for t in self.tables)
        )


def verify_backup(backup: Path, server_url: str, *, log: Log = _quiet) -> VerifyReport:
    """Check every digest, restore the dump into a scratch database on ``server_url``'s server
    (created and dropped here) and compare each table with the manifest. Also checks that
    every photo the restored rows point at is in the backup."""
    started = time.perf_counter()
    backup = Path(backup)
    manifest = read_manifest(backup)
    problems = check_files(backup, manifest)
    if any(p.path in {DUMP_NAME, MANIFEST} for p in problems):
        # A damaged dump is not worth restoring; the digests already say it is bad.
        seconds = time.perf_counter() - started
        return VerifyReport(backup, manifest, problems, [], False, [], seconds)
    base = _url(server_url)
    scratch = base.set(database=f"gridops_verify_{uuid.uuid4().hex[:12]}")
    admin = _engine(base).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            server_major = _server_major(conn)
            conn.execute(text(f"CREATE DATABASE {_qi(str(scratch.database))}"))
        try:
            scratch_engine = _engine(scratch).execution_options(isolation_level="AUTOCOMMIT")
            try:
                with scratch_engine.connect() as conn:
                    _create_extensions(conn, manifest)
            finally:
                scratch_engine.dispose()
            log(f"restoring into scratch database {scratch.database}")
            _pg_restore(backup, manifest, scratch, server_major, clean=False)
            actual, referenced = _stats_of(scratch)
        finally:
            with admin.connect() as conn:
                name = _qi(str(scratch.database))
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    except DBAPIError as exc:
        raise _db_error(exc, base) from exc
    finally:
        admin.dispose()
    in_backup = {
        f["path"][len(PHOTOS) + 1 :]
        for f in manifest["files"]
        if f["path"].startswith(PHOTOS + "/")
    }
    return VerifyReport(
        backup,
        manifest,
        problems,
        compare_stats(manifest["tables"], actual),
        True,
        sorted(referenced - in_backup),
        time.perf_counter() - started,
    )


# -- restore ------------------------------------------------------------------------------


class NotEmpty(BackupError):
    """The target database holds tables; restoring over them needs an explicit yes."""


@dataclass
class RestoreReport:
    tables: list[TableCheck]
    photos_written: int
    photos_kept: int
    schema_revision: str | None
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)


def restore_backup(
    backup: Path,
    url: str,
    photo_dir: Path,
    *,
    replace: bool = False,
    log: Log = _quiet,
) -> RestoreReport:
    """Put a backup back into the database at ``url`` and its photos into ``photo_dir``.

    Refuses a backup whose files do not match the manifest, and a database that holds tables
    unless ``replace``; never restores over tables the backup does not have (another schema
    revision: restore into an empty database instead). The dump is restored in one
    transaction (pg_restore --clean --if-exists --no-owner --single-transaction), after the
    photos, so every restored row finds its files; then every table is compared with the
    manifest."""
    started = time.perf_counter()
    backup = Path(backup)
    manifest = read_manifest(backup)
    problems = check_files(backup, manifest)
    if problems:
        raise BackupError(
            "the backup does not match its manifest; nothing was restored:\n"
            + "\n".join(f"  {p}" for p in problems)
        )
    target = _url(url)
    warnings: list[str] = []
    admin = _engine(target).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            server_major = _server_major(conn)
            existing = [f"{s}.{t}" for s, t, _ in user_tables(conn)]
            others = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
            foreign = sorted(set(existing) - set(manifest["tables"]))
            if foreign:
                raise NotEmpty(
                    f"database {target.database!r} has tables the backup does not have "
                    f"({', '.join(foreign[:8])}{' …' if len(foreign) > 8 else ''}): it is at "
                    "another schema revision. Restore into an empty database instead."
                )
            if existing and not replace:
                raise NotEmpty(
                    f"database {target.database!r} is not empty ({len(existing)} tables); "
                    "restoring replaces their contents: pass --yes to do so"
                )
            if others:
                warnings.append(
                    f"{others} other session(s) are connected to {target.database!r}; the "
                    "restore waits for their locks (stop the app and the scheduler first)"
                )
            _create_extensions(conn, manifest)
        log(f"restoring photos into {photo_dir}")
        written, kept = _restore_photos(backup, manifest, Path(photo_dir))
        log(f"restoring the database {target.database}")
        _pg_restore(backup, manifest, target, server_major, clean=True)
        with admin.connect() as conn:
            conn.execute(text("ANALYZE"))  # pg_restore leaves the planner without statistics
        actual, referenced = _stats_of(target)
    except DBAPIError as exc:
        raise _db_error(exc, target) from exc
    finally:
        admin.dispose()
    missing = sorted(p for p in referenced if not (Path(photo_dir) / p).is_file())
    if missing:
        warnings.append(
            f"{len(missing)} photo file(s) the restored rows refer to are not in {photo_dir} "
            f"(first: {missing[0]}); the backup did not have them"
        )
    return RestoreReport(
        compare_stats(manifest["tables"], actual),
        written,
        kept,
        manifest["database"].get("schema_revision"),
        time.perf_counter() - started,
        warnings,
    )


def _restore_photos(backup: Path, manifest: Mapping[str, Any], photo_dir: Path) -> tuple[int, int]:
    """Copy the backup's photos into ``photo_dir`` (atomically per file; files already there
    with the right content are kept; other files in the folder are left alone)."""
    from gridops.incidents.photos import DIR_MODE, FILE_MODE

    written = kept = 0
    for entry in manifest["files"]:
        rel = entry["path"]
        if not rel.startswith(PHOTOS + "/"):
            continue
        inner = rel[len(PHOTOS) + 1 :]
        target = _safe_member(photo_dir, inner)
        source = _safe_member(backup, rel)
        if target is None or source is None:
            raise BackupError(f"{rel}: not a path inside the photo folder")
        if (
            target.is_file()
            and target.stat().st_size == entry["size"]
            and sha256_file(target) == entry["sha256"]
        ):
            kept += 1
            continue
        target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        temporary = target.parent / f".restore-{secrets.token_hex(6)}.tmp"
        try:
            _, digest = _copy_hashed(source, temporary)
            if digest != entry["sha256"]:
                raise BackupError(f"{rel}: changed while being restored")
            temporary.chmod(FILE_MODE)
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        written += 1
    for folder, _, _ in os.walk(photo_dir):
        _fsync_dir(Path(folder))
    return written, kept
