"""Incidents become cases: workflow state with a version guard, and the append-only event log.

Revision ID: 0004_cases
Revises: 0003_auth
Create Date: 2026-11-27
"""

from alembic import op

revision = "0004_cases"
down_revision = "0003_auth"
branch_labels = None
depends_on = None

# Frozen here as they were at this revision (gridops.incidents.workflow.STATES may grow later;
# a later migration then widens the CHECK).
STATES = (
    "reported", "verified", "filed", "dispatched", "in_handling", "extension_requested",
    "handled", "checked", "closed", "returned", "parked", "void",
)  # fmt: skip


def upgrade() -> None:
    states = ", ".join(f"'{s}'" for s in STATES)
    # Incidents stored before cases existed are history: they count as closed.
    op.execute(
        f"""
        ALTER TABLE incident
            ADD COLUMN status varchar(24) NOT NULL DEFAULT 'closed'
                CHECK (status IN ({states})),
            ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version > 0),
            ADD COLUMN parked_from varchar(24) CHECK (parked_from IN ({states})),
            ADD COLUMN handler_id bigint REFERENCES app_user (id),
            ADD COLUMN rework_count integer NOT NULL DEFAULT 0,
            ADD COLUMN extensions integer NOT NULL DEFAULT 0,
            ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now()
        """
    )
    op.execute("ALTER TABLE incident ALTER COLUMN status SET DEFAULT 'reported'")
    op.execute("CREATE INDEX incident_status_idx ON incident (status)")
    op.execute(
        """
        CREATE TABLE case_event (
            id          bigserial PRIMARY KEY,
            incident_id bigint NOT NULL REFERENCES incident (id) ON DELETE RESTRICT,
            version     integer NOT NULL,
            at          timestamptz NOT NULL DEFAULT clock_timestamp(),
            action      varchar(32) NOT NULL,
            from_state  varchar(24) NOT NULL,
            to_state    varchar(24) NOT NULL,
            actor_id    bigint NOT NULL REFERENCES app_user (id),
            note        text NOT NULL DEFAULT '',
            CONSTRAINT case_event_version UNIQUE (incident_id, version)
        )
        """
    )
    # The history of a case is evidence: like the audit log, it is never changed.
    op.execute(
        """
        CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER case_event_no_change BEFORE UPDATE OR DELETE ON case_event "
        "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
    )
    op.execute(
        "CREATE TRIGGER case_event_no_truncate BEFORE TRUNCATE ON case_event "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS case_event")
    op.execute(
        "ALTER TABLE incident DROP COLUMN status, DROP COLUMN version, DROP COLUMN parked_from, "
        "DROP COLUMN handler_id, DROP COLUMN rework_count, DROP COLUMN extensions, "
        "DROP COLUMN updated_at"
    )
