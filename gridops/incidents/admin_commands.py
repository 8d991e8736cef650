"""``gridops calendar …``, ``gridops catalogue …`` and ``gridops departments …``: the same
service functions as the admin API (gridops.incidents.admin), each change audited as "cli".

Errors exit with status 1 and say which field is wrong; nothing is written then.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.orm import Session

from gridops.auth import audit
from gridops.commands import fail, open_session
from gridops.errors import GridopsError
from gridops.incidents import admin

T = TypeVar("T")


def _audit(event: str, detail: dict[str, Any]) -> None:
    from gridops.commands import command_app
    from gridops.db import get_database

    app = command_app()
    if app is not None:
        audit.record(event, actor="cli", detail=detail, engine=get_database(app).audit_engine)


def _run(work: Callable[[Session], T], *, write: bool = True) -> T:
    """Run ``work`` in one transaction: committed when it succeeds, rolled back otherwise."""
    session = open_session()
    try:
        result = work(session)
        if write:
            session.commit()
        return result
    except GridopsError as exc:
        session.rollback()
        raise fail(exc) from exc
    finally:
        session.close()


# -- the working calendar ------------------------------------------------------------------


@click.group("calendar")
def calendar_cli() -> None:
    """The working calendar of case deadlines: days off, make-up days, confirmed years."""


@calendar_cli.command("show")
@click.argument("year", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the year as JSON.")
def calendar_show(year: int, as_json: bool) -> None:
    """The overrides and the package's holidays of YEAR, its confirmation and warnings."""
    info = _run(lambda s: admin.calendar_year(s, year), write=False)
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False, indent=2))
        return
    confirmed = info["confirmed"]
    if confirmed:
        who = confirmed["confirmed_by"] or "cli"
        click.echo(f"{year}: confirmed by {who} at {confirmed['confirmed_at']}")
        click.echo(f"  source: {confirmed['source']}")
    else:
        click.echo(f"{year}: not confirmed")
    for d in info["days"]:
        package = d["package"] or {}
        override = d["override"]
        said = f"package {package['kind']} {package['name_zh']}" if package else ""
        if override:
            said = f"override {override['kind']} {override['note']}".rstrip() + (
                f" (package: {package['kind']})" if package else ""
            )
        click.echo(f"  {d['day']} {d['kind']:4s} {said}")
    for warning in info["warnings"]:
        click.echo(f"warning: {warning}", err=True)


@calendar_cli.command("set")
@click.argument("day")
@click.argument("kind", type=click.Choice(["off", "work"]))
@click.option("--note", default="", help="Why, e.g. 国庆节调休上班.")
def calendar_set(day: str, kind: str, note: str) -> None:
    """Make DAY (YYYY-MM-DD) a day off or a working day; stored deadlines follow."""
    change = _run(lambda s: admin.set_day(s, day, kind, note))
    _audit("calendar_day_set", {**change.record, "changes": change.changes, **change.info})
    click.echo(
        f"{change.record['day']} is now a {'day off' if kind == 'off' else 'working day'} "
        f"({change.info['deadlines_refreshed']} deadlines recomputed)"
    )


@calendar_cli.command("unset")
@click.argument("day")
def calendar_unset(day: str) -> None:
    """Remove the override of DAY: the holidays package decides again."""
    change = _run(lambda s: admin.unset_day(s, day))
    _audit("calendar_day_unset", {**change.record, "changes": change.changes, **change.info})
    click.echo(
        f"override of {change.record['day']} removed "
        f"({change.info['deadlines_refreshed']} deadlines recomputed)"
    )


@calendar_cli.command("confirm")
@click.argument("year", type=int)
@click.option("--source", required=True, help="The notice, e.g. 国办发明电〔2026〕X号.")
def calendar_confirm(year: int, source: str) -> None:
    """Record that YEAR was checked against the State Council notice."""
    change = _run(lambda s: admin.confirm_year(s, year, source))
    _audit("calendar_year_confirmed", {**change.record, "changes": change.changes})
    click.echo(f"{year} confirmed ({change.record['source']})")


def read_days_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a ``day,kind,note`` CSV (a header line is required; note may be empty)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = set(reader.fieldnames or ())
            if not {"day", "kind"} <= header or header - {"day", "kind", "note"}:
                raise click.ClickException(
                    f"{path}: the header must be day,kind,note "
                    f"(got {','.join(reader.fieldnames or [])})"
                )
            return [
                {k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader
            ]
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from exc


@calendar_cli.command("load")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--confirm-source", help="Also confirm the year against this notice.")
def calendar_load(file: Path, confirm_source: str | None) -> None:
    """Replace one year's overrides with FILE (CSV: day,kind,note), all or nothing.

    Every day must lie in the same year (the year of a State Council notice).
    """
    rows = read_days_csv(file)
    if not rows:
        raise click.ClickException(f"{file}: no days")
    # The notice's year is that of most rows; rows of another year are refused by
    # replace_year, naming them (days[i].day).
    years = Counter(row.get("day", "")[:4] for row in rows if row.get("day", "")[:4].isdigit())
    if not years:
        raise click.ClickException(f"{file}: no day is a date YYYY-MM-DD")
    year = int(years.most_common(1)[0][0])

    def load(session: Session) -> admin.Change:
        return admin.replace_year(session, year, rows, source=confirm_source)

    change = _run(load)
    _audit(
        "calendar_year_replaced",
        {**change.record, "changes": change.changes, **change.info, "file": file.name},
    )
    click.echo(
        f"{year}: {change.changes['written']} days written, {change.changes['removed']} "
        f"replaced ({change.info['deadlines_refreshed']} deadlines recomputed)"
        + (f"; confirmed ({confirm_source})" if confirm_source else "")
    )


# -- the catalogue -------------------------------------------------------------------------


@click.group("catalogue")
def catalogue_cli() -> None:
    """The category catalogue (GB/T 30428 components and events, and the city's own)."""


@catalogue_cli.command("list")
@click.option("--kind", type=click.Choice(["component", "event"]))
@click.option("--all", "include_inactive", is_flag=True, help="Inactive classes too.")
@click.option("--json", "as_json", is_flag=True)
def catalogue_list(kind: str | None, include_inactive: bool, as_json: bool) -> None:
    """The classes with their stage limits (verify/dispatch/handle/check, working hours)."""
    tree = _run(
        lambda s: admin.category_tree(s, include_inactive=include_inactive, kind=kind),
        write=False,
    )
    if as_json:
        click.echo(json.dumps(tree, ensure_ascii=False, indent=2))
        return
    click.echo("code  name  urgency  limits verify/dispatch/handle/check (working hours)  radius")
    for major in tree:
        click.echo(f"{major['code']}   {major['name_zh']} / {major['name_en']}")
        for m in major["minors"]:
            limits = "/".join("-" if m[f] is None else f"{m[f]:g}" for f in admin.LIMIT_FIELDS)
            flags = "" if m["active"] else " [inactive]"
            click.echo(
                f"  {m['code']} {m['name_zh']} u{m['urgency']} {limits} h "
                f"r{m['duplicate_radius_m']:g} m dept {m['department'] or '-'}{flags}"
            )


def _optional(value: str) -> str | None:
    return None if value.lower() in ("", "none", "null", "-") else value


@catalogue_cli.command("set")
@click.argument("code")
@click.option("--standard-ref", help="The edition, when CODE is in several.")
@click.option("--name-zh")
@click.option("--name-en")
@click.option("--urgency", type=int, help="1 (low) … 4 (emergency).")
@click.option("--verify-limit-hours", type=float)
@click.option("--dispatch-limit-hours", type=float)
@click.option("--time-limit-hours", type=int, help="The handling limit (whole hours).")
@click.option("--check-limit-hours", type=float)
@click.option("--department", help="Default department code; 'none' for none.")
@click.option("--duplicate-radius-m", type=float)
@click.option("--active/--inactive", default=None)
def catalogue_set(code: str, standard_ref: str | None, **options: Any) -> None:
    """Change fields of category CODE (e.g. E0502)."""
    fields = {k: v for k, v in options.items() if v is not None}
    if "department" in fields:
        fields["department"] = _optional(fields["department"])
    change = _run(lambda s: admin.update_category(s, code, fields, standard_ref=standard_ref))
    if change.changes:
        _audit(
            "category_updated",
            {
                "code": change.record["code"],
                "standard_ref": change.record["standard_ref"],
                "changes": change.changes,
            },
        )
    for name, (old, new) in sorted(change.changes.items()):
        click.echo(f"{change.record['code']} {name}: {old} -> {new}")
    if not change.changes:
        click.echo(f"{change.record['code']}: nothing changed")
    if "open_cases" in change.info:
        click.echo(f"{change.info['open_cases']} open cases keep running in this class")


@catalogue_cli.command("add")
@click.argument("code")
@click.argument("name_zh")
@click.argument("name_en")
@click.option("--time-limit-hours", type=int, required=True, help="Handling limit, whole hours.")
@click.option("--standard-ref", default=admin.LOCAL_STANDARD, show_default=True)
@click.option("--urgency", type=int)
@click.option("--department", help="Default department code.")
@click.option("--duplicate-radius-m", type=float)
def catalogue_add(code: str, **options: Any) -> None:
    """Add a city extension minor class CODE (e.g. E0520) under its existing major class."""
    fields = {"code": code, **{k: v for k, v in options.items() if v is not None}}
    record = _run(lambda s: admin.create_category(s, fields))
    _audit("category_created", record)
    click.echo(f"{record['code']} {record['name_zh']} added ({record['standard_ref']})")


# -- departments ---------------------------------------------------------------------------


@click.group("departments")
def departments_cli() -> None:
    """Handling departments (专业部门/责任单位) cases are dispatched to."""


@departments_cli.command("list")
def departments_list() -> None:
    for d in _run(admin.list_departments, write=False):
        click.echo(
            f"{d['code']:16s} {d['area_code']:12s} {d['kind']:12s} {d['name']} "
            f"({d['default_for']} classes)"
        )


@departments_cli.command("add")
@click.argument("code")
@click.argument("name")
@click.option("--area", "area_code", required=True, help="Area it serves, e.g. 440604.")
@click.option("--name-en")
@click.option(
    "--kind",
    type=click.Choice(admin.DEPARTMENT_KINDS),
    default="professional",
    show_default=True,
    help="territorial: takes what nobody else is responsible for in its area (属地).",
)
def departments_add(code: str, name: str, area_code: str, name_en: str | None, kind: str) -> None:
    """Add department CODE named NAME serving area --area."""
    fields = {"code": code, "name": name, "area_code": area_code, "kind": kind}
    if name_en is not None:
        fields["name_en"] = name_en
    record = _run(lambda s: admin.create_department(s, fields))
    _audit("department_created", record)
    click.echo(f"department {record['code']} added (id {record['id']})")


COMMANDS = (calendar_cli, catalogue_cli, departments_cli)
