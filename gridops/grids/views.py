"""HTTP routes of the grid hierarchy: areas, unit grids and point location."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from gridops.api import geojson_response, layer_page_response
from gridops.db import get_session
from gridops.errors import FieldError, InvalidInput, NotFound
from gridops.features import LAYERS, get_feature
from gridops.grids.codes import LEVELS
from gridops.grids.locate import locate

bp = Blueprint("grids", __name__, url_prefix="/api/v1")

LEVEL_LAYER = {"district": "districts", "town": "towns", "community": "communities"}


@bp.get("/areas")
def areas() -> ResponseReturnValue:
    """Areas of one level (default: districts), optionally under one parent."""
    level = request.args.get("level", "district")
    if level not in LEVEL_LAYER:
        raise InvalidInput(
            f"level must be one of {', '.join(LEVEL_LAYER)}",
            [FieldError("level", f"{level!r} is not a level with areas below the city")],
        )
    return layer_page_response(LAYERS[LEVEL_LAYER[level]], "grids.areas")


@bp.get("/areas/tree")
def area_tree() -> ResponseReturnValue:
    """The whole hierarchy without geometry, nested, for pickers and filters."""
    rows = (
        get_session()
        .execute(
            text(
                "SELECT a.code, a.name, a.level, a.parent_code, "
                "(SELECT count(*) FROM unit_grid g WHERE g.community_code = a.code "
                " AND g.valid_to IS NULL) AS grids "
                "FROM admin_area a ORDER BY array_position(ARRAY['city','district','town',"
                "'community'], a.level::text), a.code"
            )
        )
        .all()
    )
    nodes = {
        r.code: {"code": r.code, "name": r.name, "level": r.level, "children": []} for r in rows
    }
    roots = []
    for r in rows:
        if r.level == "community":
            nodes[r.code]["grids"] = r.grids
        parent = nodes.get(r.parent_code) if r.parent_code else None
        (parent["children"] if parent else roots).append(nodes[r.code])
    return jsonify({"levels": list(LEVELS), "areas": roots})


@bp.get("/areas/<code>")
def area(code: str) -> ResponseReturnValue:
    session = get_session()
    level = session.execute(
        text("SELECT level FROM admin_area WHERE code = :code"), {"code": code}
    ).scalar()
    if level is None:
        raise NotFound(f"no area {code!r}")
    layer_id = LEVEL_LAYER.get(level)
    if layer_id is None:  # the city itself
        row = session.execute(
            text(
                "SELECT json_build_object('type', 'Feature', 'id', code, "
                "'geometry', ST_AsGeoJSON(geom, 7)::json, 'properties', json_build_object("
                "'code', code, 'name', name, 'name_en', name_en, 'level', level, "
                "'parent_code', parent_code)) FROM admin_area WHERE code = :code"
            ),
            {"code": code},
        ).scalar_one()
        feature = row
    else:
        feature = get_feature(session, LAYERS[layer_id], code)
    children = session.execute(
        text("SELECT code, name, level FROM admin_area WHERE parent_code = :code ORDER BY code"),
        {"code": code},
    ).all()
    feature["properties"]["children"] = [
        {"code": c.code, "name": c.name, "level": c.level} for c in children
    ]
    return geojson_response(feature)


@bp.get("/grids")
def grids() -> ResponseReturnValue:
    return layer_page_response(LAYERS["grids"], "grids.grids")


@bp.get("/grids/<code>")
def grid(code: str) -> ResponseReturnValue:
    return geojson_response(get_feature(get_session(), LAYERS["grids"], code))


def _coordinate(name: str) -> float:
    raw = request.args.get(name)
    if raw is None or raw == "":
        raise InvalidInput(f"{name} is required", [FieldError(name, "missing")])
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(
            f"{name} must be a number", [FieldError(name, f"{raw!r} is not a number")]
        ) from None


@bp.get("/locate")
def locate_point() -> ResponseReturnValue:
    """``?lon=&lat=``: the unit grid, community, town and district holding the point."""
    return jsonify(locate(get_session(), _coordinate("lon"), _coordinate("lat")).as_dict())
