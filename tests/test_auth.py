"""Authentication and authorization: passwords, login throttling, sessions, device tokens,
CSRF, the append-only audit log and planners' view of personal data."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import timedelta

import h3
import pytest
from argon2 import PasswordHasher
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gridops import create_app
from gridops.auth import service as auth
from gridops.auth.passwords import hash_password, password_problems, verify_password
from gridops.errors import InvalidInput
from gridops.grids.locate import assign_grids
from gridops.importing import run_import
from tests import factories as f
from tests.conftest import TEST_PASSWORD, app_config

COOKIE = "gridops_session"
PROBLEM = "application/problem+json"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


# -- helpers -------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    """A username no other test (nor an earlier run's committed audit rows) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def csrf_token(client) -> str:
    """The CSRF token of the client's current session, as the login page hands it out."""
    page = client.get("/login")
    assert page.status_code == 200
    match = CSRF_FIELD.search(page.get_data(as_text=True))
    assert match, "the login page has no CSRF token"
    return match.group(1)


def login(client, username: str, password: str = TEST_PASSWORD, *, address: str | None = None):
    """A JSON login with a CSRF token (from ``address`` when given)."""
    kwargs = {"environ_base": {"REMOTE_ADDR": address}} if address else {}
    return client.post(
        "/login",
        json={"username": username, "password": password},
        headers={"X-CSRFToken": csrf_token(client)},
        **kwargs,
    )


def signed_in(app, username: str):
    """A test client with a live browser session for ``username``."""
    client = app.test_client()
    response = login(client, username)
    assert response.status_code == 200, response.get_data(as_text=True)
    return client


def split_token(token: str) -> tuple[str, str]:
    """(prefix, secret) of ``gdo_<prefix>_<secret>``; the secret may itself contain "_"."""
    assert token.startswith("gdo_")
    prefix, _, secret = token[len("gdo_") :].partition("_")
    return prefix, secret


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json(force=True)
    assert body["status"] == status
    return body


def retry_after(response) -> int:
    value = response.headers.get("Retry-After")
    assert value is not None and value.isdigit(), value
    assert int(value) > 0
    return int(value)


def session_cookie(client) -> str:
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None, "no session cookie"
    return cookie.value


def client_with_cookie(app, value: str):
    other = app.test_client()
    other.set_cookie(COOKIE, value)
    return other


def user_sessions(session, user_id: int) -> list:
    return session.execute(
        text(
            "SELECT id, sid_hash, created_at, last_seen_at, expires_at, revoked_at "
            "FROM user_session WHERE user_id = :u ORDER BY id"
        ),
        {"u": user_id},
    ).all()


@pytest.fixture
def hierarchy(session, tmp_path):
    run_import(session, "areas", f.write(tmp_path / "a.gpkg", f.area_rows()))
    rows = f.strip_grid(f.COMMUNITY_W, "440604001001") + f.strip_grid(f.COMMUNITY_E, "440604001002")
    run_import(session, "grids", f.write(tmp_path / "g.gpkg", rows))
    session.commit()
    return session


# -- 1. passwords --------------------------------------------------------------------------


def test_hash_is_argon2id_and_verifies():
    stored = hash_password(TEST_PASSWORD)
    assert stored.startswith("$argon2id$")
    assert TEST_PASSWORD not in stored
    assert verify_password(stored, TEST_PASSWORD) == (True, None)
    assert verify_password(stored, TEST_PASSWORD + "x") == (False, None)
    assert verify_password(stored, TEST_PASSWORD.lower()) == (False, None)
    assert verify_password("not a hash", TEST_PASSWORD) == (False, None)
    # Salted: the same password never gives the same hash twice.
    assert hash_password(TEST_PASSWORD) != stored


def test_long_passwords_are_not_truncated():
    long = "Kiln-" + "x" * 194 + "A"
    assert len(long) == 200
    stored = hash_password(long)
    assert verify_password(stored, long)[0]
    assert not verify_password(stored, long[:-1] + "B")[0]
    assert not verify_password(stored, long[:72])[0]  # bcrypt would have accepted this


def test_login_rehashes_a_hash_made_with_old_parameters(session, make_user):
    user_id, name = make_user()
    old = PasswordHasher(time_cost=1, memory_cost=8192).hash(TEST_PASSWORD)
    session.execute(
        text("UPDATE app_user SET password_hash = :h WHERE id = :id"), {"h": old, "id": user_id}
    )
    assert auth.authenticate(session, name, TEST_PASSWORD, "127.0.0.1") == user_id
    new = session.execute(
        text("SELECT password_hash FROM app_user WHERE id = :id"), {"id": user_id}
    ).scalar_one()
    current = PasswordHasher()
    assert new != old
    assert new.startswith("$argon2id$")
    assert f"m={current.memory_cost},t={current.time_cost},p={current.parallelism}$" in new
    assert not current.check_needs_rehash(new)
    assert verify_password(new, TEST_PASSWORD) == (True, None)
    # A current hash is left alone at the next login.
    assert auth.authenticate(session, name, TEST_PASSWORD, "127.0.0.1") == user_id
    again = session.execute(
        text("SELECT password_hash FROM app_user WHERE id = :id"), {"id": user_id}
    ).scalar_one()
    assert again == new


def test_failed_login_does_not_rehash(session, make_user):
    user_id, name = make_user()
    old = PasswordHasher(time_cost=1, memory_cost=8192).hash(TEST_PASSWORD)
    session.execute(
        text("UPDATE app_user SET password_hash = :h WHERE id = :id"), {"h": old, "id": user_id}
    )
    with pytest.raises(auth.LoginFailed):
        auth.authenticate(session, name, "Wrong-Bridge-Kiln-47", "127.0.0.1")
    stored = session.execute(
        text("SELECT password_hash FROM app_user WHERE id = :id"), {"id": user_id}
    ).scalar_one()
    assert stored == old


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("Kiln-47a", "at least 10 characters"),
        ("", "at least 10 characters"),
        ("woaini1314", "most common passwords"),
        ("WoAiNi1314", "most common passwords"),
        ("password1234", "too easy to guess"),
        ("xx-Alice.Smith-Rocket-99", "must not contain the username"),
    ],
)
def test_policy_refuses_weak_passwords_with_a_clear_message(password, message):
    problems = password_problems(password, username="alice.smith")
    assert problems, f"{password!r} was accepted"
    assert any(message in p for p in problems), problems


def test_policy_accepts_a_strong_password():
    assert password_problems(TEST_PASSWORD, username="alice.smith") == []


@pytest.mark.parametrize("password", ["short", "woaini1314", "password1234", "carol.wu-Kiln-4711"])
def test_create_user_names_the_password_field(session, password):
    with pytest.raises(InvalidInput) as caught:
        auth.create_user(session, "carol.wu", password)
    assert [e.field for e in caught.value.errors] == ["password"]
    assert caught.value.status == 422
    assert (
        session.execute(
            text("SELECT count(*) FROM app_user WHERE username = 'carol.wu'")
        ).scalar_one()
        == 0
    )


def test_create_user_stores_only_an_argon2id_hash(session):
    user_id = auth.create_user(session, "dora.li", TEST_PASSWORD)
    stored = session.execute(
        text("SELECT password_hash FROM app_user WHERE id = :id"), {"id": user_id}
    ).scalar_one()
    assert stored.startswith("$argon2id$") and TEST_PASSWORD not in stored


# -- 2. login throttling -------------------------------------------------------------------


def test_account_is_locked_after_too_many_failures_even_with_the_right_password(
    app, client, make_user
):
    app.config["LOGIN_MAX_FAILURES_ACCOUNT"] = 3
    _, name = make_user()
    for i in range(3):  # from different addresses: the limit is per account
        response = login(client, name, "Wrong-Bridge-Kiln-47", address=f"10.0.1.{i + 1}")
        assert_problem(response, 401)
    response = login(client, name, address="10.0.1.99")
    body = assert_problem(response, 429)
    assert "account" in body["detail"]
    seconds = retry_after(response)
    assert seconds <= int(app.config["LOGIN_WINDOW_MINUTES"]) * 60 + 1
    assert client.get("/api/v1/me").status_code == 401


def test_failures_below_the_account_limit_do_not_lock(app, client, make_user):
    app.config["LOGIN_MAX_FAILURES_ACCOUNT"] = 3
    _, name = make_user()
    for _ in range(2):
        assert_problem(login(client, name, "Wrong-Bridge-Kiln-47"), 401)
    assert login(client, name).status_code == 200


def test_address_is_locked_after_too_many_failures_across_usernames(app, make_user):
    app.config["LOGIN_MAX_FAILURES_ADDRESS"] = 3
    _, name = make_user()
    noisy = app.test_client()
    for who in ("ghost-a", "ghost-b", "ghost-c"):  # one failure each: no account is locked
        assert_problem(login(noisy, who, "Wrong-Bridge-Kiln-47", address="10.0.0.9"), 401)
    response = login(noisy, name, address="10.0.0.9")
    body = assert_problem(response, 429)
    assert "address" in body["detail"]
    retry_after(response)
    # Another address is not locked by the first one's failures.
    elsewhere = app.test_client()
    assert login(elsewhere, name, address="10.0.0.10").status_code == 200


def test_throttled_attempts_do_not_reach_the_password_check(app, client, session, make_user):
    app.config["LOGIN_MAX_FAILURES_ACCOUNT"] = 2
    _, name = make_user()
    for _ in range(2):
        assert_problem(login(client, name, "Wrong-Bridge-Kiln-47"), 401)
    for _ in range(3):
        assert_problem(login(client, name), 429)
    attempts = session.execute(
        text(
            "SELECT count(*), count(*) FILTER (WHERE success) FROM login_attempt "
            "WHERE username = :u"
        ),
        {"u": name},
    ).one()
    assert tuple(attempts) == (2, 0)


# -- 3. sessions ---------------------------------------------------------------------------


def test_login_without_csrf_token_is_refused(client, make_user):
    _, name = make_user()
    client.get("/login")  # an anonymous session exists, but the token is not sent
    response = client.post("/login", json={"username": name, "password": TEST_PASSWORD})
    assert_problem(response, 400)
    response = client.post("/login", data={"username": name, "password": TEST_PASSWORD})
    assert_problem(response, 400)
    assert client.get("/api/v1/me").status_code == 401


def test_json_login_sets_a_httponly_lax_session_cookie(client, make_user):
    user_id, name = make_user()
    response = login(client, name)
    assert response.status_code == 200
    assert response.get_json()["id"] == user_id
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{COOKIE}=")]
    attributes = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "secure" not in attributes  # not in testing; see the production test
    me = client.get("/api/v1/me")
    assert me.status_code == 200
    assert me.get_json()["username"] == name and me.get_json()["via"] == "session"


def test_form_login_redirects_to_a_local_next(client, make_user):
    _, name = make_user()
    form = {"username": name, "password": TEST_PASSWORD, "csrf_token": csrf_token(client)}
    response = client.post("/login", data={**form, "next": "/map?layer=grids"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/map?layer=grids"
    assert client.get("/api/v1/me").status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example/",
        "/\t/evil.example/",  # URL parsers drop tabs and newlines: this is //evil.example/
        "/\n/evil.example/",
        "/\r\n/evil.example/",
    ],
)
def test_login_never_redirects_off_site(client, make_user, target):
    _, name = make_user()
    form = {"username": name, "password": TEST_PASSWORD, "csrf_token": csrf_token(client)}
    response = client.post("/login", data={**form, "next": target})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_form_login_with_wrong_password_is_401(client, make_user):
    _, name = make_user()
    response = client.post(
        "/login",
        data={
            "username": name,
            "password": "Wrong-Bridge-Kiln-47",
            "csrf_token": csrf_token(client),
        },
    )
    assert response.status_code == 401
    assert client.get("/api/v1/me").status_code == 401


def test_session_cookie_is_secure_in_production(database_url):
    production = create_app(app_config(database_url, ENV="production", SECRET_KEY="s" * 32))
    assert production.config["SESSION_COOKIE_SECURE"] is True
    assert production.config["SESSION_COOKIE_HTTPONLY"] is True
    assert production.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    testing = create_app(app_config(database_url))
    assert testing.config["SESSION_COOKIE_SECURE"] is False


def test_each_login_starts_a_new_server_side_session(app, session, make_user):
    user_id, name = make_user()
    first = signed_in(app, name)
    second = signed_in(app, name)
    rows = user_sessions(session, user_id)
    assert len(rows) == 2
    assert rows[0].id != rows[1].id and bytes(rows[0].sid_hash) != bytes(rows[1].sid_hash)
    assert session_cookie(first) != session_cookie(second)
    # The session lasts SESSION_ABSOLUTE_HOURS at most.
    lifetime = rows[0].expires_at - rows[0].created_at
    hours = timedelta(hours=int(app.config["SESSION_ABSOLUTE_HOURS"]))
    assert abs(lifetime - hours) < timedelta(minutes=1)


def test_cookie_from_before_login_does_not_authenticate(app, client, make_user):
    _, name = make_user()
    token = csrf_token(client)  # an anonymous session, as a fixation attacker would plant
    before = session_cookie(client)
    response = client.post(
        "/login",
        json={"username": name, "password": TEST_PASSWORD},
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 200
    after = session_cookie(client)
    assert after != before
    assert client.get("/api/v1/me").status_code == 200
    assert client_with_cookie(app, before).get("/api/v1/me").status_code == 401
    assert client_with_cookie(app, after).get("/api/v1/me").status_code == 200
    # The planted session's CSRF token is gone with it.
    response = client.post("/logout", json={}, headers={"X-CSRFToken": token})
    assert_problem(response, 400)


def test_idle_session_ends(app, session, make_user):
    user_id, name = make_user()
    client = signed_in(app, name)
    idle = int(app.config["SESSION_IDLE_MINUTES"])
    set_back = text(
        "UPDATE user_session SET last_seen_at = clock_timestamp() - make_interval(mins => :m) "
        "WHERE user_id = :u"
    )
    session.execute(set_back, {"m": idle - 1, "u": user_id})
    session.commit()
    assert client.get("/api/v1/me").status_code == 200  # just inside; this touches the session
    [row] = user_sessions(session, user_id)
    assert row.last_seen_at > row.created_at
    session.execute(set_back, {"m": idle + 1, "u": user_id})
    session.commit()
    assert_problem(client.get("/api/v1/me"), 401)
    # A fresh login works again.
    assert signed_in(app, name).get("/api/v1/me").status_code == 200


def test_session_ends_at_its_absolute_expiry(app, session, make_user):
    user_id, name = make_user()
    client = signed_in(app, name)
    assert client.get("/api/v1/me").status_code == 200
    session.execute(
        text(
            "UPDATE user_session SET expires_at = clock_timestamp() - interval '1 second' "
            "WHERE user_id = :u"
        ),
        {"u": user_id},
    )
    session.commit()
    assert_problem(client.get("/api/v1/me"), 401)


def test_unauthenticated_api_is_401_and_pages_redirect(client):
    response = client.get("/api/v1/me")
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(client.get("/api/v1/me", headers=bearer("gdo_nonsense_token")), 401)


def test_logout_ends_the_server_side_session(app, session, make_user):
    user_id, name = make_user()
    client = signed_in(app, name)
    cookie = session_cookie(client)
    response = client.post("/logout", json={})
    assert_problem(response, 400)  # no CSRF token
    assert client.get("/api/v1/me").status_code == 200
    response = client.post("/logout", json={}, headers={"X-CSRFToken": csrf_token(client)})
    assert response.status_code == 204
    [row] = user_sessions(session, user_id)
    assert row.revoked_at is not None
    assert client.get("/api/v1/me").status_code == 401
    # A copy of the cookie taken before logout is dead too (the row is revoked, not just the
    # browser's cookie cleared).
    assert_problem(client_with_cookie(app, cookie).get("/api/v1/me"), 401)


# -- 4. disabled users ---------------------------------------------------------------------


def test_disabling_a_user_ends_sessions_and_tokens_at_once(
    app, session, make_user, token_for, admin_client
):
    user_id, name = make_user("admin")
    browser = signed_in(app, name)
    token = token_for(user_id)
    assert browser.get("/api/v1/me").status_code == 200
    assert app.test_client().get("/api/v1/me", headers=bearer(token)).status_code == 200

    response = admin_client.post(f"/api/v1/admin/users/{user_id}/disable")
    assert response.status_code == 204

    assert_problem(browser.get("/api/v1/me"), 401)
    assert_problem(browser.get("/api/v1/admin/users"), 401)
    assert_problem(app.test_client().get("/api/v1/me", headers=bearer(token)), 401)
    assert_problem(login(app.test_client(), name), 401)
    row = session.execute(
        text("SELECT is_active, disabled_at FROM app_user WHERE id = :id"), {"id": user_id}
    ).one()
    assert row.is_active is False and row.disabled_at is not None
    assert all(s.revoked_at is not None for s in user_sessions(session, user_id))
    # Revoked, not just refused: re-enabling the account must not revive a lost tablet's token.
    assert session.execute(
        text("SELECT bool_and(revoked_at IS NOT NULL) FROM api_token WHERE user_id = :u"),
        {"u": user_id},
    ).scalar_one()


def test_disabled_user_is_refused_even_if_rows_were_not_revoked(app, session, make_user):
    """is_active alone stops a session and a token (defence in depth over the revocation)."""
    user_id, name = make_user("admin")
    browser = signed_in(app, name)
    _, token = auth.create_token(session, user_id, "tablet")
    session.execute(text("UPDATE app_user SET is_active = false WHERE id = :id"), {"id": user_id})
    session.commit()
    assert_problem(browser.get("/api/v1/me"), 401)
    assert_problem(app.test_client().get("/api/v1/me", headers=bearer(token)), 401)


# -- 5. device tokens ----------------------------------------------------------------------


@pytest.fixture
def planner(hierarchy, make_user):
    return make_user("planner", area_code="440604")


def test_token_lifecycle(app, session, planner):
    user_id, name = planner
    browser = signed_in(app, name)
    response = browser.post(
        "/api/v1/tokens",
        json={"name": "tablet 7", "days": 30},
        headers={"X-CSRFToken": csrf_token(browser)},
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    created = response.get_json()
    token, token_id = created["token"], created["id"]
    assert token.startswith("gdo_")
    _, secret = split_token(token)
    assert len(secret) >= 40  # 256 random bits

    # Listed without the secret.
    listing = browser.get("/api/v1/tokens")
    assert listing.status_code == 200
    [item] = listing.get_json()["tokens"]
    assert item["id"] == token_id and item["name"] == "tablet 7" and item["revoked"] is False
    assert item["last_used_at"] is None
    assert token not in listing.get_data(as_text=True)
    assert secret not in listing.get_data(as_text=True)

    # Stored only as a hash: the token appears nowhere in the table.
    row = session.execute(
        text("SELECT secret_hash, t::text AS whole FROM api_token t WHERE id = :id"),
        {"id": token_id},
    ).one()
    stored = bytes(row.secret_hash)
    assert stored not in (token.encode(), secret.encode())
    assert len(stored) == hashlib.sha256().digest_size
    assert secret not in row.whole and token not in row.whole
    assert secret.encode().hex() not in row.whole

    # Works as a bearer token, and marks itself used.
    me = app.test_client().get("/api/v1/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.get_json()["username"] == name and me.get_json()["via"] == "token"
    used = session.execute(
        text("SELECT last_used_at FROM api_token WHERE id = :id"), {"id": token_id}
    ).scalar_one()
    assert used is not None
    assert browser.get("/api/v1/tokens").get_json()["tokens"][0]["last_used_at"] is not None

    # A token cannot make tokens, even with a CSRF token at hand.
    tablet = app.test_client()
    response = tablet.post("/api/v1/tokens", json={"name": "another"}, headers=bearer(token))
    assert_problem(response, 403)
    assert (
        session.execute(
            text("SELECT count(*) FROM api_token WHERE user_id = :u"), {"u": user_id}
        ).scalar_one()
        == 1
    )

    # Revoked: 401 at once.
    response = browser.delete(
        f"/api/v1/tokens/{token_id}", headers={"X-CSRFToken": csrf_token(browser)}
    )
    assert response.status_code == 204
    assert_problem(app.test_client().get("/api/v1/me", headers=bearer(token)), 401)
    assert browser.get("/api/v1/tokens").get_json()["tokens"][0]["revoked"] is True


def test_token_use_is_recorded_at_most_once_a_minute(app, session, planner, token_for):
    """A tablet's steady reads must not each become a write of last_used_at."""
    user_id, _ = planner
    token = token_for(user_id)
    client = app.test_client()

    def last_used():
        session.commit()  # see the app's commits
        return session.execute(
            text("SELECT last_used_at FROM api_token WHERE user_id = :u"), {"u": user_id}
        ).scalar_one()

    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    first = last_used()
    assert first is not None
    for _ in range(3):
        assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    assert last_used() == first

    session.execute(
        text("UPDATE api_token SET last_used_at = last_used_at - interval '61 seconds'")
    )
    session.commit()
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    assert last_used() > first - timedelta(seconds=61)


def test_wrong_secret_with_a_real_prefix_is_refused(app, session, planner):
    user_id, _ = planner
    _, token = auth.create_token(session, user_id, "tablet")
    session.commit()
    prefix, secret = split_token(token)
    forged = f"gdo_{prefix}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    assert_problem(app.test_client().get("/api/v1/me", headers=bearer(forged)), 401)
    assert app.test_client().get("/api/v1/me", headers=bearer(token)).status_code == 200


def test_expired_token_is_refused(app, session, planner, token_for):
    user_id, _ = planner
    token = token_for(user_id)
    client = app.test_client()
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    session.execute(
        text(
            "UPDATE api_token SET expires_at = clock_timestamp() - interval '1 second' "
            "WHERE user_id = :u"
        ),
        {"u": user_id},
    )
    session.commit()
    assert_problem(client.get("/api/v1/me", headers=bearer(token)), 401)


def test_one_user_cannot_revoke_anothers_token(app, session, planner, make_user, token_for):
    owner_id, _ = planner
    token = token_for(owner_id)
    token_id = session.execute(
        text("SELECT id FROM api_token WHERE user_id = :u"), {"u": owner_id}
    ).scalar_one()
    _, other = make_user("planner", area_code="440604")
    browser = signed_in(app, other)
    response = browser.delete(
        f"/api/v1/tokens/{token_id}", headers={"X-CSRFToken": csrf_token(browser)}
    )
    assert_problem(response, 404)
    assert app.test_client().get("/api/v1/me", headers=bearer(token)).status_code == 200


# -- 6. CSRF -------------------------------------------------------------------------------


def test_cookie_authenticated_changes_need_a_csrf_token(app, session, make_user, token_for):
    admin_id, admin_name = make_user("admin")
    browser = signed_in(app, admin_name)
    new_user = {"username": "erin.zhao", "password": TEST_PASSWORD}

    # POST without, with a foreign, then with the session's own token.
    assert_problem(browser.post("/api/v1/admin/users", json=new_user), 400)
    foreign = csrf_token(app.test_client())
    response = browser.post("/api/v1/admin/users", json=new_user, headers={"X-CSRFToken": foreign})
    assert_problem(response, 400)
    count = text("SELECT count(*) FROM app_user WHERE username = 'erin.zhao'")
    assert session.execute(count).scalar_one() == 0
    response = browser.post(
        "/api/v1/admin/users", json=new_user, headers={"X-CSRFToken": csrf_token(browser)}
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert session.execute(count).scalar_one() == 1

    # DELETE likewise.
    _, token = auth.create_token(session, admin_id, "tablet")
    token_id = session.execute(
        text("SELECT id FROM api_token WHERE user_id = :u"), {"u": admin_id}
    ).scalar_one()
    session.commit()
    assert_problem(browser.delete(f"/api/v1/tokens/{token_id}"), 400)
    assert app.test_client().get("/api/v1/me", headers=bearer(token)).status_code == 200
    response = browser.delete(
        f"/api/v1/tokens/{token_id}", headers={"X-CSRFToken": csrf_token(browser)}
    )
    assert response.status_code == 204


def test_a_bearer_header_does_not_exempt_a_cookie_session_from_csrf(app, session, make_user):
    """Only requests authenticated by a token skip CSRF: a session cookie sent along with any
    "Authorization: Bearer ..." header (even a bogus one) is still a cookie session."""
    _, admin_name = make_user("admin")
    browser = signed_in(app, admin_name)
    new_user = {"username": "gina.xu", "password": TEST_PASSWORD}
    response = browser.post("/api/v1/admin/users", json=new_user, headers=bearer("gdo_bogus_x"))
    assert_problem(response, 400)
    count = text("SELECT count(*) FROM app_user WHERE username = 'gina.xu'")
    assert session.execute(count).scalar_one() == 0
    response = browser.post(
        "/api/v1/admin/users",
        json=new_user,
        headers={**bearer("gdo_bogus_x"), "X-CSRFToken": csrf_token(browser)},
    )
    assert response.status_code == 201
    assert session.execute(count).scalar_one() == 1


def test_bearer_token_requests_are_exempt_from_csrf(app, session, make_user, token_for):
    admin_id, _ = make_user("admin")
    token = token_for(admin_id)
    tablet = app.test_client()
    response = tablet.post(
        "/api/v1/admin/users",
        json={"username": "fay.huang", "password": TEST_PASSWORD},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert (
        session.execute(
            text("SELECT count(*) FROM app_user WHERE username = 'fay.huang'")
        ).scalar_one()
        == 1
    )
    # DELETE likewise: a device signs itself out (revokes its own token) without CSRF.
    [own_id] = session.execute(
        text("SELECT id FROM api_token WHERE user_id = :u"), {"u": admin_id}
    ).scalars()
    assert tablet.delete(f"/api/v1/tokens/{own_id}", headers=bearer(token)).status_code == 204
    assert_problem(tablet.get("/api/v1/me", headers=bearer(token)), 401)


def test_a_token_manages_only_itself(app, session, planner, token_for):
    """A stolen tablet token must not list nor revoke the user's other devices."""
    user_id, _ = planner
    token = token_for(user_id, name="tablet")
    other = token_for(user_id, name="spare tablet")
    ids = dict(
        session.execute(
            text("SELECT name, id FROM api_token WHERE user_id = :u"), {"u": user_id}
        ).all()
    )
    tablet = app.test_client()
    assert_problem(tablet.get("/api/v1/tokens", headers=bearer(token)), 403)
    response = tablet.delete(f"/api/v1/tokens/{ids['spare tablet']}", headers=bearer(token))
    assert_problem(response, 404)
    assert tablet.get("/api/v1/me", headers=bearer(other)).status_code == 200


# -- 7. audit ------------------------------------------------------------------------------


def audit_row(engine, request_id: str, event: str):
    """The request's audit row of ``event`` (read on a new connection: audit rows are
    committed on a connection of their own, outside the test's transaction)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT event, actor_id, actor, host(address) AS address, request_id, detail "
                "FROM audit_event WHERE request_id = :r AND event = :e ORDER BY id"
            ),
            {"r": request_id, "e": event},
        ).all()
    assert len(rows) == 1, rows
    return rows[0]


def check_audit(engine, response, event: str, actor: str, address: str, actor_id=None):
    request_id = response.headers.get("X-Request-ID")
    assert request_id
    row = audit_row(engine, request_id, event)
    assert row.actor == actor
    assert row.address == address
    assert row.request_id == request_id
    if actor_id is not None:
        assert row.actor_id == actor_id
    return row


def test_audit_login_and_failures(app, engine, make_user):
    user_id, name = make_user(username=unique("aud-login"))
    client = app.test_client()
    response = login(client, name, address="10.9.1.1")
    assert response.status_code == 200
    check_audit(engine, response, "login", name, "10.9.1.1", actor_id=user_id)

    response = login(client, name, "Wrong-Bridge-Kiln-47", address="10.9.1.2")
    assert response.status_code == 401
    check_audit(engine, response, "login_failed", name, "10.9.1.2")

    app.config["LOGIN_MAX_FAILURES_ACCOUNT"] = 1
    response = login(client, name, address="10.9.1.3")
    assert response.status_code == 429
    check_audit(engine, response, "login_throttled", name, "10.9.1.3")


def test_audit_token_created_and_revoked(app, engine, make_user):
    user_id, name = make_user("admin", username=unique("aud-token"))
    browser = signed_in(app, name)
    address = {"REMOTE_ADDR": "10.9.2.1"}
    response = browser.post(
        "/api/v1/tokens",
        json={"name": "tablet"},
        headers={"X-CSRFToken": csrf_token(browser)},
        environ_base=address,
    )
    assert response.status_code == 201
    token_id = response.get_json()["id"]
    row = check_audit(engine, response, "token_created", name, "10.9.2.1", actor_id=user_id)
    assert row.detail == {"token": token_id}
    assert response.get_json()["token"] not in str(row)

    response = browser.delete(
        f"/api/v1/tokens/{token_id}",
        headers={"X-CSRFToken": csrf_token(browser)},
        environ_base=address,
    )
    assert response.status_code == 204
    row = check_audit(engine, response, "token_revoked", name, "10.9.2.1", actor_id=user_id)
    assert row.detail == {"token": token_id}


def test_audit_role_assigned_and_user_disabled(app, engine, hierarchy, make_user, token_for):
    admin_id, admin_name = make_user("admin", username=unique("aud-admin"))
    client = app.test_client()
    client.environ_base.update(
        HTTP_AUTHORIZATION=f"Bearer {token_for(admin_id)}", REMOTE_ADDR="10.9.3.1"
    )
    target_id, _ = make_user()
    response = client.post(
        f"/api/v1/admin/users/{target_id}/roles",
        json={"role": "inspector", "grid_codes": ["440604001001001"]},
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    row = check_audit(engine, response, "role_assigned", admin_name, "10.9.3.1", admin_id)
    assert row.detail["user"] == target_id and row.detail["role"] == "inspector"

    response = client.post(f"/api/v1/admin/users/{target_id}/disable")
    assert response.status_code == 204
    row = check_audit(engine, response, "user_disabled", admin_name, "10.9.3.1", admin_id)
    assert row.detail == {"user": target_id}


def test_audit_access_denied(app, engine, hierarchy, make_user, token_for):
    user_id, name = make_user(
        "inspector", username=unique("aud-insp"), grid_codes=["440604001001001"]
    )
    client = app.test_client()
    response = client.get(
        "/api/v1/admin/users",
        headers=bearer(token_for(user_id)),
        environ_base={"REMOTE_ADDR": "10.9.4.1"},
    )
    assert_problem(response, 403)
    row = check_audit(engine, response, "access_denied", name, "10.9.4.1", actor_id=user_id)
    assert row.detail["permission"] == "admin:users"
    assert row.detail["path"] == "/api/v1/admin/users"


def test_incoming_request_id_is_echoed_and_logged(app, engine, make_user):
    _, name = make_user(username=unique("aud-rid"))
    request_id = uuid.uuid4().hex
    client = app.test_client()
    response = client.post(
        "/login",
        json={"username": name, "password": "Wrong-Bridge-Kiln-47"},
        headers={"X-CSRFToken": csrf_token(client), "X-Request-ID": request_id},
    )
    assert response.status_code == 401
    assert response.headers["X-Request-ID"] == request_id
    assert audit_row(engine, request_id, "login_failed").actor == name


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_event SET actor = 'someone else' WHERE id = :id",
        "DELETE FROM audit_event WHERE id = :id",
        "TRUNCATE audit_event",
    ],
)
def test_audit_log_is_append_only(engine, statement):
    marker = unique("aud-append")
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            conn.execute(text("SET LOCAL lock_timeout = '5s'"))
            row_id = conn.execute(
                text("INSERT INTO audit_event (event, actor) VALUES ('test', :a) RETURNING id"),
                {"a": marker},
            ).scalar_one()
            with pytest.raises(DBAPIError, match="append-only"):
                conn.execute(text(statement), {"id": row_id})
        finally:
            outer.rollback()


# -- 8. personal data ----------------------------------------------------------------------

REPORTER = {"name": "张小明", "phone": "13800138000", "device": "tablet-7f3a9c"}


@pytest.fixture
def incident(hierarchy):
    incident_id = hierarchy.execute(
        text(
            "INSERT INTO incident (client_uuid, category_id, geom, reported_at, reporter_name, "
            "reporter_phone, device_id) VALUES (gen_random_uuid(), (SELECT min(id) FROM category), "
            "ST_SetSRID(ST_MakePoint(113.0013, 23.0107), 4326), now(), :n, :p, :d) RETURNING id"
        ),
        {"n": REPORTER["name"], "p": REPORTER["phone"], "d": REPORTER["device"]},
    ).scalar_one()
    assert assign_grids(hierarchy, "incident") >= 1
    hierarchy.commit()
    return incident_id


def assert_without_personal_data(response, incident_id: int) -> None:
    assert response.status_code == 200, response.get_data(as_text=True)
    raw = response.get_data(as_text=True)
    for value in (*REPORTER.values(), "113.0013", "23.0107"):
        assert value not in raw
    body = response.get_json(force=True)
    features = body["features"] if body.get("type") == "FeatureCollection" else [body]
    [feature] = [x for x in features if x["id"] == incident_id]
    assert feature["geometry"] is None
    props = feature["properties"]
    for hidden in ("reporter_name", "reporter_phone", "device_id"):
        assert hidden not in props
    assert props["grid_code"] == "440604001001001"
    assert props["h3_cell"] == h3.latlng_to_cell(23.0107, 113.0013, 9)


def test_planner_never_sees_reporter_nor_point(app, incident, make_user, token_for):
    user_id, _ = make_user("planner", area_code="440604")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(user_id)}"
    assert_without_personal_data(client.get("/api/v1/incidents"), incident)
    assert_without_personal_data(client.get(f"/api/v1/incidents/{incident}"), incident)
    assert_without_personal_data(client.get("/collections/incidents/items"), incident)
    assert_without_personal_data(client.get(f"/collections/incidents/items/{incident}"), incident)


def test_full_access_roles_do_see_the_reporter(incident, admin_client):
    response = admin_client.get("/api/v1/incidents")
    assert response.status_code == 200
    [feature] = [x for x in response.get_json(force=True)["features"] if x["id"] == incident]
    assert feature["properties"]["reporter_name"] == REPORTER["name"]
    assert feature["properties"]["device_id"] == REPORTER["device"]
    assert feature["geometry"]["coordinates"] == pytest.approx([113.0013, 23.0107])


def test_planner_cannot_pinpoint_an_incident_with_the_extent(app, incident, make_user, token_for):
    user_id, _ = make_user("planner", area_code="440604")
    client = app.test_client()
    response = client.get("/collections/incidents", headers=bearer(token_for(user_id)))
    assert response.status_code == 200
    assert "113.0013" not in response.get_data(as_text=True)
    [bbox] = response.get_json()["extent"]["spatial"]["bbox"]
    assert bbox == pytest.approx(list(f.D604.bounds))  # the planner's area, not the points


def test_planner_cannot_pinpoint_an_incident_with_tiny_bboxes(
    app, hierarchy, incident, make_user, token_for, admin_client
):
    # A second incident about 200 m away: a planner must not be able to tell the two apart.
    other = hierarchy.execute(
        text(
            "INSERT INTO incident (client_uuid, category_id, geom, reported_at) VALUES "
            "(gen_random_uuid(), (SELECT min(id) FROM category), "
            "ST_SetSRID(ST_MakePoint(113.0027, 23.0093), 4326), now()) RETURNING id"
        )
    ).scalar_one()
    hierarchy.commit()
    user_id, _ = make_user("planner", area_code="440604")
    planner = app.test_client()
    planner.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(user_id)}"

    def found(client, lon: float, lat: float) -> set[int]:
        d = 0.00005
        response = client.get(f"/api/v1/incidents?bbox={lon - d},{lat - d},{lon + d},{lat + d}")
        assert response.status_code == 200
        return {x["id"] for x in response.get_json()["features"]}

    # The control: a full reader's tiny bbox does find each point.
    assert found(admin_client, 113.0013, 23.0107) == {incident}
    assert found(admin_client, 113.0027, 23.0093) == {other}
    probes = [(113.0013, 23.0107), (113.0027, 23.0093), (113.002, 23.010), (113.0016, 23.0101)]
    for lon, lat in probes:
        assert found(planner, lon, lat) in (set(), {incident, other}), (lon, lat)
