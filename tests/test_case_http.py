"""Cases over HTTP: intake (201, then 200 on replay), the case with its ETag, and transitions
guarded by If-Match (428 without, 412 when stale, 409 when illegal)."""

from __future__ import annotations

import pytest

from gridops.importing import run_import
from tests import factories as f
from tests.test_intake import report


@pytest.fixture
def people(app, session, tmp_path, make_user, token_for):
    run_import(session, "areas", f.write(tmp_path / "a.gpkg", f.area_rows()))
    grids = f.strip_grid(f.COMMUNITY_W, "440604001001")
    run_import(session, "grids", f.write(tmp_path / "g.gpkg", grids))
    codes = [g["code"] for g in grids]
    clients = {}
    for name, role, scope in (
        ("inspector", "inspector", {"grid_codes": codes}),
        ("checker", "inspector", {"grid_codes": codes}),
        ("manager", "community_manager", {"area_code": "440604001001"}),
        ("planner", "planner", {"area_code": "440604"}),
    ):
        user_id, _ = make_user(role, **scope)
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(user_id)}"
        clients[name] = client
    return clients


def test_intake_then_the_case_moves_with_if_match(people):
    body = report()
    created = people["inspector"].post("/api/v1/incidents", json=body)
    assert created.status_code == 201, created.get_json()
    case_url = created.headers["Location"]
    replay = people["inspector"].post("/api/v1/incidents", json=body)
    assert replay.status_code == 200 and replay.get_json()["id"] == created.get_json()["id"]
    assert people["planner"].post("/api/v1/incidents", json=report()).status_code == 403

    case = people["manager"].get(case_url)
    assert case.status_code == 200 and case.headers["ETag"] == '"1"'
    assert case.get_json()["properties"]["grid_code"] == "440604001001001"
    url = f"{case_url}/transitions"
    manager = people["manager"]
    assert manager.post(url, json={"action": "file"}).status_code == 428
    stale = manager.post(url, json={"action": "file"}, headers={"If-Match": '"7"'})
    assert stale.status_code == 412 and stale.headers["ETag"] == '"1"'
    illegal = manager.post(url, json={"action": "close"}, headers={"If-Match": '"1"'})
    assert illegal.status_code == 409 and "allowed: file" in illegal.get_json()["detail"]
    filed = manager.post(url, json={"action": "file"}, headers={"If-Match": '"1"'})
    assert filed.status_code == 200 and filed.headers["ETag"] == '"2"'
    assert filed.get_json()["status"] == "filed"
    history = manager.get(case_url).get_json()["history"]
    assert [(e["action"], e["from_state"], e["to_state"]) for e in history] == [
        ("file", "reported", "filed")
    ]
    assert (
        people["planner"]
        .post(url, json={"action": "dispatch"}, headers={"If-Match": '"2"'})
        .status_code
        == 403
    )
    planner_view = people["planner"].get(case_url).get_json()
    assert planner_view["geometry"] is None and "reporter_name" not in planner_view["properties"]


def test_bad_reports_are_422_with_every_field(people):
    response = people["inspector"].post("/api/v1/incidents", json={"lon": "x"})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    fields = {e["field"] for e in response.get_json()["errors"]}
    assert {"client_uuid", "category", "lon", "lat", "captured_at"} <= fields
    assert people["inspector"].post("/api/v1/incidents", data="nope").status_code == 422
