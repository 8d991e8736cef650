"""What an intake report carries besides its point: capture time, GPS accuracy, description,
and the fingerprint of the report that makes a replayed client UUID recognisable.

Revision ID: 0005_intake
Revises: 0004_cases
Create Date: 2026-11-27
"""

from alembic import op

revision = "0005_intake"
down_revision = "0004_cases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE incident
            ADD COLUMN captured_at timestamptz,
            ADD COLUMN gps_accuracy_m real CHECK (gps_accuracy_m >= 0),
            ADD COLUMN description text NOT NULL DEFAULT '',
            ADD COLUMN reported_by bigint REFERENCES app_user (id),
            ADD COLUMN intake_sha256 bytea
        """
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE incident DROP COLUMN captured_at, DROP COLUMN gps_accuracy_m, "
        "DROP COLUMN description, DROP COLUMN reported_by, DROP COLUMN intake_sha256"
    )
