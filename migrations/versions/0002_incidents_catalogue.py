"""The minimal incident table and the GB/T 30428 category catalogue as data.

Revision ID: 0002_incidents
Revises: 0001_core
Create Date: 2026-11-27
"""

from alembic import op

from gridops.incidents.catalogue import CATALOGUE_CSV, upsert_catalogue

revision = "0002_incidents"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE incident (
            id          bigserial PRIMARY KEY,
            client_uuid uuid NOT NULL UNIQUE,
            category_id integer NOT NULL REFERENCES category (id) ON DELETE RESTRICT,
            geom        geometry(Point, 4326) NOT NULL,
            reported_at timestamptz NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            source      varchar(16) NOT NULL DEFAULT 'inspector'
                        CHECK (source IN ('inspector', 'hotline', 'public', 'referral')),
            grid_id     bigint REFERENCES unit_grid (id) ON DELETE RESTRICT,
            CONSTRAINT incident_geom_lonlat CHECK (
                ST_X(geom) BETWEEN -180 AND 180 AND ST_Y(geom) BETWEEN -90 AND 90)
        )
        """
    )
    op.execute("CREATE INDEX incident_geom_gist ON incident USING gist (geom)")
    op.execute("CREATE INDEX incident_reported_idx ON incident (reported_at)")
    op.execute("CREATE INDEX incident_category_idx ON incident (category_id)")
    op.execute("CREATE INDEX incident_grid_idx ON incident (grid_id)")
    # Admin edits made later win: the migration only adds rows that are missing.
    upsert_catalogue(op.get_bind(), CATALOGUE_CSV, overwrite=False)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS incident")
    op.execute("DELETE FROM category WHERE standard_ref = 'GB/T 30428.3-2016'")
