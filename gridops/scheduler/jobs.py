"""The scheduled jobs: importable functions, idempotent, each run recorded per slot.

APScheduler stores textual references to the functions below (``gridops.scheduler.jobs:
sla_sweep`` …) and calls them without arguments. Each goes through ``run_job``, which

1. takes a per-job PostgreSQL advisory lock on its own connection for the run (a job never runs
   twice at the same moment, across processes: a ``--once`` run beside the scheduler waits its
   turn by skipping);
2. claims the job's **slot** (its latest scheduled time at or before now, e.g. 10:05 for the
   sweep at 10:07, today 01:00 for the KPI snapshot) in ``job_run`` with ``INSERT … ON CONFLICT
   DO NOTHING``: a slot that finished is skipped, so a restarted scheduler or a second process
   never runs a slot twice;
3. runs the work in its own session and transaction, then stamps ``finished_at`` and the
   outcome (with the process that ran it).

A slot that started and never finished (its process was killed, or the work raised) is run
again when claimed again (``--once``, or the scheduler's recovery at start): every job is
idempotent (the sweep's guards, ``sent_at``, ``ON CONFLICT`` upserts), so finishing it twice
over is the same as once, and nothing due is lost. Holding the per-job lock is what tells an
unfinished slot from one still running.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from gridops.incidents.workcal import TZ

log = logging.getLogger(__name__)

# Per-job advisory locks: (class, hashtext(job name)); the scheduler's own lock uses another
# class (runner.LOCK_KEY).
JOB_LOCK_CLASS = 0x67726A62  # "grjb"
# The recovery at start re-runs an interrupted slot only if it is this recent.
RECOVERY_WINDOW = timedelta(days=2)
KPI_GROUPINGS = ("", "district")  # "" = the whole city in one row per bucket

Work = Callable[[Session, datetime], dict[str, Any]]


# -- slots ---------------------------------------------------------------------------------


def every_minutes(n: int) -> Callable[[datetime], datetime]:
    """Slots of a job run at every n-th minute of the hour (n divides 60)."""

    def slot(now: datetime) -> datetime:
        now = now.astimezone(UTC).replace(second=0, microsecond=0)
        return now - timedelta(minutes=now.minute % n)

    return slot


def daily_at(hour: int, minute: int) -> Callable[[datetime], datetime]:
    """Slots of a job run every day at ``hour:minute`` in Asia/Shanghai."""

    def slot(now: datetime) -> datetime:
        local = now.astimezone(TZ)
        at = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return at if at <= local else at - timedelta(days=1)

    return slot


def local_day(slot: datetime) -> date:
    return slot.astimezone(TZ).date()


# -- the work of each job ------------------------------------------------------------------

_engine: Engine | None = None
_senders: list[Any] | None = None
_config: dict[str, Any] | None = None


def configure(
    engine: Engine, senders: list[Any] | None = None, config: dict[str, Any] | None = None
) -> None:
    """Use ``engine`` (and these notification senders and settings) for the jobs of this
    process."""
    global _engine, _senders, _config
    _engine, _senders, _config = engine, senders, config


def get_config() -> dict[str, Any]:
    """The settings jobs read (the photo folder): the configured ones, else ``GRIDOPS_*``."""
    global _config
    if _config is None:
        from gridops.config import load_config

        _config = load_config()
    return _config


def get_engine() -> Engine:
    """The engine jobs run on: the configured one, else one from ``GRIDOPS_*``."""
    global _engine
    if _engine is None:
        from gridops.config import database_url, load_config
        from gridops.db import make_engine

        config = load_config()
        _engine = make_engine(database_url(config), config)
    return _engine


def _sla_sweep(session: Session, slot: datetime) -> dict[str, Any]:
    from gridops.dispatch.sla import sweep

    return dict(sweep(session))  # "now" is the clock: the slot only names the run


def _deliver(session: Session, slot: datetime) -> dict[str, Any]:
    from gridops.notifications.senders import deliver_pending

    return {"sent": deliver_pending(session, _senders)}


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    """``module.name`` if that module exists; None (logged) while it is not written yet."""
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module.startswith(exc.name):
            raise  # the module exists but something it imports is missing: a real error
        log.warning("%s is not available: job skipped", module)
        return None
    function = getattr(found, name, None)
    if function is None:
        log.warning("%s.%s is not available: job skipped", module, name)
    return function


def _inspection_tasks(session: Session, slot: datetime) -> dict[str, Any]:
    create_due_tasks = _optional("gridops.inspections.tasks", "create_due_tasks")
    if create_due_tasks is None:
        return {"skipped": "gridops.inspections.tasks.create_due_tasks is not available"}
    day = local_day(slot)
    result = create_due_tasks(session, day)
    session.commit()
    return {"day": day.isoformat(), "result": result}


def _patrol_coverage(session: Session, slot: datetime) -> dict[str, Any]:
    compute_coverage = _optional("gridops.patrol.service", "compute_coverage")
    if compute_coverage is None:
        return {"skipped": "gridops.patrol.service.compute_coverage is not available"}
    day = local_day(slot)  # 23:50: the day that is ending (a late run still computes it)
    result = compute_coverage(session, day)
    session.commit()
    return {"day": day.isoformat(), "result": result}


def _kpi_snapshot(session: Session, slot: datetime) -> dict[str, Any]:
    """Yesterday's KPIs (day) and its month so far (month), for the whole city, kept in
    ``kpi_snapshot`` (a re-run replaces them)."""
    from gridops.auth.actor import Scope
    from gridops.kpi.service import kpis

    day = local_day(slot) - timedelta(days=1)
    stored = 0
    for period, start in (("day", day), ("month", day.replace(day=1))):
        for grouping in KPI_GROUPINGS:
            rows = kpis(
                session, Scope(everything=True), period=period, start=start, end=day,
                by=grouping or None,
            )  # fmt: skip
            session.execute(
                text(
                    "INSERT INTO kpi_snapshot (period, bucket, grouping, rows) "
                    "VALUES (:period, :bucket, :grouping, CAST(:rows AS jsonb)) "
                    "ON CONFLICT ON CONSTRAINT kpi_snapshot_once "
                    "DO UPDATE SET rows = EXCLUDED.rows, taken_at = now()"
                ),
                {
                    "period": period,
                    "bucket": start,
                    "grouping": grouping,
                    "rows": json.dumps(rows, ensure_ascii=False, default=str),
                },
            )
            stored += 1
    session.commit()
    return {"day": day.isoformat(), "snapshots": stored}


HOTSPOT_RESOLUTION = 9


def _photo_sweep(session: Session, slot: datetime) -> dict[str, Any]:
    """Photo files without a row (a request killed between writing them and its commit, or a
    commit whose outcome was unknown), once they are a day old."""
    from pathlib import Path

    from gridops.incidents.case_photos import sweep_orphans

    return sweep_orphans(session, Path(get_config()["PHOTO_DIR"]))


def _month_start(day: date) -> datetime:
    return datetime(day.year, day.month, 1, tzinfo=TZ)


def _hotspot_run(session: Session, slot: datetime) -> dict[str, Any]:
    """The last complete month's Gi* run at resolution 9 for each top-level area (the whole
    city), and an emerging run by month over the 12 months ending with it. A run whose exact
    parameters are stored already is skipped, so the month is analysed once however often
    the job runs; a period without incidents is skipped too."""
    from gridops.errors import InvalidInput
    from gridops.hotspots.service import existing_run, run_hotspots

    end = _month_start(local_day(slot))
    last = (end - timedelta(days=1)).date()  # a day of the last complete month
    year, month = divmod(last.year * 12 + last.month - 1 - 11, 12)
    plans = (
        ("gistar", _month_start(last), None),
        ("emerging", datetime(year, month + 1, 1, tzinfo=TZ), "month"),
    )
    cities = session.execute(
        text("SELECT code FROM admin_area WHERE parent_code IS NULL ORDER BY code")
    ).scalars()
    made, skipped = [], []
    for area in list(cities):
        for kind, start, step in plans:
            key = {"kind": kind, "resolution": HOTSPOT_RESOLUTION, "start": start, "end": end,
                   "area": area, "step": step}  # fmt: skip
            if existing_run(session, **key) is not None:
                skipped.append(f"{kind} {area}: stored already")
                continue
            try:
                with session.begin_nested():
                    made.append(run_hotspots(session, **key))
            except InvalidInput as exc:  # no incidents in the period, or too many cells
                skipped.append(f"{kind} {area}: {exc}")
    session.commit()
    return {"month": f"{last.year}-{last.month:02d}", "runs": made, "skipped": skipped}


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job: its work, its schedule (a cron trigger and the matching slots)
    and how late a run may still start (APScheduler's misfire grace)."""

    name: str
    work: Work
    cron: dict[str, Any]
    slot: Callable[[datetime], datetime]
    misfire_grace: timedelta
    why_grace: str

    @property
    def ref(self) -> str:
        return f"{__name__}:{self.name}"

    def trigger(self) -> CronTrigger:
        return CronTrigger(timezone=TZ, **self.cron)


# Misfire grace: how late APScheduler may still start a run it missed (the scheduler was down
# or busy). With coalesce=True a backlog is folded into one run at the latest missed time, and
# that one runs only if it is less than the grace late; otherwise it is logged as missed and the
# job waits for its next time. Its default is 1 s, which would drop any run missed by a restart.
JOBS: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec(
            "sla_sweep", _sla_sweep, {"minute": "*/5"}, every_minutes(5), timedelta(minutes=5),
            "a period: a later run is superseded by the next sweep, which finds everything "
            "(the deadlines are in the cases)",
        ),
        JobSpec(
            "deliver_notifications", _deliver, {"minute": "*"}, every_minutes(1),
            timedelta(minutes=1),
            "a period: the next run picks up whatever is unsent",
        ),
        JobSpec(
            "inspection_tasks", _inspection_tasks, {"hour": 5, "minute": 30}, daily_at(5, 30),
            timedelta(hours=3),
            "until 08:30, the start of the working day: later, today's tasks would reach "
            "inspectors already out; the next morning's run creates everything due by then",
        ),
        JobSpec(
            "patrol_coverage", _patrol_coverage, {"hour": 23, "minute": 50}, daily_at(23, 50),
            timedelta(hours=6),
            "the night: a late run still computes the day of its slot; by day it would only "
            "load the database while people work (run it with --once)",
        ),
        JobSpec(
            "kpi_snapshot", _kpi_snapshot, {"hour": 1, "minute": 0}, daily_at(1, 0),
            timedelta(hours=6),
            "the night, as for patrol coverage: the snapshot is of yesterday whenever it runs",
        ),
        JobSpec(
            "hotspot_run", _hotspot_run, {"hour": 2, "minute": 0}, daily_at(2, 0),
            timedelta(hours=6),
            "the night, as for the KPI snapshot: the run is of last month whenever it runs, and "
            "a month already stored is skipped",
        ),
        JobSpec(
            "photo_sweep", _photo_sweep, {"hour": 3, "minute": 30}, daily_at(3, 30),
            timedelta(hours=6),
            "the night, as for the hotspot run: any later run removes the same orphans",
        ),
    )
}  # fmt: skip


# -- running one slot ----------------------------------------------------------------------


def _runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(
    name: str, slot: datetime | None = None, *, engine: Engine | None = None
) -> dict[str, Any] | None:
    """Run job ``name`` for ``slot`` (default: its latest scheduled time) unless that slot
    finished or the job is running elsewhere; returns the outcome, None when skipped."""
    spec = JOBS[name]
    engine = engine or get_engine()
    slot = slot or spec.slot(datetime.now(UTC))
    key = {"job": name, "slot": slot, "cls": JOB_LOCK_CLASS}
    with engine.connect() as guard:
        guard = guard.execution_options(isolation_level="AUTOCOMMIT")
        if not guard.execute(
            text("SELECT pg_try_advisory_lock(:cls, hashtext(:job))"), key
        ).scalar_one():
            log.info("job %s is running in another process: slot %s left to it", name, slot)
            return None
        try:
            return _claim_and_run(guard, spec, slot, engine, key)
        finally:
            guard.execute(text("SELECT pg_advisory_unlock(:cls, hashtext(:job))"), key)


def _claim_and_run(
    guard: Any, spec: JobSpec, slot: datetime, engine: Engine, key: dict[str, Any]
) -> dict[str, Any] | None:
    claimed = guard.execute(
        text(
            "INSERT INTO job_run (job, slot) VALUES (:job, :slot) "
            "ON CONFLICT (job, slot) DO NOTHING RETURNING started_at"
        ),
        key,
    ).first()
    rerun = False
    if claimed is None:
        prior = guard.execute(
            text("SELECT started_at, finished_at FROM job_run WHERE job = :job AND slot = :slot"),
            key,
        ).one()
        if prior.finished_at is not None:
            log.info("job %s slot %s already ran (%s): skipped", spec.name, slot, prior.finished_at)
            return None
        rerun = True
        log.warning(
            "job %s slot %s started at %s and never finished: running it again",
            spec.name,
            slot,
            prior.started_at,
        )
        guard.execute(
            text(
                "UPDATE job_run SET started_at = clock_timestamp(), outcome = NULL "
                "WHERE job = :job AND slot = :slot"
            ),
            key,
        )
    try:
        with Session(engine) as session:
            outcome = dict(spec.work(session, slot) or {})
            session.commit()
    except Exception as exc:
        error = {"error": f"{type(exc).__name__}: {exc}"[:1000], "by": _runner_id()}
        guard.execute(
            text(
                "UPDATE job_run SET outcome = CAST(:outcome AS jsonb) "
                "WHERE job = :job AND slot = :slot"
            ),
            {**key, "outcome": json.dumps(error)},
        )
        raise
    outcome.update({"by": _runner_id(), **({"rerun": True} if rerun else {})})
    guard.execute(
        text(
            "UPDATE job_run SET finished_at = clock_timestamp(), outcome = CAST(:outcome AS jsonb) "
            "WHERE job = :job AND slot = :slot"
        ),
        {**key, "outcome": json.dumps(outcome, ensure_ascii=False, default=str)},
    )
    log.info("job %s slot %s done: %s", spec.name, slot, outcome)
    return outcome


def interrupted_slot(engine: Engine, name: str) -> datetime | None:
    """The job's latest slot that started and never finished, if no later slot finished and
    it is recent (``RECOVERY_WINDOW``): the run a killed scheduler left behind."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT r.slot FROM job_run r WHERE r.job = :job AND r.finished_at IS NULL "
                "AND r.slot > clock_timestamp() - make_interval(secs => :window) "
                "AND NOT EXISTS (SELECT 1 FROM job_run d WHERE d.job = r.job "
                "AND d.finished_at IS NOT NULL AND d.slot > r.slot) "
                "ORDER BY r.slot DESC LIMIT 1"
            ),
            {"job": name, "window": RECOVERY_WINDOW.total_seconds()},
        ).scalar()


# -- the functions APScheduler calls -------------------------------------------------------


def sla_sweep() -> dict[str, Any] | None:
    return run_job("sla_sweep")


def deliver_notifications() -> dict[str, Any] | None:
    return run_job("deliver_notifications")


def inspection_tasks() -> dict[str, Any] | None:
    return run_job("inspection_tasks")


def patrol_coverage() -> dict[str, Any] | None:
    return run_job("patrol_coverage")


def kpi_snapshot() -> dict[str, Any] | None:
    return run_job("kpi_snapshot")


def hotspot_run() -> dict[str, Any] | None:
    return run_job("hotspot_run")


def photo_sweep() -> dict[str, Any] | None:
    return run_job("photo_sweep")


__all__ = [
    "JOBS",
    "JobSpec",
    "configure",
    "deliver_notifications",
    "hotspot_run",
    "inspection_tasks",
    "interrupted_slot",
    "kpi_snapshot",
    "patrol_coverage",
    "photo_sweep",
    "run_job",
    "sla_sweep",
]
