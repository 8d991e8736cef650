"""Core tables: administrative areas, unit grids, categories, enterprises, service outlets.

Revision ID: 0001_core
Revises:
Create Date: 2026-11-27
"""

from alembic import op

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None


# GB 32100: the unified social credit code's alphabet leaves out I, O, Z, S and V.
USCC_PATTERN = "^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$"


def lonlat_checks(table: str) -> str:
    """Valid, non-empty geometry inside the lon/lat ranges; a swapped Foshan point fails."""
    return f"""
        CONSTRAINT {table}_geom_valid CHECK (ST_IsValid(geom)),
        CONSTRAINT {table}_geom_not_empty CHECK (NOT ST_IsEmpty(geom)),
        CONSTRAINT {table}_geom_lonlat CHECK (
            ST_XMin(geom) >= -180 AND ST_XMax(geom) <= 180
            AND ST_YMin(geom) >= -90 AND ST_YMax(geom) <= 90)
    """


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.execute(
        f"""
        CREATE TABLE admin_area (
            code        varchar(12) PRIMARY KEY,
            name        varchar(100) NOT NULL CHECK (btrim(name) <> ''),
            name_en     varchar(200),
            level       varchar(16) NOT NULL
                        CHECK (level IN ('city', 'district', 'town', 'community')),
            parent_code varchar(12) REFERENCES admin_area (code) ON DELETE RESTRICT,
            geom        geometry(MultiPolygon, 4326) NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT admin_area_code_form CHECK (
                (level IN ('city', 'district') AND code ~ '^[0-9]{{6}}$')
                OR (level = 'town' AND code ~ '^[0-9]{{9}}$')
                OR (level = 'community' AND code ~ '^[0-9]{{12}}$')),
            CONSTRAINT admin_area_parent_required CHECK (
                (level = 'city') = (parent_code IS NULL)),
            {lonlat_checks("admin_area")}
        )
        """
    )
    op.execute("CREATE INDEX admin_area_geom_gist ON admin_area USING gist (geom)")
    op.execute("CREATE INDEX admin_area_parent_idx ON admin_area (parent_code)")
    op.execute("CREATE INDEX admin_area_level_idx ON admin_area (level)")

    op.execute(
        f"""
        CREATE TABLE unit_grid (
            id             bigserial PRIMARY KEY,
            code           varchar(15) NOT NULL,
            community_code varchar(12) NOT NULL
                           REFERENCES admin_area (code) ON DELETE RESTRICT,
            standard_ref   varchar(40) NOT NULL DEFAULT 'GB/T 30428.2-2013',
            geom           geometry(MultiPolygon, 4326) NOT NULL,
            area_m2        double precision GENERATED ALWAYS AS (ST_Area(geom::geography)) STORED,
            valid_from     timestamptz NOT NULL DEFAULT now(),
            valid_to       timestamptz,
            CONSTRAINT unit_grid_code_form CHECK (code ~ '^[0-9A-Z]{{14,15}}$'),
            CONSTRAINT unit_grid_code_in_community CHECK (left(code, 12) = community_code),
            CONSTRAINT unit_grid_validity CHECK (valid_to IS NULL OR valid_to > valid_from),
            CONSTRAINT unit_grid_code_version UNIQUE (code, valid_from),
            {lonlat_checks("unit_grid")}
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX unit_grid_current_code ON unit_grid (code) WHERE valid_to IS NULL"
    )
    op.execute("CREATE INDEX unit_grid_geom_gist ON unit_grid USING gist (geom)")
    op.execute(
        "CREATE INDEX unit_grid_current_geom_gist ON unit_grid USING gist (geom) "
        "WHERE valid_to IS NULL"
    )
    op.execute("CREATE INDEX unit_grid_community_idx ON unit_grid (community_code)")

    op.execute(
        """
        CREATE TABLE category (
            id               serial PRIMARY KEY,
            standard_ref     varchar(40) NOT NULL,
            kind             varchar(10) NOT NULL CHECK (kind IN ('component', 'event')),
            code             varchar(10) NOT NULL,
            major_code       char(2) NOT NULL CHECK (major_code ~ '^[0-9]{2}$'),
            minor_code       char(2) CHECK (minor_code ~ '^[0-9]{2}$'),
            name_zh          varchar(100) NOT NULL CHECK (btrim(name_zh) <> ''),
            name_en          varchar(200) NOT NULL,
            urgency          smallint NOT NULL DEFAULT 2 CHECK (urgency BETWEEN 1 AND 4),
            time_limit_hours integer CHECK (time_limit_hours > 0),
            active           boolean NOT NULL DEFAULT true,
            CONSTRAINT category_code_form CHECK (
                code = (CASE kind WHEN 'component' THEN 'C' ELSE 'E' END)
                       || major_code || coalesce(minor_code, '')),
            CONSTRAINT category_code_unique UNIQUE (standard_ref, code)
        )
        """
    )

    op.execute(
        f"""
        CREATE TABLE enterprise (
            id         bigserial PRIMARY KEY,
            uscc       char(18) NOT NULL UNIQUE CHECK (uscc ~ '{USCC_PATTERN}'),
            name       varchar(200) NOT NULL CHECK (btrim(name) <> ''),
            industry   varchar(100),
            risk_level smallint NOT NULL DEFAULT 1 CHECK (risk_level BETWEEN 1 AND 4),
            address    varchar(300),
            geom       geometry(Point, 4326) NOT NULL,
            grid_id    bigint REFERENCES unit_grid (id) ON DELETE SET NULL,
            {lonlat_checks("enterprise")}
        )
        """
    )
    op.execute("CREATE INDEX enterprise_geom_gist ON enterprise USING gist (geom)")
    op.execute("CREATE INDEX enterprise_grid_idx ON enterprise (grid_id)")

    op.execute(
        f"""
        CREATE TABLE service_outlet (
            id            bigserial PRIMARY KEY,
            code          varchar(40) NOT NULL UNIQUE,
            outlet_type   varchar(40) NOT NULL,
            name          varchar(200) NOT NULL CHECK (btrim(name) <> ''),
            opening_hours varchar(200),
            address       varchar(300),
            phone         varchar(40),
            geom          geometry(Point, 4326) NOT NULL,
            grid_id       bigint REFERENCES unit_grid (id) ON DELETE SET NULL,
            {lonlat_checks("service_outlet")}
        )
        """
    )
    op.execute("CREATE INDEX service_outlet_geom_gist ON service_outlet USING gist (geom)")
    op.execute("CREATE INDEX service_outlet_grid_idx ON service_outlet (grid_id)")


def downgrade() -> None:
    for table in ("service_outlet", "enterprise", "category", "unit_grid", "admin_area"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
