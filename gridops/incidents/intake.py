"""Incident intake: a report from a tablet, the hotline, the public or a referral becomes a case.

The server finds the unit grid itself (a grid sent by the client is never trusted) and refuses
points outside the reporter's jurisdiction. Offline tablets replay their outbox: the same
client UUID returns the incident already stored (the database's unique constraint decides,
so concurrent replays make one row), while the same UUID with a different report is a 409.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import Actor
from gridops.dispatch.routing import grid_inspector_for, record_decision
from gridops.errors import Conflict, FieldError, InvalidInput
from gridops.grids.locate import locate
from gridops.incidents.workcal import local_today

SOURCES = ("inspector", "hotline", "public", "referral")
MAX_DESCRIPTION = 2000
# A capture time further ahead than this is a wrong tablet clock, not a report from the future.
CLOCK_SKEW = timedelta(minutes=10)
# A tablet may hold a report offline for days; one captured more than a year ago is a tablet
# whose clock was reset (to 1970, or year 1), and its time would skew every KPI it touches.
MAX_CAPTURE_AGE = timedelta(days=366)
# No position fix is vaguer than the Earth's circumference; the column is a 4-byte real, which a
# larger number would overflow (a database error, not an answer).
MAX_ACCURACY_M = 40_000_000


def _parse_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """Normalised fields of a report, or InvalidInput listing every bad field at once."""
    errors: list[FieldError] = []
    out: dict[str, Any] = {}

    raw_uuid = report.get("client_uuid")
    try:
        out["client_uuid"] = str(uuid.UUID(str(raw_uuid)))
    except ValueError:
        errors.append(FieldError("client_uuid", "a UUID made by the client, e.g. uuid4"))

    category = report.get("category")
    if not isinstance(category, str) or not category.strip():
        errors.append(FieldError("category", "a category code such as E0502"))
    else:
        out["category"] = category.strip().upper()

    for name, low, high in (("lon", -180, 180), ("lat", -90, 90)):
        value = report.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(FieldError(name, "a number"))
        elif not low <= value <= high:
            errors.append(FieldError(name, f"between {low} and {high}"))
        else:
            out[name] = float(value)

    accuracy = report.get("accuracy_m")
    if accuracy is not None and (
        isinstance(accuracy, bool)
        or not isinstance(accuracy, int | float)
        or not 0 <= accuracy <= MAX_ACCURACY_M  # also refuses NaN
    ):
        errors.append(FieldError("accuracy_m", f"metres, from 0 to {MAX_ACCURACY_M:,}"))
    else:
        # To the millimetre: the real column holds no finer, and refuses 5e-324 (underflow).
        out["accuracy_m"] = None if accuracy is None else round(float(accuracy), 3)

    captured = report.get("captured_at")
    try:
        when = datetime.fromisoformat(str(captured))
        if when.tzinfo is None:
            raise ValueError
        if when > datetime.now(UTC) + CLOCK_SKEW:
            errors.append(FieldError("captured_at", "lies in the future (check the clock)"))
        elif when < datetime.now(UTC) - MAX_CAPTURE_AGE:
            errors.append(
                FieldError("captured_at", "more than a year ago (check the tablet's clock)")
            )
        out["captured_at"] = when
    except ValueError:
        errors.append(FieldError("captured_at", "ISO 8601 time with its UTC offset"))

    source = report.get("source", "inspector")
    if source not in SOURCES:
        errors.append(FieldError("source", f"one of {', '.join(SOURCES)}"))
    out["source"] = source

    description = report.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        errors.append(FieldError("description", f"text of at most {MAX_DESCRIPTION} characters"))
    out["description"] = description if isinstance(description, str) else ""

    if "grid" in report or "grid_code" in report:
        errors.append(FieldError("grid", "is found by the server from the point; do not send it"))
    if errors:
        raise InvalidInput("the report is not valid", errors)
    return out


def _fingerprint(fields: Mapping[str, Any], photos: Sequence[str] | None = None) -> bytes:
    canonical = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in fields.items()}
    if photos:
        # Only when there are photos, so that reports without any keep their fingerprint.
        # Sorted: an outbox that replays the same photos in another order sends the same report.
        canonical["photos"] = sorted(photos)
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).digest()


def _assign_verification(session: Session, case_id: int, grid_code: str | None) -> None:
    """A new report waits on the inspector of its grid, who verifies it on site."""
    assignee, reason = grid_inspector_for(session, grid_code, on=local_today())
    if assignee is not None:
        session.execute(
            text(
                "UPDATE incident SET assignee_id = :a, assigned_at = clock_timestamp() "
                "WHERE id = :id"
            ),
            {"a": assignee, "id": case_id},
        )
    record_decision(
        session, case_id, kind="assign_verify", trigger="intake", reason=reason,
        assignee_id=assignee,
    )  # fmt: skip


def intake(
    session: Session,
    actor: Actor,
    report: Mapping[str, Any],
    *,
    photos: Sequence[str] | None = None,
) -> tuple[dict, bool]:
    """Store a report as a case; returns (incident, created). The caller commits.

    ``photos``: the SHA-256 (hex) of each photo uploaded with the report, as uploaded; they
    belong to the report, so the same client UUID with other photos is a different report.
    Storing the photos is the caller's (see ``gridops.incidents.case_photos``).

    Raises InvalidInput (422, every bad field named), OutsideJurisdiction (422) and Conflict
    (409) for a known client UUID carrying a different report.
    """
    fields = _parse_report(report)
    category_id = session.execute(
        text(
            "SELECT id FROM category WHERE code = :code AND minor_code IS NOT NULL AND active "
            "ORDER BY standard_ref DESC LIMIT 1"
        ),
        {"code": fields["category"]},
    ).scalar()
    if category_id is None:
        raise InvalidInput(
            f"no active minor category {fields['category']!r}",
            [FieldError("category", "a minor class of the catalogue, e.g. E0502")],
        )
    where = locate(session, fields["lon"], fields["lat"], actor.scope())
    digest = _fingerprint(fields, photos)
    created_id = session.execute(
        text(
            """
            INSERT INTO incident (client_uuid, category_id, geom, reported_at, captured_at,
                                  gps_accuracy_m, description, source, grid_id, reported_by,
                                  intake_sha256, status)
            VALUES (:uuid, :category, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326),
                    clock_timestamp(), :captured, :accuracy, :description, :source, :grid,
                    :actor, :digest, 'reported')
            ON CONFLICT (client_uuid) DO NOTHING
            RETURNING id
            """
        ),
        {
            "uuid": fields["client_uuid"],
            "category": category_id,
            "lon": fields["lon"],
            "lat": fields["lat"],
            "captured": fields["captured_at"],
            "accuracy": fields["accuracy_m"],
            "description": fields["description"],
            "source": fields["source"],
            "grid": where.grid_id,
            "actor": actor.user_id,
            "digest": digest,
        },
    ).scalar()
    created = created_id is not None
    if not created:
        stored = session.execute(
            text("SELECT id, status, intake_sha256 FROM incident WHERE client_uuid = :uuid"),
            {"uuid": fields["client_uuid"]},
        ).one()
        if stored.intake_sha256 is None or bytes(stored.intake_sha256) != digest:
            raise Conflict(
                f"client_uuid {fields['client_uuid']} was already used for another report",
                [FieldError("client_uuid", "make a new UUID for a new report")],
            )
        created_id, status = stored.id, stored.status
    else:
        status = "reported"
        _assign_verification(session, created_id, where.grid_code)
    return {
        "id": created_id,
        "client_uuid": fields["client_uuid"],
        "status": status,
        "grid_code": where.grid_code,
        "community": where.areas.get("community"),
    }, created
