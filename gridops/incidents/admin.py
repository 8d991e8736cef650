"""Administration of the reference data cases run on: the category catalogue, the handling
departments and the working calendar.

Plain functions over a SQLAlchemy ``Session`` (the HTTP routes in ``admin_views`` and the
``gridops calendar|catalogue|departments`` commands are thin adapters over them). Each checks
its whole input first and raises ``InvalidInput`` naming every bad field, so that nothing is
written on error; the caller commits and writes the audit record.

Changing a category's time limits affects cases dispatched from then on: a dispatched case
keeps the handling limit it was dispatched with. Changing the working calendar moves the stored
deadlines of open dispatched cases at once (``clock.refresh_deadlines``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import holidays
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.errors import Conflict, FieldError, InvalidInput, NotFound
from gridops.incidents import clock
from gridops.incidents.workcal import TZ, WorkCalendar, package_has_notice

# -- categories ----------------------------------------------------------------------------

MAX_LIMIT_HOURS = 2000  # about a working year: anything longer is a typing error
MAX_RADIUS_M = 5000  # the CHECK constraint of category.duplicate_radius_m
# The least limit and radius taken: smaller ones are typing errors (and a tiny positive number
# underflows the ``real`` columns: a database error instead of a 422).
MIN_LIMIT_HOURS = 0.01  # 36 seconds
MIN_RADIUS_M = 0.1
LIMIT_FIELDS = (
    "verify_limit_hours",  # 核实
    "dispatch_limit_hours",  # 立案派遣
    "time_limit_hours",  # 处置 (an integer column: whole working hours)
    "check_limit_hours",  # 核查
)
MINOR_FIELDS = (
    "name_zh",
    "name_en",
    "urgency",
    *LIMIT_FIELDS,
    "department",
    "duplicate_radius_m",
    "active",
)
# A major class only groups its minors: no limits, department or radius of its own; it is
# not deactivated either (intake checks the minor), so deactivate its minors instead.
MAJOR_FIELDS = ("name_zh", "name_en")
FIXED_FIELDS = ("code", "kind", "major_code", "minor_code", "standard_ref", "id", "updated_at")
LOCAL_STANDARD = "local"  # standard_ref of a city's own extension classes
CODE_RE = re.compile(r"^([CE])([0-9]{2})([0-9]{2})$")
KIND_LETTER = {"C": "component", "E": "event"}

_CATEGORY_COLUMNS = (
    "c.id, c.standard_ref, c.kind, c.code, c.major_code, c.minor_code, c.name_zh, c.name_en, "
    "c.urgency, c.verify_limit_hours, c.dispatch_limit_hours, c.time_limit_hours, "
    "c.check_limit_hours, c.duplicate_radius_m, c.active, c.updated_at, d.code AS department"
)
_CATEGORY_FROM = "category c LEFT JOIN department d ON d.id = c.department_id"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(
    errors: list[FieldError], name: str, value: object, limit: int, *, required: bool = True
) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > limit:
        errors.append(FieldError(name, f"non-empty text of at most {limit} characters"))
        return None
    return value.strip()


def _limit(errors: list[FieldError], name: str, value: object) -> float | int | None:
    whole = name == "time_limit_hours"
    if not _is_number(value) or not MIN_LIMIT_HOURS <= value <= MAX_LIMIT_HOURS:  # type: ignore[operator]
        errors.append(FieldError(name, f"working hours, {MIN_LIMIT_HOURS} to {MAX_LIMIT_HOURS}"))
        return None
    if whole:
        if not float(value).is_integer():  # type: ignore[arg-type]
            errors.append(FieldError(name, "whole working hours (e.g. 24)"))
            return None
        return int(value)  # type: ignore[arg-type]
    return float(value)  # type: ignore[arg-type]


def _department_id(
    session: Session, errors: list[FieldError], name: str, value: object
) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        errors.append(FieldError(name, "a department code, or null for none"))
        return None
    found = session.execute(
        text("SELECT id FROM department WHERE code = :c"), {"c": value.strip()}
    ).scalar()
    if found is None:
        errors.append(FieldError(name, f"no department {value.strip()!r}"))
    return found


def _check_fields(
    session: Session, fields: Mapping[str, Any], allowed: Iterable[str], errors: list[FieldError]
) -> dict[str, Any]:
    """Validated column values for ``fields`` (department → department_id)."""
    allowed = tuple(allowed)
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name not in allowed:
            reason = (
                "cannot be changed"
                if name in FIXED_FIELDS or name in MINOR_FIELDS
                else f"unknown field; one of {', '.join(allowed)}"
            )
            errors.append(FieldError(name, reason))
        elif name == "name_zh":
            out[name] = _text(errors, name, value, 100)
        elif name == "name_en":
            out[name] = _text(errors, name, value, 200)
        elif name == "urgency":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4:
                errors.append(FieldError(name, "a whole number from 1 (low) to 4 (emergency)"))
            out[name] = value
        elif name in LIMIT_FIELDS:
            out[name] = _limit(errors, name, value)
        elif name == "department":
            out["department_id"] = _department_id(session, errors, name, value)
        elif name == "duplicate_radius_m":
            if not _is_number(value) or not MIN_RADIUS_M <= value <= MAX_RADIUS_M:
                errors.append(FieldError(name, f"metres, {MIN_RADIUS_M} to {MAX_RADIUS_M}"))
            else:
                out[name] = float(value)
        elif name == "active":
            if not isinstance(value, bool):
                errors.append(FieldError(name, "true or false"))
            out[name] = value
    return out


def _real(value: float | None) -> float | None:
    """A ``real`` column as entered: 1.1, not float4's 1.100000023841858."""
    return None if value is None else float(f"{value:.7g}")


def _category_dict(row: Any) -> dict[str, Any]:
    out = {
        "code": row.code,
        "kind": row.kind,
        "major_code": row.major_code,
        "minor_code": row.minor_code,
        "standard_ref": row.standard_ref,
        "name_zh": row.name_zh,
        "name_en": row.name_en,
        "active": row.active,
        "updated_at": row.updated_at.isoformat(),
    }
    if row.minor_code is not None:
        out.update(
            urgency=row.urgency,
            verify_limit_hours=_real(row.verify_limit_hours),
            dispatch_limit_hours=_real(row.dispatch_limit_hours),
            time_limit_hours=row.time_limit_hours,
            check_limit_hours=_real(row.check_limit_hours),
            duplicate_radius_m=_real(row.duplicate_radius_m),
            department=row.department,
        )
    return out


def catalogue_version(session: Session) -> str:
    """Changes whenever any category changes or is added (ETag of the category list).

    Over all rows, active or not: every edit sets ``updated_at`` to the clock, so the maximum
    only grows, and an added row changes the count.
    """
    count, latest = session.execute(text("SELECT count(*), max(updated_at) FROM category")).one()
    stamp = int(latest.timestamp() * 1_000_000) if latest else 0
    return f"{count}-{stamp}"


def category_tree(
    session: Session, *, include_inactive: bool = False, kind: str | None = None
) -> list[dict[str, Any]]:
    """Major classes with their minors, components first.

    Active only (the default): one row per code, the one intake resolves a code to (the
    latest ``standard_ref``). With ``include_inactive`` every row of every edition.
    """
    where = ["true"]
    if not include_inactive:
        where.append("(c.active OR c.minor_code IS NULL)")
    if kind is not None:
        where.append("c.kind = :kind")
    distinct = "" if include_inactive else "DISTINCT ON (c.code)"
    rows = session.execute(
        text(
            f"SELECT {distinct} {_CATEGORY_COLUMNS} FROM {_CATEGORY_FROM} "
            f"WHERE {' AND '.join(where)} ORDER BY c.code, c.standard_ref DESC"
        ),
        {"kind": kind},
    ).all()
    majors: dict[tuple[str, str], dict[str, Any]] = {}
    minors: list[Any] = []
    for row in rows:
        if row.minor_code is None:
            majors.setdefault((row.kind, row.major_code), {**_category_dict(row), "minors": []})
        else:
            minors.append(row)
    for row in minors:
        major = majors.get((row.kind, row.major_code))
        if major is None:  # no major row (never made by this module): keep the minor visible
            major = majors[row.kind, row.major_code] = {
                "code": row.code[:3],
                "kind": row.kind,
                "major_code": row.major_code,
                "minor_code": None,
                "standard_ref": None,
                "name_zh": None,
                "name_en": None,
                "active": True,
                "minors": [],
            }
        major["minors"].append(_category_dict(row))
    tree = sorted(majors.values(), key=lambda m: (m["kind"] != "component", m["code"]))
    if not include_inactive:
        tree = [m for m in tree if m["minors"]]
    return tree


def _find_category(
    session: Session, code: str, standard_ref: str | None, *, lock: bool = False
) -> Any:
    rows = session.execute(
        text(
            f"SELECT {_CATEGORY_COLUMNS}, c.department_id FROM {_CATEGORY_FROM} "
            "WHERE c.code = :code AND (CAST(:ref AS text) IS NULL OR c.standard_ref = :ref) "
            f"ORDER BY c.standard_ref{' FOR UPDATE OF c' if lock else ''}"
        ),
        {"code": str(code).strip().upper(), "ref": standard_ref},
    ).all()
    if not rows:
        raise NotFound(f"no category {code!r}" + (f" in {standard_ref!r}" if standard_ref else ""))
    if len(rows) > 1:
        refs = ", ".join(r.standard_ref for r in rows)
        raise InvalidInput(
            f"category {code} exists in several editions ({refs})",
            [FieldError("standard_ref", f"name the edition: one of {refs}")],
        )
    return rows[0]


def get_category(session: Session, code: str, standard_ref: str | None = None) -> dict[str, Any]:
    return _category_dict(_find_category(session, code, standard_ref))


@dataclass
class Change:
    """The outcome of an edit: the record after it and what changed (``field: [old, new]``)."""

    record: dict[str, Any]
    changes: dict[str, Any]
    info: dict[str, Any]


def update_category(
    session: Session, code: str, fields: Mapping[str, Any], *, standard_ref: str | None = None
) -> Change:
    """Change fields of one category (see ``MINOR_FIELDS``; majors: only their names).

    NotFound for an unknown code; InvalidInput naming every bad field (nothing written).
    Deactivating a class with open cases is allowed: intake stops accepting the class, the
    open cases run on; ``info["open_cases"]`` says how many there are.
    """
    row = _find_category(session, code, standard_ref, lock=True)
    errors: list[FieldError] = []
    if not fields:
        errors.append(FieldError("body", "send at least one field to change"))
    allowed = MAJOR_FIELDS if row.minor_code is None else MINOR_FIELDS
    values = _check_fields(session, fields, allowed, errors)
    if row.minor_code is None:
        errors = [
            FieldError(e.field, "a major class has only names; change its minor classes")
            if e.field in MINOR_FIELDS
            else e
            for e in errors
        ]
    if errors:
        raise InvalidInput(f"category {row.code} was not changed", errors)
    before = _category_dict(row)
    differs = [
        column
        for column, new in values.items()
        if (row.department_id if column == "department_id" else getattr(row, column)) != new
    ]
    if differs:
        assignments = ", ".join(f"{column} = :{column}" for column in differs)
        session.execute(
            text(
                f"UPDATE category SET {assignments}, updated_at = clock_timestamp() WHERE id = :id"
            ),
            {**{c: values[c] for c in differs}, "id": row.id},
        )
    record = get_category(session, row.code, row.standard_ref)
    names = ["department" if c == "department_id" else c for c in differs]
    changes = {n: [before[n], record[n]] for n in names if before[n] != record[n]}
    info: dict[str, Any] = {}
    if values.get("active") is False:
        info["open_cases"] = session.execute(
            text(
                "SELECT count(*) FROM incident WHERE category_id = :id "
                "AND status NOT IN ('closed', 'void')"
            ),
            {"id": row.id},
        ).scalar_one()
    return Change(record, changes, info)


def _default_limits(urgency: int) -> dict[str, float]:
    # As migration 0007 set them for the national catalogue: more urgent, shorter stages.
    short = {4: 0.5, 3: 1.0}.get(urgency, 2.0)
    return {
        "verify_limit_hours": short,
        "dispatch_limit_hours": short,
        "check_limit_hours": {4: 1.0, 3: 2.0}.get(urgency, 4.0),
    }


def _default_radius(kind: str, major_code: str) -> float:
    # As migration 0007: a component is one object in one place, an emergency spreads.
    if kind == "component":
        return 20.0
    return 200.0 if major_code == "04" else 50.0


def create_category(session: Session, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Add a city extension minor class under an existing major class.

    ``code`` (e.g. ``E0520``), ``name_zh``, ``name_en`` and ``time_limit_hours`` are required;
    ``standard_ref`` defaults to ``"local"``; urgency, the other stage limits and the
    duplicate radius default as for the national classes. Conflict (409) when the code exists
    in any edition: intake resolves a code to one class.
    """
    errors: list[FieldError] = []
    raw_code = fields.get("code")
    match = CODE_RE.match(raw_code.strip().upper()) if isinstance(raw_code, str) else None
    kind = major_code = minor_code = code = None
    if match is None:
        errors.append(FieldError("code", "kind letter C or E, major and minor digits: E0520"))
    elif match.group(3) == "00":
        errors.append(FieldError("code", "minor digits 01–99 (00 is not a minor class)"))
    else:
        kind, major_code, minor_code = KIND_LETTER[match.group(1)], match.group(2), match.group(3)
        code = match.group(0)
        major = session.execute(
            text(
                "SELECT 1 FROM category WHERE kind = :k AND major_code = :m "
                "AND minor_code IS NULL LIMIT 1"
            ),
            {"k": kind, "m": major_code},
        ).first()
        if major is None:
            errors.append(FieldError("code", f"no major class {code[:3]} to extend"))
    standard_ref = _text(errors, "standard_ref", fields.get("standard_ref", LOCAL_STANDARD), 40)
    for name in ("name_zh", "name_en", "time_limit_hours"):
        if name not in fields:
            errors.append(FieldError(name, "required"))
    rest = {k: v for k, v in fields.items() if k not in ("code", "standard_ref")}
    values = _check_fields(session, rest, MINOR_FIELDS, errors)
    if errors:
        raise InvalidInput("the category was not added", errors)
    assert code is not None and kind is not None and major_code is not None
    # Serialise additions of one code: the unique constraint covers one edition only.
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext('category:' || :c))"), {"c": code})
    taken = session.execute(
        text("SELECT standard_ref FROM category WHERE code = :c"), {"c": code}
    ).scalar()
    if taken is not None:
        raise Conflict(
            f"category {code} exists already (in {taken})",
            [FieldError("code", "choose a free minor code")],
        )
    urgency = values.get("urgency", 2)
    row = {
        **_default_limits(urgency),
        "duplicate_radius_m": _default_radius(kind, major_code),
        "department_id": None,
        "active": True,
        **values,
        "urgency": urgency,
        "standard_ref": standard_ref,
        "kind": kind,
        "code": code,
        "major_code": major_code,
        "minor_code": minor_code,
    }
    columns = ", ".join(row)
    session.execute(
        text(
            f"INSERT INTO category ({columns}, updated_at) VALUES "
            f"({', '.join(':' + c for c in row)}, clock_timestamp())"
        ),
        row,
    )
    return get_category(session, code, standard_ref)


# -- departments ---------------------------------------------------------------------------

DEPARTMENT_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
DEPARTMENT_KINDS = ("professional", "territorial")


def list_departments(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        text(
            "SELECT d.id, d.code, d.name, d.name_en, d.area_code, a.name AS area_name, d.kind, "
            "(SELECT count(*) FROM category c WHERE c.department_id = d.id AND c.active) "
            "AS default_for FROM department d JOIN admin_area a ON a.code = d.area_code "
            "ORDER BY d.code"
        )
    ).all()
    return [dict(r._mapping) for r in rows]


def create_department(session: Session, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A handling department (专业部门/责任单位): ``code``, ``name``, ``name_en``,
    ``area_code`` (an existing administrative area) and ``kind``: ``professional`` (a
    competent department, the default) or ``territorial`` (the street office or community
    that takes what nobody else is responsible for, 属地). Conflict (409) on a used code."""
    errors: list[FieldError] = []
    allowed = ("code", "name", "name_en", "area_code", "kind")
    for name in fields:
        if name not in allowed:
            errors.append(FieldError(name, f"unknown field; one of {', '.join(allowed)}"))
    code = fields.get("code")
    if not isinstance(code, str) or not DEPARTMENT_CODE_RE.match(code.strip()):
        errors.append(FieldError("code", "letters, digits, '.', '_' or '-', at most 40: CC-CGJ"))
        code = None
    else:
        code = code.strip()
    name = _text(errors, "name", fields.get("name"), 200)
    name_en = _text(errors, "name_en", fields.get("name_en"), 200, required=False)
    kind = fields.get("kind", "professional")
    if kind not in DEPARTMENT_KINDS:
        errors.append(FieldError("kind", f"one of {', '.join(DEPARTMENT_KINDS)}"))
    area = fields.get("area_code")
    if not isinstance(area, str) or not area.strip():
        errors.append(FieldError("area_code", "the code of the area the department serves"))
    elif (
        session.execute(
            text("SELECT 1 FROM admin_area WHERE code = :c"), {"c": area.strip()}
        ).first()
        is None
    ):
        errors.append(FieldError("area_code", f"no administrative area {area.strip()!r}"))
    if errors:
        raise InvalidInput("the department was not added", errors)
    assert isinstance(area, str)
    made = session.execute(
        text(
            "INSERT INTO department (code, name, name_en, area_code, kind) "
            "VALUES (:code, :name, :name_en, :area, :kind) ON CONFLICT (code) DO NOTHING "
            "RETURNING id"
        ),
        {"code": code, "name": name, "name_en": name_en, "area": area.strip(), "kind": kind},
    ).scalar()
    if made is None:
        raise Conflict(
            f"department {code} exists already", [FieldError("code", "choose a free code")]
        )
    return {
        "id": made,
        "code": code,
        "name": name,
        "name_en": name_en,
        "area_code": area.strip(),
        "kind": kind,
    }


# -- the working calendar ------------------------------------------------------------------

MIN_YEAR, MAX_YEAR = 2000, 2100  # the CHECK constraint of work_calendar_year
MAX_NOTE = 200
MAX_SOURCE = 500
DAY_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def parse_day(value: object, name: str = "day") -> date:
    """A calendar day from ``YYYY-MM-DD`` (or a ``date``), inside the supported years."""
    if isinstance(value, date) and not isinstance(value, datetime):
        day = value
    elif isinstance(value, str) and DAY_RE.match(value.strip()):
        try:
            day = date.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInput(
                f"{value!r} is not a date", [FieldError(name, "no such day")]
            ) from None
    else:
        raise InvalidInput(f"{value!r} is not a date", [FieldError(name, "a date: YYYY-MM-DD")])
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise InvalidInput(
            f"{day} is outside the calendar", [FieldError(name, f"in {MIN_YEAR}–{MAX_YEAR}")]
        )
    return day


def check_year(year: object, name: str = "year") -> int:
    if isinstance(year, bool) or not isinstance(year, int) or not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidInput(
            f"{year!r} is not a calendar year", [FieldError(name, f"{MIN_YEAR}–{MAX_YEAR}")]
        )
    return year


def _kind_and_note(
    errors: list[FieldError], prefix: str, kind: object, note: object
) -> tuple[str, str]:
    if kind not in ("off", "work"):
        errors.append(FieldError(f"{prefix}kind", "'off' (a day off) or 'work' (a working day)"))
    if note is None:
        note = ""
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        errors.append(FieldError(f"{prefix}note", f"text of at most {MAX_NOTE} characters"))
        note = ""
    return str(kind), note.strip()


def _package_days(year: int) -> dict[date, dict[str, str]]:
    """What the ``holidays`` package says about ``year``: days off and make-up working days."""
    china = holidays.China
    if not china.start_year <= year <= getattr(china, "end_year", MAX_YEAR):
        return {}
    names = {}
    for language in ("zh_CN", "en_US"):
        names[language] = holidays.country_holidays(
            "CN", years=year, categories=("public",), language=language
        )
    out = {
        d: {"kind": "off", "name_zh": name, "name_en": names["en_US"].get(d, name)}
        for d, name in names["zh_CN"].items()
        if d.year == year
    }
    # Make-up days are listed for every year the package knows, whatever ``years`` asked for.
    for d in getattr(names["zh_CN"], "weekend_workdays", ()):
        if d.year == year:
            out[d] = {"kind": "work", "name_zh": "调休上班", "name_en": "Make-up working day"}
    return out


def _lock_calendar(session: Session) -> None:
    """One calendar change at a time: each recomputes the stored deadlines from the calendar
    it sees, so a concurrent change must not be missed (and a year replaced twice at once
    must not collide on its days)."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext('gridops:work_calendar'))"))


def _after_change(session: Session) -> int:
    """Stored deadlines follow the calendar: recompute every open dispatched case."""
    return int(clock.refresh_deadlines(session))


def calendar_year(session: Session, year: int, *, today: date | None = None) -> dict[str, Any]:
    """The year as deadlines see it: every override and every day the package names, each
    with its effective kind and why; whether the year is confirmed; the calendar's warnings
    (unconfirmed current / coming year, and this year if unconfirmed)."""
    year = check_year(year)
    calendar: WorkCalendar = clock.load_calendar(session)
    overrides = {
        r.day: r
        for r in session.execute(
            text(
                "SELECT o.day, o.kind, o.note, o.updated_at, u.username AS updated_by "
                "FROM work_calendar_override o LEFT JOIN app_user u ON u.id = o.updated_by "
                "WHERE o.day BETWEEN :a AND :b"
            ),
            {"a": date(year, 1, 1), "b": date(year, 12, 31)},
        )
    }
    package = _package_days(year)
    days = []
    for d in sorted(set(overrides) | set(package)):
        o = overrides.get(d)
        days.append(
            {
                "day": d.isoformat(),
                "weekday": d.isoweekday(),
                "kind": "work" if calendar.is_working_day(d) else "off",
                "source": calendar.day_source(d),
                "package": package.get(d),
                "override": None
                if o is None
                else {
                    "kind": o.kind,
                    "note": o.note,
                    "updated_by": o.updated_by,
                    "updated_at": o.updated_at.isoformat(),
                },
            }
        )
    confirmed = session.execute(
        text(
            "SELECT y.source, y.confirmed_at, u.username AS confirmed_by FROM work_calendar_year y "
            "LEFT JOIN app_user u ON u.id = y.confirmed_by WHERE y.year = :y"
        ),
        {"y": year},
    ).first()
    span = (datetime(year, 1, 1, tzinfo=TZ), datetime(year, 12, 31, 23, 59, tzinfo=TZ))
    return {
        "year": year,
        "confirmed": None
        if confirmed is None
        else {
            "source": confirmed.source,
            "confirmed_by": confirmed.confirmed_by,
            "confirmed_at": confirmed.confirmed_at.isoformat(),
        },
        "package_has_notice": package_has_notice(year),
        "days": days,
        "warnings": calendar.warnings(today=today, span=span),
    }


def set_day(
    session: Session, day: object, kind: object, note: object = "", *, by: int | None = None
) -> Change:
    """Make ``day`` a day off or a working day (an override of the package), then move the
    stored deadlines."""
    when = parse_day(day)
    errors: list[FieldError] = []
    kind, note = _kind_and_note(errors, "", kind, note)
    if errors:
        raise InvalidInput(f"{when} was not changed", errors)
    _lock_calendar(session)
    before = session.execute(
        text("SELECT kind, note FROM work_calendar_override WHERE day = :d FOR UPDATE"),
        {"d": when},
    ).first()
    session.execute(
        text(
            "INSERT INTO work_calendar_override (day, kind, note, updated_by, updated_at) "
            "VALUES (:d, :kind, :note, :by, clock_timestamp()) ON CONFLICT (day) DO UPDATE SET "
            "kind = EXCLUDED.kind, note = EXCLUDED.note, updated_by = EXCLUDED.updated_by, "
            "updated_at = EXCLUDED.updated_at"
        ),
        {"d": when, "kind": kind, "note": note, "by": by},
    )
    refreshed = _after_change(session)
    old = None if before is None else {"kind": before.kind, "note": before.note}
    return Change(
        {"day": when.isoformat(), "kind": kind, "note": note},
        {"override": [old, {"kind": kind, "note": note}]},
        {"deadlines_refreshed": refreshed},
    )


def unset_day(session: Session, day: object) -> Change:
    """Remove the override of ``day`` (the package decides again); NotFound if there is none."""
    when = parse_day(day)
    _lock_calendar(session)
    gone = session.execute(
        text("DELETE FROM work_calendar_override WHERE day = :d RETURNING kind, note"),
        {"d": when},
    ).first()
    if gone is None:
        raise NotFound(f"no override for {when}")
    refreshed = _after_change(session)
    old = {"kind": gone.kind, "note": gone.note}
    return Change(
        {"day": when.isoformat(), "kind": None},
        {"override": [old, None]},
        {"deadlines_refreshed": refreshed},
    )


def _check_source(source: object) -> str:
    if not isinstance(source, str) or not source.strip() or len(source.strip()) > MAX_SOURCE:
        raise InvalidInput(
            "say what the year was checked against",
            [FieldError("source", "the State Council notice, e.g. 国办发明电〔2026〕X号")],
        )
    return source.strip()


def confirm_year(
    session: Session, year: object, source: object, *, by: int | None = None
) -> Change:
    """Record that ``year`` was checked against the State Council notice (and by whom)."""
    year = check_year(year)
    source = _check_source(source)
    _lock_calendar(session)
    before = session.execute(
        text("SELECT source FROM work_calendar_year WHERE year = :y FOR UPDATE"), {"y": year}
    ).scalar()
    session.execute(
        text(
            "INSERT INTO work_calendar_year (year, source, confirmed_by, confirmed_at) "
            "VALUES (:y, :s, :by, clock_timestamp()) ON CONFLICT (year) DO UPDATE SET "
            "source = EXCLUDED.source, confirmed_by = EXCLUDED.confirmed_by, "
            "confirmed_at = EXCLUDED.confirmed_at"
        ),
        {"y": year, "s": source, "by": by},
    )
    return Change({"year": year, "source": source}, {"source": [before, source]}, {})


def replace_year(
    session: Session,
    year: object,
    days: object,
    *,
    source: object = None,
    by: int | None = None,
) -> Change:
    """Replace every override of ``year`` with ``days`` (``[{"day", "kind", "note"}, …]``),
    all or nothing; with ``source`` also confirm the year. Each day must lie in ``year`` (a
    notice's day in the next year goes in with that year, or as a single day)."""
    year = check_year(year)
    errors: list[FieldError] = []
    if not isinstance(days, list):
        raise InvalidInput(
            "send the year's days", [FieldError("days", "a list of {day, kind, note}")]
        )
    rows: dict[date, tuple[str, str]] = {}
    for i, item in enumerate(days):
        prefix = f"days[{i}]."
        if not isinstance(item, Mapping):
            errors.append(FieldError(f"days[{i}]", "an object {day, kind, note}"))
            continue
        unknown = set(item) - {"day", "kind", "note"}
        if unknown:
            errors.append(FieldError(f"days[{i}]", f"unknown fields {sorted(unknown)}"))
        try:
            when = parse_day(item.get("day"), f"{prefix}day")
        except InvalidInput as exc:
            errors.extend(exc.errors)
            when = None
        kind, note = _kind_and_note(errors, prefix, item.get("kind"), item.get("note"))
        if when is None:
            continue
        if when.year != year:
            errors.append(FieldError(f"{prefix}day", f"{when} is not in {year}"))
        elif when in rows:
            errors.append(FieldError(f"{prefix}day", f"{when} is listed twice"))
        rows[when] = (kind, note)
    if source is not None:
        try:
            source = _check_source(source)
        except InvalidInput as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidInput(f"the {year} calendar was not changed", errors)
    _lock_calendar(session)
    old = session.execute(
        text(
            "DELETE FROM work_calendar_override WHERE day BETWEEN :a AND :b "
            "RETURNING day, kind, note"
        ),
        {"a": date(year, 1, 1), "b": date(year, 12, 31)},
    ).all()
    if rows:
        session.execute(
            text(
                "INSERT INTO work_calendar_override (day, kind, note, updated_by, updated_at) "
                "VALUES (:day, :kind, :note, :by, clock_timestamp())"
            ),
            [{"day": d, "kind": k, "note": n, "by": by} for d, (k, n) in sorted(rows.items())],
        )
    if source is not None:
        confirm_year(session, year, source, by=by)
    refreshed = _after_change(session)
    return Change(
        {
            "year": year,
            "days": [
                {"day": d.isoformat(), "kind": k, "note": n} for d, (k, n) in sorted(rows.items())
            ],
            "confirmed_source": source,
        },
        {"removed": len(old), "written": len(rows)},
        {"deadlines_refreshed": refreshed},
    )
