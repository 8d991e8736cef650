"""GET /api/v1/kpis: the case-handling KPIs of the caller's jurisdiction, as JSON or CSV."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from gridops.api import actor_scope
from gridops.auth.web import requires
from gridops.db import get_session
from gridops.errors import FieldError, InvalidInput
from gridops.kpi.service import DEFINITIONS, TZ_NAME, kpis, parse_query, to_csv

bp = Blueprint("kpi", __name__, url_prefix="/api/v1")

FORMATS = ("json", "csv")


def _wants_csv() -> bool:
    fmt = request.args.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput("bad KPI parameters", [FieldError("format", "json or csv")])
    if fmt is not None:
        return fmt == "csv"
    # Without ``format``, an explicit Accept: text/csv (preferred over JSON) asks for CSV.
    accept = request.accept_mimetypes
    return accept["text/csv"] > accept["application/json"]


@bp.get("/kpis")
@requires("read:analytics")
def kpi_table() -> ResponseReturnValue:
    """``?period=month&start=2026-01-01&end=2026-12-31&by=town[&format=csv]``"""
    wants_csv = _wants_csv()
    query = parse_query(request.args)
    rows = kpis(get_session(), actor_scope(), **query)
    if wants_csv:
        name = f"kpis-{query['period']}-{query['start']}-{query['end']}"
        if query["by"]:
            name += f"-by-{query['by']}"
        return Response(
            to_csv(rows),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return jsonify(
        {
            "period": query["period"],
            "start": query["start"].isoformat(),
            "end": query["end"].isoformat(),
            "by": query["by"],
            "time_zone": TZ_NAME,
            "rows": rows,
            "definitions": DEFINITIONS,
        }
    )
