"""The migrations (up, down, up) and the constraints the database itself enforces."""

from __future__ import annotations

import re

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from gridops import migrate
from gridops.models import Base

CORE_TABLES = {"admin_area", "unit_grid", "category", "enterprise", "service_outlet"}
SQUARE = "MULTIPOLYGON(((113.10 23.00, 113.12 23.00, 113.12 23.02, 113.10 23.02, 113.10 23.00)))"
BOWTIE = "MULTIPOLYGON(((113.10 23.00, 113.12 23.02, 113.12 23.00, 113.10 23.02, 113.10 23.00)))"


def _tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_up_down_up(scratch_database):
    migrate.upgrade(scratch_database)
    assert _tables(scratch_database) >= CORE_TABLES
    assert migrate.current_revision(scratch_database) == migrate.head_revision(scratch_database)
    migrate.downgrade(scratch_database, "base")
    assert not CORE_TABLES & _tables(scratch_database)
    assert migrate.current_revision(scratch_database) is None
    migrate.upgrade(scratch_database)
    assert _tables(scratch_database) >= CORE_TABLES


def test_models_match_the_migrations(connection):
    context = MigrationContext.configure(connection)
    diff = [
        change
        for change in compare_metadata(context, Base.metadata)
        # PostGIS's own tables and our hand-made GiST/partial indexes are not in the models.
        if not (isinstance(change, tuple) and change[0] in {"remove_table", "remove_index"})
        # Foreign keys to the account tables, which have no ORM models (SQL services).
        and not (
            isinstance(change, tuple)
            and change[0] == "remove_fk"
            and change[1].referred_table.name in {"app_user", "department", "component"}
        )
    ]
    assert diff == []


def test_geometry_columns_are_typed_and_indexed(connection):
    rows = connection.execute(
        text("SELECT f_table_name, type, srid FROM geometry_columns WHERE f_table_schema='public'")
    ).all()
    assert {(r.f_table_name, r.type, r.srid) for r in rows} == {
        ("admin_area", "MULTIPOLYGON", 4326),
        ("unit_grid", "MULTIPOLYGON", 4326),
        ("enterprise", "POINT", 4326),
        ("service_outlet", "POINT", 4326),
        ("incident", "POINT", 4326),
        ("component", "POINT", 4326),
        ("patrol_point", "POINT", 4326),
        ("inspector_profile", "POINT", 4326),  # a start point per inspector: no index needed
    }
    gist = connection.execute(
        text("SELECT tablename FROM pg_indexes WHERE indexdef ILIKE '%USING gist (geom)%'")
    ).scalars()
    indexed = {"admin_area", "unit_grid", "enterprise", "service_outlet", "incident"}
    assert indexed | {"component", "patrol_point"} <= set(gist)


def _insert_city(connection, geom_sql: str) -> None:
    connection.execute(
        text(
            "INSERT INTO admin_area (code, name, level, geom) "
            f"VALUES ('440600', '佛山市', 'city', {geom_sql})"
        )
    )


def test_valid_area_is_accepted_and_area_computed(connection):
    _insert_city(connection, f"ST_GeomFromText('{SQUARE}', 4326)")
    connection.execute(
        text(
            "INSERT INTO admin_area (code, name, level, parent_code, geom) VALUES "
            "('440604', '禅城区', 'district', '440600', (SELECT geom FROM admin_area)),"
            "('440604010', '祖庙街道', 'town', '440604', (SELECT geom FROM admin_area LIMIT 1)),"
            "('440604010001', '某社区', 'community', '440604010',"
            " (SELECT geom FROM admin_area LIMIT 1))"
        )
    )
    connection.execute(
        text(
            "INSERT INTO unit_grid (code, community_code, geom) "
            "SELECT '440604010001001', '440604010001', geom FROM admin_area LIMIT 1"
        )
    )
    area = connection.execute(text("SELECT area_m2 FROM unit_grid")).scalar_one()
    # 0.02° x 0.02° at 23°N: about 2,046 m x 2,215 m.
    assert 4.4e6 < area < 4.6e6


def test_self_intersecting_polygon_is_rejected(connection):
    with pytest.raises(IntegrityError, match="admin_area_geom_valid"):
        _insert_city(connection, f"ST_GeomFromText('{BOWTIE}', 4326)")


def test_wrong_srid_is_rejected(connection):
    with pytest.raises(DBAPIError, match="SRID"):
        _insert_city(connection, f"ST_Transform(ST_GeomFromText('{SQUARE}', 4326), 3857)")


def test_lat_lon_swapped_point_is_rejected(connection):
    with pytest.raises(IntegrityError, match="enterprise_geom_lonlat"):
        connection.execute(
            text(
                "INSERT INTO enterprise (uscc, name, geom) VALUES "
                "('91440604MA4UJ9XB3K', '某公司', ST_SetSRID(ST_MakePoint(23.02, 113.12), 4326))"
            )
        )


def test_unswapped_point_is_accepted(connection):
    connection.execute(
        text(
            "INSERT INTO enterprise (uscc, name, geom) VALUES "
            "('91440604MA4UJ9XB3K', '某公司', ST_SetSRID(ST_MakePoint(113.12, 23.02), 4326))"
        )
    )
    assert connection.execute(text("SELECT count(*) FROM enterprise")).scalar() == 1


@pytest.mark.parametrize(
    ("code", "level", "parent", "constraint"),
    [
        ("44060", "district", "440600", "admin_area_code_form"),
        ("440604010", "district", "440600", "admin_area_code_form"),
        ("440604", "district", None, "admin_area_parent_required"),
    ],
)
def test_area_code_form_is_enforced(connection, code, level, parent, constraint):
    _insert_city(connection, f"ST_GeomFromText('{SQUARE}', 4326)")
    with pytest.raises(IntegrityError, match=constraint):
        connection.execute(
            text(
                "INSERT INTO admin_area (code, name, level, parent_code, geom) "
                "SELECT :code, 'x', :level, :parent, geom FROM admin_area"
            ),
            {"code": code, "level": level, "parent": parent},
        )


def test_unit_grid_code_must_begin_with_its_community(connection):
    _insert_city(connection, f"ST_GeomFromText('{SQUARE}', 4326)")
    connection.execute(
        text(
            "INSERT INTO admin_area (code, name, level, parent_code, geom) SELECT c, n, l, p, geom "
            "FROM admin_area, (VALUES ('440604', '禅城区', 'district', '440600'),"
            " ('440604010', '祖庙街道', 'town', '440604'),"
            " ('440604010001', '社区', 'community', '440604010')) AS v(c, n, l, p)"
        )
    )
    with pytest.raises(IntegrityError, match="unit_grid_code_in_community"):
        connection.execute(
            text(
                "INSERT INTO unit_grid (code, community_code, geom) "
                "SELECT '440604010002001', '440604010001', geom FROM admin_area LIMIT 1"
            )
        )


def test_the_database_knows_exactly_the_workflow_states(connection):
    from gridops.incidents.workflow import STATES

    definition = connection.execute(
        text(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'incident'::regclass AND contype = 'c' "
            "AND pg_get_constraintdef(oid) LIKE '%status%'"
        )
    ).scalar_one()
    assert set(re.findall(r"'(\w+)'", definition)) == set(STATES)
