"""HTTP routes of the map overlays: enterprises and service outlets."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from gridops.api import geojson_response, layer_page_response
from gridops.db import get_session
from gridops.features import LAYERS, get_feature

bp = Blueprint("overlays", __name__, url_prefix="/api/v1")


@bp.get("/enterprises")
def enterprises() -> ResponseReturnValue:
    return layer_page_response(LAYERS["enterprises"], "overlays.enterprises")


@bp.get("/enterprises/<feature_id>")
def enterprise(feature_id: str) -> ResponseReturnValue:
    return geojson_response(get_feature(get_session(), LAYERS["enterprises"], feature_id))


@bp.get("/outlets")
def outlets() -> ResponseReturnValue:
    return layer_page_response(LAYERS["outlets"], "overlays.outlets")


@bp.get("/outlets/<feature_id>")
def outlet(feature_id: str) -> ResponseReturnValue:
    return geojson_response(get_feature(get_session(), LAYERS["outlets"], feature_id))
