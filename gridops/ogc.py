"""OGC API - Features (Part 1: Core, GeoJSON) over the map layers, so QGIS and other GIS
clients open them with no custom code. Landing page: ``/?f=json`` (or ``Accept: application/json``
on ``/``), ``/conformance``, ``/collections``, ``/collections/{id}/items``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from gridops.api import GEOJSON, geojson_response, layer_page_response
from gridops.db import get_session
from gridops.features import LAYERS, Layer, get_feature, get_layer, layer_extent

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
def conformance() -> ResponseReturnValue:
    return jsonify({"conformsTo": CONFORMANCE})


def _collection(layer: Layer) -> dict[str, Any]:
    extent = layer_extent(get_session(), layer)
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
def collections() -> ResponseReturnValue:
    return jsonify(
        {
            "collections": [_collection(layer) for layer in LAYERS.values()],
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
def collection(collection_id: str) -> ResponseReturnValue:
    return jsonify(_collection(get_layer(collection_id)))


@bp.get("/collections/<collection_id>/items")
def items(collection_id: str) -> ResponseReturnValue:
    layer = get_layer(collection_id)
    return layer_page_response(layer, "ogc.items", clamp_limit=True, collection_id=layer.id)


@bp.get("/collections/<collection_id>/items/<feature_id>")
def item(collection_id: str, feature_id: str) -> ResponseReturnValue:
    layer = get_layer(collection_id)
    return geojson_response(get_feature(get_session(), layer, feature_id))
