"""Cases, continued: per-stage time limits and the default department of each category, the
duplicate radius; the handling department, stored deadline and duplicate link of each case;
and the photos of a case.

Revision ID: 0007_case_extras
Revises: 0006_deadlines
Create Date: 2026-11-27
"""

from alembic import op

revision = "0007_case_extras"
down_revision = "0006_deadlines"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Time limits in working hours per stage: verify (核实), file and dispatch (立案派遣),
    # handle (处置: the existing time_limit_hours) and the on-site check (核查).
    op.execute(
        """
        ALTER TABLE category
            ADD COLUMN verify_limit_hours real CHECK (verify_limit_hours > 0),
            ADD COLUMN dispatch_limit_hours real CHECK (dispatch_limit_hours > 0),
            ADD COLUMN check_limit_hours real CHECK (check_limit_hours > 0),
            ADD COLUMN department_id integer REFERENCES department (id) ON DELETE SET NULL,
            ADD COLUMN duplicate_radius_m real NOT NULL DEFAULT 50
                CHECK (duplicate_radius_m > 0 AND duplicate_radius_m <= 5000),
            ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now()
        """
    )
    # The more urgent the class, the shorter every stage; a component is one object in one
    # place (a small radius), an emergency spreads (a large one).
    op.execute(
        """
        UPDATE category SET
            verify_limit_hours = CASE urgency WHEN 4 THEN 0.5 WHEN 3 THEN 1 ELSE 2 END,
            dispatch_limit_hours = CASE urgency WHEN 4 THEN 0.5 WHEN 3 THEN 1 ELSE 2 END,
            check_limit_hours = CASE urgency WHEN 4 THEN 1 WHEN 3 THEN 2 ELSE 4 END,
            duplicate_radius_m = CASE
                WHEN kind = 'component' THEN 20
                WHEN major_code = '04' THEN 200
                ELSE 50 END
        WHERE minor_code IS NOT NULL
        """
    )
    op.execute(
        """
        ALTER TABLE incident
            ADD COLUMN department_id integer REFERENCES department (id),
            ADD COLUMN deadline_at timestamptz,
            ADD COLUMN closed_at timestamptz,
            ADD COLUMN duplicate_of bigint REFERENCES incident (id)
                CHECK (duplicate_of <> id)
        """
    )
    op.execute("CREATE INDEX incident_department_idx ON incident (department_id)")
    op.execute(
        "CREATE INDEX incident_open_deadline_idx ON incident (deadline_at) "
        "WHERE status NOT IN ('closed', 'void')"
    )
    op.execute("CREATE INDEX incident_updated_idx ON incident (updated_at, id)")
    # The case list pages newest-received first.
    op.execute("CREATE INDEX incident_received_idx ON incident (received_at, id)")
    op.execute(
        """
        CREATE TABLE incident_photo (
            id            bigserial PRIMARY KEY,
            incident_id   bigint NOT NULL REFERENCES incident (id) ON DELETE RESTRICT,
            event_version integer,
            path          text NOT NULL UNIQUE,
            thumb_path    text NOT NULL UNIQUE,
            sha256        char(64) NOT NULL,
            width         integer NOT NULL CHECK (width > 0),
            height        integer NOT NULL CHECK (height > 0),
            bytes         integer NOT NULL CHECK (bytes > 0),
            content_type  varchar(40) NOT NULL DEFAULT 'image/jpeg',
            uploaded_by   bigint REFERENCES app_user (id),
            created_at    timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT incident_photo_event FOREIGN KEY (incident_id, event_version)
                REFERENCES case_event (incident_id, version)
        )
        """
    )
    op.execute("CREATE INDEX incident_photo_incident_idx ON incident_photo (incident_id)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS incident_photo")
    op.execute(
        "ALTER TABLE incident DROP COLUMN department_id, DROP COLUMN deadline_at, "
        "DROP COLUMN closed_at, DROP COLUMN duplicate_of"
    )
    op.execute(
        "ALTER TABLE category DROP COLUMN verify_limit_hours, DROP COLUMN dispatch_limit_hours, "
        "DROP COLUMN check_limit_hours, DROP COLUMN department_id, "
        "DROP COLUMN duplicate_radius_m, DROP COLUMN updated_at"
    )
