"""The permission matrix: every role × every route × own / sibling / foreign records.

The routes are not listed here: they are read from the app's ``url_map`` when the tests are
collected, and each is classified by its declared permission, its endpoint name and the layer
registry (``gridops.features.LAYERS``). A route the generator cannot classify fails
``test_route_is_classified[...]``, so a new route cannot slip past the matrix unexamined.

Expectations come from the specification, not from the code under test:
- a role without the route's verb (``ROLE_VERBS``) gets 403;
- a record inside the actor's jurisdiction is found (200), one outside is not (404, never 403),
  and lists hold exactly the records in the jurisdiction;
- anonymous callers get 401 on the API (a redirect to /login on pages), unsafe requests
  without a token are refused by CSRF before anything else;
- planners see incidents without the reporter or the point (grid code and H3 cell instead).

Each side's records carry canary strings (area, enterprise and outlet names, reporters' names,
phones and devices); a canary of a side outside the actor's jurisdiction must not appear in any
response to that actor, on any route, and no reporter canary in any response to a planner.

Bugs the matrix found are kept at the end as regression tests.
"""

from __future__ import annotations

import io
import json
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import pytest
from flask import Flask
from shapely.geometry import Point, box
from sqlalchemy import text

from gridops import create_app
from gridops.auth.actor import ROLE_VERBS, ROLES
from gridops.auth.web import ANY_USER, check_declarations
from gridops.features import LAYERS
from gridops.grids.locate import assign_grids
from gridops.grids.views import LEVEL_LAYER, LISTED_LEVELS
from gridops.importing import run_import
from tests import factories as f
from tests.conftest import TEST_PASSWORD

# -- the routes, read once at collection time ----------------------------------------------

# The app does not connect to its database when it is created: this one only lends its url_map.
URL_MAP_APP = create_app(
    {"ENV": "testing", "DATABASE_URL": "postgresql://x@y/z", "SECRET_KEY": "t"}
)
UNDECLARED = object()
FLASK_STATIC = "static"  # Flask's own endpoint (not a gridops view; check_declarations agrees)
ANONYMOUS = "anonymous"
NO_ROLE = "no_role"  # signed in, but without any role assignment
# See incidents without personal data or exact points (handlers: until cases are routed).
RESTRICTED_ROLES = {"planner", "department_handler"}
PERSONAL = ("reporter_name", "reporter_phone", "device_id")
VIAS = ("token", "session")  # device token (Authorization: Bearer) or browser session cookie


@dataclass(frozen=True)
class Route:
    rule: str
    method: str
    endpoint: str
    permission: Any  # a verb, ANY_USER, None (public) or UNDECLARED
    arguments: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.endpoint.rsplit(".", 1)[-1]

    @property
    def safe(self) -> bool:
        return self.method == "GET"

    @property
    def is_api(self) -> bool:
        return self.rule.startswith(("/api/", "/collections"))

    def __str__(self) -> str:
        return f"{self.method} {self.rule}"


def app_routes(app: Flask) -> list[Route]:
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == FLASK_STATIC:
            continue
        view = app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append(
                Route(
                    rule.rule,
                    method,
                    rule.endpoint,
                    getattr(view, "gridops_permission", UNDECLARED),
                    tuple(sorted(rule.arguments)),
                )
            )
    return routes


def remove_probe_report(db, incident_id: int) -> None:
    """Take a probe's report out again. Its routing decisions are append-only evidence in a
    real deployment; here the trigger is lifted for this one cleanup so the world stays as
    every other probe expects it."""
    db.execute(text("ALTER TABLE case_decision DISABLE TRIGGER case_decision_no_change"))
    db.execute(text("DELETE FROM case_decision WHERE incident_id = :id"), {"id": incident_id})
    db.execute(text("ALTER TABLE case_decision ENABLE TRIGGER case_decision_no_change"))
    db.execute(text("DELETE FROM incident WHERE id = :id"), {"id": incident_id})
    db.commit()


class Unclassified(Exception):
    pass


# What each kind of route may take as URL variables.
KIND_ARGUMENTS: dict[str, set[str]] = {
    "public": set(),
    "self": set(),
    "admin": {"user_id", "assignment_id", "category_code", "day", "year"},
    "catalogue": set(),
    "tokens": {"token_id"},
    "layer": {"code", "feature_id"},
    "areas": {"code"},
    "area_tree": set(),
    "locate": set(),
    "kpis": set(),  # aggregates of the jurisdiction
    "collections": set(),
    "collection": {"collection_id", "feature_id"},
    "intake": set(),
    "case": {"case_id"},
    "transitions": {"case_id"},
    "open311": {"fmt", "service_code", "service_request_id", "token"},
    "case_list": set(),
    "duplicates": set(),
    "case_duplicates": {"case_id"},
    "case_photo": {"case_id", "photo_id"},
    "inspection_tasks": set(),  # the day's tasks the caller sees (own, and in full scope)
    "inspection_result": {"task_id"},
    "inspection_plans": set(),  # plans whose target lies in the jurisdiction
    "patrol_points": set(),  # the signed-in user's own points
    "patrol_day": set(),  # inspectors of the jurisdiction (?user=<id> names one)
}
# URL variables naming a scoped record (case_id: an incident, scoped like incidents/<id>).
RECORD_ARGUMENTS = {"code", "feature_id", "token_id", "case_id", "service_request_id", "token"}
RECORD_ARGUMENTS |= {"task_id"}  # an inspection task, seen by its assignee or in full scope
# Kinds whose unsafe methods the matrix knows what to expect of.
UNSAFE_INSPECTION_KINDS = {"inspection_result"}
UNSAFE_KINDS = {
    "public", "self", "admin", "tokens", "intake", "transitions", "open311", "patrol_points",
}  # fmt: skip
# The case routes, by endpoint: each known for exactly one method.
# Open311 GeoReport v2: public reads and a POST keyed by api_key (see open311_probes).
OPEN311_ENDPOINTS = {
    "open311.discovery": "GET",
    "open311.services": "GET",
    "open311.service_definition": "GET",
    "open311.requests": "GET",
    "open311.request_detail": "GET",
    "open311.token": "GET",
    "open311.request_create": "POST",
}
CASE_ENDPOINTS = {
    "cases.incident_create": ("intake", "POST"),
    "cases.case": ("case", "GET"),
    "cases.case_transition": ("transitions", "POST"),
    "case_list.cases": ("case_list", "GET"),
    "case_list.duplicates": ("duplicates", "GET"),
    "case_list.case_duplicates_view": ("case_duplicates", "GET"),
    "cases.case_photo": ("case_photo", "GET"),
}

# Patrol tracks: a tablet uploads its user's own points; the day lists inspectors by scope.
PATROL_ENDPOINTS = {
    "patrol.points_upload": ("patrol_points", "POST"),
    "patrol.day": ("patrol_day", "GET"),
}


# Inspections: an inspector's day, recording a result (If-Match), the plans of an area.
INSPECTION_ENDPOINTS = {
    "inspections.tasks": ("inspection_tasks", "GET"),
    "inspections.task_result": ("inspection_result", "POST"),
    "inspections.plans": ("inspection_plans", "GET"),
}

# Dispatch (the dispatcher's queue, assignment, workload), duties administration (admin:duties:
# admins, and managers in their own area) and components on the map.
DISPATCH_ENDPOINTS = {
    "dispatch.queue_view": ("dispatch_queue", "GET"),
    "dispatch.case_assign": ("dispatch_assign", "POST"),
    "dispatch.bulk_assign": ("dispatch_bulk", "POST"),
    "dispatch.workload": ("dispatch_workload", "GET"),
    "dispatch.grid_inspectors": ("duties_grid", "GET"),
    "dispatch.grid_inspectors_replace": ("duties_grid", "PUT"),
    "dispatch.absences": ("duties_absences", "GET"),
    "dispatch.absence_create": ("duties_absences", "POST"),
    "dispatch.absence_delete": ("duties_absence", "DELETE"),
    "dispatch.inspector_profile": ("duties_profile", "GET"),
    "dispatch.inspector_profile_set": ("duties_profile", "PUT"),
    "dispatch.components": ("components", "GET"),
}
DISPATCH_KINDS = {kind for kind, _ in DISPATCH_ENDPOINTS.values()}
KIND_ARGUMENTS |= {
    "dispatch_queue": set(),
    "dispatch_assign": {"case_id"},
    "dispatch_bulk": set(),
    "dispatch_workload": set(),
    "duties_grid": {"grid_code"},
    "duties_absences": set(),
    "duties_absence": {"absence_id"},
    "duties_profile": {"user_id"},
    "components": set(),
}
UNSAFE_KINDS |= DISPATCH_KINDS - {"dispatch_queue", "dispatch_workload", "components"}

# The dispatcher's board (write:cases): the page and its cases answer dispatchers only (403 for
# inspectors and handlers, who hold the verb too); cases of the jurisdiction listed or found.
BOARD_ENDPOINTS = {
    "board.page": ("board_page", "GET"),
    "board.cases": ("board_cases", "GET"),
    "board.case": ("board_case", "GET"),
}
BOARD_KINDS = {kind for kind, _ in BOARD_ENDPOINTS.values()}
KIND_ARGUMENTS |= {"board_page": set(), "board_cases": set(), "board_case": {"case_id"}}

# The signed-in user's inbox (any signed-in user): their own notifications only.
INBOX_ENDPOINTS = {
    "inbox.inbox": ("inbox", "GET"),
    "inbox.inbox_read": ("inbox_read", "POST"),
    "inbox.inbox_read_all": ("inbox", "POST"),
}
KIND_ARGUMENTS |= {"inbox": set(), "inbox_read": {"notification_id"}}
RECORD_ARGUMENTS |= {"notification_id"}  # a notification: found only by the user it is for
UNSAFE_KINDS |= {"inbox", "inbox_read"}

# Hotspots (read:analytics): a run is seen by those whose jurisdiction covers its area; a new
# run names an area, which must lie in the jurisdiction (422, as an unknown one, otherwise).
HOTSPOT_ENDPOINTS = {
    "hotspots.run_create": ("hotspot_runs", "POST"),
    "hotspots.runs": ("hotspot_runs", "GET"),
    "hotspots.run_detail": ("hotspot_run", "GET"),
    "hotspots.run_grids": ("hotspot_run", "GET"),
    "hotspots.run_compare": ("hotspot_run", "GET"),
    "hotspots.repeated_view": ("hotspot_repeated", "GET"),
}
HOTSPOT_KINDS = {kind for kind, _ in HOTSPOT_ENDPOINTS.values()}
KIND_ARGUMENTS |= {"hotspot_runs": set(), "hotspot_run": {"run_id"}, "hotspot_repeated": set()}
RECORD_ARGUMENTS |= {"run_id"}
UNSAFE_KINDS |= {"hotspot_runs"}

# Vector tiles (read:map; incidents: read:incidents): one tile covering the whole world holds
# each visible side's records (found by their code strings) and none of the others.
TILE_ENDPOINTS = {"tiles.tile": ("tiles", "GET"), "tiles.incident_tile": ("tiles", "GET")}
KIND_ARGUMENTS |= {"tiles": {"layer", "z", "x", "y"}}
WORLD_TILE = (10, 833, 444)  # 113.0..113.35 E, 22.9..23.2 N: every side's records

# Role pages (HTML), by endpoint: 200 with the verb (their data comes from the API routes
# above, probed there), 403 without, strangers sent to /login.
PAGE_ENDPOINTS = {"tablet.page": "GET"}
KIND_ARGUMENTS |= {"page": set()}

# The planner's pages (read:analytics): 200 HTML naming the own side's community (the hotspot
# map's boundary layer, the KPI area picker). folium's script escapes non-ASCII text, so hidden
# sides' canaries are looked for \u-escaped too.
PLANNER_PAGE_ENDPOINTS = {"planner.hotspot_map": "GET", "planner.kpi_dashboard": "GET"}
KIND_ARGUMENTS |= {"planner_page": set()}


def classify(route: Route) -> tuple[str, str | None]:
    """(kind, layer id or None) of a route, from its permission, endpoint name and LAYERS."""
    permission, name = route.permission, route.name
    if permission is UNDECLARED:
        raise Unclassified("declares neither @requires nor @public")
    layer = None
    if route.endpoint.startswith("open311."):
        kind = "open311"
        if OPEN311_ENDPOINTS.get(route.endpoint) != route.method:
            raise Unclassified(f"no expectations for {route.method} on {route.endpoint}")
    elif permission is None:
        kind = "public"
    elif route.endpoint in DISPATCH_ENDPOINTS:  # before admin: managers hold admin:duties
        kind, method = DISPATCH_ENDPOINTS[route.endpoint]
        if route.method != method:
            raise Unclassified(f"no expectations for {route.method} on {kind!r} routes")
    elif route.endpoint in BOARD_ENDPOINTS:
        kind, method = BOARD_ENDPOINTS[route.endpoint]
        if route.method != method:
            raise Unclassified(f"no expectations for {route.method} on {kind!r} routes")
    elif permission.startswith("admin:"):
        kind = "admin"
    elif route.endpoint in INBOX_ENDPOINTS:  # before self: ANY_USER, but own records
        kind, method = INBOX_ENDPOINTS[route.endpoint]
        if route.method != method:
            raise Unclassified(f"no expectations for {route.method} on {kind!r} routes")
    elif permission == ANY_USER:
        kind = "self"
    elif route.endpoint == "kpi.kpi_table":
        kind = "kpis"
    elif route.endpoint == "catalogue.categories":
        kind = "catalogue"
    elif route.endpoint in CASE_ENDPOINTS:
        kind, method = CASE_ENDPOINTS[route.endpoint]
        if route.method != method:
            raise Unclassified(f"no expectations for {route.method} on {kind!r} routes")
    elif route.endpoint in PATROL_ENDPOINTS:
        kind, method = PATROL_ENDPOINTS[route.endpoint]
        if route.method != method:
            raise Unclassified(f"no expectations for {route.method} on {kind!r} routes")
    elif route.endpoint in INSPECTION_ENDPOINTS:
        kind, method = INSPECTION_ENDPOINTS[route.endpoint]
        if route.method != method:
            raise Unclassified(f"no expectations for {route.method} on {kind!r} routes")
    elif route.endpoint in HOTSPOT_ENDPOINTS:
        kind, method = HOTSPOT_ENDPOINTS[route.endpoint]
        if route.method != method:
            raise Unclassified(f"no expectations for {route.method} on {kind!r} routes")
    elif route.endpoint in PLANNER_PAGE_ENDPOINTS:
        kind = "planner_page"
        if PLANNER_PAGE_ENDPOINTS[route.endpoint] != route.method:
            raise Unclassified(f"no expectations for {route.method} on {kind!r} routes")
    elif route.endpoint in PAGE_ENDPOINTS:
        kind = "page"
        if PAGE_ENDPOINTS[route.endpoint] != route.method:
            raise Unclassified(f"no expectations for {route.method} on {kind!r} routes")
    elif route.endpoint in TILE_ENDPOINTS:
        kind, method = TILE_ENDPOINTS[route.endpoint]
        if route.method != method:
            raise Unclassified(f"no expectations for {route.method} on {kind!r} routes")
    elif route.endpoint.startswith("ogc."):
        kind = "collection" if "collection_id" in route.arguments else name
    elif name.startswith("token"):
        kind = "tokens"
    elif name.startswith("locate"):
        kind = "locate"
    elif name.startswith("area"):
        kind = "area_tree" if name.endswith("_tree") else "areas"
    elif name in LAYERS or f"{name}s" in LAYERS:
        kind, layer = "layer", name if name in LAYERS else f"{name}s"
    else:
        raise Unclassified(f"endpoint {route.endpoint} names no known resource")
    if kind not in KIND_ARGUMENTS:
        raise Unclassified(f"no expectations for {kind!r} routes")
    unknown = set(route.arguments) - KIND_ARGUMENTS[kind]
    if unknown:
        raise Unclassified(f"URL variables {sorted(unknown)} have no record kind")
    if not route.safe and kind not in UNSAFE_KINDS | UNSAFE_INSPECTION_KINDS:
        raise Unclassified(f"no expectations for {route.method} on {kind!r} routes")
    return kind, layer


ROUTES = app_routes(URL_MAP_APP)
CLASSIFIED: list[tuple[Route, str, str | None]] = []
UNCLASSIFIED: list[str] = []
for _route in ROUTES:
    try:
        CLASSIFIED.append((_route, *classify(_route)))
    except Unclassified as exc:
        UNCLASSIFIED.append(f"{_route} ({_route.endpoint}): {exc}")


def layer_permissions(layer_id: str) -> set[str]:
    """The verbs of the /api/v1 routes serving a layer: what reading it takes anywhere."""
    area_layers = set(LEVEL_LAYER.values())
    return {
        route.permission
        for route, kind, layer in CLASSIFIED
        if route.safe and (layer == layer_id or (kind == "areas" and layer_id in area_layers))
    }


def may(role: str, permission: str) -> bool:
    """May ``role`` do ``permission`` at all, per the ROLE_VERBS table (the specification)?"""
    if role == ANONYMOUS:
        return False
    if permission == ANY_USER:
        return True
    verbs = ROLE_VERBS.get(role, set())
    return "*" in verbs or permission in verbs


def may_read_layer(role: str, layer_id: str) -> bool:
    perms = layer_permissions(layer_id) | {"read:map"}
    return all(may(role, p) for p in perms)


# -- the world -----------------------------------------------------------------------------

OWN_COMMUNITY = "440604001001"
SIBLING_COMMUNITY = "440604001002"
FOREIGN_COMMUNITY = "440605001001"
FOREIGN_C = box(113.04, 23.00, 113.06, 23.02)
OTHER_CITY = box(113.10, 23.00, 113.12, 23.02)
DEPARTMENT = {"code": "D1", "name": "城管", "area_code": "440604"}

EXTRA_AREAS = [
    {
        "code": "440605001",
        "name": "桂城街道",
        "level": "town",
        "parent_code": "440605",
        "geometry": f.D605,
    },
    {
        "code": FOREIGN_COMMUNITY,
        "name": "平洲社区",
        "level": "community",
        "parent_code": "440605001",
        "geometry": FOREIGN_C,
    },
    {
        "code": "440700",
        "name": "乙测试市",
        "level": "city",
        "parent_code": None,
        "geometry": OTHER_CITY,
    },
]

# The scope each role's user gets: all on the OWN side (admin: everything).
USER_SCOPES: dict[str, dict[str, Any]] = {
    "inspector": {"grid_codes": [f"{OWN_COMMUNITY}{i:03d}" for i in range(1, 5)]},
    "community_manager": {"area_code": OWN_COMMUNITY},
    "town_manager": {"area_code": "440604001"},
    "district_manager": {"area_code": "440604"},
    "planner": {"area_code": "440604"},
    "department_handler": {"department_code": DEPARTMENT["code"]},
    "admin": {},
    NO_ROLE: {},
}


def reach(role: str) -> tuple[str, ...] | None:
    """The codes a role's user is responsible for (None: everything)."""
    if role == "admin":
        return None
    scope = USER_SCOPES.get(role, {})
    if "grid_codes" in scope:
        return tuple(scope["grid_codes"])
    if "area_code" in scope:
        return (scope["area_code"],)
    if "department_code" in scope:
        return (DEPARTMENT["area_code"],)
    return ()


@dataclass
class Side:
    """The records of one community: own (the users'), sibling (same town) or foreign."""

    name: str
    community: str
    dx: float  # longitude offset of this side's points from the own side's
    areas: tuple[str, ...]  # area codes that belong to this side (own: with its ancestors)
    area_names: tuple[str, ...]
    ids: dict[str, list[str]] = field(default_factory=dict)  # layer id -> feature ids

    def point(self, lon: float, lat: float) -> tuple[float, float]:
        return round(lon + self.dx, 6), lat

    @property
    def incident_point(self) -> tuple[float, float]:
        return self.point(113.00137, 23.01071)  # in grid 001

    @property
    def enterprise_point(self) -> tuple[float, float]:
        return self.point(113.00623, 23.00431)  # in grid 002

    @property
    def outlet_point(self) -> tuple[float, float]:
        return self.point(113.01113, 23.01523)  # in grid 003

    @property
    def probe_point(self) -> tuple[float, float]:
        return self.point(113.01633, 23.00811)  # in grid 004, for /locate

    @property
    def reporter(self) -> dict[str, str]:
        n = {"own": 1, "sibling": 2, "foreign": 3}[self.name]
        return {
            "reporter_name": f"Reporter-{self.name}-Canary",
            "reporter_phone": f"1390000{n:04d}",
            "device_id": f"tablet-{self.name}-canary",
        }

    @property
    def canaries(self) -> tuple[str, ...]:
        """Strings only a reader of this side's records can have seen."""
        return (
            *self.area_names,
            *self.reporter.values(),
            f"Enterprise-{self.name}-Canary",
            f"Outlet-{self.name}-Canary",
            f"Component-{self.name}-Canary",
        )

    def visible_to(self, role: str) -> bool:
        codes = reach(role)
        if codes is None:
            return True
        return any(self.community.startswith(c) or c.startswith(self.community) for c in codes)


SIDES = (
    Side(
        "own",
        OWN_COMMUNITY,
        0.0,
        ("440600", "440604", "440604001", OWN_COMMUNITY),
        ("甲测试市", "禅城区", "祖庙街道", "西社区"),  # not 佛山市: pages print that
    ),
    Side("sibling", SIBLING_COMMUNITY, 0.02, (SIBLING_COMMUNITY,), ("东社区",)),
    Side(
        "foreign",
        FOREIGN_COMMUNITY,
        0.04,
        ("440700", "440605", "440605001", FOREIGN_COMMUNITY),
        ("乙测试市", "南海区", "桂城街道", "平洲社区"),
    ),
)
SIDE = {s.name: s for s in SIDES}


@dataclass
class World:
    sides: dict[str, Side]
    users: dict[str, tuple[int, str]]  # role -> (user id, username)
    tokens: dict[str, str]  # role -> device token
    spare_tokens: dict[tuple[str, str], int]  # (role, via) -> id of another token, to revoke
    outsider: tuple[int, int]  # (user id, assignment id) of a user on the foreign side
    outsider_token: int
    db: Any = None  # the test's session: removes the incidents the matrix reports
    # The patrol day (local date) and an inspector per side with a point in its grid 001 that
    # day (own: the inspector role's user).
    patrol: dict[str, Any] = field(default_factory=dict)


def build_world(session, tmp_path, make_user, token_for) -> World:
    from gridops.auth import service as auth

    areas = f.replace(f.area_rows(), "440600", name=SIDE["own"].area_names[0]) + EXTRA_AREAS
    run_import(session, "areas", f.write(tmp_path / "areas.gpkg", areas))
    grids = (
        f.strip_grid(f.COMMUNITY_W, OWN_COMMUNITY)
        + f.strip_grid(f.COMMUNITY_E, SIBLING_COMMUNITY)
        + f.strip_grid(FOREIGN_C, FOREIGN_COMMUNITY)
    )
    run_import(session, "grids", f.write(tmp_path / "grids.gpkg", grids))
    enterprises, outlets = [], []
    for n, side in enumerate(SIDES, start=1):
        enterprises.append(
            {
                "uscc": f.uscc(n, side.community[:6]),
                "name": f"Enterprise-{side.name}-Canary",
                "geometry": Point(*side.enterprise_point),
            }
        )
        outlets.append(
            {
                "code": f"OUTLET-{side.name.upper()}",
                "outlet_type": "service_centre",
                "name": f"Outlet-{side.name}-Canary",
                "geometry": Point(*side.outlet_point),
            }
        )
    run_import(session, "enterprises", f.write(tmp_path / "ent.gpkg", enterprises))
    run_import(session, "outlets", f.write(tmp_path / "out.gpkg", outlets))
    for side in SIDES:
        lon, lat = side.incident_point
        session.execute(
            text(
                "INSERT INTO incident (client_uuid, category_id, geom, reported_at, "
                "reporter_name, reporter_phone, device_id) VALUES (gen_random_uuid(), "
                "(SELECT min(id) FROM category), ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), "
                "now(), :reporter_name, :reporter_phone, :device_id)"
            ),
            {"lon": lon, "lat": lat, **side.reporter},
        )
    assert assign_grids(session, "incident") == len(SIDES)
    session.execute(
        text("INSERT INTO department (code, name, area_code) VALUES (:code, :name, :area_code)"),
        DEPARTMENT,
    )
    session.commit()

    sides = {}
    for side in SIDES:
        stored = session.execute(
            text("SELECT code, name FROM admin_area WHERE code = ANY(:codes)"),
            {"codes": list(side.areas)},
        ).all()
        assert dict(stored) == dict(zip(side.areas, side.area_names, strict=True)), stored
        ids = {
            "cities": [c for c in side.areas if len(c) == 6 and c.endswith("00")],
            "districts": [c for c in side.areas if len(c) == 6 and not c.endswith("00")],
            "towns": [c for c in side.areas if len(c) == 9],
            "communities": [c for c in side.areas if len(c) == 12],
            "grids": [f"{side.community}{i:03d}" for i in range(1, 5)],
        }
        for layer, table in (
            ("enterprises", "enterprise"),
            ("outlets", "service_outlet"),
            ("incidents", "incident"),
        ):
            rows = session.execute(
                text(
                    f"SELECT t.id FROM {table} t JOIN unit_grid g ON ST_Covers(g.geom, t.geom) "
                    "WHERE g.community_code = :c ORDER BY t.id"
                ),
                {"c": side.community},
            ).scalars()
            ids[layer] = [str(i) for i in rows]
            assert len(ids[layer]) == 1, (side.name, layer)
        assert set(ids) == set(LAYERS), "every layer needs records on every side"
        ids["photos"] = [str(add_photo(session, tmp_path / "photos", int(ids["incidents"][0])))]
        ids["components"] = [str(add_component(session, side))]
        sides[side.name] = Side(
            side.name, side.community, side.dx, side.areas, side.area_names, ids
        )

    users, tokens, spares = {}, {}, {}
    for role in (*ROLES, NO_ROLE):
        users[role] = make_user(None if role == NO_ROLE else role, **USER_SCOPES[role])
        tokens[role] = token_for(users[role][0], "matrix tablet")
        for via in VIAS:
            spares[role, via], _ = auth.create_token(session, users[role][0], f"spare {via}")
    outsider_id, _ = make_user("district_manager", area_code="440605")
    assignment = session.execute(
        text("SELECT id FROM role_assignment WHERE user_id = :u"), {"u": outsider_id}
    ).scalar_one()
    outsider_token, _ = auth.create_token(session, outsider_id, "outsider tablet", days=5)
    add_inspection_tasks(session, sides, users["inspector"][0])
    patrollers = {"own": users["inspector"][0]}
    for name in ("sibling", "foreign"):
        grids = [f"{SIDE[name].community}{i:03d}" for i in range(1, 5)]
        patrollers[name], _ = make_user("inspector", grid_codes=grids)
    patrol_day = None
    for name, user_id in patrollers.items():
        lon, lat = SIDE[name].incident_point  # in grid 001
        patrol_day = session.execute(
            text(
                "INSERT INTO patrol_point (user_id, recorded_at, geom, accuracy_m) "
                "VALUES (:u, now() - interval '1 minute', ST_SetSRID(ST_MakePoint(:lon, :lat), "
                "4326), 5) RETURNING (recorded_at AT TIME ZONE 'Asia/Shanghai')::date"
            ),
            {"u": user_id, "lon": lon, "lat": lat},
        ).scalar_one()
    session.commit()
    world = World(
        sides, users, tokens, spares, (outsider_id, assignment), outsider_token, db=session
    )
    world.patrol = {"day": str(patrol_day), "inspectors": patrollers}
    return world


def add_inspection_tasks(session, sides: dict[str, Side], inspector_id: int) -> None:
    """A plan and an open task (version 1, due yesterday) on each side's enterprise; the own
    side's task is the inspector role's user's."""
    for name, side in sides.items():
        [enterprise] = side.ids["enterprises"]
        plan = session.execute(
            text(
                "INSERT INTO inspection_plan (target_kind, target_id, frequency_days, "
                "next_due_on) VALUES ('enterprise', :e, 30, current_date) RETURNING id"
            ),
            {"e": int(enterprise)},
        ).scalar_one()
        task = session.execute(
            text(
                "INSERT INTO inspection_task (plan_id, due_on, assignee_id) "
                "VALUES (:p, current_date - 1, :a) RETURNING id"
            ),
            {"p": plan, "a": inspector_id if name == "own" else None},
        ).scalar_one()
        side.ids["inspection_plans"] = [str(plan)]
        side.ids["inspection_tasks"] = [str(task)]


def add_component(session, side: Side) -> int:
    """A manhole cover in the side's grid 001, maintained by the world's department."""
    lon, lat = side.point(113.0031, 23.0162)
    return session.execute(
        text(
            "INSERT INTO component (code, category_id, name, geom, maintainer_department_id) "
            "SELECT :code, c.id, :name, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), d.id "
            "FROM category c, department d WHERE c.code = 'C0101' AND d.code = :dept "
            "ORDER BY c.standard_ref DESC LIMIT 1 RETURNING id"
        ),
        {
            "code": f"{side.community[:6]}0101{SIDES.index(side) + 1:06d}",
            "name": f"Component-{side.name}-Canary",
            "lon": lon,
            "lat": lat,
            "dept": DEPARTMENT["code"],
        },
    ).scalar_one()


def add_photo(session, root, case_id: int) -> int:
    """A photo of the case, stored under ``root`` as a report with a photo leaves it."""
    from PIL import Image

    from gridops.incidents.case_photos import (
        PhotoStore,
        PhotoWrites,
        attach_photos,
        prepare_photos,
    )

    store = PhotoStore(root)
    upload = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(upload, "PNG")
    with PhotoWrites(store) as writes:
        prepared = prepare_photos([upload.getvalue()], store.limits)
        [photo_id] = attach_photos(session, writes, case_id, prepared)
        session.commit()
    return photo_id


@pytest.fixture
def world(app, session, tmp_path, make_user, token_for, monkeypatch) -> World:
    # Nine users and their logins: cheap argon2 parameters keep the matrix quick (hashing is
    # tested on its own; here only who may do what).
    from argon2 import PasswordHasher

    from gridops.auth import passwords

    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    app.config["PHOTO_DIR"] = str(tmp_path / "photos")  # where build_world stores them
    return build_world(session, tmp_path, make_user, token_for)


# -- calling the app as someone ------------------------------------------------------------

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client) -> str:
    """The CSRF token of the client's session, as the login page hands it out."""
    page = client.get("/login")
    assert page.status_code == 200
    match = CSRF_FIELD.search(page.get_data(as_text=True))
    assert match, "the login page has no CSRF token"
    return match.group(1)


class Caller:
    """A test client acting as one role's user, through a device token or a browser session."""

    def __init__(self, app: Flask, world: World, role: str, via: str) -> None:
        self.role, self.via = role, via
        self.client = app.test_client()
        self.headers: dict[str, str] = {}
        self.csrf: str | None = None
        if role == ANONYMOUS:
            return
        if via == "token":
            self.headers["Authorization"] = f"Bearer {world.tokens[role]}"
            return
        response = self.client.post(
            "/login",
            json={"username": world.users[role][1], "password": TEST_PASSWORD},
            headers={"X-CSRFToken": csrf_token(self.client)},
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        self.csrf = csrf_token(self.client)  # login starts a new session, with a new token

    def __call__(self, method: str, url: str, body: Any = None, headers: Any = None):
        headers = {**self.headers, **(headers or {})}
        if method == "GET":
            return self.client.get(url, headers=headers)
        if self.csrf:
            headers["X-CSRFToken"] = self.csrf
        return self.client.open(
            url, method=method, json={} if body is None else body, headers=headers
        )


def problem_type(response) -> str | None:
    if response.mimetype != "application/problem+json":
        return None
    return response.get_json(force=True).get("type")


def refusal(response) -> str | None:
    """How authorize() refused the request, if it did."""
    kind = problem_type(response)
    if response.status_code == 401 and kind == "/problems/unauthorized":
        return "401 unauthorized"
    if response.status_code == 403:
        return f"403 {kind}"
    if response.status_code == 400 and "CSRF" in response.get_data(as_text=True):
        return "400 CSRF"
    return None


def body_text(response) -> str:
    raw = response.get_data().decode("utf-8", "replace")  # photos are bytes
    if response.is_json:  # application/json, geo+json and problem+json
        try:
            return json.dumps(json.loads(raw), ensure_ascii=False)
        except ValueError:
            return raw
    return raw


# -- the matrix ----------------------------------------------------------------------------


@dataclass
class Probe:
    """One request of the matrix and what the answer must be."""

    route: Route
    side: str  # own | sibling | foreign | - (no record in the URL)
    url: str
    expect: Any  # callable(response) -> list of problems
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Matrix:
    world: World
    role: str
    via: str
    problems: list[str] = field(default_factory=list)
    probed: set[tuple[Route, str]] = field(default_factory=set)  # (route, side)
    count: int = 0

    # -- expectations ----------------------------------------------------------------------

    def visible(self, side: str) -> bool:
        return self.world.sides[side].visible_to(self.role)

    @staticmethod
    def status(expected: int, slug: str | None = None):
        def check(response) -> list[str]:
            got = response.status_code
            if got != expected:
                return [f"expected {expected}, got {got} {body_text(response)[:160]}"]
            if slug and problem_type(response) != f"/problems/{slug}":
                return [f"expected a {slug} problem, got {problem_type(response)}"]
            return []

        return check

    @staticmethod
    def not_refused(response) -> list[str]:
        refused = refusal(response)
        return [f"expected not refused, got {refused}"] if refused else []

    def found_or_not(self, side: str, feature_id: str, layer: str | None):
        """200 with the very record inside the jurisdiction, 404 (not 403) outside it."""
        if not self.visible(side):
            return self.status(404, "not-found")

        def check(response) -> list[str]:
            problems = self.status(200)(response)
            if problems:
                return problems
            body = response.get_json(force=True)
            if str(body.get("id")) != feature_id:
                return [f"asked for {feature_id}, got feature {body.get('id')}"]
            if layer:
                return self.feature_problems(layer, body)
            return []

        return check

    def feature_collection(self, layer: str):
        """200 with every record in the jurisdiction and none outside it."""

        def check(response) -> list[str]:
            problems = self.status(200)(response)
            if problems:
                return problems
            body = response.get_json(force=True)
            if body.get("type") != "FeatureCollection":
                return [f"not a FeatureCollection: {str(body)[:100]}"]
            got = {str(ft["id"]) for ft in body["features"]}
            for name, side in self.world.sides.items():
                wanted = set(side.ids[layer])
                if side.visible_to(self.role) and not wanted <= got:
                    problems.append(f"{layer} of the {name} side missing: {wanted - got}")
                if not side.visible_to(self.role) and wanted & got:
                    problems.append(f"LEAK: {layer} of the {name} side listed: {wanted & got}")
            for feature in body["features"]:
                problems += self.feature_problems(layer, feature)
            return problems

        return check

    def feature_problems(self, layer: str, feature: dict[str, Any]) -> list[str]:
        """Incidents: planners get no reporter and no point; full readers get both."""
        if layer != "incidents":
            return []
        owners = [s for s in self.world.sides.values() if str(feature["id"]) in s.ids[layer]]
        if len(owners) != 1:
            return [f"incident {feature['id']} is not one of the world's"]
        side = owners[0]
        props = feature["properties"]
        lon, lat = side.incident_point
        problems = []
        if self.role in RESTRICTED_ROLES:
            shown = [k for k in PERSONAL if k in props]
            if shown or feature.get("geometry") is not None:
                problems.append(f"LEAK: planner sees {shown} / geometry {feature.get('geometry')}")
            if props.get("grid_code") != f"{side.community}001":
                problems.append(f"planner's incident has grid_code {props.get('grid_code')}")
            cell = props.get("h3_cell")
            if not cell or not h3.is_valid_cell(cell):
                problems.append(f"planner's incident has no H3 cell: {cell}")
            elif (
                h3.get_resolution(cell) > 9
                or h3.latlng_to_cell(lat, lon, h3.get_resolution(cell)) != cell
            ):
                problems.append(f"H3 cell {cell} is too fine or not the incident's")
        else:
            for key, value in side.reporter.items():
                if props.get(key) != value:
                    problems.append(f"{self.role} does not see {key} of own incident")
            coordinates = (feature.get("geometry") or {}).get("coordinates")
            if coordinates != pytest.approx([lon, lat]):
                problems.append(f"{self.role} gets incident point {coordinates}")
        return problems

    # -- what to send, per kind of route -----------------------------------------------------

    def probes(self, route: Route, kind: str, layer: str | None) -> Iterator[Probe]:
        if kind == "open311":  # public reads, a keyed POST: the same probes for everyone
            yield from self.open311_probes(route)
            return
        if self.role == ANONYMOUS:
            yield from self.anonymous_probes(route, kind, layer)
            return
        if route.permission is None:
            yield Probe(route, "-", route.rule, self.not_refused)
            return
        if not may(self.role, route.permission):
            for probe in self.record_probes(route, kind, layer):
                probe.expect = self.status(403, "forbidden")
                yield probe
            return
        yield from self.record_probes(route, kind, layer)

    def anonymous_probes(self, route: Route, kind: str, layer: str | None) -> Iterator[Probe]:
        if not route.safe:  # CSRF comes first for anything unsafe without a token
            expect = self.status(400)
        elif route.permission is None:
            expect = self.not_refused
        elif route.is_api:
            expect = self.status(401, "unauthorized")
        else:
            expect = self.redirect_to_login
        for probe in self.record_probes(route, kind, layer):
            probe.expect = expect
            yield probe

    @staticmethod
    def redirect_to_login(response) -> list[str]:
        location = response.headers.get("Location", "")
        if response.status_code != 302 or not location.split("?")[0].endswith("/login"):
            return [f"expected a redirect to /login, got {response.status_code} {location}"]
        return []

    def sides_ids(self, layer: str) -> Iterator[tuple[str, str]]:
        for name, side in self.world.sides.items():
            for feature_id in side.ids[layer]:
                yield name, feature_id

    def record_probes(self, route: Route, kind: str, layer: str | None) -> Iterator[Probe]:
        """The requests for a route, with the expectations of a role that has its verb."""
        world, rule = self.world, route.rule
        if kind == "layer" and not route.arguments:
            yield Probe(route, "-", f"{rule}?limit=1000", self.feature_collection(layer))
        elif kind == "layer":
            [arg] = route.arguments
            for side, fid in self.sides_ids(layer):
                url = rule.replace(f"<{arg}>", fid)
                yield Probe(route, side, url, self.found_or_not(side, fid, layer))
        elif kind == "areas" and not route.arguments:
            for level in LISTED_LEVELS:
                check = self.feature_collection(LEVEL_LAYER[level])
                yield Probe(route, "-", f"{rule}?level={level}&limit=1000", check)
        elif kind == "areas":
            for name, side in world.sides.items():
                for code in side.areas:
                    url = rule.replace("<code>", code)
                    yield Probe(route, name, url, self.area_check(name, code))
        elif kind == "area_tree":
            yield Probe(route, "-", rule, self.tree_check)
        elif kind == "locate":
            for name, side in world.sides.items():
                lon, lat = side.probe_point
                yield Probe(route, name, f"{rule}?lon={lon}&lat={lat}", self.locate_check(name))
        elif kind == "collections":
            yield Probe(route, "-", rule, self.collections_check)
        elif kind == "collection":
            yield from self.collection_probes(route)
        elif kind == "tokens":
            yield from self.token_probes(route)
        elif kind == "self":
            yield Probe(route, "-", rule, self.self_check(route))
        elif kind == "admin":
            outsider, assignment = world.outsider
            url = rule.replace("<int:user_id>", str(outsider))
            url = url.replace("<int:assignment_id>", str(assignment))
            # Calendar and catalogue edits get an empty body: 422/404, nothing changes.
            url = url.replace("<category_code>", "E0502").replace("<day>", "2027-10-01")
            url = url.replace("<int:year>", "2027")
            yield Probe(route, "-", url, self.status(200) if route.safe else self.not_refused)
        elif kind == "public":
            yield Probe(route, "-", rule, self.not_refused)
        elif kind == "catalogue":
            yield Probe(route, "-", rule, self.catalogue_check)
        elif kind == "kpis":
            url = f"{rule}?period=year&start=2000-01-01&end=2099-12-31&by=community"
            yield Probe(route, "-", url, self.kpi_check)
        elif kind == "intake":
            for name, side in world.sides.items():
                lon, lat = side.probe_point
                body = {
                    "client_uuid": str(uuid.uuid4()),  # a new report on every probe
                    "category": "E0502",
                    "lon": lon,
                    "lat": lat,
                    "captured_at": datetime.now(UTC).isoformat(),
                    "description": "matrix probe",
                }
                yield Probe(route, name, rule, self.intake_check(name), body=body)
        elif kind == "case":
            for side, fid in self.sides_ids("incidents"):
                url = rule.replace("<int:case_id>", fid)
                yield Probe(route, side, url, self.case_check(side, fid))
        elif kind == "transitions":
            # A stale If-Match changes nothing: 412 shows the request got past the verb and
            # the scope (which come first), 404 outside the jurisdiction.
            body = {"action": "verify", "note": "matrix probe"}
            for side, fid in self.sides_ids("incidents"):
                url = rule.replace("<int:case_id>", fid)
                expect = self.stale_check if self.visible(side) else self.status(404, "not-found")
                yield Probe(route, side, url, expect, body=body, headers={"If-Match": '"999"'})
            [own] = world.sides["own"].ids["incidents"]
            url = rule.replace("<int:case_id>", own)
            yield Probe(route, "own", url, self.status(428, "precondition-required"), body=body)
        elif kind == "case_photo":
            for side, fid in self.sides_ids("incidents"):
                [photo] = world.sides[side].ids["photos"]
                url = rule.replace("<int:case_id>", fid).replace("<int:photo_id>", photo)
                for query in ("", "?size=thumb"):
                    yield Probe(route, side, url + query, self.photo_check(side))
            # A photo asked for through another case is not found, whoever asks.
            [own] = world.sides["own"].ids["incidents"]
            [foreign_photo] = world.sides["foreign"].ids["photos"]
            url = rule.replace("<int:case_id>", own).replace("<int:photo_id>", foreign_photo)
            yield Probe(route, "own", url, self.status(404, "not-found"))
        elif kind == "case_list":
            yield Probe(route, "-", f"{rule}?limit=1000", self.feature_collection("incidents"))
        elif kind == "inspection_tasks":
            yield Probe(route, "-", f"{rule}?assignee=any", self.inspection_check(kind, "any"))
            yield Probe(route, "own", f"{rule}?assignee=me", self.inspection_check(kind, "me"))
        elif kind == "inspection_plans":
            yield Probe(route, "-", f"{rule}?limit=1000", self.inspection_check(kind, "any"))
        elif kind == "inspection_result":
            # Like transitions: a stale If-Match shows the verb and the scope were passed.
            body = {"result": "ok", "note": "matrix probe"}
            for side, fid in self.sides_ids("inspection_tasks"):
                url = rule.replace("<int:task_id>", fid)
                expect = self.stale_check if self.visible(side) else self.status(404, "not-found")
                yield Probe(route, side, url, expect, body=body, headers={"If-Match": '"999"'})
            [own] = world.sides["own"].ids["inspection_tasks"]
            url = rule.replace("<int:task_id>", own)
            yield Probe(route, "own", url, self.status(428, "precondition-required"), body=body)
        elif kind == "patrol_points":
            # Points are stored wherever they lie (GPS drifts), and always as the caller's.
            for name, side in world.sides.items():
                lon, lat = side.probe_point
                when = datetime.now(UTC).isoformat()
                body = {"points": [{"t": when, "lon": lon, "lat": lat, "accuracy_m": 8}]}
                yield Probe(route, name, rule, self.patrol_upload_check, body=body)
            outsider, _ = world.outsider
            body = {"user_id": outsider, "points": []}
            yield Probe(route, "foreign", rule, self.status(422, "invalid-input"), body=body)
        elif kind == "patrol_day":
            url = f"{rule}?date={world.patrol['day']}"
            yield Probe(route, "-", url, self.patrol_day_check(None))
            for name, user_id in world.patrol["inspectors"].items():
                yield Probe(route, name, f"{url}&user={user_id}", self.patrol_day_check(name))
        elif kind in ("duplicates", "case_duplicates"):
            # The hint near each side's incident: that incident inside the jurisdiction (the
            # routes' verb keeps out the roles that see no points), nothing or 404 outside.
            for side, fid in self.sides_ids("incidents"):
                lon, lat = world.sides[side].incident_point
                category = world.db.execute(
                    text("SELECT c.code FROM incident i JOIN category c ON c.id = i.category_id "
                         "WHERE i.id = :id"),
                    {"id": int(fid)},
                ).scalar_one()  # fmt: skip
                if kind == "duplicates":
                    url = f"{rule}?category={category}&lon={lon}&lat={lat + 0.0001}"
                    wanted = [int(fid)] if self.visible(side) else []
                    yield Probe(route, side, url, self.hint_check(wanted))
                elif self.visible(side):
                    url = rule.replace("<int:case_id>", fid)
                    yield Probe(route, side, url, self.hint_check([], case_id=int(fid)))
                else:
                    url = rule.replace("<int:case_id>", fid)
                    yield Probe(route, side, url, self.status(404, "not-found"))
        elif kind in DISPATCH_KINDS:
            yield from self.dispatch_probes(route, kind)
        elif kind in BOARD_KINDS:
            yield from self.board_probes(route, kind)
        elif kind in ("inbox", "inbox_read"):
            yield from self.inbox_probes(route, kind)
        elif kind in HOTSPOT_KINDS:
            yield from self.hotspot_probes(route, kind)
        elif kind == "page":
            yield Probe(route, "-", rule, self.page_check)
        elif kind == "planner_page":
            yield Probe(route, "-", rule, self.planner_page_check)
        elif kind == "tiles":
            yield from self.tile_probes(route)
        else:  # pragma: no cover - classify() only gives the kinds above
            raise AssertionError(kind)

    def inbox_notifications(self) -> tuple[int | None, int]:
        """(the caller's notification, the outsider's), made on first use; the outsider's
        title carries a canary of the foreign side."""
        from gridops.notifications.service import notify

        db, ids = self.world.db, {}
        owners = [("theirs", self.world.outsider[0], "平洲社区 escalation")]
        if self.role in self.world.users:
            owners.append(("mine", self.world.users[self.role][0], "matrix notification"))
        for which, user_id, title in owners:
            notify(db, user_id, kind="escalation", title=title, dedupe_key="matrix")
            ids[which] = db.execute(
                text("SELECT id FROM notification WHERE user_id = :u AND dedupe_key = 'matrix'"),
                {"u": user_id},
            ).scalar_one()
        db.commit()
        return ids.get("mine"), ids["theirs"]

    def inbox_probes(self, route: Route, kind: str) -> Iterator[Probe]:
        """The inbox lists the caller's notification and not the outsider's; reading one's
        own works, another user's is not found (whoever asks, admins too)."""
        mine, theirs = self.inbox_notifications()
        if kind == "inbox_read":
            for side, notification_id in (("own", mine or theirs), ("foreign", theirs)):
                url = route.rule.replace("<int:notification_id>", str(notification_id))
                expect = self.status(200) if side == "own" else self.status(404, "not-found")
                yield Probe(route, side, url, expect)
        elif route.safe:

            def listed(response) -> list[str]:
                problems = self.status(200)(response)
                if problems:
                    return problems
                got = {n["id"] for n in response.get_json()["notifications"]}
                if mine not in got:
                    problems.append(f"own notification {mine} not listed")
                if theirs in got:
                    problems.append(f"LEAK: another user's notification {theirs} listed")
                return problems

            yield Probe(route, "-", route.rule, listed)
        else:
            yield Probe(route, "-", route.rule, self.status(200))

    # -- hotspots ----------------------------------------------------------------------------

    def planner_page_check(self, response) -> list[str]:
        problems = self.status(200)(response)
        if problems:
            return problems
        raw = response.get_data(as_text=True)

        def escaped(value: str) -> str:
            return json.dumps(value)[1:-1]

        own = self.world.sides["own"].area_names[-1]
        if own not in raw and escaped(own) not in raw:
            problems.append(f"the own side's community {own} is not on the page")
        for name, side in self.world.sides.items():
            hidden = () if side.visible_to(self.role) else side.canaries
            if self.role in RESTRICTED_ROLES:
                hidden = (*hidden, *side.reporter.values())
            problems += [f"LEAK: {c!r} of the {name} side" for c in hidden if escaped(c) in raw]
        return problems

    def page_check(self, response) -> list[str]:
        problems = self.status(200)(response)
        if not problems and response.mimetype != "text/html":
            problems.append(f"expected an HTML page, got {response.mimetype}")
        return problems

    def tile_probes(self, route: Route) -> Iterator[Probe]:
        z, x, y = WORLD_TILE
        shared = ("grids", "enterprises", "outlets")
        layers = shared if "layer" in route.arguments else ("incidents",)
        for layer in layers:
            url = route.rule.replace("<layer>", layer).replace("<int:z>", str(z))
            url = url.replace("<int:x>", str(x)).replace("<int:y>", str(y))
            yield Probe(route, "-", url, self.tile_check(layer))

    def tile_check(self, layer: str):
        """200 with the code of every visible side's record, 204 when none is; no others."""

        def check(response) -> list[str]:
            seen = [s for s in self.world.sides.values() if s.visible_to(self.role)]
            problems = self.status(200 if seen else 204)(response)
            if problems:
                return problems
            data = response.get_data()
            for name, side in self.world.sides.items():
                marker = TILE_MARKERS[layer](side).encode()
                if side.visible_to(self.role) and marker not in data:
                    problems.append(f"{layer} tile lacks the {name} side's {marker!r}")
                if not side.visible_to(self.role) and marker in data:
                    problems.append(f"LEAK: {layer} tile has the {name} side's {marker!r}")
            return problems

        return check

    def hotspot_runs(self) -> dict[str, int]:
        """A stored run (one hot cell, at the side's incident) on each side's community, made
        once per world."""
        db, runs = self.world.db, {}
        for name, side in self.world.sides.items():
            run = db.execute(
                text("SELECT id FROM hotspot_run WHERE filters ->> 'matrix' = :n"), {"n": name}
            ).scalar()
            if run is None:
                run = db.execute(
                    text(
                        "INSERT INTO hotspot_run (kind, resolution, k, period_start, period_end, "
                        "filters, area_code, n_points, n_cells) VALUES ('gistar', 9, 1, "
                        "now() - interval '1 day', now() + interval '1 day', "
                        "jsonb_build_object('matrix', CAST(:n AS text)), :area, 1, 1) "
                        "RETURNING id"
                    ),
                    {"n": name, "area": side.community},
                ).scalar_one()
                lon, lat = side.incident_point
                db.execute(
                    text(
                        "INSERT INTO hotspot_cell (run_id, cell, count, z, p, bin) "
                        "VALUES (:r, :c, 1, 3.5, 0.0005, 3)"
                    ),
                    {"r": run, "c": h3.str_to_int(h3.latlng_to_cell(lat, lon, 9))},
                )
            runs[name] = run
        db.commit()
        return runs

    def hotspot_probes(self, route: Route, kind: str) -> Iterator[Probe]:
        """Runs of the jurisdiction are listed and read (200), others are 404 and never
        listed; a new run of a community in the jurisdiction is made (201, and removed
        again), one outside it is refused as an unknown area (422). Repeated spots: each
        visible side's incident (alone: min_count=1), with its case only for full readers."""
        runs, rule = self.hotspot_runs(), route.rule
        if kind == "hotspot_runs" and route.safe:
            yield Probe(route, "-", f"{rule}?limit=1000", self.runs_listed(runs))
        elif kind == "hotspot_runs":
            today = datetime.now(UTC).date()
            for name, side in self.world.sides.items():
                body = {
                    "start": str(today - timedelta(days=2)),
                    "end": str(today + timedelta(days=2)),
                    "area": side.community,
                    "k": 1,
                }
                expect = (
                    self.run_made(side.community)
                    if self.visible(name)
                    else self.status(422, "invalid-input")
                )
                yield Probe(route, name, rule, expect, body=body)
        elif kind == "hotspot_run":
            for name, run in runs.items():
                url = rule.replace("<int:run_id>", str(run))
                if route.name == "run_compare":
                    url += f"?with={run}"
                expect = self.run_read(route.name, run) if self.visible(name) else None
                yield Probe(route, name, url, expect or self.status(404, "not-found"))
        else:
            url = f"{rule}?days=3650&min_count=1&limit=1000"
            yield Probe(route, "-", url, self.repeated_check)

    def runs_listed(self, runs: dict[str, int]):
        def check(response) -> list[str]:
            problems = self.status(200)(response)
            if problems:
                return problems
            got = {r["id"] for r in response.get_json()["runs"]}
            for name, run in runs.items():
                if self.visible(name) and run not in got:
                    problems.append(f"the {name} side's run {run} is not listed")
                if not self.visible(name) and run in got:
                    problems.append(f"LEAK: the {name} side's run {run} is listed")
            return problems

        return check

    def run_read(self, view: str, run: int):
        def check(response) -> list[str]:
            problems = self.status(200)(response)
            if problems:
                return problems
            body = response.get_json(force=True)
            if view == "run_grids":
                got = body.get("run")
            else:
                got = body.get("a" if view == "run_compare" else "run", {}).get("id")
            if got != run:
                problems.append(f"asked for run {run}, got {got}")
            if view == "run_detail" and len(body.get("features", [])) != 1:
                problems.append(f"run {run} has {len(body.get('features', []))} cells, not 1")
            return problems

        return check

    def run_made(self, community: str):
        def check(response) -> list[str]:
            problems = self.status(201)(response)
            if problems:
                return problems
            made = response.get_json()
            if made["area"]["code"] != community or made["n_points"] != 1:
                problems.append(f"run made as {made}")
            self.world.db.execute(
                text("DELETE FROM hotspot_run WHERE id = :id"), {"id": made["id"]}
            )
            self.world.db.commit()
            return problems

        return check

    def repeated_check(self, response) -> list[str]:
        problems = self.status(200)(response)
        if problems:
            return problems
        spots = response.get_json()["spots"]
        cells = {s["h3_cell"] for s in spots}
        cases = {i for s in spots for i in s.get("case_ids", [])}
        for name, fid in self.sides_ids("incidents"):
            lon, lat = self.world.sides[name].incident_point
            cell = h3.latlng_to_cell(lat, lon, 9)
            if not self.visible(name):
                if cell in cells or int(fid) in cases:
                    problems.append(f"LEAK: the {name} side's incident is a repeated spot")
            elif cell not in cells:
                problems.append(f"the {name} side's incident is not a spot")
            elif self.role not in RESTRICTED_ROLES and int(fid) not in cases:
                problems.append(f"the {name} side's spot lacks its case {fid}")
        if self.role in RESTRICTED_ROLES and (cases or any(s["exact"] for s in spots)):
            problems.append("LEAK: a restricted reader gets cases or exact points")
        return problems

    def hint_check(self, wanted: list[int], case_id: int | None = None):
        def check(response) -> list[str]:
            problems = self.status(200)(response)
            if problems:
                return problems
            body = response.get_json()
            got = [d["id"] for d in body["possible_duplicates"]]
            if got != wanted:
                problems.append(f"duplicates {got}, expected {wanted}")
            if case_id is not None and body.get("case_id") != case_id:
                problems.append(f"hint for case {body.get('case_id')}, asked for {case_id}")
            return problems

        return check

    def patrol_upload_check(self, response) -> list[str]:
        problems = self.status(200)(response)
        if not problems:
            got = response.get_json()
            if got["received"] != 1 or got["stored"] + got["duplicates"] != 1:
                problems.append(f"upload answered {got}")
        return problems

    def patrol_day_check(self, only: str | None):
        """The inspectors of the jurisdiction with their point in grid 001, no other; one
        asked for by id outside it is not found."""
        if only is not None and not self.visible(only):
            return self.status(404, "not-found")
        inspectors = self.world.patrol["inspectors"]

        def check(response) -> list[str]:
            problems = self.status(200)(response)
            if problems:
                return problems
            listed = {f["id"]: f for f in response.get_json()["features"]}
            for name, user_id in inspectors.items():
                wanted = self.visible(name) and only in (None, name)
                if not wanted:
                    if user_id in listed:
                        problems.append(f"LEAK: the {name} inspector's track listed")
                    continue
                props = (listed.get(user_id) or {}).get("properties", {})
                if f"{self.world.sides[name].community}001" not in props.get("grids_visited", []):
                    problems.append(f"the {name} inspector's patrol missing: {props}")
            return problems

        return check

    def inspection_check(self, kind: str, assignee: str):
        """Tasks: those seen in full (restricted roles: none) or, with assignee=me, the
        caller's own (the inspector's, on the own side). Plans: those of the jurisdiction."""
        key = "tasks" if kind == "inspection_tasks" else "plans"

        def check(response) -> list[str]:
            problems = self.status(200)(response)
            if problems:
                return problems
            got = {str(item["id"]) for item in response.get_json()[key]}
            for name, side in self.world.sides.items():
                if assignee == "me":
                    wanted = name == "own" and self.role == "inspector"
                else:
                    wanted = self.visible(name) and not (
                        key == "tasks" and self.role in RESTRICTED_ROLES
                    )
                ids = set(side.ids[kind])
                if wanted and not ids <= got:
                    problems.append(f"{key} of the {name} side missing: {ids - got}")
                if not wanted and ids & got:
                    problems.append(f"LEAK: {key} of the {name} side listed: {ids & got}")
            return problems

        return check

    def intake_check(self, side: str):
        """A report inside the jurisdiction is stored (201) in the grid of its point, one
        outside it is refused as such (422). Stored reports are removed again, so that the
        world stays as the other probes (and the next caller) expect it."""
        if not self.visible(side):
            return self.status(422, "outside-jurisdiction")
        community = self.world.sides[side].community

        def check(response) -> list[str]:
            problems = self.status(201)(response)
            if problems:
                return problems
            made = response.get_json()
            if made.get("grid_code") != f"{community}004" or made.get("status") != "reported":
                problems.append(f"report stored as {made}")
            remove_probe_report(self.world.db, made["id"])
            return problems

        return check

    def case_check(self, side: str, case_id: str):
        """Like incidents/<id> (404 outside, restricted roles without reporter or point),
        with the case's state and an ETag of its version."""
        found = self.found_or_not(side, case_id, "incidents")

        def check(response) -> list[str]:
            problems = found(response)
            if response.status_code != 200:
                if "ETag" in response.headers:
                    problems.append(f"ETag {response.headers['ETag']} on a {response.status_code}")
                return problems
            body = response.get_json()
            if (body.get("status"), body.get("version")) != ("reported", 1):
                problems.append(f"case in state {body.get('status')} v{body.get('version')}")
            if response.headers.get("ETag") != f'"{body.get("version")}"':
                problems.append(f"ETag {response.headers.get('ETag')} for v{body.get('version')}")
            return problems

        return check

    def photo_check(self, side: str):
        """The JPEG for those who see the case in full; 404 for everyone else (restricted
        roles see no photos: the department handler's case is not routed to them here)."""
        if not self.visible(side) or self.role in RESTRICTED_ROLES:
            return self.status(404, "not-found")

        def check(response) -> list[str]:
            problems = self.status(200)(response)
            if problems:
                return problems
            expected = {
                "Content-Type": "image/jpeg",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "private, max-age=86400",
            }
            problems = [
                f"{header}: {response.headers.get(header)}, expected {value}"
                for header, value in expected.items()
                if response.headers.get(header) != value
            ]
            if response.get_data()[:3] != b"\xff\xd8\xff":
                problems.append("not a JPEG")
            return problems

        return check

    def catalogue_check(self, response) -> list[str]:
        """The category tree: street order (E05) holds the unlicensed vendor (E0502)."""
        problems = self.status(200)(response)
        if problems:
            return problems
        tree = {major["code"]: major for major in response.get_json()["categories"]}
        minors = {m["code"] for m in tree.get("E05", {}).get("minors", [])}
        if "E0502" not in minors:
            problems.append(f"E0502 not under E05: {sorted(minors)}")
        if not response.headers.get("ETag"):
            problems.append("no ETag on the category list")
        return problems

    def kpi_check(self, response) -> list[str]:
        """KPIs count the cases of the jurisdiction: each visible side's community, no other."""
        problems = self.status(200)(response)
        if problems:
            return problems
        got = {r["group"] for r in response.get_json()["rows"] if r["reported"]}
        wanted = {s.community for s in self.world.sides.values() if s.visible_to(self.role)}
        if got != wanted:
            problems.append(f"KPIs of communities {sorted(got)}, expected {sorted(wanted)}")
        return problems

    # -- dispatch and duties -----------------------------------------------------------------

    def dispatcher(self) -> bool:
        return self.role in ("community_manager", "town_manager", "district_manager", "admin")

    def absence_ids(self) -> dict[str, int]:
        """An absence of the own side's inspector and one of the planner (nobody's inspector:
        only admins manage it), made once per matrix run for the DELETE probes (and listed by
        the GET)."""
        if not hasattr(self, "_absences"):
            db, made = self.world.db, {}
            for side, user_id in (
                ("own", self.world.users["inspector"][0]),
                ("other", self.world.users["planner"][0]),
            ):
                made[side] = db.execute(
                    text(
                        "INSERT INTO staff_absence (user_id, starts_on, ends_on) "
                        "VALUES (:u, '2099-01-01', '2099-01-02') RETURNING id"
                    ),
                    {"u": user_id},
                ).scalar_one()
            db.commit()
            self._absences = made
        return self._absences

    def dispatch_probes(self, route: Route, kind: str) -> Iterator[Probe]:
        """Dispatch routes: 403 for write:cases holders without a manager's role; cases of
        the jurisdiction are listed / reach the version guard (412), others are 404. Duties:
        grids and inspectors of the actor's area (admins: all) are found, others 404; the
        outsider and the planner are nobody's inspectors, but admins record anyone's absence."""
        world, rule = self.world, route.rule
        not_dispatcher = None if self.dispatcher() else self.status(403, "forbidden")
        inspector, outsider = world.users["inspector"][0], world.outsider[0]
        if kind == "dispatch_queue":
            yield Probe(route, "-", f"{rule}?limit=500", not_dispatcher or self.queue_check)
        elif kind == "dispatch_workload":
            yield Probe(route, "-", rule, not_dispatcher or self.workload_check)
        elif kind == "dispatch_assign":
            body = {"department": DEPARTMENT["code"], "note": "matrix probe"}
            for side, fid in self.sides_ids("incidents"):
                url = rule.replace("<int:case_id>", fid)
                expect = self.stale_check if self.visible(side) else self.status(404, "not-found")
                headers = {"If-Match": '"999"'}
                yield Probe(route, side, url, not_dispatcher or expect, body=body, headers=headers)
            [own] = world.sides["own"].ids["incidents"]
            url = rule.replace("<int:case_id>", own)
            expect = not_dispatcher or self.status(428, "precondition-required")
            yield Probe(route, "own", url, expect, body=body)
        elif kind == "dispatch_bulk":
            for side, fid in self.sides_ids("incidents"):
                body = {"items": [{"id": int(fid), "version": 999}], "department": "D1"}
                status = 412 if self.visible(side) else 404
                check = not_dispatcher or self.bulk_check(int(fid), status)
                yield Probe(route, side, rule, check, body=body)
        elif kind == "duties_grid":
            # A PUT naming nobody valid: 422 inside the area (nothing changes), 404 outside.
            body = {"primary": None, "stand_ins": [0]}
            for side in world.sides:
                grid = f"{world.sides[side].community}001"
                url = rule.replace("<grid_code>", grid)
                ok = self.status(200) if route.safe else self.status(422, "invalid-input")
                expect = ok if self.visible(side) else self.status(404, "not-found")
                yield Probe(route, side, url, expect, body=None if route.safe else body)
        elif kind == "duties_absences" and route.safe:
            yield Probe(route, "-", rule, self.absences_check)
        elif kind == "duties_absences":
            day = "2098-06-01" if self.via == "token" else "2098-06-02"
            for side, user_id in (("own", inspector), ("other", world.users["planner"][0])):
                body = {"user": user_id, "starts_on": day, "ends_on": day}
                if side == "own" or self.role == "admin":
                    expect = self.absence_made_check
                else:
                    expect = self.status(422, "invalid-input")
                yield Probe(route, side, rule, expect, body=body)
        elif kind == "duties_absence":
            for side, absence in self.absence_ids().items():
                url = rule.replace("<int:absence_id>", str(absence))
                found = side == "own" or self.role == "admin"
                yield Probe(route, side, url, self.status(204 if found else 404))
        elif kind == "duties_profile":
            body = None if route.safe else {"tasks_per_day": 12}
            for side, user_id in (("own", inspector), ("foreign", outsider)):
                url = rule.replace("<int:user_id>", str(user_id))
                expect = self.status(200) if side == "own" else self.status(404, "not-found")
                yield Probe(route, side, url, expect, body=body)
        elif kind == "components":
            yield Probe(route, "-", f"{rule}?limit=1000", self.feature_collection("components"))

    def board_probes(self, route: Route, kind: str) -> Iterator[Probe]:
        """The board: dispatchers get the page, the open cases of their area (listed) and any
        case of it (found); foreign cases are absent / 404; other holders of write:cases 403."""
        rule = route.rule
        not_dispatcher = None if self.dispatcher() else self.status(403)
        if kind == "board_page":
            yield Probe(route, "-", rule, not_dispatcher or self.page_check)
        elif kind == "board_cases":
            yield Probe(route, "-", f"{rule}?limit=1000", not_dispatcher or self.board_list_check)
        elif kind == "board_case":
            for side, fid in self.sides_ids("incidents"):
                url = rule.replace("<int:case_id>", fid)
                expect = not_dispatcher or self.found_or_not(side, fid, None)
                yield Probe(route, side, url, expect)

    def board_list_check(self, response) -> list[str]:
        """The world's reports are open: each is on the board of the dispatchers whose area
        holds it, and on no other."""
        problems = self.status(200)(response)
        if problems:
            return problems
        got = {str(feature["id"]) for feature in response.get_json(force=True)["features"]}
        for name, fid in self.sides_ids("incidents"):
            if self.visible(name) and fid not in got:
                problems.append(f"the {name} side's case {fid} is not on the board")
            if not self.visible(name) and fid in got:
                problems.append(f"LEAK: the {name} side's case {fid} is on the board")
        return problems

    def queue_check(self, response) -> list[str]:
        """The world's reports wait on nobody (no inspector is on duty): each is in the queue
        of the dispatchers whose area holds it, and in no other."""
        problems = self.status(200)(response)
        if problems:
            return problems
        got = {str(item["id"]) for item in response.get_json()["items"]}
        for name, fid in self.sides_ids("incidents"):
            if self.visible(name) and fid not in got:
                problems.append(f"the {name} side's case {fid} is not in the queue")
            if not self.visible(name) and fid in got:
                problems.append(f"LEAK: the {name} side's case {fid} is in the queue")
        return problems

    def workload_check(self, response) -> list[str]:
        problems = self.status(200)(response)
        if problems:
            return problems
        body = response.get_json()
        people = {p["id"] for p in body["people"]}
        if self.world.users["inspector"][0] not in people:
            problems.append("the own side's inspector has no workload row")
        if self.world.outsider[0] in people:
            problems.append("LEAK: the outsider has a workload row")
        if DEPARTMENT["code"] not in {d["code"] for d in body["departments"]}:
            problems.append(f"department {DEPARTMENT['code']} has no workload row")
        return problems

    def bulk_check(self, case_id: int, status: int):
        def check(response) -> list[str]:
            problems = self.status(status, "bulk-rejected")(response)
            if not problems:
                failures = [(f["id"], f["status"]) for f in response.get_json()["failures"]]
                if failures != [(case_id, status)]:
                    problems.append(f"failures {failures}, expected {[(case_id, status)]}")
            return problems

        return check

    def absences_check(self, response) -> list[str]:
        problems = self.status(200)(response)
        if problems:
            return problems
        got = {a["id"] for a in response.get_json()["absences"]}
        for side, absence in self.absence_ids().items():
            wanted = side == "own" or self.role == "admin"
            if wanted and absence not in got:
                problems.append(f"the {side} absence {absence} is not listed")
            if not wanted and absence in got:
                problems.append(f"LEAK: the {side} absence {absence} is listed")
        return problems

    def absence_made_check(self, response) -> list[str]:
        """201; the absence is removed again, so the other via can make the same one."""
        problems = self.status(201)(response)
        if not problems:
            db = self.world.db
            made = response.get_json()["id"]
            db.execute(text("DELETE FROM staff_absence WHERE id = :id"), {"id": made})
            db.commit()
        return problems

    # -- Open311 ----------------------------------------------------------------------------

    def open311_probes(self, route: Route) -> Iterator[Probe]:
        """Reads are public: every side's case, its point exact only for a key (never the
        cookie) that sees it in full, no reporter anywhere. Filing needs an api_key whose
        user may write:incidents, at a point in their jurisdiction (else 400, nothing kept)."""
        for fmt in ("xml", "json"):
            rule = route.rule.replace("<fmt>", fmt)
            if route.name == "request_create":
                for name, side in self.world.sides.items():
                    lon, lat = side.probe_point
                    body = {
                        "service_code": "E0502",
                        "lat": lat,
                        "long": lon,
                        "description": "matrix probe",
                        "first_name": side.reporter["reporter_name"],
                        "phone": side.reporter["reporter_phone"],
                        "device_id": side.reporter["device_id"],
                    }
                    check = self.open311_create_check(name, fmt)
                    yield Probe(route, name, rule, check, body=body)
            elif route.name == "requests":
                yield Probe(route, "-", rule, self.open311_requests_check(fmt, None))
            elif route.name == "request_detail":
                for name, fid in self.sides_ids("incidents"):
                    url = rule.replace("<service_request_id>", fid)
                    yield Probe(route, name, url, self.open311_requests_check(fmt, fid))
            elif route.name == "token":
                for name, fid in self.sides_ids("incidents"):
                    token = self.world.db.execute(
                        text("SELECT client_uuid::text FROM incident WHERE id = :id"),
                        {"id": int(fid)},
                    ).scalar_one()
                    url = rule.replace("<token>", token)
                    yield Probe(route, name, url, self.open311_token_check(fmt, fid))
            else:  # discovery, the service list and a service definition
                url = rule.replace("<service_code>", "E0502")
                yield Probe(route, "-", url, self.open311_status(fmt, 200))

    @staticmethod
    def open311_items(response, fmt: str) -> list[dict[str, Any]]:
        if fmt == "json":
            return response.get_json()
        root = ET.fromstring(response.get_data())
        return [{field.tag: field.text for field in item} for item in root]

    def open311_status(self, fmt: str, expected: int):
        content_type = {"xml": "text/xml", "json": "application/json"}[fmt]

        def check(response) -> list[str]:
            problems = self.status(expected)(response)
            if response.headers.get("Content-Type") != f"{content_type}; charset=utf-8":
                problems.append(f"Content-Type {response.headers.get('Content-Type')}")
            if not problems and expected >= 400:
                codes = {str(e["code"]) for e in self.open311_items(response, fmt)}
                if codes != {str(expected)}:
                    problems.append(f"spec error codes {codes} on a {expected}")
            return problems

        return check

    def open311_full_view(self, side: str) -> bool:
        return self.via == "token" and self.role not in RESTRICTED_ROLES and self.visible(side)

    def open311_requests_check(self, fmt: str, only: str | None):
        def check(response) -> list[str]:
            problems = self.open311_status(fmt, 200)(response)
            if problems:
                return problems
            listed = {str(r["service_request_id"]): r for r in self.open311_items(response, fmt)}
            for name, fid in self.sides_ids("incidents"):
                if only not in (None, fid):
                    continue
                if fid not in listed:
                    problems.append(f"public request {fid} of the {name} side missing")
                    continue
                lon, lat = self.world.sides[name].incident_point
                got = (float(listed[fid]["long"]), float(listed[fid]["lat"]))
                if self.open311_full_view(name):
                    if got != pytest.approx((lon, lat), abs=1e-9):
                        problems.append(f"{name} request at {got}, not exactly {(lon, lat)}")
                elif got != (round(lon, 3), round(lat, 3)):
                    problems.append(f"LEAK: {name} request at {got}, not rounded to 0.001°")
            return problems

        return check

    def open311_token_check(self, fmt: str, fid: str):
        def check(response) -> list[str]:
            problems = self.open311_status(fmt, 200)(response)
            if not problems:
                [found] = self.open311_items(response, fmt)
                if str(found["service_request_id"]) != fid:
                    problems.append(f"token resolved to {found['service_request_id']}, not {fid}")
            return problems

        return check

    def open311_create_check(self, side: str, fmt: str):
        """Only an api_key files (a cookie is no key): 403 without one or without
        write:incidents, 400 outside the jurisdiction, else one public case in the point's
        grid, with its reporter kept (and removed again, as intake_check does)."""
        if self.via != "token" or not may(self.role, "write:incidents"):
            return self.open311_status(fmt, 403)
        if not self.visible(side):
            return self.open311_status(fmt, 400)
        community = self.world.sides[side].community

        def check(response) -> list[str]:
            problems = self.open311_status(fmt, 201)(response)
            if problems:
                return problems
            [made] = self.open311_items(response, fmt)
            made_id, db = int(made["service_request_id"]), self.world.db
            row = db.execute(
                text(
                    "SELECT i.source, i.reporter_name, g.code FROM incident i JOIN unit_grid g "
                    "ON g.id = i.grid_id WHERE i.id = :id"
                ),
                {"id": made_id},
            ).one()
            reporter = self.world.sides[side].reporter["reporter_name"]
            wanted = ("public", reporter, f"{community}004")
            if tuple(row) != wanted:
                problems.append(f"request stored as {tuple(row)}, expected {wanted}")
            remove_probe_report(db, made_id)
            return problems

        return check

    def stale_check(self, response) -> list[str]:
        problems = self.status(412, "stale-version")(response)
        if not problems and response.headers.get("ETag") != '"1"':
            problems.append(f"412 with ETag {response.headers.get('ETag')}, not the version 1")
        return problems

    def area_check(self, side: str, code: str):
        found = self.found_or_not(side, code, None)

        def check(response) -> list[str]:
            problems = found(response)
            if response.status_code == 200:
                children = response.get_json()["properties"]["children"]
                for child in children:
                    owner = [n for n, s in self.world.sides.items() if child["code"] in s.areas]
                    if owner and not self.visible(owner[0]):
                        problems.append(f"LEAK: child {child['code']} of the {owner[0]} side")
            return problems

        return check

    def tree_check(self, response) -> list[str]:
        problems = self.status(200)(response)
        if problems:
            return problems
        codes: set[str] = set()
        stack = list(response.get_json()["areas"])
        while stack:
            node = stack.pop()
            codes.add(node["code"])
            stack.extend(node["children"])
        for name, side in self.world.sides.items():
            areas = set(side.areas)
            if side.visible_to(self.role) and not areas <= codes:
                problems.append(f"tree misses {name} areas {areas - codes}")
            if not side.visible_to(self.role) and areas & codes:
                problems.append(f"LEAK: tree shows {name} areas {areas & codes}")
        return problems

    def locate_check(self, side: str):
        """A point outside the jurisdiction is refused as such (422), inside it is located."""
        if not self.visible(side):
            return self.status(422, "outside-jurisdiction")
        community = self.world.sides[side].community

        def check(response) -> list[str]:
            problems = self.status(200)(response)
            if not problems and (response.get_json()["grid"] or {}).get("code") != (
                f"{community}004"
            ):
                problems.append(f"located in {response.get_json()['grid']}")
            return problems

        return check

    def collections_check(self, response) -> list[str]:
        problems = self.status(200)(response)
        if problems:
            return problems
        listed = {c["id"]: c for c in response.get_json()["collections"]}
        readable = {layer for layer in LAYERS if may_read_layer(self.role, layer)}
        if set(listed) != readable:
            problems.append(f"collections {sorted(listed)}, expected {sorted(readable)}")
        for layer_id, collection in listed.items():
            bbox = (collection.get("extent") or {}).get("spatial", {}).get("bbox", [None])[0]
            if bbox is None or LAYERS[layer_id].scope_kind == "area":
                continue  # areas show their ancestors as context: extents cover them
            for name, side in self.world.sides.items():
                if side.visible_to(self.role):
                    continue
                for point in self.representative_points(side, layer_id):
                    if bbox[0] < point[0] < bbox[2] and bbox[1] < point[1] < bbox[3]:
                        problems.append(f"LEAK: {layer_id} extent {bbox} covers the {name} side")
        return problems

    @staticmethod
    def representative_points(side: Side, layer_id: str) -> list[tuple[float, float]]:
        if layer_id == "grids":  # strip_grid: four 0.005° strips from the community's west edge
            return [side.point(113.0025 + 0.005 * i, 23.01) for i in range(4)]
        return [getattr(side, f"{layer_id.removesuffix('s')}_point")]

    def collection_probes(self, route: Route) -> Iterator[Probe]:
        for layer_id in LAYERS:
            base = route.rule.replace("<collection_id>", layer_id)
            readable = may_read_layer(self.role, layer_id)
            if "feature_id" in route.arguments:
                for side, fid in self.sides_ids(layer_id):
                    url = base.replace("<feature_id>", fid)
                    expect = (
                        self.found_or_not(side, fid, layer_id)
                        if readable
                        else self.status(404, "not-found")
                    )
                    yield Probe(route, side, url, expect)
            elif route.name == "items":
                expect = (
                    self.feature_collection(layer_id) if readable else self.status(404, "not-found")
                )
                yield Probe(route, "-", f"{base}?limit=1000", expect)
            else:
                yield Probe(route, "-", base, self.collection_check(layer_id, readable))

    def collection_check(self, layer_id: str, readable: bool):
        if not readable:
            return self.status(404, "not-found")

        def check(response) -> list[str]:
            problems = self.status(200)(response)
            if not problems and response.get_json()["id"] != layer_id:
                problems.append(f"collection {response.get_json()['id']} for {layer_id}")
            return problems

        return check

    def token_probes(self, route: Route) -> Iterator[Probe]:
        theirs = self.world.outsider_token
        mine = self.world.spare_tokens.get((self.role, self.via), theirs)  # anonymous: any
        if route.safe and self.via == "token":  # a device must not learn of the others
            yield Probe(route, "-", route.rule, self.status(403, "forbidden"))
        elif route.safe:

            def listed(response) -> list[str]:
                problems = self.status(200)(response)
                if problems:
                    return problems
                ids = {t["id"] for t in response.get_json()["tokens"]}
                if mine not in ids:
                    problems.append(f"own token {mine} not listed")
                if theirs in ids:
                    problems.append(f"LEAK: another user's token {theirs} listed")
                return problems

            yield Probe(route, "-", route.rule, listed)
        elif "token_id" in route.arguments:
            # With a token, a device may revoke only itself (tested separately), not the
            # user's other devices: those answer as if they did not exist.
            own_status = 204 if self.via == "session" else 404
            for side, token_id, status in (("foreign", theirs, 404), ("own", mine, own_status)):
                url = route.rule.replace("<int:token_id>", str(token_id))
                yield Probe(route, side, url, self.status(status))
        else:  # tokens are made from a signed-in browser, never with a token
            expect = self.status(201) if self.via == "session" else self.status(403, "forbidden")
            yield Probe(route, "-", route.rule, expect, body={"name": "new tablet", "days": 1})

    def self_check(self, route: Route):
        def check(response) -> list[str]:
            if not route.safe:
                return self.not_refused(response)
            problems = self.status(200)(response)
            if not problems:
                me = response.get_json()
                if me["username"] != self.world.users[self.role][1] or me["via"] != self.via:
                    problems.append(f"/me says {me['username']} via {me['via']}")
            return problems

        return check

    # -- running -------------------------------------------------------------------------

    def canary_problems(self, probe: Probe, response) -> list[str]:
        """No string of a record outside the jurisdiction, no reporter for a planner."""
        text_ = body_text(response)
        problems = []
        for name, side in self.world.sides.items():
            hidden = () if side.visible_to(self.role) else side.canaries
            if probe.route.endpoint.startswith("open311."):
                # Public: every side's case and address, never anybody's reporter.
                hidden = tuple(c for c in side.canaries if c not in side.area_names)
            if self.role in RESTRICTED_ROLES:
                hidden = (*hidden, *side.reporter.values())
            problems += [f"LEAK: {c!r} of the {name} side" for c in hidden if c in text_]
        return problems

    def run(self, caller: Caller, plan: list[tuple[Route, str, str | None]]) -> None:
        probes = [p for route, kind, layer in plan for p in self.probes(route, kind, layer)]
        # Reads first, then changes; ending the session comes last.
        probes.sort(key=lambda p: (not p.route.safe, p.route.endpoint == "auth.logout"))
        for probe in probes:
            response = caller(probe.route.method, probe.url, probe.body, probe.headers)
            self.count += 1
            self.probed.add((probe.route, probe.side))
            problems = probe.expect(response) + self.canary_problems(probe, response)
            self.problems += [
                f"{self.role} via {self.via}: {probe.route.method} {probe.url} [{probe.side}]: {p}"
                for p in problems
            ]


def run_matrix(app: Flask, world: World, role: str, via: str) -> Matrix:
    matrix = Matrix(world, role, via)
    matrix.run(Caller(app, world, role, via), CLASSIFIED)
    # The generator must not go quiet: every route called, records on both sides of the line.
    called = {route for route, _ in matrix.probed}
    missed = sorted(str(r) for r, _, _ in CLASSIFIED if r not in called)
    assert not missed, f"routes the matrix did not call: {missed}"
    one_sided = sorted(
        str(route)
        for route, kind, _ in CLASSIFIED
        if (set(route.arguments) & RECORD_ARGUMENTS or kind in ("locate", "intake"))
        and not {(route, "own"), (route, "foreign")} <= matrix.probed
    )
    assert not one_sided, f"routes not called with own and foreign records: {one_sided}"
    return matrix


# A string each side's record puts in its tile (incidents: their unit grid's code).
TILE_MARKERS = {
    "grids": lambda side: f"{side.community}001",
    "enterprises": lambda side: f"Enterprise-{side.name}-Canary",
    "outlets": lambda side: f"OUTLET-{side.name.upper()}",
    "incidents": lambda side: f"{side.community}001",
}


# -- the tests -----------------------------------------------------------------------------


def test_every_view_declares_requires_or_public():
    check_declarations(URL_MAP_APP)  # raises RuntimeError naming any undeclared view
    undeclared = [str(r) for r in ROUTES if r.permission is UNDECLARED]
    assert undeclared == []
    assert len(ROUTES) > 10, "the url_map lost its routes"
    # The check does refuse an undeclared view.
    bare = Flask(__name__)
    bare.add_url_rule("/leaky", "leaky", lambda: "data")
    with pytest.raises(RuntimeError, match="leaky"):
        check_declarations(bare)


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_route_is_classified(route):
    """Each route of the url_map has a kind the matrix knows what to expect of."""
    kind, layer = classify(route)  # raises Unclassified, saying why
    assert kind in KIND_ARGUMENTS
    assert layer is None or layer in LAYERS


def test_the_generator_refuses_what_it_does_not_know():
    assert UNCLASSIFIED == [], "\n".join(UNCLASSIFIED)
    unknown = [
        Route("/api/v1/incidents", "POST", "overlays.incident_create", "write:incidents", ()),
        Route("/api/v1/grids/<code>/<part>", "GET", "grids.grid", "read:map", ("code", "part")),
        Route("/api/v1/rivers", "GET", "grids.rivers", "read:map", ()),
        Route("/api/v1/kpis", "POST", "kpi.kpi_table", "read:analytics", ()),
        Route("/x", "GET", "web.x", UNDECLARED, ()),
        # Open311 routes are known by endpoint and method.
        Route(
            "/open311/v2/requests/<service_request_id>.<fmt>",
            "DELETE",
            "open311.request_detail",
            None,
            ("fmt", "service_request_id"),
        ),
        Route(
            "/open311/v2/requests/<service_request_id>/notes.<fmt>",
            "GET",
            "open311.notes",
            None,
            ("fmt", "service_request_id"),
        ),
        # The case routes are known by endpoint and method; nothing else on them.
        Route("/api/v1/cases", "POST", "cases.case_create", "write:cases", ()),
        Route("/api/v1/cases/<int:case_id>", "DELETE", "cases.case", "write:cases", ("case_id",)),
        Route(
            "/api/v1/cases/<int:case_id>/transitions",
            "GET",
            "cases.case_transition",
            "read:incidents",
            ("case_id",),
        ),
        Route(
            "/api/v1/cases/<int:case_id>/files/<int:file_id>",
            "GET",
            "cases.case",
            "read:incidents",
            ("case_id", "file_id"),
        ),
    ]
    for route in unknown:
        with pytest.raises(Unclassified):
            classify(route)


MATRIX_ROLES = (ANONYMOUS, NO_ROLE, *ROLES)


@pytest.mark.parametrize("role", MATRIX_ROLES)
def test_permission_matrix(app, world, role):
    """Every route × own / sibling / foreign records for one role, by token and by session."""
    problems = []
    for via in ("-",) if role == ANONYMOUS else VIAS:
        problems += run_matrix(app, world, role, via).problems
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems)


def incident_views(world: World) -> list[str]:
    [incident] = world.sides["own"].ids["incidents"]
    return [
        "/api/v1/incidents",
        f"/api/v1/incidents/{incident}",
        "/collections/incidents/items",
        f"/collections/incidents/items/{incident}",
    ]


def the_incident(response, incident: str) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json(force=True)
    features = body["features"] if body.get("type") == "FeatureCollection" else [body]
    [feature] = [x for x in features if str(x["id"]) == incident]
    return feature


def test_planner_gets_incidents_without_personal_data(app, world):
    own = world.sides["own"]
    [incident] = own.ids["incidents"]
    lon, lat = own.incident_point
    planner = Caller(app, world, "planner", "token")
    for url in incident_views(world):
        response = planner("GET", url)
        feature = the_incident(response, incident)
        raw = response.get_data(as_text=True)
        assert feature["geometry"] is None, url
        assert not set(PERSONAL) & set(feature["properties"]), url
        for value in (*own.reporter.values(), str(lon), str(lat)):
            assert value not in raw, (url, value)
        assert feature["properties"]["grid_code"] == f"{OWN_COMMUNITY}001"
        assert feature["properties"]["h3_cell"] == h3.latlng_to_cell(lat, lon, 9)


def test_managers_and_inspectors_see_the_reporter_of_own_incidents(app, world):
    own = world.sides["own"]
    [incident] = own.ids["incidents"]
    seen = []
    for role in ROLES:
        if role in RESTRICTED_ROLES:
            continue
        caller = Caller(app, world, role, "token")
        for url in incident_views(world):
            feature = the_incident(caller("GET", url), incident)
            for key, value in own.reporter.items():
                assert feature["properties"][key] == value, (role, url, key)
            assert feature["geometry"]["coordinates"] == pytest.approx(own.incident_point)
        seen.append(role)
    assert {"inspector", "community_manager", "town_manager", "district_manager"} <= set(seen)


def test_browser_sessions_need_csrf_for_changes_and_tokens_do_not(app, world):
    role = "town_manager"
    username = world.users[role][1]
    anonymous = app.test_client()
    refused = anonymous.post("/login", json={"username": username, "password": TEST_PASSWORD})
    assert refused.status_code == 400 and "CSRF" in refused.get_data(as_text=True)

    browser = Caller(app, world, role, "session")  # a JSON login with the page's CSRF token
    assert browser("GET", "/api/v1/me").get_json()["via"] == "session"
    no_csrf = browser.client.post("/api/v1/tokens", json={"name": "tablet", "days": 1})
    assert no_csrf.status_code == 400 and "CSRF" in no_csrf.get_data(as_text=True)
    assert browser("POST", "/api/v1/tokens", {"name": "tablet", "days": 1}).status_code == 201

    tablet = Caller(app, world, role, "token")  # no CSRF token, none needed
    assert tablet.csrf is None
    made = browser("POST", "/api/v1/tokens", {"name": "to sign out", "days": 1}).get_json()
    device = app.test_client()
    device.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {made['token']}"
    assert device.delete(f"/api/v1/tokens/{made['id']}").status_code == 204  # signs itself out
    assert device.get("/api/v1/me").status_code == 401

    assert browser("POST", "/logout").status_code == 204
    assert browser("GET", "/api/v1/me").status_code == 401
    assert tablet("GET", "/api/v1/me").status_code == 200


# -- authorization bugs found by the matrix, fixed, kept as regressions ---------------------


def test_planner_collection_extent_does_not_give_incident_points(app, world):
    planner = Caller(app, world, "planner", "token")
    points = {
        value
        for side in world.sides.values()
        if side.visible_to("planner")
        for value in side.incident_point
    }
    for url in ("/collections", "/collections/incidents"):
        body = planner("GET", url).get_json()
        collections = body.get("collections", [body])
        [incidents] = [c for c in collections if c["id"] == "incidents"]
        bbox = incidents.get("extent", {}).get("spatial", {}).get("bbox", [[]])[0]
        exact = [v for v in bbox if any(v == pytest.approx(p, abs=1e-9) for p in points)]
        assert not exact, f"{url}: the extent {bbox} gives incident coordinates {exact}"


def test_planner_bbox_cannot_pinpoint_an_incident(app, world):
    lon, lat = world.sides["own"].incident_point
    cell = h3.latlng_to_cell(lat, lon, 9)
    beside = (lon + 0.0002, lat)
    assert h3.latlng_to_cell(beside[1], beside[0], 9) == cell  # both boxes in the same cell
    planner = Caller(app, world, "planner", "token")
    found = []
    for x, y in ((lon, lat), beside):
        bbox = f"{x - 0.00001},{y - 0.00001},{x + 0.00001},{y + 0.00001}"
        response = planner("GET", f"/api/v1/incidents?bbox={bbox}")
        found.append([ft["id"] for ft in response.get_json()["features"]])
    assert found[0] == found[1], f"boxes 20 m apart in one H3 cell tell apart: {found}"


def test_a_foreign_area_is_not_told_apart_from_a_missing_one(app, world):
    town = Caller(app, world, "town_manager", "token")
    details = {}
    for code in ("440605", "440698"):  # foreign district; no such district
        response = town("GET", f"/api/v1/areas/{code}")
        assert response.status_code == 404
        details[code] = response.get_json()["detail"].replace(code, "CODE")
    assert details["440605"] == details["440698"], details


def test_reading_incidents_through_ogc_needs_read_incidents(app, world, monkeypatch):
    monkeypatch.setitem(ROLE_VERBS, "inspector", {"read:map", "self:tokens"})
    inspector = Caller(app, world, "inspector", "token")
    assert inspector("GET", "/api/v1/incidents").status_code == 403
    listed = {c["id"] for c in inspector("GET", "/collections").get_json()["collections"]}
    assert "incidents" not in listed
    assert inspector("GET", "/collections/incidents/items").status_code in (403, 404)
