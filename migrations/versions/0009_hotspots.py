"""Hotspot runs: the parameters and data window of each analysis, and its result per H3 cell,
so that a planner can compare this month with last.

Revision ID: 0009_hotspots
Revises: 0008_dispatch
Create Date: 2026-11-27
"""

from alembic import op

revision = "0009_hotspots"
down_revision = "0008_dispatch"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE hotspot_run (
            id           bigserial PRIMARY KEY,
            kind         varchar(10) NOT NULL CHECK (kind IN ('gistar', 'emerging')),
            resolution   smallint NOT NULL CHECK (resolution BETWEEN 7 AND 10),
            k            smallint NOT NULL CHECK (k BETWEEN 1 AND 10),
            period_start timestamptz NOT NULL,
            period_end   timestamptz NOT NULL,
            step         varchar(8) CHECK (step IN ('day', 'week', 'month')),
            filters      jsonb NOT NULL DEFAULT '{}',
            area_code    varchar(12) REFERENCES admin_area (code),
            n_points     integer NOT NULL,
            n_cells      integer NOT NULL,
            seconds      real,
            created_by   bigint REFERENCES app_user (id),
            created_at   timestamptz NOT NULL DEFAULT now(),
            CHECK (period_end > period_start)
        )
        """
    )
    op.execute("CREATE INDEX hotspot_run_created_idx ON hotspot_run (created_at DESC)")
    # One row per cell of the study area; bins: -3..3 (cold/hot at 99/95/90 %, 0 not
    # significant); category: the emerging hot/cold spot pattern (emerging runs only).
    op.execute(
        """
        CREATE TABLE hotspot_cell (
            run_id   bigint NOT NULL REFERENCES hotspot_run (id) ON DELETE CASCADE,
            cell     bigint NOT NULL,
            count    integer NOT NULL CHECK (count >= 0),
            z        double precision NOT NULL,
            p        double precision NOT NULL,
            bin      smallint NOT NULL CHECK (bin BETWEEN -3 AND 3),
            trend_z  double precision,
            trend_p  double precision,
            category varchar(32),
            PRIMARY KEY (run_id, cell)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS hotspot_cell")
    op.execute("DROP TABLE IF EXISTS hotspot_run")
