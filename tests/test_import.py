"""``gridops import``: every rejection, all-or-nothing, idempotence, CRS and offsets."""

from __future__ import annotations

import prcoords
import pytest
from shapely.geometry import Point, Polygon, box
from sqlalchemy import text

from gridops.grids.locate import locate
from gridops.importing import ImportOptions, ImportRejected, run_import
from tests import factories as f


def count(session, table: str) -> int:
    return session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


@pytest.fixture
def areas_file(tmp_path):
    return f.write(tmp_path / "areas.gpkg", f.area_rows())


@pytest.fixture
def with_areas(session, areas_file):
    run_import(session, "areas", areas_file)
    return session


def rejected(session, kind, path, **options) -> list[str]:
    """Import expecting rejection; returns the reasons and checks nothing was written."""
    tables = {
        "areas": "admin_area",
        "grids": "unit_grid",
        "enterprises": "enterprise",
        "outlets": "service_outlet",
    }
    before = count(session, tables[kind])
    with pytest.raises(ImportRejected) as caught:
        run_import(session, kind, path, ImportOptions(**options))
    assert count(session, tables[kind]) == before, "a rejected import wrote rows"
    return [f"row {r.row} ({r.code}): {r.reason}" for r in caught.value.report.rejects]


# -- areas ---------------------------------------------------------------------------------


def test_import_areas_then_reimport_is_idempotent(session, areas_file):
    first = run_import(session, "areas", areas_file)
    assert (first.inserted, first.updated, first.unchanged, first.rejects) == (6, 0, 0, [])
    again = run_import(session, "areas", areas_file)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 6)
    assert count(session, "admin_area") == 6


def test_changed_name_is_an_update(with_areas, tmp_path):
    rows = f.replace(f.area_rows(), "440604001001", name="新西社区")
    report = run_import(with_areas, "areas", f.write(tmp_path / "a2.gpkg", rows))
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 5)
    name = with_areas.execute(
        text("SELECT name FROM admin_area WHERE code = '440604001001'")
    ).scalar()
    assert name == "新西社区"


def test_level_and_parent_are_inferred_from_the_codes(session, tmp_path):
    rows = [
        {k: v for k, v in r.items() if k not in ("level", "parent_code")} for r in f.area_rows()
    ]
    run_import(session, "areas", f.write(tmp_path / "bare.gpkg", rows))
    parent = session.execute(
        text("SELECT parent_code, level FROM admin_area WHERE code = '440604001002'")
    ).one()
    assert tuple(parent) == ("440604001", "community")


def test_self_intersecting_polygon_is_rejected_with_the_postgis_reason(session, tmp_path):
    bowtie = Polygon([(113.0, 23.0), (113.02, 23.02), (113.02, 23.0), (113.0, 23.02)])
    rows = f.replace(f.area_rows(), "440604001001", geometry=bowtie)
    reasons = rejected(session, "areas", f.write(tmp_path / "bad.gpkg", rows))
    assert any(
        r.startswith("row 5 (440604001001): invalid geometry: Self-intersection") for r in reasons
    ), reasons


def test_empty_geometry_is_rejected(session, tmp_path):
    rows = f.replace(f.area_rows(), "440605", geometry=Polygon())
    reasons = rejected(session, "areas", f.write(tmp_path / "empty.geojson", rows))
    assert any(
        "(440605)" in r and ("empty geometry" in r or "no geometry" in r) for r in reasons
    ), reasons


def test_code_of_the_wrong_form_is_rejected(session, tmp_path):
    rows = f.replace(f.area_rows(), "440605", code="44O605")
    reasons = rejected(session, "areas", f.write(tmp_path / "code.gpkg", rows))
    assert any("'44O605' is not a 6, 9 or 12 digit administrative code" in r for r in reasons)


def test_code_not_beginning_with_its_parents_is_rejected(session, tmp_path):
    rows = f.replace(f.area_rows(), "440604001002", code="440605001002")
    rows = f.replace(rows, "440605001002", parent_code="440604001")
    reasons = rejected(session, "areas", f.write(tmp_path / "prefix.gpkg", rows))
    assert any("does not begin with its parent's code '440604001'" in r for r in reasons)


def test_missing_parent_is_rejected(session, tmp_path):
    rows = [r for r in f.area_rows() if r["code"] != "440604001"]
    reasons = rejected(session, "areas", f.write(tmp_path / "orphan.gpkg", rows))
    assert any("its parent 440604001 is neither in the file nor stored" in r for r in reasons)


def test_child_outside_its_parent_is_rejected_beyond_tolerance(session, tmp_path):
    # Push the east community 0.005° (about 500 m) east, out of its town.
    rows = f.replace(f.area_rows(), "440604001002", geometry=box(113.025, 23.0, 113.045, 23.02))
    reasons = rejected(session, "areas", f.write(tmp_path / "out.gpkg", rows))
    assert any(
        "(440604001002): not within its parent 440604001 (祖庙街道)" in r for r in reasons
    ), reasons


def test_child_a_few_centimetres_outside_is_forgiven(session, tmp_path):
    nudged = box(113.02, 23.0, 113.04 + 2e-7, 23.02)  # 2 cm past the town's edge
    rows = f.replace(f.area_rows(), "440604001002", geometry=nudged)
    report = run_import(session, "areas", f.write(tmp_path / "nudge.gpkg", rows))
    assert report.rejects == []


def test_overlapping_siblings_are_rejected(session, tmp_path):
    rows = f.replace(f.area_rows(), "440604001002", geometry=box(113.019, 23.0, 113.04, 23.02))
    reasons = rejected(session, "areas", f.write(tmp_path / "overlap.gpkg", rows))
    assert any("(440604001001): overlaps its sibling 440604001002" in r for r in reasons)
    assert any("(440604001002): overlaps its sibling 440604001001" in r for r in reasons)


def test_overlap_with_a_stored_sibling_is_rejected(with_areas, tmp_path):
    row = {"code": "440604001003", "name": "新社区", "geometry": box(113.01, 23.0, 113.03, 23.01)}
    reasons = rejected(with_areas, "areas", f.write(tmp_path / "one.gpkg", [row]))
    assert any("overlaps its sibling 440604001001" in r for r in reasons), reasons


def test_allow_rejects_writes_the_good_rows(session, tmp_path):
    rows = f.replace(f.area_rows(), "440605", code="44O605")
    report = run_import(
        session, "areas", f.write(tmp_path / "mixed.gpkg", rows), ImportOptions(allow_rejects=True)
    )
    assert report.inserted == 5 and len(report.rejects) == 1 and report.written
    assert count(session, "admin_area") == 5


def test_dry_run_counts_but_writes_nothing(session, areas_file):
    report = run_import(session, "areas", areas_file, ImportOptions(dry_run=True))
    assert report.inserted == 6 and not report.written
    assert count(session, "admin_area") == 0


def test_field_map_and_shapefile(session, tmp_path):
    rows = [
        {"GB_CODE": r["code"], "MC": r["name"], "geometry": r["geometry"]} for r in f.area_rows()
    ]
    path = f.write(tmp_path / "areas.shp", rows)
    report = run_import(
        session, "areas", path, ImportOptions(field_map={"code": "GB_CODE", "name": "MC"})
    )
    assert report.inserted == 6


def test_missing_column_names_it_and_suggests_field_map(session, tmp_path):
    rows = [
        {"GB_CODE": r["code"], "MC": r["name"], "geometry": r["geometry"]} for r in f.area_rows()
    ]
    with pytest.raises(Exception, match="--field-map"):
        run_import(session, "areas", f.write(tmp_path / "raw.gpkg", rows))


def test_metric_crs_is_reprojected(session, tmp_path):
    import geopandas as gpd

    frame = gpd.GeoDataFrame(f.area_rows(), crs=4326).to_crs(4547)
    path = tmp_path / "metric.gpkg"
    frame.to_file(path)
    run_import(session, "areas", path)
    xmin, ymax = session.execute(
        text("SELECT ST_XMin(geom), ST_YMax(geom) FROM admin_area WHERE code = '440604001001'")
    ).one()
    assert xmin == pytest.approx(113.00, abs=1e-7) and ymax == pytest.approx(23.02, abs=1e-7)


@pytest.mark.parametrize(
    ("system", "forward"), [("gcj02", prcoords.wgs_gcj), ("bd09", prcoords.wgs_bd)]
)
def test_chinese_offset_systems_are_undone(session, tmp_path, system, forward):
    def shifted(geom):
        import shapely

        def move(coords):
            out = coords.copy()
            for i, (lon, lat) in enumerate(coords):
                c = forward(prcoords.Coords(lat, lon))
                out[i] = (c.lon, c.lat)
            return out

        return shapely.transform(geom, move)

    rows = [{**r, "geometry": shifted(r["geometry"])} for r in f.area_rows()]
    run_import(
        session, "areas", f.write(tmp_path / f"{system}.gpkg", rows), ImportOptions(offset=system)
    )
    # The corner comes back to within a centimetre of where it was (about 600 m off if ignored).
    metres = session.execute(
        text(
            "SELECT ST_Distance(ST_PointN(ST_ExteriorRing(ST_GeometryN(geom, 1)), 1)::geography,"
            " ST_SetSRID(ST_MakePoint(113.02, 23.0), 4326)::geography) "
            "FROM admin_area WHERE code = '440604001001'"
        )
    ).scalar()
    assert metres < 0.01


def test_unreadable_file_is_a_clear_error(session, tmp_path):
    path = tmp_path / "notes.gpkg"
    path.write_text("not a geopackage")
    with pytest.raises(Exception, match="is not a GIS file gridops can read"):
        run_import(session, "areas", path)


# -- unit grids ----------------------------------------------------------------------------


def grid_rows():
    return f.strip_grid(f.COMMUNITY_W, "440604001001")


def test_import_grids_and_reimport(with_areas, tmp_path):
    path = f.write(tmp_path / "grids.gpkg", grid_rows())
    assert run_import(with_areas, "grids", path).inserted == 4
    again = run_import(with_areas, "grids", path)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 4)


def test_gap_in_the_grid_cover_is_rejected_with_its_area(with_areas, tmp_path):
    reasons = rejected(with_areas, "grids", f.write(tmp_path / "gap.gpkg", grid_rows()[:3]))
    gap = [r for r in reasons if "uncovered" in r]
    assert len(gap) == 1 and "of community 440604001001 (西社区)" in gap[0]
    m2 = float(gap[0].split("leave ")[1].split(" m²")[0])
    assert 1.1e6 < m2 < 1.2e6  # a quarter of a 2.05 km x 2.2 km community


def test_grid_code_of_the_wrong_form_and_outside_its_community(with_areas, tmp_path):
    rows = grid_rows()
    rows[0] = {**rows[0], "code": "44060400100101"}  # 14 digits under the 15-digit edition
    rows[1] = {**rows[1], "geometry": box(113.005, 23.0, 113.025, 23.02)}  # crosses into E
    reasons = rejected(with_areas, "grids", f.write(tmp_path / "bad.gpkg", rows))
    assert any("is not a unit-grid code under GB/T 30428.2-2013" in r for r in reasons)
    assert any("(440604001001002): not within its parent 440604001001" in r for r in reasons)


def test_changed_grid_is_versioned_not_overwritten(with_areas, tmp_path):
    run_import(with_areas, "grids", f.write(tmp_path / "g1.gpkg", grid_rows()))
    rows = grid_rows()
    x0, y0, x1, y1 = rows[0]["geometry"].bounds
    mid = (x1 + x0) / 2
    rows[0]["geometry"] = box(x0, y0, mid, y1)
    rows[1]["geometry"] = box(mid, y0, rows[1]["geometry"].bounds[2], y1)
    report = run_import(with_areas, "grids", f.write(tmp_path / "g2.gpkg", rows))
    assert (report.inserted, report.updated, report.unchanged) == (0, 2, 2)
    versions = with_areas.execute(
        text("SELECT count(*), count(valid_to) FROM unit_grid WHERE code LIKE '440604001001%'")
    ).one()
    assert tuple(versions) == (6, 2)


# -- enterprises and outlets ---------------------------------------------------------------


def test_enterprises_checksum_outside_points_and_grid_assignment(with_areas, tmp_path):
    run_import(with_areas, "grids", f.write(tmp_path / "grids.gpkg", grid_rows()))
    good = f.uscc(1)
    bad_check = good[:-1] + ("0" if good[-1] != "0" else "1")
    rows = [
        {
            "uscc": good,
            "name": "佛山市禅城区甲有限公司",
            "risk_level": 2,
            "geometry": Point(113.001, 23.01),
        },
        {"uscc": bad_check, "name": "乙公司", "risk_level": 1, "geometry": Point(113.03, 23.01)},
        {"uscc": f.uscc(3), "name": "丙公司", "risk_level": 1, "geometry": Point(114.5, 23.01)},
        {"uscc": f.uscc(4), "name": "丁公司", "risk_level": 7, "geometry": Point(113.03, 23.01)},
    ]
    reasons = rejected(with_areas, "enterprises", f.write(tmp_path / "e.gpkg", rows))
    assert any("row 2" in r and "fails the GB 32100 check character" in r for r in reasons)
    assert any("row 3" in r and "is outside the jurisdiction" in r for r in reasons)
    assert any("row 4" in r and "risk_level" in r for r in reasons)
    report = run_import(with_areas, "enterprises", f.write(tmp_path / "e1.gpkg", rows[:1]))
    assert report.inserted == 1
    grid = with_areas.execute(
        text("SELECT g.code FROM enterprise e JOIN unit_grid g ON g.id = e.grid_id")
    ).scalar()
    assert grid == locate(with_areas, 113.001, 23.01).grid_code == "440604001001001"


def test_outlets_import_and_duplicate_codes(with_areas, tmp_path):
    rows = [
        {
            "code": "OUT-1",
            "outlet_type": "police_station",
            "name": "祖庙派出所",
            "geometry": Point(113.01, 23.01),
        },
        {
            "code": "OUT-1",
            "outlet_type": "clinic",
            "name": "卫生站",
            "geometry": Point(113.02, 23.01),
        },
    ]
    reasons = rejected(with_areas, "outlets", f.write(tmp_path / "o.geojson", rows))
    assert any("row 2" in r and "duplicate of row 1" in r for r in reasons)
    report = run_import(with_areas, "outlets", f.write(tmp_path / "o1.geojson", rows[:1]))
    assert report.inserted == 1


def test_points_given_as_polygons_are_rejected(with_areas, tmp_path):
    rows = [{"code": "OUT-2", "outlet_type": "clinic", "name": "站", "geometry": f.COMMUNITY_W}]
    reasons = rejected(with_areas, "outlets", f.write(tmp_path / "poly.gpkg", rows))
    assert any("expected a point" in r for r in reasons)


# -- the command line ----------------------------------------------------------------------


def test_cli_import_reports_and_writes_rejects_csv(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = f.write(tmp_path / "areas.gpkg", f.area_rows())
    result = runner.invoke(args=["import", "areas", str(good)])
    assert result.exit_code == 0, result.output
    assert "inserted 6" in result.output
    bad_rows = f.replace(f.area_rows(), "440605", code="44O605")
    bad = f.write(tmp_path / "bad.gpkg", bad_rows)
    result = runner.invoke(args=["import", "areas", str(bad), "--rejects-csv", "r.csv"])
    assert result.exit_code == 1
    assert "44O605" in (tmp_path / "r.csv").read_text()
