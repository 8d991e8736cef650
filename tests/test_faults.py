"""Faults, with real processes and real failures (no mocks of our own code):

1. PostgreSQL stopped and started again while tablets sync under gunicorn: every request gets
   a success or a clean 503 problem with Retry-After, the app recovers without a restart,
   nothing is half written, and every report retried after a failure lands exactly once.
2. The one scheduler process killed -9 mid-job and started again: nothing due is lost and
   nothing is done twice.
3. A photo store that cannot be written (its folder cannot be made) or is full (the server's
   file size limit, and the upload spool on the way): a clear 503/507 problem naming the
   storage, no case row without its photos, no orphan file, and the retry lands once. A
   connection lost in COMMIT keeps the files (the row may be in) for the orphan sweep.
4. ``gridops import`` killed -9 half-way and run again: the same database as one clean run, and
   a run after a complete one changes nothing.

The servers here run in a private PostgreSQL cluster (1) or databases of their own (2, 4) on
the run's cluster, since a restart or committed data would disturb every other test.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from shapely.geometry import box
from sqlalchemy import Connection, Engine, create_engine, pool, text
from sqlalchemy.orm import Session

from gridops import create_app, migrate
from gridops.auth import service as auth
from gridops.auth.web import public
from gridops.db import get_database, get_session
from gridops.dispatch.sla import CHUNK
from gridops.grids.locate import assign_grids
from gridops.importing import run_import
from gridops.incidents.case_photos import storage_error, sweep_orphans
from gridops.incidents.workcal import TZ
from gridops.localdb import LocalCluster, free_port
from tests import factories as f
from tests.conftest import app_config, own_database
from tests.test_case_photos import multipart, png
from tests.test_cases import build_world
from tests.test_intake import report
from tests.test_photos import encode, noise
from tests.test_scheduler import Proc, job_runs, seed_jobstore, wait_for
from tests.test_sla_sweep import sla_world

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture
def cheap_passwords(monkeypatch):
    """Cheap argon2 parameters for the users the worlds make (hashing is tested on its own)."""
    from argon2 import PasswordHasher

    from gridops.auth import passwords

    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


# The app's sessions (make_engine names them) in the database the query runs in: the run's
# cluster is shared with every other test's databases.
APP_SESSIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gridops' "
    "AND datname = current_database()"
)


def scalar_in(session: Session, sql: str, **params: Any) -> Any:
    return session.execute(text(sql), params).scalar()


def stop_process(popen: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if popen.poll() is None:
        popen.send_signal(sig)
        try:
            popen.wait(20)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(10)


def seed_world(url: str, tmp_path: Path, tablets: int) -> dict[str, Any]:
    """``build_world`` committed in the database at ``url``, with ``tablets`` device tokens
    shared by the west community's two inspectors."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with Session(engine) as db:
            world = build_world(db, tmp_path)
            inspectors = [world["actors"][n].user_id for n in ("insp.w", "insp.w2")]
            tokens = [
                auth.create_token(db, inspectors[i % 2], f"tablet {i}")[1] for i in range(tablets)
            ]
            db.commit()
    finally:
        engine.dispose()
    return {**world, "tokens": tokens}


@contextlib.contextmanager
def served(
    url: str, photo_dir: Path, log: Path, *, file_size_limit: int | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """The app under gunicorn (as deployed: production settings) on a free loopback port;
    yields (base URL, process). ``file_size_limit``: RLIMIT_FSIZE of the server, in bytes.

    ``--preload``: the app is imported once, not by each worker (seconds on a loaded machine).
    Eight threads per worker: the requests a test holds on a lock must not fill one worker,
    whose further requests would queue behind them rather than go to the other."""
    port = free_port()
    env = {
        **os.environ,
        "GRIDOPS_DATABASE_URL": url,
        "GRIDOPS_ENV": "production",
        "GRIDOPS_SECRET_KEY": "fault-test",
        "GRIDOPS_PHOTO_DIR": str(photo_dir),
        "GRIDOPS_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }

    # prlimit (util-linux) sets the soft limit and execs gunicorn, whose workers inherit it.
    limit = ["prlimit", f"--fsize={file_size_limit}:", "--"] if file_size_limit else []
    with log.open("a") as out:
        server = subprocess.Popen(
            [*limit, str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--threads", "8", "--timeout", "60", "--no-control-socket",
             "--preload", "gridops:create_app()"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{base}/health", timeout=5).status_code == 200
        return False

    try:
        wait_for(healthy, timeout=60, what="gunicorn to serve")
        yield base, server
    finally:
        stop_process(server, signal.SIGINT)  # quick: a graceful stop waits on idle keep-alives


def photo_files(root: Path) -> set[str]:
    """Every file under the photo root, as paths relative to it (temp files included)."""
    if not root.exists():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# == 1. PostgreSQL restarted while tablets sync ============================================

TABLETS = 4
REPORTS_PER_TABLET = 12
READERS = 2
REQUEST_TIMEOUT = (5, 30)  # connect, read: a request that takes longer counts as a hang
RETRY_PAUSE = 0.3  # the clients' pause before a retry (Retry-After says 5 s: too slow here)


@dataclass
class Call:
    kind: str  # "sync" or "read"
    started: float
    ended: float
    status: int | None  # None: no HTTP answer (connection error or timeout)
    error: str = ""
    retry_after: str | None = None
    problem_type: str | None = None
    content_type: str = ""


@dataclass
class Traffic:
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def record(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def count(self, predicate: Callable[[Call], bool]) -> int:
        with self.lock:
            return sum(1 for c in self.calls if predicate(c))


def timed_request(traffic: Traffic, kind: str, send: Callable[[], requests.Response]) -> Call:
    started = time.monotonic()
    try:
        response = send()
    except requests.RequestException as exc:
        call = Call(kind, started, time.monotonic(), None, error=f"{type(exc).__name__}: {exc}")
    else:
        problem_type = None
        if response.headers.get("Content-Type", "").startswith("application/problem+json"):
            problem_type = response.json().get("type")
        call = Call(
            kind,
            started,
            time.monotonic(),
            response.status_code,
            retry_after=response.headers.get("Retry-After"),
            problem_type=problem_type,
            content_type=response.headers.get("Content-Type", ""),
        )
        if response.status_code >= 400 and response.status_code != 503:
            call.error = response.text[:500]
    traffic.record(call)
    return call


@dataclass
class Outbox:
    """A tablet's queue of reports, replayed until each is accepted (as static/js/outbox.js:
    a 5xx or no answer is retried with the same client UUID and the same photos)."""

    token: str
    reports: list[tuple[dict, list[bytes]]]
    landed: set[str] = field(default_factory=set)  # client UUIDs
    attempts: dict[str, int] = field(default_factory=dict)


def post_report(
    http: requests.Session, base: str, body: dict, photos: list[bytes]
) -> requests.Response:
    """A report as the tablet sends it: JSON, or multipart with its photos."""
    if not photos:
        return http.post(f"{base}/api/v1/incidents", json=body, timeout=REQUEST_TIMEOUT)
    return http.post(
        f"{base}/api/v1/incidents",
        data={"report": json.dumps(body)},
        files=[("photos", (f"p{i}.png", data, "image/png")) for i, data in enumerate(photos)],
        timeout=REQUEST_TIMEOUT,
    )


def sync(base: str, outbox: Outbox, traffic: Traffic, deadline: float) -> None:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {outbox.token}"
    for body, photos in outbox.reports:
        key = body["client_uuid"]
        while time.monotonic() < deadline:
            outbox.attempts[key] = outbox.attempts.get(key, 0) + 1
            call = timed_request(
                traffic, "sync", lambda b=body, p=photos: post_report(http, base, b, p)
            )
            if call.status in (200, 201):
                outbox.landed.add(key)
                break
            if call.status is not None and call.status < 500:
                return  # a 4xx would need a person: the test fails on it below
            time.sleep(RETRY_PAUSE)


def read(base: str, token: str, case_id: int, traffic: Traffic) -> None:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    urls = [f"{base}/api/v1/cases/{case_id}", f"{base}/api/v1/cases?limit=20"]
    n = 0
    while not traffic.stop.is_set():
        url = urls[n % len(urls)]
        timed_request(traffic, "read", lambda url=url: http.get(url, timeout=REQUEST_TIMEOUT))
        n += 1
        time.sleep(0.05)


def outboxes_for(tokens: list[str]) -> list[Outbox]:
    """Each tablet's reports all over the west community; every third (the third first) has
    one or two photos."""
    boxes = []
    for t, token in enumerate(tokens):
        queue = []
        for n in range(REPORTS_PER_TABLET):
            body = report(lon=113.0015 + 0.0015 * n, lat=23.002 + 0.004 * t,
                          description=f"tablet {t} report {n}")  # fmt: skip
            photos = [png(64 + n, 48 + t, (n * 20 % 256, t * 60, 90))] * (1 + n % 2)
            queue.append((body, photos if n % 3 == 2 else []))
        boxes.append(Outbox(token, queue))
    return boxes


def stored_reports(url: str) -> tuple[list[Any], set[str]]:
    """Every reported case with its counts of routing decisions and photos; the photo files
    the rows name."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT i.client_uuid::text AS uuid, "
                    "(SELECT count(*) FROM case_decision d WHERE d.incident_id = i.id "
                    " AND d.kind = 'assign_verify') AS decisions, "
                    "(SELECT count(*) FROM incident_photo p WHERE p.incident_id = i.id) AS photos "
                    "FROM incident i WHERE i.reported_by IS NOT NULL"
                )
            ).all()
            named = {
                name
                for pair in conn.execute(text("SELECT path, thumb_path FROM incident_photo"))
                for name in pair
            }
    finally:
        engine.dispose()
    return rows, named


def hold_photo_rows(url: str) -> Connection:
    """A connection holding an exclusive lock on incident_photo: syncs with photos wait on it
    after writing their case row and files (the caller ends it)."""
    conn = create_engine(url, poolclass=pool.NullPool).connect()
    conn.execute(text("LOCK TABLE incident_photo IN ACCESS EXCLUSIVE MODE"))
    return conn


def blocked_syncs(url: str) -> int:
    """How many requests wait on that lock to insert their photo rows."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        return scalar(
            engine,
            f"{APP_SESSIONS} AND wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO incident_photo%'",
        )
    finally:
        engine.dispose()


def test_database_restart_while_tablets_sync(tmp_path, cheap_passwords):
    # Not under tmp_path: pytest makes its root 0700 again whenever a run starts, which would
    # lock the postgres user out of the data folder (conftest's cluster does the same).
    pg_base = Path(tempfile.mkdtemp(prefix="gridops-fault-"))
    cluster = LocalCluster(pg_base, mode="test", dbname="gridops_fault")
    try:
        url = cluster.start()
        port = cluster.state().port
        migrate.upgrade(url)
        world = seed_world(url, tmp_path, TABLETS)
        photo_dir = tmp_path / "photos"
        outboxes = outboxes_for(world["tokens"])
        total = TABLETS * REPORTS_PER_TABLET
        traffic = Traffic()
        with served(url, photo_dir, tmp_path / "gunicorn.log") as (base, server):
            deadline = time.monotonic() + 90
            syncs = [threading.Thread(target=sync, args=(base, box, traffic, deadline))
                     for box in outboxes]  # fmt: skip
            reads = [threading.Thread(target=read, args=(base, token, world["west"], traffic))
                     for token in world["tokens"][:READERS]]  # fmt: skip
            # Photo rows are held back, so that syncs with photos wait mid-transaction.
            blocker = hold_photo_rows(url)
            for thread in syncs + reads:
                thread.start()
            try:
                # Every tablet is caught mid-sync by the stop: its first two reports in, the
                # third (with photos) waiting on the lock, its case row and files written.
                wait_for(lambda: blocked_syncs(url) == TABLETS
                         and traffic.count(lambda c: c.status == 201) == 2 * TABLETS,
                         timeout=60, what="every tablet mid-sync")  # fmt: skip
                files_in_flight = photo_files(photo_dir)  # no photo row is in yet
                assert len(files_in_flight) == 2 * TABLETS  # a photo and its thumbnail each
                down_at = time.monotonic()
                cluster.stop()  # pg_ctl stop -m fast: every session is terminated
                blocker.invalidate()
                # Down until every tablet's retry has met the closed door too.
                wait_for(lambda: traffic.count(lambda c: c.kind == "sync" and c.status == 503
                                               and c.started > down_at) >= TABLETS,
                         timeout=30, what="retries while the database is down")  # fmt: skip
                cluster.start()
                up_at = time.monotonic()
                assert cluster.state().port == port  # the app's URL still points at it
                for thread in syncs:
                    thread.join(timeout=max(deadline - time.monotonic(), 1))
            finally:
                traffic.stop.set()
                for thread in syncs + reads:
                    thread.join(timeout=40)
            assert server.poll() is None  # the app was never restarted

        calls = traffic.calls
        # Every request got an answer in time: a success, or a clean 503 saying when to retry.
        assert [c for c in calls if c.status is None] == []
        bad = [c for c in calls if c.status not in (200, 201, 503)]
        assert bad == [], bad[:5]
        unavailable = [c for c in calls if c.status == 503]
        assert unavailable, "no request met the stopped database"
        for call in unavailable:
            assert call.content_type.startswith("application/problem+json"), call
            assert call.problem_type == "/problems/database-unavailable", call
            assert call.retry_after is not None and int(call.retry_after) > 0, call
        slowest = max(c.ended - c.started for c in calls)
        assert slowest < REQUEST_TIMEOUT[1]
        # Recovered without a restart of the app: whatever was sent once the database was
        # back succeeded at the first try (pool_pre_ping replaced the dead pooled connections).
        after = [c for c in calls if c.started > up_at]
        assert after, "nothing was sent after the restart"
        assert [c for c in after if c.status not in (200, 201)] == []

        # Every report landed exactly once, however often it was sent.
        sent = {body["client_uuid"]: photos for box in outboxes for body, photos in box.reports}
        assert sum(len(box.landed) for box in outboxes) == total
        rows, named = stored_reports(url)
        assert sorted(r.uuid for r in rows) == sorted(sent)
        # Nothing half written: each case has its routing decision and all its photos, and
        # each photo row its two files. The files of the syncs cut off before their COMMIT
        # were removed with their failed transactions; a sync whose COMMIT itself was cut
        # keeps its files (the row might have been in), and the orphan sweep removes them.
        assert [r for r in rows if r.decisions != 1] == []
        assert {r.uuid: r.photos for r in rows} == {k: len(v) for k, v in sent.items()}
        on_disk = photo_files(photo_dir)
        assert named <= on_disk and not files_in_flight & on_disk
        orphans = on_disk - named
        with Session(create_engine(url, poolclass=pool.NullPool)) as db:
            swept = sweep_orphans(db, photo_dir, older_than=timedelta(0))
            db.get_bind().dispose()
        assert swept["removed"] == len(orphans)
        assert photo_files(photo_dir) == named

        in_flight = [c for c in calls if c.started < down_at < c.ended]
        assert sum(1 for c in in_flight if c.kind == "sync" and c.status == 503) == TABLETS
        retried = sum(1 for box in outboxes for n in box.attempts.values() if n > 1)
        sync_503 = sum(1 for c in unavailable if c.kind == "sync")
        print(
            f"\nrestart: {len(calls)} requests ({len(in_flight)} in flight at the stop), "
            f"{len(unavailable)} got 503 ({sync_503} syncs, {len(unavailable) - sync_503} "
            f"reads; {len(files_in_flight)} photo files of the cut-off syncs removed, "
            f"{len(orphans)} kept from a cut COMMIT and swept); "
            f"{retried} reports retried, all {total} landed once; database down "
            f"{up_at - down_at:.1f} s; slowest answer {slowest:.2f} s"
        )
    finally:
        cluster.destroy()
        shutil.rmtree(pg_base, ignore_errors=True)


def test_a_connection_lost_after_the_work_keeps_the_answer(database_url):
    # The race the restart above can hit: the database goes away after a request's last
    # query, and the end of the request (closing its session, which rolls back) fails on the
    # dead connection. That must not turn the answer already made into a bare 500.
    app = create_app(app_config(database_url))

    @public
    def answered_then_lost() -> tuple[dict, int]:
        db = get_session()
        own = db.execute(text("SELECT pg_backend_pid()")).scalar_one()  # a transaction open
        with create_engine(database_url, poolclass=pool.NullPool).connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": own})
        return {"done": True}, 200

    app.add_url_rule("/test/answered-then-lost", view_func=answered_then_lost)
    try:
        response = app.test_client().get("/test/answered-then-lost")
        assert response.status_code == 200 and response.get_json() == {"done": True}
        # The dead connection left the pool: the next request is served normally.
        assert app.test_client().get("/health").status_code == 200
    finally:
        get_database(app).dispose()


# == 2. The scheduler killed -9 mid-job and started again ===================================
# The SLA sweep commits chunk by chunk (200 cases each), so a kill leaves part of a slot done:
# the restarted process must finish that slot (its recovery at start), and the guards must
# keep the done part from being done again.

OVERDUE_CASES = 210  # a full chunk of the sweep (200), committed before the kill, and a rest
NOTICES_PER_CASE = 5  # level 1: its community manager, and "overdue" to assignee and handler;
# level 2: the town manager; level 3: the district manager


def overdue_world(url: str, tmp_path: Path) -> dict[str, Any]:
    """``sla_world`` plus OVERDUE_CASES cases in handling, two weeks overdue (level 3), in
    both communities; returns the world and the ids of those cases."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with Session(engine) as db:
            world = sla_world(db, tmp_path)
            ids = list(
                db.execute(
                    text(
                        """
                        INSERT INTO incident (client_uuid, category_id, geom, reported_at,
                            status, dispatched_at, time_limit_hours, deadline_at, assignee_id,
                            department_id)
                        SELECT gen_random_uuid(), (SELECT min(id) FROM category
                                                   WHERE time_limit_hours IS NOT NULL),
                               ST_SetSRID(ST_MakePoint(113.001 + (n % 38) * 0.001,
                                                       23.001 + (n / 38) * 0.003), 4326),
                               now() - interval '20 days', 'in_handling',
                               now() - interval '18 days', 10, now() - interval '14 days',
                               :assignee, (SELECT id FROM department WHERE code = 'CG')
                        FROM generate_series(0, :n - 1) AS n ORDER BY n
                        RETURNING id
                        """
                    ),
                    {"n": OVERDUE_CASES, "assignee": world["actors"]["insp.w"].user_id},
                ).scalars()
            )
            assign_grids(db, "incident")
            db.commit()
    finally:
        engine.dispose()
    return {**world, "overdue": sorted(ids)}


def test_the_scheduler_killed_mid_sweep_and_restarted(database_url, tmp_path, cheap_passwords):
    url, drop = own_database(database_url, "gridops_kill")
    engine = create_engine(url, poolclass=pool.NullPool)
    started: list[Proc] = []
    try:
        world = overdue_world(url, tmp_path)
        cases = world["overdue"]
        # Hold the sweep inside its second chunk: an uncommitted inbox row with the key of the
        # first notification of the chunk's first case makes the sweep's insert wait.
        with engine.connect() as conn:
            candidates = list(
                conn.execute(
                    text(
                        "SELECT id FROM incident WHERE deadline_at IS NOT NULL "
                        "AND status NOT IN ('closed', 'void') ORDER BY id"
                    )
                ).scalars()
            )
            held = candidates[CHUNK]
            deadline = conn.execute(
                text("SELECT deadline_at FROM incident WHERE id = :id"), {"id": held}
            ).scalar_one()
        assert held in cases and candidates.index(cases[-1]) >= CHUNK
        key = f"escalate:{held}:1:{deadline.astimezone(TZ):%Y%m%dT%H%M}"
        gate = engine.connect()
        gate.execute(
            text(
                "INSERT INTO notification (user_id, kind, title, dedupe_key) "
                "VALUES (:user, 'escalation', 'gate', :key)"
            ),
            {"user": world["actors"]["mgr.w"].user_id, "key": key},
        )

        seed_jobstore(url, {"sla_sweep": datetime.now(TZ) - timedelta(minutes=1)})
        # The inbox only: deliveries to other channels are at least once by design (a kill
        # between sending and stamping sends again), which test_scheduler covers.
        first = Proc(url, tmp_path, "first", GRIDOPS_NOTIFY_SENDERS="inbox")
        started.append(first)

        def sweep_waits() -> bool:
            return bool(scalar(
                engine,
                f"{APP_SESSIONS} AND wait_event_type = 'Lock' "
                "AND query LIKE 'INSERT INTO notification%'",
            ))  # fmt: skip

        wait_for(sweep_waits, timeout=90, what="the sweep to reach its second chunk")
        [run] = job_runs(engine, "sla_sweep")
        assert run.finished_at is None
        escalated = scalar(engine, "SELECT count(*) FROM incident WHERE escalation_level = 3")
        assert escalated == CHUNK - (len(candidates) - len(cases))  # the first chunk's, committed

        first.stop(signal.SIGKILL)  # kill -9, mid-job
        gate.rollback()  # the killed sweep's transaction can go on, and ends with its session
        gate.close()
        wait_for(lambda: not scalar(engine, APP_SESSIONS),
                 what="the killed scheduler's sessions to end")  # fmt: skip
        with engine.connect() as conn:  # the chunk the kill interrupted was rolled back
            assert (
                conn.execute(
                    text("SELECT escalation_level FROM incident WHERE id = :id"), {"id": held}
                ).scalar_one()
                == 0
            )

        second = Proc(url, tmp_path, "second", GRIDOPS_NOTIFY_SENDERS="inbox")  # started again
        started.append(second)

        def slot_finished() -> list[Any]:
            return [r for r in job_runs(engine, "sla_sweep")
                    if r.slot == run.slot and r.finished_at]  # fmt: skip

        [done] = wait_for(slot_finished, timeout=90, what="the interrupted slot to be finished")
        assert done.outcome["rerun"] is True and done.outcome["by"].endswith(f":{second.pid}")
        assert "sla_sweep slot" in second.text() and "was interrupted" in second.text()

        with engine.connect() as conn:
            # Nothing due was lost: every overdue case reached level 3 ...
            levels = conn.execute(
                text("SELECT id, escalation_level FROM incident WHERE id = ANY(:ids)"),
                {"ids": cases},
            ).all()
            assert {level for _, level in levels} == {3}
            # ... and nothing was done twice: one decision per level, each notice once.
            decided = dict(
                conn.execute(
                    text(
                        "SELECT incident_id, count(*) FROM case_decision WHERE kind = 'escalate' "
                        "AND incident_id = ANY(:ids) GROUP BY incident_id"
                    ),
                    {"ids": cases},
                ).all()
            )
            assert decided == dict.fromkeys(cases, 3)
            noticed = dict(
                conn.execute(
                    text(
                        "SELECT incident_id, count(*) FROM notification "
                        "WHERE incident_id = ANY(:ids) GROUP BY incident_id"
                    ),
                    {"ids": cases},
                ).all()
            )
            assert noticed == dict.fromkeys(cases, NOTICES_PER_CASE)
            assert (
                conn.execute(
                    text("SELECT count(*) FROM notification WHERE title = 'gate'")
                ).scalar_one()
                == 0
            )
        # Each slot of the sweep ran to its end once: the killed one again, nothing else twice.
        runs = job_runs(engine, "sla_sweep")
        assert len({r.slot for r in runs}) == len(runs) and all(r.finished_at for r in runs)
        print(
            f"\nscheduler: killed -9 with {escalated} of {len(cases)} overdue cases escalated; "
            f"restarted, the slot re-run finished the other {len(cases) - escalated}; "
            f"{3 * len(cases)} decisions and {NOTICES_PER_CASE * len(cases)} notices, each once"
        )
        assert second.stop() == 0
    finally:
        for proc in started:
            stop_process(proc.popen, signal.SIGKILL)
        engine.dispose()
        drop()


# == 3. A photo store that cannot be written, or is full ====================================


def storage_problem(
    status: int, headers: Any, problem: dict[str, Any], expected: int, slug: str, reason: str
) -> None:
    """A clear problem naming the storage and the system's reason, with a time to retry."""
    assert status == expected, problem
    assert headers["Content-Type"].startswith("application/problem+json")
    assert problem["type"] == f"/problems/{slug}"
    assert "storage" in problem["detail"] or "room" in problem["detail"]
    assert reason in problem["detail"] and "/" not in problem["detail"]  # no server path told
    assert int(headers["Retry-After"]) > 0


def test_an_unwritable_photo_folder_is_a_503_and_stores_nothing(
    database_url, connection, session, tmp_path, cheap_passwords, token_for
):
    # The configured folder lies under a regular file: not even root can create it.
    blocker = tmp_path / "storage"
    blocker.write_text("not a folder")
    photo_dir = blocker / "photos"
    app = create_app(app_config(database_url, PHOTO_DIR=str(photo_dir)))
    get_database(app).bind_to(connection)
    try:
        world = build_world(session, tmp_path)
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = (
            f"Bearer {token_for(world['actors']['insp.w'].user_id)}"
        )
        body = report()
        refused = client.post(
            "/api/v1/incidents",
            data=multipart(body, [png(), png(200, 100)]),
            content_type="multipart/form-data",
        )
        storage_problem(refused.status_code, refused.headers, refused.get_json(), 503,
                        "photo-storage-unavailable", "Not a directory")  # fmt: skip
        # No case row without its photos, and nothing written anywhere.
        assert scalar_in(session, "SELECT count(*) FROM incident WHERE client_uuid = :u",
                         u=body["client_uuid"]) == 0  # fmt: skip
        assert scalar_in(session, "SELECT count(*) FROM incident_photo") == 0
        assert blocker.read_text() == "not a folder"

        # A transition with a photo: refused the same way, the case unchanged.
        case = world["west"]
        moved = client.post(
            f"/api/v1/cases/{case}/transitions",
            data=multipart({"action": "verify"}, [png()], field="transition"),
            content_type="multipart/form-data",
            headers={"If-Match": '"1"'},
        )
        storage_problem(moved.status_code, moved.headers, moved.get_json(), 503,
                        "photo-storage-unavailable", "Not a directory")  # fmt: skip
        assert scalar_in(session, "SELECT version FROM incident WHERE id = :id", id=case) == 1

        # Reports without photos need no storage: they still land.
        plain = client.post("/api/v1/incidents", json=report())
        assert plain.status_code == 201

        # The folder repaired: the tablet's retry of the same report lands, with its photos.
        blocker.unlink()
        retried = client.post(
            "/api/v1/incidents",
            data=multipart(body, [png(), png(200, 100)]),
            content_type="multipart/form-data",
        )
        assert retried.status_code == 201, retried.get_json()
        assert len(retried.get_json()["photos"]) == 2
        named = {
            name
            for pair in session.execute(text("SELECT path, thumb_path FROM incident_photo"))
            for name in pair
        }
        assert len(named) == 4 and photo_files(photo_dir) == named
    finally:
        get_database(app).dispose()


FILE_SIZE_LIMIT = 32 * 1024  # the server's RLIMIT_FSIZE: a small photo fits, a large one not


def test_a_full_photo_store_is_a_507_and_stores_nothing(database_url, tmp_path, cheap_passwords):
    # "Full" as the writer meets it: the system refuses to let a file grow (EFBIG, from the
    # server's RLIMIT_FSIZE). A full disk (ENOSPC) and a quota (EDQUOT) take the same path.
    url, drop = own_database(database_url, "gridops_full")
    try:
        world = seed_world(url, tmp_path, 1)
        photo_dir = tmp_path / "photos"
        # Sizes: the small photo fits; the medium one (110 KB sent, 80 KB stored) is taken in
        # but cannot be stored; the large one (570 KB) is spooled to a temporary file by the
        # form parser (above 500 KB), which meets the limit before any view runs.
        small = png()
        medium = encode(noise(400, 300), "JPEG", quality=90)
        large = encode(noise(900, 700), "JPEG", quality=90)
        body, spooled, fits = report(), report(), report()
        with served(url, photo_dir, tmp_path / "limited.log",
                    file_size_limit=FILE_SIZE_LIMIT) as (base, _):  # fmt: skip
            http = requests.Session()
            http.headers["Authorization"] = f"Bearer {world['tokens'][0]}"
            # The small photo is written first, then the medium one meets the limit.
            refused = post_report(http, base, body, [small, medium])
            storage_problem(refused.status_code, refused.headers, refused.json(), 507,
                            "photo-storage-full", "File too large")  # fmt: skip
            assert photo_files(photo_dir) == set()  # the small photo's files went again too
            assert stored_reports(url) == ([], set())
            too_big = post_report(http, base, spooled, [large])
            storage_problem(too_big.status_code, too_big.headers, too_big.json(), 507,
                            "storage-full", "File too large")  # fmt: skip
            assert post_report(http, base, fits, [small]).status_code == 201
        # Room again (an app without the limit): the tablet's retries land once each, with all
        # their photos.
        app = create_app(app_config(url, PHOTO_DIR=str(photo_dir)))
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {world['tokens'][0]}"
        try:
            for again, photos in ((body, [small, medium]), (spooled, [large])):
                for status in (201, 200):
                    answer = client.post(
                        "/api/v1/incidents",
                        data=multipart(again, photos),
                        content_type="multipart/form-data",
                    )
                    assert answer.status_code == status, answer.get_json()
        finally:
            get_database(app).dispose()
        rows, named = stored_reports(url)
        assert {r.uuid: r.photos for r in rows} == {
            body["client_uuid"]: 2, spooled["client_uuid"]: 1, fits["client_uuid"]: 1
        }  # fmt: skip
        assert photo_files(photo_dir) == named
    finally:
        drop()


HOLD_COMMIT_LOCK = 770_077  # an advisory lock key no code of the app takes


def test_a_connection_lost_in_commit_keeps_the_photos_and_the_sweep_clears_orphans(
    database_url, tmp_path, cheap_passwords
):
    # COMMIT fails on a dead connection: the server may have committed, so deleting the files
    # could leave a case without its photos. They are kept; the retry lands once; the sweep
    # then removes exactly the files no row names, once they are old enough.
    url, drop = own_database(database_url, "gridops_commit")
    engine = create_engine(url, poolclass=pool.NullPool)
    photo_dir = tmp_path / "photos"
    app = create_app(app_config(url, PHOTO_DIR=str(photo_dir)))
    try:
        world = seed_world(url, tmp_path, 1)
        with engine.begin() as conn:  # a photo row makes COMMIT wait for the test's lock
            conn.execute(text(f"""
                CREATE FUNCTION test_hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN PERFORM pg_advisory_xact_lock_shared({HOLD_COMMIT_LOCK}); RETURN NULL;
                END $$;
                CREATE CONSTRAINT TRIGGER test_hold_commit AFTER INSERT ON incident_photo
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_hold_commit();
            """))  # fmt: skip
        gate = engine.connect()
        gate.execute(text("SELECT pg_advisory_lock(:k)"), {"k": HOLD_COMMIT_LOCK})
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {world['tokens'][0]}"
        body = report()

        def send():
            return client.post(
                "/api/v1/incidents",
                data=multipart(body, [png()]),
                content_type="multipart/form-data",
            )

        answers: list[Any] = []
        sender = threading.Thread(target=lambda: answers.append(send()))
        sender.start()
        in_commit = f"{APP_SESSIONS} AND query = 'COMMIT' AND wait_event_type = 'Lock'"
        wait_for(lambda: scalar(engine, in_commit), timeout=30, what="the request in COMMIT")
        assert len(photo_files(photo_dir)) == 2  # the photo and its thumbnail, written
        scalar(engine, in_commit.replace("count(*)", "pg_terminate_backend(pid)"))
        sender.join(timeout=30)
        gate.close()
        [lost] = answers
        assert lost.status_code == 503, lost.get_json()
        assert lost.get_json()["type"].endswith("/database-unavailable")
        assert lost.headers["Retry-After"]
        kept = photo_files(photo_dir)
        assert len(kept) == 2  # outcome unknown: nothing deleted
        assert stored_reports(url) == ([], set())  # (this time it had not committed)

        landed = send()  # the tablet's retry, same UUID and photo
        assert landed.status_code == 201, landed.get_json()
        assert send().status_code == 200  # and once only
        rows, named = stored_reports(url)
        assert [(r.uuid, r.photos) for r in rows] == [(body["client_uuid"], 1)]
        assert photo_files(photo_dir) == kept | named and not kept & named

        with Session(engine) as db:
            # A day old at least: fresh files may belong to a request still in its commit.
            assert sweep_orphans(db, photo_dir)["removed"] == 0
            assert photo_files(photo_dir) == kept | named
            swept = sweep_orphans(db, photo_dir, older_than=timedelta(0))
        assert swept["removed"] == 2 and swept["bytes_freed"] > 0
        assert photo_files(photo_dir) == named
        served_photo = client.get(landed.get_json()["photos"][0]["url"])
        assert served_photo.status_code == 200
        served_photo.close()
    finally:
        get_database(app).dispose()
        engine.dispose()
        drop()


def test_no_space_left_is_a_507_naming_it():
    # A real ENOSPC, from the device that is always full.
    with pytest.raises(OSError) as full, open("/dev/full", "wb", buffering=0) as device:
        device.write(b"photo")
    assert full.value.errno == errno.ENOSPC
    problem = storage_error(full.value)
    assert (problem.status, problem.type_slug) == (507, "photo-storage-full")
    assert "No space left on device" in problem.detail


# == 4. An import killed half-way and run again ==============================================

GRID_CUTS = {"v1": (30, 30), "v2": (20, 45)}  # columns x rows per community: 1,800 unit grids
ENTERPRISES = 5000


def cut_grids(version: str) -> list[dict[str, Any]]:
    """Both communities of the factories cut into unit grids, numbered west to east, then
    north to south; in v2 the west community is cut anew (every grid a new version there)."""
    rows = []
    for community, code in ((f.COMMUNITY_W, "440604001001"), (f.COMMUNITY_E, "440604001002")):
        columns, lines = GRID_CUTS[version if code.endswith("1") else "v1"]
        x0, y0, x1, y1 = community.bounds
        dx, dy = (x1 - x0) / columns, (y1 - y0) / lines
        for n in range(columns * lines):
            i, j = n % columns, n // columns
            cell = box(x0 + i * dx, y1 - (j + 1) * dy, x0 + (i + 1) * dx, y1 - j * dy)
            rows.append({"code": f"{code}{n + 1:03d}", "geometry": cell})
    return rows


def enterprise_rows() -> list[dict[str, Any]]:
    """Enterprises spread over both communities (their unit grid is found by the imports)."""
    rows = []
    for n in range(ENTERPRISES):
        lon = 113.0003 + (n * 7919 % 3989) * 0.00001
        lat = 23.0003 + (n * 104729 % 1939) * 0.00001
        rows.append(f.enterprise(lon, lat, serial=n, name=f"企业{n}"))
    return rows


# Contents, without surrogate ids and timestamps (a killed run burns sequence numbers, and
# clean runs happen at other times): the versions of each grid in order, the enterprises with
# the code of their grid.
CONTENT = {
    "admin_area": "SELECT count(*), md5(string_agg(concat_ws('|', code, name, level, "
    "parent_code, ST_AsEWKB(geom)), ',' ORDER BY code)) FROM admin_area",
    "unit_grid": "SELECT count(*), md5(string_agg(concat_ws('|', code, community_code, "
    "standard_ref, valid_to IS NULL, ST_AsEWKB(geom)), ',' ORDER BY code, valid_from)) "
    "FROM unit_grid",
    "enterprise": "SELECT count(*), md5(string_agg(concat_ws('|', e.uscc, e.name, e.risk_level, "
    "ST_AsEWKB(e.geom), g.code), ',' ORDER BY e.uscc)) FROM enterprise e "
    "LEFT JOIN unit_grid g ON g.id = e.grid_id",
}
# Whole rows, ids and timestamps included: what a run that changes nothing leaves alone.
ROWS = {
    table: f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t.{key})) FROM {table} t"
    for table, key in (("admin_area", "code"), ("unit_grid", "id"), ("enterprise", "id"))
}


def checksums(engine: Engine, queries: dict[str, str]) -> dict[str, tuple[int, str]]:
    with engine.connect() as conn:
        return {name: tuple(conn.execute(text(sql)).one()) for name, sql in queries.items()}


def gridops_env(url: str) -> dict[str, str]:
    return {**os.environ, "GRIDOPS_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}


def run_gridops(url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "gridops"), *args],
        env=gridops_env(url), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_an_import_killed_half_way_and_run_again_converges(database_url, tmp_path):
    files = {
        "areas": f.write(tmp_path / "areas.gpkg", f.area_rows()),
        "enterprises": f.write(tmp_path / "enterprises.gpkg", enterprise_rows()),
        **{v: f.write(tmp_path / f"grids-{v}.gpkg", cut_grids(v)) for v in GRID_CUTS},
    }
    killed_url, drop_killed = own_database(database_url, "gridops_killed")
    clean_url, drop_clean = own_database(database_url, "gridops_clean")
    killed, clean = (create_engine(u, poolclass=pool.NullPool) for u in (killed_url, clean_url))
    try:
        # Both start alike: areas, the enterprises and the first cut of the grids.
        for engine in (killed, clean):
            with Session(engine) as db:
                for kind, file in (("areas", files["areas"]), ("grids", files["v1"]),
                                   ("enterprises", files["enterprises"])):  # fmt: skip
                    run_import(db, kind, file)
        before = checksums(killed, CONTENT)
        assert before == checksums(clean, CONTENT)

        # The new cut, imported by `gridops import grids`, killed -9 during its writes: held
        # where it moves the enterprises to their new grids, after closing the old versions
        # of the west community's grids and inserting the new ones.
        gate = killed.connect()
        gate.execute(text("LOCK TABLE enterprise IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        victim = subprocess.Popen(
            [str(BIN / "gridops"), "import", "grids", str(files["v2"])],
            env=gridops_env(killed_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(lambda: victim.poll() is None and scalar(
                killed,
                f"{APP_SESSIONS} AND wait_event_type = 'Lock' "
                "AND query LIKE '%UPDATE enterprise t SET grid_id%'",
            ), timeout=90, what="the import to reach its writes")  # fmt: skip
            # It has written unit grids (closed the old versions, inserted the new) by now.
            assert scalar(
                killed,
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE a.application_name = 'gridops' AND a.datname = current_database() "
                "AND l.relation = 'unit_grid'::regclass AND l.mode = 'RowExclusiveLock'",
            ) == 1  # fmt: skip
            victim.send_signal(signal.SIGKILL)
            assert victim.wait(30) == -signal.SIGKILL
        finally:
            stop_process(victim, signal.SIGKILL)
            gate.rollback()
            gate.close()
        killed_after = time.monotonic() - started
        wait_for(lambda: not scalar(killed, APP_SESSIONS),
                 what="the killed import's session to end")  # fmt: skip
        assert checksums(killed, CONTENT) == before  # nothing of it was kept

        # Run again to its end: the same database as one clean run.
        rerun = run_gridops(killed_url, "import", "grids", str(files["v2"]))
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert "inserted 0, updated 900, unchanged 900" in rerun.stdout
        with Session(clean) as db:
            run_import(db, "grids", files["v2"])
        converged = checksums(killed, CONTENT)
        assert converged == checksums(clean, CONTENT)
        assert converged != before and converged["unit_grid"][0] == 2700

        # And once more after a complete run: nothing changes, not even an id or a timestamp.
        rows = checksums(killed, ROWS)
        with Session(killed) as db:
            again = run_import(db, "grids", files["v2"])
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, 1800)
        assert checksums(killed, ROWS) == rows
        print(
            f"\nimport: `gridops import grids` (1,800 unit grids, {ENTERPRISES:,} enterprises "
            f"to move) killed -9 in its writes after {killed_after:.1f} s, nothing kept; run "
            f"again: {converged['unit_grid'][0]} grid versions, identical to a clean run; a "
            f"third run changed no row"
        )
    finally:
        killed.dispose()
        clean.dispose()
        drop_killed()
        drop_clean()
