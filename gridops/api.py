"""HTTP helpers shared by the JSON routes: GeoJSON pages with their ``next`` links."""

from __future__ import annotations

import re
from typing import Any

from flask import Response, json, request, url_for

from gridops.auth.actor import Scope
from gridops.auth.web import current_actor
from gridops.db import get_session
from gridops.errors import FieldError, GridopsError, InvalidInput
from gridops.features import (
    MAX_LIMIT,
    Layer,
    feature_page,
    get_feature,
    parse_bbox,
    parse_limit,
)
from gridops.parsing import is_digits

GEOJSON = "application/geo+json"
ETAG_RE = re.compile(r'^(?:W/)?"(\d+)"$')


def if_match_version(what: str = "record") -> int:
    """The version in ``If-Match`` (versioned writes: cases, tasks); 428 without one."""
    match = ETAG_RE.match(request.headers.get("If-Match", "").strip())
    if match is None:
        raise GridopsError(
            f'send If-Match: "<version>" with the version of the {what} you saw',
            [FieldError("If-Match", "required")],
            status=428,
            title="Precondition required",
            type_slug="precondition-required",
        )
    return int(match.group(1))


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 422 saying it is not one."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("send a JSON object", [FieldError("body", "not a JSON object")])
    return body


FORM_MIMETYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _unstorable(value: str) -> bool:
    """PostgreSQL text holds neither U+0000 nor a lone surrogate (JSON's "\\ud800")."""
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def unstorable_fields(value: Any, where: str) -> list[str]:
    """The JSON pointer-ish names of the strings (keys too) in ``value`` that are unstorable."""
    if isinstance(value, str):
        return [where or "body"] if _unstorable(value) else []
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            name = f"{where}.{key}" if where else str(key)
            found += [name] if _unstorable(str(key)) else unstorable_fields(item, name)
        return found
    if isinstance(value, list):
        return [n for i, item in enumerate(value) for n in unstorable_fields(item, f"{where}[{i}]")]
    return []


def reject_unstorable_text() -> None:
    """Before every request (and before the CSRF check reads the form): a path, query
    parameter, form field or JSON string holding text PostgreSQL cannot store (U+0000, a lone
    surrogate), or a form part without a name, is refused here, 422 naming it, rather than by
    a failing query. No legitimate client sends one."""
    bad = ["path"] if _unstorable(request.path) else []
    pairs = list(request.args.items(multi=True))
    errors = []
    if request.mimetype in FORM_MIMETYPES:
        # A multipart part whose name cannot be parsed comes with the name None.
        if None in request.form or None in request.files:
            errors.append(FieldError("body", "a form part without a (readable) name"))
        pairs += [(k, v) for k, v in request.form.items(multi=True) if k is not None]
    bad += [k for k, v in pairs if _unstorable(k) or _unstorable(v)]
    if request.is_json:
        bad += unstorable_fields(request.get_json(silent=True), "")
    errors += [FieldError(name, "holds U+0000 or a lone surrogate") for name in dict.fromkeys(bad)]
    if errors:
        raise InvalidInput("the request holds text that cannot be stored", errors)


def actor_scope() -> Scope:
    """The signed-in actor's scope (routes that reach here always have an actor)."""
    actor = current_actor()
    if actor is None:  # pragma: no cover - authorize() answers 401 first
        raise RuntimeError("no actor")
    return actor.scope()


def feature_in_scope(layer: Layer, feature_id: str) -> dict[str, Any]:
    return get_feature(get_session(), layer, feature_id, actor_scope())


def geojson_response(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")), status, mimetype=GEOJSON
    )


def layer_page_response(
    layer: Layer, endpoint: str, *, clamp_limit: bool = False, **route_args: Any
) -> Response:
    """A FeatureCollection page of ``layer`` from the request's bbox/limit/cursor/filters.

    ``clamp_limit``: a limit above the maximum gives a page of the maximum size (OGC API -
    Features lets servers do this, and GIS clients ask for large pages) instead of a 422.
    """
    bbox = parse_bbox(request.args.get("bbox"))
    raw_limit = request.args.get("limit")
    if clamp_limit and raw_limit and is_digits(raw_limit) and int(raw_limit) > MAX_LIMIT:
        raw_limit = str(MAX_LIMIT)
    limit = parse_limit(raw_limit)
    filters = {k: v for k, v in request.args.items() if k in layer.filters}
    features, next_cursor = feature_page(
        get_session(),
        layer,
        bbox=bbox,
        limit=limit,
        cursor=request.args.get("cursor"),
        filters=filters,
        scope=actor_scope(),
    )
    return feature_page_response(features, endpoint, next_cursor, limit, **route_args)


def feature_page_response(
    features: list[dict[str, Any]],
    endpoint: str,
    next_cursor: str | int | None,
    limit: int,
    **route_args: Any,
) -> Response:
    """A page of a keyset-paged GeoJSON list: ``self`` and, while more follow, ``next`` links
    (the request's own parameters with the cursor), the latter also as a ``Link`` header."""
    links = [
        {
            "rel": "self",
            "type": GEOJSON,
            "href": url_for(endpoint, _external=True, **route_args, **request.args),
        }
    ]
    href = None
    if next_cursor is not None:
        args = {**request.args, "cursor": str(next_cursor), "limit": str(limit)}
        href = url_for(endpoint, _external=True, **route_args, **args)
        links.append({"rel": "next", "type": GEOJSON, "href": href})
    response = geojson_response(
        {
            "type": "FeatureCollection",
            "features": features,
            "numberReturned": len(features),
            "links": links,
        }
    )
    if href is not None:
        response.headers["Link"] = f'<{href}>; rel="next"'
    return response
