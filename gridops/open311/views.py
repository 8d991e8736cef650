"""HTTP routes of Open311 GeoReport v2 under ``/open311/v2/``, in XML (required) and JSON.

Reads are ``@public``, as the spec has them. The POST is ``@public`` too at the gate and
checks its own key here: ``api_key`` (a form field, per the spec) or ``Authorization: Bearer``,
either being a gridops API token. It never reads the browser session, which is why it can
be exempt from CSRF. Errors come in the spec's format (``<errors><error>``), with 404 for
what does not exist, 403 for every api_key problem and 400 for any other bad request.
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from typing import Any

from flask import Blueprint, Response, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from gridops.auth import audit
from gridops.auth.actor import Actor
from gridops.auth.service import actor_for_token
from gridops.auth.web import csrf, public
from gridops.db import get_session
from gridops.errors import FieldError, GridopsError, InvalidInput, NotFound
from gridops.open311 import service
from gridops.open311.service import FORMATS, KeyRefused

log = logging.getLogger(__name__)
bp = Blueprint("open311", __name__, url_prefix="/open311/v2")

# The XML element of each item of a list, by the list's element name.
LIST_ITEMS = {
    "services": "service",
    "service_requests": "request",
    "errors": "error",
    "endpoints": "endpoint",
    "formats": "format",
    "attributes": "attribute",
    "values": "value",
}
# Characters XML 1.0 cannot carry at all.
XML_INVALID_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# Field names of the service layer (intake's) as the GeoReport client knows them.
FIELD_NAMES = {"category": "service_code", "lon": "long", "lon,lat": "lat,long"}
# Statuses the spec knows: not found, bad key, anything else is a bad request.
SPEC_STATUS = {404: 404, 403: 403, 401: 403, 405: 405, 413: 413, 503: 503, 500: 500}


# -- rendering -----------------------------------------------------------------------------


def _format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise NotFound(f"format {fmt!r} is not served; use .xml or .json")
    return fmt


def _xml_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    # XML 1.0 cannot carry most control characters: show where one was instead of failing.
    return XML_INVALID_RE.sub("\ufffd", str(value))


def _xml_fill(element: ET.Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            _xml_fill(ET.SubElement(element, key), child)
    elif isinstance(value, list):
        item = LIST_ITEMS[element.tag]
        for child in value:
            _xml_fill(ET.SubElement(element, item), child)
    else:
        element.text = _xml_text(value)


def render(fmt: str, root: str, value: Any, status: int = 200) -> Response:
    """``value`` as the spec's XML (``root`` element) or as JSON (the Spark convention:
    lists are arrays, the root element disappears)."""
    if fmt == "json":
        body = json.dumps(value, ensure_ascii=False)
        return Response(body, status, content_type="application/json; charset=utf-8")
    element = ET.Element(root)
    _xml_fill(element, value)
    body = '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element, encoding="unicode")
    return Response(body.encode(), status, content_type="text/xml; charset=utf-8")


def _error_format() -> str:
    fmt = (request.view_args or {}).get("fmt")
    return fmt if fmt in FORMATS else "xml"


def spec_errors(
    status: int, messages: list[str], headers: dict[str, str] | None = None
) -> Response:
    response = render(
        _error_format(),
        "errors",
        [{"code": status, "description": m} for m in messages],
        status,
    )
    response.headers.update(headers or {})
    return response


def _field(error: FieldError) -> str:
    return FIELD_NAMES.get(error.field, error.field)


@bp.errorhandler(GridopsError)
def _typed_error(exc: GridopsError) -> Response:
    # The summary first, then one error per bad field (the spec allows several).
    messages = [exc.detail, *(f"{_field(e)}: {e.message}" for e in exc.errors)]
    return spec_errors(SPEC_STATUS.get(exc.status, 400), messages)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = SPEC_STATUS.get(exc.code or 400, 400)
    return spec_errors(status, [exc.description or exc.name])


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    if isinstance(exc, OperationalError):
        log.warning("database unavailable: %s", exc.orig)
        return spec_errors(
            503,
            ["The database is not reachable right now; retry shortly."],
            {"Retry-After": "5"},
        )
    log.exception("unhandled error")
    return spec_errors(500, ["An unexpected error occurred."])


# -- who is asking -------------------------------------------------------------------------


def _locale() -> str:
    asked = (request.args.get("locale") or "").strip().lower()[:2]
    if asked in service.LOCALES:
        return asked
    return request.accept_languages.best_match(service.LOCALES, default="zh") or "zh"


def _bearer_token() -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _key_actor(key: str | None) -> Actor | None:
    """The actor of ``key`` or of the Bearer token; None when neither was sent. A key that
    was sent and does not resolve is refused (403), never read as "no key"."""
    key = (key or "").strip() or _bearer_token()
    if not key:
        return None
    db = get_session()
    actor = actor_for_token(db, key)
    db.commit()  # the token's last use
    if actor is None:
        audit.record("token_rejected", detail={"prefix": key[:12], "path": request.path})
        raise KeyRefused("the api_key is not valid (unknown, expired or revoked)")
    if actor.token_first_use_in_hour:
        audit.record(
            "token_used",
            actor_id=actor.user_id,
            actor=actor.username,
            detail={"token": actor.token_id, "path": request.path},
        )
    return actor


def _post_fields() -> dict[str, str]:
    """The POST's fields: form-encoded (the spec), or a JSON object of the same fields."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise InvalidInput("send a JSON object", [FieldError("body", "not a JSON object")])
        bad = [k for k, v in body.items() if isinstance(v, dict | list)]
        if bad:
            raise InvalidInput(
                "fields are single values", [FieldError(k, "a single value") for k in bad]
            )
        return {k: "" if v is None else str(v) for k, v in body.items()}
    repeated = [k for k in request.form if len(request.form.getlist(k)) > 1 and "[" not in k]
    if repeated:
        raise InvalidInput(
            "a field was sent twice", [FieldError(k, "send it once") for k in repeated]
        )
    return request.form.to_dict()


# -- routes --------------------------------------------------------------------------------


@bp.get("/discovery.<fmt>")
@public
def discovery(fmt: str) -> ResponseReturnValue:
    endpoint = url_for("open311.discovery", fmt="xml", _external=True).rsplit("/", 1)[0]
    return render(_format(fmt), "discovery", service.discovery(endpoint, _locale()))


@bp.get("/services.<fmt>")
@public
def services(fmt: str) -> ResponseReturnValue:
    _format(fmt)
    db = get_session()
    service.check_jurisdiction(db, request.args.get("jurisdiction_id"))
    return render(fmt, "services", service.list_services(db, _locale()))


@bp.get("/services/<service_code>.<fmt>")
@public
def service_definition(service_code: str, fmt: str) -> ResponseReturnValue:
    _format(fmt)
    db = get_session()
    service.check_jurisdiction(db, request.args.get("jurisdiction_id"))
    return render(fmt, "service_definition", service.service_definition(db, service_code))


@bp.get("/requests.<fmt>")
@public
def requests(fmt: str) -> ResponseReturnValue:
    _format(fmt)
    db = get_session()
    jurisdiction = service.check_jurisdiction(db, request.args.get("jurisdiction_id"))
    viewer = _key_actor(request.args.get("api_key"))
    query = service.parse_request_query(db, request.args)
    found = service.find_requests(
        db, query, viewer=viewer, jurisdiction=jurisdiction, locale=_locale()
    )
    return render(fmt, "service_requests", found)


@bp.post("/requests.<fmt>")
@public
@csrf.exempt  # the key, never the cookie, says who files: no ambient authority to forge
def request_create(fmt: str) -> ResponseReturnValue:
    _format(fmt)
    fields = _post_fields()
    actor = _key_actor(fields.get("api_key"))
    if actor is None:
        raise KeyRefused("an api_key is required to file a request (form field api_key)")
    db = get_session()
    made = service.create_request(db, actor, fields, _locale())
    db.commit()
    response = render(fmt, "service_requests", [made], 201)
    response.headers["Location"] = url_for(
        "open311.request_detail", service_request_id=made["service_request_id"], fmt=fmt
    )
    return response


@bp.get("/requests/<service_request_id>.<fmt>")
@public
def request_detail(service_request_id: str, fmt: str) -> ResponseReturnValue:
    _format(fmt)
    db = get_session()
    jurisdiction = service.check_jurisdiction(db, request.args.get("jurisdiction_id"))
    viewer = _key_actor(request.args.get("api_key"))
    found = service.get_request(
        db, service_request_id, viewer=viewer, jurisdiction=jurisdiction, locale=_locale()
    )
    return render(fmt, "service_requests", [found])


@bp.get("/tokens/<token>.<fmt>")
@public
def token(token: str, fmt: str) -> ResponseReturnValue:
    _format(fmt)
    db = get_session()
    service.check_jurisdiction(db, request.args.get("jurisdiction_id"))
    return render(fmt, "service_requests", [service.resolve_token(db, token)])
