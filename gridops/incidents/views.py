"""HTTP routes of cases: intake, the case with its history, and workflow transitions."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request, send_file, url_for
from flask.typing import ResponseReturnValue

from gridops.api import feature_in_scope, if_match_version, json_body, unstorable_fields
from gridops.auth.web import current_actor, requires
from gridops.db import get_session
from gridops.dispatch.routing import decisions
from gridops.errors import FieldError, InvalidInput
from gridops.features import LAYERS
from gridops.incidents.case_photos import (
    PhotoStore,
    PhotoWrites,
    attach_photos,
    intake_with_photos,
    list_photos,
    photo_file,
    prepare_photos,
    sees_in_full,
)
from gridops.incidents.cases import history, transition
from gridops.incidents.clock import case_clock
from gridops.incidents.listing import hint_after_intake

bp = Blueprint("cases", __name__, url_prefix="/api/v1")


@bp.post("/incidents")
@requires("write:incidents")
def incident_create() -> ResponseReturnValue:
    """A report; 201 when new, 200 when the same client UUID was already received."""
    actor = current_actor()
    assert actor is not None
    report, uploads = _json_and_photos("report")
    store = PhotoStore.from_config(current_app.config)
    prepared = prepare_photos(uploads, store.limits)  # every photo checked before any write
    db = get_session()
    with PhotoWrites(store) as writes:  # the files go again if anything below fails
        incident, created = intake_with_photos(db, actor, report, prepared, writes)
        writes.commit(db)
    if prepared:  # the report's own photos (a replay gets them too), not later events'
        own = [p for p in list_photos(db, incident["id"]) if p["event_version"] is None]
        incident["photos"] = _photo_links(incident["id"], own)
    # Open cases of the same category close by: the reporter may have repeated one.
    incident["possible_duplicates"] = hint_after_intake(db, actor, incident["id"])
    response = jsonify(incident)
    response.status_code = 201 if created else 200
    response.headers["Location"] = url_for("cases.case", case_id=incident["id"])
    return response


def _case_body(case_id: int) -> tuple[dict, int]:
    """The case as the actor may see it (one scoped fetch), its clock and its history."""
    feature = feature_in_scope(LAYERS["incidents"], str(case_id))
    db = get_session()
    properties = feature["properties"]
    body = {
        **feature,
        "status": properties["status"],
        "version": properties["version"],
        "clock": case_clock(db, case_id),
        "history": [e.__dict__ for e in history(db, case_id)],
    }
    actor = current_actor()
    if actor is not None and sees_in_full(db, actor, case_id):
        body["photos"] = _photo_links(case_id, list_photos(db, case_id))
        # Who the case went to and why (names staff: full viewers only).
        body["decisions"] = decisions(db, case_id)
    return body, int(properties["version"])


@bp.get("/cases/<int:case_id>")
@requires("read:incidents")
def case(case_id: int) -> ResponseReturnValue:
    body, version = _case_body(case_id)
    response = jsonify(body)
    response.headers["ETag"] = f'"{version}"'
    return response


@bp.post("/cases/<int:case_id>/transitions")
@requires("write:cases")
def case_transition(case_id: int) -> ResponseReturnValue:
    """``{"action": "file", "note": "…"}`` with ``If-Match: "<version>"`` (428 without it).

    ``dispatch`` may name a ``department`` (code); ``mark_duplicate`` needs ``duplicate_of``.
    """
    actor = current_actor()
    assert actor is not None
    expected_version = if_match_version("case")
    body, uploads = _json_and_photos("transition")
    action = body.get("action")
    note = body.get("note", "")
    duplicate_of = body.get("duplicate_of")
    department = body.get("department")
    errors = []
    if not isinstance(action, str):
        errors.append(FieldError("action", "e.g. verify, file, dispatch"))
    if not isinstance(note, str):
        errors.append(FieldError("note", "text"))
    if duplicate_of is not None and (
        isinstance(duplicate_of, bool) or not isinstance(duplicate_of, int)
    ):
        errors.append(FieldError("duplicate_of", "the id of the original case"))
    if department is not None and not isinstance(department, str):
        errors.append(FieldError("department", "a department code"))
    if errors:
        raise InvalidInput("the transition is not valid", errors)
    store = PhotoStore.from_config(current_app.config)
    prepared = prepare_photos(uploads, store.limits)
    db = get_session()
    with PhotoWrites(store) as writes:
        result = transition(
            db,
            case_id,
            action,
            actor,
            expected_version=expected_version,
            note=note,
            duplicate_of=duplicate_of,
            department=department,
        )
        # The handler's after-photo, the checker's on-site photo: tied to this event.
        photo_ids = attach_photos(
            db,
            writes,
            case_id,
            prepared,
            event_version=result["version"],
            uploaded_by=actor.user_id,
        )
        writes.commit(db)
    if photo_ids:
        result["photos"] = _photo_links(
            case_id, [p for p in list_photos(db, case_id) if p["id"] in photo_ids]
        )
    response = jsonify(result)
    response.headers["ETag"] = f'"{result["version"]}"'
    return response


@bp.get("/cases/<int:case_id>/photos/<int:photo_id>")
@requires("read:incidents")
def case_photo(case_id: int, photo_id: int) -> ResponseReturnValue:
    """A photo of a case as JPEG (``?size=thumb``: its thumbnail), for full-access viewers."""
    actor = current_actor()
    assert actor is not None
    feature_in_scope(LAYERS["incidents"], str(case_id))  # NotFound outside the jurisdiction
    store = PhotoStore.from_config(current_app.config)
    found = photo_file(
        get_session(), actor, store.root, case_id, photo_id, request.args.get("size", "full")
    )
    response = send_file(found.path, mimetype="image/jpeg", etag=found.etag, conditional=True)
    # Private: a shared cache must never hand one viewer's authorised photo to another.
    response.headers["Cache-Control"] = "private, max-age=86400"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _photo_links(case_id: int, photos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for photo in photos:
        photo["url"] = url_for("cases.case_photo", case_id=case_id, photo_id=photo["id"])
        photo["thumb_url"] = url_for(
            "cases.case_photo", case_id=case_id, photo_id=photo["id"], size="thumb"
        )
    return photos


# Multipart fields besides the JSON one and the photos: Flask-WTF's CSRF token from a form.
_TOLERATED_FIELDS = {"csrf_token"}


def _json_and_photos(json_field: str) -> tuple[dict[str, Any], list[bytes]]:
    """The request's JSON object and its photos' bytes.

    A JSON body has no photos. ``multipart/form-data`` carries the object as the text (or
    file) part ``json_field`` and the photos as repeated file parts ``photos``; any other part
    is refused (422) rather than dropped, so a misnamed photo is never silently lost.
    """
    if request.mimetype != "multipart/form-data":
        return json_body(), []
    form, files = request.form, request.files  # a body over MAX_CONTENT_LENGTH: 413 here
    unexpected = (set(form) - {json_field, *_TOLERATED_FIELDS}) | (
        set(files) - {json_field, "photos"}
    )
    errors = [
        FieldError(name, f"unexpected part; send {json_field} and photos (as files)")
        for name in sorted(unexpected)
    ]
    raw: str | bytes | None = None
    parts = form.getlist(json_field) + files.getlist(json_field)
    if len(parts) != 1:
        errors.append(FieldError(json_field, "one part holding a JSON object"))
    else:
        raw = parts[0] if isinstance(parts[0], str) else parts[0].read()
    body: Any = None
    if raw is not None:
        try:
            body = current_app.json.loads(raw)  # the app's strict parser (security.py)
        except ValueError:
            errors.append(FieldError(json_field, "not valid JSON"))
        else:
            if not isinstance(body, dict):
                errors.append(FieldError(json_field, "not a JSON object"))
            errors += [
                FieldError(name, "holds U+0000 or a lone surrogate")
                for name in unstorable_fields(body, json_field)
            ]
    if errors:
        raise InvalidInput("the multipart request is not valid", errors)
    uploads = []
    for part in files.getlist("photos"):
        data = part.read()
        if not part.filename and not data:
            continue  # what an HTML form sends for a file input left empty
        uploads.append(data)
    return body, uploads
