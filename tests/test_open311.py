"""Open311 GeoReport v2 at /open311/v2/: every endpoint in XML and JSON, filing through intake
with an api_key, the spec's error format, the status mapping, and what the public may see."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import text

from gridops.auth import passwords
from gridops.auth import service as auth
from gridops.incidents.cases import transition
from gridops.incidents.workflow import STATES
from gridops.open311.service import SPECIFICATION, public_status
from tests.conftest import TEST_PASSWORD
from tests.test_cases import build_world

FORMATS = ("xml", "json")
CONTENT_TYPES = {"xml": "text/xml; charset=utf-8", "json": "application/json; charset=utf-8"}
BASE = "/open311/v2"
WEST_POINT = (113.0075, 23.01)  # lon, lat: west community, unit grid 002
EAST_POINT = (113.0325, 23.01)  # east community (mgr.e's)
# Reporter data sent with a request: none of it may come back, in any response.
CANARIES = {
    "first_name": "Canarygiven",
    "last_name": "Canaryfamily",
    "email": "canary.mail@example.cn",
    "phone": "13900007777",
    "device_id": "canary-device-42",
}


# -- the world -----------------------------------------------------------------------------


@pytest.fixture
def world(session, tmp_path, make_user, token_for, monkeypatch) -> dict[str, Any]:
    # Cheap argon2 parameters: seven accounts per test (hashing is tested on its own).
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    made = build_world(session, tmp_path)
    keys = {name: token_for(actor.user_id) for name, actor in made["actors"].items()}
    admin_id, _ = make_user("admin")
    planner_id, _ = make_user("planner", area_code="440604")
    keys["admin"] = token_for(admin_id)
    keys["planner"] = token_for(planner_id)
    return {**made, "keys": keys}


def incident_count(session) -> int:
    return session.execute(text("SELECT count(*) FROM incident")).scalar_one()


def new_incident(session, lon: float, lat: float, *, code: str = "E0502", **columns: Any) -> int:
    """A case inserted as test data (its grid found from the point), e.g. in a given state."""
    columns.setdefault("reported_at", datetime.now(UTC))
    names = ", ".join(columns)
    values = ", ".join(f":{c}" for c in columns)
    new_id = session.execute(
        text(
            f"INSERT INTO incident (client_uuid, category_id, geom, {names}) VALUES "
            "(gen_random_uuid(), (SELECT id FROM category WHERE code = :code "
            "ORDER BY standard_ref DESC LIMIT 1), ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), "
            f"{values}) RETURNING id"
        ),
        {"lon": lon, "lat": lat, "code": code, **columns},
    ).scalar_one()
    session.execute(
        text(
            "UPDATE incident i SET grid_id = (SELECT g.id FROM unit_grid g WHERE g.valid_to "
            "IS NULL AND ST_Covers(g.geom, i.geom) ORDER BY g.code LIMIT 1) WHERE i.id = :id"
        ),
        {"id": new_id},
    )
    session.commit()
    return new_id


# -- parsing responses ---------------------------------------------------------------------


def parse(response, fmt: str) -> Any:
    """The body as Python: XML through ElementTree (checking the declaration), JSON as is."""
    assert response.headers["Content-Type"] == CONTENT_TYPES[fmt], response.headers
    raw = response.get_data(as_text=True)
    if fmt == "json":
        return json.loads(raw)
    assert raw.startswith('<?xml version="1.0" encoding="UTF-8"?>'), raw[:60]
    return ET.fromstring(response.get_data())


def items(response, fmt: str, root: str, item: str) -> list[dict[str, Any]]:
    """A list response as dicts of text (XML) or values (JSON), checking the XML structure."""
    body = parse(response, fmt)
    if fmt == "json":
        assert isinstance(body, list), body
        return body
    assert body.tag == root, body.tag
    assert all(child.tag == item for child in body), [c.tag for c in body]
    return [{field.tag: field.text for field in child} for child in body]


def spec_error(response, fmt: str, status: int) -> list[str]:
    """The spec's error body with the HTTP status as each error's code; its descriptions."""
    assert response.status_code == status, response.get_data(as_text=True)
    errors = items(response, fmt, "errors", "error")
    assert errors, "an error response without errors"
    assert all(str(e["code"]) == str(status) for e in errors), errors
    assert all(e["description"] for e in errors), errors
    return [e["description"] for e in errors]


def keyed(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post_request(client, fmt: str, key: str | None, **fields: Any):
    form = {"service_code": "E0502", "lat": WEST_POINT[1], "long": WEST_POINT[0], **fields}
    if key is not None:
        form["api_key"] = key
    form = {k: str(v) for k, v in form.items() if v is not None}
    return client.post(f"{BASE}/requests.{fmt}", data=form)


# -- discovery and services ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_discovery(client, fmt):
    response = client.get(f"{BASE}/discovery.{fmt}")
    assert response.status_code == 200
    body = parse(response, fmt)
    if fmt == "xml":
        assert body.tag == "discovery"
        [endpoint] = body.find("endpoints").findall("endpoint")
        formats = [f.text for f in endpoint.find("formats").findall("format")]
        found = {
            "changeset": body.findtext("changeset"),
            "contact": body.findtext("contact"),
            "key_service": body.findtext("key_service"),
            "specification": endpoint.findtext("specification"),
            "url": endpoint.findtext("url"),
            "type": endpoint.findtext("type"),
            "endpoint_changeset": endpoint.findtext("changeset"),
        }
    else:
        [endpoint] = body["endpoints"]
        formats = endpoint["formats"]
        found = {
            **{k: body[k] for k in ("changeset", "contact", "key_service")},
            **{k: endpoint[k] for k in ("specification", "url", "type")},
            "endpoint_changeset": endpoint["changeset"],
        }
    assert found["specification"] == SPECIFICATION == "http://wiki.open311.org/GeoReport_v2"
    assert found["url"] == "http://localhost/open311/v2"
    assert found["type"] == "production"
    assert formats == ["text/xml", "application/json"]
    assert found["contact"] and found["key_service"]
    for stamp in (found["changeset"], found["endpoint_changeset"]):
        assert datetime.fromisoformat(stamp).utcoffset() is not None


@pytest.mark.parametrize("fmt", FORMATS)
def test_service_list(client, fmt):
    services = items(client.get(f"{BASE}/services.{fmt}"), fmt, "services", "service")
    by_code = {s["service_code"]: s for s in services}
    assert len(by_code) == len(services) > 100  # one per minor class, no duplicates
    assert all(re.fullmatch(r"[CE]\d{4}", code) for code in by_code), sorted(by_code)[:5]
    vendor = by_code["E0502"]
    assert vendor["service_name"] == "无照经营游商"
    assert vendor["group"] == "街面秩序"
    assert str(vendor["metadata"]).lower() == "false"
    assert vendor["type"] == "realtime"
    assert "街面秩序" in vendor["keywords"] and "24" in vendor["description"]
    for english in (
        client.get(f"{BASE}/services.{fmt}?locale=en"),
        client.get(f"{BASE}/services.{fmt}", headers={"Accept-Language": "en"}),
    ):
        [vendor] = [
            s for s in items(english, fmt, "services", "service") if s["service_code"] == "E0502"
        ]
        assert (vendor["service_name"], vendor["group"]) == (
            "Unlicensed street vendor",
            "Street order",
        )


@pytest.mark.parametrize("fmt", FORMATS)
def test_service_definition(client, fmt):
    response = client.get(f"{BASE}/services/E0502.{fmt}")
    assert response.status_code == 200
    body = parse(response, fmt)
    if fmt == "xml":
        assert body.tag == "service_definition"
        assert body.findtext("service_code") == "E0502"
        assert body.find("attributes") is not None and list(body.find("attributes")) == []
    else:
        assert body == {"service_code": "E0502", "attributes": []}
    [description] = spec_error(client.get(f"{BASE}/services/X9999.{fmt}"), fmt, 404)
    assert "X9999" in description


def test_unknown_format_and_jurisdiction_are_404_in_the_spec_format(client, world):
    spec_error(client.get(f"{BASE}/services.html"), "xml", 404)
    for fmt in FORMATS:
        for path in ("services", "requests", "services/E0502"):
            for bad in ("999999", "4406", "440604001001"):  # unknown; not 6 digits; a community
                url = f"{BASE}/{path}.{fmt}?jurisdiction_id={bad}"
                assert "jurisdiction_id" in spec_error(client.get(url), fmt, 404)[0]
        for good in ("440600", "440604", ""):
            url = f"{BASE}/services.{fmt}?jurisdiction_id={good}"
            assert client.get(url).status_code == 200


# -- filing a request ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_post_files_exactly_one_incident_in_the_right_grid(client, session, world, fmt):
    before = incident_count(session)
    response = post_request(
        client, fmt, world["keys"]["mgr.w"], description="摊贩占道 Open311", **CANARIES
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    [made] = items(response, fmt, "service_requests", "request")
    assert set(made) == {"service_request_id", "service_notice", "account_id"}  # no token
    assert made["service_notice"] and made["account_id"] in (None, "")
    request_id = int(made["service_request_id"])
    assert response.headers["Location"].endswith(f"/open311/v2/requests/{request_id}.{fmt}")
    assert incident_count(session) == before + 1
    row = session.execute(
        text(
            "SELECT i.source, i.status, i.description, i.reporter_name, i.reporter_phone, "
            "i.device_id, i.reported_by, g.code AS grid, c.code AS category FROM incident i "
            "JOIN unit_grid g ON g.id = i.grid_id JOIN category c ON c.id = i.category_id "
            "WHERE i.id = :id"
        ),
        {"id": request_id},
    ).one()
    assert (row.grid, row.category, row.status) == ("440604001001002", "E0502", "reported")
    assert (row.source, row.description) == ("public", "摊贩占道 Open311")
    assert row.reporter_name == "Canarygiven Canaryfamily <canary.mail@example.cn>"
    assert (row.reporter_phone, row.device_id) == ("13900007777", "canary-device-42")
    assert row.reported_by == world["actors"]["mgr.w"].user_id
    for value in CANARIES.values():
        assert value not in response.get_data(as_text=True)


def test_post_takes_the_key_as_a_bearer_token_and_json_fields(client, session, world):
    before = incident_count(session)
    form = {"service_code": "e0502", "lat": "23.01", "long": "113.0075"}
    by_header = client.post(
        f"{BASE}/requests.json", data=form, headers=keyed(world["keys"]["insp.w"])
    )
    assert by_header.status_code == 201, by_header.get_data(as_text=True)
    as_json = client.post(
        f"{BASE}/requests.json",
        json={
            "api_key": world["keys"]["mgr.w"],
            "service_code": "E0502",
            "lat": 23.01,
            "long": 113.0075,
        },
    )
    assert as_json.status_code == 201, as_json.get_data(as_text=True)
    assert incident_count(session) == before + 2


def test_chinese_names_are_stored_family_name_first(client, session, world):
    response = post_request(
        client, "json", world["keys"]["mgr.w"], first_name="三", last_name="张", phone="13800000000"
    )
    [made] = response.get_json()
    stored = session.execute(
        text("SELECT reporter_name FROM incident WHERE id = :id"),
        {"id": made["service_request_id"]},
    ).scalar()
    assert stored == "张三"


def sign_in(client, username: str) -> None:
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post(
        "/login",
        json={"username": username, "password": TEST_PASSWORD},
        headers={"X-CSRFToken": csrf},
    )
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_post_without_a_valid_key_is_403_and_writes_nothing(app, client, session, world, fmt):
    revoked = world["keys"]["insp.w2"]
    token_id = auth.list_tokens(session, world["actors"]["insp.w2"].user_id)[0]["id"]
    auth.revoke_token(session, world["actors"]["insp.w2"].user_id, token_id)
    session.commit()
    browser = app.test_client()
    sign_in(browser, "mgr.w")  # a signed-in manager: the cookie is not a key
    before = incident_count(session)
    cases = {
        "no key": post_request(client, fmt, None),
        "unknown key": post_request(client, fmt, "gdo_deadbeef_" + "x" * 43),
        "not a token": post_request(client, fmt, "letmein"),
        "revoked key": post_request(client, fmt, revoked),
        "bad bearer": client.post(
            f"{BASE}/requests.{fmt}",
            data={"service_code": "E0502", "lat": "23.01", "long": "113.0075"},
            headers=keyed("gdo_nope_nope"),
        ),
        "browser session": post_request(browser, fmt, None),
        "planner's key": post_request(client, fmt, world["keys"]["planner"]),
        "handler's key": post_request(client, fmt, world["keys"]["handler"]),
    }
    for name, response in cases.items():
        [description] = spec_error(response, fmt, 403)
        assert "api_key" in description, (name, description)
    assert incident_count(session) == before


BAD_POSTS = {
    "no point": ({"lat": None, "long": None}, 400, "lat,long"),
    "address only": (
        {"lat": None, "long": None, "address_string": "佛山市禅城区祖庙路1号"},
        400,
        "geocode",
    ),
    "only lat": ({"long": None}, 400, "long"),
    "lat not a number": ({"lat": "north"}, 400, "lat"),
    "lat out of range": ({"lat": "123"}, 400, "lat"),
    "lon/lat swapped": ({"lat": "113.0075", "long": "23.01"}, 400, "lat"),
    "no service_code": ({"service_code": ""}, 400, "service_code"),
    "unknown service_code": ({"service_code": "E0598"}, 404, "service_code"),
    "a major class": ({"service_code": "E05"}, 404, "service_code"),
    "misspelt field": ({"lng": "113.0075"}, 400, "lng"),
    "bad email": ({"email": "not-an-address"}, 400, "email"),
    "long description": ({"description": "x" * 2001}, 400, "description"),
    "control characters": ({"description": "bell\x07"}, 400, "description"),
    "long phone": ({"phone": "1" * 41}, 400, "phone"),
    "outside the key's area": (
        {"lat": EAST_POINT[1], "long": EAST_POINT[0]},
        400,
        "jurisdiction",
    ),
    "no area at all": ({"lat": "40.0", "long": "116.4"}, 400, "jurisdiction"),
    "unknown jurisdiction_id": ({"jurisdiction_id": "440999"}, 404, "jurisdiction_id"),
}


@pytest.mark.parametrize("case", BAD_POSTS, ids=list(BAD_POSTS))
@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_posts_are_spec_errors_and_write_nothing(client, session, world, case, fmt):
    fields, status, mentioned = BAD_POSTS[case]
    before = incident_count(session)
    response = post_request(client, fmt, world["keys"]["mgr.w"], **fields)
    descriptions = spec_error(response, fmt, status)
    assert any(mentioned in d for d in descriptions), descriptions
    assert incident_count(session) == before


def test_a_point_outside_the_declared_jurisdiction_is_refused(client, session, world):
    before = incident_count(session)
    response = post_request(client, "xml", world["keys"]["admin"], jurisdiction_id="440605")
    assert any("440605" in d for d in spec_error(response, "xml", 400))
    ok = post_request(client, "xml", world["keys"]["admin"], jurisdiction_id="440604")
    assert ok.status_code == 201
    assert incident_count(session) == before + 1


# -- reading requests ----------------------------------------------------------------------


def get_requests(client, fmt: str, query: str = "", headers: dict | None = None):
    response = client.get(f"{BASE}/requests.{fmt}{query}", headers=headers or {})
    assert response.status_code == 200, response.get_data(as_text=True)
    return items(response, fmt, "service_requests", "request")


REQUEST_FIELDS = {
    "service_request_id", "status", "status_notes", "service_name", "service_code",
    "description", "agency_responsible", "service_notice", "requested_datetime",
    "updated_datetime", "expected_datetime", "address", "address_id", "zipcode", "lat",
    "long", "media_url",
}  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
def test_requests_list_and_one_request(client, world, fmt):
    west = world["west"]
    listed = get_requests(client, fmt)
    assert {int(r["service_request_id"]) for r in listed} >= {west, world["east"]}
    for item in listed:
        assert set(item) == REQUEST_FIELDS
    response = client.get(f"{BASE}/requests/{west}.{fmt}")
    assert response.status_code == 200
    [one] = items(response, fmt, "service_requests", "request")
    assert int(one["service_request_id"]) == west
    assert one["status"] == "open" and one["status_notes"].startswith("reported ")
    assert one["address_id"] == "440604001001001"
    assert one["address"] == "单元网格440604001001001，西社区，祖庙街道，禅城区，佛山市"
    assert one["zipcode"] in ("", None) and one["media_url"] in ("", None)
    for stamp in ("requested_datetime", "updated_datetime"):
        assert datetime.fromisoformat(one[stamp]).utcoffset() == timedelta(hours=8)
    assert one["expected_datetime"] in ("", None)  # not dispatched yet
    english = client.get(f"{BASE}/requests/{west}.{fmt}?locale=en")
    [one_en] = items(english, fmt, "service_requests", "request")
    assert one_en["address"].startswith("Unit grid 440604001001001, ")
    assert "to be verified" in one_en["status_notes"]
    for missing in ("999999999", "abc"):
        spec_error(client.get(f"{BASE}/requests/{missing}.{fmt}"), fmt, 404)
    in_other = f"{BASE}/requests/{west}.{fmt}?jurisdiction_id=440605"
    spec_error(client.get(in_other), fmt, 404)
    in_own = client.get(f"{BASE}/requests/{west}.{fmt}?jurisdiction_id=440604")
    assert in_own.status_code == 200


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_workflow_state_maps_to_open_or_closed(client, session, world, fmt):
    ids = {}
    for state in STATES:
        extra = {"parked_from": "filed"} if state == "parked" else {}
        ids[state] = new_incident(session, *WEST_POINT, status=state, **extra)
    query = "?service_request_id=" + ",".join(str(i) for i in ids.values())
    by_id = {int(r["service_request_id"]): r for r in get_requests(client, fmt, query)}
    assert set(by_id) == set(ids.values())
    for state, request_id in ids.items():
        expected = "closed" if state in ("closed", "void") else "open"
        assert by_id[request_id]["status"] == expected == public_status(state), state
        assert by_id[request_id]["status_notes"].startswith(f"{state} "), state
    with pytest.raises(ValueError):
        public_status("lost")


@pytest.mark.parametrize("fmt", FORMATS)
def test_expected_datetime_is_the_deadline_after_dispatch(client, session, world, fmt):
    actors, west = world["actors"], world["west"]
    url = f"{BASE}/requests/{west}.{fmt}"
    [before] = items(client.get(url), fmt, "service_requests", "request")
    assert before["agency_responsible"] in ("", None)  # no department anywhere yet
    for version, (action, who) in enumerate(
        (("verify", "insp.w"), ("file", "mgr.w"), ("dispatch", "mgr.w")), start=1
    ):
        department = "CG" if action == "dispatch" else None
        transition(
            session, west, action, actors[who], expected_version=version, department=department
        )
    session.commit()
    deadline = session.execute(
        text("SELECT deadline_at FROM incident WHERE id = :id"), {"id": west}
    ).scalar()
    assert deadline is not None, "dispatch must store the handling deadline"
    [after] = items(client.get(url), fmt, "service_requests", "request")
    expected = datetime.fromisoformat(after["expected_datetime"])
    assert expected.utcoffset() == timedelta(hours=8)
    assert expected == deadline.replace(microsecond=0)
    assert after["agency_responsible"] == "城管"
    assert after["status"] == "open" and after["status_notes"] == "dispatched 已派遣"


def test_agency_falls_back_to_the_category_default_department(client, session, world):
    east = world["east"]
    session.execute(
        text(
            "UPDATE category SET department_id = (SELECT id FROM department WHERE code = 'CG') "
            "WHERE id = (SELECT category_id FROM incident WHERE id = :id)"
        ),
        {"id": east},
    )
    session.commit()
    [one] = client.get(f"{BASE}/requests/{east}.json").get_json()
    assert one["agency_responsible"] == "城管"


@pytest.mark.parametrize("fmt", FORMATS)
def test_tokens_resolve_to_the_request(client, session, world, fmt):
    made = post_request(client, "json", world["keys"]["mgr.w"]).get_json()[0]
    token = session.execute(
        text("SELECT client_uuid::text FROM incident WHERE id = :id"),
        {"id": made["service_request_id"]},
    ).scalar()
    response = client.get(f"{BASE}/tokens/{token}.{fmt}")
    assert response.status_code == 200
    [resolved] = items(response, fmt, "service_requests", "request")
    assert int(resolved["service_request_id"]) == made["service_request_id"]
    assert resolved["token"] == token
    for unknown in ("7d0e3a1e-0000-4000-8000-000000000000", "not-a-token"):
        spec_error(client.get(f"{BASE}/tokens/{unknown}.{fmt}"), fmt, 404)


@pytest.mark.parametrize("fmt", FORMATS)
def test_request_filters(client, session, world, fmt):
    now = datetime.now(UTC)
    made = {
        "vendor_open": new_incident(session, *WEST_POINT, reported_at=now - timedelta(days=1)),
        "vendor_closed": new_incident(
            session, *WEST_POINT, status="closed", reported_at=now - timedelta(days=2)
        ),
        "parking_void": new_incident(
            session, *WEST_POINT, code="E0505", status="void", reported_at=now - timedelta(days=3)
        ),
        "old": new_incident(session, *WEST_POINT, reported_at=now - timedelta(days=100)),
        "east_new": new_incident(session, *EAST_POINT, reported_at=now - timedelta(days=1)),
    }
    mine = set(made.values())

    def ids(query: str = "") -> set[int]:
        return {int(r["service_request_id"]) for r in get_requests(client, fmt, query)} & mine

    def of(*names: str) -> set[int]:
        return {made[n] for n in names}

    assert ids() == mine - of("old")  # the last 90 days by default
    assert ids("?service_code=E0502") == of("vendor_open", "vendor_closed", "east_new")
    assert ids("?service_code=E0505,E0502") == mine - of("old")
    assert ids("?status=closed") == of("vendor_closed", "parking_void")
    assert ids("?status=open") == of("vendor_open", "east_new")
    assert ids("?status=open,closed") == mine - of("old")
    start = (now - timedelta(days=2, hours=12)).astimezone().isoformat(timespec="seconds")
    end = (now - timedelta(hours=36)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ids(f"?start_date={start.replace('+', '%2B')}&end_date={end}") == of("vendor_closed")
    unencoded = (now - timedelta(days=1, hours=12)).astimezone(datetime.now().astimezone().tzinfo)
    plus = unencoded.isoformat(timespec="seconds")
    if "+" in plus:  # an unencoded '+' arrives as a space; the offset still counts
        assert ids(f"?start_date={plus}") == of("vendor_open", "east_new")
    old_end = (now - timedelta(days=99)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ids(f"?end_date={old_end}") == of("old")  # the 90 days before the end
    long_ago = (now - timedelta(days=200)).date().isoformat()
    assert ids(f"?start_date={long_ago}") == mine
    listed = f"?service_request_id={made['old']},{made['east_new']}&status=closed"
    assert ids(listed) == of("old", "east_new")  # the ids override every other filter
    assert ids("?jurisdiction_id=440604&service_code=E0502") == of(
        "vendor_open", "vendor_closed", "east_new"
    )
    assert ids("?jurisdiction_id=440605") == set()
    for bad, field in (
        ("?status=pending", "status"),
        ("?start_date=yesterday", "start_date"),
        ("?start_date=2026-01-01T00:00:00", "start_date"),  # no offset
        (f"?start_date={now.date()}&end_date={(now - timedelta(days=5)).date()}", "start_date"),
        ("?service_code=Z9999", "service_code"),
        ("?service_request_id=12,abc", "service_request_id"),
    ):
        descriptions = spec_error(client.get(f"{BASE}/requests.{fmt}{bad}"), fmt, 400)
        assert any(d.startswith(field) for d in descriptions), (bad, descriptions)


def test_requests_are_newest_first_and_at_most_1000(client, session, world):
    session.execute(
        text(
            "INSERT INTO incident (client_uuid, category_id, geom, reported_at) "
            "SELECT gen_random_uuid(), (SELECT min(id) FROM category WHERE minor_code IS NOT "
            "NULL), ST_SetSRID(ST_MakePoint(113.0075, 23.01), 4326), "
            "now() - make_interval(mins => n) FROM generate_series(1, 1001) AS n"
        )
    )
    session.commit()
    listed = get_requests(client, "json")
    assert len(listed) == 1000
    stamps = [datetime.fromisoformat(r["requested_datetime"]) for r in listed]
    assert stamps == sorted(stamps, reverse=True)


def test_xml_stays_well_formed_with_control_characters(client, session, world):
    bell = new_incident(
        session, *WEST_POINT, description="tab\there, bell\x07 here", source="public"
    )
    response = client.get(f"{BASE}/requests/{bell}.xml")
    [one] = items(response, "xml", "service_requests", "request")
    assert one["description"] == "tab\there, bell\ufffd here"


# -- privacy ---------------------------------------------------------------------------------


def points(listed: list[dict[str, Any]], request_id: int) -> tuple[float, float]:
    [found] = [r for r in listed if int(r["service_request_id"]) == request_id]
    return float(found["long"]), float(found["lat"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_points_are_exact_only_for_keys_that_see_the_case_in_full(app, client, session, world, fmt):
    # Points that rounding to 0.001° does move (build_world's own cases lie on round numbers).
    exact = {"west": (113.0051234, 23.0104321), "east": (113.0321234, 23.0104321)}
    case = {side: new_incident(session, *point) for side, point in exact.items()}
    keys = world["keys"]
    browser = app.test_client()
    sign_in(browser, "mgr.w")
    # (client, headers, query, sides seen in full)
    callers = {
        "anonymous": (client, {}, "", set()),
        "browser session": (browser, {}, "", set()),
        "west manager": (client, keyed(keys["mgr.w"]), "", {"west"}),
        "west manager, api_key": (client, {}, f"?api_key={keys['mgr.w']}", {"west"}),
        "east manager": (client, keyed(keys["mgr.e"]), "", {"east"}),
        "west inspector": (client, keyed(keys["insp.w"]), "", {"west"}),
        "admin": (client, keyed(keys["admin"]), "", {"west", "east"}),
        "planner": (client, keyed(keys["planner"]), "", set()),
        "handler": (client, keyed(keys["handler"]), "", set()),
    }
    for name, (caller, headers, query, full) in callers.items():
        listed = get_requests(caller, fmt, query, headers)
        for side in ("west", "east"):
            response = caller.get(f"{BASE}/requests/{case[side]}.{fmt}{query}", headers=headers)
            one = items(response, fmt, "service_requests", "request")
            lon, lat = exact[side]
            for got in (points(listed, case[side]), points(one, case[side])):
                if side in full:
                    assert got == pytest.approx((lon, lat), abs=1e-9), (name, side)
                else:
                    assert got == (round(lon, 3), round(lat, 3)), (name, side, got)
    spec_error(client.get(f"{BASE}/requests.{fmt}?api_key=gdo_bad_key"), fmt, 403)
    spec_error(client.get(f"{BASE}/requests.{fmt}", headers=keyed("gdo_bad_key")), fmt, 403)


def test_public_points_are_rounded_to_about_100_m(client, session, world):
    case = new_incident(session, 113.0051234, 23.0104321)
    [public] = client.get(f"{BASE}/requests/{case}.json").get_json()
    assert (public["long"], public["lat"]) == (113.005, 23.01)
    raw = client.get(f"{BASE}/requests/{case}.xml").get_data(as_text=True)
    assert "113.0051234" not in raw and "23.0104321" not in raw
    assert "<long>113.005</long>" in raw and "<lat>23.01</lat>" in raw
    [full] = client.get(
        f"{BASE}/requests/{case}.json", headers=keyed(world["keys"]["mgr.w"])
    ).get_json()
    assert (full["long"], full["lat"]) == (113.0051234, 23.0104321)


def test_no_response_ever_carries_reporter_data(app, client, session, world):
    made = post_request(client, "json", world["keys"]["mgr.w"], **CANARIES)
    assert made.status_code == 201
    request_id = made.get_json()[0]["service_request_id"]
    stored = session.execute(
        text(
            "SELECT reporter_name, reporter_phone, device_id, client_uuid::text AS token "
            "FROM incident WHERE id = :id"
        ),
        {"id": request_id},
    ).one()
    for value in CANARIES.values():  # the canaries are there to leak
        assert value in f"{stored.reporter_name} {stored.reporter_phone} {stored.device_id}"
    urls = [
        "requests.{fmt}",
        "requests.{fmt}?service_code=E0502",
        f"requests.{{fmt}}?service_request_id={request_id}",
        f"requests/{request_id}.{{fmt}}",
        f"requests/{request_id}.{{fmt}}?locale=en",
        f"tokens/{stored.token}.{{fmt}}",
        "services.{fmt}",
        "services/E0502.{fmt}",
        "discovery.{fmt}",
    ]
    readers = {
        "anonymous": {},
        "reporting manager": keyed(world["keys"]["mgr.w"]),
        "admin": keyed(world["keys"]["admin"]),
        "planner": keyed(world["keys"]["planner"]),
    }
    checked = 0
    for fmt in FORMATS:
        for url in urls:
            for name, headers in readers.items():
                response = client.get(f"{BASE}/{url.format(fmt=fmt)}", headers=headers)
                assert response.status_code == 200, (url, name)
                body = response.get_data(as_text=True)
                leaked = [v for v in CANARIES.values() if v in body]
                assert not leaked, (url, fmt, name, leaked)
                for word in ("reporter", "phone", "email", "device", "first_name"):
                    assert word not in body, (url, fmt, name, word)
                checked += 1
    assert checked == len(FORMATS) * len(urls) * len(readers)


def test_only_the_publics_own_descriptions_are_published(client, session, world):
    public = new_incident(session, *WEST_POINT, description="路灯不亮", source="public")
    note = new_incident(session, *WEST_POINT, description="住户王某反映", source="inspector")
    for fmt in ("json", "xml"):
        shown = {
            int(r["service_request_id"]): r["description"] or ""
            for r in items(
                client.get(f"{BASE}/requests.{fmt}?service_request_id={public},{note}"),
                fmt,
                "service_requests",
                "request",
            )
        }
        assert shown == {public: "路灯不亮", note: ""}
