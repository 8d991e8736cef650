"""``gridops users …``: create users, assign roles, disable, issue device tokens;
``gridops demo users``: the demo's people, one per role (demo passwords, printed)."""

from __future__ import annotations

import click
from sqlalchemy import text

from gridops.auth import audit
from gridops.auth import service as auth
from gridops.auth.actor import ROLES
from gridops.commands import demo_cli, fail, open_session
from gridops.errors import GridopsError


def _user_id(session, username: str) -> int:  # noqa: ANN001
    user_id = session.execute(
        text("SELECT id FROM app_user WHERE username = :u"), {"u": username.lower()}
    ).scalar()
    if user_id is None:
        raise click.ClickException(f"no user {username!r}")
    return int(user_id)


def _audit(event: str, **detail: object) -> None:
    from gridops.commands import command_app
    from gridops.db import get_database

    app = command_app()
    if app is not None:
        audit.record(event, actor="cli", detail=detail, engine=get_database(app).audit_engine)


@click.group("users")
def users_cli() -> None:
    """Accounts and their roles."""


@users_cli.command("create")
@click.argument("username")
@click.option("--display-name", help="Name shown in the interface (e.g. 张三).")
@click.password_option(help="Prompted for when not given.")
def users_create(username: str, display_name: str | None, password: str) -> None:
    """Create a user (without roles)."""
    session = open_session()
    try:
        user_id = auth.create_user(session, username, password, display_name=display_name)
        session.commit()
    except GridopsError as exc:
        raise fail(exc) from exc
    finally:
        session.close()
    _audit("user_created", user=user_id)
    click.echo(f"user {username} created (id {user_id})")


@users_cli.command("assign")
@click.argument("username")
@click.argument("role", type=click.Choice(ROLES))
@click.option("--area", "area_code", help="Area code for managers and planners.")
@click.option("--grids", help="Comma-separated unit-grid codes for inspectors.")
@click.option("--department", "department_code", help="Department code for handlers.")
@click.option("--categories", help="Comma-separated category codes a handler deals with.")
def users_assign(
    username: str,
    role: str,
    area_code: str | None,
    grids: str | None,
    department_code: str | None,
    categories: str | None,
) -> None:
    """Give USERNAME a ROLE with its scope."""
    session = open_session()
    try:
        user_id = _user_id(session, username)
        assignment = auth.assign_role(
            session,
            user_id,
            role,
            area_code=area_code,
            grid_codes=[c.strip() for c in grids.split(",")] if grids else None,
            department_code=department_code,
            category_codes=[c.strip() for c in categories.split(",")] if categories else None,
        )
        session.commit()
    except GridopsError as exc:
        raise fail(exc) from exc
    finally:
        session.close()
    _audit("role_assigned", user=user_id, role=role, assignment=assignment)
    click.echo(f"{username} is now {role} (assignment {assignment})")


@users_cli.command("disable")
@click.argument("username")
def users_disable(username: str) -> None:
    """Disable USERNAME: sessions end and device tokens stop working at once."""
    session = open_session()
    try:
        user_id = _user_id(session, username)
        auth.disable_user(session, user_id)
        session.commit()
    finally:
        session.close()
    _audit("user_disabled", user=user_id)
    click.echo(f"{username} disabled")


@users_cli.command("token")
@click.argument("username")
@click.argument("name")
@click.option("--days", default=90, show_default=True)
def users_token(username: str, name: str, days: int) -> None:
    """Issue a device token NAME for USERNAME (printed once)."""
    session = open_session()
    try:
        user_id = _user_id(session, username)
        token_id, token = auth.create_token(session, user_id, name, days=days)
        session.commit()
    except GridopsError as exc:
        raise fail(exc) from exc
    finally:
        session.close()
    _audit("token_created", user=user_id, token=token_id)
    click.echo(token)


# -- the demo's people ---------------------------------------------------------------------

DEMO_DEPARTMENT = ("CC-CGJ", "禅城区城市管理和综合执法局", "Chancheng Urban Management Bureau")
DEMO_COMMUNITY = "440604012001"  # 朝安东社区, 祖庙街道, 禅城区
# username, display name, role, scope, demo password (demo only: printed by make demo)
DEMO_USERS = (
    ("demo.admin", "系统管理员", "admin", {}, "Kapok-Harbour-Lantern-61"),
    ("demo.inspector", "网格员 陈", "inspector", {"grids": DEMO_COMMUNITY},
     "Banyan-Ferry-Pottery-23"),
    ("demo.community", "社区管理员 黄", "community_manager", {"area_code": DEMO_COMMUNITY},
     "Lotus-Bridge-Kiln-84"),
    ("demo.town", "街道管理员 梁", "town_manager", {"area_code": "440604012"},
     "Ancestral-Temple-Drum-52"),
    ("demo.district", "区管理员 何", "district_manager", {"area_code": "440604"},
     "Ceramic-River-Lychee-17"),
    ("demo.handler", "城管队员 冯", "department_handler",
     {"department_code": DEMO_DEPARTMENT[0]}, "Dragon-Boat-Granite-39"),
    ("demo.planner", "规划分析员 罗", "planner", {"area_code": "440600"},
     "Wetland-Orchard-Compass-76"),
)  # fmt: skip


@demo_cli.command("users")
def demo_users() -> None:
    """Make sure the demo users exist with their demo passwords and roles; print them."""
    session = open_session()
    try:
        session.execute(
            text(
                "INSERT INTO department (code, name, name_en, area_code) "
                "VALUES (:c, :n, :e, '440604') ON CONFLICT (code) DO NOTHING"
            ),
            {"c": DEMO_DEPARTMENT[0], "n": DEMO_DEPARTMENT[1], "e": DEMO_DEPARTMENT[2]},
        )
        for username, display, role, scope, password in DEMO_USERS:
            user_id = session.execute(
                text("SELECT id FROM app_user WHERE username = :u"), {"u": username}
            ).scalar()
            if user_id is None:
                user_id = auth.create_user(session, username, password, display_name=display)
            else:
                auth.set_password(session, user_id, password)
                session.execute(
                    text("UPDATE app_user SET is_active = true WHERE id = :id"), {"id": user_id}
                )
            has_role = session.execute(
                text("SELECT 1 FROM role_assignment WHERE user_id = :u AND role = :r"),
                {"u": user_id, "r": role},
            ).first()
            if not has_role:
                grids = None
                if "grids" in scope:
                    grids = list(
                        session.execute(
                            text(
                                "SELECT code FROM unit_grid WHERE community_code = :c "
                                "AND valid_to IS NULL ORDER BY code LIMIT 40"
                            ),
                            {"c": scope["grids"]},
                        ).scalars()
                    )
                auth.assign_role(
                    session,
                    user_id,
                    role,
                    area_code=scope.get("area_code"),
                    grid_codes=grids,
                    department_code=scope.get("department_code"),
                )
        session.commit()
    except GridopsError as exc:
        raise fail(exc) from exc
    finally:
        session.close()
    click.echo("Demo users (demo passwords; never use them on a real deployment):")
    for username, display, role, _, password in DEMO_USERS:
        click.echo(f"  {username:16s} {password:28s} {role:20s} {display}")
