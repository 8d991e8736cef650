"""Deadlines: the working calendar's admin-edited days and confirmed years, and the handling
clock of a case (when it was dispatched, with which time limit).

Revision ID: 0006_deadlines
Revises: 0005_intake
Create Date: 2026-11-27
"""

from alembic import op

revision = "0006_deadlines"
down_revision = "0005_intake"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE work_calendar_override (
            day        date PRIMARY KEY,
            kind       varchar(4) NOT NULL CHECK (kind IN ('off', 'work')),
            note       text NOT NULL DEFAULT '',
            updated_by bigint REFERENCES app_user (id),
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE work_calendar_year (
            year         integer PRIMARY KEY CHECK (year BETWEEN 2000 AND 2100),
            source       text NOT NULL,
            confirmed_by bigint REFERENCES app_user (id),
            confirmed_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "ALTER TABLE incident ADD COLUMN dispatched_at timestamptz, "
        "ADD COLUMN time_limit_hours real CHECK (time_limit_hours > 0)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE incident DROP COLUMN dispatched_at, DROP COLUMN time_limit_hours")
    op.execute("DROP TABLE IF EXISTS work_calendar_year")
    op.execute("DROP TABLE IF EXISTS work_calendar_override")
