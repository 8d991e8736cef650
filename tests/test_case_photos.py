"""Photos on cases over HTTP: multipart intake and transitions, replays, limits with nothing
written on refusal, clean files on a failed transaction, and the authorised photo route."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import text

from gridops import create_app
from gridops.config import ConfigError, load_config
from gridops.db import get_database
from gridops.incidents.photos import jpeg_segments
from tests.conftest import app_config
from tests.test_cases import build_world
from tests.test_intake import report
from tests.test_photos import crafted_png, encode, exif_with_gps_and_orientation, halves

KB = 1024
MAX_BYTES = 256 * KB  # small, so that oversize uploads stay cheap to make


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    return tmp_path / "photos"


@pytest.fixture
def app(database_url, connection, photo_dir):
    """The conftest app, with its photos in the test's folder and a small byte limit."""
    application = create_app(
        app_config(database_url, PHOTO_DIR=str(photo_dir), PHOTO_MAX_BYTES=MAX_BYTES)
    )
    get_database(application).bind_to(connection)
    yield application
    get_database(application).dispose()


@pytest.fixture
def world(app, session, tmp_path, make_user, token_for, monkeypatch):
    # Cheap argon2 parameters for the seven users (hashing is tested on its own).
    from argon2 import PasswordHasher

    from gridops.auth import passwords

    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    built = build_world(session, tmp_path)
    planner_id, _ = make_user("planner", area_code="440604")
    ids = {name: actor.user_id for name, actor in built["actors"].items()}
    ids["planner"] = planner_id
    clients = {}
    for name, user_id in ids.items():
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(user_id)}"
        clients[name] = client
    clients["anonymous"] = app.test_client()
    return {**built, "ids": ids, "clients": clients}


# -- helpers -------------------------------------------------------------------------------


def camera_jpeg(width: int = 800, height: int = 600) -> bytes:
    """A phone photo: EXIF with GPS and a device serial, rotated by its orientation tag."""
    return encode(halves(width, height), "JPEG", exif=exif_with_gps_and_orientation(6))


def png(width: int = 300, height: int = 200, colour=(0, 128, 0)) -> bytes:
    return encode(Image.new("RGB", (width, height), colour), "PNG")


def multipart(body: dict, photos: list[bytes], field: str = "report") -> dict:
    return {
        field: json.dumps(body),
        "photos": [(io.BytesIO(data), f"p{i}.jpg") for i, data in enumerate(photos)],
    }


def post_report(client, body: dict, photos: list[bytes]):
    return client.post(
        "/api/v1/incidents", data=multipart(body, photos), content_type="multipart/form-data"
    )


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def count(session, sql: str, **params) -> int:
    return session.execute(text(sql), params).scalar_one()


def incidents_with(session, client_uuid: str) -> int:
    return count(session, "SELECT count(*) FROM incident WHERE client_uuid = :u", u=client_uuid)


def photo_rows(session) -> int:
    return count(session, "SELECT count(*) FROM incident_photo")


def fetch(client, url: str, **kwargs):
    response = client.get(url, **kwargs)
    response.get_data()  # read and close the file send_file opened
    response.close()
    return response


# -- intake --------------------------------------------------------------------------------


def test_report_with_two_photos_stores_clean_files_and_serves_them(world, session, photo_dir):
    body = report()
    created = post_report(world["clients"]["insp.w"], body, [camera_jpeg(), png()])
    assert created.status_code == 201, created.get_json()
    made = created.get_json()
    case_id = made["id"]
    assert [p["event_version"] for p in made["photos"]] == [None, None]
    assert [(p["width"], p["height"]) for p in made["photos"]] == [(600, 800), (300, 200)]

    rows = session.execute(
        text(
            "SELECT id, event_version, path, thumb_path, sha256, uploaded_by "
            "FROM incident_photo WHERE incident_id = :id ORDER BY id"
        ),
        {"id": case_id},
    ).all()
    assert len(rows) == 2
    assert {r.uploaded_by for r in rows} == {world["ids"]["insp.w"]}
    stored = {photo_dir / r.path for r in rows} | {photo_dir / r.thumb_path for r in rows}
    assert set(files(photo_dir)) == stored  # two photos, two thumbnails, nothing else

    inspector = world["clients"]["insp.w"]
    first = made["photos"][0]
    served = fetch(inspector, first["url"])
    assert served.status_code == 200
    assert served.headers["Content-Type"] == "image/jpeg"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert served.headers["Cache-Control"] == "private, max-age=86400"
    data = served.data
    assert served.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert hashlib.sha256(data).hexdigest() == rows[0].sha256.strip()
    for marker in (b"Exif", b"GPS", b"TabletCo", b"SN123456"):
        assert marker not in data
    assert set(jpeg_segments(data)) <= {0xE0, 0xDB, 0xC4, 0xC0, 0xC2, 0xDD, 0xDA}
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (600, 800)  # orientation 6 applied: upright
        assert dict(image.getexif()) == {}

    again = fetch(inspector, first["url"], headers={"If-None-Match": served.headers["ETag"]})
    assert again.status_code == 304

    thumb = fetch(inspector, first["thumb_url"])
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"
    assert thumb.headers["ETag"] != served.headers["ETag"]
    assert b"GPS" not in thumb.data
    with Image.open(io.BytesIO(thumb.data)) as image:
        assert image.size == (240, 320)

    case = world["clients"]["mgr.w"].get(f"/api/v1/cases/{case_id}").get_json()
    assert [p["id"] for p in case["photos"]] == [p["id"] for p in made["photos"]]
    assert set(case["photos"][0]) >= {"id", "event_version", "width", "height", "url", "thumb_url"}
    planner_view = world["clients"]["planner"].get(f"/api/v1/cases/{case_id}")
    assert planner_view.status_code == 200 and "photos" not in planner_view.get_json()


def test_replay_with_the_same_photos_returns_the_case_and_stores_nothing(world, session, photo_dir):
    inspector = world["clients"]["insp.w"]
    body, photos = report(), [camera_jpeg(), png()]
    first = post_report(inspector, body, photos)
    assert first.status_code == 201
    before = (files(photo_dir), photo_rows(session))

    replay = post_report(inspector, body, photos)
    assert replay.status_code == 200, replay.get_json()
    assert replay.get_json()["id"] == first.get_json()["id"]
    assert [p["id"] for p in replay.get_json()["photos"]] == [
        p["id"] for p in first.get_json()["photos"]
    ]
    reordered = post_report(inspector, body, photos[::-1])  # an outbox may reorder its parts
    assert reordered.status_code == 200
    assert (files(photo_dir), photo_rows(session)) == before


def test_same_uuid_with_another_photo_is_a_conflict(world, session, photo_dir):
    inspector = world["clients"]["insp.w"]
    body = report()
    assert post_report(inspector, body, [camera_jpeg()]).status_code == 201
    before = (files(photo_dir), photo_rows(session))
    for photos in ([png()], [camera_jpeg(), png()], []):
        conflict = post_report(inspector, body, photos)
        assert conflict.status_code == 409, photos
        assert conflict.get_json()["errors"][0]["field"] == "client_uuid"
    assert inspector.post("/api/v1/incidents", json=body).status_code == 409  # JSON, no photos
    assert (files(photo_dir), photo_rows(session)) == before
    assert incidents_with(session, body["client_uuid"]) == 1


def test_a_json_report_keeps_its_fingerprint(world, session):
    # No photos: the multipart form and the JSON body are the same report.
    inspector = world["clients"]["insp.w"]
    body = report()
    created = inspector.post("/api/v1/incidents", json=body)
    assert created.status_code == 201
    replay = post_report(inspector, body, [])
    assert replay.status_code == 200 and replay.get_json()["id"] == created.get_json()["id"]


def test_the_report_may_come_as_a_json_file_part(world, session):
    # What a browser's FormData sends for a Blob of type application/json.
    body = report()
    data = {
        "report": (io.BytesIO(json.dumps(body).encode()), "blob", "application/json"),
        "photos": [(io.BytesIO(png()), "p.png")],
    }
    response = world["clients"]["insp.w"].post(
        "/api/v1/incidents", data=data, content_type="multipart/form-data"
    )
    assert response.status_code == 201, response.get_json()
    assert len(response.get_json()["photos"]) == 1


def refused_with_nothing_written(response, status: int, session, photo_dir, client_uuid: str):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert incidents_with(session, client_uuid) == 0
    assert photo_rows(session) == 0
    assert files(photo_dir) == []
    return response.get_json()


def test_too_many_photos_is_422_and_writes_nothing(world, session, photo_dir):
    body = report()
    response = post_report(world["clients"]["insp.w"], body, [png(40, 30)] * 7)
    problem = refused_with_nothing_written(response, 422, session, photo_dir, body["client_uuid"])
    assert problem["errors"] == [{"field": "photos", "message": "at most 6 photos, got 7"}]


def test_an_oversize_photo_is_413_naming_it_and_writes_nothing(world, session, photo_dir):
    body = report()
    big = b"\xff\xd8\xff\xe0" + os.urandom(MAX_BYTES)
    response = post_report(world["clients"]["insp.w"], body, [png(), big])
    problem = refused_with_nothing_written(response, 413, session, photo_dir, body["client_uuid"])
    assert [e["field"] for e in problem["errors"]] == ["photos[1]"]
    assert f"at most {MAX_BYTES:,}" in problem["errors"][0]["message"]


def test_a_body_over_the_request_cap_is_a_413_problem(app, world, session, photo_dir):
    cap = app.config["MAX_CONTENT_LENGTH"]
    assert cap == 6 * MAX_BYTES + 1024 * KB
    body = report()
    blob = os.urandom(cap)
    response = post_report(world["clients"]["insp.w"], body, [blob])
    problem = refused_with_nothing_written(response, 413, session, photo_dir, body["client_uuid"])
    assert problem["status"] == 413


def test_wrong_type_and_pixel_bomb_are_422_each_named(world, session, photo_dir):
    body = report()
    notes = b"just some notes, saved as notes.jpg\n" * 20
    response = post_report(
        world["clients"]["insp.w"], body, [png(), notes, crafted_png(30000, 30000)]
    )
    problem = refused_with_nothing_written(response, 422, session, photo_dir, body["client_uuid"])
    errors = {e["field"]: e["message"] for e in problem["errors"]}
    assert set(errors) == {"photos[1]", "photos[2]"}
    assert "accepted types" in errors["photos[1]"]
    assert "too many pixels" in errors["photos[2]"]


def test_bad_multipart_parts_are_named(world, session, photo_dir):
    inspector = world["clients"]["insp.w"]
    body = report()
    cases = [
        ({"report": "{not json"}, "report"),
        ({"report": "[1, 2]"}, "report"),
        ({"photos": [(io.BytesIO(png()), "a.png")]}, "report"),
        (  # a misnamed photo must not be dropped silently
            {"report": json.dumps(body), "photo": [(io.BytesIO(png()), "a.png")]},
            "photo",
        ),
        ({"report": json.dumps(body), "photos": "aGVsbG8="}, "photos"),  # text, not a file
    ]
    for data, field in cases:
        response = inspector.post(
            "/api/v1/incidents", data=data, content_type="multipart/form-data"
        )
        assert response.status_code == 422, data
        assert field in {e["field"] for e in response.get_json()["errors"]}
    assert incidents_with(session, body["client_uuid"]) == 0 and files(photo_dir) == []


def test_a_bad_report_after_the_photos_were_processed_writes_nothing(world, session, photo_dir):
    body = report(category="E9999")
    response = post_report(world["clients"]["insp.w"], body, [camera_jpeg(), png()])
    problem = refused_with_nothing_written(response, 422, session, photo_dir, body["client_uuid"])
    assert problem["errors"][0]["field"] == "category"


def test_a_database_failure_after_storing_leaves_no_files(world, session, photo_dir):
    # A real constraint violation on the second photo's row, after both files are on disk
    # and the first row is in: the transaction fails, and the files must go with it.
    session.execute(
        text(
            "ALTER TABLE incident_photo ADD CONSTRAINT test_refuses_width_123 CHECK (width <> 123)"
        )
    )
    session.commit()
    body = report()
    response = post_report(world["clients"]["insp.w"], body, [png(), png(123, 50)])
    assert response.status_code == 500
    assert incidents_with(session, body["client_uuid"]) == 0
    assert photo_rows(session) == 0
    assert files(photo_dir) == []

    # The same failure on a transition: the case is unchanged and no files remain.
    case = world["west"]
    response = world["clients"]["insp.w"].post(
        f"/api/v1/cases/{case}/transitions",
        data=multipart({"action": "verify"}, [png(123, 50)], field="transition"),
        content_type="multipart/form-data",
        headers={"If-Match": '"1"'},
    )
    assert response.status_code == 500
    assert count(session, "SELECT version FROM incident WHERE id = :id", id=case) == 1
    assert files(photo_dir) == []


def test_the_nightly_sweep_removes_old_files_no_row_names(world, session, photo_dir, monkeypatch):
    from gridops.scheduler import jobs

    body = report()
    assert post_report(world["clients"]["insp.w"], body, [png()]).status_code == 201
    named = files(photo_dir)
    assert len(named) == 2
    month = named[0].parent
    day_and_a_bit = time.time() - 25 * 3600
    orphans = [month / "0b9c2a4e-orphan.jpg", month / ".upload-abc.tmp"]
    for path in [*orphans, month / "fresh-orphan.jpg"]:
        path.write_bytes(b"left by a killed request")
    for path in [*orphans, *named]:
        os.utime(path, (day_and_a_bit, day_and_a_bit))

    monkeypatch.setattr(jobs, "_config", {"PHOTO_DIR": str(photo_dir)})
    outcome = jobs.JOBS["photo_sweep"].work(session, datetime.now(UTC))
    assert outcome == {"files": 5, "removed": 2, "bytes_freed": 2 * 24}
    assert files(photo_dir) == sorted([*named, month / "fresh-orphan.jpg"])
    assert jobs.JOBS["photo_sweep"].cron == {"hour": 3, "minute": 30}


# -- transitions ---------------------------------------------------------------------------


def post_transition(client, case_id: int, body: dict, photos: list[bytes], version: int):
    return client.post(
        f"/api/v1/cases/{case_id}/transitions",
        data=multipart(body, photos, field="transition"),
        content_type="multipart/form-data",
        headers={"If-Match": f'"{version}"'},
    )


def test_a_transition_with_a_photo_attaches_it_to_its_event(world, session, photo_dir):
    case = world["west"]
    inspector = world["clients"]["insp.w"]
    response = post_transition(
        inspector, case, {"action": "verify", "note": "seen on site"}, [camera_jpeg()], 1
    )
    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    assert (result["status"], result["version"]) == ("verified", 2)
    assert response.headers["ETag"] == '"2"'
    [photo] = result["photos"]
    assert photo["event_version"] == 2
    row = session.execute(
        text("SELECT incident_id, event_version, uploaded_by FROM incident_photo WHERE id = :id"),
        {"id": photo["id"]},
    ).one()
    assert tuple(row) == (case, 2, world["ids"]["insp.w"])
    event = session.execute(
        text("SELECT action FROM case_event WHERE incident_id = :id AND version = 2"),
        {"id": case},
    ).scalar_one()
    assert event == "verify"
    assert len(files(photo_dir)) == 2
    assert fetch(inspector, photo["url"]).status_code == 200
    listed = world["clients"]["mgr.w"].get(f"/api/v1/cases/{case}").get_json()["photos"]
    assert [(p["id"], p["event_version"]) for p in listed] == [(photo["id"], 2)]

    # JSON transitions are unchanged.
    filed = world["clients"]["mgr.w"].post(
        f"/api/v1/cases/{case}/transitions", json={"action": "file"}, headers={"If-Match": '"2"'}
    )
    assert filed.status_code == 200 and "photos" not in filed.get_json()


def test_a_refused_transition_writes_no_photo(world, session, photo_dir):
    case, inspector = world["west"], world["clients"]["insp.w"]
    stale = post_transition(inspector, case, {"action": "verify"}, [png()], 7)
    assert stale.status_code == 412
    bad = post_transition(inspector, case, {"action": "verify"}, [png(), b"GIF89a"], 1)
    assert bad.status_code == 422
    assert [e["field"] for e in bad.get_json()["errors"]] == ["photos[1]"]
    foreign = post_transition(world["clients"]["mgr.e"], case, {"action": "file"}, [png()], 1)
    assert foreign.status_code == 404
    assert count(session, "SELECT version FROM incident WHERE id = :id", id=case) == 1
    assert photo_rows(session) == 0 and files(photo_dir) == []


# -- who may see the photos ----------------------------------------------------------------


@pytest.fixture
def west_photo(world) -> dict:
    response = post_report(world["clients"]["insp.w"], report(), [png()])
    assert response.status_code == 201
    made = response.get_json()
    return {"case": made["id"], **made["photos"][0]}


def test_photo_route_serves_full_viewers_only(world, session, west_photo):
    clients, url = world["clients"], west_photo["url"]
    for name in ("insp.w", "insp.w2", "mgr.w"):
        assert fetch(clients[name], url).status_code == 200, name
    for name in ("mgr.e", "planner", "handler"):  # foreign; restricted; not their case yet
        response = fetch(clients[name], url)
        assert response.status_code == 404, name
        assert response.mimetype == "application/problem+json"
    anonymous = fetch(clients["anonymous"], url)
    assert anonymous.status_code == 401

    # Once the case is routed to the handler's department, the handler sees its photos.
    session.execute(
        text(
            "UPDATE incident SET department_id = (SELECT id FROM department WHERE code = 'CG') "
            "WHERE id = :id"
        ),
        {"id": west_photo["case"]},
    )
    session.commit()
    assert fetch(clients["handler"], url).status_code == 200
    assert fetch(clients["handler"], west_photo["thumb_url"]).status_code == 200
    assert fetch(clients["planner"], url).status_code == 404


def test_photo_route_refuses_mismatched_ids_and_sizes(world, west_photo):
    inspector = world["clients"]["insp.w"]
    other_case = post_report(inspector, report(), []).get_json()["id"]
    photo_id, case_id = west_photo["id"], west_photo["case"]
    assert fetch(inspector, f"/api/v1/cases/{other_case}/photos/{photo_id}").status_code == 404
    assert fetch(inspector, f"/api/v1/cases/{case_id}/photos/{photo_id + 999}").status_code == 404
    bad_size = fetch(inspector, f"/api/v1/cases/{case_id}/photos/{photo_id}?size=huge")
    assert bad_size.status_code == 422
    assert bad_size.get_json()["errors"][0]["field"] == "size"


# -- configuration -------------------------------------------------------------------------


def test_photo_settings_defaults_and_refusals(monkeypatch, tmp_path):
    monkeypatch.setenv("GRIDOPS_VAR_DIR", str(tmp_path / "var"))
    for name in ("PHOTO_DIR", "PHOTO_MAX_COUNT", "PHOTO_MAX_BYTES"):
        monkeypatch.delenv(f"GRIDOPS_{name}", raising=False)
    config = load_config({"ENV": "testing"})
    assert config["PHOTO_DIR"] == str(tmp_path / "var" / "photos")
    assert (config["PHOTO_MAX_COUNT"], config["PHOTO_MAX_BYTES"]) == (6, 10 * 1024 * KB)
    assert config["MAX_CONTENT_LENGTH"] == 61 * 1024 * KB

    monkeypatch.setenv("GRIDOPS_PHOTO_MAX_COUNT", "2")
    assert load_config({"ENV": "testing"})["MAX_CONTENT_LENGTH"] == 21 * 1024 * KB
    from gridops.config import PROJECT_ROOT

    with pytest.raises(ConfigError, match="GRIDOPS_PHOTO_DIR"):
        load_config({"ENV": "testing", "PHOTO_DIR": str(PROJECT_ROOT / "static" / "photos")})
    monkeypatch.setenv("GRIDOPS_PHOTO_MAX_BYTES", "0")
    with pytest.raises(ConfigError, match="GRIDOPS_PHOTO_MAX_BYTES"):
        load_config({"ENV": "testing"})
