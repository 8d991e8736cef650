"""HTTP routes of the catalogue, the departments and the working calendar.

``GET /api/v1/categories`` is the tablets' category list (read:map, cacheable by ETag); the
``/api/v1/admin/...`` routes edit the reference data (admin verbs), each change audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from gridops.api import json_body
from gridops.auth import audit
from gridops.auth.web import current_actor, requires
from gridops.db import get_session
from gridops.errors import FieldError, GridopsError, InvalidInput
from gridops.incidents import admin
from gridops.incidents.workcal import TZ
from gridops.parsing import is_digits

bp = Blueprint("catalogue", __name__, url_prefix="/api/v1")

ADMIN_CATALOGUE = "admin:catalogue"
ADMIN_DEPARTMENTS = "admin:departments"
ADMIN_CALENDAR = "admin:calendar"
# Tablets keep the list for a few minutes, then revalidate (a 304 while nothing changed): a
# deactivated class should stop being offered soon, not at the next app update.
CATEGORY_CACHE = "private, max-age=300"


def _actor_id() -> int:
    actor = current_actor()
    assert actor is not None  # authorize() answered 401 first
    return actor.user_id


def _audit(event: str, detail: dict[str, Any]) -> None:
    actor = current_actor()
    assert actor is not None
    audit.record(event, actor_id=actor.user_id, actor=actor.username, detail=detail)


def _flag(name: str) -> bool:
    value = request.args.get(name, "0").lower()
    if value not in ("0", "1", "true", "false"):
        raise InvalidInput(f"{name} is 0 or 1", [FieldError(name, "0 or 1")])
    return value in ("1", "true")


# -- the category list ---------------------------------------------------------------------


@bp.get("/categories")
@requires("read:map")
def categories() -> ResponseReturnValue:
    """Major classes with their active minors; ``?all=1`` (admins) with inactive ones too;
    ``?kind=component|event``."""
    include_inactive = _flag("all")
    actor = current_actor()
    if include_inactive and (actor is None or not actor.may(ADMIN_CATALOGUE)):
        raise GridopsError(
            "only administrators see inactive categories",
            status=403,
            title="Forbidden",
            type_slug="forbidden",
        )
    kind = request.args.get("kind")
    if kind not in (None, "component", "event"):
        raise InvalidInput("kind is component or event", [FieldError("kind", "component|event")])
    db = get_session()
    etag = f"cat-{admin.catalogue_version(db)}-{'all' if include_inactive else 'active'}"
    etag += f"-{kind}" if kind else ""
    if request.if_none_match.contains_weak(etag):
        response = Response(status=304)
    else:
        tree = admin.category_tree(db, include_inactive=include_inactive, kind=kind)
        response = jsonify(
            {"categories": tree, "count": sum(len(major["minors"]) for major in tree)}
        )
    response.set_etag(etag)
    response.headers["Cache-Control"] = CATEGORY_CACHE
    return response


# -- catalogue administration --------------------------------------------------------------


@bp.patch("/admin/categories/<category_code>")
@requires(ADMIN_CATALOGUE)
def category_update(category_code: str) -> ResponseReturnValue:
    """Change fields of a category (``?standard_ref=`` when its code is in several editions)."""
    db = get_session()
    change = admin.update_category(
        db, category_code, json_body(), standard_ref=request.args.get("standard_ref")
    )
    db.commit()
    if change.changes:
        _audit(
            "category_updated",
            {
                "code": change.record["code"],
                "standard_ref": change.record["standard_ref"],
                "changes": change.changes,
            },
        )
    return jsonify({**change.record, **change.info, "changed": sorted(change.changes)})


@bp.post("/admin/categories")
@requires(ADMIN_CATALOGUE)
def category_create() -> ResponseReturnValue:
    """A city extension minor class under an existing major class (409 if the code is used)."""
    db = get_session()
    record = admin.create_category(db, json_body())
    db.commit()
    _audit("category_created", record)
    return jsonify(record), 201


# -- departments ---------------------------------------------------------------------------


@bp.get("/admin/departments")
@requires(ADMIN_DEPARTMENTS)
def departments() -> ResponseReturnValue:
    return jsonify({"departments": admin.list_departments(get_session())})


@bp.post("/admin/departments")
@requires(ADMIN_DEPARTMENTS)
def department_create() -> ResponseReturnValue:
    db = get_session()
    record = admin.create_department(db, json_body())
    db.commit()
    _audit("department_created", record)
    return jsonify(record), 201


# -- the working calendar ------------------------------------------------------------------


@bp.get("/admin/calendar")
@requires(ADMIN_CALENDAR)
def calendar() -> ResponseReturnValue:
    """``?year=2027`` (default: this year): overrides, the package's days, confirmation and
    warnings."""
    raw = request.args.get("year")
    if raw is None:
        year = datetime.now(TZ).year
    elif is_digits(raw):
        year = int(raw)
    else:
        raise InvalidInput("year is a number", [FieldError("year", "e.g. 2027")])
    return jsonify(admin.calendar_year(get_session(), year))


def _calendar_change(event: str, change: admin.Change) -> Response:
    _audit(event, {**change.record, "changes": change.changes, **change.info})
    return jsonify({**change.record, **change.info})


@bp.put("/admin/calendar/days/<day>")
@requires(ADMIN_CALENDAR)
def calendar_day_set(day: str) -> ResponseReturnValue:
    """``{"kind": "off" | "work", "note": "…"}``: an override of the package for one day."""
    body = json_body()
    db = get_session()
    change = admin.set_day(db, day, body.get("kind"), body.get("note", ""), by=_actor_id())
    db.commit()
    return _calendar_change("calendar_day_set", change)


@bp.delete("/admin/calendar/days/<day>")
@requires(ADMIN_CALENDAR)
def calendar_day_unset(day: str) -> ResponseReturnValue:
    db = get_session()
    change = admin.unset_day(db, day)
    db.commit()
    return _calendar_change("calendar_day_unset", change)


@bp.post("/admin/calendar/years/<int:year>/confirm")
@requires(ADMIN_CALENDAR)
def calendar_year_confirm(year: int) -> ResponseReturnValue:
    """``{"source": "国办发明电〔2026〕X号"}``: the year was checked against the notice."""
    body = json_body()
    db = get_session()
    change = admin.confirm_year(db, year, body.get("source"), by=_actor_id())
    db.commit()
    return _calendar_change("calendar_year_confirmed", change)


@bp.put("/admin/calendar/years/<int:year>")
@requires(ADMIN_CALENDAR)
def calendar_year_replace(year: int) -> ResponseReturnValue:
    """``{"days": [{"day", "kind", "note"}, …], "source": optional}``: the year's overrides
    replaced all at once (and the year confirmed when a source is given)."""
    body = json_body()
    unknown = set(body) - {"days", "source"}
    if unknown:
        raise InvalidInput(
            "unknown fields", [FieldError(name, "not a field: days, source") for name in unknown]
        )
    db = get_session()
    change = admin.replace_year(
        db, year, body.get("days"), source=body.get("source"), by=_actor_id()
    )
    db.commit()
    return _calendar_change("calendar_year_replaced", change)
