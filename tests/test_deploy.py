"""The production path: docker-compose pins PostGIS and migrates before serving."""

from __future__ import annotations

import re

import yaml

from gridops.config import PROJECT_ROOT


def test_compose_pins_postgis_and_migrates_first():
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    db = compose["services"]["db"]
    assert re.fullmatch(r"postgis/postgis:\d+-\d+(\.\d+)?(-alpine)?", db["image"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in db["volumes"])
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    app = compose["services"]["app"]
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    command = " ".join(app["command"]) if isinstance(app["command"], list) else app["command"]
    assert command.index("gridops db upgrade") < command.index("gunicorn")
    assert "GRIDOPS_DATABASE_URL" in app["environment"]
