"""HTTP routes of the grid hierarchy: areas, unit grids and point location."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from gridops.api import actor_scope, feature_in_scope, geojson_response, layer_page_response
from gridops.auth.web import requires
from gridops.db import get_session
from gridops.errors import FieldError, InvalidInput, NotFound
from gridops.features import LAYERS, get_feature
from gridops.grids.codes import LEVELS
from gridops.grids.locate import locate

bp = Blueprint("grids", __name__, url_prefix="/api/v1")

LEVEL_LAYER = {
    "city": "cities",
    "district": "districts",
    "town": "towns",
    "community": "communities",
}
LISTED_LEVELS = ("district", "town", "community")


@bp.get("/areas")
@requires("read:map")
def areas() -> ResponseReturnValue:
    """Areas of one level (default: districts), optionally under one parent."""
    level = request.args.get("level", "district")
    if level not in LISTED_LEVELS:
        raise InvalidInput(
            f"level must be one of {', '.join(LISTED_LEVELS)}",
            [FieldError("level", f"{level!r} is not a level with areas below the city")],
        )
    return layer_page_response(LAYERS[LEVEL_LAYER[level]], "grids.areas")


@bp.get("/areas/tree")
@requires("read:map")
def area_tree() -> ResponseReturnValue:
    """The hierarchy the actor may see, without geometry, nested, for pickers and filters."""
    scope = actor_scope()
    rows = (
        get_session()
        .execute(
            text(
                "SELECT t.code, t.name, t.level, t.parent_code, "
                "(SELECT count(*) FROM unit_grid g WHERE g.community_code = t.code "
                " AND g.valid_to IS NULL) AS grids "
                f"FROM admin_area t WHERE {scope.area_visible('t.code')} "
                "ORDER BY array_position(ARRAY['city','district','town','community'], "
                "t.level::text), t.code"
            ),
            scope.params(),
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
@requires("read:map")
def area(code: str) -> ResponseReturnValue:
    """One area with the children the actor may see; 404 outside the actor's scope."""
    session = get_session()
    scope = actor_scope()
    # The level is looked up inside the scope: a foreign area and a missing one answer alike.
    level = session.execute(
        text(f"SELECT t.level FROM admin_area t WHERE t.code = :code AND {scope.area_visible()}"),
        {"code": code, **scope.params()},
    ).scalar()
    if level is None:
        raise NotFound(f"no area {code!r}")
    feature = get_feature(session, LAYERS[LEVEL_LAYER[level]], code, scope)
    children = session.execute(
        text(
            "SELECT t.code, t.name, t.level FROM admin_area t WHERE t.parent_code = :code "
            f"AND {scope.area_visible('t.code')} ORDER BY t.code"
        ),
        {"code": code, **scope.params()},
    ).all()
    feature["properties"]["children"] = [
        {"code": c.code, "name": c.name, "level": c.level} for c in children
    ]
    return geojson_response(feature)


@bp.get("/grids")
@requires("read:map")
def grids() -> ResponseReturnValue:
    return layer_page_response(LAYERS["grids"], "grids.grids")


@bp.get("/grids/<code>")
@requires("read:map")
def grid(code: str) -> ResponseReturnValue:
    return geojson_response(feature_in_scope(LAYERS["grids"], code))


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
@requires("read:map")
def locate_point() -> ResponseReturnValue:
    """``?lon=&lat=``: the unit grid, community, town and district holding the point."""
    lon, lat = _coordinate("lon"), _coordinate("lat")
    return jsonify(locate(get_session(), lon, lat, actor_scope()).as_dict())
