"""Dispatch: who is responsible for what (inspectors per unit grid, component owners and
maintainers, territorial units), who a case waits on, inspection plans and tasks, patrol
tracks, the in-app inbox, KPI snapshots, and the system account automatic decisions act as.

Revision ID: 0008_dispatch
Revises: 0007_case_extras
Create Date: 2026-11-27
"""

from alembic import op

revision = "0008_dispatch"
down_revision = "0007_case_extras"
branch_labels = None
depends_on = None

SYSTEM_USER = "gridops.system"


def upgrade() -> None:
    # Automatic decisions (routing, escalation) are events too, and events name an actor.
    # The system account cannot sign in: its hash matches no password.
    op.execute(
        f"""
        INSERT INTO app_user (username, display_name, password_hash, is_active)
        VALUES ('{SYSTEM_USER}', '系统', '!', false) ON CONFLICT DO NOTHING
        """
    )
    # professional: a competent department (专业部门); territorial: the street office or
    # community that takes what nobody else is responsible for (属地兜底).
    op.execute(
        """
        ALTER TABLE department
            ADD COLUMN kind varchar(16) NOT NULL DEFAULT 'professional'
                CHECK (kind IN ('professional', 'territorial'))
        """
    )
    op.execute(
        """
        CREATE TABLE component (
            id                       bigserial PRIMARY KEY,
            code                     char(16) NOT NULL UNIQUE CHECK (code ~ '^[0-9]{16}$'),
            category_id              integer NOT NULL REFERENCES category (id),
            name                     varchar(200) NOT NULL DEFAULT '',
            geom                     geometry(Point, 4326) NOT NULL,
            owner_department_id      integer REFERENCES department (id),
            maintainer_department_id integer REFERENCES department (id),
            CONSTRAINT component_geom_lonlat CHECK (
                ST_X(geom) BETWEEN -180 AND 180 AND ST_Y(geom) BETWEEN -90 AND 90)
        )
        """
    )
    op.execute("CREATE INDEX component_geom_gist ON component USING gist (geom)")
    op.execute(
        """
        ALTER TABLE incident
            ADD COLUMN component_id bigint REFERENCES component (id),
            ADD COLUMN assignee_id  bigint REFERENCES app_user (id),
            ADD COLUMN assigned_at  timestamptz,
            ADD COLUMN warned_at    timestamptz,
            ADD COLUMN escalation_level smallint NOT NULL DEFAULT 0
                CHECK (escalation_level BETWEEN 0 AND 3)
        """
    )
    op.execute("CREATE INDEX incident_assignee_idx ON incident (assignee_id)")
    # Automatic decisions (routing, assignment, escalation) with the reason for each. They are
    # made inside the change that triggered them, so they do not move the case's version.
    op.execute(
        """
        CREATE TABLE case_decision (
            id            bigserial PRIMARY KEY,
            incident_id   bigint NOT NULL REFERENCES incident (id),
            at            timestamptz NOT NULL DEFAULT clock_timestamp(),
            kind          varchar(24) NOT NULL,
            trigger       varchar(32) NOT NULL,
            assignee_id   bigint REFERENCES app_user (id),
            department_id integer REFERENCES department (id),
            reason        text NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX case_decision_incident_idx ON case_decision (incident_id, id)")
    op.execute(
        "CREATE TRIGGER case_decision_no_change BEFORE UPDATE OR DELETE ON case_decision "
        "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
    )
    # Unit grids are versioned (regenerated grids get new ids), so duties follow the code.
    op.execute(
        """
        CREATE TABLE grid_inspector (
            grid_code  varchar(15) NOT NULL CHECK (grid_code ~ '^[0-9]{14,15}$'),
            user_id    bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
            is_primary boolean NOT NULL DEFAULT false,
            PRIMARY KEY (grid_code, user_id)
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX grid_inspector_one_primary ON grid_inspector (grid_code) "
        "WHERE is_primary"
    )
    op.execute("CREATE INDEX grid_inspector_user_idx ON grid_inspector (user_id)")
    op.execute(
        """
        CREATE TABLE staff_absence (
            id        bigserial PRIMARY KEY,
            user_id   bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
            starts_on date NOT NULL,
            ends_on   date NOT NULL,
            note      text NOT NULL DEFAULT '',
            CHECK (ends_on >= starts_on)
        )
        """
    )
    op.execute("CREATE INDEX staff_absence_user_idx ON staff_absence (user_id, starts_on)")
    op.execute(
        """
        CREATE TABLE inspector_profile (
            user_id        bigint PRIMARY KEY REFERENCES app_user (id) ON DELETE CASCADE,
            tasks_per_day  integer NOT NULL DEFAULT 12 CHECK (tasks_per_day BETWEEN 0 AND 200),
            travel_mode    varchar(8) NOT NULL DEFAULT 'walk'
                           CHECK (travel_mode IN ('walk', 'bike', 'drive')),
            home           geometry(Point, 4326)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE inspection_plan (
            id                 bigserial PRIMARY KEY,
            target_kind        varchar(10) NOT NULL CHECK (target_kind IN ('enterprise', 'outlet')),
            target_id          bigint NOT NULL,
            risk_score         real NOT NULL DEFAULT 0 CHECK (risk_score BETWEEN 0 AND 1),
            frequency_days     integer NOT NULL CHECK (frequency_days BETWEEN 1 AND 730),
            last_inspected_at  timestamptz,
            last_result        varchar(8) CHECK (last_result IN ('ok', 'minor', 'major')),
            next_due_on        date NOT NULL,
            active             boolean NOT NULL DEFAULT true,
            updated_at         timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT inspection_plan_target UNIQUE (target_kind, target_id)
        )
        """
    )
    op.execute("CREATE INDEX inspection_plan_due_idx ON inspection_plan (next_due_on) WHERE active")
    op.execute(
        """
        CREATE TABLE inspection_task (
            id          bigserial PRIMARY KEY,
            plan_id     bigint NOT NULL REFERENCES inspection_plan (id),
            due_on      date NOT NULL,
            assignee_id bigint REFERENCES app_user (id),
            route_order integer,
            status      varchar(10) NOT NULL DEFAULT 'open'
                        CHECK (status IN ('open', 'done', 'missed', 'cancelled')),
            result      varchar(8) CHECK (result IN ('ok', 'minor', 'major')),
            note        text NOT NULL DEFAULT '',
            done_at     timestamptz,
            created_at  timestamptz NOT NULL DEFAULT now(),
            version     integer NOT NULL DEFAULT 1,
            CONSTRAINT inspection_task_once UNIQUE (plan_id, due_on),
            CHECK ((status = 'done') = (result IS NOT NULL AND done_at IS NOT NULL))
        )
        """
    )
    op.execute("CREATE INDEX inspection_task_assignee_idx ON inspection_task (assignee_id, due_on)")
    # Tablets upload their trace in batches and retry: a point is identified by who and when.
    op.execute(
        """
        CREATE TABLE patrol_point (
            user_id     bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
            recorded_at timestamptz NOT NULL,
            geom        geometry(Point, 4326) NOT NULL,
            accuracy_m  real CHECK (accuracy_m >= 0),
            received_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, recorded_at)
        )
        """
    )
    op.execute("CREATE INDEX patrol_point_geom_gist ON patrol_point USING gist (geom)")
    op.execute(
        """
        CREATE TABLE patrol_coverage (
            user_id     bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
            day         date NOT NULL,
            grids_total integer NOT NULL,
            grids_visited integer NOT NULL,
            distance_m  real NOT NULL DEFAULT 0,
            computed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, day)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE notification (
            id         bigserial PRIMARY KEY,
            user_id    bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
            kind       varchar(24) NOT NULL,
            incident_id bigint REFERENCES incident (id),
            task_id    bigint REFERENCES inspection_task (id),
            title      text NOT NULL,
            body       text NOT NULL DEFAULT '',
            dedupe_key text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            read_at    timestamptz,
            sent_at    timestamptz,
            CONSTRAINT notification_once UNIQUE (user_id, dedupe_key)
        )
        """
    )
    op.execute(
        "CREATE INDEX notification_unread_idx ON notification (user_id, created_at DESC) "
        "WHERE read_at IS NULL"
    )
    op.execute(
        """
        CREATE TABLE kpi_snapshot (
            id        bigserial PRIMARY KEY,
            period    varchar(8) NOT NULL,
            bucket    date NOT NULL,
            grouping  varchar(12) NOT NULL DEFAULT '',
            rows      jsonb NOT NULL,
            taken_at  timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT kpi_snapshot_once UNIQUE (period, bucket, grouping)
        )
        """
    )
    # Each scheduled job run, so that a job is never run twice for the same slot.
    op.execute(
        """
        CREATE TABLE job_run (
            job        varchar(64) NOT NULL,
            slot       timestamptz NOT NULL,
            started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            finished_at timestamptz,
            outcome    jsonb,
            PRIMARY KEY (job, slot)
        )
        """
    )


def downgrade() -> None:
    for table in (
        "job_run", "kpi_snapshot", "notification", "patrol_coverage", "patrol_point",
        "inspection_task", "inspection_plan", "inspector_profile", "staff_absence",
        "grid_inspector", "case_decision",
    ):  # fmt: skip
        op.execute(f"DROP TABLE IF EXISTS {table}")
    op.execute(
        "ALTER TABLE incident DROP COLUMN component_id, DROP COLUMN assignee_id, "
        "DROP COLUMN assigned_at, DROP COLUMN warned_at, DROP COLUMN escalation_level"
    )
    op.execute("DROP TABLE IF EXISTS component")
    op.execute("ALTER TABLE department DROP COLUMN kind")
    op.execute(f"DELETE FROM app_user WHERE username = '{SYSTEM_USER}'")
