"""Unit-grid generation against the database: versioned, stable, overlays follow."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from gridops.errors import InvalidInput
from gridops.grids.service import regenerate_community
from gridops.grids.topology import check_stored
from gridops.importing import run_import
from tests import factories as f


@pytest.fixture
def areas(session, tmp_path):
    run_import(session, "areas", f.write(tmp_path / "a.gpkg", f.area_rows()))
    rows = [f.enterprise(113.0101, 23.0101)]
    run_import(session, "enterprises", f.write(tmp_path / "e.gpkg", rows))
    return session


def grid_versions(session) -> tuple[int, int]:
    row = session.execute(
        text(
            "SELECT count(*), count(valid_to) FROM unit_grid WHERE community_code = '440604001001'"
        )
    ).one()
    return row[0], row[1]


def enterprise_grid(session) -> int | None:
    return session.execute(text("SELECT grid_id FROM enterprise")).scalar()


def test_regenerate_is_stable_then_versioned(areas):
    first = regenerate_community(areas, "440604001001")
    assert first.created > 300 and not first.unchanged  # 4.5 km² at 10,000 m²
    assert check_stored(areas) == []
    assert enterprise_grid(areas) is not None
    again = regenerate_community(areas, "440604001001")
    assert again.unchanged and grid_versions(areas) == (first.created, 0)

    old_grid = enterprise_grid(areas)
    coarser = regenerate_community(areas, "440604001001", target_area_m2=40_000)
    assert coarser.closed == first.created
    assert grid_versions(areas) == (first.created + coarser.created, first.created)
    assert check_stored(areas) == []  # only current grids count
    new_grid = enterprise_grid(areas)
    assert (new_grid is not None and new_grid != old_grid) or coarser.created < first.created
    current = areas.execute(
        text(
            "SELECT count(*) FROM enterprise e JOIN unit_grid g ON g.id = e.grid_id "
            "WHERE g.valid_to IS NULL"
        )
    ).scalar()
    assert current == 1


def test_only_communities_are_cut(areas):
    with pytest.raises(InvalidInput, match="is a town, not a community"):
        regenerate_community(areas, "440604001")


def test_cli_generate_under_a_town_then_check(areas, runner):
    result = runner.invoke(args=["grids", "generate", "--community", "440604001"])
    assert result.exit_code == 0, result.output
    created = int(result.output.split()[0])
    assert created > 600
    check = runner.invoke(args=["grids", "check"])
    assert check.exit_code == 0, check.output
    assert "0 problem(s)" in check.output
    areas.execute(
        text(
            "UPDATE unit_grid SET valid_to = clock_timestamp() WHERE code = "
            "(SELECT min(code) FROM unit_grid WHERE community_code = '440604001002')"
        )
    )
    check = runner.invoke(args=["grids", "check"])
    assert check.exit_code == 1
    assert "grid_gap: 440604001002" in check.output


def test_cli_generate_unknown_area(areas, runner):
    result = runner.invoke(args=["grids", "generate", "--community", "440699"])
    assert result.exit_code == 1
    assert "no area '440699'" in result.output
