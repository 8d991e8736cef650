"""OGC API - Features (Part 1: Core, GeoJSON) over the map layers, so QGIS and other GIS
clients open them with no custom code. Landing page: ``/?f=json`` (or ``Accept: application/json``
on ``/``), ``/conformance``, ``/collections``, ``/collections/{id}/items``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from gridops.api import (
    GEOJSON,
    actor_scope,
    feature_in_scope,
    geojson_response,
    layer_page_response,
)
from gridops.auth.web import current_actor, public, requires
from gridops.db import get_session
from gridops.errors import NotFound
from gridops.features import LAYERS, Layer, get_layer, layer_extent

bp = Blueprint("ogc", __name__)

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]


def wants_json() -> bool:
    if request.args.get("f") == "json":
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def landing_page() -> Response:
    return jsonify(
        {
            "title": "gridops",
            "description": "Grid-management layers: areas, unit grids, enterprises, outlets.",
            "links": [
                {
                    "rel": "self",
                    "type": "application/json",
                    "href": url_for("web.index", f="json", _external=True),
                },
                {
                    "rel": "conformance",
                    "type": "application/json",
                    "href": url_for("ogc.conformance", _external=True),
                },
                {
                    "rel": "data",
                    "type": "application/json",
                    "href": url_for("ogc.collections", _external=True),
                },
            ],
        }
    )


@bp.get("/conformance")
@public
def conformance() -> ResponseReturnValue:
    return jsonify({"conformsTo": CONFORMANCE})


def _visible_layers() -> list[Layer]:
    actor = current_actor()
    return [layer for layer in LAYERS.values() if actor is not None and actor.may(layer.permission)]


def _layer_for_actor(collection_id: str) -> Layer:
    layer = get_layer(collection_id)
    if layer not in _visible_layers():
        raise NotFound(f"no collection {collection_id!r}")
    return layer


def _collection(layer: Layer) -> dict[str, Any]:
    extent = layer_extent(get_session(), layer, actor_scope())
    body: dict[str, Any] = {
        "id": layer.id,
        "title": layer.title,
        "description": layer.description,
        "itemType": "feature",
        "crs": [CRS84],
        "links": [
            {
                "rel": "self",
                "type": "application/json",
                "href": url_for("ogc.collection", collection_id=layer.id, _external=True),
            },
            {
                "rel": "items",
                "type": GEOJSON,
                "href": url_for("ogc.items", collection_id=layer.id, _external=True),
            },
        ],
    }
    if extent:
        body["extent"] = {"spatial": {"bbox": [extent], "crs": CRS84}}
    return body


@bp.get("/collections")
@requires("read:map")
def collections() -> ResponseReturnValue:
    return jsonify(
        {
            "collections": [_collection(layer) for layer in _visible_layers()],
            "links": [
                {
                    "rel": "self",
                    "type": "application/json",
                    "href": url_for("ogc.collections", _external=True),
                }
            ],
        }
    )


@bp.get("/collections/<collection_id>")
@requires("read:map")
def collection(collection_id: str) -> ResponseReturnValue:
    return jsonify(_collection(_layer_for_actor(collection_id)))


@bp.get("/collections/<collection_id>/items")
@requires("read:map")
def items(collection_id: str) -> ResponseReturnValue:
    layer = _layer_for_actor(collection_id)
    return layer_page_response(layer, "ogc.items", clamp_limit=True, collection_id=layer.id)


@bp.get("/collections/<collection_id>/items/<feature_id>")
@requires("read:map")
def item(collection_id: str, feature_id: str) -> ResponseReturnValue:
    return geojson_response(feature_in_scope(_layer_for_actor(collection_id), feature_id))
