"""Load test: a day's mix of users against the app under gunicorn, at rising concurrency.

    .venv/bin/python bench/load.py [--users 5,10,20,40,80] [--step-seconds 30] [--wait 1,3]
                                   [--workers 4] [--threads 1] [--capacity-users 10]
                                   [--capacity-seconds 20] [--photo-share 0.2] [--private]

Needs the ``bench`` extra (``pip install -e '.[bench]'``: locust). Creates a scratch database
on the configured server (``GRIDOPS_DATABASE_URL``, else the ``make demo`` cluster if it runs;
``--private`` or neither: a private cluster in a temporary folder with PostgreSQL's durable
defaults), loads the Foshan demo into it as ``make demo`` does (``var/demo``, built by
``make demo`` or ``geodata/build.py``; the people, the roster and a year of case history),
gives device tokens to the demo's inspectors and managers, and serves the app under gunicorn
on a free loopback port with a photo folder of its own.

Locust (``bench/locustfile.py``) runs in a process of its own, because gevent patches the
standard library there; this process only talks to PostgreSQL. The users, by weight:

- 4 tablets: inspectors' outboxes flushed in order (1-3 new reports per sync, a share with a
  photo), replays of reports already acknowledged (``--replay-share``), some twice at once;
- 2 map viewers: grids, enterprises and outlets of a viewport (``?bbox=…&limit=1000``);
- 2 tile viewers: a screen of vector tiles of four layers, then pans and zooms;
- 1 dispatcher: the board's refresh (queue, board cases, workload) and assignments with
  ``If-Match`` (a 412 because another dispatcher was first is expected, not an error);
- 1 KPI reader: the dashboard's two KPI tables for the year by month.

Tablets and maps think ``--wait`` seconds between actions, dispatchers three times as long
(the board refreshes itself every 30 s), KPI readers ten times (a dashboard is read). Every
step runs ``--step-seconds`` at its number of users (statistics from when all have started)
and reports requests/s, p50/p95/p99 per request type and the errors; then the database is
checked against the tablets' ledger: every client UUID a tablet got a 2xx for is stored
exactly once, with its verification decision and its photo; no UUID is stored twice or was
announced as new (201) twice; no bench row that no tablet sent.

project_s / baseline_s: the mix in a closed loop (no thinking) with ``--capacity-users`` users
for ``--capacity-seconds``: the time it took to serve its M requests; the baseline is the same
M requests of ``GET /health`` (the cheapest route that still asks the database: four short
queries, no authentication) by the same number of closed-loop users, same server, same
harness. ratio = baseline / project: the realistic mix's throughput as a share of the
cheapest request's. peak_mb: the largest memory of gunicorn (master and workers, proportional
set sizes summed) seen during the run. The scratch database (and a private cluster) is
removed at the end. Last line: JSON figures.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image
from sqlalchemy import Engine, create_engine, make_url, pool, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gridops import migrate
from gridops.auth import service as auth
from gridops.auth.commands import DEMO_COMMUNITY
from gridops.config import ConfigError, database_url, load_config
from gridops.demo import load_demo
from gridops.incidents.workcal import TZ
from gridops.localdb import LocalCluster, free_port
from gridops.web.planner_map import month_start
from gridops.web.tablet import scope_extent

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
SLOW_MS = 500
POINTS_PER_INSPECTOR = 60
MAX_TABLETS = 120  # inspectors given a device token (tablets beyond this share them)
# The demo history's most frequent categories (what inspectors report most).
CATEGORIES = ("E0102", "E0504", "E0502", "E0201", "E0505", "E0117", "E0104", "C0101")
USER_CLASSES = ("Tablet", "MapViewer", "TileViewer", "Dispatcher", "KpiReader")


# -- the database --------------------------------------------------------------------------


@contextmanager
def database_server(private: bool) -> Iterator[tuple[str, str]]:
    """(URL of a server database to create scratch databases from, what it is)."""
    if not private:
        try:
            url = database_url(load_config())
            probe = create_engine(url, poolclass=pool.NullPool, connect_args={"connect_timeout": 3})
            with probe.connect():
                pass
            probe.dispose()
            yield url, f"configured server {make_url(url).host}:{make_url(url).port}"
            return
        except (ConfigError, OperationalError):
            pass  # nothing configured or not running: a cluster of our own
    base = Path(tempfile.mkdtemp(prefix="gridops-load-"))
    cluster = LocalCluster(base, mode="demo", dbname="gridops_load")
    try:
        yield cluster.start(), "private cluster (PostgreSQL defaults: fsync on)"
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    name = f"gridops_load_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        scratch = create_engine(url, poolclass=pool.NullPool)
        with scratch.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
        scratch.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def load_site(url: str, demo: Path) -> float:
    """What ``make demo`` loads (without the day's tasks and patrols); returns seconds."""
    from click.testing import CliRunner

    from gridops.cli import main as gridops_cli

    if not (demo / "planted.json").is_file():
        subprocess.run(
            [sys.executable, str(ROOT / "geodata" / "build.py"), "--out", str(demo)], check=True
        )
    started = time.perf_counter()
    migrate.upgrade(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    with Session(engine) as db:
        load_demo(db, demo, log=lambda _: None)
    engine.dispose()
    for command in (["demo", "users"], ["demo", "roster"], ["demo", "history"]):
        result = CliRunner().invoke(gridops_cli, command, env={"GRIDOPS_DATABASE_URL": url})
        if result.exit_code != 0:
            raise SystemExit(
                f"gridops {' '.join(command)} failed: {result.output}"
            ) from result.exception
    return time.perf_counter() - started


# -- who the users are ---------------------------------------------------------------------


def _token(db: Session, user_id: int, name: str) -> str:
    return auth.create_token(db, user_id, name, days=1)[1]


def _extent(db: Session, user_id: int) -> list[float]:
    actor = auth.load_actor(db, user_id)
    assert actor is not None
    extent = scope_extent(db, actor.scope())
    if extent is None:  # the whole city
        row = db.execute(
            text(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT "
                "ST_Extent(geom) AS e FROM unit_grid WHERE valid_to IS NULL) s"
            )
        ).one()
        extent = [float(v) for v in row]
    return extent


def _manager(db: Session, username: str, role: str, area_code: str) -> int:
    user_id = db.execute(
        text("SELECT id FROM app_user WHERE username = :u"), {"u": username}
    ).scalar()
    if user_id is None:
        user_id = db.execute(
            text(
                "INSERT INTO app_user (username, display_name, password_hash) "
                "VALUES (:u, :u, '!') RETURNING id"
            ),
            {"u": username},
        ).scalar_one()
        auth.assign_role(db, user_id, role, area_code=area_code)
    return int(user_id)


def build_fixture(url: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Device tokens and what each kind of user looks at, for bench/locustfile.py."""
    engine = create_engine(url, poolclass=pool.NullPool)
    rng = np.random.default_rng(9)
    with Session(engine) as db:
        users = dict(db.execute(text("SELECT username, id FROM app_user")).all())
        inspectors = db.execute(
            text(
                "SELECT u.id, u.username, r.grid_codes FROM app_user u JOIN role_assignment r "
                "ON r.user_id = u.id AND r.role = 'inspector' WHERE u.is_active "
                "ORDER BY u.username = 'demo.inspector' DESC, u.username"
            )
        ).all()
        tablets = []
        for user_id, username, grids in inspectors[:MAX_TABLETS]:
            points = db.execute(
                text(
                    "SELECT ST_X(p.geom), ST_Y(p.geom) FROM ST_Dump(ST_GeneratePoints("
                    "(SELECT ST_Union(geom) FROM unit_grid WHERE valid_to IS NULL "
                    "AND code = ANY(:g)), :n, :seed)) p"
                ),
                {"g": list(grids), "n": POINTS_PER_INSPECTOR, "seed": int(user_id)},
            ).all()
            tablets.append(
                {
                    "username": username,
                    "token": _token(db, user_id, "load tablet"),
                    "points": [[round(x, 7), round(y, 7)] for x, y in points],
                }
            )

        # Dispatchers: the demo's managers and one community manager for each of the
        # communities with the most open cases (several boards work the same queues).
        busiest = db.execute(
            text(
                "SELECT g.community_code FROM incident i JOIN unit_grid g ON g.id = i.grid_id "
                "WHERE i.status NOT IN ('closed', 'cancelled') GROUP BY g.community_code "
                "ORDER BY count(*) DESC, g.community_code LIMIT 6"
            )
        ).scalars()
        dispatch_ids = [users["demo.community"], users["demo.town"], users["demo.district"]]
        dispatch_ids += [
            _manager(db, f"load.cm.{code}", "community_manager", code)
            for code in busiest
            if code != DEMO_COMMUNITY
        ]
        dispatchers = [{"token": _token(db, u, "load board")} for u in dispatch_ids]

        def viewer(username: str, zooms: tuple[float, float]) -> dict[str, Any]:
            user_id = users[username]
            return {
                "token": _token(db, user_id, "load map"),
                "extent": _extent(db, user_id),
                "zooms": list(zooms),
            }

        viewers = [viewer(t["username"], (15.0, 17.5)) for t in tablets[:12]]
        viewers += [viewer("demo.town", (14.5, 16.5)), viewer("demo.district", (14.0, 16.0))]
        tile_viewers = [
            viewer("demo.town", (15, 17)),
            viewer("demo.district", (14, 16)),
            viewer("demo.planner", (13, 15)),
        ]
        kpi_readers = [
            # The first grouping is the dashboard's default for the reader's jurisdiction.
            {"token": _token(db, users["demo.planner"], "load kpi"),
             "groupings": ["district", "town", "community", "department"]},
            {"token": _token(db, users["demo.district"], "load kpi"),
             "groupings": ["town", "community", "department"]},
            {"token": _token(db, users["demo.town"], "load kpi"),
             "groupings": ["community", "grid", "person", "department"]},
        ]  # fmt: skip
        duties: dict[str, list[int]] = {}
        for grid, user_id in db.execute(
            text("SELECT grid_code, user_id FROM grid_inspector ORDER BY grid_code, user_id")
        ):
            duties.setdefault(grid, []).append(int(user_id))
        categories = list(
            db.execute(
                text(
                    "SELECT DISTINCT code FROM category WHERE code = ANY(:c) "
                    "AND minor_code IS NOT NULL AND active ORDER BY code"
                ),
                {"c": list(CATEGORIES)},
            ).scalars()
        )
        db.commit()
    engine.dispose()

    # A tablet photo as the tablet sends it (shrunk to 2048 px when over 1.5 MB): 1600 x
    # 1200, noisy enough to weigh what a camera's JPEG weighs.
    photo = work / "photo.jpg"
    pixels = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((1600, 1200), Image.Resampling.BILINEAR)
    image.save(photo, "JPEG", quality=85)
    today = datetime.now(TZ).date()
    return {
        "tablets": tablets,
        "dispatchers": dispatchers,
        "viewers": viewers,
        "tile_viewers": tile_viewers,
        "kpi_readers": kpi_readers,
        "grid_inspectors": duties,
        "categories": categories,
        "photo": str(photo),
        "photo_share": args.photo_share,
        "replay_share": args.replay_share,
        "double_share": min(args.double_share, args.replay_share),
        "today": today.isoformat(),
        "year_start": month_start(today, 11).isoformat(),  # the dashboard's default
    }


# -- the server ----------------------------------------------------------------------------


@contextmanager
def serve(
    url: str, workers: int, threads: int, photo_dir: Path
) -> Iterator[tuple[str, psutil.Process]]:
    """gunicorn as docker-compose runs it (sync workers; ``threads`` > 1: gthread)."""
    port = free_port()
    env = {
        **os.environ,
        "GRIDOPS_DATABASE_URL": url,
        "GRIDOPS_ENV": "production",
        "GRIDOPS_SECRET_KEY": secrets.token_hex(32),
        "GRIDOPS_PHOTO_DIR": str(photo_dir),
        "GRIDOPS_LOG_LEVEL": "WARNING",
    }
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    server = subprocess.Popen(
        [gunicorn, "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
         "--threads", str(threads), "gridops:create_app()"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit("gunicorn exited before serving") from None
                time.sleep(0.2)
        yield base, psutil.Process(server.pid)
    finally:
        server.terminate()
        server.wait(20)


class Watch:
    """Every second: the peak memory of gunicorn (master and workers: the sum of their
    proportional set sizes, so that pages shared between them count once) and the CPU
    seconds used by gunicorn, by the PostgreSQL backends of the scratch database and by
    locust, so that each step can say where the machine's time went."""

    def __init__(self, server: psutil.Process, database: str) -> None:
        self.server = server
        self.database = database
        self.peak = 0
        self.cpu: dict[str, dict[int, float]] = {"app": {}, "db": {}, "locust": {}}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _family(self, process: psutil.Process) -> list[psutil.Process]:
        try:
            return [process, *process.children(recursive=True)]
        except psutil.Error:
            return []

    def _backends(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["name", "cmdline"]):
            cmdline = " ".join(process.info["cmdline"] or ())
            if cmdline.startswith("postgres:") and f" {self.database} " in cmdline:
                found.append(process)
        return found

    def sample(self) -> None:
        app = self._family(self.server)
        with suppress(psutil.Error):
            self.peak = max(self.peak, sum(p.memory_full_info().pss for p in app))
        locust = []
        for child in psutil.Process().children(recursive=True):
            with suppress(psutil.Error):
                if "locust" in " ".join(child.cmdline()):
                    locust.append(child)
        for kind, processes in (("app", app), ("db", self._backends()), ("locust", locust)):
            for process in processes:
                try:
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                self.cpu[kind][process.pid] = times.user + times.system

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far per kind, the machine's busy seconds and the wall clock."""
        self.sample()
        figures = {kind: sum(per_pid.values()) for kind, per_pid in self.cpu.items()}
        machine = psutil.cpu_times()
        figures["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        figures["wall"] = time.monotonic()
        return figures

    @staticmethod
    def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """Cores used between two readings (app, db, locust, others, wall seconds)."""
        wall = max(after["wall"] - before["wall"], 1e-9)
        cores = {k: (after[k] - before[k]) / wall for k in ("app", "db", "locust", "machine")}
        others = max(0.0, cores["machine"] - cores["app"] - cores["db"] - cores["locust"])
        return {
            "app": round(cores["app"], 2),
            "db": round(cores["db"], 2),
            "locust": round(cores["locust"], 2),
            "others": round(others, 2),
            "wall": round(wall, 1),
        }

    def _run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(1.0)

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


# -- one locust run ------------------------------------------------------------------------


def run_locust(
    base: str,
    fixture: Path,
    work: Path,
    label: str,
    *,
    users: int,
    seconds: float,
    wait: str,
    classes: tuple[str, ...] = USER_CLASSES,
    max_requests: int = 0,
    reset_stats: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run locust headless; returns (its final statistics, the tablets' ledger)."""
    stats_file, ledger_file = work / f"{label}.stats.json", work / f"{label}.ledger.json"
    env = {
        **os.environ,
        "GRIDOPS_LOAD_FIXTURE": str(fixture),
        "GRIDOPS_LOAD_LEDGER": str(ledger_file),
        "GRIDOPS_LOAD_WAIT": wait,
        "GRIDOPS_LOAD_MAX_REQUESTS": str(max_requests),
    }
    locust = str(Path(sys.executable).parent / "locust")
    argv = [
        locust, "-f", str(LOCUSTFILE), "--headless", "--host", base,
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{int(seconds)}s",
        "--stop-timeout", "10", "--json-file", str(stats_file.with_suffix("")),
        "--only-summary", "--loglevel", "ERROR", "--exit-code-on-error", "0",
        *(["--reset-stats"] if reset_stats else []), *classes,
    ]  # fmt: skip
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not stats_file.is_file() or not ledger_file.is_file():
        raise SystemExit(f"locust failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"entries": json.loads(stats_file.read_text())}, json.loads(ledger_file.read_text())


def _percentile(histogram: dict[int, int], share: float) -> float:
    """Locust's response-time histogram (rounded ms -> count) at ``share`` (0..1)."""
    total = sum(histogram.values())
    if not total:
        return 0.0
    rank = share * total
    seen = 0
    for ms in sorted(histogram):
        seen += histogram[ms]
        if seen >= rank:
            return float(ms)
    return float(max(histogram))


def summarise(stats: dict[str, Any]) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per request type and overall: requests, req/s, p50/p95/p99 (ms), errors."""
    entries = stats["entries"]
    starts = [e["start_time"] for e in entries if e["num_requests"]]
    ends = [e["last_request_timestamp"] for e in entries if e["num_requests"]]
    window = max(ends) - min(starts) if starts else 0.0
    window = max(window, 1e-9)
    per_type: dict[str, dict[str, float]] = {}
    overall: dict[int, int] = {}
    for entry in entries:
        histogram = {int(k): v for k, v in entry["response_times"].items()}
        for ms, n in histogram.items():
            overall[ms] = overall.get(ms, 0) + n
        per_type[entry["name"]] = {
            "requests": entry["num_requests"],
            "rps": round(entry["num_requests"] / window, 1),
            "p50": _percentile(histogram, 0.50),
            "p95": _percentile(histogram, 0.95),
            "p99": _percentile(histogram, 0.99),
            "errors": entry["num_failures"],
        }
    total = sum(t["requests"] for t in per_type.values())
    return dict(sorted(per_type.items())), {
        "requests": total,
        "rps": round(total / window, 1),
        "p50": _percentile(overall, 0.50),
        "p95": _percentile(overall, 0.95),
        "p99": _percentile(overall, 0.99),
        "errors": sum(t["errors"] for t in per_type.values()),
        "seconds": round(window, 1),
    }


# -- what the database holds ---------------------------------------------------------------


class Ledger:
    """Every client UUID the tablets sent, over all runs, and what they were told."""

    def __init__(self) -> None:
        self.acked: dict[str, dict[str, int]] = {}
        self.unacked: set[str] = set()
        self.stale_assign = 0
        self.final_assign = 0
        self.refused: dict[str, int] = {}

    def add(self, run: dict[str, Any]) -> None:
        for client_uuid, seen in run["acked"].items():
            mine = self.acked.setdefault(
                client_uuid, {"created": 0, "replayed": 0, "photos": seen["photos"]}
            )
            mine["created"] += seen["created"]
            mine["replayed"] += seen["replayed"]
        self.unacked = (self.unacked | set(run["unacked"])) - set(self.acked)
        self.stale_assign += run["stale_assign"]
        self.final_assign += run["final_assign"]
        for status, n in run["refused"].items():
            self.refused[status] = self.refused.get(status, 0) + n


def check_database(engine: Engine, ledger: Ledger, photo_dir: Path) -> dict[str, int]:
    """The bench's rows against the ledger; every count but ``acked``/``stored`` must be 0
    (``landed_unacked``: stored although the tablet never heard back; its next sync gets 200)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT i.client_uuid::text AS client_uuid, "
                "count(*) OVER (PARTITION BY i.client_uuid) AS copies, "
                "(SELECT count(*) FROM incident_photo p WHERE p.incident_id = i.id) AS photos, "
                "(SELECT array_agg(p.path) FROM incident_photo p WHERE p.incident_id = i.id) "
                "AS paths, EXISTS (SELECT 1 FROM case_decision d WHERE d.incident_id = i.id "
                "AND d.kind = 'assign_verify') AS decided "
                "FROM incident i WHERE i.description LIKE 'load bench:%'"
            )
        ).all()
        same_uuid_twice = conn.execute(
            text("SELECT count(*) - count(DISTINCT client_uuid) FROM incident")
        ).scalar_one()
    stored = {r.client_uuid: r for r in rows}
    acked = ledger.acked
    lost = [u for u in acked if u not in stored]
    partial = [
        u
        for u, seen in acked.items()
        if u in stored and (not stored[u].decided or stored[u].photos != seen["photos"])
    ]
    missing_files = sum(1 for r in rows for p in (r.paths or []) if not (photo_dir / p).is_file())
    return {
        "acked": len(acked),
        "stored": len(stored),
        "lost": len(lost),
        "duplicated": sum(1 for r in rows if r.copies > 1)
        + int(same_uuid_twice)
        + sum(1 for seen in acked.values() if seen["created"] > 1),
        "partial": len(partial) + missing_files,
        "unexplained": sum(1 for u in stored if u not in acked and u not in ledger.unacked),
        "landed_unacked": sum(1 for u in ledger.unacked if u in stored),
        "replays_answered": sum(seen["replayed"] for seen in acked.values()),
    }


# -- output --------------------------------------------------------------------------------


def print_step(users: int, per_type: dict[str, dict[str, float]], overall: dict[str, float],
               db: dict[str, int], cpu: dict[str, float]) -> None:  # fmt: skip
    print(f"\n== {users} users: {overall['rps']} req/s over {overall['seconds']} s ==")
    print(f"{'request type':<24}{'reqs':>7}{'req/s':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'err':>6}")
    for name, t in [*per_type.items(), ("ALL", overall)]:
        print(
            f"{name:<24}{t['requests']:>7}{t['rps']:>8}{t['p50']:>8.0f}{t['p95']:>8.0f}"
            f"{t['p99']:>8.0f}{t['errors']:>6}"
        )
    print(
        "database: {acked} acknowledged UUIDs, {stored} stored, lost {lost}, duplicated "
        "{duplicated}, partial {partial}, unexplained {unexplained}, stored though unanswered "
        "{landed_unacked}, replays answered 200: {replays_answered}".format(**db)
    )
    print(
        "cores busy over {wall} s: gunicorn {app}, PostgreSQL {db}, locust {locust}, "
        "other processes {others} (of {n})".format(**cpu, n=psutil.cpu_count())
    )


def print_summary(steps: list[dict[str, Any]]) -> None:
    print("\n== summary (latency in ms; cores busy: gunicorn / PostgreSQL / other processes) ==")
    print(
        f"{'users':>6}{'req/s':>8}{'p50':>7}{'p95':>7}{'p99':>7}{'errors':>8}"
        f"{'acked':>8}{'lost':>6}{'dup':>5}{'cores':>17}  slowest p95"
    )
    for s in steps:
        slow_name, slow = max(s["types"].items(), key=lambda kv: kv[1]["p95"])
        cores = "{app:.2f}/{db:.2f}/{others:.2f}".format(**s["cores"])
        print(
            f"{s['users']:>6}{s['rps']:>8}{s['p50']:>7.0f}{s['p95']:>7.0f}{s['p99']:>7.0f}"
            f"{s['errors']:>8}{s['db']['acked']:>8}{s['db']['lost']:>6}"
            f"{s['db']['duplicated']:>5}{cores:>17}  {slow_name} {slow['p95']:.0f}"
        )
    names = sorted({n for s in steps for n in s["types"]})
    print(f"\np95 per request type (ms) by users; last column: first users over {SLOW_MS} ms")
    print(f"{'request type':<24}" + "".join(f"{s['users']:>7}" for s in steps) + f"{'>500':>7}")
    for name in [*names, None]:
        cells = "".join(
            f"{(s if name is None else s['types'][name])['p95']:>7.0f}"
            if name is None or name in s["types"]
            else f"{'-':>7}"
            for s in steps
        )
        first = first_over(steps, name)
        print(f"{name or 'ALL':<24}{cells}{first if first is not None else '-':>7}")


def first_over(steps: list[dict[str, Any]], name: str | None = None) -> int | None:
    for s in steps:
        figures = s if name is None else s["types"].get(name)
        if figures is not None and figures["p95"] > SLOW_MS:
            return int(s["users"])
    return None


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="5,10,20,40,80", help="concurrency steps")
    parser.add_argument("--step-seconds", type=float, default=30)
    parser.add_argument("--wait", default="1,3", help="think time min,max (s)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument("--capacity-users", type=int, default=10)
    parser.add_argument("--capacity-seconds", type=float, default=20)
    parser.add_argument("--photo-share", type=float, default=0.2)
    parser.add_argument("--replay-share", type=float, default=0.1)
    parser.add_argument("--double-share", type=float, default=0.03)
    parser.add_argument("--demo", type=Path, default=ROOT / "var" / "demo")
    parser.add_argument("--private", action="store_true", help="always a private cluster")
    args = parser.parse_args()
    ladder = [int(u) for u in args.users.split(",")]

    work = Path(tempfile.mkdtemp(prefix="gridops-load-run-"))
    photo_dir = work / "photos"
    steps: list[dict[str, Any]] = []
    ledger = Ledger()
    try:
        with (
            database_server(args.private) as (server_url, where),
            scratch_database(server_url) as url,
        ):
            print(f"database: scratch database on the {where}")
            setup_s = load_site(url, args.demo)
            fixture = build_fixture(url, work, args)
            fixture_file = work / "fixture.json"
            fixture_file.write_text(json.dumps(fixture))
            print(
                f"demo loaded in {setup_s:.0f} s; {len(fixture['tablets'])} tablets, "
                f"{len(fixture['dispatchers'])} dispatch boards; gunicorn {args.workers} "
                f"workers x {args.threads} threads; think time {args.wait} s; "
                f"{args.step_seconds:.0f} s per step"
            )
            engine = create_engine(url, poolclass=pool.NullPool)
            with (
                serve(url, args.workers, args.threads, photo_dir) as (base, server),
                Watch(server, make_url(url).database or "") as watch,
            ):
                for users in ladder:
                    before = watch.cpu_seconds()
                    stats, run = run_locust(
                        base, fixture_file, work, f"step{users}", users=users,
                        seconds=args.step_seconds, wait=args.wait,
                    )  # fmt: skip
                    cpu = watch.used(before, watch.cpu_seconds())
                    ledger.add(run)
                    per_type, overall = summarise(stats)
                    db = check_database(engine, ledger, photo_dir)
                    print_step(users, per_type, overall, db, cpu)
                    steps.append(
                        {"users": users, **overall, "types": per_type, "db": db, "cores": cpu}
                    )

                # Capacity: the mix without thinking, then as many GET /health.
                stats, run = run_locust(
                    base, fixture_file, work, "capacity", users=args.capacity_users,
                    seconds=args.capacity_seconds, wait="0,0", reset_stats=False,
                )  # fmt: skip
                ledger.add(run)
                _, capacity = summarise(stats)
                mix_requests = int(run["requests"])
                project_s = run["last_end"] - run["first_start"]
                _, health_run = run_locust(
                    base, fixture_file, work, "baseline", users=args.capacity_users,
                    seconds=max(60, args.capacity_seconds * 3), wait="0,0",
                    classes=("Health",), max_requests=mix_requests, reset_stats=False,
                )  # fmt: skip
                baseline_s = health_run["last_end"] - health_run["first_start"]
                baseline_requests = int(health_run["requests"])
                final_db = check_database(engine, ledger, photo_dir)
            engine.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n== capacity: {args.capacity_users} users without thinking ==\n"
        f"mix: {mix_requests} requests in {project_s:.1f} s ({mix_requests / project_s:.0f}"
        f" req/s, p95 {capacity['p95']:.0f} ms, {capacity['errors']} errors); GET /health: "
        f"{baseline_requests} requests in {baseline_s:.1f} s "
        f"({baseline_requests / baseline_s:.0f} req/s)"
    )
    print_summary(steps)
    print(
        "\ndatabase after all runs: {acked} acknowledged, {stored} stored, lost {lost}, "
        "duplicated {duplicated}, partial {partial}, unexplained {unexplained}".format(**final_db)
    )
    print(
        f"dispatch: {ledger.stale_assign} assignments refused as stale (412, another board "
        f"was first), {ledger.final_assign} on closed cases (409); tablet refusals: "
        f"{ledger.refused or 'none'}"
    )
    per_type_over = {
        name: first_over(steps, name) for name in sorted({n for s in steps for n in s["types"]})
    }
    figures = {
        "bench": "load",
        "project_s": round(project_s, 3),
        "baseline_s": round(baseline_s, 3),
        "ratio": round(baseline_s / project_s, 3),
        "peak_mb": round(watch.peak / 2**20, 1),
        "workers": args.workers,
        "threads": args.threads,
        "wait_s": args.wait,
        "step_seconds": args.step_seconds,
        "capacity": {
            "users": args.capacity_users,
            "requests": mix_requests,
            "rps": round(mix_requests / project_s, 1),
            "p95": capacity["p95"],
            "errors": capacity["errors"],
            "health_rps": round(baseline_requests / baseline_s, 1),
        },
        "steps": [
            {
                "users": s["users"],
                "rps": s["rps"],
                "p50": s["p50"],
                "p95": s["p95"],
                "p99": s["p99"],
                "errors": s["errors"],
                "types": s["types"],
                "acked": s["db"]["acked"],
                "lost": s["db"]["lost"],
                "duplicated": s["db"]["duplicated"],
                "cores": s["cores"],
            }
            for s in steps
        ],
        "p95_over_500ms_at": first_over(steps),
        "p95_over_500ms_at_by_type": per_type_over,
        "lost": final_db["lost"],
        "duplicated": final_db["duplicated"],
        "partial": final_db["partial"],
        "unexplained": final_db["unexplained"],
        "stale_assign": ledger.stale_assign,
    }
    print(json.dumps(figures))
    if final_db["lost"] or final_db["duplicated"] or final_db["partial"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
