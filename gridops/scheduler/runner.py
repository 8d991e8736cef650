"""The scheduler process: one at a time, by a PostgreSQL advisory lock.

``Scheduler.run`` takes ``pg_try_advisory_lock`` on a connection it holds for as long as it
runs jobs. A second copy does not get it: it logs "another scheduler holds the lock; waiting"
and tries again every few seconds, so it takes over within seconds of the first one stopping,
crashing or being killed (the database drops a dead session's locks). If the connection
holding the lock is lost (database restart), the jobs stop and the process waits for the lock
again, since another copy may have taken it meanwhile.

While it holds the lock, an APScheduler ``BackgroundScheduler`` runs the jobs of
``gridops.scheduler.jobs.JOBS`` from a ``SQLAlchemyJobStore`` in the same database (table
``apscheduler_jobs``, created by APScheduler). At each start:

1. the jobs are (re)defined with ``replace_existing=True``, ``coalesce=True``,
   ``max_instances=1`` and each one's misfire grace; a job whose schedule did not change keeps
   its stored next run time, so a run that fell due while no scheduler ran is not forgotten:
   it runs once at start (coalesced) if it is within its grace;
2. a slot a killed scheduler left unfinished is run again first (``jobs.interrupted_slot``);
3. the scheduler resumes.

SIGTERM or SIGINT stop it gracefully: running jobs finish, the lock is released.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from gridops.incidents.workcal import TZ
from gridops.scheduler import jobs

log = logging.getLogger("gridops.scheduler")

LOCK_KEY = (0x67726964, 0x73636864)  # "grid", "schd"
LOCK_PARAMS = {"a": LOCK_KEY[0], "b": LOCK_KEY[1]}
JOBSTORE_TABLE = "apscheduler_jobs"
WORKERS = 4


def build_scheduler(engine: Engine) -> BackgroundScheduler:
    return BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOBSTORE_TABLE)},
        executors={"default": ThreadPoolExecutor(WORKERS)},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone=TZ,
    )


def register_jobs(scheduler: Any) -> None:
    """Define every job of ``JOBS`` in the (started, paused) scheduler's job store, keeping
    the stored next run time of a job whose schedule is unchanged; drop jobs no longer known."""
    for spec in jobs.JOBS.values():
        trigger = spec.trigger()
        keep: dict[str, Any] = {}
        try:
            stored = scheduler.get_job(spec.name)
        except Exception:  # an unreadable stored job (e.g. pickled by another version)
            log.warning("stored job %s could not be read: redefined", spec.name, exc_info=True)
            stored = None
        if stored is not None and repr(stored.trigger) == repr(trigger):
            keep["next_run_time"] = stored.next_run_time
        scheduler.add_job(
            spec.ref,
            trigger,
            id=spec.name,
            name=spec.name,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=int(spec.misfire_grace.total_seconds()),
            **keep,
        )
    for job in scheduler.get_jobs():
        if job.id not in jobs.JOBS:
            log.info("job %s is no longer defined: removed", job.id)
            with contextlib.suppress(JobLookupError):  # removed meanwhile
                scheduler.remove_job(job.id)


def recover(engine: Engine) -> list[str]:
    """Run again each job's slot a killed scheduler left unfinished; returns the jobs."""
    recovered = []
    for name in jobs.JOBS:
        slot = jobs.interrupted_slot(engine, name)
        if slot is None:
            continue
        log.warning("job %s slot %s was interrupted: running it again", name, slot)
        try:
            jobs.run_job(name, slot, engine=engine)
        except Exception:
            log.exception("job %s slot %s failed again", name, slot)
        recovered.append(name)
    return recovered


class Scheduler:
    """The scheduler process's loop: wait for the lock, run jobs while holding it."""

    def __init__(
        self, engine: Engine, *, lock_retry: float = 5.0, lock_check: float = 10.0
    ) -> None:
        self.engine = engine
        self.lock_retry = lock_retry
        self.lock_check = lock_check

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set: take the lock (waiting for it), run the jobs, and if the
        lock's connection is lost, wait for the lock again."""
        while not stop.is_set():
            lock = self._acquire(stop)
            if lock is None:
                return
            try:
                self._run_jobs(lock, stop)
            finally:
                self._release(lock)

    def _acquire(self, stop: threading.Event) -> Connection | None:
        announced = False
        while not stop.is_set():
            conn = None
            try:
                conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                if conn.execute(
                    text("SELECT pg_try_advisory_lock(:a, :b)"), LOCK_PARAMS
                ).scalar_one():
                    log.info("scheduler lock taken: this process runs the jobs")
                    return conn
                conn.close()
                if not announced:
                    log.info("another scheduler holds the lock; waiting")
                    announced = True
            except DBAPIError as exc:
                if conn is not None:
                    conn.invalidate()
                    conn.close()
                log.warning("database not reachable (%s); retrying", exc.orig)
            stop.wait(self.lock_retry)
        return None

    def _run_jobs(self, lock: Connection, stop: threading.Event) -> None:
        scheduler = build_scheduler(self.engine)
        scheduler.start(paused=True)
        try:
            register_jobs(scheduler)
            recover(self.engine)
            scheduler.resume()
            for job in scheduler.get_jobs():
                log.info("job %s: next run %s", job.id, job.next_run_time)
            while not stop.wait(self.lock_check):
                try:
                    lock.execute(text("SELECT 1"))
                except DBAPIError as exc:
                    log.error("lost the connection holding the scheduler lock (%s)", exc.orig)
                    break
        finally:
            scheduler.shutdown(wait=True)

    def _release(self, lock: Connection) -> None:
        try:
            lock.execute(text("SELECT pg_advisory_unlock(:a, :b)"), LOCK_PARAMS)
            lock.close()
            log.info("scheduler stopped; lock released")
        except DBAPIError:
            lock.invalidate()  # the session is gone, and its lock with it


__all__ = ["JOBSTORE_TABLE", "LOCK_KEY", "Scheduler", "build_scheduler", "recover", "register_jobs"]
