"""The app factory, configuration, problem responses and the health endpoint."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from gridops import create_app, migrate
from gridops.config import ConfigError, load_config
from gridops.config import database_url as resolve_database_url
from gridops.localdb import free_port
from tests.conftest import app_config


def test_factory_applies_overrides_over_environment(monkeypatch):
    monkeypatch.setenv("GRIDOPS_DB_POOL_SIZE", "7")
    monkeypatch.setenv("GRIDOPS_DEFAULT_LANGUAGE", "en")
    app = create_app({"DEFAULT_LANGUAGE": "zh", "DATABASE_URL": "postgresql://x@h/db"})
    assert app.config["DB_POOL_SIZE"] == 7  # from the environment
    assert app.config["DEFAULT_LANGUAGE"] == "zh"  # the mapping wins
    assert not app.config["TESTING"]
    assert create_app({"ENV": "testing"}).config["TESTING"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DB_POOL_SIZE", "many", "GRIDOPS_DB_POOL_SIZE must be an integer"),
        ("ENV", "staging", "GRIDOPS_ENV must be development, production or testing"),
        ("DEFAULT_LANGUAGE", "fr", "GRIDOPS_DEFAULT_LANGUAGE must be zh or en"),
    ],
)
def test_bad_environment_names_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(f"GRIDOPS_{name}", value)
    with pytest.raises(ConfigError, match=message):
        load_config()


def test_production_requires_a_secret_key(monkeypatch):
    monkeypatch.delenv("GRIDOPS_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="GRIDOPS_SECRET_KEY"):
        load_config({"ENV": "production"})
    assert load_config({"ENV": "production", "SECRET_KEY": "s" * 32})["SECRET_KEY"] == "s" * 32


def test_database_url_from_environment_is_normalised_to_psycopg(monkeypatch):
    monkeypatch.setenv("GRIDOPS_DATABASE_URL", "postgres://u:p@db:5432/gridops")
    assert resolve_database_url(load_config()) == "postgresql+psycopg://u:p@db:5432/gridops"


def test_missing_local_cluster_is_a_clear_config_error(monkeypatch, tmp_path):
    monkeypatch.delenv("GRIDOPS_DATABASE_URL", raising=False)
    monkeypatch.setenv("GRIDOPS_VAR_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="gridops db start"):
        resolve_database_url(load_config())


def test_health_reports_postgis_version(client, connection, database_url):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    expected = connection.execute(
        text("SELECT extversion FROM pg_extension WHERE extname = 'postgis'")
    ).scalar()
    assert body["status"] == "ok"
    assert body["database"]["postgis"] == expected
    assert body["database"]["postgresql"].split(".")[0].isdigit()
    assert body["schema"]["revision"] == migrate.head_revision(database_url)
    assert response.headers["X-Request-ID"]


def test_health_is_503_problem_when_database_is_down():
    app = create_app(app_config(f"postgresql+psycopg://x:y@127.0.0.1:{free_port()}/none"))
    response = app.test_client().get("/health")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["status"] == 503


def test_health_is_503_when_schema_is_not_migrated(scratch_database):
    response = create_app(app_config(scratch_database)).test_client().get("/health")
    assert response.status_code == 503
    assert "gridops db upgrade" in response.get_json()["detail"]


def test_unknown_route_is_a_problem_document(client):
    response = client.get("/no/such/thing")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == 404 and body["title"] == "Not Found"
    assert body["instance"] == "/no/such/thing"


def test_wrong_method_is_405_with_allow(client):
    response = client.post("/health")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.mimetype == "application/problem+json"


def test_unexpected_error_is_a_500_problem_without_internals(app):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    assert "secret internals" not in response.get_data(as_text=True)


def test_index_page_is_chinese_first_with_english_available(admin_client):
    client = admin_client
    zh = client.get("/")
    assert zh.status_code == 200
    assert "网格化管理" in zh.get_data(as_text=True)
    en = client.get("/?lang=en")
    assert "Grid management" in en.get_data(as_text=True)
    assert "lang=en" in en.headers["Set-Cookie"]


def test_a_trusted_proxy_gives_the_client_address(database_url):
    from flask import request

    from gridops.auth.web import public

    for hops, expected in ((0, "127.0.0.1"), (1, "203.0.113.9")):
        app = create_app(app_config(database_url, TRUSTED_PROXIES=hops))

        @app.get("/whoami")
        @public
        def whoami():
            return request.remote_addr

        response = app.test_client().get("/whoami", headers={"X-Forwarded-For": "203.0.113.9"})
        assert response.get_data(as_text=True) == expected
