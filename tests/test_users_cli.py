"""``gridops users``: create, assign with scope checks, tokens, disable."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from gridops.importing import run_import
from tests import factories as f
from tests.conftest import TEST_PASSWORD


def test_create_assign_token_disable(runner, session, tmp_path, app):
    run_import(session, "areas", f.write(tmp_path / "a.gpkg", f.area_rows()))
    weak = runner.invoke(args=["users", "create", "chen.wei", "--password", "123456"])
    assert weak.exit_code == 1 and "at least 10 characters" in weak.output
    made = runner.invoke(args=["users", "create", "chen.wei", "--password", TEST_PASSWORD])
    assert made.exit_code == 0, made.output
    dup = runner.invoke(args=["users", "create", "chen.wei", "--password", TEST_PASSWORD])
    assert dup.exit_code == 1 and "exists" in dup.output

    wrong_level = runner.invoke(
        args=["users", "assign", "chen.wei", "community_manager", "--area", "440604001"]
    )
    assert wrong_level.exit_code == 1
    assert "440604001 is a town, not a community" in wrong_level.output
    ok = runner.invoke(
        args=["users", "assign", "chen.wei", "community_manager", "--area", "440604001001"]
    )
    assert ok.exit_code == 0, ok.output

    token = runner.invoke(args=["users", "token", "chen.wei", "tablet"]).output.strip()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    me = client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200 and me.get_json()["roles"][0]["area_code"] == "440604001001"

    assert runner.invoke(args=["users", "disable", "chen.wei"]).exit_code == 0
    assert client.get("/api/v1/me", headers=headers).status_code == 401
    active = session.execute(
        text("SELECT is_active FROM app_user WHERE username = 'chen.wei'")
    ).scalar()
    assert active is False


def test_token_use_is_audited_once_an_hour(app, make_user, token_for, engine, session):
    user_id, name = make_user("admin", username=f"audited-{uuid.uuid4().hex[:8]}")
    headers = {"Authorization": f"Bearer {token_for(user_id)}"}
    client = app.test_client()
    for _ in range(3):
        assert client.get("/api/v1/me", headers=headers).status_code == 200
    with engine.connect() as conn:
        used = conn.execute(
            text("SELECT count(*) FROM audit_event WHERE event = 'token_used' AND actor = :a"),
            {"a": name},
        ).scalar()
    assert used == 1
    session.execute(text("UPDATE api_token SET last_used_at = last_used_at - interval '2 hours'"))
    client.get("/api/v1/me", headers=headers)
    with engine.connect() as conn:
        used = conn.execute(
            text("SELECT count(*) FROM audit_event WHERE event = 'token_used' AND actor = :a"),
            {"a": name},
        ).scalar()
    assert used == 2
