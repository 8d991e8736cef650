"""``gridops scheduler [--once JOB [--slot TIME]]``."""

from __future__ import annotations

import json
import signal
import threading
from datetime import datetime
from typing import Any

import click

from gridops.config import ConfigError, database_url, load_config


def _engine_and_config() -> tuple[Any, dict[str, Any]]:
    from gridops.commands import command_app
    from gridops.db import get_database, make_engine

    app = command_app()
    try:
        if app is not None:
            return get_database(app).engine, dict(app.config)
        config = load_config()
        return make_engine(database_url(config), config), config
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _parse_slot(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        slot = datetime.fromisoformat(raw)
    except ValueError:
        raise click.BadParameter(
            "an ISO 8601 time, e.g. 2026-12-01T01:00+08:00", param_hint="--slot"
        ) from None
    if slot.tzinfo is None:
        raise click.BadParameter("give the time zone, e.g. +08:00", param_hint="--slot")
    return slot


@click.command("scheduler")
@click.option(
    "--once",
    "once",
    metavar="JOB",
    help="Run JOB now for its latest slot (or --slot) and exit, instead of scheduling.",
)
@click.option("--slot", help="With --once: the slot to run, e.g. 2026-12-01T01:00+08:00.")
@click.option(
    "--lock-retry",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between attempts to take the scheduler lock while another copy holds it.",
)
def scheduler_command(once: str | None, slot: str | None, lock_retry: float) -> None:
    """Run the scheduled jobs; one process at a time (a second copy waits for the lock).

    Jobs: sla_sweep (every 5 min), deliver_notifications (every minute), inspection_tasks
    (05:30), patrol_coverage (23:50), kpi_snapshot (01:00), hotspot_run (02:00),
    photo_sweep (03:30),
    Asia/Shanghai.
    """
    from gridops.notifications.senders import load_senders
    from gridops.scheduler import jobs
    from gridops.scheduler.runner import Scheduler

    if slot is not None and once is None:
        raise click.UsageError("--slot goes with --once")
    if once is not None and once not in jobs.JOBS:
        raise click.BadParameter(f"one of {', '.join(jobs.JOBS)}", param_hint="--once")
    engine, config = _engine_and_config()
    try:
        senders = load_senders(str(config.get("NOTIFY_SENDERS") or "inbox"))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    jobs.configure(engine, senders, config)
    if once is not None:
        outcome = jobs.run_job(once, _parse_slot(slot), engine=engine)
        if outcome is None:
            click.echo(f"{once}: nothing to do (the slot ran already, or runs elsewhere now)")
        else:
            click.echo(json.dumps(outcome, ensure_ascii=False, default=str))
        return
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    Scheduler(engine, lock_retry=lock_retry).run(stop)
