"""``/api/v1/hotspots/...``: hotspot runs and repeated-problem spots (``read:analytics``:
planners and managers, in their jurisdiction; a run of another area answers 404)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from gridops.api import actor_scope, geojson_response, json_body
from gridops.auth.web import current_actor, requires
from gridops.db import get_session
from gridops.errors import FieldError, InvalidInput
from gridops.features import parse_bbox, parse_limit
from gridops.hotspots import repeated, service
from gridops.parsing import is_digits

bp = Blueprint("hotspots", __name__, url_prefix="/api/v1/hotspots")


def _min_bin() -> int | None:
    raw = request.args.get("min_bin")
    if raw in (None, ""):
        return None
    if raw not in ("0", "1", "2", "3"):
        raise InvalidInput(
            "min_bin must be 0..3", [FieldError("min_bin", "0, 1, 2 or 3: the least |bin| shown")]
        )
    return int(raw)


@bp.post("/runs")
@requires("read:analytics")
def run_create() -> ResponseReturnValue:
    """Body: ``{"kind": "gistar"|"emerging", "resolution": 7..10, "k": 1..10, "start",
    "end", "step", "category", "source", "area"}``; 201 with the run, 422 naming bad fields."""
    actor = current_actor()
    assert actor is not None  # authorize() answered 401 otherwise
    db = get_session()
    run_id = service.run_from_body(db, json_body(), actor)
    db.commit()
    run = service.get_run(db, run_id, actor.scope())
    response = jsonify(run)
    response.status_code = 201
    response.headers["Location"] = url_for("hotspots.run_detail", run_id=run_id)
    return response


@bp.get("/runs")
@requires("read:analytics")
def runs() -> ResponseReturnValue:
    """The runs of the caller's jurisdiction, newest first (``?limit=``, at most 1000)."""
    limit = parse_limit(request.args.get("limit"))
    return jsonify({"runs": service.list_runs(get_session(), actor_scope(), limit=limit)})


@bp.get("/runs/<int:run_id>")
@requires("read:analytics")
def run_detail(run_id: int) -> ResponseReturnValue:
    """The run and its cells as GeoJSON hexagons (``?min_bin=1`` significant cells only,
    ``?bbox=minLon,minLat,maxLon,maxLat``)."""
    db = get_session()
    min_bin = _min_bin()
    bbox = parse_bbox(request.args.get("bbox"))
    run = service.get_run(db, run_id, actor_scope())
    cells = service.run_cells(db, run_id, min_bin=min_bin, bbox=bbox)
    if len(cells) > service.MAX_FEATURES:
        raise InvalidInput(
            f"{len(cells):,} cells are more than {service.MAX_FEATURES:,} in one answer",
            [FieldError("bbox", "narrow the answer with bbox= or min_bin=1")],
        )
    return geojson_response(service.cells_geojson(cells, run))


@bp.get("/runs/<int:run_id>/grids")
@requires("read:analytics")
def run_grids(run_id: int) -> ResponseReturnValue:
    """The run's incidents counted per unit grid."""
    return jsonify(service.run_grid_counts(get_session(), run_id, actor_scope()))


@bp.get("/runs/<int:run_id>/compare")
@requires("read:analytics")
def run_compare(run_id: int) -> ResponseReturnValue:
    """``?with=<id>``: how each cell's bin changed from this run to the other one."""
    other = request.args.get("with", "")
    if not is_digits(other):
        raise InvalidInput("name the run to compare with", [FieldError("with", "a run id")])
    return jsonify(service.compare_runs(get_session(), run_id, int(other), actor_scope()))


@bp.get("/repeated")
@requires("read:analytics")
def repeated_view() -> ResponseReturnValue:
    """``?category=&days=90&radius_m=30&min_count=3&area=&limit=``: repeated-problem spots."""
    db = get_session()
    scope = actor_scope()
    query = repeated.parse_query(db, scope, request.args)
    return jsonify(repeated.repeated_spots(db, scope, **query))
