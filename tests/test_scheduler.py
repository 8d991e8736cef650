"""The scheduler: jobs run per slot exactly once (job_run), an interrupted slot is run again,
one process at a time by the advisory lock (real ``gridops scheduler`` processes: two at once,
one killed mid-job), and a run missed while no scheduler ran happens once at start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import Engine, create_engine, pool, text

from gridops.auth import service as auth
from gridops.incidents.workcal import TZ
from gridops.notifications.service import notify
from gridops.scheduler import jobs
from gridops.scheduler.runner import JOBSTORE_TABLE, build_scheduler, register_jobs
from tests.conftest import own_database

ROOT = Path(__file__).resolve().parent.parent
GRIDOPS = str(Path(sys.executable).parent / "gridops")
SENDER = "tests.test_scheduler:RecordingSender"


class RecordingSender:
    """A sender for the scheduler processes: appends ``begin``/``done`` lines with its pid to
    $GRIDOPS_TEST_SENDER_LOG, and holds each send while $GRIDOPS_TEST_SENDER_GATE exists."""

    def __init__(self) -> None:
        self.log = Path(os.environ["GRIDOPS_TEST_SENDER_LOG"])
        gate = os.environ.get("GRIDOPS_TEST_SENDER_GATE")
        self.gate = Path(gate) if gate else None

    def _write(self, what: str, notification_id: int) -> None:
        with self.log.open("a") as out:
            out.write(f"{what} {notification_id} {os.getpid()}\n")

    def send(self, notification: Any) -> None:
        self._write("begin", notification.id)
        while self.gate is not None and self.gate.exists():
            time.sleep(0.05)
        self._write("done", notification.id)


# -- a database of the module's own (the processes need committed data) ---------------------


@pytest.fixture(scope="module")
def db_url(database_url: str) -> Iterator[str]:
    url, drop = own_database(database_url, "gridops_sched")
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    eng = create_engine(db_url, poolclass=pool.NullPool)
    with eng.begin() as conn:  # each test starts from nothing scheduled, sent or run
        conn.execute(text(f"DROP TABLE IF EXISTS {JOBSTORE_TABLE}"))
        conn.execute(text("TRUNCATE job_run, kpi_snapshot, notification"))
    yield eng
    eng.dispose()


def job_runs(engine: Engine, job: str | None = None) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT job, slot, finished_at, outcome FROM job_run "
                "WHERE CAST(:job AS text) IS NULL OR job = :job ORDER BY job, slot"
            ),
            {"job": job},
        ).all()


def wait_for(check: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


# -- slots and single runs, in this process ------------------------------------------------


def test_slots_are_the_latest_scheduled_times():
    five = jobs.every_minutes(5)
    five_past_two = datetime(2026, 12, 1, 2, 5, tzinfo=UTC)
    assert five(datetime(2026, 12, 1, 2, 7, 33, tzinfo=UTC)) == five_past_two
    assert five(five_past_two) == five_past_two
    one_am = jobs.daily_at(1, 0)
    assert one_am(datetime(2026, 12, 1, 0, 30, tzinfo=TZ)) == datetime(2026, 11, 30, 1, tzinfo=TZ)
    assert one_am(datetime(2026, 12, 1, 1, 0, tzinfo=TZ)) == datetime(2026, 12, 1, 1, tzinfo=TZ)
    # 23:50 local is 15:50 UTC: the slot is of the local day.
    late = jobs.daily_at(23, 50)(datetime(2026, 12, 1, 16, 0, tzinfo=UTC))
    assert jobs.local_day(late).isoformat() == "2026-12-01"
    for spec in jobs.JOBS.values():  # each trigger fires at its slots
        fire = spec.trigger().get_next_fire_time(None, datetime(2026, 12, 1, 3, 1, tzinfo=TZ))
        assert spec.slot(fire) == fire, spec.name
        assert spec.misfire_grace > timedelta(seconds=1) and spec.why_grace


def test_a_slot_runs_once_and_an_interrupted_one_again(db_engine):
    slot = datetime(2026, 12, 1, 1, 0, tzinfo=TZ)
    first = jobs.run_job("kpi_snapshot", slot, engine=db_engine)
    assert first["day"] == "2026-11-30" and first["snapshots"] == 4
    assert jobs.run_job("kpi_snapshot", slot, engine=db_engine) is None  # that slot ran
    [run] = job_runs(db_engine, "kpi_snapshot")
    assert run.finished_at is not None and run.outcome["by"].endswith(f":{os.getpid()}")
    with db_engine.begin() as conn:  # as if the process had died mid-run
        conn.execute(text("UPDATE job_run SET finished_at = NULL"))
        periods = conn.execute(text("SELECT period, bucket, grouping FROM kpi_snapshot")).all()
    assert sorted(p.period for p in periods) == ["day", "day", "month", "month"]
    assert jobs.interrupted_slot(db_engine, "kpi_snapshot") == slot
    again = jobs.run_job("kpi_snapshot", slot, engine=db_engine)
    assert again["rerun"] is True
    assert jobs.interrupted_slot(db_engine, "kpi_snapshot") is None
    with db_engine.connect() as conn:  # replaced, not duplicated
        assert conn.execute(text("SELECT count(*) FROM kpi_snapshot")).scalar() == 4


def test_a_job_running_elsewhere_is_left_to_it(db_engine):
    with db_engine.connect() as other:
        other.execute(
            text("SELECT pg_advisory_lock(:c, hashtext('sla_sweep'))"), {"c": jobs.JOB_LOCK_CLASS}
        )
        assert jobs.run_job("sla_sweep", engine=db_engine) is None
        assert job_runs(db_engine) == []
    assert jobs.run_job("sla_sweep", engine=db_engine)["checked"] == 0


def test_a_failed_run_is_recorded_unfinished(db_engine, monkeypatch):
    def broken(session, slot):
        raise RuntimeError("disk full")

    spec = jobs.JOBS["patrol_coverage"]
    monkeypatch.setitem(jobs.JOBS, "patrol_coverage", jobs.JobSpec(
        spec.name, broken, spec.cron, spec.slot, spec.misfire_grace, spec.why_grace
    ))  # fmt: skip
    with pytest.raises(RuntimeError, match="disk full"):
        jobs.run_job("patrol_coverage", engine=db_engine)
    [run] = job_runs(db_engine, "patrol_coverage")
    assert run.finished_at is None and "disk full" in run.outcome["error"]
    assert jobs.interrupted_slot(db_engine, "patrol_coverage") == run.slot


def test_a_missing_collaborator_is_skipped_not_failed():
    assert jobs._optional("gridops.no_such_module", "f") is None
    assert jobs._optional("gridops.scheduler.jobs", "no_such_function") is None
    assert jobs._optional("gridops.scheduler.jobs", "run_job") is jobs.run_job


def seed_jobstore(url: str, due: dict[str, datetime]) -> None:
    """Define the jobs as a scheduler would, then set some next run times in the job store (as
    if a scheduler had stopped before them)."""
    eng = create_engine(url, poolclass=pool.NullPool)
    scheduler = build_scheduler(eng)
    scheduler.start(paused=True)
    try:
        register_jobs(scheduler)
    finally:
        scheduler.shutdown(wait=False)
    # On the store itself: a scheduler being shut down may still process its jobs once.
    store = SQLAlchemyJobStore(engine=eng, tablename=JOBSTORE_TABLE)
    store.start(scheduler, "default")
    for name, when in due.items():
        job = store.lookup_job(name)
        job._modify(next_run_time=when)
        store.update_job(job)
    eng.dispose()


def test_registering_again_keeps_the_next_run_time(db_url, db_engine):
    due = datetime.now(TZ) - timedelta(minutes=3)
    seed_jobstore(db_url, {"sla_sweep": due})
    scheduler = build_scheduler(db_engine)
    scheduler.start(paused=True)
    try:
        register_jobs(scheduler)  # a restart with unchanged schedules
        job = scheduler.get_job("sla_sweep")
        assert job.next_run_time == due
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 300)
        assert job.func_ref == "gridops.scheduler.jobs:sla_sweep"
        assert {j.id for j in scheduler.get_jobs()} == set(jobs.JOBS)
    finally:
        scheduler.shutdown(wait=False)


# -- real scheduler processes --------------------------------------------------------------


class Proc:
    def __init__(self, url: str, tmp_path: Path, name: str, **env: str) -> None:
        self.log = tmp_path / f"{name}.log"
        environment = {
            **os.environ,
            "GRIDOPS_DATABASE_URL": url,
            "GRIDOPS_NOTIFY_SENDERS": SENDER,
            "GRIDOPS_TEST_SENDER_LOG": str(tmp_path / "sent.log"),
            "GRIDOPS_LOG_LEVEL": "INFO",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        with self.log.open("w") as out:
            self.popen = subprocess.Popen(
                [GRIDOPS, "scheduler", "--lock-retry", "0.3"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=tmp_path,
            )
        self.pid = self.popen.pid

    def text(self) -> str:
        return self.log.read_text()

    def holds_lock(self) -> bool:
        return "scheduler lock taken" in self.text()

    def waits(self) -> bool:
        return "another scheduler holds the lock; waiting" in self.text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        return self.popen.wait(15)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:  # never leave a scheduler behind
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(10)


def pending_notifications(engine: Engine, count: int) -> list[int]:
    from sqlalchemy.orm import Session

    with Session(engine) as db:
        user = auth.create_user(db, f"u{uuid.uuid4().hex[:8]}", "Lychee-Bridge-Kiln-47")
        for n in range(count):
            notify(db, user, kind="task", title=f"task {n}", dedupe_key=f"task:{n}")
        db.commit()
        return list(
            db.execute(text("SELECT id FROM notification WHERE user_id = :u ORDER BY id"),
                       {"u": user}).scalars()
        )  # fmt: skip


def sent_lines(tmp_path: Path) -> list[tuple[str, int, int]]:
    path = tmp_path / "sent.log"
    if not path.exists():
        return []
    return [
        (what, int(nid), int(pid))
        for what, nid, pid in (line.split() for line in path.read_text().splitlines())
    ]


def test_two_schedulers_at_once_one_runs_the_jobs(db_url, db_engine, tmp_path, procs):
    ids = pending_notifications(db_engine, 3)
    now = datetime.now(TZ)
    seed_jobstore(db_url, {"deliver_notifications": now - timedelta(seconds=10),
                           "sla_sweep": now - timedelta(minutes=1)})  # fmt: skip
    procs += [Proc(db_url, tmp_path, "a"), Proc(db_url, tmp_path, "b")]
    wait_for(lambda: any(p.holds_lock() for p in procs) and any(p.waits() for p in procs),
             what="one holder and one waiter")  # fmt: skip
    wait_for(lambda: {r.job for r in job_runs(db_engine) if r.finished_at} >= {
        "deliver_notifications", "sla_sweep"}, what="the due jobs")  # fmt: skip
    time.sleep(1.5)  # the waiter keeps trying meanwhile
    [holder] = [p for p in procs if p.holds_lock()]
    [waiter] = [p for p in procs if p is not holder]
    assert waiter.waits() and not waiter.holds_lock()
    runs = job_runs(db_engine)
    assert all(r.outcome["by"].endswith(f":{holder.pid}") for r in runs), runs
    done = [(nid, pid) for what, nid, pid in sent_lines(tmp_path) if what == "done"]
    assert sorted(done) == [(nid, holder.pid) for nid in ids]  # each sent once, by the holder
    # A graceful stop releases the lock: the waiter takes over.
    assert holder.stop() == 0
    assert "scheduler stopped; lock released" in holder.text()
    wait_for(waiter.holds_lock, what="the waiter to take over")
    assert waiter.stop() == 0


def test_killed_mid_job_the_other_takes_over_and_finishes_the_slot(
    db_url, db_engine, tmp_path, procs
):
    ids = pending_notifications(db_engine, 3)
    gate = tmp_path / "gate"
    gate.touch()  # the first send blocks: the job is mid-run
    seed_jobstore(db_url, {"deliver_notifications": datetime.now(TZ) - timedelta(seconds=5)})
    procs += [Proc(db_url, tmp_path, n, GRIDOPS_TEST_SENDER_GATE=str(gate)) for n in "ab"]
    begun = wait_for(lambda: [line for line in sent_lines(tmp_path) if line[0] == "begin"],
                     what="a job to start sending")  # fmt: skip
    victim_pid = begun[0][2]
    [victim] = [p for p in procs if p.pid == victim_pid]
    [survivor] = [p for p in procs if p is not victim]
    [interrupted] = job_runs(db_engine, "deliver_notifications")
    killed_slot = interrupted.slot
    assert interrupted.finished_at is None
    wait_for(survivor.waits, what="the other scheduler to wait for the lock")
    assert not survivor.holds_lock()
    victim.stop(signal.SIGKILL)
    gate.unlink()
    wait_for(survivor.holds_lock, what="the survivor to take the lock")

    def slot_finished() -> Any:
        return [r for r in job_runs(db_engine, "deliver_notifications")
                if r.slot == killed_slot and r.finished_at]  # fmt: skip

    [run] = wait_for(slot_finished, what="the interrupted slot to be finished")
    assert run.outcome["rerun"] is True and run.outcome["sent"] == 3
    assert run.outcome["by"].endswith(f":{survivor.pid}")
    lines = sent_lines(tmp_path)
    done = sorted((nid, pid) for what, nid, pid in lines if what == "done")
    assert done == [(nid, survivor.pid) for nid in ids]  # nothing sent twice, nothing lost
    assert [(w, n) for w, n, p in lines if p == victim.pid] == [("begin", ids[0])]
    assert "was interrupted: running it again" in survivor.text()
    with db_engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM notification WHERE sent_at IS NULL")).scalar()
            == 0
        )
    assert survivor.stop() == 0


def test_a_run_missed_while_no_scheduler_ran_happens_once_at_start(
    db_url, db_engine, tmp_path, procs
):
    # The sweep was due an hour ago (twelve times over): one run at start, for the latest slot.
    started = datetime.now(UTC)
    seed_jobstore(db_url, {"sla_sweep": started - timedelta(hours=1)})
    procs.append(Proc(db_url, tmp_path, "solo"))
    wait_for(lambda: [r for r in job_runs(db_engine, "sla_sweep") if r.finished_at],
             what="the missed sweep")  # fmt: skip
    time.sleep(1)
    ended = datetime.now(UTC)
    five = jobs.every_minutes(5)
    slots = [r.slot for r in job_runs(db_engine, "sla_sweep")]
    possible = {five(started), five(ended)}  # a 5-minute boundary may pass during the test
    assert set(slots) <= possible and len(slots) == len(set(slots))
    assert procs[0].text().count('Running job "sla_sweep') == len(slots)
    assert "was missed by" not in procs[0].text()
    assert procs[0].stop() == 0
