"""HTTP routes of the map overlays: enterprises and service outlets."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from gridops.api import feature_in_scope, geojson_response, layer_page_response
from gridops.auth.web import requires
from gridops.features import LAYERS

bp = Blueprint("overlays", __name__, url_prefix="/api/v1")


@bp.get("/enterprises")
@requires("read:map")
def enterprises() -> ResponseReturnValue:
    return layer_page_response(LAYERS["enterprises"], "overlays.enterprises")


@bp.get("/enterprises/<feature_id>")
@requires("read:map")
def enterprise(feature_id: str) -> ResponseReturnValue:
    return geojson_response(feature_in_scope(LAYERS["enterprises"], feature_id))


@bp.get("/outlets")
@requires("read:map")
def outlets() -> ResponseReturnValue:
    return layer_page_response(LAYERS["outlets"], "overlays.outlets")


@bp.get("/outlets/<feature_id>")
@requires("read:map")
def outlet(feature_id: str) -> ResponseReturnValue:
    return geojson_response(feature_in_scope(LAYERS["outlets"], feature_id))


@bp.get("/incidents")
@requires("read:incidents")
def incidents() -> ResponseReturnValue:
    return layer_page_response(LAYERS["incidents"], "overlays.incidents")


@bp.get("/incidents/<feature_id>")
@requires("read:incidents")
def incident(feature_id: str) -> ResponseReturnValue:
    return geojson_response(feature_in_scope(LAYERS["incidents"], feature_id))
