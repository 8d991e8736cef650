"""The ``gridops`` command: ``gridops db start|stop|status|url|upgrade|downgrade``, ``serve`` …"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click
from flask.cli import FlaskGroup

from gridops.config import ConfigError, database_url, load_config
from gridops.localdb import LocalCluster, LocalDBError, default_base


def _config() -> dict[str, Any]:
    from gridops.commands import command_app

    app = command_app()
    return dict(app.config) if app is not None else load_config()


def _cluster(base: str | None, mode: str) -> LocalCluster:
    return LocalCluster(Path(base) if base else default_base(), mode=mode)  # type: ignore[arg-type]


base_option = click.option(
    "--base",
    type=click.Path(file_okay=False),
    default=None,
    help="Cluster folder (default: $GRIDOPS_VAR_DIR/pg, i.e. var/pg).",
)


@click.group("db")
def db_cli() -> None:
    """The database: the embedded cluster and the schema migrations."""


@db_cli.command("start")
@base_option
@click.option(
    "--mode",
    type=click.Choice(["demo", "test"]),
    default="demo",
    show_default=True,
    help="test turns durability off (fsync) for speed; only for throwaway clusters.",
)
def db_start(base: str | None, mode: str) -> None:
    """Create (first time) and start the private PostgreSQL + PostGIS cluster."""
    if os.environ.get("GRIDOPS_DATABASE_URL"):
        click.echo("GRIDOPS_DATABASE_URL is set: using that database, not a local cluster.")
        return
    cluster = _cluster(base, mode)
    try:
        cluster.start()
    except LocalDBError as exc:
        raise click.ClickException(str(exc)) from exc
    state = cluster.state()
    click.echo(
        f"PostgreSQL is running on 127.0.0.1:{state.port}, database {state.dbname} "
        f"(cluster in {cluster.base})."
    )


@db_cli.command("stop")
@base_option
def db_stop(base: str | None) -> None:
    """Stop the private cluster."""
    try:
        stopped = _cluster(base, "demo").stop()
    except LocalDBError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("stopped" if stopped else "not running")


@db_cli.command("status")
@base_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def db_status(base: str | None, as_json: bool) -> None:
    """Say whether the private cluster exists and runs; exit 3 when it does not run."""
    try:
        info = _cluster(base, "demo").status()
    except LocalDBError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(info))
    elif not info["initialised"]:
        click.echo(f"no cluster in {info['base']} (run `gridops db start`)")
    else:
        state = "running" if info["running"] else "stopped"
        click.echo(
            f"{state}: 127.0.0.1:{info['port']} database {info['database']} ({info['base']})"
        )
    if not info["running"]:
        sys.exit(3)


@db_cli.command("url")
@base_option
def db_url(base: str | None) -> None:
    """Print the SQLAlchemy URL of the database in use (it contains the password)."""
    try:
        if base:
            click.echo(_cluster(base, "demo").url())
        else:
            click.echo(database_url(_config()))
    except (ConfigError, LocalDBError) as exc:
        raise click.ClickException(str(exc)) from exc


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply the migrations up to REVISION (default: head)."""
    from gridops import migrate

    try:
        migrate.upgrade(database_url(_config()), revision)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"schema at {revision}")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Revert the migrations down to REVISION (``base`` removes every table)."""
    from gridops import migrate

    try:
        migrate.downgrade(database_url(_config()), revision)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"schema at {revision}")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int)
def serve(host: str, port: int, workers: int) -> None:
    """Serve the app under gunicorn (the production server), in the foreground."""
    gunicorn = shutil.which("gunicorn") or str(Path(sys.executable).parent / "gunicorn")
    argv = [
        gunicorn,
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--access-logfile",
        "-",
        "gridops:create_app()",
    ]
    os.execv(gunicorn, argv)


def register_commands(group: click.Group) -> None:
    from gridops.commands import register_data_commands

    for command in (db_cli, serve):
        if command.name not in group.commands:
            group.add_command(command)
    register_data_commands(group)


def _create_app() -> Any:
    from gridops import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_version_option=False)
def main() -> None:
    """gridops: grid management on PostGIS."""


register_commands(main)
