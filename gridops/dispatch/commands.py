"""``gridops duties …``: inspectors per unit grid (bulk from a CSV file) and staff absences,
through the same service functions as the admin API (gridops.dispatch.duties), acting
everywhere (as an administrator) and audited as "cli".

Errors exit with status 1 and name every bad line or field; nothing is written then.
"""

from __future__ import annotations

import csv
from pathlib import Path

import click
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.dispatch import duties
from gridops.incidents.admin_commands import _audit, _run

INSPECTOR_COLUMNS = ("grid_code", "username", "primary")


@click.group("duties")
def duties_cli() -> None:
    """Who is responsible where: inspectors per unit grid, absences."""


def read_inspectors_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a ``grid_code,username,primary`` CSV (header required; primary may be empty)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or ()]
            if not {"grid_code", "username"} <= set(header) or set(header) - set(INSPECTOR_COLUMNS):
                raise click.ClickException(
                    f"{path}: the header must be {','.join(INSPECTOR_COLUMNS)} "
                    f"(got {','.join(header)})"
                )
            reader.fieldnames = header
            return [
                {k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader
            ]
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from exc


@duties_cli.command("inspectors")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def duties_inspectors(file: Path) -> None:
    """Replace the inspectors of every unit grid named in FILE (CSV: grid_code,username,
    primary), all or nothing. Grids the file does not name keep theirs."""
    rows = read_inspectors_csv(file)
    summary = _run(lambda s: duties.import_grid_inspectors(s, rows))
    _audit("grid_inspectors_imported", {**summary, "file": file.name})
    click.echo(
        f"{summary['grids']} unit grids: {summary['inspectors']} inspectors "
        f"({summary['replaced']} duties replaced)"
    )


def _user_id(session: Session, username: str) -> int:
    found = session.execute(
        text("SELECT id FROM app_user WHERE username = :u"), {"u": username.strip().lower()}
    ).scalar()
    if found is None:
        raise click.ClickException(f"no user {username!r}")
    return int(found)


@duties_cli.command("absent")
@click.argument("username")
@click.argument("starts_on")
@click.argument("ends_on")
@click.option("--note", default="", help="Why, e.g. 年假.")
def duties_absent(username: str, starts_on: str, ends_on: str, note: str) -> None:
    """USERNAME is off from STARTS_ON to ENDS_ON (YYYY-MM-DD, both included): routing gives
    their grids' reports and checks to a stand-in."""

    def add(session: Session) -> dict:
        body = {"user": _user_id(session, username), "starts_on": starts_on, "ends_on": ends_on}
        return duties.add_absence(session, duties.EVERYWHERE, {**body, "note": note})

    record = _run(add)
    _audit("absence_added", record)
    click.echo(
        f"{record['user']['username']} absent {record['starts_on']} – {record['ends_on']} "
        f"(absence {record['id']})"
    )


@duties_cli.command("absences")
@click.option("--user", "username", help="Only this user's.")
def duties_absences(username: str | None) -> None:
    """Absences that are not over yet."""

    def listed(session: Session) -> list[dict]:
        user_id = _user_id(session, username) if username else None
        return duties.list_absences(session, duties.EVERYWHERE, user_id=user_id)

    for a in _run(listed, write=False):
        click.echo(
            f"{a['id']:6d} {a['user']['username']:20s} {a['starts_on']} – {a['ends_on']} "
            f"{a['note']}".rstrip()
        )


@duties_cli.command("present")
@click.argument("absence_id", type=int)
def duties_present(absence_id: int) -> None:
    """Cancel absence ABSENCE_ID (the user is back)."""
    record = _run(lambda s: duties.remove_absence(s, duties.EVERYWHERE, absence_id))
    _audit("absence_removed", record)
    click.echo(f"absence {absence_id} of {record['user']['username']} removed")


COMMANDS = (duties_cli,)
