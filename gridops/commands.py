"""Data commands: ``gridops import``, ``gridops grids check|generate``, ``gridops demo load``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from flask import Flask, current_app, has_app_context
from flask.cli import ScriptInfo
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from gridops.config import ConfigError, database_url, load_config
from gridops.errors import GridopsError


def command_app() -> Flask | None:
    """The Flask app of this command: the active one, or the one the CLI's ScriptInfo makes."""
    if has_app_context():
        return current_app._get_current_object()  # type: ignore[attr-defined]
    ctx = click.get_current_context(silent=True)
    info = ctx.find_object(ScriptInfo) if ctx else None
    return info.load_app() if info else None


def open_session() -> Session:
    """A session on the command's database (configured by GRIDOPS_* variables)."""
    from gridops.db import get_database, make_engine

    app = command_app()
    try:
        if app is not None:
            return get_database(app).sessionmaker()
        config = load_config()
        return sessionmaker(make_engine(database_url(config), config))()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def fail(exc: GridopsError) -> click.ClickException:
    lines = [str(exc.detail)] + [f"  {e.field}: {e.message}" for e in exc.errors]
    return click.ClickException("\n".join(lines))


@click.command("import")
@click.argument(
    "kind", type=click.Choice(["areas", "grids", "enterprises", "outlets", "components"])
)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--layer", help="Layer to read when the file has several.")
@click.option("--field-map", help="Rename columns: ours=theirs,… e.g. code=GB_CODE,name=MC")
@click.option("--src-crs", help="CRS of the file when it has none or a wrong one (EPSG:4547 …).")
@click.option(
    "--from",
    "offset",
    type=click.Choice(["gcj02", "bd09"]),
    help="The file is in a Chinese offset system (web-map data): undo it.",
)
@click.option("--dry-run", is_flag=True, help="Check and count, write nothing.")
@click.option("--allow-rejects", is_flag=True, help="Write the good rows even if some fail.")
@click.option(
    "--rejects-csv",
    type=click.Path(path_type=Path),
    help="Where to write the rejected rows (default: FILE-stem.rejects.csv here).",
)
@click.option("--tolerance-m", default=1.0, show_default=True, help="Containment tolerance.")
@click.option("--overlap-m2", default=1.0, show_default=True, help="Sibling overlap tolerance.")
@click.option("--gap-m2", default=1.0, show_default=True, help="Unit-grid gap tolerance.")
def import_command(
    kind: str,
    file: Path,
    layer: str | None,
    field_map: str | None,
    src_crs: str | None,
    offset: str | None,
    dry_run: bool,
    allow_rejects: bool,
    rejects_csv: Path | None,
    tolerance_m: float,
    overlap_m2: float,
    gap_m2: float,
) -> None:
    """Import KIND (areas, grids, enterprises, outlets, components) from a GeoPackage,
    Shapefile, GeoJSON or (points) a CSV with lon and lat columns.

    All or nothing: a rejected row fails the import unless --allow-rejects.
    """
    from gridops.geofiles import parse_field_map
    from gridops.grids.topology import TopologyLimits
    from gridops.importing import ImportOptions, ImportRejected, run_import

    session = open_session()
    try:
        options = ImportOptions(
            layer=layer,
            field_map=parse_field_map(field_map),
            src_crs=src_crs,
            offset=offset,
            dry_run=dry_run,
            allow_rejects=allow_rejects,
            limits=TopologyLimits(within_m=tolerance_m, overlap_m2=overlap_m2, gap_m2=gap_m2),
        )
        report = run_import(session, kind, file, options)
    except ImportRejected as exc:
        report = exc.report
        click.echo(report.summary(), err=True)
        target = rejects_csv or Path(f"{file.stem}.rejects.csv")
        report.write_rejects_csv(target)
        raise click.ClickException(f"import failed; rejected rows written to {target}") from exc
    except GridopsError as exc:
        raise fail(exc) from exc
    finally:
        session.close()
    click.echo(report.summary())
    if report.rejects:
        target = rejects_csv or Path(f"{file.stem}.rejects.csv")
        report.write_rejects_csv(target)
        click.echo(f"rejected rows written to {target}")


@click.group("grids")
def grids_cli() -> None:
    """Unit grids: topology checks and generation."""


@grids_cli.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
def grids_check(as_json: bool) -> None:
    """Check stored areas and current unit grids: validity, containment, overlaps, gaps.

    Exits 1 when there is any problem.
    """
    from gridops.grids.topology import check_stored

    session = open_session()
    try:
        problems = check_stored(session)
    finally:
        session.close()
    if as_json:
        click.echo(json.dumps([p.as_dict() for p in problems], ensure_ascii=False))
    else:
        for p in problems:
            click.echo(f"{p.check}: {p.code}: {p.reason}")
        click.echo(f"{len(problems)} problem(s)")
    if problems:
        sys.exit(1)


@grids_cli.command("generate")
@click.option(
    "--community",
    "area",
    required=True,
    help="A community code, or a town/district code to cut every community below it.",
)
@click.option("--target-area", default=10_000.0, show_default=True, help="Cell area in m².")
def grids_generate(area: str, target_area: float) -> None:
    """Cut communities into unit grids (versioned: old cells are closed, not deleted)."""
    from gridops.grids.service import communities_under, regenerate_community

    session = open_session()
    created = closed = unchanged = 0
    try:
        for community in communities_under(session, area):
            result = regenerate_community(session, community, target_area_m2=target_area)
            created += result.created
            closed += result.closed
            unchanged += result.unchanged
        session.commit()
    except GridopsError as exc:
        session.rollback()
        raise fail(exc) from exc
    finally:
        session.close()
    click.echo(f"{created} unit grids created, {closed} closed, {unchanged} communities unchanged")


@click.group("demo")
def demo_cli() -> None:
    """The Foshan demo."""


@demo_cli.command("load")
@click.argument(
    "data_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default="var/demo"
)
def demo_load(data_dir: Path) -> None:
    """Load the demo files built by geodata/build.py (idempotent)."""
    from gridops.demo import load_demo

    session = open_session()
    try:
        load_demo(session, data_dir, log=click.echo)
    except GridopsError as exc:
        raise fail(exc) from exc
    finally:
        session.close()


@demo_cli.command("roster")
def demo_roster() -> None:
    """Inspectors for every unit grid of the demo (after ``demo users``)."""
    from gridops.demo_history import build_roster

    session = open_session()
    try:
        duties = build_roster(session)
        session.commit()
    finally:
        session.close()
    click.echo(f"roster: {duties} grid duties")


@demo_cli.command("history")
def demo_history() -> None:
    """Play the demo's historical incidents through the workflow (after ``demo users``)."""
    from gridops.demo_history import synthesise_history

    session = open_session()
    try:
        started = time.perf_counter()
        played = synthesise_history(session)
        session.commit()
        # Fresh statistics: a year of events written in one go leaves the planner guessing.
        session.execute(text("ANALYZE"))
        session.commit()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        session.close()
    click.echo(f"case histories: {played} played in {time.perf_counter() - started:.1f} s")


@demo_cli.command("patrols")
def demo_patrols() -> None:
    """Today's patrol tracks of the demo community's inspectors (after ``demo roster``;
    idempotent: a second run only continues the walks up to now)."""
    from gridops.demo_patrols import write_demo_patrols

    session = open_session()
    try:
        counts = write_demo_patrols(session)
        session.commit()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        session.close()
    click.echo(
        f"patrols: {counts['inspectors']} inspectors, {counts['stored']} new points "
        f"({counts['received'] - counts['stored']} already stored)"
    )


def register_data_commands(group: click.Group) -> None:
    from gridops.auth.commands import users_cli
    from gridops.backup_commands import COMMANDS as backup_commands
    from gridops.dispatch.commands import COMMANDS as dispatch_commands
    from gridops.hotspots.commands import COMMANDS as hotspot_commands
    from gridops.incidents.admin_commands import COMMANDS as admin_commands
    from gridops.scheduler.commands import scheduler_command

    commands = (import_command, grids_cli, demo_cli, users_cli, *admin_commands, *backup_commands)
    for command in (*commands, *dispatch_commands, *hotspot_commands, scheduler_command):
        if command.name not in group.commands:
            group.add_command(command)
