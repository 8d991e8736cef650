"""Accounts, roles with their scopes, sessions, device tokens, login attempts, audit log;
reporter fields on incidents (personal data, kept from planners and the public).

Revision ID: 0003_auth
Revises: 0002_incidents
Create Date: 2026-11-27
"""

from alembic import op

revision = "0003_auth"
down_revision = "0002_incidents"
branch_labels = None
depends_on = None

ROLES = (
    "inspector",
    "community_manager",
    "town_manager",
    "district_manager",
    "department_handler",
    "planner",
    "admin",
)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE department (
            id        serial PRIMARY KEY,
            code      varchar(40) NOT NULL UNIQUE,
            name      varchar(200) NOT NULL,
            name_en   varchar(200),
            area_code varchar(12) NOT NULL REFERENCES admin_area (code)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE app_user (
            id            bigserial PRIMARY KEY,
            username      varchar(64) NOT NULL CHECK (username ~ '^[a-z0-9][a-z0-9._-]{1,63}$'),
            display_name  varchar(100) NOT NULL,
            password_hash text NOT NULL,
            is_active     boolean NOT NULL DEFAULT true,
            created_at    timestamptz NOT NULL DEFAULT now(),
            disabled_at   timestamptz,
            CONSTRAINT app_user_username_unique UNIQUE (username)
        )
        """
    )
    roles = ", ".join(f"'{r}'" for r in ROLES)
    op.execute(
        f"""
        CREATE TABLE role_assignment (
            id             bigserial PRIMARY KEY,
            user_id        bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
            role           varchar(32) NOT NULL CHECK (role IN ({roles})),
            area_code      varchar(12) REFERENCES admin_area (code),
            grid_codes     text[],
            department_id  integer REFERENCES department (id),
            category_codes text[],
            created_at     timestamptz NOT NULL DEFAULT now(),
            created_by     bigint REFERENCES app_user (id),
            CONSTRAINT role_assignment_scope CHECK (
                CASE role
                    WHEN 'inspector' THEN cardinality(grid_codes) > 0
                    WHEN 'community_manager' THEN length(area_code) = 12
                    WHEN 'town_manager' THEN length(area_code) = 9
                    WHEN 'district_manager' THEN length(area_code) = 6
                    WHEN 'planner' THEN area_code IS NOT NULL
                    WHEN 'department_handler' THEN department_id IS NOT NULL
                    ELSE true
                END)
        )
        """
    )
    op.execute("CREATE INDEX role_assignment_user_idx ON role_assignment (user_id)")
    op.execute(
        """
        CREATE TABLE user_session (
            id           bigserial PRIMARY KEY,
            sid_hash     bytea NOT NULL UNIQUE,
            user_id      bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
            created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
            last_seen_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            expires_at   timestamptz NOT NULL,
            revoked_at   timestamptz,
            address      inet,
            user_agent   text
        )
        """
    )
    op.execute("CREATE INDEX user_session_user_idx ON user_session (user_id)")
    op.execute(
        """
        CREATE TABLE api_token (
            id           bigserial PRIMARY KEY,
            user_id      bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
            name         varchar(100) NOT NULL CHECK (btrim(name) <> ''),
            prefix       char(8) NOT NULL UNIQUE,
            secret_hash  bytea NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
            expires_at   timestamptz NOT NULL,
            last_used_at timestamptz,
            revoked_at   timestamptz
        )
        """
    )
    op.execute("CREATE INDEX api_token_user_idx ON api_token (user_id)")
    op.execute(
        """
        CREATE TABLE login_attempt (
            id       bigserial PRIMARY KEY,
            at       timestamptz NOT NULL DEFAULT clock_timestamp(),
            username varchar(64) NOT NULL,
            address  inet,
            success  boolean NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX login_attempt_user_idx ON login_attempt (username, at)")
    op.execute("CREATE INDEX login_attempt_address_idx ON login_attempt (address, at)")
    op.execute(
        """
        CREATE TABLE audit_event (
            id         bigserial PRIMARY KEY,
            at         timestamptz NOT NULL DEFAULT clock_timestamp(),
            event      varchar(40) NOT NULL,
            actor_id   bigint,
            actor      varchar(64),
            address    inet,
            request_id varchar(64),
            detail     jsonb NOT NULL DEFAULT '{}'
        )
        """
    )
    op.execute("CREATE INDEX audit_event_at_idx ON audit_event (at)")
    # Append-only: the database itself refuses to change or remove the record.
    op.execute(
        """
        CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_event_no_change BEFORE UPDATE OR DELETE ON audit_event "
        "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()"
    )
    op.execute(
        "ALTER TABLE incident ADD COLUMN reporter_name varchar(100), "
        "ADD COLUMN reporter_phone varchar(40), ADD COLUMN device_id varchar(100)"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE incident DROP COLUMN reporter_name, DROP COLUMN reporter_phone, "
        "DROP COLUMN device_id"
    )
    for table in (
        "audit_event",
        "login_attempt",
        "api_token",
        "user_session",
        "role_assignment",
        "app_user",
        "department",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
    op.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
