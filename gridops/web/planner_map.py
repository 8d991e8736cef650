"""The planner's hotspot map, built with folium from a stored hotspot run (no Flask here).

Which run
    The pickers (kind, period, category, area, resolution) name exactly the parameters a run
    is stored with, so the page shows the newest stored run that matches them
    (``service.existing_run``). When none does, the run is computed and stored with the
    hotspot service, as the planner could through ``POST /api/v1/hotspots/runs`` (the same
    ``read:analytics`` verb): a run of the demo city takes under a second, and asking again
    finds it stored, so the GET is idempotent (a cache fill, like the nightly job's). When it
    cannot be computed (no incident in the period), the page says so and shows the nearest
    stored run instead. ``?run=<id>`` shows one stored run of the jurisdiction.

    Periods are whole local days, the end inclusive in the form and exclusive in the run. The
    "standard" period is the nightly job's: the last complete month for Gi*, the twelve months
    ending with it for emerging runs, so the default page never computes anything.

What is drawn
    Gi* runs: the cells that are significant or hold incidents, coloured by confidence bin
    (-3..3); emerging runs: the cells with a pattern, coloured by it. No incident point, no
    reporter: cells carry counts and statistics only (planners are restricted readers).
    Overlays come from the vector tiles (enterprises, outlets, unit grids; each tile scoped
    to the reader by gridops/tiles.py) and simplified area boundaries as GeoJSON.

Assets
    folium's CDN links are replaced by the copies in ``static/vendor/``; Bootstrap and the
    awesome-markers fonts (not vendored, not needed: no marker icons here) are dropped.
    ``map_assets`` refuses any URL that is not local. Element names are fixed, so the same
    run renders the same script (one block: a CSP hash can be computed for it).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import folium
import folium.plugins
from branca.element import Element, MacroElement
from folium.template import Template
from folium.utilities import JsCode
from h3.api import basic_int as h3int
from markupsafe import escape
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import Actor, Scope
from gridops.errors import FieldError, InvalidInput
from gridops.hotspots import service
from gridops.incidents import admin as catalogue
from gridops.incidents.workcal import TZ
from gridops.parsing import is_digits

Label = Callable[[str], str]  # message key -> text in the page's language

PRESETS = ("standard", "last_month", "last_3_months", "last_6_months", "last_12_months", "custom")
RESOLUTIONS = (7, 8, 9)  # 9 is the planners' finest (features.PLANNER_H3_RESOLUTION)
DEFAULT_RESOLUTION = 9
MAX_ZOOM = 19
MIN_ZOOM = 7
COORD_DIGITS = 6  # about 0.1 m: enough for a hexagon's corners, a third smaller than 7
BOUNDARY_TOLERANCE = {"district": 0.0005, "town": 0.0003, "community": 0.0002}  # degrees

BIN_COLOURS = {
    3: "#b2182b",
    2: "#ef8a62",
    1: "#fddbc7",
    0: "#d9d9d9",
    -1: "#d1e5f0",
    -2: "#67a9cf",
    -3: "#2166ac",
}
PATTERN_COLOURS = {
    "new hot spot": "#b10026",
    "consecutive hot spot": "#e31a1c",
    "intensifying hot spot": "#fc4e2a",
    "persistent hot spot": "#fd8d3c",
    "diminishing hot spot": "#feb24c",
    "sporadic hot spot": "#fed976",
    "oscillating hot spot": "#c51b7d",
    "historical hot spot": "#dfc27d",
    "new cold spot": "#08306b",
    "consecutive cold spot": "#08519c",
    "intensifying cold spot": "#2171b5",
    "persistent cold spot": "#4292c6",
    "diminishing cold spot": "#6baed6",
    "sporadic cold spot": "#9ecae1",
    "oscillating cold spot": "#542788",
    "historical cold spot": "#80cdc1",
}
OVERLAY_STYLES = {
    "enterprises": {"radius": 3, "weight": 1, "color": "#5b3a00", "fillColor": "#f0a000",
                    "fill": True, "fillOpacity": 0.9, "opacity": 1},
    "outlets": {"radius": 5, "weight": 2, "color": "#ffffff", "fillColor": "#006d2c",
                "fill": True, "fillOpacity": 1, "opacity": 1},
    "grids": {"weight": 0.6, "color": "#555555", "fill": False, "opacity": 0.8},
}  # fmt: skip
BOUNDARY_STYLES = {
    "district": {"color": "#333333", "weight": 2.5, "fillColor": "#f4f1ea", "fillOpacity": 0.6},
    "town": {"color": "#666666", "weight": 1.5, "fill": False, "dashArray": "4 3"},
    "community": {"color": "#888888", "weight": 0.8, "fill": False},
}


# -- the pickers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MapChoice:
    """What the planner asked for; ``start``/``end`` are local days, ``end`` inclusive."""

    kind: str = "gistar"
    preset: str = "standard"
    start: date | None = None
    end: date | None = None
    category: str | None = None
    area: str | None = None
    resolution: int = DEFAULT_RESOLUTION
    run_id: int | None = None

    def query(self) -> dict[str, str]:
        """The choice as the form's query string (for links)."""
        out = {"kind": self.kind, "preset": self.preset, "resolution": str(self.resolution)}
        if self.preset == "custom" and self.start and self.end:
            out.update(start=self.start.isoformat(), end=self.end.isoformat())
        if self.category:
            out["category"] = self.category
        if self.area:
            out["area"] = self.area
        return out


def month_start(day: date, back: int = 0) -> date:
    index = day.year * 12 + day.month - 1 - back
    return date(index // 12, index % 12 + 1, 1)


def preset_period(preset: str, kind: str, today: date) -> tuple[date, date]:
    """(first day, last day) of a preset, in whole months before the current one."""
    if preset == "standard":
        preset = "last_12_months" if kind == "emerging" else "last_month"
    months = {"last_month": 1, "last_3_months": 3, "last_6_months": 6, "last_12_months": 12}
    this_month = month_start(today)
    return month_start(today, months[preset]), this_month - timedelta(days=1)


def parse_choice(args: Mapping[str, str], today: date) -> MapChoice:
    """The pickers from a query string; InvalidInput (422) names every bad one."""
    errors: list[FieldError] = []
    raw_run = (args.get("run") or "").strip()
    run_id = None
    if raw_run:
        if is_digits(raw_run) and len(raw_run) < 10:
            run_id = int(raw_run)
        else:
            errors.append(FieldError("run", "a run id (a whole number)"))
    kind = args.get("kind") or "gistar"
    if kind not in service.KINDS:
        errors.append(FieldError("kind", f"one of {', '.join(service.KINDS)}"))
        kind = "gistar"
    preset = args.get("preset") or "standard"
    if preset not in PRESETS:
        errors.append(FieldError("preset", f"one of {', '.join(PRESETS)}"))
        preset = "standard"
    resolution = DEFAULT_RESOLUTION
    raw_res = args.get("resolution") or str(DEFAULT_RESOLUTION)
    if is_digits(raw_res) and int(raw_res) in RESOLUTIONS:
        resolution = int(raw_res)
    else:
        errors.append(FieldError("resolution", f"one of {', '.join(map(str, RESOLUTIONS))}"))
    start = end = None
    if preset == "custom":
        days: dict[str, date | None] = {}
        for name in ("start", "end"):
            raw = (args.get(name) or "").strip()
            try:
                days[name] = date.fromisoformat(raw)
            except ValueError:
                errors.append(FieldError(name, "a date as YYYY-MM-DD (custom period)"))
                days[name] = None
        start, end = days["start"], days["end"]
        if start and end and end < start:
            errors.append(FieldError("end", f"{end} is before start {start}"))
        if end and end >= today + timedelta(days=1):
            errors.append(FieldError("end", "the period must end by today"))
    else:
        start, end = preset_period(preset, kind, today)
    category = (args.get("category") or "").strip().upper() or None
    if category is not None and not service.CATEGORY_RE.match(category):
        errors.append(FieldError("category", "a minor code such as E0502 or a major one (E05)"))
    area = (args.get("area") or "").strip() or None
    if area is not None and not service.AREA_RE.match(area):
        errors.append(FieldError("area", "an administrative area code (6, 9 or 12 digits)"))
    if errors:
        raise InvalidInput("bad hotspot map choice", errors)
    return MapChoice(kind, preset, start, end, category, area, resolution, run_id)


def emerging_step(start: datetime, end: datetime) -> str:
    """The longest step that still gives a trend (three steps) over the period."""
    for step in ("month", "week"):
        if len(service.step_starts(start, end, step)) >= service.MIN_STEPS:
            return step
    return "day"


def default_area(session: Session, scope: Scope) -> str | None:
    """The jurisdiction's first area (admins: the first top-level area)."""
    if scope.everything:
        return session.execute(
            text("SELECT code FROM admin_area WHERE parent_code IS NULL ORDER BY code LIMIT 1")
        ).scalar()
    return scope.all_areas[0] if scope.all_areas else None


@dataclass(frozen=True)
class AreaOption:
    code: str
    name: str
    level: str


def area_options(session: Session, scope: Scope) -> list[AreaOption]:
    """Areas a run may be made of: the city, districts and towns inside the jurisdiction."""
    rows = session.execute(
        text(
            "SELECT t.code, t.name, t.level FROM admin_area t "
            "WHERE t.level IN ('city', 'district', 'town') "
            "ORDER BY array_position(ARRAY['city','district','town'], t.level::text), t.code"
        )
    ).all()
    return [
        AreaOption(r.code, r.name, r.level) for r in rows if service.area_in_scope(r.code, scope)
    ]


def category_options(session: Session) -> list[dict[str, Any]]:
    """The catalogue's major classes with their active minors (the two-level picker)."""
    return catalogue.category_tree(session)


# -- the run -----------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """The run shown, how it was found, and what the page says about it."""

    run: dict[str, Any] | None
    how: str  # stored | computed | asked (?run=) | nearest | none
    problem: str | None = None  # why the choice has no run of its own
    choice: MapChoice = field(default_factory=MapChoice)


def choice_of_run(run: Mapping[str, Any]) -> MapChoice:
    """The pickers that name a stored run (for ``?run=`` and the nearest run's link)."""
    start = datetime.fromisoformat(run["start"]).astimezone(TZ).date()
    end = datetime.fromisoformat(run["end"]).astimezone(TZ).date() - timedelta(days=1)
    resolution = run["resolution"] if run["resolution"] in RESOLUTIONS else DEFAULT_RESOLUTION
    return MapChoice(
        kind=run["kind"],
        preset="custom",
        start=start,
        end=end,
        category=run["filters"].get("category"),
        area=run["area"]["code"],
        resolution=resolution,
        run_id=run["id"],
    )


def nearest_run(session: Session, scope: Scope, choice: MapChoice) -> dict[str, Any] | None:
    """The stored run most like the choice: same kind, then category, area, resolution and
    overlapping period; the newest among equals."""
    best, best_score = None, None
    wanted_start = choice.start.isoformat() if choice.start else ""
    for run in service.list_runs(session, scope, limit=200):
        if run["resolution"] not in RESOLUTIONS:
            continue
        score = (
            run["kind"] == choice.kind,
            run["filters"].get("category") == choice.category
            and set(run["filters"]) <= {"category"},
            run["area"]["code"] == choice.area,
            run["resolution"] == choice.resolution,
            run["start"][:10] <= (choice.end.isoformat() if choice.end else "")
            and run["end"][:10] > wanted_start,
        )
        if best_score is None or score > best_score:  # list_runs is newest first
            best, best_score = run, score
    return best


def resolve_run(
    session: Session, actor: Actor, choice: MapChoice, *, compute: bool = True
) -> RunOutcome:
    """The run for the choice (see the module docstring). A run the choice cannot have (no
    incidents) gives the nearest stored one and the reason; bad parameters raise
    InvalidInput (422), a foreign or missing ``run`` NotFound."""
    scope = actor.scope()
    if choice.run_id is not None:
        run = service.get_run(session, choice.run_id, scope)
        return RunOutcome(run, "asked", choice=choice_of_run(run))
    area = choice.area or default_area(session, scope)
    choice = replace(choice, area=area)
    assert choice.start is not None and choice.end is not None
    start = datetime(choice.start.year, choice.start.month, choice.start.day, tzinfo=TZ)
    end = datetime(choice.end.year, choice.end.month, choice.end.day, tzinfo=TZ) + timedelta(1)
    step = emerging_step(start, end) if choice.kind == "emerging" else None
    params = service.validate_run(
        session,
        scope,
        kind=choice.kind,
        resolution=choice.resolution,
        start=start,
        end=end,
        step=step,
        category=choice.category,
        area=area,
    )
    found = service.existing_run(
        session,
        kind=params.kind,
        resolution=params.resolution,
        start=params.start,
        end=params.end,
        area=params.area,
        step=params.step,
        filters=params.filters(),
    )
    if found is not None:
        return RunOutcome(service.get_run(session, found, scope), "stored", choice=choice)
    problem = "not_computed"
    if compute:
        try:
            with session.begin_nested():
                run_id = service.execute_run(session, params, created_by=actor.user_id)
            session.commit()
            return RunOutcome(service.get_run(session, run_id, scope), "computed", choice=choice)
        except InvalidInput as exc:
            problem = "; ".join(e.message for e in exc.errors) or str(exc)
    nearest = nearest_run(session, scope, choice)
    if nearest is None:
        return RunOutcome(None, "none", problem, choice)
    return RunOutcome(service.get_run(session, nearest["id"], scope), "nearest", problem, choice)


# -- a small cache of rendered maps ----------------------------------------------------------
#
# Building a city's map costs about a second (simplifying 800 community outlines, 4,000
# hexagons, folium's templates); the same run seen again by anyone with the same jurisdiction
# and language renders the same parts. Runs never change once stored; area outlines can, so
# their version is part of the key.

MAP_CACHE_SIZE = 12  # maps (a few MB each) and boundary layers
_cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_cache_lock = threading.Lock()


def _cached(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = make()
    with _cache_lock:
        _cache[key] = value
        while len(_cache) > MAP_CACHE_SIZE:
            _cache.popitem(last=False)
    return value


def database_key(session: Session) -> str:
    """Which database this is (tests serve several from one process)."""
    return session.connection().engine.url.render_as_string(hide_password=True)


def areas_version(session: Session) -> tuple[int, int]:
    """Changes whenever an area row is written (row count and newest transaction id)."""
    row = session.execute(
        text("SELECT count(*), coalesce(max(xmin::text::bigint), 0) FROM admin_area")
    ).one()
    return int(row[0]), int(row[1])


def scope_key(scope: Scope) -> tuple[Any, ...]:
    return (scope.everything, scope.full_areas, scope.full_grids, scope.restricted_areas)


# -- layers ------------------------------------------------------------------------------------


def _ring(cell: int) -> list[list[float]]:
    return [[round(x, COORD_DIGITS), round(y, COORD_DIGITS)] for x, y in service.hexagon_ring(cell)]


def hotspot_features(session: Session, run: Mapping[str, Any], label: Label) -> dict[str, Any]:
    """The run's cells to draw as a FeatureCollection: statistics per H3 cell, never points.
    Gi*: significant cells and cells with incidents; emerging: cells with a pattern."""
    emerging = run["kind"] == "emerging"
    where = (
        "category IS NOT NULL AND category <> 'no pattern'"
        if emerging
        else "(bin <> 0 OR count > 0)"
    )
    rows = session.execute(
        text(
            "SELECT cell, count, z, p, bin, trend_z, category FROM hotspot_cell "
            f"WHERE run_id = :id AND {where} ORDER BY cell"
        ),
        {"id": run["id"]},
    ).all()
    features = []
    for row in rows:
        cell = int(row.cell)
        properties: dict[str, Any] = {
            "cell": h3int.int_to_str(cell),
            "count": int(row.count),
            "z": None if row.z is None else round(float(row.z), 2),
            "p": None if row.p is None else round(float(row.p), 4),
            "bin": int(row.bin),
            "bin_label": label(f"planner.bin.{int(row.bin)}"),
        }
        if emerging:
            properties["pattern"] = row.category
            properties["pattern_label"] = label(f"planner.pattern.{row.category}")
            properties["trend_z"] = None if row.trend_z is None else round(float(row.trend_z), 2)
        features.append(
            {
                "type": "Feature",
                "id": properties["cell"],
                "geometry": {"type": "Polygon", "coordinates": [_ring(cell)]},
                "properties": properties,
            }
        )
    return {"type": "FeatureCollection", "features": features}


def boundaries(session: Session, scope: Scope, level: str) -> dict[str, Any]:
    """The areas of one level the reader may see (with their ancestors as context),
    simplified for display; names HTML-escaped (folium's tooltips use innerHTML)."""
    rows = session.execute(
        text(
            "SELECT t.code, t.name, ST_AsGeoJSON(ST_SimplifyPreserveTopology(t.geom, :tol), "
            f":digits) AS geometry FROM admin_area t WHERE t.level = :level "
            f"AND {scope.area_visible('t.code')} ORDER BY t.code"
        ),
        {
            "level": level,
            "tol": BOUNDARY_TOLERANCE[level],
            "digits": 5,
            **scope.params(),
        },
    ).all()
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": r.code,
                "geometry": json.loads(r.geometry),
                "properties": {"code": r.code, "name": str(escape(r.name))},
            }
            for r in rows
        ],
    }


def area_bounds(session: Session, code: str) -> list[list[float]] | None:
    """[[south, west], [north, east]] of an area (Leaflet's lat/lng order)."""
    row = session.execute(
        text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
            "(SELECT ST_Extent(geom) AS e FROM admin_area WHERE code = :code) s"
        ),
        {"code": code},
    ).one()
    if row[0] is None:
        return None
    return [[float(row[1]), float(row[0])], [float(row[3]), float(row[2])]]


def legend_entries(run: Mapping[str, Any], features: Mapping[str, Any], label: Label) -> list:
    """(colour, text) of each class drawn, with its number of cells."""
    counts: dict[Any, int] = {}
    key = "pattern" if run["kind"] == "emerging" else "bin"
    for feature in features["features"]:
        value = feature["properties"][key]
        counts[value] = counts.get(value, 0) + 1
    if run["kind"] == "emerging":
        order = [p for p in PATTERN_COLOURS if p in counts]
        return [
            {"colour": PATTERN_COLOURS[p], "label": label(f"planner.pattern.{p}"), "n": counts[p]}
            for p in order
        ]
    return [
        {"colour": BIN_COLOURS[b], "label": label(f"planner.bin.{b}"), "n": counts.get(b, 0)}
        for b in (3, 2, 1, 0, -1, -2, -3)
    ]


class Legend(MacroElement):
    """The map's legend as a Leaflet control (text set with textContent, never HTML)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        (function () {
            var entries = {{ this.entries|tojson }};
            var legend = L.control({position: "bottomright"});
            legend.onAdd = function () {
                var box = L.DomUtil.create("div", "planner-legend");
                box.id = "planner-legend";
                box.setAttribute("role", "group");
                box.setAttribute("aria-label", {{ this.title|tojson }});
                var title = L.DomUtil.create("strong", "", box);
                title.textContent = {{ this.title|tojson }};
                var list = L.DomUtil.create("ul", "", box);
                entries.forEach(function (entry) {
                    var item = L.DomUtil.create("li", "", list);
                    var swatch = L.DomUtil.create("span", "swatch", item);
                    swatch.style.backgroundColor = entry.colour;
                    item.appendChild(document.createTextNode(
                        entry.label + " (" + entry.n.toLocaleString() + ")"));
                });
                if ({{ this.note|tojson }}) {
                    var note = L.DomUtil.create("p", "note", box);
                    note.textContent = {{ this.note|tojson }};
                }
                L.DomEvent.disableClickPropagation(box);
                return box;
            };
            legend.addTo({{ this._parent.get_name() }});
        })();
        {% endmacro %}
        """
    )

    def __init__(self, title: str, entries: list[dict[str, Any]], note: str = "") -> None:
        super().__init__()
        self._name = "Legend"
        self.title = title
        self.entries = entries
        self.note = note


def _point_popup(fields: list[tuple[str, str]]) -> JsCode:
    """A click handler for a vector-tile point layer: a popup of some properties, as text."""
    return JsCode(
        "function (e) {"
        f" var fields = {json.dumps(fields, ensure_ascii=False)};"
        " var box = document.createElement('div');"
        " var table = document.createElement('table');"
        " fields.forEach(function (f) {"
        "  var value = e.layer.properties[f[0]];"
        "  if (value === undefined || value === null) { return; }"
        "  var row = table.insertRow(); var th = document.createElement('th');"
        "  th.textContent = f[1]; row.appendChild(th); row.insertCell().textContent = value;"
        " });"
        " box.appendChild(table);"
        " L.popup().setLatLng(e.latlng).setContent(box).openOn(e.target._map);"
        "}"
    )


@dataclass
class MapParts:
    """What the page embeds: the map's element, its one script, and its asset URLs."""

    html: str
    script: str
    js: list[str]
    css: list[str]


def _name_elements(root: Element) -> None:
    """Fixed element names (folium makes random ones), so a run renders the same script."""
    counter = 0

    def walk(element: Element) -> Iterator[Element]:
        yield element
        for child in element._children.values():
            yield from walk(child)

    for element in walk(root):
        if element is root:
            continue
        counter += 1
        element._id = f"{counter:03d}"


def local_assets(static_url: Callable[[str], str]) -> dict[str, list[tuple[str, str]]]:
    """folium's asset names pointed at static/vendor/ (None: dropped)."""
    return {
        "map_js": [
            ("leaflet", static_url("vendor/leaflet/leaflet.js")),
            ("jquery", static_url("vendor/jquery/jquery.min.js")),
        ],
        "map_css": [("leaflet_css", static_url("vendor/leaflet/leaflet.css"))],
        "vectorgrid_js": [
            ("vectorGrid", static_url("vendor/leaflet.vectorgrid/Leaflet.VectorGrid.bundled.js"))
        ],
    }


def map_assets(root: Element, local_prefix: str) -> tuple[list[str], list[str]]:
    """The JS and CSS URLs every element of the map needs, in order, once each; a URL that is
    not under ``local_prefix`` raises (an offline tablet cannot reach a CDN)."""
    js: list[str] = []
    css: list[str] = []

    def walk(element: Element) -> Iterator[Element]:
        yield element
        for child in element._children.values():
            yield from walk(child)

    for element in walk(root):
        for target, links in ((js, getattr(element, "default_js", [])),
                              (css, getattr(element, "default_css", []))):  # fmt: skip
            for _, url in links:
                if not url.startswith(local_prefix):
                    raise RuntimeError(f"{type(element).__name__} needs a non-local asset {url}")
                if url not in target:
                    target.append(url)
    return js, css


def build_map(
    session: Session,
    actor: Actor,
    run: Mapping[str, Any] | None,
    label: Label,
    *,
    area: str | None = None,
    static_url: Callable[[str], str] = lambda path: "/static/" + path,
    api_root: str = "",
) -> tuple[folium.Map, int]:
    """The folium map of a run (None: the jurisdiction without hotspots) with its legend and
    overlays; returns the map and the number of hexagons drawn."""
    scope = actor.scope()
    assets = local_assets(static_url)
    focus = (run["area"]["code"] if run else None) or area or default_area(session, scope)
    bounds = area_bounds(session, focus) if focus else None
    centre = (
        [(bounds[0][0] + bounds[1][0]) / 2, (bounds[0][1] + bounds[1][1]) / 2]
        if bounds
        else [23.02, 113.12]
    )
    fmap = folium.Map(
        location=centre,
        tiles=None,  # no basemap server: the tablets and this page are offline-first
        zoom_start=10,
        crs="EPSG3857",  # the vector tiles are Web Mercator (ST_TileEnvelope)
        control_scale=True,
        width="100%",
        height="100%",
    )
    # folium passes max/min zoom to a tile layer only; without one, Leaflet needs them on the
    # map itself (markercluster and the vector grids fail on an unbounded zoom).
    fmap.options.update(max_zoom=MAX_ZOOM, min_zoom=MIN_ZOOM, zoom_snap=0.25)
    fmap.default_js = assets["map_js"]
    fmap.default_css = assets["map_css"]
    if bounds:
        fmap.fit_bounds(bounds)

    # Panes: boundaries under the hexagons, points above them (a re-added overlay would
    # otherwise come to the front and hide the others).
    folium.map.CustomPane("boundaries", z_index=350).add_to(fmap)
    folium.map.CustomPane("gridlines", z_index=380).add_to(fmap)
    folium.map.CustomPane("points", z_index=450, pointer_events=True).add_to(fmap)

    for level, shown in (("district", True), ("town", False), ("community", False)):
        data = _cached(
            ("boundaries", database_key(session), level, scope_key(scope),
             areas_version(session)),
            lambda level=level: boundaries(session, scope, level),
        )  # fmt: skip
        if not data["features"]:
            continue
        style = BOUNDARY_STYLES[level]
        layer = folium.GeoJson(
            data,
            name=label(f"planner.layer.{level}"),
            style_function=lambda _feature, style=style: style,
            show=shown,
            pane="boundaries",
            interactive=level == "district",
            smooth_factor=1.0,
        )
        if level == "district":
            folium.GeoJsonTooltip(
                fields=["name", "code"],
                aliases=[label("planner.area"), label("planner.code")],
                class_name="planner-tooltip",
                sticky=False,
            ).add_to(layer)
        layer.add_to(fmap)

    tiles = api_root + "/api/v1/tiles/{layer}/{z}/{x}/{y}.pbf"
    for layer_id, fields, pane, min_zoom in (
        ("grids", None, "gridlines", 13),
        ("enterprises", [("name", label("planner.name")), ("code", label("planner.uscc")),
                         ("category", label("planner.industry")),
                         ("status", label("planner.risk"))], "points", MIN_ZOOM),
        ("outlets", [("name", label("planner.name")), ("category", label("planner.type"))],
         "points", MIN_ZOOM),
    ):  # fmt: skip
        options = {
            "vectorTileLayerStyles": {layer_id: OVERLAY_STYLES[layer_id]},
            "interactive": fields is not None,
            "pane": pane,
            "minZoom": min_zoom,
            "maxNativeZoom": 16,  # deeper tiles hold the same features: ask once per z16
            "className": f"overlay-{layer_id}",
        }
        overlay = folium.plugins.VectorGridProtobuf(
            tiles.replace("{layer}", layer_id),
            name=label(f"planner.layer.{layer_id}"),
            options=options,
            show=False,
        )
        overlay.default_js = assets["vectorgrid_js"]
        if fields:
            overlay.add_child(folium.elements.EventHandler("click", _point_popup(fields)))
        overlay.add_to(fmap)

    drawn = 0
    if run is not None:
        features = hotspot_features(session, run, label)
        drawn = len(features["features"])
        emerging = run["kind"] == "emerging"

        def style(feature: dict[str, Any]) -> dict[str, Any]:
            props = feature["properties"]
            colour = (
                PATTERN_COLOURS.get(props["pattern"], "#999999")
                if emerging
                else BIN_COLOURS[props["bin"]]
            )
            # An opaque outline of the fill's colour: seamless at city scale, the hexagons'
            # edges show when zoomed in.
            return {"fillColor": colour, "color": colour, "weight": 0.8, "fillOpacity": 0.6}

        fields = ["count", "z", "p", "bin_label"]
        aliases = [label(f"planner.field.{f}") for f in fields]
        if emerging:
            fields = ["pattern_label", "count", "trend_z", "z", "bin_label"]
            aliases = [label(f"planner.field.{f}") for f in fields]
        hotspots = folium.GeoJson(
            features,
            name=label("planner.layer.hotspots"),
            style_function=style,
            class_name="hotspot-cell",
            smooth_factor=0.5,
        )
        folium.GeoJsonTooltip(
            fields=fields, aliases=aliases, class_name="planner-tooltip", sticky=True
        ).add_to(hotspots)
        folium.GeoJsonPopup(
            fields=["cell", *fields],
            aliases=[label("planner.field.cell"), *aliases],
            class_name="planner-popup",
        ).add_to(hotspots)
        hotspots.add_to(fmap)
        title = label("planner.legend.emerging" if emerging else "planner.legend.gistar")
        note = "" if emerging else label("planner.legend.note")
        Legend(title, legend_entries(run, features, label), note).add_to(fmap)

    folium.LayerControl(collapsed=False, position="topright").add_to(fmap)
    return fmap, drawn


def render_map(fmap: folium.Map, local_prefix: str = "/static/") -> MapParts:
    """The figure's parts for our own page: the map div, the script, and the local assets."""
    _name_elements(fmap.get_root())
    fmap._id = "hotspots"  # the element id "map_hotspots" (tests and CSS find it)
    root = fmap.get_root()
    root.render()  # lets every element add its links and children first
    js, css = map_assets(root, local_prefix)
    html = root.html.render()
    script = root.script.render()
    return MapParts(html=html, script=script, js=js, css=css)


def map_parts(
    session: Session,
    actor: Actor,
    run: Mapping[str, Any] | None,
    label: Label,
    lang: str,
    *,
    area: str | None = None,
    static_url: Callable[[str], str] = lambda path: "/static/" + path,
    api_root: str = "",
    local_prefix: str = "/static/",
) -> tuple[MapParts, int]:
    """``build_map`` and ``render_map``, cached (see above): (parts, hexagons drawn)."""
    key = (
        database_key(session),
        run["id"] if run else None,
        None if run else area,
        lang,
        scope_key(actor.scope()),
        areas_version(session),
        static_url(""),
        api_root,
        local_prefix,
    )

    def make() -> tuple[MapParts, int]:
        fmap, drawn = build_map(
            session, actor, run, label, area=area, static_url=static_url, api_root=api_root
        )
        return render_map(fmap, local_prefix), drawn

    return _cached(key, make)
