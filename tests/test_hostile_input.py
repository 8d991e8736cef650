"""Hostile input: the geometry and GeoJSON parsers fuzzed with hypothesis, and SQL and script
injection in every free-text field.

Fuzz: the plain functions that read coordinates, boxes, tiles, hotspot parameters, GIS files
(GeoJSON: invalid rings, self-intersections, the antimeridian, empty and non-finite
geometries, wrong types) and community outlines, and the HTTP routes that carry them, get
arbitrary JSON, text and numbers (NaN, infinities, huge, nested, wrong types). Only a typed
4xx error (or success) may come out: never a 500, never another exception. The examples run
are counted and kept in artifacts/fuzz_counts.json.

Injection: payloads (SQL, HTML/script, template, bidi and zero-width characters, 10,000
characters) in every free-text field are stored verbatim (read back equal through the API),
have no SQL effect, come out of the KPI CSV defused, and are shown as text in the real
browser on the served demo (board, tablet case popup, planner map): no dialog, no injected
element.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import shapely
import shapely.geometry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import shape
from sqlalchemy import text

from gridops.auth import service as auth
from gridops.errors import GridopsError
from gridops.features import parse_bbox
from gridops.grids.generate import generate_unit_grids
from gridops.grids.locate import check_lonlat, locate
from gridops.hotspots import repeated
from gridops.hotspots import service as hotspots
from gridops.importing import KINDS, ImportRejected, run_import
from gridops.incidents import intake as intake_module
from gridops.incidents.listing import parse_case_query
from gridops.kpi.service import GROUPINGS, PERIODS
from gridops.kpi.service import parse_query as parse_kpi_query
from gridops.open311.service import parse_request_query
from gridops.patrol.service import parse_batch
from gridops.tiles import check_tile
from gridops.web.planner_map import parse_choice
from tests import factories as f
from tests.conftest import ARTIFACTS, TEST_PASSWORD
from tests.test_cases import build_world

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible in CI
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the world is built once per test, on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
EXAMPLES: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _keep_counts():
    yield
    path = ARTIFACTS / "fuzz_counts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **EXAMPLES}, indent=2, sort_keys=True))
    print("\nfuzz examples run:", dict(EXAMPLES), f"(total {sum(EXAMPLES.values())})")


def acceptable(exc: BaseException) -> bool:
    """A typed error the app answers with a 4xx (what a hostile caller may get)."""
    return isinstance(exc, GridopsError) and 400 <= exc.status < 500


def call(target: str, fn, *args, **kwargs) -> Any:
    """Run ``fn``; anything but success or a typed 4xx fails the test (with the input)."""
    EXAMPLES[target] += 1
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        if acceptable(exc):
            return exc
        raise AssertionError(f"{target}{args!r:.300}: {type(exc).__name__}: {exc}") from exc


# -- strategies -----------------------------------------------------------------------------

SPECIAL_FLOATS = st.sampled_from(
    [
        0.0,
        -0.0,
        180.0,
        -180.0,
        180.000001,
        -180.000001,
        90.0,
        -90.0,
        90.0000001,
        359.9,
        1e308,
        -1e308,
        5e-324,
        1e-300,
        113.005,
        23.01,
        float("nan"),
        float("inf"),
        float("-inf"),
    ]
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | SPECIAL_FLOATS
NUMBERS = FLOATS | st.integers() | st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 10**400])
NUMBER_TEXT = (
    st.sampled_from(
        [
            "NaN",
            "nan",
            "-nan",
            "inf",
            "-inf",
            "Infinity",
            "1e999",
            "-1e999",
            "0x10",
            "1_000",
            "１２３",
            "٣",
            " 113.0 ",
            "113,0",
            "",
            "-",
            ".",
            "+",
            "1e-400",
            "+5",
            "1/2",
            "0e0",
            "9" * 5000,
            "-0",
            "113.005",
            "23.01",
            "18O",
            "1,2,3,4",
            "\t1",
            "1 2",
        ]
    )
    | FLOATS.map(repr)
    | st.integers().map(str)
)
INJECTIONS = [
    "'); DROP TABLE incident;--",
    "' OR '1'='1",
    "1; SELECT pg_sleep(5)--",
    '"; DELETE FROM app_user; --',
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "javascript:alert(1)",
    "{{7*7}}",
    "${7*7}",
    "{% print 7*7 %}",
    '=HYPERLINK("http://x")',
    "‮txt.exe‬",  # right-to-left override
    "a​b‌c‍d﻿",  # zero-width characters
    "\u2066x\u2069",
]
TEXT = st.text(max_size=60) | st.sampled_from(INJECTIONS) | st.just("x" * 10_000)
LEAVES = st.none() | st.booleans() | NUMBERS | TEXT | NUMBER_TEXT
JSON_VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
DATES = (
    st.sampled_from(
        [
            "2026-01-01",
            "0001-01-01",
            "9999-12-31",
            "2026-02-30",
            "2026-13-01",
            "20260101",
            "2026-01-01T00:00:00",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "2026-06-01T12:00:00Z",
            "2026-06-01T12:00:00+99:00",
            "yesterday",
            "",
        ]
    )
    | st.dates().map(date.isoformat)
    | st.datetimes(timezones=st.timezones()).map(datetime.isoformat)
)


def lonlat_pairs():
    return st.tuples(FLOATS, FLOATS) | st.tuples(
        st.floats(-180, 180), st.floats(-90, 90)
    )  # half of them in range, so the database is reached


def mutated(base: dict[str, Any], keys: list[str], values=JSON_VALUES):
    """``base`` with some keys dropped and some set to hostile values (and a stray key)."""

    def build(changes: dict[str, Any], drops: set[str], stray: dict[str, Any]) -> dict:
        body = {k: v for k, v in base.items() if k not in drops}
        body.update(changes)
        body.update(stray)
        return body

    return st.builds(
        build,
        st.dictionaries(st.sampled_from(keys), values, max_size=3),
        st.sets(st.sampled_from(keys), max_size=2),
        st.dictionaries(st.text(max_size=6), values, max_size=1),
    )


def raw_json(value: Any) -> str:
    # Python writes NaN and Infinity, which JSON does not allow: the app must refuse them.
    return json.dumps(value, allow_nan=True)


RAW_BODIES = st.sampled_from(
    [
        "",
        "null",
        "[]",
        "{",
        "{}}",
        '{"a":',
        "NaN",
        '{"lon": NaN}',
        '{"lon": 1e999}',
        '{"lat": -Infinity}',
        '{"id": 123456789012345678901234567890}',
        "[" * 50_000,
        '{"a":' * 5_000 + "1" + "}" * 5_000,
        '"\\ud800"',
        '{"\\u0000": 1}',
        '{"points": [' + ",".join(["{}"] * 20_000) + "]}",
    ]
) | st.sampled_from([b"\xff\xfe{}", b'{"a": "\xc3\x28"}', b"\x00"])  # not UTF-8


# -- the world the fuzz runs in ------------------------------------------------------------


@pytest.fixture
def world(app, session, tmp_path, token_for):
    made = build_world(session, tmp_path)
    ids = {name: actor.user_id for name, actor in made["actors"].items()}
    admin = auth.create_user(session, f"fuzz-admin-{uuid.uuid4().hex[:6]}", TEST_PASSWORD)
    auth.assign_role(session, admin, "admin")
    session.commit()
    clients = {}
    for name, user_id in {"admin": admin, **ids}.items():
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(user_id)}"
        clients[name] = client
    made["clients"] = clients
    made["ids"] = {"admin": admin, **ids}
    made["admin"] = auth.load_actor(session, admin)
    return made


def fabricated_run(session) -> int:
    """A stored Gi* run whose cells lie at awkward places: the antimeridian, the poles, 0/0
    and Foshan (bbox filtering has to cope with each)."""
    import h3

    run_id = session.execute(
        text(
            "INSERT INTO hotspot_run (kind, resolution, k, period_start, period_end, filters, "
            "area_code, n_points, n_cells) VALUES ('gistar', 7, 1, '2026-01-01', '2026-02-01', "
            "'{}', '440600', 6, 6) RETURNING id"
        )
    ).scalar_one()
    for n, (lat, lon) in enumerate(
        [(0.0, 179.99), (0.0, -179.99), (89.9, 0.0), (-89.9, 45.0), (0.0, 0.0), (23.01, 113.01)]
    ):
        cell = h3.str_to_int(h3.latlng_to_cell(lat, lon, 7))
        session.execute(
            text(
                "INSERT INTO hotspot_cell (run_id, cell, count, z, p, bin) "
                "VALUES (:r, :c, :n, 2.0, 0.01, :b)"
            ),
            {"r": run_id, "c": cell, "n": n, "b": (n % 7) - 3},
        )
    session.commit()
    return run_id


def assert_answered(response, what: str) -> None:
    assert response.status_code < 500, (
        f"{what}: {response.status_code} {response.get_data(as_text=True)[:400]}"
    )
    if response.status_code >= 400:
        # Problem JSON; Open311 answers in the GeoReport error format (XML or JSON).
        assert response.mimetype in (
            "application/problem+json",
            "application/xml",
            "application/json",
            "text/html",
        ), response.mimetype


# -- plain functions ------------------------------------------------------------------------


@FUZZ
@given(raw=NUMBER_TEXT | st.text() | st.lists(NUMBER_TEXT, min_size=1, max_size=6).map(",".join))
def test_fuzz_bbox(raw):
    out = call("parse_bbox", parse_bbox, raw)
    if isinstance(out, tuple):
        x0, y0, x1, y1 = out
        assert all(math.isfinite(v) for v in out) and x0 <= x1 and y0 <= y1
        assert x0 >= -180 and x1 <= 180 and y0 >= -90 and y1 <= 90


@FUZZ
@given(z=st.integers(), x=st.integers(), y=st.integers())
def test_fuzz_tile_address(z, x, y):
    call("check_tile", check_tile, z, x, y)


@FUZZ
@given(point=lonlat_pairs())
def test_fuzz_locate(world, session, point):
    lon, lat = point
    call("check_lonlat", check_lonlat, lon, lat)
    actor = world["actors"]["insp.w"]
    found = call("locate", locate, session, lon, lat, actor.scope())
    if not isinstance(found, Exception):
        assert found.grid_code and found.grid_code.startswith("440604001001")


# The fields of a tablet's report (intake also refuses a "grid": the server locates the point).
REPORT_FIELDS = [
    "client_uuid", "category", "lon", "lat", "accuracy_m", "captured_at", "description", "source"
]  # fmt: skip


@FUZZ
@given(
    report=mutated(
        {
            "client_uuid": "",
            "category": "E0502",
            "lon": 113.005,
            "lat": 23.01,
            "accuracy_m": 8.5,
            "captured_at": "",
            "description": "x",
            "source": "inspector",
        },
        [*REPORT_FIELDS, "grid"],
        JSON_VALUES | DATES | FLOATS,
    )
)
def test_fuzz_intake(world, session, report):
    report.setdefault("captured_at", datetime.now(UTC).isoformat())
    if report.get("client_uuid") == "":
        report["client_uuid"] = str(uuid.uuid4())
    if report.get("captured_at") == "":
        report["captured_at"] = datetime.now(UTC).isoformat()
    call("intake._parse_report", intake_module._parse_report, report)
    if not _storable(report):
        return  # gridops.api.reject_unstorable_text refuses these before any view
    with session.begin_nested():
        out = call("intake", intake_module.intake, session, world["actors"]["insp.w"], report)
    if isinstance(out, tuple):
        stored = session.execute(
            text("SELECT ST_X(geom), ST_Y(geom), gps_accuracy_m FROM incident WHERE id = :id"),
            {"id": out[0]["id"]},
        ).one()
        assert (stored[0], stored[1]) == (report["lon"], report["lat"])
        assert stored[2] is None or math.isfinite(stored[2])


def _storable(value: Any) -> bool:
    """No NUL and no lone surrogate anywhere (PostgreSQL text cannot hold them)."""
    if isinstance(value, str):
        return "\x00" not in value and not re.search("[\ud800-\udfff]", value)
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return True


POINT = {"t": "", "lon": 113.005, "lat": 23.01, "accuracy_m": 5}


@FUZZ
@given(
    points=st.lists(
        mutated(POINT, ["t", "lon", "lat", "accuracy_m", "user_id"], JSON_VALUES | DATES | FLOATS),
        max_size=5,
    ),
    extra=st.dictionaries(st.sampled_from(["points", "user", "user_id"]), JSON_VALUES, max_size=1),
)
def test_fuzz_patrol_points(world, session, points, extra):
    now = datetime.now(UTC)
    for point in points:
        if point.get("t") == "":
            point["t"] = (now - timedelta(minutes=5)).isoformat()
    body = {"points": points, **extra}
    parsed = call("patrol.parse_batch", parse_batch, body, now=now)
    response = world["clients"]["insp.w"].post(
        "/api/v1/patrol/points", data=raw_json(body), content_type="application/json"
    )
    EXAMPLES["POST /api/v1/patrol/points"] += 1
    assert_answered(response, f"patrol points {body!r:.300}")
    if isinstance(parsed, list) and _storable(body):
        assert response.status_code == 200, response.get_data(as_text=True)


HOTSPOT_KEYS = ["kind", "resolution", "k", "start", "end", "step", "category", "source", "area"]


@FUZZ
@given(
    params=mutated(
        {
            "kind": "gistar",
            "resolution": 8,
            "start": "2026-01-01",
            "end": "2026-02-01",
            "area": "440604",
        },
        HOTSPOT_KEYS,
        JSON_VALUES
        | DATES
        | st.sampled_from(
            ["emerging", "day", "week", "month", "E0502", "E05", "440600", "440604001001", "440699"]
        ),
    )
)
def test_fuzz_hotspot_parameters(world, session, params):
    params = {k: v for k, v in params.items() if k in HOTSPOT_KEYS}
    if not _storable(params):
        return  # gridops.api.reject_unstorable_text refuses these before any view
    scope = world["actors"]["mgr.w"].scope()
    managed = call("hotspots.validate_run", hotspots.validate_run, session, scope, **params)
    anywhere = call(
        "hotspots.validate_run (admin)",
        hotspots.validate_run,
        session,
        world["admin"].scope(),
        **params,
    )
    # What is accepted is sane, and a narrower scope never accepts what the whole city refuses.
    for accepted in (managed, anywhere):
        if isinstance(accepted, hotspots.RunParams):
            assert accepted.kind in hotspots.KINDS
            assert hotspots.MIN_RESOLUTION <= accepted.resolution <= hotspots.MAX_RESOLUTION
            assert accepted.start.tzinfo is not None and accepted.start < accepted.end
            assert accepted.area_m2 > 0
    if isinstance(managed, hotspots.RunParams):
        assert isinstance(anywhere, hotspots.RunParams), anywhere
    for raw in params.values():
        # ValueError and TypeError are its documented refusals (_moment names the field).
        with contextlib.suppress(ValueError, TypeError):
            hotspots.parse_moment(raw)
        EXAMPLES["hotspots.parse_moment"] += 1


QUERY_VALUES = NUMBER_TEXT | DATES | st.text(max_size=30) | st.sampled_from(INJECTIONS)
QUERY_KEYS = [
    "bbox",
    "limit",
    "cursor",
    "status",
    "category",
    "area",
    "from",
    "to",
    "overdue",
    "assigned",
    "days",
    "radius_m",
    "min_count",
    "period",
    "start",
    "end",
    "by",
    "kind",
    "preset",
    "resolution",
    "run",
    "service_request_id",
    "service_code",
    "start_date",
    "end_date",
    "lat",
    "long",
    "x",
]
QUERIES = st.dictionaries(st.sampled_from(QUERY_KEYS), QUERY_VALUES, max_size=5)


@FUZZ
@given(args=QUERIES)
def test_fuzz_query_parsers(world, session, args):
    scope = world["actors"]["mgr.w"].scope()
    kpi_query = call("kpi.parse_query", parse_kpi_query, args, today=date(2026, 11, 27))
    if isinstance(kpi_query, dict):  # accepted: a known period over a forward range
        assert kpi_query["period"] in PERIODS and kpi_query["by"] in (None, *GROUPINGS)
        assert kpi_query["start"] <= kpi_query["end"]
    call("planner_map.parse_choice", parse_choice, args, date(2026, 11, 27))
    if not _storable(args):
        return  # gridops.api.reject_unstorable_text refuses these before any view
    call("listing.parse_case_query", parse_case_query, session, args)
    call(
        "repeated.parse_query",
        repeated.parse_query,
        session,
        scope,
        {k: v for k, v in args.items() if k in repeated.PARAMETERS},
    )
    call("open311.parse_request_query", parse_request_query, session, args)


# GeoJSON geometries, from proper to broken.
COORD = st.floats(-180, 180) | FLOATS | st.sampled_from([113.01, 113.02, 23.005, 23.015])
POSITION = st.lists(COORD, min_size=2, max_size=2) | st.lists(COORD, min_size=0, max_size=4)


def ring_around(x: float, y: float, size: float) -> list[list[float]]:
    return [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]


SPECIAL_RINGS = st.sampled_from(
    [
        ring_around(113.005, 23.005, 0.005),  # inside the world's west community
        [[113.0, 23.0], [113.01, 23.01], [113.01, 23.0], [113.0, 23.01], [113.0, 23.0]],  # bowtie
        [[113.0, 23.0], [113.01, 23.0], [113.01, 23.01]],  # not closed, too short
        [[113.0, 23.0], [113.0, 23.0], [113.0, 23.0], [113.0, 23.0]],  # one point
        [[179.5, 0.0], [-179.5, 0.0], [-179.5, 1.0], [179.5, 1.0], [179.5, 0.0]],  # antimeridian
        [[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]],  # the whole world
        ring_around(113.0, 23.0, 1e-12),  # vanishing
        [
            [113.0, 23.0],
            [113.02, 23.0],
            [113.02, 23.02],
            [113.0, 23.0],
            [113.0, 23.02],
            [113.0, 23.0],
        ],  # touches itself
        [],
    ]
)
RING = SPECIAL_RINGS | st.lists(POSITION, max_size=6)
GEOMETRIES = st.one_of(
    st.builds(lambda p: {"type": "Point", "coordinates": p}, POSITION),
    st.builds(lambda r: {"type": "LineString", "coordinates": r}, RING),
    st.builds(lambda rs: {"type": "Polygon", "coordinates": rs}, st.lists(RING, max_size=3)),
    st.builds(
        lambda ps: {"type": "MultiPolygon", "coordinates": ps},
        st.lists(st.lists(RING, min_size=1, max_size=2), max_size=3),
    ),
    st.builds(lambda p: {"type": "MultiPoint", "coordinates": p}, st.lists(POSITION, max_size=3)),
    st.just({"type": "GeometryCollection", "geometries": []}),
    st.just({"type": "Polygon", "coordinates": []}),
    st.just({"type": "Point", "coordinates": []}),
    st.builds(
        lambda t, c: {"type": t, "coordinates": c},
        st.sampled_from(["Polygon", "Point", "Circle", "", "polygon"]),
        JSON_VALUES,
    ),
    st.none(),
    JSON_VALUES,
)


@FUZZ
@given(geometry=GEOMETRIES, target=NUMBERS | st.just(10_000.0), fraction=NUMBERS | st.just(0.4))
def test_fuzz_unit_grid_generation(geometry, target, fraction):
    try:
        community = shape(geometry)
    except Exception:
        community = geometry  # not a geometry at all: generate_unit_grids must say so
    out = call(
        "generate_unit_grids",
        generate_unit_grids,
        community,
        "440604001001",
        target_area_m2=target,
        min_fraction=fraction,
    )
    if isinstance(out, list):
        assert out and all(g.code.startswith("440604001001") for g in out)
        assert shapely.union_all([g.geom for g in out]).equals_exact(
            shapely.union_all([g.geom for g in out]), 0
        )


FEATURE_PROPERTIES = {
    "areas": {
        "code": "440604001001",
        "name": "西社区",
        "level": "community",
        "parent_code": "440604001",
    },
    "grids": {"code": "440604001001001"},
    "enterprises": {"uscc": f.uscc(77), "name": "甲公司", "risk_level": 2},
    "outlets": {"code": "OUT-1", "outlet_type": "service_centre", "name": "网点"},
    "components": {"code": "4406040101000001", "name": "井盖"},
}


def proper_geometry(kind: str) -> dict[str, Any]:
    """What the world already holds for the feature (so that a hostile name may be written)."""
    if kind == "areas":
        return shapely.geometry.mapping(f.COMMUNITY_W)
    if kind == "grids":
        return shapely.geometry.mapping(f.strip_grid(f.COMMUNITY_W, "440604001001")[0]["geometry"])
    return {"type": "Point", "coordinates": [113.005, 23.01]}


def feature(kind: str):
    props = FEATURE_PROPERTIES[kind]
    return st.builds(
        lambda geometry, properties: {
            "type": "Feature",
            "geometry": geometry,
            "properties": properties,
        },
        st.just(proper_geometry(kind)) | GEOMETRIES,
        mutated(props, list(props), TEXT | JSON_VALUES) | JSON_VALUES,
    )


def geojson_documents(kind: str):
    collection = st.builds(
        lambda features, crs: {"type": "FeatureCollection", "features": features, **crs},
        st.lists(feature(kind), min_size=1, max_size=3),
        st.sampled_from(
            [
                {},
                {"crs": {"type": "name", "properties": {"name": "EPSG:4547"}}},
                {"crs": {"type": "name", "properties": {"name": "EPSG:999999"}}},
                {"crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}},
                {"crs": "nonsense"},
            ]
        ),
    )
    return (
        collection.map(raw_json)  # three times: most documents are collections
        | collection.map(raw_json)
        | collection.map(raw_json)
        | feature(kind).map(raw_json)
        | GEOMETRIES.map(raw_json)
        | JSON_VALUES.map(raw_json)
        | st.text(max_size=200)
        | st.sampled_from(
            [
                '{"type": "FeatureCollection"}',
                '{"type": "FeatureCollection", "features": [{"type": "Feature"}]}',
                "[" * 10_000,
                "",
            ]
        )
    )


@pytest.mark.parametrize("kind", KINDS)
def test_fuzz_geojson_import(world, session, tmp_path, kind):
    path = tmp_path / f"{kind}.geojson"
    before = _row_counts(session)

    @FUZZ
    @given(document=geojson_documents(kind), dry_run=st.booleans())
    def run(document, dry_run):
        path.write_text(document, encoding="utf-8", errors="surrogatepass")
        from gridops.importing import ImportOptions

        try:
            out = call(
                f"import {kind} (GeoJSON)",
                run_import,
                session,
                kind,
                path,
                ImportOptions(dry_run=True) if dry_run else ImportOptions(),
            )
            outcomes[_outcome(out)] += 1
        except AssertionError as failed:
            raise AssertionError(f"{failed}\nthe file:\n{document[:3000]}") from failed
        finally:
            session.rollback()  # what a failed CLI run does; the next example starts clean

    outcomes: Counter[str] = Counter()
    run()
    print(f"import {kind}: {dict(outcomes)}")
    # The documents reach every stage: refused as files, rows rejected, and imported.
    assert outcomes["file refused"] and outcomes["rows rejected"], outcomes
    assert outcomes["written"] + outcomes["dry run"], outcomes
    # What passed every check may have been written; nothing else was.
    assert _row_counts(session)["incident"] == before["incident"]


def _outcome(out: Any) -> str:
    if isinstance(out, ImportRejected):
        return "rows rejected"
    if isinstance(out, Exception):
        return "file refused"
    return "dry run" if out.dry_run else "written"


def _row_counts(session) -> dict[str, int]:
    return {
        table: session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
        for table in (
            "admin_area",
            "unit_grid",
            "enterprise",
            "service_outlet",
            "component",
            "incident",
        )
    }


# -- the HTTP routes ---------------------------------------------------------------------------


@FUZZ
@given(lon=NUMBER_TEXT, lat=NUMBER_TEXT, who=st.sampled_from(["insp.w", "admin", "mgr.e"]))
def test_fuzz_http_locate(world, lon, lat, who):
    response = world["clients"][who].get("/api/v1/locate", query_string={"lon": lon, "lat": lat})
    EXAMPLES["GET /api/v1/locate"] += 1
    assert_answered(response, f"locate {lon!r} {lat!r}")


BBOX_ROUTES = [
    "/api/v1/grids",
    "/api/v1/enterprises",
    "/api/v1/outlets",
    "/api/v1/incidents",
    "/api/v1/areas",
    "/api/v1/components",
    "/api/v1/cases",
    "/collections/grids/items",
    "/collections/incidents/items",
    "/api/v1/board/cases",
]


@FUZZ
@given(
    route=st.sampled_from(BBOX_ROUTES),
    bbox=NUMBER_TEXT
    | st.lists(NUMBER_TEXT, min_size=4, max_size=4).map(",".join)
    | st.sampled_from(["-180,-90,180,90", "179,-1,-179,1", "113,23,113,23", "0,0,0,0"]),
    limit=st.none() | NUMBER_TEXT,
    who=st.sampled_from(["admin", "mgr.w", "handler"]),
)
def test_fuzz_http_bbox(world, route, bbox, limit, who):
    query = {"bbox": bbox} if limit is None else {"bbox": bbox, "limit": limit}
    response = world["clients"][who].get(route, query_string=query)
    EXAMPLES["GET ?bbox= (10 routes)"] += 1
    assert_answered(response, f"{route} {query!r}")


@FUZZ
@given(
    bbox=st.lists(st.floats(-180, 180), min_size=4, max_size=4).map(
        lambda v: ",".join(
            map(str, [min(v[0], v[2]), min(v[1], v[3]) / 2, max(v[0], v[2]), max(v[1], v[3]) / 2])
        )
    )
    | NUMBER_TEXT,
    min_bin=st.none() | st.sampled_from(["0", "1", "3", "4", "-1", "x"]),
)
def test_fuzz_http_hotspot_cells(world, session, bbox, min_bin):
    if "run" not in world:
        world["run"] = fabricated_run(session)
    run_id = world["run"]
    query = {"bbox": bbox, **({"min_bin": min_bin} if min_bin else {})}
    response = world["clients"]["admin"].get(f"/api/v1/hotspots/runs/{run_id}", query_string=query)
    EXAMPLES["GET /api/v1/hotspots/runs/<id>?bbox="] += 1
    assert_answered(response, f"hotspot cells {query!r}")


@FUZZ
@given(
    layer=st.sampled_from(["grids", "enterprises", "outlets", "incidents", "nothing"]),
    z=st.integers(0, 2**70),
    x=st.integers(0, 2**70) | st.integers(0, 4),
    y=st.integers(0, 2**70) | st.integers(0, 4),
)
def test_fuzz_http_tiles(world, layer, z, x, y):
    response = world["clients"]["mgr.w"].get(f"/api/v1/tiles/{layer}/{z}/{x}/{y}.pbf")
    EXAMPLES["GET /api/v1/tiles/..."] += 1
    assert_answered(response, f"tile {layer}/{z}/{x}/{y}")


def _json_post(client, url: str, body: Any, **kwargs):
    data = body if isinstance(body, str | bytes) else raw_json(body)
    return client.post(url, data=data, content_type="application/json", **kwargs)


@FUZZ
@given(
    body=mutated(
        {
            "category": "E0502",
            "lon": 113.005,
            "lat": 23.01,
            "accuracy_m": 8.5,
            "description": "fuzz",
        },
        REPORT_FIELDS,
        JSON_VALUES | FLOATS | DATES,
    )
    | JSON_VALUES
    | RAW_BODIES
)
def test_fuzz_http_intake(world, body):
    if isinstance(body, dict):
        body.setdefault("client_uuid", str(uuid.uuid4()))
        body.setdefault("captured_at", datetime.now(UTC).isoformat())
    response = _json_post(world["clients"]["insp.w"], "/api/v1/incidents", body)
    EXAMPLES["POST /api/v1/incidents"] += 1
    assert_answered(response, f"intake {body!r:.300}")


@FUZZ
@given(
    home=mutated({"lon": 113.005, "lat": 23.01}, ["lon", "lat"], JSON_VALUES | FLOATS)
    | JSON_VALUES,
    rest=st.dictionaries(
        st.sampled_from(["tasks_per_day", "travel_mode"]), JSON_VALUES, max_size=2
    ),
)
def test_fuzz_http_inspector_home(world, home, rest):
    url = f"/api/v1/admin/inspectors/{world['ids']['insp.w']}/profile"
    response = world["clients"]["admin"].put(
        url, data=raw_json({"home": home, **rest}), content_type="application/json"
    )
    EXAMPLES["PUT /api/v1/admin/inspectors/<id>/profile"] += 1
    assert_answered(response, f"home {home!r:.200} {rest!r:.200}")


@FUZZ
@given(
    body=mutated(
        {
            "kind": "gistar",
            "resolution": 8,
            "start": "2026-01-01",
            "end": "2026-02-01",
            "area": "440604001001",
        },
        HOTSPOT_KEYS,
        JSON_VALUES | DATES,
    )
    | RAW_BODIES
)
def test_fuzz_http_hotspot_runs(world, body):
    response = _json_post(world["clients"]["mgr.w"], "/api/v1/hotspots/runs", body)
    EXAMPLES["POST /api/v1/hotspots/runs"] += 1
    assert_answered(response, f"hotspot run {body!r:.300}")


@FUZZ
@given(
    fields=mutated(
        {"service_code": "E0502", "lat": "23.01", "long": "113.005", "description": "fuzz"},
        [
            "service_code",
            "lat",
            "long",
            "description",
            "address_string",
            "email",
            "first_name",
            "jurisdiction_id",
            "attribute[x]",
        ],
        NUMBER_TEXT | st.text(max_size=40) | st.sampled_from(INJECTIONS),
    ),
    as_json=st.booleans(),
)
def test_fuzz_http_open311_point(world, token_for, fields, as_json):
    fields = {k: v for k, v in fields.items() if isinstance(v, str)}
    if "open311_key" not in world:
        world["open311_key"] = token_for(world["ids"]["insp.w"], "open311 fuzz")
    key = world["open311_key"]
    client = world["clients"]["insp.w"]
    body = {**fields, "api_key": key}
    if as_json:
        response = _json_post(client, "/open311/v2/requests.json", body)
    else:
        response = client.post("/open311/v2/requests.json", data=body)
    EXAMPLES["POST /open311/v2/requests.json"] += 1
    assert_answered(response, f"open311 {fields!r:.300}")


def _write_routes(app) -> list[tuple[str, str]]:
    """Every POST/PUT/PATCH route of the app, arguments filled with a plausible value."""
    routes = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods & {"POST", "PUT", "PATCH"}):
            url = rule.rule
            for name in rule.arguments:
                value = {
                    "fmt": "json",
                    "day": "2026-10-01",
                    "year": "2026",
                    "category_code": "E0502",
                    "grid_code": "440604001001001",
                }.get(name, "1")
                url = re.sub(rf"<(?:[a-z]+:)?{name}>", value, url)
            routes.append((method, url))
    return sorted(routes)


@FUZZ
@given(data=st.data())
def test_fuzz_every_write_route_with_any_json(app, world, data):
    method, url = data.draw(st.sampled_from(_write_routes(app)), label="route")
    body = data.draw(JSON_VALUES.map(raw_json) | RAW_BODIES, label="body")
    response = world["clients"]["admin"].open(
        url,
        method=method,
        data=body,
        content_type="application/json",
        headers={"If-Match": '"1"'},
    )
    EXAMPLES["any JSON to every POST/PUT/PATCH route"] += 1
    assert_answered(response, f"{method} {url} {body!r:.300}")


@FUZZ
@given(data=st.data())
def test_fuzz_every_get_route_with_any_query(app, world, data):
    plain = [r.rule for r in app.url_map.iter_rules() if "GET" in r.methods and not r.arguments]
    urls = [*sorted(plain), "/api/v1/cases/1", "/api/v1/hotspots/runs/1/compare"]
    url = data.draw(st.sampled_from(urls), label="url")
    query = data.draw(QUERIES, label="query")
    who = data.draw(st.sampled_from(["admin", "mgr.w", "insp.w", "handler"]), label="who")
    response = world["clients"][who].get(url, query_string=query)
    EXAMPLES["any query to every GET route"] += 1
    assert_answered(response, f"GET {url} {query!r}")


# -- regressions the fuzz found ------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[" * 50_000,
        '{"lon": NaN}',
        '{"lon": 1e999}',
        '{"accuracy_m": Infinity}',
        '{"id": 99999999999999999999}',
    ],
)
def test_json_the_standard_does_not_allow_is_a_422_naming_it(world, body):
    response = _json_post(world["clients"]["insp.w"], "/api/v1/incidents", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    problem = response.get_json()
    assert problem["errors"][0]["field"] == "body"
    assert problem["status"] == 422


def test_gps_accuracy_a_real_column_cannot_hold_is_refused_or_kept_to_the_millimetre(world):
    from tests.test_intake import report

    inspector = world["clients"]["insp.w"]
    for accuracy in (1e300, 3.5e38, 40_000_001):
        refused = inspector.post("/api/v1/incidents", json=report(accuracy_m=accuracy))
        assert refused.status_code == 422, refused.get_data(as_text=True)
        assert refused.get_json()["errors"][0]["field"] == "accuracy_m"
    kept = inspector.post("/api/v1/incidents", json=report(accuracy_m=5e-324))
    assert kept.status_code == 201, kept.get_data(as_text=True)
    now = datetime.now(UTC).isoformat()
    for accuracy, status in ((1e300, 422), (5e-324, 200)):
        body = {"points": [{"t": now, "lon": 113.005, "lat": 23.01, "accuracy_m": accuracy}]}
        answer = inspector.post("/api/v1/patrol/points", json=body)
        assert answer.status_code == status, answer.get_data(as_text=True)


def test_numbers_beyond_a_double_are_refused_not_raised():
    with pytest.raises(GridopsError) as caught:
        generate_unit_grids(shape(proper_geometry("areas")), "440604001001", target_area_m2=10**400)
    assert caught.value.errors[0].field == "target_area_m2"
    now = datetime.now(UTC)
    with pytest.raises(GridopsError) as caught:
        parse_batch(
            {
                "points": [
                    {"t": now.isoformat(), "lon": 10**400, "lat": 23.0, "accuracy_m": 10**400}
                ]
            },
            now=now,
        )
    assert {e.field for e in caught.value.errors} == {"points[0].lon", "points[0].accuracy_m"}


def test_a_hotspot_box_with_no_cell_near_it_is_an_empty_answer(world, session):
    run_id = fabricated_run(session)
    answer = world["clients"]["admin"].get(f"/api/v1/hotspots/runs/{run_id}?bbox=1,0,1,0")
    assert answer.status_code == 200 and answer.get_json()["features"] == []


def test_a_geometry_geos_refuses_rejects_its_row_only(world, session, tmp_path):
    path = tmp_path / "bad.geojson"
    good = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [113.005, 23.01]},
        "properties": {"uscc": f.uscc(5), "name": "好"},
    }
    bad = {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[113.0, 23.0]]},
        "properties": {"uscc": f.uscc(6), "name": "坏"},
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [good, bad]}))
    with pytest.raises(ImportRejected) as caught:
        run_import(session, "enterprises", path)
    assert [(r.row, r.reason) for r in caught.value.report.rejects] == [
        (2, "no geometry (or one that cannot be read)")
    ]


def test_a_photo_report_with_a_bad_json_part_is_a_422(world):
    response = world["clients"]["insp.w"].post(
        "/api/v1/incidents",
        data={"report": "[" * 50_000},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422, response.get_data(as_text=True)


# -- SQL and script injection in every free-text field ---------------------------------------

PAYLOADS = [*INJECTIONS, "x" * 10_000, "<b>粗体</b> & \"引号\" 'apos' \\ back`tick"]
STRONG = "Quartz-Lantern-Harbour-93"


def _counts(session) -> dict[str, int]:
    tables = (
        "incident",
        "case_event",
        "app_user",
        "category",
        "department",
        "admin_area",
        "unit_grid",
        "staff_absence",
        "work_calendar_override",
        "api_token",
    )
    return {
        t: session.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
        for t in tables
        if session.execute(text("SELECT to_regclass(:t)"), {"t": t}).scalar() is not None
    }


def _accepted_or_refused(response, payload: str, field: str, what: str) -> bool:
    """True when stored; a refusal must be a 422 naming the field (length limits)."""
    if response.status_code in (200, 201):
        return True
    problem = response.get_json(silent=True) or {}
    assert response.status_code == 422, f"{what} {payload[:40]!r}: {response.status_code} {problem}"
    assert any(field in e["field"] for e in problem.get("errors", [])), (what, problem)
    assert len(payload) > 100, f"{what}: only over-long text may be refused, not {payload!r}"
    return False


def signed_in_browser(app, username: str):
    """A test client signed in with the password (a session cookie), and its CSRF header."""
    browser = app.test_client()
    form = browser.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    signed = browser.post(
        "/login", data={"username": username, "password": TEST_PASSWORD, "csrf_token": token}
    )
    assert signed.status_code == 302, signed.get_data(as_text=True)
    page = browser.get("/").get_data(as_text=True)
    page = page or browser.get("/login").get_data(as_text=True)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    if token is None:
        token = re.search(
            r'<meta name="csrf-token" content="([^"]+)"',
            browser.get("/tablet").get_data(as_text=True),
        )
    return browser, {"X-CSRFToken": token.group(1)}


def test_free_text_is_stored_verbatim_and_does_nothing(app, world, session, token_for):
    from tests.test_intake import report

    c = world["clients"]
    inspector = world["ids"]["insp.w"]
    key = token_for(inspector, "open311 injection")
    browser, csrf = signed_in_browser(app, "insp.w")
    stored: Counter[str] = Counter()
    for n, payload in enumerate(PAYLOADS):
        before = _counts(session)
        # An incident's description, then a transition note on it.
        made = c["insp.w"].post("/api/v1/incidents", json=report(description=payload))
        if _accepted_or_refused(made, payload, "description", "incident description"):
            case_id = made.get_json()["id"]
            public = c["mgr.w"].get(f"/open311/v2/requests/{case_id}.json").get_json()
            assert public[0]["description"] == payload
            board = c["mgr.w"].get(f"/api/v1/board/cases/{case_id}").get_json()
            assert board["properties"]["description"] == payload[:200]  # the board's excerpt
            stored["incident description"] += 1
        else:
            made = c["insp.w"].post("/api/v1/incidents", json=report(description="x"))
            case_id = made.get_json()["id"]
        moved = c["insp.w"].post(
            f"/api/v1/cases/{case_id}/transitions",
            json={"action": "verify", "note": payload},
            headers={"If-Match": '"1"'},
        )
        assert moved.status_code == 200, moved.get_json()
        history = c["mgr.w"].get(f"/api/v1/cases/{case_id}").get_json()["history"]
        assert history[-1]["note"] == payload
        stored["transition note"] += 1

        # A user's display name.
        made = c["admin"].post(
            "/api/v1/admin/users",
            json={"username": f"inject{n}", "password": STRONG, "display_name": payload},
        )
        if _accepted_or_refused(made, payload, "display_name", "display name"):
            users = c["admin"].get("/api/v1/admin/users").get_json()["users"]
            assert [u["display_name"] for u in users if u["username"] == f"inject{n}"] == [payload]
            stored["user display name"] += 1

        # A category's names (a city extension class).
        code = f"E05{70 + n:02d}"
        made = c["admin"].post(
            "/api/v1/admin/categories",
            json={"code": code, "name_zh": payload, "name_en": payload, "time_limit_hours": 24},
        )
        if _accepted_or_refused(made, payload, "name", "category name"):
            tree = c["admin"].get("/api/v1/categories?all=true").get_json()["categories"]
            minors = [m for major in tree for m in major["minors"] if m["code"] == code]
            assert [(m["name_zh"], m["name_en"]) for m in minors] == [(payload, payload)]
            stored["category name"] += 1

        # A department's name.
        made = c["admin"].post(
            "/api/v1/admin/departments",
            json={"code": f"INJ-{n}", "name": payload, "name_en": payload, "area_code": "440604"},
        )
        if _accepted_or_refused(made, payload, "name", "department name"):
            departments = c["admin"].get("/api/v1/admin/departments").get_json()["departments"]
            assert [d["name"] for d in departments if d["code"] == f"INJ-{n}"] == [payload]
            stored["department name"] += 1

        # An absence's note.
        day = (date(2027, 3, 1) + timedelta(days=n)).isoformat()
        made = c["admin"].post(
            "/api/v1/admin/absences",
            json={"user": inspector, "starts_on": day, "ends_on": day, "note": payload},
        )
        if _accepted_or_refused(made, payload, "note", "absence note"):
            listed = c["admin"].get(f"/api/v1/admin/absences?user={inspector}").get_json()
            notes = [a["note"] for a in listed["absences"] if a["starts_on"] == day]
            assert notes == [payload]
            stored["absence note"] += 1

        # A working-calendar day's note.
        made = c["admin"].put(
            f"/api/v1/admin/calendar/days/{day}", json={"kind": "off", "note": payload}
        )
        if _accepted_or_refused(made, payload, "note", "calendar note"):
            year = c["admin"].get("/api/v1/admin/calendar?year=2027").get_json()
            assert [d["override"]["note"] for d in year["days"] if d["day"] == day] == [payload]
            stored["calendar note"] += 1

        # A device token's name (made from a signed-in browser).
        made = browser.post("/api/v1/tokens", json={"name": payload, "days": 1}, headers=csrf)
        if _accepted_or_refused(made, payload, "name", "token name"):
            tokens = browser.get("/api/v1/tokens").get_json()["tokens"]
            assert payload in [t["name"] for t in tokens]
            stored["token name"] += 1

        # A public report through Open311: description and the reporter's name.
        made = c["insp.w"].post(
            "/open311/v2/requests.json",
            data={
                "api_key": key,
                "service_code": "E0502",
                "lat": "23.01",
                "long": "113.005",
                "description": payload,
                "first_name": payload[:50],
            },
        )
        if made.status_code == 201:
            request_id = made.get_json()[0]["service_request_id"]
            got = c["mgr.w"].get(f"/open311/v2/requests/{request_id}.json").get_json()
            assert got[0]["description"] == payload
            reporter = session.execute(
                text("SELECT reporter_name FROM incident WHERE id = :id"), {"id": request_id}
            ).scalar_one()
            assert reporter.startswith(payload[:50].strip()[:10])
            stored["Open311 description"] += 1
        else:
            assert made.status_code == 400 and len(payload) > 100, made.get_data(as_text=True)

        # Searches: a clear refusal or nothing found, never an effect.
        for url in (
            "/api/v1/cases",
            "/open311/v2/requests.json",
            "/api/v1/hotspots/repeated",
            "/api/v1/kpis",
            "/api/v1/dispatch/queue",
            "/api/v1/enterprises",
        ):
            for name in ("category", "area", "status", "service_code", "service_request_id"):
                answer = c["mgr.w"].get(url, query_string={name: payload})
                assert answer.status_code < 500, (url, name, answer.status_code)
        for url in (
            f"/api/v1/areas/{payload[:200]}",
            f"/api/v1/grids/{payload[:200]}",
            f"/open311/v2/requests/{payload[:200]}.json",
        ):
            answer = c["mgr.w"].get(url)
            assert answer.status_code in (404, 400, 422), (url, answer.status_code)

        after = _counts(session)
        assert after["incident"] >= before["incident"] and after["app_user"] >= before["app_user"]
        assert set(after) == set(before), "no table went away"
    # Every field stored every payload that is not over-long.
    assert set(stored.values()) <= {len(PAYLOADS) - 1, len(PAYLOADS)}, stored
    assert len(stored) == 9, stored


def test_pages_escape_stored_names(world, session):
    """Server-rendered pages print catalogue and area names as text (Jinja autoescape)."""
    c = world["clients"]["admin"]
    name = "<img src=x onerror=alert(1)>{{7*7}}"
    made = c.post(
        "/api/v1/admin/categories",
        json={"code": "E0569", "name_zh": name, "name_en": name, "time_limit_hours": 24},
    )
    assert made.status_code == 201, made.get_json()
    session.execute(text("UPDATE admin_area SET name = :n WHERE code = '440604'"), {"n": name})
    session.commit()
    page = c.get("/planner/map?lang=en").get_data(as_text=True)
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;{{7*7}}" in page  # literally, not evaluated
    assert "49" not in re.findall(r"E0569[^<]*", page)[0]
    login = world["clients"]["admin"].get("/login?next=%22%3E%3Cscript%3Ealert(1)%3C/script%3E")
    assert "<script>alert(1)</script>" not in login.get_data(as_text=True)


def test_csv_exports_defuse_formulas(world, session, tmp_path):
    """KPI CSV (area names) and the import's rejects file (codes and reasons from a file):
    a cell that a spreadsheet would run as a formula starts with an apostrophe."""
    from gridops.importing import ImportReport
    from gridops.staging import Reject

    formula = '=HYPERLINK("http://evil.example","x")'
    session.execute(
        text("UPDATE admin_area SET name = :n WHERE code = '440604001001'"), {"n": formula}
    )
    session.commit()
    csv_text = (
        world["clients"]["admin"]
        .get("/api/v1/kpis?format=csv&by=community&period=year&start=2026-01-01&end=2026-12-31")
        .get_data(as_text=True)
    )
    cells = [cell for line in csv_text.splitlines() for cell in line.split(",")]
    assert not any(cell.lstrip('"').startswith(("=", "+", "@")) for cell in cells), csv_text
    assert "'=HYPERLINK" in csv_text

    report = ImportReport(kind="areas", file="x.geojson")
    report.rejects = [Reject(1, "=1+2", "+cmd|' /C calc'!A0"), Reject(2, "@SUM(A1)", "-2+3")]
    target = tmp_path / "rejects.csv"
    report.write_rejects_csv(target)
    rows = target.read_text(encoding="utf-8").splitlines()[1:]
    assert rows == ["1,'=1+2,'+cmd|' /C calc'!A0", "2,'@SUM(A1),'-2+3"]


# -- shown inert in the real browser --------------------------------------------------------

DESCRIPTION = (
    '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>{{7*7}} '
    "'); DROP TABLE incident;-- \u202eabc\u202c a\u200bb"
)
CATEGORY_NAME = '<svg onload="window.__xss=3">类<b>粗</b>{{7*7}}'
WALKER_NAME = '<img src=y onerror="window.__xss=4">巡查员'
INJECTED = (
    'img[src="x"], img[src="y"], svg[onload], .leaflet-tooltip b, .leaflet-popup b, '
    "option b, #board b, #case-list b"
)


@pytest.fixture(scope="module")
def hostile_site(demo_site):
    """On the shared demo: a category, a report (description, verify note) and an inspector
    walking today, each named with markup (nothing of the demo is changed, only added)."""
    from sqlalchemy import create_engine, pool
    from sqlalchemy.orm import Session

    from gridops import create_app
    from gridops.db import get_database
    from tests.conftest import app_config

    engine = create_engine(demo_site.database_url, poolclass=pool.NullPool)
    application = create_app(app_config(demo_site.database_url))
    client = application.test_client()
    with Session(engine) as db:
        ids = dict(db.execute(text("SELECT username, id FROM app_user")).all())
        tokens = {
            who: auth.create_token(db, ids[who], "hostile input", days=1)[1]
            for who in ("demo.admin", "demo.inspector")
        }
        grids = (
            db.execute(
                text("SELECT unnest(grid_codes) FROM role_assignment WHERE user_id = :u"),
                {"u": ids["demo.inspector"]},
            )
            .scalars()
            .all()
        )
        walker = auth.create_user(
            db, f"walker-{uuid.uuid4().hex[:6]}", TEST_PASSWORD, display_name=WALKER_NAME
        )
        auth.assign_role(db, walker, "inspector", grid_codes=list(grids))
        tokens["walker"] = auth.create_token(db, walker, "hostile input", days=1)[1]
        lon, lat = db.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM "
                "unit_grid WHERE code = :g AND valid_to IS NULL) s"
            ),
            {"g": grids[0]},
        ).one()
        db.commit()

    def call(who: str, method: str, url: str, body: Any, headers=None):
        answer = client.open(
            url,
            method=method,
            json=body,
            headers={"Authorization": f"Bearer {tokens[who]}", **(headers or {})},
        )
        assert answer.status_code in (200, 201), (url, answer.get_data(as_text=True))
        return answer.get_json()

    code = f"E05{90 + uuid.uuid4().int % 9:02d}"
    call(
        "demo.admin",
        "POST",
        "/api/v1/admin/categories",
        {"code": code, "name_zh": CATEGORY_NAME, "name_en": CATEGORY_NAME, "time_limit_hours": 24},
    )
    case_id = call(
        "demo.inspector",
        "POST",
        "/api/v1/incidents",
        {
            "client_uuid": str(uuid.uuid4()),
            "category": code,
            "lon": lon,
            "lat": lat,
            "captured_at": datetime.now(UTC).isoformat(),
            "description": DESCRIPTION,
        },
    )["id"]
    call(
        "demo.inspector",
        "POST",
        f"/api/v1/cases/{case_id}/transitions",
        {"action": "verify", "note": DESCRIPTION},
        {"If-Match": '"1"'},
    )
    now = datetime.now(UTC)
    points = [
        {
            "t": (now - timedelta(minutes=10 - i)).isoformat(),
            "lon": lon + i * 1e-4,
            "lat": lat,
            "accuracy_m": 5,
        }
        for i in range(6)
    ]
    call("walker", "POST", "/api/v1/patrol/points", {"points": points})
    yield {"case": case_id, "code": code, "walker": walker, "point": (lon, lat)}
    get_database(application).dispose()
    engine.dispose()


def inert(page) -> None:
    """No script of ours ran, and no element came out of the text."""
    assert page.evaluate("window.__xss") is None
    assert page.locator(INJECTED).count() == 0
    assert page.dialogs == []


def hostile_page(browser, demo_site, who: str, viewport=(1366, 900)):
    from tests.test_security_headers import watched_page

    page = watched_page(browser, viewport={"width": viewport[0], "height": viewport[1]})
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    from tests.conftest import sign_in

    sign_in(page, demo_site.base_url, *demo_site.users[who])
    return page


@pytest.mark.browser
def test_markup_in_names_and_descriptions_is_shown_as_text(browser, demo_site, hostile_site):
    from tests.test_security_headers import violations

    case_id, code = hostile_site["case"], hostile_site["code"]
    lon, lat = hostile_site["point"]

    # The dispatcher's board: the case's tooltip and panel, the walker's track.
    page = hostile_page(browser, demo_site, "demo.community")
    page.goto(demo_site.base_url + "/board")
    page.wait_for_selector("body[data-board-ready]", timeout=15_000)
    page.wait_for_selector("body[data-tracks-ready]", timeout=15_000)
    page.evaluate(
        "([lat, lon]) => gridopsMap.setView([lat, lon], 17, {animate: false})", [lat, lon]
    )
    page.locator(f"path.case-{case_id}").dispatch_event("mouseover")
    tooltip = page.locator(".leaflet-tooltip", has_text=f"#{case_id}")
    assert CATEGORY_NAME in tooltip.text_content()
    page.locator(f"path.case-{case_id}").dispatch_event("click")
    panel = page.locator(f".case-panel[data-case-id='{case_id}']")
    panel.wait_for()
    assert panel.locator(".fact-description").text_content() == DESCRIPTION
    assert CATEGORY_NAME in panel.locator(".case-title").text_content()
    page.locator(f"path.track-{hostile_site['walker']}").first.dispatch_event("mouseover")
    assert WALKER_NAME in page.locator(".leaflet-tooltip", has_text="巡查员").text_content()
    inert(page)
    assert violations(page) == [] and page.problems == []
    page.context.close()

    # The inspector's tablet: the case in the list and its map popup.
    page = hostile_page(browser, demo_site, "demo.inspector", (1024, 768))
    page.wait_for_selector("body[data-ready='1']")
    page.click("#tab-todo")
    item = page.locator("#case-list button", has_text=f"#{case_id}")
    assert item.locator("strong").text_content() == f"{CATEGORY_NAME} #{case_id}"
    item.click()
    popup = page.locator(".leaflet-popup-content", has_text=f"#{case_id}")
    assert popup.locator("strong").text_content() == f"{CATEGORY_NAME} #{case_id}"
    inert(page)
    assert violations(page) == [] and page.problems == []
    page.context.close()

    # The planner's hotspot map: the category among the pickers.
    page = hostile_page(browser, demo_site, "demo.planner", (1400, 1000))
    page.goto(demo_site.base_url + "/planner/map")
    page.wait_for_selector("body[data-loaded=planner-map]")
    option = page.locator(f"#pick-category option[value='{code}']")
    assert option.text_content() == f"{code} {CATEGORY_NAME}"
    inert(page)
    assert violations(page) == [] and page.problems == []
    page.context.close()
